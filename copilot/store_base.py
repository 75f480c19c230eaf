"""The store protocol: what the client and the session core need from an event store.

Two stores implement it: :class:`copilot.store.EventStore` (diskcache, one machine's directory,
the embedded default) and :class:`copilot.store_postgres.PostgresStore` (PostgreSQL, shared by
every node and many users). The client picks one with :func:`copilot.stores.open_store`.

Guarantees every implementation keeps (the contract tests in ``tests/test_store_postgres.py``
run against both):

- **A log of JSON.** Session metadata and events are JSON values (dicts of str, numbers, bools,
  None, lists, dicts); nothing executable is stored or loaded.
- **Atomic appends, gap-free sequence numbers.** One :meth:`Store.append` call stores all its
  events or none; a session's events are numbered 1, 2, 3, ... with no gap and no repeat, even
  with writers in several processes (or machines, for a shared store); each writer's own order
  is kept, and ``parentId`` chains every event to the one stored before it.
- **Atomic delete and fork.** A crash leaves a deleted session whole or gone, and a fork whole
  or absent, never half.
- **Consistent read-then-append.** Inside :meth:`Store.transaction`, what was read of a session
  is still its tail when an append to that session commits: no other writer slips in between.
- **Costs independent of the log's length** for append, last_seq, open_turns and reading the
  tail (ranges, not scans).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from .events import Event, EventType

__all__ = ["ChangeFeed", "SearchableStore", "Store", "copied_counts"]

#: ``update`` of :meth:`Store.append`: changes the session's metadata in the append's transaction
MetadataUpdate = Callable[[dict[str, Any]], None]
#: ``copy`` of :meth:`Store.fork_session`: the source's events -> the fork's new events
EventCopier = Callable[[list[Event]], list[Event]]


@runtime_checkable
class Store(Protocol):
    """Sessions (a metadata index) and their append-only event logs."""

    def close(self) -> None:
        """Release this process's connections; the data stays. Idempotent."""

    # -- sessions ----------------------------------------------------------------------------

    def create_session(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Add a session to the index (``metadata["sessionId"]`` is its id); return the record.

        Raises :class:`~copilot.errors.SessionExistsError` if the id is taken (for a shared
        store: by this owner; other owners' ids are invisible and never collide).
        """

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """The session's metadata, or None if it is not stored (or belongs to another owner)."""

    def update_session(self, session_id: str, **fields: Any) -> dict[str, Any]:
        """Set metadata fields and return the new metadata, atomically.

        Raises :class:`~copilot.errors.SessionNotFoundError` for a missing session.
        """

    def list_sessions(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Sessions' metadata (this owner's only), most recently modified first; with
        ``limit``, the newest ``limit`` only, at a cost independent of the number of sessions."""

    def delete_session(self, session_id: str) -> int:
        """Remove a session and all its events in one transaction; return the events removed.

        Raises :class:`~copilot.errors.SessionNotFoundError` for a missing session.
        """

    def fork_session(
        self, source_id: str, metadata: Mapping[str, Any], copy: EventCopier
    ) -> dict[str, Any]:
        """Create session ``metadata["sessionId"]`` holding ``copy(source's events)``; one transaction.

        The new events get sequence numbers from 1 and a fresh ``parentId`` chain. Turns still
        open in the source are left out with every event naming them. ``messageCount``,
        ``turnCount``, ``summary`` and ``lastModel`` are computed from the copied events
        (whatever ``metadata`` said). The fork is whole or absent after a crash. Raises
        :class:`~copilot.errors.SessionNotFoundError` (source missing) or
        :class:`~copilot.errors.SessionExistsError` (target taken).
        """

    # -- events ------------------------------------------------------------------------------

    def rename_session(self, old_id: str, new_id: str) -> dict[str, Any]:
        """Give session ``old_id`` the id ``new_id`` (log and metadata otherwise unchanged) in
        one transaction. Raises SessionNotFoundError / SessionExistsError; returns the new
        metadata."""
        ...

    def append(
        self,
        session_id: str,
        events: Iterable[Event],
        *,
        update: MetadataUpdate | None = None,
    ) -> list[Event]:
        """Append events atomically; return them with ``seq`` and ``parentId`` set.

        ``update(metadata)`` may change the session's metadata in the same transaction;
        ``modifiedTime`` is always set. Raises :class:`~copilot.errors.SessionNotFoundError`
        if the session was deleted (no orphan events).
        """

    def transaction(self) -> AbstractContextManager[Any]:
        """A re-entrant transaction for this thread: reads and appends inside it see no other
        writer of the sessions they touch, and an exception rolls everything back.

        Keep it short: other writers of the same session (or, for diskcache, of the store)
        wait for it.
        """

    def last_seq(self, session_id: str) -> int:
        """The sequence number of the session's newest event (0 for none or a missing session)."""

    def read_events(self, session_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        """The session's events with ``seq > after``, oldest first, at most ``limit`` (one
        range read)."""

    def read_last(self, session_id: str, count: int) -> list[Event]:
        """The session's newest ``count`` events, oldest first (one range read)."""

    def page(
        self, session_id: str, after: int = 0, limit: int | None = None, last: int | None = None
    ) -> list[Event]:
        """``read_events(after, limit)``, or with ``last`` the newest ``last`` events."""

    def iter_events(self, session_id: str, after: int = 0, chunk: int = 1000) -> Iterator[Event]:
        """The session's events with ``seq > after``, oldest first, read ``chunk`` at a time
        (memory bounded by one chunk); events appended meanwhile are included."""

    def iter_events_backwards(
        self, session_id: str, before: int | None = None, chunk: int = 256
    ) -> Iterator[Event]:
        """The session's events newest first (``seq < before``), read in chunks of ``chunk``."""

    def open_turns(self, session_id: str) -> list[Event]:
        """The ``assistant.turn_start`` events with no ``assistant.turn_end`` or ``abort`` yet.

        Oldest first; matched on ``data.messageId``; the cost does not grow with the log.
        """

    def put_blobs(self, session_id: str, blobs: Iterable[tuple[str, str, bytes]]) -> None:
        """Store ``(sha256, mimeType, data)`` attachments for ``session_id``, in the caller's
        transaction if one is open: bytes already stored (for this owner) are not written
        again; the session's reference is added. SessionNotFoundError if it is not stored."""

    def get_blob(self, sha256: str) -> bytes | None:
        """The bytes stored under ``sha256`` (None: not stored, or no session references them
        any more: a delete of the last reference removes them in its transaction)."""

    def blob_refs(self, sha256: str) -> list[str]:
        """The sessions that reference the attachment ``sha256``, sorted."""

    def check(self) -> list[dict[str, Any]]:
        """Damage in the store: ``{"kind", "sessionId", "key", "detail", "repairable"}`` dicts
        (empty for a sound store)."""

    def repair(self) -> list[dict[str, Any]]:
        """Repair what :meth:`check` finds and can repair, deleting no event; return the
        damage found, each with ``"repaired"``."""


@runtime_checkable
class ChangeFeed(Protocol):
    """A store that tells its clients of events written by other processes or machines."""

    def subscribe(self, callback: Callable[[str, int], None]) -> AbstractContextManager[Any]:
        """Call ``callback(session_id, last_seq)`` after each commit of new events (any writer).

        The callback runs on a listener thread; keep it short. Returns a handle whose
        ``close()`` (or ``with`` exit) unsubscribes.
        """

    def wait_for_change(self, session_id: str, after: int, timeout: float | None) -> int:
        """Block until the session's ``last_seq`` exceeds ``after`` or ``timeout`` passes.

        Returns the ``last_seq`` seen (``<= after`` on timeout). No polling loop.
        """


@runtime_checkable
class SearchableStore(Protocol):
    """Full-text search over a store's prompts and replies, with one query syntax and hit
    shape on every store: :class:`copilot.store.EventStore` (SQLite FTS5, :mod:`copilot.search`)
    and :class:`copilot.store_postgres.PostgresStore` (``tsvector`` + GIN,
    :mod:`copilot._pg_search`). The index is written in each append's transaction and removed
    with its session."""

    def search(
        self,
        query: str,
        *,
        session_id: str | None = None,
        model: str | None = None,
        since: Any = None,
        until: Any = None,
        limit: int = 20,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Hits best first: ``sessionId``, ``eventId``, ``messageId``, ``seq``, ``type``,
        ``timestamp``, ``model``, ``replaced``, ``snippet``, ``rank`` (lower is better)."""

    def reindex(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Rebuild the index from the logs; return the entries indexed."""


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
