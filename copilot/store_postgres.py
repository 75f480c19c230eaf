"""The event store on PostgreSQL: one user's sessions on every node, many users on one service.

Tables (see :mod:`copilot._pg_schema`; the package creates and migrates them)::

    copilot_sessions (owner, session_id) -> meta jsonb, seq, last_id, open_turns jsonb, rev
    copilot_events   (owner, session_id, seq) -> event jsonb

Guarantees (the same as :class:`copilot.store.EventStore`, see :mod:`copilot.store_base`):

- **Gap-free sequence numbers under concurrent writers on any number of machines.** The
  session's row is the log's head (``seq``, ``last_id``, a revision ``rev``, a new random
  value at every change). An append is one statement: it moves the head from the revision
  this store saw last to a new one, inserts the events numbered from the head's ``seq`` and
  sends ``NOTIFY``, only if the head was still at that revision (PostgreSQL re-checks it on the newest row version when writers race). A
  loser reads the head again and retries; after a few lost races it queues on the row lock
  (``SELECT ... FOR UPDATE``). One round trip per append when one writer drives a session,
  the common case; writers of different sessions never wait for each other.
- **Consistent read-then-append.** Inside :meth:`PostgresStore.transaction`, the first read of
  a session locks its row, so the tail the session core read is still the tail when its append
  commits (the turn-start transaction of ``SessionCore``). The lock goes out with ``BEGIN`` and
  reads the session's head; while it is held, the metadata, the last seq and the events this
  store appended last come from there (a turn's start: three round trips).
- **Owners.** Every row carries an owner; every statement filters on this store's owner, so a
  client sees and changes only its owner's sessions. With row-level security
  (:data:`ROW_LEVEL_SECURITY`) the database enforces it too, per database role.
- **JSONB only.** Metadata and events are ``jsonb``; nothing is unpickled or evaluated.
- **Live.** Each append sends ``NOTIFY`` on the owner's channel in its transaction (delivered at
  commit); :meth:`PostgresStore.subscribe` and :meth:`PostgresStore.wait_for_change` listen on
  one connection per store, with no polling loop.
- **Faults are typed.** A lost connection raises :class:`~copilot.errors.StoreConnectionError`
  (the transaction is rolled back: no half-written turn); before lending a connection the pool
  looks at its socket (a round trip only if the server may have closed it), so the next call
  reconnects by itself (also after a server restart). A pool with no
  free connection for ``timeout`` seconds raises :class:`~copilot.errors.StoreTimeoutError`.

The store is called synchronously (from the client's loop thread, or the caller's thread for
pure reads), like the diskcache store; one append is one statement, one round trip (its p50
in ``bench/postgres.py`` is in docs/architecture.md).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import getpass
import hashlib
import json
import os
import select
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, NamedTuple, TypeVar

import orjson
import psycopg
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from ._pg_schema import migrate
from ._pg_search import SearchQuery, index_rows
from .errors import (
    InvalidArgumentError,
    SessionExistsError,
    SessionNotFoundError,
    StoreConnectionError,
    StoreCorruptedError,
    StoreError,
    StoreTimeoutError,
)
from .events import (
    Event,
    EventType,
    NotAnEventError,
    build_stored_events,
    exact_ints_marked,
    load_record,
    paused_gc,
    renumber,
    stored_events,
    utc_now,
)
from .search import Progress
from .store_base import copied_counts

__all__ = ["ROW_LEVEL_SECURITY", "PostgresStore", "default_owner"]

#: Row-level security for deployments where each user connects as their own database role,
#: named like the owner (JupyterHub: the hub user name). Run once as the tables' owner; then a
#: role reads and writes only rows whose ``owner`` is its name, whatever owner= a client passes.
ROW_LEVEL_SECURITY = """
ALTER TABLE copilot_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE copilot_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE copilot_search ENABLE ROW LEVEL SECURITY;
ALTER TABLE copilot_blobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE copilot_blob_refs ENABLE ROW LEVEL SECURITY;
CREATE POLICY copilot_owner ON copilot_sessions
    USING (owner = current_user) WITH CHECK (owner = current_user);
CREATE POLICY copilot_owner ON copilot_events
    USING (owner = current_user) WITH CHECK (owner = current_user);
CREATE POLICY copilot_owner ON copilot_search
    USING (owner = current_user) WITH CHECK (owner = current_user);
CREATE POLICY copilot_owner ON copilot_blobs
    USING (owner = current_user) WITH CHECK (owner = current_user);
CREATE POLICY copilot_owner ON copilot_blob_refs
    USING (owner = current_user) WITH CHECK (owner = current_user);
GRANT SELECT, INSERT, UPDATE, DELETE ON copilot_sessions, copilot_events, copilot_search,
    copilot_blobs, copilot_blob_refs TO PUBLIC;
