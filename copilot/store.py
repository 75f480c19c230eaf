"""The event store: an append-only log of session events on diskcache.

Layout (every key a string, every value JSON text)::

    s/<session_id>              the session's metadata (the sessions index)
    h/<session_id>              the log's head: last sequence number and last event id
    e/<session_id>/<seq:012d>   one event; tagged with the session id

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
- **Owner-only.** The directory is created with mode 0700.

The store is the only module that knows diskcache; a Redis or SQL store implements the same
public methods.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_RAW, MODE_TEXT

from .errors import (
    SessionExistsError,
    SessionNotFoundError,
    StoreCorruptedError,
    StoreError,
)
from .events import Event, utc_now
from .search import Progress, SearchIndex

__all__ = ["EventStore", "JSONTextDisk"]

_SEQ_WIDTH = 12
#: a character that sorts after every digit: the end of one session's event key range
_AFTER_DIGITS = ":"


class JSONTextDisk(diskcache.Disk):
    """A diskcache ``Disk`` that stores only strings and never unpickles.

    Keys must be ``str``; values must be ``str`` (the store writes JSON text). Reading a row
    in any other mode (pickle, bytes) raises :class:`StoreCorruptedError` instead of loading it.
    """

    def put(self, key: Any) -> tuple[Any, bool]:
        if type(key) is not str:
            raise StoreError(f"store keys are strings, not {type(key).__name__}")
        return key, True

    def get(self, key: Any, raw: bool) -> Any:
        if not raw or type(key) is not str:
            raise StoreCorruptedError("the store holds a key this package did not write")
        return key

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> tuple:
        if read or type(value) is not str:
            raise StoreError(f"store values are JSON text, not {type(value).__name__}")
        return super().store(value, read, key=key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == MODE_RAW and type(value) is str:
            return value
        if mode == MODE_TEXT and not read:
            return super().fetch(mode, filename, value, read)
        raise StoreCorruptedError("the store holds a record this package did not write")


def _event_key(session_id: str, seq: int) -> str:
    return f"e/{session_id}/{seq:0{_SEQ_WIDTH}d}"


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StoreCorruptedError(f"a stored record is not valid JSON: {exc}") from None


def _event(key: str, value: Any) -> Event:
    """The event stored as ``value`` under ``key``; StoreCorruptedError if it is not one."""
    if not (
        isinstance(value, dict)
        and all(isinstance(value.get(name), str) for name in ("id", "type", "timestamp"))
        and isinstance(value.get("data", {}), dict)
    ):
        raise StoreCorruptedError(f"the record {key!r} is not an event")
    return Event.from_dict(value, seq=int(key.rsplit("/", 1)[1]))


def _metadata(key: str, value: Any) -> Any:
    """Session metadata stored under ``key`` (None stays None); StoreCorruptedError if not."""
    if value is not None and not (
        isinstance(value, dict) and isinstance(value.get("sessionId"), str)
    ):
        raise StoreCorruptedError(f"the record {key!r} is not session metadata")
    return value


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class EventStore:
    """Sessions and their event logs in one directory, shared safely by threads and processes."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        try:
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
        except Exception as exc:  # sqlite3 / OSError: a directory we cannot use
            raise StoreError(f"cannot open the event store at {self.directory}: {exc}") from exc
        self._search = SearchIndex(self._cache)  # full-text index, same file (copilot.search)

    def __repr__(self) -> str:
        return f"<EventStore {str(self.directory)!r}>"

    def close(self) -> None:
        """Close this process's connections (the data stays on disk)."""
        self._cache.close()

    # -- low level -------------------------------------------------------------------------

    def _get(self, key: str) -> Any:
        text = self._cache.get(key)
        return None if text is None else _loads(text)

    def _set(self, key: str, value: Any, tag: str | None = None) -> None:
        self._cache.set(key, _dumps(value), tag=tag)

    def _rows(
        self, low: str, high: str, *, descending: bool = False, limit: int = -1
    ) -> Iterator[tuple[str, Any]]:
        """Yield ``(key, parsed value)`` for keys in ``[low, high)``, in key order."""
        order = "DESC" if descending else "ASC"
        query = (
            "SELECT key, mode, value FROM Cache WHERE key >= ? AND key < ? AND raw = 1 "
            f"ORDER BY key {order} LIMIT ?"
        )
        rows = self._cache._sql(query, (low, high, limit)).fetchall()
        for key, mode, value in rows:
            if mode == MODE_RAW and type(value) is str:
                yield key, _loads(value)
            elif mode == MODE_TEXT:  # a value over 1 MiB, kept in a file
                text = self._cache.get(key)
                if text is not None:  # deleted since the SELECT
                    yield key, _loads(text)
            else:
                raise StoreCorruptedError(f"the record {key!r} is not JSON text")

    # -- sessions ----------------------------------------------------------------------------

    def create_session(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Add a session to the index. Raises :class:`SessionExistsError` if the id is taken."""
        session_id = metadata["sessionId"]
        record = dict(metadata)
        with self._cache.transact(retry=True):
            if self._cache.get(f"s/{session_id}") is not None:
                raise SessionExistsError(session_id)
            self._set(f"s/{session_id}", record)
            self._set(f"h/{session_id}", {"seq": 0, "last": None})
        return record

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """The session's metadata, or None."""
        return _metadata(f"s/{session_id}", self._get(f"s/{session_id}"))

    def update_session(self, session_id: str, **fields: Any) -> dict[str, Any]:
        """Set metadata fields of a stored session and return the new metadata."""
        with self._cache.transact(retry=True):
            record = self._require(session_id)
            record.update(fields)
            self._set(f"s/{session_id}", record)
        return record

    def _require(self, session_id: str) -> dict[str, Any]:
        record = self._get(f"s/{session_id}")
        if record is None:
            raise SessionNotFoundError(session_id)
        return record

    def list_sessions(self) -> list[dict[str, Any]]:
        """Every session's metadata, most recently modified first."""
        sessions = [_metadata(key, value) for key, value in self._rows("s/", "s0")]
        sessions.sort(key=lambda s: s.get("modifiedTime", ""), reverse=True)
        return sessions

    def delete_session(self, session_id: str) -> int:
        """Remove a session and all its events in one transaction. Returns the events removed."""
        with self._cache.transact(retry=True):
            self._require(session_id)
            self._cache.delete(f"s/{session_id}")
            self._cache.delete(f"h/{session_id}")
            self._search.remove_session(session_id)
            return self._cache.evict(session_id)

    # -- events ------------------------------------------------------------------------------

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
        a writer in another process cannot leave orphan events behind.
        """
        stored: list[Event] = []
        with self._cache.transact(retry=True):
            record = self._require(session_id)
            head = self._get(f"h/{session_id}") or {"seq": 0, "last": None}
            seq, last = head["seq"], head["last"]
            for event in events:
                seq += 1
                event.parent_id, event.seq = last, seq
                self._set(_event_key(session_id, seq), event.to_dict(), tag=session_id)
                last = event.id
                stored.append(event)
            self._search.add(session_id, stored, record)
            self._set(f"h/{session_id}", {"seq": seq, "last": last})
            if update is not None:
                update(record)
            record["modifiedTime"] = utc_now()
            self._set(f"s/{session_id}", record)
        return stored

    def transaction(self) -> AbstractContextManager[Any]:
        """A re-entrant transaction: reads and appends inside it see no other writer.

        Other processes' writes wait (SQLite's ``BEGIN IMMEDIATE``), so keep it short.
        """
        return self._cache.transact(retry=True)

    def last_seq(self, session_id: str) -> int:
        """The sequence number of the session's newest event (0 for none)."""
        head = self._get(f"h/{session_id}")
        return 0 if head is None else head["seq"]

    def read_events(self, session_id: str, after: int = 0) -> list[Event]:
        """The session's events with ``seq > after``, oldest first."""
        low = _event_key(session_id, after + 1)
        high = f"e/{session_id}/{_AFTER_DIGITS}"
        return [_event(key, value) for key, value in self._rows(low, high)]

    def iter_events_backwards(
        self, session_id: str, before: int | None = None, chunk: int = 256
    ) -> Iterator[Event]:
        """The session's events newest first (``seq < before``), read in chunks of ``chunk``."""
        high = (
            f"e/{session_id}/{_AFTER_DIGITS}" if before is None else _event_key(session_id, before)
        )
        low = f"e/{session_id}/"
        while True:
            rows = list(self._rows(low, high, descending=True, limit=chunk))
            for key, value in rows:
                yield _event(key, value)
            if len(rows) < chunk:
                return
            high = rows[-1][0]

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
