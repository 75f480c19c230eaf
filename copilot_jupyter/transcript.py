"""A session's events as a readable chat transcript in HTML, and the feed that keeps it current.

:class:`Transcript` folds stored events into chat items; :class:`SessionFeed` follows one open
session (its handler, plus polls for other processes' writes) and keeps its transcript, the
reply being streamed, whether a turn runs, and a status line.

Everything a user or a model wrote is HTML-escaped before any markup is added: the small
Markdown renderer below only ever emits its own tags (``<p>``, ``<pre>``, ``<code>``, ``<em>``,
``<strong>``, ``<ul>``/``<ol>``/``<li>``, ``<h4>``-``<h6>``, ``<blockquote>`` and ``<a>`` for
``http(s)``/``mailto`` links), so a ``<script>`` in a prompt or a reply shows as text.

It is used instead of the ``markdown`` package on purpose: Python-Markdown passes raw HTML and
``javascript:`` links through unless reconfigured, its output differs between versions, and it
is not a dependency. A transcript needs only the common subset models write.

>>> t = Transcript()
>>> t.add(Event("user.message", {"content": "Hi <b>"}))
True
>>> "Hi &lt;b&gt;" in t.html()
True
"""

from __future__ import annotations

import html
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from copilot import Event, Session

__all__ = ["EMPTY", "SessionFeed", "Transcript", "format_usage", "render_live", "render_markdown"]

#: what an empty session's transcript says
EMPTY = "No messages yet. Type a prompt below and press Send."

_FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+#.-]*)\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^\s*\d+[.)]\s+(.*)$")
_QUOTE = re.compile(r"^\s*&gt;\s?(.*)$")  # matched on escaped text
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
_ITALIC = re.compile(
    r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?!\w)|(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?!\w)"
)
_LINK = re.compile(r"\[([^\]\n]+)\]\(((?:https?://|mailto:)[^\s)]+)\)")
_PLACEHOLDER = "\x00{}\x00"


def _inline(escaped: str) -> str:
    """Inline markup on already-escaped text: code spans, links, bold, italics."""
    codes: list[str] = []

    def keep_code(match: re.Match[str]) -> str:
        codes.append(f"<code>{match.group(1)}</code>")
        return _PLACEHOLDER.format(len(codes) - 1)

    text = _INLINE_CODE.sub(keep_code, escaped)
    # The URL was escaped with the rest (quotes included), so it is safe inside href="...".
    text = _LINK.sub(
        r'<a href="\2" target="_blank" rel="noopener noreferrer nofollow">\1</a>', text
    )
    text = _BOLD.sub(lambda m: f"<strong>{m.group(1) or m.group(2)}</strong>", text)
    text = _ITALIC.sub(lambda m: f"<em>{m.group(1) or m.group(2)}</em>", text)
    return re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], text)


def render_markdown(text: str) -> str:
    """Render the common subset of Markdown to safe HTML (every input character escaped).

    >>> render_markdown("**hi** <script>")
    '<p><strong>hi</strong> &lt;script&gt;</p>'
    """
    text = text.replace("\x00", "\ufffd")  # NUL marks code spans in _inline
    out: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []
    list_tag = ""
    quote: list[str] = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")

    def flush() -> None:
        nonlocal list_tag
        if paragraph:
            out.append("<p>" + "<br>".join(_inline(p) for p in paragraph) + "</p>")
            paragraph.clear()
        if items:
            body = "".join(f"<li>{_inline(i)}</li>" for i in items)
            out.append(f"<{list_tag}>{body}</{list_tag}>")
            items.clear()
            list_tag = ""
        if quote:
            out.append("<blockquote>" + "<br>".join(_inline(q) for q in quote) + "</blockquote>")
            quote.clear()

    index = 0
    while index < len(lines):
        raw = lines[index]
        fence = _FENCE.match(raw)
        if fence:
            flush()
            marker, language = fence.group(1), fence.group(2)
            code: list[str] = []
            index += 1
            while index < len(lines) and lines[index].strip() != marker:
                code.append(lines[index])
                index += 1
            index += 1  # the closing fence (or the end of an unclosed block while streaming)
            cls = f' class="language-{html.escape(language, quote=True)}"' if language else ""
            out.append(f"<pre><code{cls}>{html.escape(chr(10).join(code))}</code></pre>")
            continue
        line = html.escape(raw, quote=True)
        index += 1
        if not line.strip():
            flush()
            continue
        heading = _HEADING.match(line)
        if heading:
            flush()
            level = min(len(heading.group(1)) + 3, 6)  # h4-h6: a reply is not a page title
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            continue
        for pattern, tag in ((_BULLET, "ul"), (_NUMBERED, "ol")):
            match = pattern.match(line)
            if match:
                if list_tag != tag or paragraph or quote:
                    flush()
                list_tag = tag
                items.append(match.group(1))
                break
        else:
            match = _QUOTE.match(line)
            if match:
                if paragraph or items:
                    flush()
                quote.append(match.group(1))
            elif items and raw.startswith((" ", "\t")):
                items[-1] += " " + line.strip()  # a wrapped list item
            else:
                if items or quote:
                    flush()
                paragraph.append(line)
    flush()
    return "".join(out)


