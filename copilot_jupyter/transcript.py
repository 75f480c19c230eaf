"""A session's history as a chat transcript in HTML, each exchange and note rendered once.

:class:`Transcript` keeps a :class:`copilot.history.History` (the one fold of a session's
events) and the HTML of each of its entries. :meth:`Transcript.fold` applies stored events and
re-renders only the entries they changed; :meth:`Transcript.html` joins the current entries in
log order, so an exchange replaced by a re-run cell disappears with it.

Everything a user or a model wrote is HTML-escaped (see :mod:`copilot_jupyter.markdown`).
A prompt or a reply longer than :data:`SHOWN_CHARS` shows its first :data:`SHOWN_CHARS`
characters and says how much was left out: the panel stays responsive, and the whole text
stays in the session's log (``%copilot export`` writes it).

A turn that called tools shows its calls between the prompt and the reply as collapsed
``<details>`` blocks (name and arguments; the result when opened), escaped and cut to
:data:`copilot_jupyter.toolblocks.SHOWN_TOOL_CHARS` characters each
(:mod:`copilot_jupyter.toolblocks`); a running turn's calls show as they happen.

>>> t = Transcript()
>>> _ = t.fold([Event(EventType.USER_MESSAGE, {"content": "Hi <b>"}, id="m1")])
>>> "Hi &lt;b&gt;" in t.html()
True
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Iterable
from typing import Any

from copilot.events import Event, EventType
from copilot.history import Exchange, ExchangeStatus, History, Note

from .formatting import format_count, format_usage
from .markdown import render_markdown
from .toolblocks import tool_blocks_html

__all__ = ["EMPTY", "SHOWN_CHARS", "Transcript", "render_entry"]

#: what an empty session's transcript says
EMPTY = "No messages yet. Type a prompt below and press Enter."

#: the longest prompt or reply the transcript renders in full (characters)
SHOWN_CHARS = 100_000


def _text(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _body(text: str) -> str:
    """A message body as HTML: Markdown, cut to :data:`SHOWN_CHARS` with a note saying so."""
    if len(text) <= SHOWN_CHARS:
        return render_markdown(text)
    left_out = len(text) - SHOWN_CHARS
    return (
        render_markdown(text[:SHOWN_CHARS])
        + f'<p class="cj-cut">… {format_count(left_out, "more character")} not shown here'
        " (the session keeps all of it; <code>%copilot export</code> writes it).</p>"
    )


#: the largest image shown as a thumbnail in the transcript (a larger one is a named chip:
#: the transcript's HTML is resent to the browser when it changes)
THUMB_MAX_BYTES = 2**20

#: reads an attachment's bytes by sha256 (``client.get_attachment``); None: not stored
BlobLoader = Callable[[str], "bytes | None"]


def _attachment(reference: Any, load_blob: BlobLoader | None) -> str:
    """One attachment of a prompt: a thumbnail (a small stored image), else a named chip."""
    if not isinstance(reference, dict):
        return ""
    name = _text(reference.get("displayName", "attachment"))
    size = reference.get("size")
    mime = str(reference.get("mimeType", ""))
    if (
        load_blob is not None
        and reference.get("type") == "image"
        and isinstance(size, int)
        and size <= THUMB_MAX_BYTES
    ):
        data = load_blob(str(reference.get("sha256", "")))
        if data is not None:
            uri = f"data:{_text(mime)};base64,{base64.b64encode(data).decode('ascii')}"
            return f'<img class="cj-thumb" src="{uri}" alt="{name}" title="{name}">'
    what = f" · {format_count(size, 'byte')}" if isinstance(size, int) else ""
    return f'<span class="cj-chip">📎 {name}{what}</span>'


def _user(exchange: Exchange, load_blob: BlobLoader | None = None) -> str:
    attached = ""
    if exchange.attachments:
        items = "".join(_attachment(r, load_blob) for r in exchange.attachments)
        attached = f'<div class="cj-attachments">{items}</div>'
    return (
        f'<div class="cj-msg cj-user"><div class="cj-role">You</div>'
        f'<div class="cj-body">{_body(exchange.prompt)}</div>{attached}</div>'
    )


def _assistant(role: str, text: str, meta: str = "") -> str:
    body = _body(text) or "<p><em>(empty reply)</em></p>"
    meta_html = f'<div class="cj-meta">{_text(meta)}</div>' if meta else ""
    return (
        f'<div class="cj-msg cj-assistant"><div class="cj-role">{_text(role)}</div>'
        f'<div class="cj-body">{body}</div>{meta_html}</div>'
    )


def _note(kind: str, text: str) -> str:
    return f'<div class="cj-note cj-{kind}">{_text(text)}</div>'


def _outcome_ok(exchange: Exchange) -> str:
    return _assistant(exchange.model or "assistant", exchange.reply, format_usage(exchange.usage))


def _outcome_aborted(exchange: Exchange) -> str:
    partial = _assistant("partial reply", exchange.reply) if exchange.reply else ""
    return partial + _note("note", f"Stopped: {exchange.error or 'aborted'}.")


def _outcome_error(exchange: Exchange) -> str:
    return _note("error", f"Error: {exchange.error or 'the turn failed'}")


#: how each outcome of an exchange shows under its prompt (a pending one: nothing yet)
_OUTCOMES: dict[ExchangeStatus, Callable[[Exchange], str]] = {
    ExchangeStatus.PENDING: lambda exchange: "",
    ExchangeStatus.OK: _outcome_ok,
    ExchangeStatus.ABORTED: _outcome_aborted,
    ExchangeStatus.ERROR: _outcome_error,
}


def _model_change(data: dict[str, Any]) -> str:
    return _note("note", f"Model changed: {data.get('previousModel')} → {data.get('newModel')}")


def _warning(data: dict[str, Any]) -> str:
    return (
        _note("note", str(data.get("message", ""))) if data.get("warningType") == "fallback" else ""
    )


def _truncation(data: dict[str, Any]) -> str:
    omitted = data.get("turnsOmitted", 0)
    return _note("note", f"Context trimmed: the {omitted} oldest turn(s) no longer fit the model.")


def _session_error(data: dict[str, Any]) -> str:
    return _note("error", f"Error: {data.get('message', 'the turn failed')}")


#: how each kind of note shows (the kinds :class:`~copilot.history.History` keeps)
_NOTES: dict[str, Callable[[dict[str, Any]], str]] = {
    EventType.SESSION_MODEL_CHANGE: _model_change,
    EventType.SESSION_WARNING: _warning,
    EventType.SESSION_TRUNCATION: _truncation,
    EventType.SESSION_ERROR: _session_error,
}


def render_entry(entry: Exchange | Note, load_blob: BlobLoader | None = None) -> str:
    """One history entry as HTML: an exchange's prompt (with its attachments: thumbnails when
    ``load_blob`` reads them) and outcome, or a note."""
    if isinstance(entry, Note):
        render = _NOTES.get(entry.type)
        return render(entry.data) if render else ""
    return (
        _user(entry, load_blob)
        + tool_blocks_html(entry.tool_calls)
        + _OUTCOMES[entry.status](entry)
    )


class Transcript:
    """A session's history with each entry's HTML, re-rendered only when the entry changes."""

    def __init__(
        self,
        events: Iterable[Event] = (),
        *,
        history: History | None = None,
        load_blob: BlobLoader | None = None,
    ) -> None:
        self.history = history if history is not None else History()
        self.load_blob = load_blob
        self._html: dict[int, str] = {}
        self.fold(events)

    def __len__(self) -> int:
        return len(self.history.entries())

    def fold(self, events: Iterable[Event]) -> list[Exchange | Note]:
        """Apply stored events in order; return the entries that changed (each re-rendered once)."""
        changed = self.history.fold(events)
        self.refresh(changed)
        return changed

    def refresh(self, entries: Iterable[Exchange | Note]) -> None:
        """Re-render ``entries`` (changed by events applied to the history directly)."""
        for entry in entries:
            self._html[id(entry)] = render_entry(entry, self.load_blob)

    def html(self, empty: str = "") -> str:
        """The whole transcript as HTML (``empty`` if it has no messages yet)."""
        entries = self.history.entries()
        if not entries:
            self._html.clear()
            return f'<div class="cj-empty">{_text(empty)}</div>' if empty else ""
        parts = []
        for entry in entries:
            key = id(entry)
            if key not in self._html:
                self._html[key] = render_entry(entry, self.load_blob)
            parts.append(self._html[key])
        if len(self._html) > len(entries):  # entries dropped (replaced): forget their HTML
            keep = {id(entry) for entry in entries}
            self._html = {key: value for key, value in self._html.items() if key in keep}
        return "".join(parts)
