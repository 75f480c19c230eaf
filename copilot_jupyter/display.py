"""Streaming a reply into a cell's output, and the small pieces of output around it.

A ``%%copilot`` cell sends its prompt and blocks until the turn ends. The session's events
arrive on the client's event thread; :class:`_TurnWatch` subscribes a handler that only puts
them on a thread-safe queue, and the cell's own thread takes them off and updates ONE display
handle, at most once per ``update_interval`` seconds, so a long reply neither floods the front
end nor touches IPython's display machinery from a foreign thread (ipykernel routes output by
the thread that produces it).

Interrupting the kernel while the cell waits (the stop button: a ``KeyboardInterrupt`` in the
cell's thread) aborts the turn: the core stores the partial reply in an ``abort`` event, the
cell shows it marked "aborted", and the session stays usable. No traceback.

>>> outcome = stream_turn(session, "Hello", fmt="markdown", update_interval=0.1)
>>> outcome.status, outcome.content
('ok', 'echo: Hello')
"""

from __future__ import annotations

import html
import json
import queue
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from IPython.display import Math, display

from copilot import CopilotError, Event, Session

__all__ = ["FORMATS", "TurnOutcome", "extract_code", "render", "show_error", "stream_turn"]

#: the output formats of ``%%copilot -f``
FORMATS = ("markdown", "text", "code", "html", "json", "math")

#: how long the cell waits for the core to confirm an abort before it stops waiting
_ABORT_GRACE = 10.0
#: the longest the cell blocks in one wait, so it notices a deadline promptly
_MAX_WAIT = 0.25

_FENCED = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)

Bundle = dict[str, Any]


@dataclass(slots=True)
class TurnOutcome:
    """What came of one ``%%copilot`` turn.

    ``status`` is ``"ok"``, ``"aborted"`` (interrupted or timed out: ``content`` holds the
    partial reply), ``"error"`` (``error`` holds the message) or ``"detached"`` (the cell
    stopped waiting; the turn goes on in the background).
    """

    session_id: str
    message_id: str | None = None
    status: str = "pending"
    content: str = ""
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    duration_ms: float | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


def extract_code(text: str) -> str:
    """The code of a reply: its fenced blocks joined, or the whole reply if it has none."""
    blocks = [block.strip("\n") for block in _FENCED.findall(text)]
    return "\n\n".join(blocks) if blocks else text.strip()


def _json_payload(text: str) -> Any:
    blocks = _FENCED.findall(text)
    return json.loads(blocks[0] if len(blocks) == 1 else text)


def render(text: str, fmt: str, *, final: bool) -> Bundle:
    """The MIME bundle showing ``text`` in format ``fmt``.

    While a reply streams (``final=False``) Markdown and code replies render as Markdown and
    the others as plain text (half an HTML page or JSON document does not render); the final
    bundle renders the finished reply in its format, with a text/plain fallback.
    """
    bundle: Bundle = {"text/plain": text}
    if fmt in ("markdown", "code"):
        bundle["text/markdown"] = text
    elif not final or fmt == "text":
        pass
    elif fmt == "html":
        bundle["text/html"] = text
    elif fmt == "math":
        bundle["text/latex"] = Math(text.strip())._repr_latex_()
    elif fmt == "json":
        try:
            bundle["application/json"] = _json_payload(text)
        except ValueError:
            note = "*(the reply is not valid JSON)*"
            bundle["text/markdown"] = f"{note}\n\n```\n{text}\n```"
    return bundle


def show_error(message: str) -> None:
    """Print an expected failure: one short line on stderr, no traceback."""
    print(f"copilot: {message}", file=sys.stderr)


def show_note(lines: list[str]) -> None:
    """A small, dimmed note under a reply (the footer, warnings, "aborted")."""
    if not lines:
        return
    text = "\n".join(lines)
    markup = "<br>".join(html.escape(line) for line in lines)
    display(
        {
            "text/html": f'<div style="font-size: smaller; opacity: 0.7">{markup}</div>',
            "text/plain": text,
        },
        raw=True,
    )


class _LiveReply:
    """One display handle showing the reply, updated at most once per ``interval`` seconds."""

    def __init__(self, fmt: str, interval: float) -> None:
        self.fmt = fmt
        self.interval = interval
        self.parts: list[str] = []
        self.pending = False
        self.last_update = time.monotonic()
        self.handle = display(
            {"text/plain": "…", "text/markdown": "*…*"}, raw=True, display_id=True
        )

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add(self, delta: str) -> None:
        self.parts.append(delta)
        self.pending = True

    def reset(self) -> None:
        """Forget the streamed text (the core retries a failed stream from the start)."""
        self.parts = []
        self.pending = True

    def due_in(self, now: float) -> float | None:
        """Seconds until an update is due, or None if there is nothing new to show."""
        if not self.pending:
            return None
        return max(0.0, self.last_update + self.interval - now)

    def update(self, now: float) -> None:
        if self.pending:
            self.handle.update(render(self.text, self.fmt, final=False), raw=True)
            self.pending = False
            self.last_update = now

    def finish(self, text: str) -> None:
        self.handle.update(render(text, self.fmt, final=True), raw=True)


