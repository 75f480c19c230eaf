"""Session events: the records a session emits and its log stores.

Every event has ``id``, ``type``, ``timestamp`` (ISO 8601, UTC), ``parentId`` (the id of the
event before it in the session), ``ephemeral`` and ``data``. Ephemeral events (streaming
deltas, ``session.idle``) reach handlers but are never stored. Events read like the seed shows,
``event["type"]`` and ``event["data"]``, and like attributes, ``event.type`` and
``event.data.content``.
"""

from __future__ import annotations

import gc
import json
import threading
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from .errors import StoreCorruptedError

__all__ = [
    "EXACT_INTS_KEY",
    "Event",
    "EventData",
    "EventType",
    "NotAnEventError",
    "StoredEvent",
    "build_stored_events",
    "dump_record",
    "exact_ints_marked",
    "load_record",
    "new_id",
    "renumber",
    "stored_events",
    "utc_now",
]


class EventType(StrEnum):
    """The event types a session emits."""

    SESSION_START = "session.start"
    SESSION_RESUME = "session.resume"
    SESSION_ERROR = "session.error"
    SESSION_WARNING = "session.warning"
    SESSION_IDLE = "session.idle"
    SESSION_TRUNCATION = "session.truncation"
    SESSION_MODEL_CHANGE = "session.model_change"
    # long sessions (the Copilot SDK's names): context use, compaction, rewind, title
    SESSION_USAGE_INFO = "session.usage_info"
    SESSION_COMPACTION_START = "session.compaction_start"
    SESSION_COMPACTION_COMPLETE = "session.compaction_complete"
    SESSION_SNAPSHOT_REWIND = "session.snapshot_rewind"
    SESSION_TITLE_CHANGED = "session.title_changed"
    USER_MESSAGE = "user.message"
    ASSISTANT_TURN_START = "assistant.turn_start"
    ASSISTANT_MESSAGE_DELTA = "assistant.message_delta"
    ASSISTANT_MESSAGE = "assistant.message"
    ASSISTANT_REASONING = "assistant.reasoning"
    ASSISTANT_USAGE = "assistant.usage"
    ASSISTANT_TURN_END = "assistant.turn_end"
    ABORT = "abort"
    # tools (the Copilot SDK's names): a call's life, the permission asked for it, the hooks
    TOOL_EXECUTION_START = "tool.execution_start"
    TOOL_EXECUTION_COMPLETE = "tool.execution_complete"
    PERMISSION_REQUESTED = "permission.requested"
    PERMISSION_COMPLETED = "permission.completed"
    HOOK_START = "hook.start"
    HOOK_END = "hook.end"


#: types that are delivered to handlers but never stored
EPHEMERAL_TYPES = frozenset(
    {EventType.ASSISTANT_MESSAGE_DELTA, EventType.SESSION_IDLE, EventType.SESSION_USAGE_INFO}
)


