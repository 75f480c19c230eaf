"""The event store: an append-only log of session events on diskcache.

Layout (every key a string, every value JSON text)::

    s/<session_id>              the session's metadata (the sessions index)
    h/<session_id>              the log's head: last sequence number, last event id, and the
                                open turns ({"seq": n, "last": id, "open": {messageId: seq}})
    e/<session_id>/<seq:012d>   one event; tagged with the session id
    m/<modifiedTime>/<session_id>  the recency index: list_sessions(limit=n) reads n keys
    v/format                    the store's format version; older stores migrate on open

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
import gc
import itertools
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

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
from .events import Event, EventData, EventType, utc_now
from .search import Progress, SearchIndex

__all__ = ["STORE_FORMAT", "EventStore", "JSONTextDisk", "copied_counts"]

log = logging.getLogger("copilot")

_SEQ_WIDTH = 12
#: a character that sorts after every digit: the end of one session's event key range
_AFTER_DIGITS = ":"
_F = TypeVar("_F", bound=Callable[..., Any])
#: events that end a turn (remove it from the head's ``open``)
_TURN_ENDS = (EventType.ASSISTANT_TURN_END, EventType.ABORT)


#: the store's format: 2 added the recency index (``m/`` keys) and the ``v/format`` marker
STORE_FORMAT = 2


def _recent_key(modified: Any, session_id: str) -> str:
    """The recency-index key of a session: ``m/<modifiedTime>/<session id>``."""
    return f"m/{modified}/{session_id}"


def _recency(record: Mapping[str, Any]) -> tuple[str, str]:
    return str(record.get("modifiedTime", "")), str(record.get("sessionId"))


def _event_key(session_id: str, seq: int) -> str:
    return f"e/{session_id}/{seq:0{_SEQ_WIDTH}d}"


def _loads(text: str, key: str = "") -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:  # what orjson refuses and json reads: NaN, integers over 64 bits
        return json.loads(text)
    except ValueError as exc:
        raise StoreCorruptedError(f"the record {key!r} is not valid JSON: {exc}") from None


_new_event = Event.__new__
_TYPE_NAMES = {str(t): str(t) for t in EventType}


def _event(key: str, value: Any) -> Event:
    """The event stored as ``value`` under ``key``; StoreCorruptedError if it is not one.

    Built without ``Event.__init__``: a read of 60,000 events spends a third of its time
    there, on defaults a stored event always has (profiled for issue 12).
    """
    try:
        kind, event_id, timestamp = value["type"], value["id"], value["timestamp"]
        data = value.get("data")
    except (TypeError, KeyError, AttributeError):
        raise StoreCorruptedError(f"the record {key!r} is not an event") from None
    if not (
        type(kind) is str
        and type(event_id) is str
        and type(timestamp) is str
        and (data is None or type(data) is dict)
    ):
        raise StoreCorruptedError(f"the record {key!r} is not an event")
    event = _new_event(Event)
    event.type = _TYPE_NAMES.get(kind, kind)  # one string object per type, not per event
    event.data = EventData(data) if data else EventData()
    event.id = event_id
    event.timestamp = timestamp
    event.parent_id = value.get("parentId")
    event.ephemeral = bool(value.get("ephemeral", False))
    event.seq = int(key[-_SEQ_WIDTH:])
    return event


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
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # an integer over 64 bits in user metadata: json writes it
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _track_open(open_turns: dict[str, int], event: Event) -> None:
    """Update a head's ``open`` map (message id -> seq of its turn start) with ``event``."""
    if event.type == EventType.ASSISTANT_TURN_START:
        open_turns[event.data.get("messageId")] = event.seq
    elif event.type in _TURN_ENDS:
        open_turns.pop(event.data.get("messageId"), None)


