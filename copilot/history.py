"""The one fold of a session's events into exchanges: every reader of the log uses it.

An :class:`Exchange` is a prompt and what came of it: the reply, or the partial reply of an
abort, or an error; the model that answered, the usage, the exchange it replaces (a re-run
notebook cell), the cell it came from, and room for what later features add to a turn (tool
calls, attachments). A :class:`History` applies events in log order, one at a time, so a
reader can keep it current by feeding it only the events stored since it last looked (the
model context before each turn, the panel's transcript, a cell's streaming display, export,
the magics' cell map).

Events that are not about one exchange (a model change, a fallback warning, a truncation, a
resume, a failure that names no prompt) become :class:`Note` entries in log order, for readers
that show the whole session.

Rules, written once here:

- ``user.message`` opens an exchange; with ``data.replaces`` the exchange it names leaves the
  history (the log keeps it): a re-run cell supersedes its previous exchange.
- ``assistant.turn_start`` marks it started and records the model asked;
  ``assistant.message_delta`` (ephemeral) grows :attr:`Exchange.live`; a new ``attempt`` (a
  retry) starts it over.
- an ``assistant.message`` with ``toolRequests`` is a step that called tools: it joins
  :attr:`Exchange.tool_calls` with the ``tool.*``, ``permission.*`` and ``hook.*`` events of
  the turn (in log order; :func:`copilot.tool_loop.replay_steps` makes model messages of them).
- ``assistant.message`` completes it (status ``ok``); ``abort`` makes it ``aborted`` with
  the partial reply; ``session.error`` makes it ``error``. ``assistant.usage`` adds usage.
- ``assistant.turn_end`` ends it; an ``abort`` of a turn that never started ends it too
  (such a turn has no ``turn_end``).

>>> from copilot.events import Event, EventType
>>> h = History()
>>> _ = h.apply(Event(EventType.USER_MESSAGE, {"content": "Hi"}, id="m1"))
>>> _ = h.apply(Event(EventType.ASSISTANT_MESSAGE, {"messageId": "m1", "content": "Hello"}))
>>> [(e.prompt, e.reply, e.status) for e in h.exchanges()]
[('Hi', 'Hello', 'ok')]
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .events import Event, EventType

__all__ = ["Exchange", "ExchangeStatus", "History", "Note", "exchanges_of"]


class ExchangeStatus(StrEnum):
    """How an exchange stands."""

    PENDING = "pending"  # the prompt is stored; no outcome yet (queued, running, or lost)
    OK = "ok"  # a complete reply
    ABORTED = "aborted"  # stopped; ``reply`` holds the partial text (may be empty)
    ERROR = "error"  # the turn failed; ``error`` holds the message


@dataclass(slots=True, eq=False)
class Exchange:
    """A prompt and what came of it."""

    message_id: str
    prompt: str
    timestamp: str = ""
    status: ExchangeStatus = ExchangeStatus.PENDING
    #: the complete reply (ok) or the partial one (aborted)
    reply: str = ""
    #: the model that answered (or was asked, until it answers)
    model: str | None = None
    error: str | None = None
    error_type: str | None = None
    #: the ``assistant.usage`` data (inputTokens, outputTokens, duration, ...)
    usage: dict[str, Any] = field(default_factory=dict)
    #: the message id of the exchange this one superseded (a re-run cell)
    replaces: str | None = None
    #: the prompt's stored metadata (never sent to a model); ``cellId`` for notebook cells
    metadata: dict[str, Any] = field(default_factory=dict)
    #: tool calls and their results, in order (the data of the tool events), when a turn acts
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    #: attachments of the prompt (their stored references)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    #: ``assistant.turn_start`` seen
    started: bool = False
    #: ``assistant.turn_end`` seen (or an abort before the turn started)
    ended: bool = False
    #: the pieces of the reply streamed so far (from ephemeral deltas; see :attr:`live`)
    live_parts: list[str] = field(default_factory=list, repr=False)
    #: the attempt the live text belongs to (a retry starts it over)
    attempt: int = 0
    #: sequence number of the prompt in the log (None when folded from unstored events)
    seq: int | None = None
    #: token counts cached by the context builder, per tokenizer key
    tokens: dict[str, int] = field(default_factory=dict, repr=False)
    #: the prompt and reply as chat messages, cached by the context builder (a turn at a
    #: full window built 500 of them anew; see :meth:`copilot.context.ConversationTail.build`)
    chat: tuple[Any, ...] | None = field(default=None, repr=False)

    @property
    def cell_id(self) -> str | None:
        """The notebook cell the prompt came from, if any."""
        cell = self.metadata.get("cellId")
        return cell if isinstance(cell, str) and cell else None

    @property
    def live(self) -> str:
        """The reply streamed so far (empty once an outcome is stored).

        Deltas are kept as pieces and joined when read (then kept joined), so a long
        streamed reply costs linear time, not a copy of the whole text per delta.
        """
        if len(self.live_parts) > 1:
            self.live_parts[:] = ["".join(self.live_parts)]
        return self.live_parts[0] if self.live_parts else ""

    @property
    def in_context(self) -> bool:
        """Whether the exchange belongs in a model's context.

        Completed exchanges do, and aborted ones with a partial reply. A prompt that failed
        or was aborted before any text stays in the log but not in the context: it had no
        answer, and chat APIs require user and assistant turns to alternate.
        """
        if self.status is ExchangeStatus.OK:
            return True
        return self.status is ExchangeStatus.ABORTED and bool(self.reply)

    def to_dict(self) -> dict[str, Any]:
        """The exchange as JSON-ready data (what an export writes)."""
        return {
            "message_id": self.message_id,
            "prompt": self.prompt,
            "timestamp": self.timestamp,
            "reply": self.reply,
            "status": str(self.status),
            "model": self.model,
            "error": self.error,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "replaces": self.replaces,
            "cell_id": self.cell_id,
            "tool_calls": list(self.tool_calls),
            "attachments": list(self.attachments),
        }

    @property
    def input_tokens(self) -> int | None:
        """Input tokens of the reply, if reported."""
        return self.usage.get("inputTokens")

    @property
    def output_tokens(self) -> int | None:
        """Output tokens of the reply, if reported."""
        return self.usage.get("outputTokens")


@dataclass(frozen=True, slots=True)
class Note:
    """A session-level event in the history's order (not about one exchange)."""

    type: str
    data: dict[str, Any]
    timestamp: str = ""
    seq: int | None = None


