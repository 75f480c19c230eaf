"""One open session as the panel follows it: its transcript, the reply streaming now, a status.

:class:`SessionFeed` reads a session's stored events in ``seq`` order, both when the session's
handler reports one (this process) and when the panel polls (other processes), so each is
applied once and in order whoever wrote it. It folds them with the session's
:class:`~copilot.history.History` (inside a :class:`~copilot_jupyter.transcript.Transcript`),
and takes the status line from the entries each fold changed.

The reply being streamed is only known to the process that runs the turn (deltas are not
stored). The feed keeps all of it in the history; what it hands out is bounded
(:data:`LIVE_CHARS`, the tail), so a huge reply costs the browser no more than a short one.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from copilot import Event, Session
from copilot.events import EventType
from copilot.history import Exchange, ExchangeStatus, Note

from .formatting import context_fill, format_usage
from .transcript import EMPTY, Transcript

__all__ = ["LIVE_CHARS", "SessionFeed"]

#: the most of a streaming reply a live update carries (its tail, in characters)
LIVE_CHARS = 20_000

_HOST = socket.gethostname()


def _exchange_status(exchange: Exchange, where: str) -> tuple[str, str] | None:
    if exchange.status is ExchangeStatus.PENDING:
        if exchange.started and not exchange.ended:
            return "busy", f"{exchange.model or 'the model'} is answering{where}…"
        return None
    if exchange.status is ExchangeStatus.OK:
        # the status line also says how full the model's context was (long sessions compact
        # near 80%: the user sees it coming)
        usage = " · ".join(
            p for p in (format_usage(exchange.usage), context_fill(exchange.usage)) if p
        )
        return ("info", f"{exchange.model} · {usage}") if usage else None
    if exchange.status is ExchangeStatus.ABORTED:
        kept = " The partial reply is kept." if exchange.reply else ""
        return "info", f"Stopped: {exchange.error or 'aborted'}.{kept}"
    return "error", f"Error: {exchange.error or 'the turn failed'}"


#: the status line a note sets (notes of other kinds leave it)
_NOTE_STATUS: dict[str, Callable[[dict[str, Any]], tuple[str, str]]] = {
    EventType.SESSION_MODEL_CHANGE: lambda d: (
        "info",
        f"Model: {d.get('newModel')} (the context is kept)",
    ),
    EventType.SESSION_WARNING: lambda d: ("warning", f"Note: {d.get('message', '')}"),
    EventType.SESSION_ERROR: lambda d: ("error", f"Error: {d.get('message', 'the turn failed')}"),
}


class SessionFeed:
    """One open session as the panel shows it, kept current from its events.

    ``on_change(feed, live_only)`` is called after a change, outside the feed's lock, on the
    thread that saw it: the client's event thread, or the poller's. ``live_only`` is True for
    a streaming delta (the caller may throttle those), False for stored events.
    """

    def __init__(
        self,
        session: Session,
        on_change: Callable[[SessionFeed, bool], None] = lambda f, live: None,
        load_blob: Callable[[str], bytes | None] | None = None,
    ) -> None:
        self.session = session
        self.session_id = session.session_id
        # load_blob (client.get_attachment): prompts' small images show as thumbnails
        self.transcript = Transcript(load_blob=load_blob)
        self.history = self.transcript.history
        #: the stored events applied, oldest first
        self.events: list[Event] = []
        self.status = ("info", f"Ready · model {session.model}")
        self._expected: set[str] = set()  # prompts sent here whose turn has not ended
        self._elsewhere: set[str] = set()  # turns run by another process
        self._lock = threading.Lock()
        self._on_change = on_change
        self._closed = False
        self.poll(notify=False)
        self._unsubscribe = session.on(self._on_event)
        self.poll(notify=False)  # what was stored between the first read and subscribing

    @property
    def last_seq(self) -> int:
        """The newest stored sequence number applied."""
        return self.history.last_seq

    @property
    def busy(self) -> bool:
        """A turn of this session is running (or was just sent from here)."""
        return bool(self._expected) or any(x.started for x in self.history.open_exchanges())

    def close(self) -> None:
        """Stop following the session."""
        self._closed = True
        self._unsubscribe()

    def _on_event(self, event: Event) -> None:
        # On the client's event thread: keep it short, never wait on the client here.
        if self._closed:
            return
        if event.type == EventType.ASSISTANT_MESSAGE_DELTA:
            with self._lock:
                exchange = self.history.get(event.data.get("messageId") or "")
                if (
                    exchange is None
                    or exchange.ended
                    or exchange.status is not ExchangeStatus.PENDING
                ):
                    return  # a late delta of a finished turn
                self.history.apply(event)
            self._on_change(self, True)
        elif event.seq is not None:
            self.poll()

    def poll(self, notify: bool = True) -> bool:
        """Read and fold the events stored after the last one seen; True if any."""
        with self._lock:
            events = self.session.get_messages(after=self.history.last_seq)
            if events:
                self._fold(events)
        if events and notify and not self._closed:
            self._on_change(self, False)
        return bool(events)

    def _fold(self, events: list[Event]) -> None:
        for event in events:
            if event.type == EventType.ASSISTANT_TURN_START and (
                event.data.get("pid") != os.getpid() or event.data.get("host") != _HOST
            ):
                self._elsewhere.add(event.data.get("messageId") or "")
        self.events.extend(events)
        for entry in self.transcript.fold(events):
            status: tuple[str, str] | None
            if isinstance(entry, Note):
                to_status = _NOTE_STATUS.get(entry.type)
                status = to_status(entry.data) if to_status else None
            else:
                if entry.ended:
                    self._expected.discard(entry.message_id)
                    self._elsewhere.discard(entry.message_id)
                where = " (in another process)" if entry.message_id in self._elsewhere else ""
                status = _exchange_status(entry, where)
            if status is not None:
                self.status = status

    def expect(self, message_id: str) -> None:
        """Count the turn ``message_id`` (just sent) as running until its events end it."""
        with self._lock:
            exchange = self.history.get(message_id)
            if exchange is None or not exchange.ended:
                self._expected.add(message_id)

    def live(self) -> dict[str, Any]:
        """The reply streaming now: ``id``, ``model``, ``text`` (its last :data:`LIVE_CHARS`
        characters) and ``total`` (its length); ``{}`` when no turn runs."""
        with self._lock:
            return self._live()

    def _live(self) -> dict[str, Any]:
        if not self.busy:
            return {}
        running = [x for x in self.history.open_exchanges() if x.started]
        expected = [self.history.get(m) for m in self._expected]
        exchange = (running or [x for x in expected if x is not None] or [None])[-1]
        if exchange is None:
            return {"id": "", "model": self.session.model, "text": "", "total": 0}
        text = exchange.live
        return {
            "id": f"{exchange.message_id}/{exchange.attempt}",  # a retry starts the text over
            "model": exchange.model or self.session.model,
            "text": text[-LIVE_CHARS:],
            "total": len(text),
        }

    def snapshot(self, empty: str = EMPTY) -> dict[str, Any]:
        """What the view shows of this session, read consistently."""
        with self._lock:
            return {
                "session": self.session_id,
                "model": self.session.model,
                "html": self.transcript.html(empty),
                "live": self._live(),
                "busy": self.busy,
                "level": self.status[0],
                "status": self.status[1],
                "events": tuple(self.events),
            }