def copied_counts(events: Iterable[Event]) -> dict[str, Any]:
    """``messageCount``, ``turnCount``, ``summary`` and ``lastModel`` of a list of events, as
    the turns that wrote them would have counted them."""
    counts: dict[str, Any] = {"messageCount": 0, "turnCount": 0, "summary": ""}
    for event in events:
        if event.type == EventType.USER_MESSAGE:
            counts["messageCount"] += 1
            counts["turnCount"] += 1
            if not counts["summary"]:
                counts["summary"] = " ".join(str(event.data.get("content", "")).split())[:100]
        elif event.type == EventType.ASSISTANT_MESSAGE:
            counts["messageCount"] += 1
            counts["lastModel"] = event.data.get("model")
    return counts


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a read builds many objects that hold no
    cycles: each pass of it over a growing heap made a 60,000-event read a third slower."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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

        return wrapper  # type: ignore[return-value]

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
                timeout=60,
                # Events up to 1 MiB stay inline in SQLite, where range scans read them.
                disk_min_file_size=2**20,
            )
        except CopilotError:
            raise
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise translate(exc, self.directory, "opening it") from exc
        self._search = SearchIndex(self._cache)  # full-text index, same file (copilot.search)
        self.sweep_orphan_files()
        try:
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
        self._cache.set(key, _dumps(value), tag=tag)

    def _rows(
        self, low: str, high: str, *, descending: bool = False, limit: int = -1
    ) -> Iterator[tuple[str, Any]]:
        """Yield ``(key, parsed value)`` for keys in ``[low, high)``, in key order."""
        order = "DESC" if descending else "ASC"
        query = (
            "SELECT key, mode, filename, value FROM Cache WHERE key >= ? AND key < ? "
            f"AND raw = 1 ORDER BY key {order} LIMIT ?"
        )
        cursor = self._cache._sql(query, (low, high, limit))
        # in batches: the raw text of a batch is freed while the next one is parsed
        for key, mode, filename, value in itertools.chain.from_iterable(
            iter(lambda: cursor.fetchmany(2000), [])
        ):
            if mode == MODE_RAW and filename is None and type(value) is str:
                yield key, _loads(value, key)
                continue
            check_row(self.directory, key, mode, filename, value)
            if mode == MODE_TEXT:  # a value over 1 MiB, kept in a file
                value = self._cache.get(key)
                if value is None:  # deleted since the SELECT
                    continue
            yield key, _loads(value, key)

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
        query = "SELECT 1 FROM Cache WHERE key > ? AND key < ? AND raw = 1 LIMIT 1"
        high = f"e/{session_id}/{_AFTER_DIGITS}"
        return self._cache._sql(query, (_event_key(session_id, seq), high)).fetchone() is not None

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
            self._cache.delete(_recent_key(previous_modified, session_id))
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
        """Bring a store written by an earlier version to this one's format, once.

        Version 1 (no ``v/format`` key) had no recency index: it is built from the index
        records. Heads without ``open`` are completed at their next append (see
        :meth:`_head`). Nothing is removed or rewritten but the index.
        """
        marker = self._get("v/format")
        if isinstance(marker, dict) and marker.get("version", 0) >= STORE_FORMAT:
            return
        with self._cache.transact(retry=True):
            marker = self._get("v/format")
            if isinstance(marker, dict) and marker.get("version", 0) >= STORE_FORMAT:
                return  # another process migrated it meanwhile
            count = self.rebuild_recency_index()
            self._set("v/format", {"version": STORE_FORMAT})
        if count:
            log.info(
                "migrated the store at %s to format %d (%d sessions)",
                self.directory,
                STORE_FORMAT,
                count,
            )

    def _require(self, session_id: str) -> dict[str, Any]:
        key = f"s/{session_id}"
        record = _metadata(key, self._get(key))
        if record is None:
            raise SessionNotFoundError(session_id)
        return record

    def _all_sessions(self) -> list[dict[str, Any]]:
        """Every readable index record; a damaged one is skipped with a warning."""
        query = (
            "SELECT key, mode, filename, value FROM Cache WHERE key >= ? AND key < ? AND raw = 1"
        )
        sessions = []
        rows = self._cache._sql(query, ("s/", "s0")).fetchall()
        for key, mode, filename, value in rows:
            if mode == MODE_RAW and filename is None and type(value) is str:
                try:  # the common case, without the checks of a foreign row
                    record = orjson.loads(value)
                except orjson.JSONDecodeError:
                    pass
                else:
                    if type(record) is dict and type(record.get("sessionId")) is str:
                        sessions.append(record)
                        continue
            try:
                check_row(self.directory, key, mode, filename, value)
                if mode == MODE_TEXT:
                    value = self._cache.get(key)
                    if value is None:
                        continue
                sessions.append(_metadata(key, _loads(value, key)))
            except StoreCorruptedError as exc:
                log.warning("list_sessions: skipped the damaged record %r: %s", key, exc)
        return sessions

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
            with _gc_paused():
                sessions = self._all_sessions()
            sessions.sort(key=_recency, reverse=True)
            return sessions
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
            self._release_blobs(session_id)
            return self._cache.evict(session_id)

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
        """The sessions that reference the attachment ``sha256``."""
        prefix = f"blobref/{sha256}/"
        return [key[len(prefix) :] for key, _ in self._rows(prefix, prefix + "\uffff")]

    def _session_blobs(self, session_id: str) -> list[str]:
        prefix = f"sblob/{session_id}/"
        return [key[len(prefix) :] for key, _ in self._rows(prefix, prefix + "\uffff")]

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
                event.parent_id, event.seq = last, seq
                self._set(_event_key(session_id, seq), event.to_dict(), tag=session_id)
                last = event.id
                _track_open(open_turns, event)
                stored.append(event)
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
        for seq in sorted(self._head(session_id)["open"].values()):
            key = _event_key(session_id, seq)
            for row_key, value in self._rows(key, key + "\0"):
                found.append(_event(row_key, value))
        return found

    @_boundary("reading events")
    def read_events(self, session_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        """The session's events with ``seq > after``, oldest first; at most ``limit``."""
        low = _event_key(session_id, after + 1)
        high = f"e/{session_id}/{_AFTER_DIGITS}"
        with _gc_paused():
            rows = self._rows(low, high, limit=-1 if limit is None else limit)
            return [_event(key, value) for key, value in rows]

    @_boundary("reading events")
    def read_last(self, session_id: str, count: int) -> list[Event]:
        """The session's newest ``count`` events, oldest first (one indexed range read)."""
        low, high = f"e/{session_id}/", f"e/{session_id}/{_AFTER_DIGITS}"
        rows = list(self._rows(low, high, descending=True, limit=count))
        return [_event(key, value) for key, value in reversed(rows)]

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
                yield _event(key, value)
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
                events.append(_event(key, _loads(value, key)))
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
        return list(self._rows(low, high, descending=True, limit=chunk))

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