class _TurnWatch:
    """Follows one turn's events from the queue and keeps the outcome and the display current."""

    def __init__(self, session: Session, view: _LiveReply) -> None:
        self.session = session
        self.view = view
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.outcome = TurnOutcome(session.session_id)
        self.started = False
        self.done = False
        self._attempt = 0
        self._seen_prompt = False

    def _ours(self, event: Event) -> bool:
        message_id = self.outcome.message_id
        if event.type == "user.message":
            self._seen_prompt = self._seen_prompt or event.id == message_id
            return event.id == message_id
        if "messageId" in event.data:
            return event.data["messageId"] == message_id
        # a fallback warning carries no message id: it sits between our prompt and its start
        return event.type == "session.warning" and self._seen_prompt and not self.started

    def _handle(self, event: Event) -> None:
        data, outcome = event.data, self.outcome
        kind = event.type
        if kind == "assistant.message_delta":
            if data.get("attempt", 0) != self._attempt:
                self._attempt = data.get("attempt", 0)
                self.view.reset()
            self.view.add(data.get("deltaContent", ""))
        elif kind == "assistant.turn_start":
            self.started = True
            outcome.model = data.get("model")
        elif kind == "assistant.message":
            outcome.status, outcome.content = "ok", data.get("content", "")
            outcome.model = data.get("model", outcome.model)
        elif kind == "assistant.usage":
            outcome.input_tokens = data.get("inputTokens")
            outcome.output_tokens = data.get("outputTokens")
            outcome.duration_ms = data.get("duration")
        elif kind == "session.warning" and data.get("warningType") != "retry":
            outcome.warnings.append(data.get("message", ""))
        elif kind == "session.error":
            outcome.status, outcome.error = "error", data.get("message", "")
        elif kind == "abort":
            outcome.status, outcome.content = "aborted", data.get("partialContent") or ""
            self.done = True  # an abort before the turn started has no turn_end
        elif kind == "assistant.turn_end":
            self.done = True

    def pump(self, deadline: float | None) -> bool:
        """Handle events until the turn ends (True) or ``deadline`` passes (False)."""
        while not self.done:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            waits = [_MAX_WAIT, self.view.due_in(now)]
            if deadline is not None:
                waits.append(deadline - now)
            try:
                event = self.events.get(timeout=min(w for w in waits if w is not None))
            except queue.Empty:
                pass
            else:
                if self._ours(event):
                    self._handle(event)
            now = time.monotonic()
            due = self.view.due_in(now)
            if due is not None and due <= 0:
                self.view.update(now)
        return True

    def abort(self) -> None:
        """Abort this cell's turn, running or still queued (never another cell's turn)."""
        if not self.done and self.outcome.message_id:
            self.session.abort(self.outcome.message_id)


def _footer(outcome: TurnOutcome) -> str:
    parts = [outcome.model or "?"]
    if outcome.input_tokens is not None or outcome.output_tokens is not None:
        parts.append(f"{outcome.input_tokens or 0} → {outcome.output_tokens or 0} tokens")
    if outcome.duration_ms is not None:
        parts.append(f"{outcome.duration_ms / 1000:.1f} s")
    parts.append(f"session {outcome.session_id}")
    return " · ".join(parts)


def stream_turn(
    session: Session,
    prompt: str,
    *,
    replaces: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    fmt: str = "markdown",
    update_interval: float = 0.1,
    timeout: float | None = None,
    show_footer: bool = True,
    on_sent: Callable[[str], None] | None = None,
) -> TurnOutcome:
    """Send ``prompt`` on ``session`` and stream the reply into the cell's output until it ends.

    Parameters: ``replaces`` (the message id this prompt replaces: a re-run cell),
    ``metadata`` (stored with the prompt, e.g. the cell id), ``fmt``
    (one of :data:`FORMATS`), ``update_interval`` (seconds between display updates),
    ``timeout`` (seconds to wait before aborting the turn; None waits as long as it takes),
    ``show_footer`` (model, tokens and time under the reply), ``on_sent`` (called with the
    message id as soon as the prompt is queued). Raises :class:`copilot.CopilotError` if the
    prompt cannot be sent; a failed, aborted or timed-out turn is reported in the outcome.
    """
    view = _LiveReply(fmt, update_interval)
    watch = _TurnWatch(session, view)
    unsubscribe = session.on(watch.events.put)
    notes: list[str] = []
    try:
        try:
            watch.outcome.message_id = session.send(prompt, replaces=replaces, metadata=metadata)
        except CopilotError:
            view.finish("")
            raise
        deadline = None if not timeout else time.monotonic() + timeout
        try:
            if on_sent is not None:
                on_sent(watch.outcome.message_id)
            if not watch.pump(deadline):
                notes.append(f"no reply within {timeout:g} s: the turn was aborted")
                watch.abort()
                watch.pump(time.monotonic() + _ABORT_GRACE)
        except KeyboardInterrupt:
            watch.abort()
            try:
                watch.pump(time.monotonic() + _ABORT_GRACE)
            except KeyboardInterrupt:
                pass  # a second interrupt: stop waiting at once
    finally:
        unsubscribe()
    outcome = watch.outcome
    if not watch.done:
        outcome.status = "detached"
        notes.append("stopped waiting; the turn goes on in the background")
    outcome_text = outcome.content if outcome.status in ("ok", "aborted") else view.text
    view.finish(outcome_text)
    if outcome.status == "aborted":
        notes.append(f"⏹ aborted: the partial reply is kept in session {session.session_id!r}")
    elif outcome.status == "error":
        show_error(f"{outcome.error} (session {session.session_id!r} is still usable)")
    notes[:0] = [f"⚠ {warning}" for warning in outcome.warnings]
    if show_footer and outcome.status == "ok":
        notes.append(_footer(outcome))
    show_note(notes)
    return outcome
