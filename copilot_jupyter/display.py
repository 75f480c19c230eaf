"""Streaming a reply into a cell's output, and the small pieces of output around it.

A ``%%copilot`` cell sends its prompt and blocks until the turn ends. The session's events
arrive on the client's event thread; :class:`_TurnWatch` subscribes a handler that only puts
them on a thread-safe queue, and the cell's own thread takes them off and updates ONE display
handle, at most once per ``update_interval`` seconds, so a long reply neither floods the front
end nor touches IPython's display machinery from a foreign thread (ipykernel routes output by
the thread that produces it). The cell folds its turn's events with
:class:`copilot.history.History`, the fold every reader of the log uses: the streamed text is
the exchange's ``live`` text, the outcome its status, reply, model and usage.

What reaches the browser is bounded, whatever the reply's size: a live update shows at most
:data:`LIVE_LIMIT` characters (the tail of a longer reply), and when the turn ends the
placeholder is emptied and the finished reply is shown once, as a display of its own, cut to
:data:`OUTPUT_LIMIT` characters with a note (the session log keeps the whole reply). That
final display is also what a saved notebook and nbval see. A prompt longer than
:data:`LARGE_PROMPT` characters is announced before it is sent.

Interrupting the kernel while the cell waits (the stop button: a ``KeyboardInterrupt`` in the
cell's thread) aborts the turn: the core stores the partial reply in an ``abort`` event, the
cell shows it marked "aborted", and the session stays usable. No traceback.

>>> outcome = stream_turn(session, "Hello", fmt="markdown", update_interval=0.1)
>>> outcome.status, outcome.content
('ok', 'echo: Hello')
"""

from __future__ import annotations

import contextlib
import functools
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

from copilot import Event, EventType, Session
from copilot.history import Exchange, ExchangeStatus, History, Note

from .approval import ApprovalBroker, route_clicks
from .toolblocks import SHOWN_TOOL_CHARS, tool_blocks_html, tool_blocks_text

__all__ = [
    "FORMATS",
    "LARGE_PROMPT",
    "LIVE_LIMIT",
    "OUTPUT_LIMIT",
    "PLACEHOLDER",
    "TurnOutcome",
    "extract_code",
    "render",
    "show_error",
    "show_tool_calls",
    "stream_turn",
]

#: the output formats of ``%%copilot -f``
FORMATS = ("markdown", "text", "code", "html", "json", "math")

#: how long the cell waits for the core to confirm an abort before it stops waiting
_ABORT_GRACE = 10.0
#: the longest the cell blocks in one wait, so it notices a deadline promptly
_MAX_WAIT = 0.25
#: the most queued events handled between two looks at the clock
_MAX_BATCH = 10_000
#: the longest the cell blocks in one wait while a tool call waits for the user's approval
#: (the click is handled between two waits)
_APPROVAL_WAIT = 0.05

#: a live update shows at most this many characters of the reply (its tail)
LIVE_LIMIT = 20_000
#: the finished output keeps at most this many characters (the session log keeps all)
OUTPUT_LIMIT = 100_000
#: prompts longer than this many characters are sent with a warning
LARGE_PROMPT = 1_000_000

