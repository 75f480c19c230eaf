"""The event store: an append-only log of session events on diskcache.

Layout (every key a string, every value JSON text)::

    s/<session_id>              the session's metadata (the sessions index)
    h/<session_id>              the log's head: last sequence number, last event id, and the
                                open turns ({"seq": n, "last": id, "open": {messageId: seq}})
    e/<session_id>/<seq:012d>   one append's events (a JSON array, at most 256), keyed by
                                the seq of its first; tagged with the session id. A row
                                holding one JSON object is one event (formats 1-2)
    m/<modifiedTime>/<session_id>  the recency index: list_sessions(limit=n) reads n keys
    v/format                    the store's format version; older stores migrate on open
                                (3: one row per append instead of one per event)

Guarantees:

- **A log, not a cache.** ``eviction_policy='none'``: diskcache's default would silently delete
  history past 1 GB. Values are JSON text through :class:`JSONTextDisk`, which refuses to store
  anything else and refuses to unpickle: a shared store's contents cannot run code here.
- **Appends cost the same at any length.** An append reads the head and the metadata, writes
  the events, the head and the metadata: a constant number of keys, in one SQLite transaction.
  Sequence numbers come from the head inside that transaction, so writers in several processes
  each get unique, gap-free numbers and each writer's own order is kept.
- **Reads are ranges.** Events of a session are contiguous in the key index; reading the tail
  or the events after a known sequence number is one indexed range scan (diskcache has no
  range read, so :meth:`EventStore._rows` runs one SELECT on its table; diskcache's schema has
  been stable since version 2).
- **Delete is atomic.** The index entry, the head and every event go in one transaction: a
  crash leaves the session whole or gone, never half.
- **Open turns are in the head.** ``append`` adds a turn to ``open`` at its
  ``assistant.turn_start`` and removes it at its ``assistant.turn_end`` or ``abort``, so
  :meth:`EventStore.open_turns` finds every unfinished turn however far back, at a cost that
  does not depend on the log's length. A head written before ``open`` existed is completed
  from one scan of its log at the next append (or read).
- **Nothing is overwritten.** An append first checks that no event key follows the head (one
  indexed probe): a rewound or stale head raises :class:`StoreCorruptedError` instead of
  replacing events.
- **Forks are whole or absent.** :meth:`EventStore.fork_session` reads the source, writes the
  new index entry, head and events in one transaction.
- **Failures are typed.** Every ``sqlite3``/``OSError`` failure leaves a public method as a
  :class:`~copilot.errors.StoreError` subclass naming the directory and the fix
  (:func:`copilot._store_disk.translate`); value files no row refers to (left by a write that
  failed) are removed when the store is opened.
- **Owner-only.** The directory is created with mode 0700.

The store is the only module that knows diskcache; a Redis or SQL store implements the same
public methods.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import diskcache
import orjson
from diskcache.core import MODE_RAW, MODE_TEXT

from ._store_disk import JSONTextDisk, check_row, safe_value_path, translate, value_files
from .errors import (
    CopilotError,
    SessionExistsError,
    SessionNotFoundError,
    StoreCorruptedError,
)
from .events import (
    EXACT_INTS_KEY,
    Event,
    EventType,
    NotAnEventError,
    build_stored_events,
    dump_record,
    load_record,
    paused_gc,
    renumber,
    stored_events,
    utc_now,
)
from .search import Progress, SearchIndex
from .store_base import copied_counts

__all__ = ["STORE_FORMAT", "EventStore", "JSONTextDisk", "copied_counts"]

log = logging.getLogger("copilot")

_SEQ_WIDTH = 12
#: a character that sorts after every digit: the end of one session's event key range
_AFTER_DIGITS = ":"
_F = TypeVar("_F", bound=Callable[..., Any])
#: events that end a turn (remove it from the head's ``open``)
_TURN_ENDS = (EventType.ASSISTANT_TURN_END, EventType.ABORT)


#: the store's format: 2 added the recency index (``m/`` keys) and the ``v/format`` marker;
#: 3 stores one row per append (a JSON array of its events) instead of one per event
STORE_FORMAT = 3
#: the most events one row holds: a fork or a migration splits longer runs
ROW_EVENTS = 256
#: the covering index of the index records, newest first (see EventStore._tune_schema)
_LISTING_INDEX = "copilot_recent"
#: SQL: an index record's modifiedTime (NULL for a value that is not JSON: a hand edit must
#: not make the row unwritable)
_MODIFIED = "(CASE WHEN json_valid(value) THEN json_extract(value, '$.modifiedTime') END)"
#: texts shorter than this stay inline: diskcache keeps a text of ``disk_min_file_size``
#: characters or more in a file (it counts characters, not bytes)
_INLINE_CHARS = 2**20
#: SQL: write an inline row as diskcache's set does, in one statement; no row comes back if
#: the row's old value is in a file (left to diskcache, which removes it)
_UPSERT = (
    "INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count, tag, "
    "size, mode, filename, value) VALUES (?, 1, ?, NULL, ?, 0, ?, 0, ?, NULL, ?) "
    "ON CONFLICT (key, raw) DO UPDATE SET store_time = excluded.store_time, "
    "expire_time = NULL, access_time = excluded.access_time, access_count = 0, "
    "tag = excluded.tag, size = 0, mode = excluded.mode, filename = NULL, "
    "value = excluded.value WHERE Cache.filename IS NULL RETURNING rowid"
)
#: SQL: a row whose value is inline JSON text, as this package writes it
_SOUND_ROW = f"mode = {MODE_RAW} AND filename IS NULL AND typeof(value) = 'text'"


def _recent_key(modified: Any, session_id: str) -> str:
    """The recency-index key of a session: ``m/<modifiedTime>/<session id>``."""
    return f"m/{modified}/{session_id}"


def _recency(record: Mapping[str, Any]) -> tuple[str, str]:
    return str(record.get("modifiedTime", "")), str(record.get("sessionId"))


def _recency_text(record: Mapping[str, Any]) -> str | None:
    """:func:`_recency` as one string, ``modifiedTime NUL sessionId``: strings sort in the
    same order as those pairs (NUL is below every other character) and two to three times
    faster. None, which stops the sort, when ``modifiedTime`` holds a NUL (order unsure)."""
    modified = str(record.get("modifiedTime", ""))
    if "\0" in modified:
        return None
    return f"{modified}\0{record.get('sessionId')!s}"


def _sort_by_recency(sessions: list[dict[str, Any]]) -> None:
    """Sort index records newest first, in :func:`_recency` order (issue 12, 3i)."""
    try:
        sessions.sort(key=_recency_text, reverse=True)
    except TypeError:  # a None key: the pairs themselves
        sessions.sort(key=_recency, reverse=True)


def _event_key(session_id: str, seq: int) -> str:
    return f"e/{session_id}/{seq:0{_SEQ_WIDTH}d}"


def _loads(text: str, key: str = "") -> Any:
    """The stored JSON ``text`` of the row ``key`` (:func:`copilot.events.load_record`)."""
    return load_record(text, key)


def _event(key: str, value: Any, seq: int | None = None) -> Event:
    """The event stored as ``value`` in the row ``key`` (at ``seq``, by default the key's);
    StoreCorruptedError if it is not one."""
    return _events_of(key, [value], int(key[-_SEQ_WIDTH:]) if seq is None else seq)[0]


def _events_of(key: str, value: Any, first: int | None = None) -> list[Event]:
    """The events of the row ``key``: a JSON array of an append's events numbered from the
    key's seq (format 3), or one event (formats 1-2); StoreCorruptedError if not. Built by
    :func:`copilot.events.build_stored_events`, as every store builds them."""
    if first is None:
        first = int(key[-_SEQ_WIDTH:])
    if type(value) is not list:
        value = [value]
    elif not value:
        raise StoreCorruptedError(f"the record {key!r} is an empty list of events")
    try:
        return build_stored_events(enumerate(value, first))
    except NotAnEventError:
        raise StoreCorruptedError(f"the record {key!r} is not an event") from None


def _row_text(events: Iterable[Event]) -> str:
    """The stored text of an append's row: a JSON array with one event per line,
    ``[\n{...},\n{...}\n]``. Readers of format 3 parse it as the array it is; this package
    counts its events by its line breaks (compact JSON has none inside an event) and parses
    the row when one of its events is first used (:class:`copilot.events.StoredEvent`)."""
    return "[\n" + ",\n".join(_dumps(event.to_dict()) for event in events) + "\n]"


def _row_events(key: str, text: str) -> list[Event]:
    """The events of the row ``key`` stored as ``text``, parsed now: for reads of a few rows
    whose events are all used (the tail a resumed session sends, a page, the newest events,
    an open turn), where parsing when used would only add its bookkeeping (a resumed
    10,000-turn session's first turn: 5.0 -> 7.2 ms when these were lazy too)."""
    return _events_of(key, _loads(text, key))


def _events_of_rows(rows: Iterable[tuple[str, str]]) -> list[Event]:
    """The events of ``(key, text)`` rows, in order: parsed when first used for rows in the
    layout of :func:`_row_text` (:func:`copilot.events.stored_events`), now for others (rows
    written before, or by hand); StoreCorruptedError if such a row is not a JSON array of
    events."""
    events: list[Event] = []
    pending: list[tuple[str, int, str, int]] = []
    for key, text in rows:
        count = _layout_count(text)
        if count is not None:
            pending.append((key, int(key[-_SEQ_WIDTH:]), text, count))
            continue
        if pending:
            events.extend(stored_events(pending))
            pending = []
        events.extend(_events_of(key, _loads(text, key)))
    if pending:
        events.extend(stored_events(pending))
    return events


def _layout_count(text: str) -> int | None:
    """The number of events a row in the layout of :func:`_row_text` holds (by its line
    breaks), or None for a row in another layout."""
    if text.startswith("[\n{") and text.endswith("}\n]"):
        return text.count("\n") - 1
    return None


def _metadata(key: str, value: Any) -> Any:
    """Session metadata stored under ``key`` (None stays None); StoreCorruptedError if not."""
    if value is not None and not (
        isinstance(value, dict) and isinstance(value.get("sessionId"), str)
    ):
        raise StoreCorruptedError(f"the record {key!r} is not session metadata")
    return value


def _valid_head(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and type(value.get("seq")) is int
        and value["seq"] >= 0
        and (value.get("last") is None or isinstance(value.get("last"), str))
        and (
            "open" not in value
            or (
                isinstance(value["open"], dict)
                and all(type(v) is int for v in value["open"].values())
            )
        )
    )


def _dumps(value: Any) -> str:
    """A record's stored text (:func:`copilot.events.dump_record`)."""
    return dump_record(value)


def _track_open(open_turns: dict[str, int], event: Event) -> None:
    """Update a head's ``open`` map (message id -> seq of its turn start) with ``event``."""
    if event.type == EventType.ASSISTANT_TURN_START:
        open_turns[event.data.get("messageId")] = event.seq
    elif event.type in _TURN_ENDS:
        open_turns.pop(event.data.get("messageId"), None)


def _batches(cursor: sqlite3.Cursor) -> Iterator[tuple[Any, ...]]:
    """The cursor's rows fetched in batches growing from 8 to 1,024: the raw text of a batch
    is freed while the next one is parsed, and a short read (a page, the newest events)
    fetches few rows however large they are (a row holds up to 256 events)."""
    size = 8
    while True:
        rows = cursor.fetchmany(size)
        yield from rows
        if len(rows) < size:
            return
        size = min(size * 2, 1024)


def _boundary(doing: str) -> Callable[[_F], _F]:
    """Translate a ``sqlite3``/``OSError`` failure of the decorated method into a StoreError."""

    def decorate(method: _F) -> _F:
        @functools.wraps(method)
        def wrapper(self: EventStore, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except CopilotError:
                raise
            except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
                raise translate(exc, self.directory, doing) from exc

        return cast(_F, wrapper)  # functools.wraps keeps the method's signature

    return decorate


class EventStore:
    """Sessions and their event logs in one directory, shared safely by threads and processes."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
            self._cache = diskcache.Cache(
                str(self.directory),
                eviction_policy="none",
                disk=JSONTextDisk,
                tag_index=True,
                statistics=False,
                # Nothing here expires and nothing is evicted: without this, every write ran
                # one more statement looking for expired keys (issue 12, 2a).
                cull_limit=0,
                timeout=60,
                # Events up to 1 Mi characters stay inline in SQLite, where range scans read
                # them (the writes of _put rely on this limit: _INLINE_CHARS).
                disk_min_file_size=_INLINE_CHARS,
            )
        except CopilotError:
            raise
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise translate(exc, self.directory, "opening it") from exc
        self._search = SearchIndex(self._cache)  # full-text index, same file (copilot.search)
        self.sweep_orphan_files()
        try:
            self._tune_schema()  # first: a migration lists sessions through its index
            self._migrate()
        except CopilotError:
            raise
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise translate(exc, self.directory, "migrating it to this version") from exc

    def __repr__(self) -> str:
        return f"<EventStore {str(self.directory)!r}>"

    def close(self) -> None:
        """Close this process's connections (the data stays on disk)."""
        self._cache.close()

    # -- low level -------------------------------------------------------------------------

    def _get(self, key: str) -> Any:
        text = self._cache.get(key)
        return None if text is None else _loads(text, key)

    def _set(self, key: str, value: Any, tag: str | None = None) -> None:
        self._put(key, _dumps(value), tag)

    def _put(self, key: str, text: str, tag: str | None = None) -> None:
        """Write the row ``key`` holding JSON ``text`` (the row diskcache's ``set`` writes).

        A text that stays inline (under :data:`_INLINE_CHARS`) is written with one UPSERT
        instead of diskcache's SELECT then INSERT or UPDATE; a row whose old value is in a
        file is not touched by it (``RETURNING`` says so) and goes through ``set``, which
        removes the file. An append writes four rows: four statements fewer (issue 12).
        """
        if len(text) < _INLINE_CHARS:
            now = time.time()
            row = self._cache._sql(_UPSERT, (key, now, now, tag, MODE_RAW, text)).fetchone()
            if row is not None:
                return
        self._cache.set(key, text, tag=tag)

    def _drop(self, key: str) -> None:
        """Delete the row ``key`` if its value is inline (one statement); else through
        diskcache's ``delete``, which removes the value file."""
        cursor = self._cache._sql(
            "DELETE FROM Cache WHERE key = ? AND raw = 1 AND filename IS NULL", (key,)
        )
        if cursor.rowcount == 0:
            self._cache.delete(key)

    def _texts(
        self,
        low: str,
        high: str,
        *,
        descending: bool = False,
        limit: int = -1,
        floor_of: str | None = None,
    ) -> Iterator[tuple[str, str]]:
        """Yield ``(key, stored JSON text)`` for keys in ``[low, high)``, in key order.

        With ``floor_of`` (a session's key prefix), the range starts at the last key at or
        below ``low`` within that prefix instead: the row holding the event ``low`` names,
        whose key is the seq of its first event. One statement either way.
        """
        order = "DESC" if descending else "ASC"
        start = "?"
        params: tuple[Any, ...] = (low, high, limit)
        if floor_of is not None:
            start = (
                "COALESCE((SELECT key FROM Cache WHERE key <= ? AND key >= ? AND raw = 1 "
                "ORDER BY key DESC LIMIT 1), ?)"
            )
            params = (low, floor_of, low, high, limit)
        query = (
            f"SELECT key, mode, filename, value FROM Cache WHERE key >= {start} AND key < ? "
            f"AND raw = 1 ORDER BY key {order} LIMIT ?"
        )
        cursor = self._cache._sql(query, params)
        for key, mode, filename, value in _batches(cursor):
            if mode == MODE_RAW and filename is None and type(value) is str:
                yield key, value
                continue
            check_row(self.directory, key, mode, filename, value)
            if mode == MODE_TEXT:  # a value over 1 MiB, kept in a file
                value = self._cache.get(key)
                if value is None:  # deleted since the SELECT
                    continue
            yield key, value

    def _head(self, session_id: str) -> dict[str, Any]:
        """The session's head with its ``open`` map (rebuilt from the log if it has none)."""
        key = f"h/{session_id}"
        head = self._get(key)
        if head is None:
            head = {"seq": 0, "last": None}
        if not _valid_head(head):
            raise StoreCorruptedError(f"the record {key!r} is not a log head")
        if "open" not in head:  # written by an earlier version: one scan completes it
            open_turns: dict[str, int] = {}
            for event in self.read_events(session_id):
                _track_open(open_turns, event)
            head["open"] = open_turns
        return head

    def _has_events_after(self, session_id: str, seq: int) -> bool:
        """Whether the log holds an event past ``seq``: one indexed read of its last row (a
        row of several events can reach past its key). A last row that cannot be read is
        judged by its key alone (check() reports it; the append is not blocked by it)."""
        low, high = f"e/{session_id}/", f"e/{session_id}/{_AFTER_DIGITS}"
        query = (
            "SELECT key, mode, filename, value FROM Cache WHERE key >= ? AND key < ? "
            "AND raw = 1 ORDER BY key DESC LIMIT 1"
        )
        row = self._cache._sql(query, (low, high)).fetchone()
        if row is None:
            return False
        key, mode, filename, value = row
        first = int(key[-_SEQ_WIDTH:]) if key[-_SEQ_WIDTH:].isdigit() else seq + 1
        if first > seq:
            return True
        try:
            if not (mode == MODE_RAW and filename is None and type(value) is str):
                text = next(self._texts(key, key + "\0"), (key, None))[1]  # a value file
                value = None if text is None else _loads(text, key)
            elif (count := _layout_count(value)) is not None:
                return first + count - 1 > seq  # counted by its lines, not parsed
            elif value[:1] == "[":
                value = _loads(value, key)
            else:
                return False  # one event: its key is its seq
        except (StoreCorruptedError, ValueError):
            return False
        return type(value) is list and first + len(value) - 1 > seq

    @_boundary("removing value files no row refers to")
    def sweep_orphan_files(self) -> list[str]:
        """Remove value files that no row refers to (left by a write that failed or a
        process killed mid-write); return their names. Runs inside a write transaction, and
        every write of this store runs in one, so no writer is between writing a file and
        its row."""
        with self._cache.transact(retry=True):
            files = value_files(self.directory)
            if not files:
                return []
            query = "SELECT filename FROM Cache WHERE filename IS NOT NULL"
            used = {row[0] for row in self._cache._sql(query).fetchall()}
            orphans = [name for name in files if name not in used]
            for name in orphans:
                path = self.directory / name
                if path.is_file() and not path.is_symlink():
                    path.unlink()
            return orphans

    # -- sessions ----------------------------------------------------------------------------

    @_boundary("creating a session")
    def create_session(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Add a session to the index. Raises :class:`SessionExistsError` if the id is taken."""
        session_id = metadata["sessionId"]
        record = dict(metadata)
        with self._cache.transact(retry=True):
            if self._cache.get(f"s/{session_id}") is not None:
                raise SessionExistsError(session_id)
            self._put_session(record, None)
            self._set(f"h/{session_id}", {"seq": 0, "last": None, "open": {}})
        return record

    @_boundary("reading a session's metadata")
    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """The session's metadata, or None."""
        return _metadata(f"s/{session_id}", self._get(f"s/{session_id}"))

    @_boundary("updating a session's metadata")
    def update_session(self, session_id: str, **fields: Any) -> dict[str, Any]:
        """Set metadata fields of a stored session and return the new metadata."""
        with self._cache.transact(retry=True):
            record = self._require(session_id)
            previous = record.get("modifiedTime")
            record.update(fields)
            self._put_session(record, previous)
        return record

    def _put_session(self, record: dict[str, Any], previous_modified: Any) -> None:
        """Write a session's metadata and its entry in the recency index (``m/``), dropping
        the entry of its previous ``modifiedTime``; call it inside a transaction."""
        session_id = record["sessionId"]
        if previous_modified is not None and previous_modified != record.get("modifiedTime"):
            self._drop(_recent_key(previous_modified, session_id))
        self._set(f"s/{session_id}", record)
        self._set(_recent_key(record.get("modifiedTime"), session_id), session_id)

    def rebuild_recency_index(self) -> int:
        """Write the recency index (``m/`` keys) again from the index records; return how
        many sessions it holds. Used by the format migration and by ``repair()``."""
        with self._cache.transact(retry=True):
            self._cache._sql("DELETE FROM Cache WHERE key >= 'm/' AND key < 'm0' AND raw = 1")
            count = 0
            for record in self._all_sessions():
                self._set(
                    _recent_key(record.get("modifiedTime"), record["sessionId"]),
                    record["sessionId"],
                )
                count += 1
            return count

    def _migrate(self) -> None:
        """Bring a store written by an earlier version to this one's format, once, in one
        transaction (a crash leaves it as it was, migrated at the next open).

        Version 1 (no ``v/format`` key) had no recency index: it is built from the index
        records. Heads without ``open`` are completed at their next append (see
        :meth:`_head`). Versions 1 and 2 stored one row per event: their rows are regrouped
        (:meth:`_group_event_rows`). No event is rewritten, renumbered or dropped.
        """
        version = self._format()
        if version >= STORE_FORMAT:
            return
        with self._cache.transact(retry=True):
            version = self._format()
            if version >= STORE_FORMAT:
                return  # another process migrated it meanwhile
            count = self.rebuild_recency_index() if version < 2 else 0
            grouped = self._group_event_rows()
            self._set("v/format", {"version": STORE_FORMAT})
        if count or grouped:
            log.info(
                "migrated the store at %s from format %d to %d (%d sessions indexed, "
                "%d events regrouped)",
                self.directory,
                version,
                STORE_FORMAT,
                count,
                grouped,
            )

    def _format(self) -> int:
        marker = self._get("v/format")
        if isinstance(marker, dict) and type(marker.get("version")) is int:
            return marker["version"]
        return 1

    def _group_event_rows(self) -> int:
        """Rewrite one-event rows (formats 1-2) as rows of several events: a turn's events
        in one row (a new row at each ``user.message``), at most :data:`ROW_EVENTS`; return
        how many events moved into such rows. Call it inside a transaction.

        Lossless by construction: a row's JSON text is copied as stored, never re-encoded
        (NaN and integers over 64 bits stay as they were); rows are only joined when their
        keys are consecutive numbers of one session; a row that cannot be read stays where
        it is (``check()`` reports it). Rows are read 5,000 at a time, so memory does not
        grow with the store.
        """
        query = (
            "SELECT key, mode, filename, value FROM Cache WHERE key > ? AND key < 'e0' "
            "AND raw = 1 ORDER BY key LIMIT 5000"
        )
        group: list[tuple[str, str, str | None]] = []  # (key, JSON text, value file)
        moved = 0

        def flush() -> None:
            nonlocal moved
            if len(group) > 1:
                first = group[0][0]
                inline = [(key,) for key, _, filename in group[1:] if filename is None]
                for key, _, filename in group[1:]:
                    if filename is not None:
                        self._cache.delete(key)  # removes its value file too
                self._cache._con.executemany("DELETE FROM Cache WHERE key = ? AND raw = 1", inline)
                texts = [text for _, text, _ in group]
                if any("\n" in text for text in texts):
                    text = "[" + ",".join(texts) + "]"
                else:  # the layout appends write: its events are decoded when used
                    text = "[\n" + ",\n".join(texts) + "\n]"
                self._cache.set(first, text, tag=first[2 : -_SEQ_WIDTH - 1])
                moved += len(group)
            group.clear()

        after = "e/"
        previous: tuple[str, int] = ("", -1)
        while True:
            rows = self._cache._sql(query, (after,)).fetchall()
            for key, mode, filename, value in rows:
                session_id, _, seq_text = key[2:].rpartition("/")
                text: Any = None
                try:
                    check_row(self.directory, key, mode, filename, value)
                    text = self._cache.get(key) if mode == MODE_TEXT else value
                    event = _event(key, _loads(text, key)) if type(text) is str else None
                except (StoreCorruptedError, ValueError, TypeError):
                    event = None
                if event is None or len(seq_text) != _SEQ_WIDTH or not seq_text.isdigit():
                    flush()  # unreadable, or already a row of several: left as it is
                    previous = ("", -1)
                    continue
                seq = int(seq_text)
                if (
                    previous != (session_id, seq - 1)
                    or event.type == EventType.USER_MESSAGE
                    or len(group) >= ROW_EVENTS
                ):
                    flush()
                group.append((key, text, filename))
                previous = (session_id, seq)
            if len(rows) < 5000:
                break
            after = rows[-1][0]
        flush()
        return moved

    def _require(self, session_id: str) -> dict[str, Any]:
        key = f"s/{session_id}"
        record = _metadata(key, self._get(key))
        if record is None:
            raise SessionNotFoundError(session_id)
        return record

    def _all_sessions(self) -> list[dict[str, Any]]:
        """Every readable index record, newest first (:func:`_recency` order); a damaged one
        is skipped with a warning.

        One scan of the listing index (:meth:`_tune_schema`), in recency order: the values of
        sound rows, and the keys of rows that need the checks of :func:`check_row` (a value
        in a file, a foreign mode). If a value does not parse as a record, the checked read
        (:meth:`_all_sessions_checked`) runs instead and names it. SQLite's order is
        :func:`_recency`'s for records whose ``modifiedTime`` is a string without NUL; the
        list is sorted again if one is not, or if a row needed the checks.
        """
        query = (
            f"SELECT value, CASE WHEN {_SOUND_ROW} THEN NULL ELSE key END FROM Cache "
            f"INDEXED BY {_LISTING_INDEX} WHERE key >= 's/' AND key < 's0' AND raw = 1 "
            f"ORDER BY {_MODIFIED} DESC, key DESC"
        )
        sessions: list[dict[str, Any]] = []
        append, loads, exact = sessions.append, orjson.loads, f'"{EXACT_INTS_KEY}"'
        odd: list[str] = []
        ordered = True
        for value, key in self._cache._sql(query).fetchall():
            if key is not None:
                odd.append(key)
                continue
            try:  # a record marked for exact integers is read with json
                record = loads(value) if exact not in value else _loads(value, "s/")
            except (orjson.JSONDecodeError, StoreCorruptedError):
                return self._all_sessions_checked()
            if type(record) is not dict or type(record.get("sessionId")) is not str:
                return self._all_sessions_checked()
            modified = record.get("modifiedTime")
            if type(modified) is not str or "\0" in modified:
                ordered = False
            append(record)
        if odd:
            sessions.extend(self._checked_records(odd))
        if odd or not ordered:
            _sort_by_recency(sessions)
        return sessions

    def _all_sessions_checked(self) -> list[dict[str, Any]]:
        """:meth:`_all_sessions` with every row checked, each damaged one named."""
        rows = self._cache._sql("SELECT key FROM Cache WHERE key >= 's/' AND key < 's0'")
        sessions = self._checked_records([key for (key,) in rows.fetchall()])
        _sort_by_recency(sessions)
        return sessions

    def _checked_records(self, keys: list[str]) -> list[dict[str, Any]]:
        query = "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1"
        records = []
        for key in keys:
            row = self._cache._sql(query, (key,)).fetchone()
            if row is None:  # deleted meanwhile
                continue
            mode, filename, value = row
            try:
                check_row(self.directory, key, mode, filename, value)
                if mode == MODE_TEXT:
                    value = self._cache.get(key)
                    if value is None:
                        continue
                records.append(_metadata(key, _loads(value, key)))
            except StoreCorruptedError as exc:
                log.warning("list_sessions: skipped the damaged record %r: %s", key, exc)
        return records

    def _tune_schema(self) -> None:
        """Fit diskcache's table to this store, once per store (issue 12, 3i and the append):

        * an index of the index records (``s/`` keys) with their values, so that
          ``list_sessions()`` scans one B-tree in key order instead of looking each row up
          in the table (100,000 sessions: fetch 103-115 -> 63 ms);
        * diskcache's count and size triggers made inert (``WHEN 0``) and its expiry index
          made partial (``expire_time IS NOT NULL``): they kept statistics for eviction and
          expiry, which this store never uses (``eviction_policy="none"``, nothing expires,
          ``cull_limit=0``), at two extra writes per written row. Same names, so diskcache's
          ``CREATE ... IF NOT EXISTS`` at each open leaves them as they are.

        An append of two events: 128 us with the listing index and diskcache's schema, 111 us
        without either, 110 us with the index and this (1,500 appends, medians of three
        runs).
        """
        schema = dict(
            self._cache._sql(
                "SELECT name, sql FROM sqlite_master WHERE name IN (?, ?) "
                "OR name LIKE 'Settings_%'",
                (_LISTING_INDEX, "Cache_expire_time"),
            ).fetchall()
        )
        statements = []
        if _LISTING_INDEX not in schema:
            statements.append(
                f"CREATE INDEX {_LISTING_INDEX} ON Cache ({_MODIFIED} DESC, key DESC, raw, "
                "mode, filename, value) WHERE key >= 's/' AND key < 's0'"
            )
        for name, sql in schema.items():
            if name.startswith("Settings_") and sql and " WHEN 0 " not in sql:
                statements.append(f"DROP TRIGGER {name}")
                statements.append(
                    sql.replace(" FOR EACH ROW BEGIN ", " FOR EACH ROW WHEN 0 BEGIN ")
                )
        if "WHERE" not in (schema.get("Cache_expire_time") or "WHERE"):
            statements.append("DROP INDEX Cache_expire_time")
            statements.append(
                "CREATE INDEX Cache_expire_time ON Cache (expire_time) "
                "WHERE expire_time IS NOT NULL"
            )
        if statements:
            with self._cache.transact(retry=True):
                for statement in statements:
                    self._cache._sql(statement)

    @_boundary("listing sessions")
    def list_sessions(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Sessions' metadata, most recently modified first; with ``limit``, the newest
        ``limit`` only, read through the recency index (cost independent of the number of
        sessions).

        A damaged index record is left out with a warning on the ``copilot`` logger naming
        it (``client.check()`` reports it, ``client.repair()`` rebuilds it from its events):
        one bad record must not hide every other session.
        """
        if limit is None:
            with paused_gc():  # 100,000 new records at that count
                return self._all_sessions()
        found: dict[str, dict[str, Any]] = {}
        high = "m0"
        query = (
            "SELECT key FROM Cache WHERE key >= 'm/' AND key < ? AND raw = 1 "
            "ORDER BY key DESC LIMIT ?"
        )
        while len(found) < limit:
            keys = [row[0] for row in self._cache._sql(query, (high, limit + 8)).fetchall()]
            for key in keys:
                modified, _, session_id = key[2:].rpartition("/")
                if session_id in found:
                    continue
                try:
                    record = self.get_session(session_id)
                except StoreCorruptedError as exc:
                    log.warning(
                        "list_sessions: skipped the damaged record 's/%s': %s", session_id, exc
                    )
                    continue
                if record is not None and str(record.get("modifiedTime")) == modified:
                    found[session_id] = record  # else a stale entry: repair() rebuilds them
                if len(found) == limit:
                    break
            if len(keys) < limit + 8:
                break
            high = keys[-1]
        return list(found.values())

    @_boundary("deleting a session")
    def delete_session(self, session_id: str) -> int:
        """Remove a session and all its events in one transaction. Returns the events removed.

        A row naming a value file this package never writes stops the delete before anything
        is removed (:class:`StoreCorruptedError`).
        """
        with self._cache.transact(retry=True):
            record = self._require(session_id)
            query = "SELECT filename FROM Cache WHERE (tag = ? OR key = ? OR key = ?) AND filename IS NOT NULL"
            keys = (session_id, f"s/{session_id}", f"h/{session_id}")
            for (filename,) in self._cache._sql(query, keys).fetchall():
                safe_value_path(self.directory, filename)
            self._cache.delete(f"s/{session_id}")
            self._cache.delete(f"h/{session_id}")
            self._cache.delete(_recent_key(record.get("modifiedTime"), session_id))
            self._search.remove_session(session_id)
            events = self._count_events(session_id)
            self._release_blobs(session_id)
            self._cache.evict(session_id)
            return events

    def _count_events(self, session_id: str) -> int:
        """How many events the session's rows hold (a row is one event or a JSON array)."""
        query = (
            "SELECT COALESCE(SUM(CASE WHEN mode = ? AND json_valid(value) "
            "AND json_type(value) = 'array' THEN json_array_length(value) ELSE 1 END), 0) "
            "FROM Cache WHERE tag = ? AND filename IS NULL"
        )
        count = self._cache._sql(query, (MODE_RAW, session_id)).fetchone()[0]
        query = "SELECT key FROM Cache WHERE tag = ? AND filename IS NOT NULL"
        for (key,) in self._cache._sql(query, (session_id,)).fetchall():
            try:
                value = self._get(key)  # a row over 1 MiB, in a value file
            except StoreCorruptedError:  # a damaged row is deleted all the same
                value = None
            count += len(value) if type(value) is list else 1
        return count

    @_boundary("forking a session")
    def fork_session(
        self,
        source_id: str,
        metadata: Mapping[str, Any],
        copy: Callable[[list[Event]], list[Event]],
    ) -> dict[str, Any]:
        """Create session ``metadata["sessionId"]`` holding ``copy(events of the source)``.

        One transaction reads the source's events, calls ``copy`` on them (it returns the new
        session's events, e.g. with fresh ids), and writes the new index entry, head and
        events: a crash at any point leaves the fork whole or absent, and no concurrent
        writer's half-done turn is seen. Turns still open in the source (a prompt without
        its outcome yet) are left out, with every event that names them: the fork holds the
        completed turns only. ``messageCount``, ``turnCount``, ``summary`` and ``lastModel``
        are computed from the copied events (:func:`copied_counts`); the rest of the
        metadata is ``metadata`` as given. Raises :class:`SessionNotFoundError` for an
        unknown source, :class:`SessionExistsError` if the new id is taken. Returns the new
        session's metadata.
        """
        new_id = metadata["sessionId"]
        with self._cache.transact(retry=True):
            self._require(source_id)
            if self._cache.get(f"s/{new_id}") is not None:
                raise SessionExistsError(new_id)
            open_ids = set(self._head(source_id)["open"])
            events = [
                e
                for e in self.read_events(source_id)
                if e.id not in open_ids and e.data.get("messageId") not in open_ids
            ]
            copies = copy(events)
            record = {**metadata, **copied_counts(copies)}
            self._put_session(record, None)
            self._set(f"h/{new_id}", {"seq": 0, "last": None, "open": {}})
            self.append(new_id, copies)
            self._share_blobs(source_id, new_id)
            return self._require(new_id)

    @_boundary("renaming a session")
    def rename_session(self, old_id: str, new_id: str) -> dict[str, Any]:
        """Give session ``old_id`` the id ``new_id``, its log and metadata unchanged otherwise,
        in one transaction (a crash leaves it under one name or the other, never both or
        neither). Raises :class:`SessionNotFoundError` for an unknown ``old_id`` and
        :class:`SessionExistsError` if ``new_id`` is taken. Returns the new metadata."""
        with self._cache.transact(retry=True):
            record = self._require(old_id)
            if self._cache.get(f"s/{new_id}") is not None:
                raise SessionExistsError(new_id)
            head = self._head(old_id)
            events = self.read_events(old_id)
            old_prefix = f"e/{old_id}/"
            for key, text in self._texts(old_prefix, old_prefix + _AFTER_DIGITS):
                # each row copied as stored: its layout, its numbers, its JSON text
                self._cache.set(f"e/{new_id}/{key[len(old_prefix) :]}", text, tag=new_id)
            self._set(f"h/{new_id}", head)
            self._cache.delete(_recent_key(record.get("modifiedTime"), old_id))
            self._cache.delete(f"s/{old_id}")
            self._cache.delete(f"h/{old_id}")
            self._cache.evict(old_id)  # the old event keys (tagged with the old id)
            self._search.remove_session(old_id)
            for sha256 in self._session_blobs(old_id):  # its attachments' references move
                self._cache.delete(f"sblob/{old_id}/{sha256}")
                self._cache.delete(f"blobref/{sha256}/{old_id}")
                self._set(f"blobref/{sha256}/{new_id}", 1)
                self._set(f"sblob/{new_id}/{sha256}", 1)
            renamed = {**record, "sessionId": new_id}
            self._search.add(new_id, events, renamed)
            self._put_session(renamed, None)
            return renamed

    # -- attachments: bytes once per content, counted references per session -----------------
    #
    #   blob/<sha256>                 {"mimeType", "size", "data": base64}: the bytes, once
    #   blobref/<sha256>/<session_id>  a session that references them (the reference count is
    #                                  the number of these keys)
    #   sblob/<session_id>/<sha256>    the same pair by session, so a delete finds its blobs

    @_boundary("storing an attachment")
    def put_blobs(self, session_id: str, blobs: Iterable[tuple[str, str, bytes]]) -> None:
        """Store ``(sha256, mimeType, data)`` attachments for ``session_id``: bytes already
        stored (by any session) are not written again; the session's reference is added."""
        with self._cache.transact(retry=True):
            self._require(session_id)
            for sha256, mime_type, data in blobs:
                if self._cache.get(f"blob/{sha256}") is None:
                    encoded = base64.b64encode(data).decode("ascii")
                    self._set(
                        f"blob/{sha256}",
                        {"mimeType": mime_type, "size": len(data), "data": encoded},
                    )
                self._set(f"blobref/{sha256}/{session_id}", 1)
                self._set(f"sblob/{session_id}/{sha256}", 1)

    @_boundary("reading an attachment")
    def get_blob(self, sha256: str) -> bytes | None:
        """The bytes stored under ``sha256`` (None: not stored)."""
        record = self._get(f"blob/{sha256}")
        if not isinstance(record, dict) or not isinstance(record.get("data"), str):
            return None
        return base64.b64decode(record["data"])

    def blob_refs(self, sha256: str) -> list[str]:
        """The sessions that reference the attachment ``sha256``, sorted."""
        prefix = f"blobref/{sha256}/"
        return sorted(key[len(prefix) :] for key, _ in self._texts(prefix, prefix + "\uffff"))

    def _session_blobs(self, session_id: str) -> list[str]:
        prefix = f"sblob/{session_id}/"
        return [key[len(prefix) :] for key, _ in self._texts(prefix, prefix + "\uffff")]

    def _release_blobs(self, session_id: str) -> None:
        """Drop ``session_id``'s references; bytes no session references are removed.
        Called inside delete_session's transaction."""
        for sha256 in self._session_blobs(session_id):
            self._cache.delete(f"sblob/{session_id}/{sha256}")
            self._cache.delete(f"blobref/{sha256}/{session_id}")
            if not self.blob_refs(sha256):
                self._cache.delete(f"blob/{sha256}")

    def _share_blobs(self, source_id: str, new_id: str) -> None:
        """Give a fork the source's attachment references (inside fork_session's transaction)."""
        for sha256 in self._session_blobs(source_id):
            self._set(f"blobref/{sha256}/{new_id}", 1)
            self._set(f"sblob/{new_id}/{sha256}", 1)

    # -- events ------------------------------------------------------------------------------

    @_boundary("appending events")
    def append(
        self,
        session_id: str,
        events: Iterable[Event],
        *,
        update: Callable[[dict[str, Any]], None] | None = None,
    ) -> list[Event]:
        """Append events to a session's log atomically; return them with ``seq`` and ``parentId``.

        ``update`` may change the session's metadata in the same transaction (``modifiedTime``
        is always set). Raises :class:`SessionNotFoundError` if the session was deleted, so
        a writer in another process cannot leave orphan events behind, and
        :class:`StoreCorruptedError` if an event is stored past the head (nothing is
        overwritten).
        """
        stored: list[Event] = []
        with self._cache.transact(retry=True):
            record = self._require(session_id)
            head = self._head(session_id)
            seq, last, open_turns = head["seq"], head["last"], head["open"]
            if self._has_events_after(session_id, seq):
                raise StoreCorruptedError(
                    f"the log head of session {session_id!r} in {self.directory} says "
                    f"{seq} events, but later events are stored: nothing was written, so "
                    f"none is overwritten. client.repair() moves the head to the last event"
                )
            for event in events:
                seq += 1
                renumber(event, last, seq)
                last = event.id
                _track_open(open_turns, event)
                stored.append(event)
            for start in range(0, len(stored), ROW_EVENTS):  # one row per append
                chunk = stored[start : start + ROW_EVENTS]
                self._put(_event_key(session_id, chunk[0].seq), _row_text(chunk), session_id)
            self._search.add(session_id, stored, record)
            self._set(f"h/{session_id}", {"seq": seq, "last": last, "open": open_turns})
            previous = record.get("modifiedTime")
            if update is not None:
                update(record)
            record["modifiedTime"] = utc_now()
            self._put_session(record, previous)
        return stored

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A re-entrant transaction: reads and appends inside it see no other writer.

        Other processes' writes wait (SQLite's ``BEGIN IMMEDIATE``), so keep it short.
        """
        try:
            with self._cache.transact(retry=True):
                yield
        except CopilotError:
            raise
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise translate(exc, self.directory, "in a transaction") from exc

    @_boundary("reading a log head")
    def last_seq(self, session_id: str) -> int:
        """The sequence number of the session's newest event (0 for none)."""
        head = self._get(f"h/{session_id}")
        return 0 if head is None else head["seq"]

    @_boundary("reading open turns")
    def open_turns(self, session_id: str) -> list[Event]:
        """The ``assistant.turn_start`` events of the session's unfinished turns, oldest first.

        Read from the head's ``open`` map: one key per open turn, whatever the log's length.
        """
        found = []
        prefix = f"e/{session_id}/"
        for seq in sorted(self._head(session_id)["open"].values()):
            key = _event_key(session_id, seq)
            for row_key, text in self._texts(key, key + "\0", floor_of=prefix):
                found.extend(e for e in _row_events(row_key, text) if e.seq == seq)
        return found

    @_boundary("reading events")
    def read_events(self, session_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        """The session's events with ``seq > after``, oldest first; at most ``limit``.

        One range read from the row holding event ``after + 1``; the events are parsed when
        first used (a row is one append: a few events).
        """
        prefix = f"e/{session_id}/"
        low = _event_key(session_id, after + 1)
        high = prefix + _AFTER_DIGITS
        events: list[Event] = []
        with paused_gc():
            # limit + 1 rows hold at least limit events past ``after`` (each row holds one
            # or more, and only the first can start at or before ``after``)
            rows = self._texts(
                low,
                high,
                limit=-1 if limit is None else limit + 1,
                floor_of=prefix if after else None,
            )
            if limit is None:
                events = _events_of_rows(rows)
            else:
                past = 0  # events read with seq > after
                for key, text in rows:
                    row = _row_events(key, text)
                    events.extend(row)
                    past += sum(1 for event in row if event.seq > after)
                    if past >= limit:
                        break
            skip = 0
            while skip < len(events) and events[skip].seq <= after:
                skip += 1
            if skip:
                del events[:skip]
            if limit is not None:
                del events[limit:]
            return events

    @_boundary("reading events")
    def read_last(self, session_id: str, count: int) -> list[Event]:
        """The session's newest ``count`` events, oldest first (one indexed range read)."""
        if count <= 0:
            return []
        low, high = f"e/{session_id}/", f"e/{session_id}/{_AFTER_DIGITS}"
        rows: list[list[Event]] = []
        found = 0
        for key, text in self._texts(low, high, descending=True, limit=count):
            rows.append(_row_events(key, text))
            found += len(rows[-1])
            if found >= count:
                break
        events = [event for row in reversed(rows) for event in row]
        return events[-count:]

    def page(
        self, session_id: str, after: int = 0, limit: int | None = None, last: int | None = None
    ) -> list[Event]:
        """``read_events(after, limit)``, or with ``last`` the newest ``last`` events."""
        if last is not None:
            return self.read_last(session_id, last)
        return self.read_events(session_id, after, limit)

    def iter_events(self, session_id: str, after: int = 0, chunk: int = 1000) -> Iterator[Event]:
        """The session's events with ``seq > after``, oldest first, read ``chunk`` at a time:
        memory stays bounded by one chunk however long the log is. Events appended while
        iterating are included."""
        while True:
            events = self.read_events(session_id, after, limit=chunk)
            yield from events
            if len(events) < chunk:
                return
            after = events[-1].seq

    def iter_events_backwards(
        self, session_id: str, before: int | None = None, chunk: int = 256
    ) -> Iterator[Event]:
        """The session's events newest first (``seq < before``), read in chunks of ``chunk``."""
        high = (
            f"e/{session_id}/{_AFTER_DIGITS}" if before is None else _event_key(session_id, before)
        )
        low = f"e/{session_id}/"
        while True:
            rows = self._chunk(low, high, chunk)
            for key, value in rows:
                for event in reversed(_row_events(key, value)):
                    if before is None or event.seq < before:
                        yield event
            if len(rows) < chunk:
                return
            high = rows[-1][0]

    def _readable_events(self, session_id: str) -> list[Event]:
        """The session's events that can be read, skipping damaged rows (for repairs)."""
        query = (
            "SELECT key, mode, filename, value FROM Cache WHERE key >= ? AND key < ? "
            "AND raw = 1 ORDER BY key"
        )
        bounds = (f"e/{session_id}/", f"e/{session_id}/{_AFTER_DIGITS}")
        events = []
        for key, mode, filename, value in self._cache._sql(query, bounds).fetchall():
            try:
                check_row(self.directory, key, mode, filename, value)
                if mode == MODE_TEXT:
                    value = self._cache.get(key)
                events.extend(_events_of(key, _loads(value, key)))
            except (StoreCorruptedError, ValueError, TypeError):
                continue
        return events

    @_boundary("checking the store")
    def check(self) -> list[dict[str, Any]]:
        """Every damage in the store, as ``{"kind", "sessionId", "key", "detail",
        "repairable"}`` dicts (empty for a sound store); see :mod:`copilot._store_check`."""
        from ._store_check import check_store

        return check_store(self)

    @_boundary("repairing the store")
    def repair(self) -> list[dict[str, Any]]:
        """Repair what :meth:`check` finds and can repair, without deleting any event; return
        the damage found, each with ``"repaired"``."""
        from ._store_check import repair_store

        return repair_store(self)

    @_boundary("reading events")
    def _chunk(self, low: str, high: str, chunk: int) -> list[tuple[str, Any]]:
        return list(self._texts(low, high, descending=True, limit=chunk))

    # -- search ------------------------------------------------------------------------------

    def search(
        self, query: str, *, progress: Progress | None = None, **filters: Any
    ) -> list[dict[str, Any]]:
        """Full-text search of prompts and replies; see :meth:`copilot.search.SearchIndex.search`.

        A store written before the index existed is indexed first (``progress(done, total)``).
        """
        self._search.ensure_built(self, progress)
        return self._search.search(query, **filters)

    def reindex(self, progress: Progress | None = None) -> int:
        """Rebuild the search index from the log; return the number of events indexed."""
        return self._search.reindex(self, progress)