GRANT SELECT ON copilot_schema TO PUBLIC;
"""

_SESSION = "owner = %s AND session_id = %s"
#: one append in one statement: move the head if it is still at ``rev`` (EvalPlanQual re-checks
#: ``rev`` on the newest row version if another writer got there first), insert the events only
#: if it moved, and announce them; no row back means another writer won: read again, retry.
#: Everything the statement writes as JSON travels in one ``jsonb`` parameter, ``%(arg)s``:
#: ``{"meta", "open", "events": [...], "docs": [...]}``, made by one orjson call. Against a
#: parameter per column (``jsonb[]`` of the events, nine arrays for the search rows) this saves
#: psycopg's per-element dumping and, above all, lets PostgreSQL keep one generic plan for the
#: prepared statement: ``unnest`` of an array parameter is estimated from each call's array
#: length, so every call's custom plan looked cheaper than the generic one and the statement
#: was planned anew on every append (0.08 ms of each 0.29 ms on the server; docs/architecture.md).
_APPEND_HEAD = (
    "WITH head AS (UPDATE copilot_sessions SET meta = %(arg)s -> 'meta', seq = %(seq)s, "
    "last_id = %(last)s, open_turns = %(arg)s -> 'open', rev = DEFAULT "
    "WHERE owner = %(owner)s AND session_id = %(sid)s AND rev = %(rev)s RETURNING rev), "
    "ins AS (INSERT INTO copilot_events (owner, session_id, seq, event) "
    "SELECT %(owner)s, %(sid)s, %(base)s + x.n, x.e FROM head, "
    "jsonb_array_elements(%(arg)s -> 'events') WITH ORDINALITY AS x(e, n)) "
)
_APPEND_NOTIFY = "SELECT rev, pg_notify(%(channel)s, %(payload)s) FROM head"
_APPEND = _APPEND_HEAD + _APPEND_NOTIFY
#: the same, also writing the search index (copilot._pg_search) in the same statement: the
#: prompts and replies appended, and (_APPEND_REPLACING) the flag of the exchanges their prompts
#: replace. Used only when the events hold something to index (a turn's end, usage, deltas: the
#: plain statement). The flag's UPDATE is left out when nothing is replaced: on a table whose
#: statistics lag (a session filled faster than autovacuum analyzes) the planner ran it as a
#: scan of all the session's index rows, 3.3 ms at 10,000 turns (EXPLAIN ANALYZE; issue 16).
_APPEND_DOCS = (
    ", docs AS (INSERT INTO copilot_search (owner, session_id, seq, event_id, message_id, "
    "type, ts, model, replaced, body, doc) SELECT %(owner)s, %(sid)s, d.q, d.i, d.m, d.t, d.ts, "
    "coalesce(d.model, (SELECT p.model FROM copilot_search p WHERE p.owner = %(owner)s "
    "AND p.session_id = %(sid)s AND p.message_id = d.m "
    f"AND p.type = '{EventType.USER_MESSAGE.value}' LIMIT 1)), "
    "d.r, d.b, d.v::tsvector FROM head, jsonb_to_recordset(%(arg)s -> 'docs') "
    "AS d(q bigint, i text, m text, t text, ts text, model text, r boolean, b text, v text)) "
)
_APPEND_REPS = (
    ", reps AS (UPDATE copilot_search SET replaced = true FROM head "
    "WHERE owner = %(owner)s AND session_id = %(sid)s AND message_id = ANY(%(replaced)s::text[])) "
)
_APPEND_INDEXED = _APPEND_HEAD + _APPEND_DOCS + _APPEND_NOTIFY
_APPEND_REPLACING = _APPEND_HEAD + _APPEND_DOCS + _APPEND_REPS + _APPEND_NOTIFY
_HEAD = (
    "SELECT meta::text, seq, last_id, open_turns::text, rev FROM copilot_sessions WHERE " + _SESSION
)
#: a transaction's first statement when it locks a session: its BEGIN and the locked head
_BEGIN_AND_LOCK = sql.SQL(
    "BEGIN; SELECT meta::text, seq, last_id, open_turns::text, rev FROM copilot_sessions "
    "WHERE owner = {} AND session_id = {} FOR UPDATE"
)
#: SearchRow's fields, as the append statement's ``jsonb_to_recordset`` names them
_DOC_KEYS = ("q", "i", "m", "t", "ts", "model", "r", "b", "v")
_V = TypeVar("_V")
#: sessions whose head and read length a store remembers (see _Recently)
_REMEMBERED_SESSIONS = 4096
#: what a store keeps of its latest appends (see PostgresStore._recent): events a session,
#: their JSON text a session (characters), and sessions (the least recently written go first)
_RECENT_EVENTS = 64
_RECENT_CHARS = 1 << 20
_RECENT_SESSIONS = 256
#: optimistic attempts before an append queues on the row lock instead
_OPTIMISTIC_TRIES = 3
#: a range of events (``seq > after``) as text, parsed by :func:`_events`
_RANGE = f"SELECT seq, event::text FROM copilot_events WHERE {_SESSION} AND seq > %s "
#: a range of events as one row: first and last seq, count, and the events' jsonb as text,
#: joined by commas (a JSON array without its brackets), for copilot.events.stored_events
_RANGE_ROW = (
    "SELECT min(seq), count(*), max(seq), string_agg(t, ',' ORDER BY seq) FROM (SELECT seq, "
    f"event::text AS t FROM copilot_events WHERE {_SESSION} AND seq > %s "
)
#: this owner's event rows that copilot.events.build_stored_events would refuse (check())
_NOT_EVENTS = (
    "SELECT session_id, seq FROM copilot_events WHERE owner = %s AND NOT ("
    "jsonb_typeof(event) = 'object' "
    "AND coalesce(jsonb_typeof(event -> 'id'), '') = 'string' "
    "AND coalesce(jsonb_typeof(event -> 'type'), '') = 'string' "
    "AND coalesce(jsonb_typeof(event -> 'timestamp'), '') = 'string' "
    "AND coalesce(jsonb_typeof(event -> 'data'), 'null') IN ('object', 'null')) "
    "ORDER BY session_id, seq"
)
#: above every sequence number (an open upper bound)
_NO_SEQ = 1 << 62
#: events per query of a long read, pipelined (PostgresStore._read); 2,000-5,000 measured alike
_READ_CHUNK = 2_000
_RECONNECT_TIMEOUT = 2.0


def _check_connection(connection: psycopg.Connection) -> None:
    """The pool's check before lending ``connection``: a round trip only when it may be gone.

    An idle connection the server closed (a restart, a shutdown, ``pg_terminate_backend``, a
    killed server) has something to read on its socket: the server's last error message or the
    end of the stream. A connection with nothing to read is lent as it is; the full check (a
    ``SELECT``-less round trip, psycopg's ``check_connection``) runs only otherwise, so an
    append is one round trip instead of two (measured in docs/architecture.md). A peer that
    vanished without a word (a network partition) is not seen here: that call fails with
    :class:`~copilot.errors.StoreConnectionError` and the pool replaces the connection.
    """
    pgconn = connection.pgconn
    if pgconn.status == pq.ConnStatus.OK and pgconn.transaction_status == pq.TransactionStatus.IDLE:
        with contextlib.suppress(OSError, ValueError, AttributeError, psycopg.Error):
            poller = select.poll()
            poller.register(pgconn.socket, select.POLLIN)
            if not poller.poll(0):
                return
    ConnectionPool.check_connection(connection)


def _dumps(value: Any) -> bytes:
    """JSON for a ``jsonb`` parameter: orjson (several times json's speed), json for what it
    refuses (an integer over 64 bits in user metadata). A record inside ``value`` that holds
    such an integer must be marked first (:func:`copilot.events.exact_ints_marked`), so that
    its text read back is parsed exactly."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def default_owner() -> str:
    """The owner of a client that does not name one: ``$JUPYTERHUB_USER``, else the OS user."""
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


def redact(conninfo: str) -> str:
    """``conninfo`` without its password: host, port, database and user only."""
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<an unparsable PostgreSQL URL>"
    host, port = parts.get("host", "localhost"), parts.get("port", "5432")
    return f"postgresql://{parts.get('user', '')}@{host}:{port}/{parts.get('dbname', '')}"


class _Head(NamedTuple):
    """A session row's log head as last seen: what an append needs to write without reading."""

    meta: dict[str, Any]
    seq: int
    last_id: str | None
    open_turns: dict[str, int]
    rev: int


class _Recently(Generic[_V]):
    """A dict of the ``size`` most recently set keys (the oldest set goes first), safe to share
    between threads: what a store remembers per session stays bounded in a process that serves
    many sessions over days (a web app's replica), and a forgotten entry only costs a read."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: collections.OrderedDict[str, _V] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._items))

    def __getitem__(self, key: str) -> _V:
        return self._items[key]

    def get(self, key: str) -> _V | None:
        return self._items.get(key)

    def set(self, key: str, value: _V) -> None:
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def pop(self, key: str) -> _V | None:
        with self._lock:
            return self._items.pop(key, None)


class _Recent(NamedTuple):
    """A session's latest events as this store appended them: ``(seq, jsonb text)`` rows, up
    to :data:`_RECENT_EVENTS`, ending at the head whose revision is ``rev``."""

    rev: int
    rows: list[tuple[int, str]]


class _Transaction:
    """This thread's open :meth:`PostgresStore.transaction`: its connection and cursor, whether
    ``BEGIN`` has gone out yet, the session rows it locked and their heads as locked or as its
    own appends left them (current while the lock is held; remembered once it commits)."""

    __slots__ = ("begun", "connection", "cursor", "heads", "locked")

    def __init__(self, connection: psycopg.Connection, cursor: psycopg.Cursor) -> None:
        self.connection = connection
        self.cursor = cursor
        self.begun = False
        self.locked: set[str] = set()
        self.heads: dict[str, _Head] = {}


class PostgresStore:
    """Sessions and their event logs in PostgreSQL, for one owner, shared by processes and nodes.

    >>> store = PostgresStore("postgresql://copilot@db/copilot", owner="alice")  # doctest: +SKIP

    Parameters: ``conninfo`` (a libpq URL or key=value string; keep passwords in
    ``PGPASSWORD`` or ``~/.pgpass``), ``owner`` (default :func:`default_owner`),
    ``max_size`` (pooled connections), ``timeout`` (seconds to wait for one).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        owner: str | None = None,
        max_size: int = 8,
        timeout: float = 30.0,
    ) -> None:
        owner = default_owner() if owner is None else owner
        if not isinstance(owner, str) or not owner:
            raise InvalidArgumentError("owner is a non-empty string (e.g. the user's name)")
        self.owner = owner
        self._where = redact(conninfo)
        self._timeout = timeout
        self._max_size = max_size
        self._local = threading.local()
        #: session id -> the head this store last wrote or read (a stale one costs a retry)
        self._heads: _Recently[_Head] = _Recently(_REMEMBERED_SESSIONS)
        #: session id -> the newest seq this store read (how long a read may be; any value is
        #: safe: it only chooses between one query and pipelined ranges, see _read)
        self._seen: _Recently[int] = _Recently(_REMEMBERED_SESSIONS)
        #: session id -> its latest events as this store appended them, valid while the head is
        #: at that revision: a transaction holding the session's row reads them from here (a
        #: turn's start reads the events of the turn before, which this store wrote)
        self._recent: _Recently[_Recent] = _Recently(_RECENT_SESSIONS)
        self._channel = "copilot_" + hashlib.sha256(owner.encode()).hexdigest()[:40]
        self._listener: _Listener | None = None
        self._listener_lock = threading.Lock()
        self._conninfo = conninfo
        self._pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_size,
            timeout=timeout,
            kwargs={"autocommit": True},
            # A connection the server dropped (restart, terminate) is replaced before lending;
            # a cheap look at its socket decides whether the round trip of a full check is due.
            check=_check_connection,
            # While the server is away the pool retries in the background with a doubling
            # delay; giving up after a few seconds makes the next call start a fresh attempt at
            # once, so a restarted server is used as soon as it is back (not after a long
            # backoff).
            reconnect_timeout=_RECONNECT_TIMEOUT,
            open=False,
            name=f"copilot-{owner}",
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except PoolTimeout:
            self._pool.close()
            raise StoreConnectionError(
                f"cannot connect to the PostgreSQL store {self._where} within {timeout:g} s; "
                "check that the server runs and the URL, user and password (PGPASSWORD or "
                "~/.pgpass) are right"
            ) from None
        try:
            with self._errors(), self._pool.connection() as connection:
                migrate(connection)
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"<PostgresStore {self._where!r} owner={self.owner!r}>"

    def close(self) -> None:
        """Close the pool and any listener (the data stays in the database). Idempotent."""
        with self._listener_lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        self._pool.close()

    # -- connections, transactions and errors ------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate psycopg's exceptions into the store's, once, at this boundary."""
        try:
            yield
        except PoolTimeout:
            raise StoreTimeoutError(
                f"no connection to {self._where} came free within {self._timeout:g} s (a pool "
                f"of {self._max_size}); shorten transactions or give PostgresStore a larger "
                "max_size"
            ) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StoreError(
                f"the database refused access for owner {self.owner!r}: {exc.diag.message_primary}"
                "; with row-level security a role reads and writes only rows of its own name"
            ) from None
        except psycopg.errors.UntranslatableCharacter:
            raise StoreError(
                "PostgreSQL's jsonb cannot hold the character U+0000; remove NUL characters"
            ) from None
        except psycopg.OperationalError as exc:
            if exc.sqlstate is None or exc.sqlstate.startswith(("08", "57P")):
                raise StoreConnectionError(
                    f"lost the connection to the PostgreSQL store {self._where} ({exc}); the "
                    "operation was rolled back and the next call reconnects"
                ) from None
            raise StoreError(f"the PostgreSQL store failed: {exc}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"the PostgreSQL store failed: {exc}") from exc

    @contextlib.contextmanager
    def _cursor(self, session_id: str | None = None, *, write: bool = False) -> Iterator[Any]:
        """A cursor: this thread's transaction's (locking ``session_id``'s row on first touch),
        else a pooled connection's, in a transaction of its own if ``write``."""
        tx: _Transaction | None = getattr(self._local, "tx", None)
        with self._errors():
            if tx is not None:
                if session_id is not None and session_id not in tx.locked:
                    self._lock(tx, session_id)
                elif not tx.begun:
                    tx.begun = True
                    tx.cursor.execute("BEGIN")
                yield tx.cursor
                return
            with self._pool.connection() as connection:
                if write:
                    with connection.transaction(), connection.cursor() as cursor:
                        yield cursor
                else:
                    with connection.cursor() as cursor:
                        yield cursor

    @contextlib.contextmanager
    def _append_cursor(self) -> Iterator[Any]:
        """A pooled connection's own cursor, kept on the connection for the next append.

        An append outside a transaction runs one statement with a one-row answer; a new cursor
        for it meant a new psycopg ``Transformer`` looking up the dumpers of its nine parameters
        again: keeping one cursor per connection took 14 us off each append (bench row 9,
        docs/architecture.md). Only the append uses it: a long read's rows would stay referenced
        by a kept cursor until its next statement.
        """
        with self._errors(), self._pool.connection() as connection:
            cursor = getattr(connection, "_copilot_append_cursor", None)
            if cursor is None or cursor.closed:
                cursor = connection._copilot_append_cursor = connection.cursor()
            yield cursor

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A re-entrant transaction for this thread: one connection, rolled back on any error.

        The first read or write of a session inside it locks the session's row until the end,
        so other writers of that session (on any machine) wait: keep it short.
        """
        if getattr(self._local, "tx", None) is not None:
            yield
            return
        with self._errors(), self._pool.connection() as connection, connection.cursor() as cursor:
            tx = self._local.tx = _Transaction(connection, cursor)
            try:
                yield
            except BaseException:
                self._local.tx = None
                if tx.begun and connection.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                    with contextlib.suppress(psycopg.Error):  # a lost connection rolls back
                        connection.execute("ROLLBACK")
                raise
            self._local.tx = None
            if tx.begun:
                cursor.execute("COMMIT")
        for session_id, head in tx.heads.items():  # committed
            self._heads.set(session_id, head)

    def _lock(self, tx: _Transaction, session_id: str) -> None:
        """Lock ``session_id``'s row for the rest of ``tx`` and keep its head (none: no such
        session). The transaction's ``BEGIN`` goes out in the same round trip when it is the
        first statement (one simple-protocol query of the two): a turn's start reads the
        metadata, the tail and the head through this one read of the locked row
        (docs/architecture.md)."""
        if tx.begun:
            tx.cursor.execute(_HEAD + " FOR UPDATE", (self.owner, session_id))
        else:
            # Both statements in one simple-protocol query, the values quoted by psycopg: a
            # pipeline would end in a second round trip (its closing Sync). Marked begun
            # first: if the SELECT fails after the BEGIN, the transaction is rolled back.
            tx.begun = True
            tx.cursor.execute(
                _BEGIN_AND_LOCK.format(sql.Literal(self.owner), sql.Literal(session_id)),
                prepare=False,
            )
            tx.cursor.nextset()  # past BEGIN's result to the row's
        row = tx.cursor.fetchone()
        tx.locked.add(session_id)
        if row is not None:
            tx.heads[session_id] = _head(session_id, row)

    def _held_head(self, session_id: str) -> _Head | None:
        """The head of ``session_id`` if this thread's transaction holds its row's lock."""
        tx: _Transaction | None = getattr(self._local, "tx", None)
        return None if tx is None else tx.heads.get(session_id)

    def _drop_held_head(self, session_id: str) -> None:
        """Forget the held head of ``session_id`` (a write other than an append changed the
        row: the next append in the transaction reads it again)."""
        tx: _Transaction | None = getattr(self._local, "tx", None)
        if tx is not None:
            tx.heads.pop(session_id, None)

    def _notify(self, cursor: Any, session_id: str, seq: int) -> None:
        payload = json.dumps({"s": session_id, "q": seq})
        cursor.execute("SELECT pg_notify(%s, %s)", (self._channel, payload))

    # -- sessions ----------------------------------------------------------------------------

    def create_session(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Add a session to the index. Raises :class:`SessionExistsError` if the id is taken."""
        record = dict(metadata)
        session_id = record["sessionId"]
        with self._cursor(write=True) as cursor:
            cursor.execute(
                "INSERT INTO copilot_sessions (owner, session_id, meta) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING RETURNING 1",
                (self.owner, session_id, Jsonb(exact_ints_marked(record), _dumps)),
            )
            if cursor.fetchone() is None:
                raise SessionExistsError(session_id)
        return record

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """The session's metadata, or None."""
        with self._cursor(session_id) as cursor:
            held = self._held_head(session_id)
            if held is not None:  # locked by this thread's transaction: current
                return copy.deepcopy(held.meta)
            cursor.execute(
                f"SELECT meta::text FROM copilot_sessions WHERE {_SESSION}",
                (self.owner, session_id),
            )
            row = cursor.fetchone()
        return None if row is None else _metadata(session_id, row[0])

    def update_session(self, session_id: str, **fields: Any) -> dict[str, Any]:
        """Set metadata fields of a stored session and return the new metadata."""
        with self._cursor(session_id, write=True) as cursor:
            cursor.execute(
                "UPDATE copilot_sessions SET meta = meta || %s, rev = DEFAULT "
                f"WHERE {_SESSION} RETURNING meta::text",
                (Jsonb(exact_ints_marked(fields), _dumps), self.owner, session_id),
            )
            self._drop_held_head(session_id)
            row = cursor.fetchone()
            if row is None:
                raise SessionNotFoundError(session_id)
        return _metadata(session_id, row[0])

    def list_sessions(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Sessions' metadata (this owner's), most recently modified first; with ``limit``,
        the newest ``limit`` only (an index range scan on ``(owner, modified)``)."""
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT session_id, meta::text FROM copilot_sessions WHERE owner = %s "
                "ORDER BY modified DESC LIMIT %s",
                (self.owner, limit),
            )
            return [_metadata(session_id, meta) for session_id, meta in cursor.fetchall()]

    def delete_session(self, session_id: str) -> int:
        """Remove a session and all its events in one transaction. Returns the events removed."""
        self._heads.pop(session_id)
        with self._cursor(session_id, write=True) as cursor:
            cursor.execute(
                f"DELETE FROM copilot_sessions WHERE {_SESSION} RETURNING 1",
                (self.owner, session_id),
            )
            self._drop_held_head(session_id)
            if cursor.fetchone() is None:
                raise SessionNotFoundError(session_id)
            cursor.execute(f"DELETE FROM copilot_events WHERE {_SESSION}", (self.owner, session_id))
            removed = cursor.rowcount
            cursor.execute(f"DELETE FROM copilot_search WHERE {_SESSION}", (self.owner, session_id))
            self._release_blobs(cursor, session_id)
            self._notify(cursor, session_id, 0)
        return removed

    def fork_session(
        self,
        source_id: str,
        metadata: Mapping[str, Any],
        copy: Callable[[list[Event]], list[Event]],
    ) -> dict[str, Any]:
        """Create a session holding ``copy(source's events)`` in one transaction; see
        :meth:`copilot.store_base.Store.fork_session`."""
        new_id = metadata["sessionId"]
        with self.transaction(), self._cursor(source_id) as cursor:
            head = self._held_head(source_id) or self._read_head(cursor, source_id, lock=True)
            # Turns still open in the source are left out with every event naming them: the
            # fork holds completed turns only (as the diskcache store does).
            open_ids = set(head.open_turns)
            events = [
                e
                for e in self._read(cursor, source_id, 0, parse=True)
                if e.id not in open_ids and e.data.get("messageId") not in open_ids
            ]
            copies = copy(events)
            record = {**metadata, **copied_counts(copies)}
            self.create_session(record)
            self.append(new_id, copies, update=lambda meta: meta.update(record))
            self._share_blobs(cursor, source_id, new_id)
        return self.get_session(new_id) or record

    def rename_session(self, old_id: str, new_id: str) -> dict[str, Any]:
        """Give session ``old_id`` the id ``new_id`` in one transaction (its row and its
        events move together); see :meth:`copilot.store.EventStore.rename_session`."""
        self._heads.pop(old_id)
        with self.transaction(), self._cursor(old_id) as cursor:
            cursor.execute(f"SELECT 1 FROM copilot_sessions WHERE {_SESSION}", (self.owner, old_id))
            if cursor.fetchone() is None:
                raise SessionNotFoundError(old_id)
            cursor.execute(
                "INSERT INTO copilot_sessions (owner, session_id, meta, seq, last_id, open_turns) "
                "SELECT owner, %s, meta || jsonb_build_object('sessionId', %s::text), seq, "
                f"last_id, open_turns FROM copilot_sessions WHERE {_SESSION} "
                "ON CONFLICT DO NOTHING RETURNING meta::text",
                (new_id, new_id, self.owner, old_id),
            )
            row = cursor.fetchone()
            if row is None:
                raise SessionExistsError(new_id)
            cursor.execute(
                f"UPDATE copilot_events SET session_id = %s WHERE {_SESSION}",
                (new_id, self.owner, old_id),
            )
            cursor.execute(
                f"UPDATE copilot_blob_refs SET session_id = %s WHERE {_SESSION}",
                (new_id, self.owner, old_id),
            )
            cursor.execute(f"DELETE FROM copilot_sessions WHERE {_SESSION}", (self.owner, old_id))
            self._drop_held_head(old_id)
            self._notify(cursor, old_id, 0)
        return _metadata(new_id, row[0])

    # -- attachments: bytes once per (owner, sha256), one reference row per session ----------

    def put_blobs(self, session_id: str, blobs: Iterable[tuple[str, str, bytes]]) -> None:
        """Store ``(sha256, mimeType, data)`` attachments for ``session_id``; bytes already
        stored for this owner are not sent again. The blob's row is locked (or inserted)
        before the reference is added, so a concurrent delete of the last other reference
        cannot remove it under this one."""
        with self._cursor(session_id, write=True) as cursor:
            cursor.execute(
                f"SELECT 1 FROM copilot_sessions WHERE {_SESSION}", (self.owner, session_id)
            )
            if cursor.fetchone() is None:
                raise SessionNotFoundError(session_id)
            for sha256, mime_type, data in blobs:
                while True:
                    cursor.execute(
                        "SELECT 1 FROM copilot_blobs WHERE owner = %s AND sha256 = %s FOR UPDATE",
                        (self.owner, sha256),
                    )
                    if cursor.fetchone() is not None:
                        break
                    cursor.execute(
                        "INSERT INTO copilot_blobs (owner, sha256, mime_type, size, data) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                        (self.owner, sha256, mime_type, len(data), data),
                    )
                    if cursor.fetchone() is not None:
                        break
                cursor.execute(
                    "INSERT INTO copilot_blob_refs (owner, session_id, sha256) "
                    "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (self.owner, session_id, sha256),
                )

    def get_blob(self, sha256: str) -> bytes | None:
        """The bytes stored under ``sha256`` for this owner (None: not stored)."""
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT data FROM copilot_blobs WHERE owner = %s AND sha256 = %s",
                (self.owner, sha256),
            )
            row = cursor.fetchone()
        return None if row is None else bytes(row[0])

    def blob_refs(self, sha256: str) -> list[str]:
        """The sessions (of this owner) that reference the attachment ``sha256``, sorted (by
        Python, not the database's collation: the same order on both stores)."""
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT session_id FROM copilot_blob_refs WHERE owner = %s AND sha256 = %s",
                (self.owner, sha256),
            )
            return sorted(row[0] for row in cursor.fetchall())

    def _release_blobs(self, cursor: Any, session_id: str) -> None:
        """Drop ``session_id``'s references and the bytes no reference is left for (inside
        delete_session's transaction; the blobs' rows are locked first, then checked by a
        new statement that sees every reference committed meanwhile)."""
        cursor.execute(
            f"DELETE FROM copilot_blob_refs WHERE {_SESSION} RETURNING sha256",
            (self.owner, session_id),
        )
        released = sorted({row[0] for row in cursor.fetchall()})
        if not released:
            return
        cursor.execute(
            "SELECT 1 FROM copilot_blobs WHERE owner = %s AND sha256 = ANY(%s) ORDER BY sha256 "
            "FOR UPDATE",
            (self.owner, released),
        )
        cursor.execute(
            "DELETE FROM copilot_blobs b WHERE b.owner = %s AND b.sha256 = ANY(%s) AND NOT "
            "EXISTS (SELECT 1 FROM copilot_blob_refs r WHERE r.owner = b.owner AND "
            "r.sha256 = b.sha256)",
            (self.owner, released),
        )

    def _share_blobs(self, cursor: Any, source_id: str, new_id: str) -> None:
        """Give a fork the source's references (inside fork_session's transaction)."""
        cursor.execute(
            "INSERT INTO copilot_blob_refs (owner, session_id, sha256) SELECT owner, %s, sha256 "
            f"FROM copilot_blob_refs WHERE {_SESSION} ON CONFLICT DO NOTHING",
            (new_id, self.owner, source_id),
        )

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
        is always set). Raises :class:`SessionNotFoundError` if the session was deleted.
        """
        events = list(events)
        tx: _Transaction | None = getattr(self._local, "tx", None)
        if tx is not None:  # the row is locked: the head held is current, the write succeeds
            with self._cursor(session_id) as cursor:
                head = tx.heads.get(session_id) or self._read_head(cursor, session_id, lock=True)
                tx.heads[session_id] = self._write(cursor, session_id, head, events, update)
            return events
        # One statement on the head this store saw last (no read at all when it is current):
        # a single round trip in the common case of one writer per session.
        for _ in range(_OPTIMISTIC_TRIES):
            head = self._heads.get(session_id)
            with self._append_cursor() as cursor:
                if head is None:
                    head = self._read_head(cursor, session_id)
                written = self._write(cursor, session_id, head, events, update)
            if written is not None:
                self._heads.set(session_id, written)
                return events
            self._heads.pop(session_id)
        with self.transaction():  # a busy session: queue on its row lock instead
            return self.append(session_id, events, update=update)

    def _read_head(self, cursor: Any, session_id: str, *, lock: bool = False) -> _Head:
        cursor.execute(_HEAD + (" FOR UPDATE" if lock else ""), (self.owner, session_id))
        row = cursor.fetchone()
        if row is None:
            self._heads.pop(session_id)
            raise SessionNotFoundError(session_id)
        return _head(session_id, row)

    def _write(
        self,
        cursor: Any,
        session_id: str,
        head: _Head,
        events: list[Event],
        update: Callable[[dict[str, Any]], None] | None,
    ) -> _Head | None:
        """Append ``events`` after ``head`` in one statement; None if the head has moved."""
        seq, last, open_turns, meta = head.seq, head.last_id, dict(head.open_turns), dict(head.meta)
        base, values = seq, []
        for event in events:
            seq += 1
            renumber(event, last, seq)  # a read event is decoded before it is renumbered
            last = event.id
            values.append(event.to_dict())  # marked below if an integer is over 64 bits
            message_id = event.data.get("messageId")
            if event.type == EventType.ASSISTANT_TURN_START and isinstance(message_id, str):
                open_turns[message_id] = seq
            elif event.type in (EventType.ASSISTANT_TURN_END, EventType.ABORT):
                open_turns.pop(message_id, None)
        if update is not None:
            update(meta)
        meta["modifiedTime"] = utc_now()
        rows, replaced = index_rows(events, meta)
        arg: dict[str, Any] = {"meta": meta, "open": open_turns}
        if rows:
            arg["docs"] = [dict(zip(_DOC_KEYS, row, strict=True)) for row in rows]
        try:  # the events' texts kept apart: they are also the rows _recent keeps
            texts: list[bytes] | None = [orjson.dumps(value) for value in values]
            payload = b'{"events":[' + b",".join(texts) + b"]," + orjson.dumps(arg)[1:]
        except TypeError:  # integers over 64 bits: each record holding one is marked
            texts = None
            marked = [exact_ints_marked(value) for value in values]
            payload = _dumps({**arg, "meta": exact_ints_marked(meta), "events": marked})
        arg["events"] = values
        params: dict[str, Any] = {
            "arg": Jsonb(arg, lambda _: payload),
            "seq": seq,
            "last": last,
            "owner": self.owner,
            "sid": session_id,
            "rev": head.rev,
            "base": base,
            "channel": self._channel,
            "payload": orjson.dumps({"s": session_id, "q": seq}).decode(),
        }
        if replaced:
            params["replaced"] = replaced
        cursor.execute(
            _APPEND_REPLACING if replaced else _APPEND_INDEXED if rows else _APPEND, params
        )
        row = cursor.fetchone()
        if row is None:
            return None
        self._remember(session_id, head, row[0], base, texts)
        return _Head(meta, seq, last, open_turns, row[0])

    def _remember(
        self, session_id: str, head: _Head, rev: int, base: int, texts: list[bytes] | None
    ) -> None:
        """Keep the events just appended after ``head`` (numbered from ``base + 1``), behind
        the ones kept before if those ended at ``head``, for :meth:`_recent_events`. A head
        that later reads at ``rev`` has exactly these as its newest events: revisions are
        random and new at every change, so a rolled-back append's never matches."""
        kept = self._recent.pop(session_id)
        if texts is None:  # an integer over 64 bits in an event: read it from the database
            return
        rows = [(base + i, text.decode()) for i, text in enumerate(texts, 1)]
        if kept is not None and kept.rev == head.rev and kept.rows and kept.rows[-1][0] == base:
            rows = kept.rows + rows
        rows, chars = rows[-_RECENT_EVENTS:], 0
        for start in range(len(rows) - 1, -1, -1):  # the newest that fit _RECENT_CHARS
            chars += len(rows[start][1])
            if chars > _RECENT_CHARS:
                rows = rows[start + 1 :]
                break
        if rows:
            self._recent.set(session_id, _Recent(rev, rows))

    def _recent_events(self, session_id: str, head: _Head, after: int) -> list[Event] | None:
        """The events past ``after`` up to ``head`` if this store appended all of them last
        (None: read them from the database)."""
        kept = self._recent.get(session_id)
        if (
            kept is None
            or kept.rev != head.rev
            or not kept.rows
            or kept.rows[-1][0] != head.seq
            or kept.rows[0][0] > after + 1
        ):
            return None
        return _events(session_id, [row for row in kept.rows if row[0] > after])

    def last_seq(self, session_id: str) -> int:
        """The sequence number of the session's newest event (0 for none)."""
        with self._cursor(session_id) as cursor:
            held = self._held_head(session_id)
            if held is not None:
                return held.seq
            cursor.execute(
                f"SELECT seq FROM copilot_sessions WHERE {_SESSION}", (self.owner, session_id)
            )
            row = cursor.fetchone()
        return 0 if row is None else row[0]

    def _read(
        self,
        cursor: Any,
        session_id: str,
        after: int,
        limit: int | None = None,
        *,
        parse: bool = False,
    ) -> list[Event]:
        """The events with ``seq > after`` (at most ``limit``), oldest first.

        A long unlimited read (more than :data:`_READ_CHUNK` events past ``after`` by the head
        this store remembers, else by its last read of the session, else by the session's row:
        one more round trip) is sent as pipelined range queries,
        each answered by one row: the range's events as the text of a JSON array, handed to
        :func:`copilot.events.stored_events` (each event parsed when first used, as the
        diskcache store's rows). The client takes in one range while the server still renders
        the next ones' ``jsonb`` as text: the two run on different cores instead of one after
        the other (a 50,000-event read, docs/architecture.md). The last range is open-ended,
        so events past a stale remembered head are read too; a range whose numbers have a gap
        (only a write outside this package makes one) is read again row by row and numbered
        as stored. Shorter reads and ``limit`` reads are one query, parsed at once; so is every
        range with ``parse`` (for callers that use every event: fork, reindex): parsing 50,000
        events at once took 48 ms, creating them unparsed and then using all of them 73 ms.
        """
        last = None
        if limit is None:
            head = self._heads.get(session_id)
            last = self._seen.get(session_id) if head is None else head.seq
            if last is None:
                cursor.execute(
                    f"SELECT seq FROM copilot_sessions WHERE {_SESSION}", (self.owner, session_id)
                )
                row = cursor.fetchone()
                last = None if row is None else row[0]
        if last is None or last - after <= _READ_CHUNK:
            cursor.execute(_RANGE + "ORDER BY seq LIMIT %s", (self.owner, session_id, after, limit))
            events = _events(session_id, cursor.fetchall())
            if events:
                self._seen.set(session_id, events[-1].seq)
            return events
        connection = cursor.connection
        parts: list[tuple[Any, int, int | None]] = []
        query, close = (_RANGE, "ORDER BY seq") if parse else (_RANGE_ROW, "ORDER BY seq) r")
        with paused_gc(), connection.pipeline():
            for low in range(after, last, _READ_CHUNK):
                high = low + _READ_CHUNK if low + _READ_CHUNK < last else None
                part = connection.cursor()
                if high is None:
                    part.execute(query + close, (self.owner, session_id, low))
                else:
                    part.execute(
                        query + "AND seq <= %s " + close, (self.owner, session_id, low, high)
                    )
                parts.append((part, low, high))
            events: list[Event] = []
            gapped: list[tuple[int, int, int | None]] = []
            for part, low, high in parts:
                if parse:
                    events += _events(session_id, part.fetchall())
                    part.close()
                    continue
                first, count, final, text = part.fetchone()
                part.close()
                if not count:
                    continue
                if final - first + 1 == count:  # a whole range: its events decode when used
                    where = f"{session_id} events {first}-{final}"
                    events += stored_events([(where, first, "[" + text + "]", count)])
                else:  # a log with a gap (written outside the package): numbered row by row
                    gapped.append((len(events), low, high))
        for index, low, high in reversed(gapped):
            cursor.execute(
                _RANGE + "AND seq <= %s ORDER BY seq",
                (self.owner, session_id, low, _NO_SEQ if high is None else high),
            )
            events[index:index] = _events(session_id, cursor.fetchall())
        if events:
            self._seen.set(session_id, events[-1].seq)
        return events

    def read_events(self, session_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        """The session's events with ``seq > after``, oldest first; at most ``limit``."""
        with self._cursor(session_id) as cursor:
            held = self._held_head(session_id)
            if held is not None:  # locked by this thread's transaction
                if after >= held.seq:
                    return []
                kept = self._recent_events(session_id, held, after)
                if kept is not None:
                    return kept if limit is None else kept[:limit]
            return self._read(cursor, session_id, after, limit)

    def read_last(self, session_id: str, count: int) -> list[Event]:
        """The session's newest ``count`` events, oldest first (one index range read)."""
        with self._cursor(session_id) as cursor:
            cursor.execute(
                f"SELECT seq, event::text FROM copilot_events WHERE {_SESSION} "
                "ORDER BY seq DESC LIMIT %s",
                (self.owner, session_id, count),
            )
            return _events(session_id, cursor.fetchall()[::-1])

    def page(
        self, session_id: str, after: int = 0, limit: int | None = None, last: int | None = None
    ) -> list[Event]:
        """``read_events(after, limit)``, or with ``last`` the newest ``last`` events."""
        if last is not None:
            return self.read_last(session_id, last)
        return self.read_events(session_id, after, limit)

    def iter_events(self, session_id: str, after: int = 0, chunk: int = 1000) -> Iterator[Event]:
        """The session's events with ``seq > after``, oldest first, ``chunk`` at a time."""
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
        high = _NO_SEQ if before is None else before
        while True:
            with self._cursor(session_id) as cursor:
                cursor.execute(
                    f"SELECT seq, event::text FROM copilot_events WHERE {_SESSION} AND seq < %s "
                    "ORDER BY seq DESC LIMIT %s",
                    (self.owner, session_id, high, chunk),
                )
                rows = cursor.fetchall()
            yield from _events(session_id, rows)
            if len(rows) < chunk:
                return
            high = rows[-1][0]

    def open_turns(self, session_id: str) -> list[Event]:
        """The ``assistant.turn_start`` events with no end or abort yet, oldest first.

        The head row keeps the open turns' sequence numbers, so this reads only those events.
        """
        with self._cursor(session_id) as cursor:
            cursor.execute(
                f"SELECT seq, event::text FROM copilot_events WHERE {_SESSION} AND seq IN ("
                "SELECT value::bigint FROM copilot_sessions, jsonb_each_text(open_turns) "
                f"WHERE {_SESSION}) ORDER BY seq",
                (self.owner, session_id, self.owner, session_id),
            )
            return _events(session_id, cursor.fetchall())

    # -- integrity -------------------------------------------------------------------------

    def check(self) -> list[dict[str, Any]]:
        """Damage in this owner's sessions, as ``{"kind", "sessionId", "key", "detail",
        "repairable"}`` dicts (the diskcache store's format; empty for a sound store).

        The database enforces most of what the diskcache store must check (JSON values,
        unique sequence numbers, atomic writes); what is left, which only a write outside this
        package can cause, is a head that does not match its log (``kind: "head"``) and an
        event row that is not an event (``kind: "corrupt-record"``, not repairable: the row
        stays for a person to look at; a long read raises when that event is first used).
        """
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT s.session_id, s.seq, coalesce(max(e.seq), 0), count(e.seq) "
                "FROM copilot_sessions s LEFT JOIN copilot_events e ON e.owner = s.owner "
                "AND e.session_id = s.session_id WHERE s.owner = %s "
                "GROUP BY s.session_id, s.seq HAVING s.seq <> coalesce(max(e.seq), 0) "
                "OR count(e.seq) <> coalesce(max(e.seq), 0)",
                (self.owner,),
            )
            rows = cursor.fetchall()
            cursor.execute(_NOT_EVENTS, (self.owner,))
            corrupt = cursor.fetchall()
        damage = [
            {
                "kind": "head",
                "sessionId": session_id,
                "key": None,
                "detail": (
                    f"the head says {head} events; the log holds {count} with the last "
                    f"numbered {last}"
                ),
                "repairable": head != last,
            }
            for session_id, head, last, count in rows
        ]
        return damage + [
            {
                "kind": "corrupt-record",
                "sessionId": session_id,
                "key": f"{session_id} event {seq}",
                "detail": "not an event: an object with string id, type and timestamp and "
                "an object or null as data",
                "repairable": False,
            }
            for session_id, seq in corrupt
        ]

    def repair(self) -> list[dict[str, Any]]:
        """Move each damaged head to its log's last event (no event is deleted); return the
        damage found, each with ``"repaired"``."""
        damage = self.check()
        for item in damage:
            item["repaired"] = False
            if not item["repairable"]:
                continue
            session_id = item["sessionId"]
            self._heads.pop(session_id)
            with self._cursor(session_id, write=True) as cursor:
                cursor.execute(
                    "UPDATE copilot_sessions AS s SET seq = e.seq, last_id = e.event ->> 'id', "
                    "rev = DEFAULT FROM (SELECT seq, event FROM copilot_events "
                    f"WHERE {_SESSION} ORDER BY seq DESC LIMIT 1) AS e "
                    "WHERE s.owner = %s AND s.session_id = %s",
                    (self.owner, session_id, self.owner, session_id),
                )
                self._drop_held_head(session_id)
                item["repaired"] = cursor.rowcount == 1
        return damage

    # -- search (copilot._pg_search) ---------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        session_id: str | None = None,
        model: str | None = None,
        since: Any = None,
        until: Any = None,
        limit: int = 20,
        progress: Progress | None = None,
    ) -> list[dict[str, Any]]:
        """The best ``limit`` hits for ``query``, best first: the syntax, filters and hit dicts
        of :meth:`copilot.search.SearchIndex.search` (``rank`` is ``-ts_rank_cd``: lower is
        better). Sessions stored before the index existed are indexed first (``progress``)."""
        search = SearchQuery(self.owner, query, session_id, model, since, until, limit)
        self._index_unindexed(progress)
        with self._cursor() as cursor:
            cursor.execute(search.statement, search.params)
            return search.hits(cursor.fetchall())

    def reindex(self, progress: Progress | None = None) -> int:
        """Rebuild this owner's search index from the logs, a session per transaction; return
        the entries indexed. ``progress(done, total)`` counts events read."""
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT session_id, seq FROM copilot_sessions WHERE owner = %s", (self.owner,)
            )
            return self._index_sessions(cursor.fetchall(), progress)

    def _index_unindexed(self, progress: Progress | None) -> None:
        """Index the sessions stored before the index existed (schema migration 2)."""
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT session_id, seq FROM copilot_sessions WHERE owner = %s AND unindexed",
                (self.owner,),
            )
            pending = cursor.fetchall()
        if pending:
            self._index_sessions(pending, progress)

    def _index_sessions(self, sessions: list[tuple[str, int]], progress: Progress | None) -> int:
        total, done, indexed = sum(seq for _, seq in sessions), 0, 0
        if progress is not None:
            progress(0, total)
        for session_id, _ in sessions:
            # the session's row stays locked meanwhile: its appends wait, none is missed
            with self.transaction(), self._cursor(session_id) as cursor:
                cursor.execute(
                    f"DELETE FROM copilot_search WHERE {_SESSION}", (self.owner, session_id)
                )
                events = self._read(cursor, session_id, 0, parse=True)
                rows, replaced = index_rows(events, {})  # session.start names the model
                cursor.executemany(
                    "INSERT INTO copilot_search (owner, session_id, seq, event_id, message_id, "
                    "type, ts, model, replaced, body, doc) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::tsvector)",
                    [(self.owner, session_id, *row) for row in rows],
                )
                cursor.execute(
                    "UPDATE copilot_search SET replaced = true WHERE owner = %s "
                    "AND session_id = %s AND message_id = ANY(%s::text[])",
                    (self.owner, session_id, replaced),
                )
                cursor.execute(
                    f"UPDATE copilot_sessions SET unindexed = false WHERE {_SESSION}",
                    (self.owner, session_id),
                )
            done, indexed = done + len(events), indexed + len(rows)
            if progress is not None:
                progress(min(done, total), total)
        return indexed

    # -- change feed (LISTEN / NOTIFY) -------------------------------------------------------

    def subscribe(self, callback: Callable[[str, int], None]) -> _Subscription:
        """Call ``callback(session_id, last_seq)`` after each commit of new events by any
        writer of this owner (``last_seq`` 0: the session was deleted).

        One listener thread and connection per store serve every subscriber; it reconnects by
        itself. Returns a handle: ``close()`` it (or use it in ``with``) to unsubscribe.
        """
        with self._listener_lock:
            if self._listener is None:
                self._listener = _Listener(self._conninfo, self._channel)
            listener = self._listener
        return listener.add(callback)

    def wait_for_change(self, session_id: str, after: int, timeout: float | None) -> int:
        """Block until the session's ``last_seq`` exceeds ``after`` or ``timeout`` seconds pass;
        return the ``last_seq`` seen. Woken by ``NOTIFY``, never by polling."""
        changed = threading.Event()

        def on_change(changed_id: str, seq: int) -> None:
            if changed_id == session_id:
                changed.set()

        with self.subscribe(on_change) as subscription:
            subscription.ready.wait(self._timeout)
            seq = self.last_seq(session_id)  # after LISTEN: a commit in between is not missed
            if seq > after:
                return seq
            changed.wait(timeout)
        return self.last_seq(session_id)