#: the reply's placeholder: empty while waiting and again once the reply is shown on its own
PLACEHOLDER: dict[str, str] = {"text/plain": ""}

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
    #: the turn's tool calls (:attr:`copilot.history.Exchange.tool_calls`)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


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
    """One display handle showing the streamed reply, updated at most once per ``interval``.

    The handle is a placeholder: it starts empty, shows the reply while it streams (only its
    tail once it is longer than ``live_limit`` characters, so no update resends a huge reply),
    and is emptied again when the turn ends, when the finished reply is shown as a display of
    its own (:func:`stream_turn`). Empty at both ends, the placeholder compares equal in nbval,
    which does not apply ``update_display_data``.
    """

    def __init__(self, fmt: str, interval: float, live_limit: int) -> None:
        self.fmt = fmt
        self.interval = interval
        self.live_limit = live_limit
        self.pending = False
        self.last_update = time.monotonic()
        #: the number of in-place updates sent (tests and measurements read it)
        self.updates = 0
        self.handle = display(dict(PLACEHOLDER), raw=True, display_id=True)

    def due_in(self, now: float) -> float | None:
        """Seconds until an update is due, or None if there is nothing new to show."""
        if not self.pending:
            return None
        return max(0.0, self.last_update + self.interval - now)

    def update(self, text: str, now: float) -> None:
        """Show the reply streamed so far (its tail, if it is long)."""
        if not self.pending:
            return
        if len(text) > self.live_limit:
            head = (
                f"[a long reply: {len(text):,} characters so far; the last "
                f"{self.live_limit:,} are shown until it ends]\n…"
            )
            bundle: Bundle = {"text/plain": head + text[-self.live_limit :]}
        else:
            bundle = render(text, self.fmt, final=False)
        self.handle.update(bundle, raw=True)
        self.updates += 1
        self.pending = False
        self.last_update = now

    def clear(self) -> None:
        """Empty the placeholder again (the finished reply is shown on its own)."""
        self.handle.update(dict(PLACEHOLDER), raw=True)
        self.updates += 1


class _TurnWatch:
    """Follows one turn's events from the queue, folding them with :class:`History`.

    Deltas are buffered and applied as one delta per display update (or before any other
    event), so the fold's streamed text grows a few times a second instead of once per word:
    a multi-megabyte reply streamed word by word stays linear in its length.
    """

    def __init__(self, session: Session, view: _LiveReply) -> None:
        self.session = session
        self.view = view
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.history = History()
        self.message_id: str | None = None
        self.exchange: Exchange | None = None
        #: the text streamed so far, kept after the fold clears it (an error shows it)
        self.streamed = ""
        self._buffer: list[str] = []
        self._buffer_attempt = 0
        #: called on the cell's thread between two waits; True while it waits for the user
        self.idle: Callable[[], bool] | None = None

    @property
    def done(self) -> bool:
        """The turn ended (or was aborted before it started)."""
        return self.exchange is not None and self.exchange.ended

    def _ours(self, event: Event) -> bool:
        message_id = self.message_id
        if event.type == EventType.USER_MESSAGE:
            return event.id == message_id
        if "messageId" in event.data:
            return event.data["messageId"] == message_id
        # a fallback warning carries no message id: it sits between our prompt and its start
        return (
            event.type == EventType.SESSION_WARNING
            and self.exchange is not None
            and not self.exchange.started
        )

    def take(self, event: Event) -> None:
        """Fold one event of the queue (deltas are buffered; see the class docstring)."""
        if not self._ours(event):
            return
        if event.type == EventType.ASSISTANT_MESSAGE_DELTA:
            attempt = event.data.get("attempt", 0)
            if attempt != self._buffer_attempt:
                self.flush()
                self._buffer_attempt = attempt
            self._buffer.append(str(event.data.get("deltaContent", "")))
            self.view.pending = True
            return
        self.flush()
        self.history.apply(event)
        if event.type == EventType.USER_MESSAGE:
            self.exchange = self.history.get(event.id)

    def flush(self) -> None:
        """Apply the buffered deltas to the fold as one delta."""
        if not self._buffer or self.message_id is None:
            return
        data = {
            "messageId": self.message_id,
            "deltaContent": "".join(self._buffer),
            "attempt": self._buffer_attempt,
        }
        self._buffer = []
        self.history.apply(Event(EventType.ASSISTANT_MESSAGE_DELTA, data))
        if self.exchange is not None:
            self.streamed = self.exchange.live

    def pump(self, deadline: float | None) -> bool:
        """Handle events until the turn ends (True) or ``deadline`` passes (False)."""
        while not self.done:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self.flush()
                return False
            waits = [_MAX_WAIT, self.view.due_in(now)]
            if self.idle is not None and self.idle():
                waits.append(_APPROVAL_WAIT)
            if deadline is not None:
                waits.append(deadline - now)
            try:
                self.take(self.events.get(timeout=min(w for w in waits if w is not None)))
                for _ in range(_MAX_BATCH):  # what else is queued, without blocking
                    self.take(self.events.get_nowait())
            except queue.Empty:
                pass
            now = time.monotonic()
            due = self.view.due_in(now)
            if due is not None and due <= 0:
                self.flush()
                self.view.update(self.streamed, now)
        self.flush()
        return True

    def abort(self) -> None:
        """Abort this cell's turn, running or still queued (never another cell's turn)."""
        if not self.done and self.message_id:
            self.session.abort(self.message_id)

    def outcome(self) -> TurnOutcome:
        """What came of the turn, from the fold."""
        outcome = TurnOutcome(self.session.session_id, self.message_id)
        exchange = self.exchange
        warnings = [
            note.data.get("message", "")
            for note in self.history.entries()
            if isinstance(note, Note)
            and note.type == EventType.SESSION_WARNING
            and note.data.get("warningType") != "retry"
        ]
        outcome.warnings = warnings
        if exchange is not None:
            outcome.tool_calls = list(exchange.tool_calls)
        if exchange is None:
            outcome.status = "detached"
            return outcome
        outcome.model = exchange.model
        outcome.input_tokens = exchange.input_tokens
        outcome.output_tokens = exchange.output_tokens
        outcome.duration_ms = exchange.usage.get("duration")
        if not exchange.ended:
            outcome.status = "detached"
            outcome.content = self.streamed
        elif exchange.status in (ExchangeStatus.OK, ExchangeStatus.ABORTED):
            outcome.status, outcome.content = str(exchange.status), exchange.reply
        elif exchange.status is ExchangeStatus.ERROR:
            outcome.status, outcome.error = "error", exchange.error
            outcome.content = self.streamed
        else:  # ended without an outcome: the core recorded nothing more
            outcome.status = "detached"
        return outcome