def new_id() -> str:
    """A new random event or message id."""
    return uuid.uuid4().hex


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class EventData(dict):
    """An event's ``data``: a plain dict that also allows ``data.content``."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"event data has no field {name!r}") from None


class Event(Mapping[str, Any]):
    """One session event. Immutable; read it as a mapping or through attributes.

    ``seq`` is the event's position in its session's log (None for ephemeral events).
    """

    __slots__ = ("_data", "ephemeral", "id", "parent_id", "seq", "timestamp", "type")

    def __init__(
        self,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        timestamp: str | None = None,
        parent_id: str | None = None,
        ephemeral: bool | None = None,
        seq: int | None = None,
    ) -> None:
        self.type = str(type)
        self._data: dict[str, Any] = EventData(data or {})
        self.id = id or new_id()
        self.timestamp = timestamp or utc_now()
        self.parent_id = parent_id
        self.ephemeral = self.type in EPHEMERAL_TYPES if ephemeral is None else ephemeral
        self.seq = seq

    @property
    def data(self) -> EventData:
        """The event's data (a dict that also allows ``data.content``)."""
        data = self._data
        if type(data) is not EventData:  # read from a store: wrapped at its first use
            data = self._data = EventData(data)
        return data

    _KEYS = ("id", "type", "timestamp", "parentId", "ephemeral", "data")

    def __getitem__(self, key: str) -> Any:
        if key == "parentId":
            return self.parent_id
        if key in self._KEYS:
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._KEYS)

    def __len__(self) -> int:
        return len(self._KEYS)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Event):
            return self.to_dict() == other.to_dict()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking mapping: not hashable

    def __repr__(self) -> str:
        return f"Event(type={self.type!r}, id={self.id!r}, data={dict(self.data)!r})"

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict with the wire names."""
        return {
            "id": self.id,
            "type": self.type,
            "timestamp": self.timestamp,
            "parentId": self.parent_id,
            "ephemeral": self.ephemeral,
            "data": dict(self.data),
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], seq: int | None = None) -> Event:
        """Rebuild an event from :meth:`to_dict` output."""
        return cls(
            record["type"],
            record.get("data"),
            id=record["id"],
            timestamp=record["timestamp"],
            parent_id=record.get("parentId"),
            ephemeral=bool(record.get("ephemeral", False)),
            seq=seq,
        )


class NotAnEventError(ValueError):
    """A stored record is not an event; ``seq`` says which (the store names its row)."""

    def __init__(self, seq: int) -> None:
        super().__init__(f"record {seq} is not an event")
        self.seq = seq


class StoredEvent(Event):
    """An event read from a store, decoded from its stored row when first used (issue 12).

    A store hands out ``StoredEvent`` objects holding their ``seq`` and the rows they come
    from (JSON arrays of an append's events); the first use of any other field parses a chunk
    of :data:`CHUNK_ROWS` rows at once, so a reader pays only for the part of a log it looks
    at (``get_messages()`` of a 60,000-event session returns without parsing any), and one
    that reads every event pays about what parsing them all up front costs. It is an
    :class:`Event` in every other way: equal to the event it stores, the same mapping,
    attributes and ``repr``; like every event, not to be changed (a store numbering a read
    event in an append decodes it first: :func:`renumber`). A row that is not what this
    package writes raises :class:`~copilot.errors.StoreCorruptedError` naming it when one
    of its events is first read (``client.check()`` finds it without that).
    """

    __slots__ = ("__weakref__", "_chunk")

    def __getattr__(self, name: str) -> Any:
        # Python calls this only for a field whose slot is still empty: decode, then read it.
        if name not in _DECODED_FIELDS:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        chunk: _Chunk | None = object.__getattribute__(self, "_chunk")
        if chunk is not None:
            chunk.decode()
            if self._chunk is not None:  # still not decoded: its row or record is damaged
                raise StoreCorruptedError(chunk.errors[self.seq])  # set by the decode
        return object.__getattribute__(self, name)


#: how many rows a :class:`StoredEvent`'s first use parses together (a turn is two rows)
CHUNK_ROWS = 64

#: the slots a StoredEvent fills when it is decoded
_DECODED_FIELDS = frozenset(("type", "_data", "id", "timestamp", "parent_id", "ephemeral"))


class _Chunk:
    """Rows of stored events (``(where, first seq, JSON array text, count)``) and weak
    references to the :class:`StoredEvent` objects standing for them, parsed together at the
    first use of one. The references are weak so that events nobody used and nobody holds
    are freed at once, not left in cycles for the collector (an iterator's memory stays
    flat). A damaged row or record leaves its events undecoded, the reason in ``errors``."""

    __slots__ = ("errors", "events", "lock", "rows")

    def __init__(
        self, rows: list[tuple[str, int, str, int]], events: list[weakref.ref[StoredEvent]]
    ) -> None:
        self.lock = threading.Lock()
        self.rows: list[tuple[str, int, str, int]] | None = rows
        self.events: list[weakref.ref[StoredEvent]] | None = events
        self.errors: dict[int | None, str] = {}

    def decode(self) -> None:
        """Fill every event of the chunk (once: threads using its events at the same time
        wait for the first one's decode)."""
        with self.lock:
            rows, events = self.rows, self.events
            if rows is None or events is None:
                return
            self._decode(rows, events)
            self.rows = self.events = None

    def _decode(
        self, rows: list[tuple[str, int, str, int]], events: list[weakref.ref[StoredEvent]]
    ) -> None:
        at = 0
        with paused_gc():
            for where, first, text, count in rows:
                row_events = events[at : at + count]
                at += count
                try:
                    items = load_record(text, where)
                    if type(items) is not list or len(items) != count:
                        raise StoreCorruptedError(
                            f"the record {where!r} does not hold the {count} events its "
                            f"layout says (changed outside copilot?): client.check() lists "
                            f"the damage"
                        )
                except StoreCorruptedError as exc:
                    self.errors.update((first + i, str(exc)) for i in range(count))
                    continue
                for event_ref, item in zip(row_events, items, strict=True):
                    event = event_ref()
                    if event is None:  # freed unused
                        continue
                    if _fill(event, item):
                        event._chunk = None
                    else:
                        self.errors[event.seq] = (
                            f"the event {event.seq} in the record {where!r} is not an event: "
                            f"client.check() lists the damage"
                        )


def _fill(event: Event, item: Any) -> bool:
    """Set the fields of ``event`` (but ``seq``) from ``item``, a stored
    :meth:`Event.to_dict` record; False, and nothing set, if it is not one. One string
    object per event type, ``data`` left a plain dict until it is used (``Event.data`` wraps
    it): with no ``Event.__init__``, the three took half of a 60,000-event read's build
    (profiled, issue 12)."""
    try:
        kind, event_id, timestamp = item["type"], item["id"], item["timestamp"]
        data = item.get("data")
    except (TypeError, KeyError, AttributeError):
        return False
    if (
        type(kind) is not str
        or type(event_id) is not str
        or type(timestamp) is not str
        or (data is not None and type(data) is not dict)
    ):
        return False
    event.type = _TYPE_NAMES.get(kind, kind)
    event._data = {} if data is None else data
    event.id = event_id
    event.timestamp = timestamp
    event.parent_id = item.get("parentId")
    event.ephemeral = bool(item.get("ephemeral"))
    return True


#: a top-level key of a stored record whose JSON holds an integer beyond 64 bits. orjson
#: (3.13) reads such integers as floats, silently losing digits; a record carrying this key
#: is read with ``json`` instead, exactly, and the key is removed (:func:`load_record`).
EXACT_INTS_KEY = "copilotExactInts"
_EXACT_INTS_TEXT = f'"{EXACT_INTS_KEY}"'


def dump_record(value: Any) -> str:
    """``value`` (a JSON-ready record) as the compact JSON text a store keeps: orjson, or
    for what it refuses (integers beyond 64 bits) ``json``, a dict marked with
    :data:`EXACT_INTS_KEY` so that :func:`load_record` reads its integers back exactly."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(exact_ints_marked(value), ensure_ascii=False, separators=(",", ":"))


def exact_ints_marked(value: Any) -> Any:
    """``value``, or for a dict orjson cannot write (an integer beyond 64 bits) a copy
    carrying :data:`EXACT_INTS_KEY`: for stores that write records inside a larger JSON
    document (PostgreSQL's ``jsonb`` rows)."""
    if type(value) is not dict:
        return value
    try:
        orjson.dumps(value)
    except TypeError:
        return {**value, EXACT_INTS_KEY: True}
    return value


def load_record(text: str, where: str) -> Any:
    """The stored JSON ``text`` of the record ``where``, parsed: orjson, or ``json`` for a
    text holding records marked by :func:`dump_record` (their integers beyond 64 bits come
    back exactly, the mark removed from each top-level record) and for what orjson refuses
    (NaN, which older records may hold); StoreCorruptedError naming ``where`` if it is not
    JSON."""
    if _EXACT_INTS_TEXT not in text:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise StoreCorruptedError(
            f"the record {where!r} is not valid JSON: {exc} (client.check() lists the damage)"
        ) from None
    for record in value if type(value) is list else (value,):
        if type(record) is dict:
            record.pop(EXACT_INTS_KEY, None)
    return value


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while many objects that hold no cycles are built:
    each pass of it over a growing heap made a 60,000-event read a third slower."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def stored_events(rows: Iterable[tuple[str, int, str, int]]) -> list[Event]:
    """:class:`StoredEvent` objects for ``rows``, each ``(where, first, text, count)``: the
    row ``where`` whose ``text`` is a JSON array of ``count`` events numbered from ``first``.
    Nothing is parsed until an event is used; then its chunk of :data:`CHUNK_ROWS` rows."""
    events: list[Event] = []
    append, new, ref = events.append, _new_stored_event, weakref.ref
    chunk_rows: list[tuple[str, int, str, int]] = []
    refs: list[weakref.ref[StoredEvent]] = []
    chunk = _Chunk(chunk_rows, refs)
    with paused_gc():
        for row in rows:
            if len(chunk_rows) == CHUNK_ROWS:
                chunk_rows, refs = [], []
                chunk = _Chunk(chunk_rows, refs)
            chunk_rows.append(row)
            add_ref = refs.append
            _, first, _, count = row
            for seq in range(first, first + count):
                event = new(StoredEvent)
                event._chunk = chunk
                event.seq = seq
                append(event)
                add_ref(ref(event))
    return events


def renumber(event: Event, parent_id: str | None, seq: int) -> None:
    """Give ``event`` its place in a log (a store's append): ``parent_id`` and ``seq``. A
    :class:`StoredEvent` is decoded first, so that its stored fields cannot overwrite these."""
    if type(event) is StoredEvent:
        event.type  # noqa: B018  # the first use decodes it
    event.parent_id, event.seq = parent_id, seq


_new_event = Event.__new__
_new_stored_event = StoredEvent.__new__
#: one string object per event type, shared by every event a store builds
_TYPE_NAMES = {str(t): str(t) for t in EventType}


def build_stored_events(records: Iterable[tuple[int, Any]]) -> list[Event]:
    """Events rebuilt from stored records, ``(seq, record)`` pairs of :meth:`Event.to_dict`
    output, as every store reads them.

    Built without ``Event.__init__`` (defaults a stored event always has), with one string
    object per event type, and ``data`` left a plain dict until it is used (``Event.data``
    wraps it): the three took half of a 60,000-event read's build time (profiled, issue 12).
    Raises :class:`NotAnEventError` naming the first record that is not an event.
    """
    events: list[Event] = []
    append, new = events.append, _new_event
    for seq, item in records:
        event = new(Event)
        if not _fill(event, item):
            raise NotAnEventError(seq)
        event.seq = seq
        append(event)
    return events