class _Subscription(contextlib.AbstractContextManager):
    """One subscriber of a :class:`_Listener`; ``close()`` removes it."""

    def __init__(self, listener: _Listener, callback: Callable[[str, int], None]) -> None:
        self._listener = listener
        self.callback = callback
        #: set once the listener's LISTEN is active (notifications from then on arrive)
        self.ready = listener.listening

    def close(self) -> None:
        """Stop calling the callback."""
        self._listener.remove(self)

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Listener:
    """A thread with its own connection, ``LISTEN``-ing on the owner's channel."""

    def __init__(self, conninfo: str, channel: str) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._subscribers: list[_Subscription] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name="copilot-pg-listen", daemon=True)
        self._thread.start()

    def add(self, callback: Callable[[str, int], None]) -> _Subscription:
        subscription = _Subscription(self, callback)
        with self._lock:
            self._subscribers.append(subscription)
        return subscription

    def remove(self, subscription: _Subscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self.listening.set()
                    while not self._stopping.is_set():
                        for notice in conn.notifies(timeout=0.5):
                            self._deliver(notice.payload)
            except psycopg.Error:
                # The server went away: listen again once it is back. Commits in between are
                # not announced; ``listening`` is clear meanwhile, for callers that must know.
                self.listening.clear()
                self._stopping.wait(0.5)

    def _deliver(self, payload: str) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        message = json.loads(payload)
        for subscription in subscribers:
            try:
                subscription.callback(message["s"], message["q"])
            except Exception:  # one subscriber's bug must not stop the others' feed
                pass


def _loads(text: str) -> Any:
    # jsonb is read as text and parsed here: psycopg's jsonb loader took ~5x as long for a
    # 50,000-event read (bytes in, encoding detection per value). As every store reads its
    # records: copilot.events.load_record (orjson; json for marked records, exact integers).
    return load_record(text, "a stored record")


def _events(session_id: str, rows: list[tuple[int, str]]) -> list[Event]:
    """Events from ``(seq, jsonb text)`` rows; StoreCorruptedError for a record that is not one.

    The rows are parsed as one JSON array: one ``json.loads`` call instead of one per event
    (a third of a 50,000-event read was the per-call overhead). jsonb's text output is always
    valid JSON, so joining rows cannot change what any of them means.
    """
    with paused_gc():  # many objects, no cycles: each collector pass would only cost time
        return _build_events(session_id, rows)


def _build_events(session_id: str, rows: list[tuple[int, str]]) -> list[Event]:
    """The events of ``rows``, built by :func:`copilot.events.build_stored_events` as every
    store builds them."""
    values = _loads("[" + ",".join(text for _, text in rows) + "]")
    try:
        return build_stored_events((seq, item) for (seq, _), item in zip(rows, values, strict=True))
    except NotAnEventError as error:
        raise StoreCorruptedError(
            f"event {error.seq} of session {session_id!r} is not an event"
        ) from None


def _head(session_id: str, row: tuple[str, int, str | None, str, int]) -> _Head:
    """A session row's head from ``_HEAD``'s columns."""
    meta, seq, last_id, open_turns, rev = row
    return _Head(_metadata(session_id, meta), seq, last_id, _loads(open_turns), rev)


def _metadata(session_id: str, text: str) -> dict[str, Any]:
    value = _loads(text)
    if not (isinstance(value, dict) and isinstance(value.get("sessionId"), str)):
        raise StoreCorruptedError(f"the metadata of session {session_id!r} is not session metadata")
    return value