def _show_approvals(approvals: ApprovalBroker) -> bool:
    """Show the new approvals in this cell, their clicks handled while the cell runs; True
    while one is waiting for the user."""
    for approval in approvals.take_new():
        route_clicks(approval)  # before the user can see it (and click)
        display(approval.widget)
        approval.shown.set()
    return bool(approvals.pending())


def show_tool_calls(tool_calls: list[dict[str, Any]], max_chars: int = SHOWN_TOOL_CHARS) -> None:
    """A turn's tool calls as collapsible blocks (name, arguments, result), escaped and cut."""
    display(
        {
            "text/html": tool_blocks_html(tool_calls, max_chars),
            "text/plain": tool_blocks_text(tool_calls, max_chars),
        },
        raw=True,
    )


def _footer(outcome: TurnOutcome) -> str:
    parts = [outcome.model or "?"]
    if outcome.input_tokens is not None or outcome.output_tokens is not None:
        parts.append(f"{outcome.input_tokens or 0} → {outcome.output_tokens or 0} tokens")
    if outcome.duration_ms is not None:
        parts.append(f"{outcome.duration_ms / 1000:.1f} s")
    parts.append(f"session {outcome.session_id}")
    return " · ".join(parts)


def _final_bundle(outcome: TurnOutcome, fmt: str, output_limit: int) -> tuple[Bundle, str | None]:
    """The finished reply's bundle and, if it was cut to ``output_limit``, a note saying so."""
    text = outcome.content
    if len(text) <= output_limit:
        return render(text, fmt, final=True), None
    note = (
        f"the reply has {len(text):,} characters; the first {output_limit:,} are shown. "
        f"The whole reply is kept in session {outcome.session_id!r}: "
        f"%copilot export {outcome.session_id} FILE.md writes it out"
    )
    return {"text/plain": text[:output_limit] + "\n…"}, note


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
    options: Mapping[str, Any] | None = None,
    live_limit: int = LIVE_LIMIT,
    output_limit: int = OUTPUT_LIMIT,
    large_prompt: int = LARGE_PROMPT,
    approvals: ApprovalBroker | None = None,
    tool_chars: int = SHOWN_TOOL_CHARS,
) -> TurnOutcome:
    """Send ``prompt`` on ``session`` and stream the reply into the cell's output until it ends.

    Parameters: ``replaces`` (the message id this prompt replaces: a re-run cell),
    ``metadata`` (stored with the prompt, e.g. the cell id), ``fmt``
    (one of :data:`FORMATS`), ``update_interval`` (seconds between display updates),
    ``timeout`` (seconds to wait before aborting the turn; None waits as long as it takes),
    ``show_footer`` (model, tokens and time under the reply), ``on_sent`` (called with the
    message id as soon as the prompt is queued), ``options`` (generation options passed to
    ``send``: temperature, max_tokens, ...), ``live_limit`` (the most characters one live
    update shows: the tail of a longer reply), ``output_limit`` (the most characters the
    finished output keeps: the head; the session log keeps everything), ``large_prompt`` (a
    prompt longer than this many characters gets a warning first), ``approvals`` (the
    session's permission handler: a tool call waiting for approval shows its Approve / Deny
    widget in this cell, and the cell lets the kernel handle the click), ``tool_chars`` (the
    most characters of each tool call's arguments and result shown). Raises
    :class:`copilot.CopilotError` if the prompt cannot be sent; a failed, aborted or timed-out
    turn is reported in the outcome.
    """
    if len(prompt) > large_prompt:
        show_note(
            [
                f"⚠ a large prompt: {len(prompt):,} characters (roughly {len(prompt) // 4:,} "
                "tokens); it is sent as is, and older exchanges may not fit in the model's context"
            ]
        )
    view = _LiveReply(fmt, update_interval, live_limit)
    watch = _TurnWatch(session, view)
    if approvals is not None:
        watch.idle = functools.partial(_show_approvals, approvals)
    unsubscribe = session.on(watch.events.put)
    notes: list[str] = []
    waiting = (
        approvals.cell_waiting(session.session_id)
        if approvals is not None
        else contextlib.nullcontext()
    )
    try:
        with waiting:
            _run_turn(session, prompt, watch, replaces, metadata, options, timeout, on_sent, notes)
    finally:
        unsubscribe()
    return _finish(session, watch, view, notes, fmt, output_limit, tool_chars, show_footer)