#: event types that become notes (the rest of the session-level events are not shown)
_NOTE_TYPES = frozenset(
    {
        EventType.SESSION_MODEL_CHANGE,
        EventType.SESSION_WARNING,
        EventType.SESSION_TRUNCATION,
        EventType.SESSION_ERROR,
    }
)


class History:
    """A session's exchanges (and notes), kept current by applying its events in order.

    ``last_seq`` is the newest stored sequence number applied: feed :meth:`fold` the events
    after it. Stored events at or below it are ignored, so folding overlapping reads is safe.
    """

    def __init__(self, *, notes: bool = True) -> None:
        self.last_seq = 0
        #: whether session-level events are kept as :class:`Note` entries (a model context
        #: does not need them, and a long session would accumulate them)
        self.keep_notes = notes
        #: the system message of the session (from ``session.start``)
        self.system_message: str | None = None
        self._exchanges: OrderedDict[str, Exchange] = OrderedDict()
        self._entries: OrderedDict[int, Exchange | Note] = OrderedDict()
        self._entry_of: dict[str, int] = {}
        self._next_entry = 0
        #: message ids of exchanges dropped from the history (replaced or forgotten)
        self._gone: set[str] = set()

    def __len__(self) -> int:
        return len(self._exchanges)

    def __iter__(self) -> Iterator[Exchange]:
        return iter(self._exchanges.values())

    def newest_first(self) -> Iterator[Exchange]:
        """The exchanges, newest first (no copy of the history)."""
        return reversed(self._exchanges.values())

    @classmethod
    def from_events(cls, events: Iterable[Event], *, notes: bool = True) -> History:
        """A history of ``events`` (oldest first)."""
        history = cls(notes=notes)
        history.fold(events)
        return history

    # -- applying events ---------------------------------------------------------------------

    def fold(self, events: Iterable[Event]) -> list[Exchange | Note]:
        """Apply events in log order; return the entries that changed (each once, in order)."""
        changed: dict[int, Exchange | Note] = {}
        for event in events:
            entry = self.apply(event)
            if entry is not None:
                changed[id(entry)] = entry
        return list(changed.values())

    def apply(self, event: Event) -> Exchange | Note | None:
        """Apply one event; return the entry it created or changed, or None."""
        if event.seq is not None:
            if event.seq <= self.last_seq:
                return None
            self.last_seq = event.seq
        kind = event.type
        data = event.data
        if kind == EventType.USER_MESSAGE:
            return self._open(event)
        if kind == EventType.SESSION_START:
            self.system_message = data.get("systemMessage") or None
            return None
        if kind == EventType.SESSION_RESUME and "systemMessage" in data:
            self.system_message = data["systemMessage"] or None  # a resume changed it
        if kind == EventType.SESSION_SNAPSHOT_REWIND:  # session.truncate: those turns leave
            for message_id in data.get("messageIds") or ():
                self.drop(message_id)
        exchange = self._exchanges.get(data.get("messageId") or "")
        if exchange is None:
            if kind in _NOTE_TYPES and not self._is_gone(data.get("messageId")):
                return self._note(event)
            return None
        return self._update(exchange, event)

    def _is_gone(self, message_id: Any) -> bool:
        return isinstance(message_id, str) and message_id in self._gone

    def _open(self, event: Event) -> Exchange:
        data = event.data
        replaces = data.get("replaces") or None
        if replaces:
            self.drop(replaces)
        metadata = data.get("metadata")
        attachments = data.get("attachments")
        exchange = Exchange(
            event.id,
            str(data.get("content", "")),
            event.timestamp,
            replaces=replaces,
            metadata=dict(metadata) if isinstance(metadata, dict) else {},
            attachments=list(attachments) if isinstance(attachments, list) else [],
            seq=event.seq,
        )
        self._exchanges[event.id] = exchange
        self._add_entry(event.id, exchange)
        return exchange

    def _note(self, event: Event) -> Note | None:
        if not self.keep_notes:
            return None
        note = Note(event.type, dict(event.data), event.timestamp, event.seq)
        self._add_entry(None, note)
        return note

    def _add_entry(self, message_id: str | None, entry: Exchange | Note) -> None:
        index = self._next_entry
        self._next_entry += 1
        self._entries[index] = entry
        if message_id is not None:
            self._entry_of[message_id] = index

    def _update(self, exchange: Exchange, event: Event) -> Exchange | None:
        data = event.data
        kind = event.type
        if kind == EventType.ASSISTANT_TURN_START:
            exchange.started = True
            exchange.model = data.get("model", exchange.model)
        elif kind == EventType.ASSISTANT_MESSAGE_DELTA:
            attempt = data.get("attempt", 0)
            if attempt != exchange.attempt:
                exchange.attempt = attempt
                exchange.live_parts.clear()
            exchange.live_parts.append(str(data.get("deltaContent", "")))
        elif kind == EventType.ASSISTANT_MESSAGE and data.get("toolRequests"):
            # a step that called tools: kept with the calls, the turn goes on
            exchange.tool_calls.append({"type": kind, **data})
            exchange.live_parts.clear()
        elif kind == EventType.ASSISTANT_MESSAGE:
            exchange.status = ExchangeStatus.OK
            exchange.reply = str(data.get("content", ""))
            exchange.model = data.get("model", exchange.model)
            exchange.live_parts.clear()
        elif kind == EventType.ASSISTANT_USAGE:
            exchange.usage = {k: v for k, v in data.items() if k != "messageId"}
        elif kind == EventType.ABORT:
            if exchange.status is not ExchangeStatus.OK:
                exchange.status = ExchangeStatus.ABORTED
                exchange.reply = str(data.get("partialContent") or "")
                exchange.error = data.get("reason")
            exchange.live_parts.clear()
            if not exchange.started:
                exchange.ended = True  # a turn aborted before it started has no turn_end
        elif kind == EventType.SESSION_ERROR:
            exchange.status = ExchangeStatus.ERROR
            exchange.error = str(data.get("message", ""))
            exchange.error_type = data.get("errorType")
            exchange.live_parts.clear()
        elif kind == EventType.ASSISTANT_TURN_END:
            exchange.ended = True
            exchange.live_parts.clear()
        elif kind == EventType.SESSION_WARNING or kind == EventType.SESSION_TRUNCATION:
            return self._note(event)
        elif kind.startswith(("tool.", "permission.", "hook.")):
            exchange.tool_calls.append({"type": kind, **data})
        else:
            return None
        return exchange

    def drop(self, message_id: str) -> Exchange | None:
        """Remove the exchange of prompt ``message_id`` (replaced, or no longer wanted)."""
        exchange = self._exchanges.pop(message_id, None)
        self._gone.add(message_id)
        index = self._entry_of.pop(message_id, None)
        if index is not None:
            self._entries.pop(index, None)
        return exchange

    # -- reading -----------------------------------------------------------------------------

    def exchanges(self) -> list[Exchange]:
        """The current exchanges (replaced ones left out), in log order."""
        return list(self._exchanges.values())

    def entries(self) -> list[Exchange | Note]:
        """Exchanges and notes, in log order."""
        return list(self._entries.values())

    def get(self, message_id: str) -> Exchange | None:
        """The exchange of prompt ``message_id``, if it is current."""
        return self._exchanges.get(message_id)

    def open_exchanges(self) -> list[Exchange]:
        """Exchanges whose turn has not ended (queued, running, or left by a dead process)."""
        return [e for e in self._exchanges.values() if not e.ended]

    def by_cell(self) -> dict[str, str]:
        """Notebook cell id -> message id of that cell's current exchange."""
        cells: dict[str, str] = {}
        for exchange in self._exchanges.values():
            if exchange.cell_id:
                cells[exchange.cell_id] = exchange.message_id
        return cells

    def forget(self, message_ids: Iterable[str]) -> None:
        """Drop old exchanges from memory (they stay in the log): bounds a long session's cost."""
        for message_id in list(message_ids):
            self.drop(message_id)
            self._gone.discard(message_id)


def exchanges_of(events: Iterable[Event]) -> list[Exchange]:
    """Fold events, oldest first, into a session's current exchanges."""
    return History.from_events(events, notes=False).exchanges()