def _text(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def format_usage(data: dict[str, Any]) -> str:
    """``12 in · 8 out tokens · 0.41 s`` from an ``assistant.usage`` event's data (plain text)."""
    parts = []
    tokens_in, tokens_out = data.get("inputTokens"), data.get("outputTokens")
    if tokens_in is not None or tokens_out is not None:
        parts.append(f"{tokens_in or 0} in · {tokens_out or 0} out tokens")
    duration = data.get("duration")
    if duration is not None:
        parts.append(f"{float(duration) / 1000:.2f} s")
    return " · ".join(parts)


@dataclass(slots=True)
class _Item:
    kind: str  # user | assistant | note | error
    text: str
    model: str = ""
    meta: str = ""
    message_id: str | None = None
    html: str = field(default="", repr=False)

    def render(self) -> str:
        if self.kind == "user":
            body = f'<div class="cj-body">{render_markdown(self.text)}</div>'
            return f'<div class="cj-msg cj-user"><div class="cj-role">You</div>{body}</div>'
        if self.kind == "assistant":
            meta = f'<div class="cj-meta">{_text(self.meta)}</div>' if self.meta else ""
            body = render_markdown(self.text) or "<p><em>(empty reply)</em></p>"
            return (
                f'<div class="cj-msg cj-assistant"><div class="cj-role">{_text(self.model)}</div>'
                f'<div class="cj-body">{body}</div>{meta}</div>'
            )
        return f'<div class="cj-note cj-{self.kind}">{_text(self.text)}</div>'


class Transcript:
    """The stored events of one session folded into chat items, each rendered once.

    :meth:`add` takes stored events in order; ephemeral ones (deltas, idle) are ignored: the
    reply being streamed is shown apart, by :func:`render_live`.
    """

    def __init__(self, events: Iterable[Event] = ()) -> None:
        self._items: list[_Item] = []
        for event in events:
            self.add(event)

    def __len__(self) -> int:
        return len(self._items)

    def _append(self, item: _Item) -> None:
        item.html = item.render()
        self._items.append(item)

    def add(self, event: Event) -> bool:
        """Fold one stored event in; True if the transcript changed."""
        data = event.data
        kind = event.type
        if kind == "user.message":
            self._append(_Item("user", data.get("content", ""), message_id=event.id))
        elif kind == "assistant.message":
            model = data.get("model", "") or "assistant"
            self._append(
                _Item("assistant", data.get("content", ""), model, message_id=data.get("messageId"))
            )
        elif kind == "assistant.usage":
            for item in reversed(self._items):
                if item.kind == "assistant" and item.message_id == data.get("messageId"):
                    item.meta = format_usage(data)
                    item.html = item.render()
                    break
            else:
                return False
        elif kind == "abort":
            partial = data.get("partialContent") or ""
            if partial:
                self._append(_Item("assistant", partial, "partial reply"))
            self._append(_Item("note", f"Stopped: {data.get('reason') or 'aborted'}."))
        elif kind == "session.error":
            self._append(_Item("error", f"Error: {data.get('message', 'the turn failed')}"))
        elif kind == "session.model_change":
            text = f"Model changed: {data.get('previousModel')} → {data.get('newModel')}"
            self._append(_Item("note", text))
        elif kind == "session.warning" and data.get("warningType") == "fallback":
            self._append(_Item("note", str(data.get("message", ""))))
        elif kind == "session.truncation":
            omitted = data.get("turnsOmitted", 0)
            text = f"Context trimmed: the {omitted} oldest turn(s) no longer fit the model."
            self._append(_Item("note", text))
        else:
            return False
        return True

    def html(self, empty: str = "") -> str:
        """The whole transcript as HTML (``empty`` if it has no messages yet)."""
        if not self._items:
            return f'<div class="cj-empty">{_text(empty)}</div>' if empty else ""
        return "".join(item.html for item in self._items)


def render_live(model: str, text: str) -> str:
    """The reply being streamed now, as HTML (a cursor marks that it is still coming)."""
    body = render_markdown(text) if text else ""
    return (
        f'<div class="cj-msg cj-assistant cj-streaming"><div class="cj-role">{_text(model)}'
        f' <span class="cj-typing">writing…</span></div>'
        f'<div class="cj-body">{body}<span class="cj-cursor">▍</span></div></div>'
    )


_HOST = socket.gethostname()


class SessionFeed:
    """One open session as the panel shows it: its stored events in ``seq`` order, folded into
    a :class:`Transcript`, and the reply being streamed now.

    Stored events are read from the store after the last ``seq`` seen, both when the session's
    handler reports one (this process) and when the panel polls (other processes), so each is
    applied once and in order whoever wrote it.

    ``on_change(feed, live_only)`` is called after a change, outside the feed's lock, on the
    thread that saw it: the client's event thread, or the poller's. ``live_only`` is True for
    a streaming delta (the caller may throttle those), False for stored events.
    """

    def __init__(
        self,
        session: Session,
        on_change: Callable[[SessionFeed, bool], None] = lambda f, live: None,
    ) -> None:
        self.session = session
        self.session_id = session.session_id
        self.transcript = Transcript()
        self.events: list[Event] = []
        self.last_seq = 0
        self.live = ""
        self.live_model = ""
        self.open_turns: dict[str, str] = {}  # messageId -> model of turns not ended
        self._ended: set[str] = set()
        self.status = ("info", f"Ready · model {session.model}")
        self._lock = threading.Lock()
        self._on_change = on_change
        self._closed = False
        self.poll(notify=False)
        self._unsubscribe = session.on(self._on_event)
        self.poll(notify=False)  # what was stored between the first read and subscribing

    @property
    def busy(self) -> bool:
        return bool(self.open_turns)

    def close(self) -> None:
        self._closed = True
        self._unsubscribe()

    def _on_event(self, event: Event) -> None:
        # On the client's event thread: keep it short, never wait on the client here.
        if self._closed:
            return
        if event.type == "assistant.message_delta":
            with self._lock:
                self.live += str(event.data.get("deltaContent", ""))
            self._on_change(self, True)
        elif event.seq is not None:
            self.poll()

    def poll(self, notify: bool = True) -> bool:
        """Read and fold the events stored after the last one seen; True if any."""
        with self._lock:
            events = self.session.get_messages(after=self.last_seq)
            for event in events:
                self._fold(event)
        if events and notify and not self._closed:
            self._on_change(self, False)
        return bool(events)

    def _fold(self, event: Event) -> None:
        self.last_seq = max(self.last_seq, event.seq or 0)
        self.events.append(event)
        self.transcript.add(event)
        data = event.data
        kind = event.type
        if kind == "assistant.turn_start":
            self.open_turns[data.get("messageId", "")] = str(data.get("model", ""))
            self.live, self.live_model = "", str(data.get("model", ""))
            where = ""
            if data.get("pid") != os.getpid() or data.get("host") != _HOST:
                where = " (in another process)"
            self.status = ("busy", f"{self.live_model} is answering{where}…")
        elif kind == "assistant.turn_end" or (kind == "abort" and "messageId" in data):
            # (an abort of a turn that never started has no turn_end)
            self._ended.add(data.get("messageId", ""))
            self.open_turns.pop(data.get("messageId", ""), None)
            if not self.open_turns:
                self.live = ""
        if kind in ("assistant.message", "abort", "session.error"):
            self.live = ""
            if kind == "abort":
                kept = " The partial reply is kept." if data.get("partialContent") else ""
                self.status = ("info", f"Stopped: {data.get('reason') or 'aborted'}.{kept}")
            elif kind == "session.error":
                self.status = ("error", f"Error: {data.get('message', 'the turn failed')}")
        elif kind == "assistant.usage":
            self.status = ("info", f"{data.get('model', '')} · {format_usage(data)}")
        elif kind == "session.model_change":
            self.status = ("info", f"Model: {data.get('newModel')} (the context is kept)")
        elif kind == "session.warning":
            self.status = ("warning", f"Note: {data.get('message', '')}")

    def expect(self, message_id: str) -> None:
        """Count the turn ``message_id`` (just sent) as running until its events end it."""
        with self._lock:
            if message_id not in self._ended and message_id not in self.open_turns:
                self.open_turns[message_id] = self.session.model
                self.live_model = self.live_model or self.session.model

    def snapshot(self, empty: str = EMPTY) -> dict[str, Any]:
        """What the view shows of this session, read consistently."""
        with self._lock:
            live = (
                render_live(self.live_model or self.session.model, self.live) if self.busy else ""
            )
            return {
                "session": self.session_id,
                "model": self.session.model,
                "html": self.transcript.html(empty),
                "live": live,
                "busy": self.busy,
                "level": self.status[0],
                "status": self.status[1],
                "events": tuple(self.events),
            }