def _run_turn(
    session: Session,
    prompt: str,
    watch: _TurnWatch,
    replaces: str | None,
    metadata: Mapping[str, Any] | None,
    options: Mapping[str, Any] | None,
    timeout: float | None,
    on_sent: Callable[[str], None] | None,
    notes: list[str],
) -> None:
    """Send the prompt and follow the turn until it ends, times out or is interrupted."""
    watch.message_id = session.send(
        prompt, replaces=replaces, metadata=metadata, **dict(options or {})
    )
    deadline = None if not timeout else time.monotonic() + timeout
    try:
        if on_sent is not None:
            on_sent(watch.message_id)
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


def _finish(
    session: Session,
    watch: _TurnWatch,
    view: _LiveReply,
    notes: list[str],
    fmt: str,
    output_limit: int,
    tool_chars: int,
    show_footer: bool,
) -> TurnOutcome:
    """Show the finished turn: its tool calls, the reply, and the notes under it."""
    outcome = watch.outcome()
    if view.updates:
        view.clear()
    if outcome.status == "detached":
        notes.append("stopped waiting; the turn goes on in the background")
    if outcome.tool_calls:
        show_tool_calls(outcome.tool_calls, tool_chars)
    if outcome.content or outcome.status == "ok":
        bundle, cut = _final_bundle(outcome, fmt, output_limit)
        display(bundle, raw=True)
        if cut:
            notes.append(cut)
    if outcome.status == "aborted":
        notes.append(f"⏹ aborted: the partial reply is kept in session {session.session_id!r}")
    elif outcome.status == "error":
        show_error(f"{outcome.error} (session {session.session_id!r} is still usable)")
    notes[:0] = [f"⚠ {warning}" for warning in outcome.warnings]
    if show_footer and outcome.status == "ok":
        notes.append(_footer(outcome))
    show_note(notes)
    return outcome
