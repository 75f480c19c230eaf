"""The shared store on a real PostgreSQL (issue 16), and the store contract both stores keep.

The contract tests are parametrized over ``diskcache`` and ``postgres``; the rest drives
PostgreSQL only: the schema's key rule read from the live catalog, migrations, owners and
row-level security with two database roles, LISTEN/NOTIFY across processes, faults (a
connection killed mid-transaction, the server restarted, the pool exhausted), two "nodes"
sharing one session through ``CopilotClient(store=...)``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from store_workers import Worker, client_args, open_store

from copilot import CopilotClient
from copilot.errors import (
    ConfigError,
    SessionExistsError,
    SessionNotFoundError,
    StoreConnectionError,
    StoreCorruptedError,
    StoreError,
    StoreSchemaError,
    StoreTimeoutError,
)
from copilot.events import EXACT_INTS_KEY, Event, EventType
from copilot.store import EventStore
from copilot.store_base import ChangeFeed, Store

pytestmark = pytest.mark.timeout(300)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def pg_url(postgres_server: Any) -> str:
    """A fresh, empty database on the shared test server."""
    return postgres_server.new_database()


@pytest.fixture(params=["diskcache", "postgres"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """How to open the store under test, in this process or a worker."""
    if request.param == "diskcache":
        return {"kind": "diskcache", "path": str(tmp_path / "home" / "sessions")}
    url = request.getfixturevalue("pg_url")
    return {"kind": "postgres", "url": url, "owner": "tester"}


@pytest.fixture
def store(store_spec: dict[str, Any]) -> Iterator[Any]:
    """The store under test, opened in this process."""
    opened = open_store(store_spec)
    yield opened
    opened.close()


@pytest.fixture
def two_stores(pg_url: str) -> Iterator[tuple[Any, Any]]:
    """Two PostgreSQL stores of one owner on one database, a pooled connection each (so a
    test can trace the one connection a store uses)."""
    from copilot.store_postgres import PostgresStore

    first = PostgresStore(pg_url, owner="o", max_size=1)
    second = PostgresStore(pg_url, owner="o", max_size=1)
    yield first, second
    first.close()
    second.close()


def _meta(session_id: str, modified: str = "2026-01-01T00:00:00+00:00") -> dict[str, Any]:
    return {"sessionId": session_id, "modifiedTime": modified, "messageCount": 0, "turnCount": 0}


def _events(n: int, prefix: str = "e") -> list[Event]:
    return [Event(EventType.USER_MESSAGE, {"content": f"{prefix}{i}"}) for i in range(n)]


def _assert_usable_and_whole(session: Any, prompt: str) -> None:
    """The session answers a new turn, and its log has no gap (seq 1, 2, ... n)."""
    reply = session.send_and_wait(prompt=prompt, timeout=60)
    assert reply.data.content == f"echo: {prompt}"
    seqs = [e.seq for e in session.get_messages()]
    assert seqs == list(range(1, len(seqs) + 1))


def _append_elsewhere(**args: Any) -> None:
    """Run one ``append`` worker (another process) to its end: READY, GO, DONE."""
    worker = Worker("append", **args)
    try:
        worker.expect("READY")
        worker.send("GO")
        worker.expect("DONE")
    finally:
        worker.close()


# -- the contract, on both stores --------------------------------------------------------------


def test_the_postgres_store_mirrors_the_diskcache_store_and_the_protocol() -> None:
    import inspect

    from copilot.store_postgres import PostgresStore

    members = [
        name for name, value in vars(Store).items() if callable(value) and not name.startswith("_")
    ]
    assert {"append", "transaction", "open_turns", "fork_session", "close"} <= set(members)
    assert {"put_blobs", "get_blob", "blob_refs", "rename_session"} <= set(members)
    for name in members:
        assert callable(getattr(PostgresStore, name, None)), name
        if hasattr(EventStore, name):  # the diskcache store's parameters, names and defaults
            ours = list(inspect.signature(getattr(PostgresStore, name)).parameters.values())
            theirs = list(inspect.signature(getattr(EventStore, name)).parameters.values())
            assert [(p.name, p.kind, p.default) for p in ours[: len(theirs)]] == [
                (p.name, p.kind, p.default) for p in theirs
            ], name
            # parameters the diskcache store of this branch lacks are optional
            assert all(p.default is not inspect.Parameter.empty for p in ours[len(theirs) :])
    for name in ("subscribe", "wait_for_change"):
        assert callable(getattr(PostgresStore, name))


def test_attachments_are_stored_once_and_listed_by_their_sessions_in_order(store: Any) -> None:
    import hashlib

    data = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
    sha = hashlib.sha256(data).hexdigest()
    for name in ("zeta", "Alpha", "beta", "alpha"):
        store.create_session(_meta(name))
        store.put_blobs(name, [(sha, "image/png", data)])
    assert store.blob_refs(sha) == ["Alpha", "alpha", "beta", "zeta"]
    assert store.get_blob(sha) == data
    with pytest.raises(SessionNotFoundError):
        store.put_blobs("nowhere", [(sha, "image/png", data)])
    for name in ("zeta", "Alpha", "beta"):
        store.delete_session(name)
    assert store.blob_refs(sha) == ["alpha"] and store.get_blob(sha) == data
    store.delete_session("alpha")
    assert store.blob_refs(sha) == [] and store.get_blob(sha) is None


def test_a_nul_character_is_a_typed_error_and_nothing_is_stored(pg_url: str) -> None:
    from copilot.store_postgres import PostgresStore

    store = PostgresStore(pg_url, owner="tester")
    try:
        store.create_session(_meta("s"))
        with pytest.raises(StoreError, match="U\\+0000"):
            store.append("s", [Event(EventType.USER_MESSAGE, {"content": "a\x00b"})])
        assert store.read_events("s") == [] and store.last_seq("s") == 0
        assert store.append("s", _events(1))[0].seq == 1
    finally:
        store.close()


def test_sessions_index_create_get_update_list_delete(store: Any) -> None:
    store.create_session(_meta("old", "2026-01-01T00:00:00+00:00"))
    store.create_session(_meta("new", "2026-02-01T00:00:00+00:00"))
    with pytest.raises(SessionExistsError):
        store.create_session(_meta("old"))
    assert store.get_session("missing") is None
    assert store.update_session("old", summary="hi")["summary"] == "hi"
    assert store.get_session("old")["summary"] == "hi"
    with pytest.raises(SessionNotFoundError):
        store.update_session("missing", summary="x")
    assert [s["sessionId"] for s in store.list_sessions()] == ["new", "old"]
    store.append("old", _events(3))  # an append moves modifiedTime: "old" is now the newest
    assert [s["sessionId"] for s in store.list_sessions()] == ["old", "new"]
    assert store.delete_session("old") == 3
    assert store.get_session("old") is None and store.read_events("old") == []
    assert store.last_seq("old") == 0
    with pytest.raises(SessionNotFoundError):
        store.delete_session("old")
    assert [s["sessionId"] for s in store.list_sessions()] == ["new"]


def test_integers_over_64_bits_come_back_exactly_from_every_read(store: Any) -> None:
    """orjson reads an integer over 64 bits as a float (2**70 + 1 -> 1.1805916207174113e21):
    records holding one are marked when written and read with json, the mark removed."""
    big, small = 2**70 + 1, -(2**64) - 3
    store.create_session({**_meta("s"), "n": big})
    store.update_session("s", m=[small])
    written = store.append(
        "s",
        [
            Event(EventType.USER_MESSAGE, {"content": "big", "n": big, "nested": {"k": [small]}}),
            *_events(2),
        ],
        update=lambda record: record.update(u=big),
    )
    long = store.append("s", _events(300))  # a long read: the lazy/range paths
    for read in (
        store.read_events("s"),
        store.read_events("s", limit=2),
        store.read_last("s", 303),
    ):
        first = next(e for e in read if e.seq == 1)
        assert first.data["n"] == big and type(first.data["n"]) is int
        assert first.data["nested"] == {"k": [small]}
        assert EXACT_INTS_KEY not in first.to_dict() and first == written[0]
    assert store.read_events("s")[-1] == long[-1]
    for meta in (store.get_session("s"), store.list_sessions()[0], store.list_sessions(1)[0]):
        assert (meta["n"], meta["m"], meta["u"]) == (big, [small], big)
        assert EXACT_INTS_KEY not in meta


def test_append_numbers_events_and_chains_parents(store: Any) -> None:
    store.create_session(_meta("s"))
    first = store.append("s", _events(2, "a"), update=lambda m: m.update(turnCount=7))
    second = store.append("s", _events(3, "b"))
    assert [e.seq for e in first + second] == [1, 2, 3, 4, 5]
    assert first[0].parent_id is None
    assert [e.parent_id for e in (first + second)[1:]] == [e.id for e in (first + second)[:-1]]
    assert store.get_session("s")["turnCount"] == 7
    assert store.last_seq("s") == 5
    assert store.read_events("s") == first + second
    assert [e.seq for e in store.read_events("s", after=3)] == [4, 5]
    assert store.read_events("s", after=5) == []
    with pytest.raises(SessionNotFoundError):
        store.append("missing", _events(1))


def test_backward_reads_in_chunks_cross_chunk_borders(store: Any) -> None:
    store.create_session(_meta("s"))
    store.append("s", _events(10))
    assert [e.seq for e in store.iter_events_backwards("s", chunk=3)] == list(range(10, 0, -1))
    assert [e.seq for e in store.iter_events_backwards("s", before=5, chunk=2)] == [4, 3, 2, 1]
    assert [e.seq for e in store.iter_events_backwards("s", before=1)] == []


def test_transaction_rolls_back_everything_and_is_reentrant(store: Any) -> None:
    store.create_session(_meta("s"))
    store.append("s", _events(1))
    with pytest.raises(RuntimeError), store.transaction():
        with store.transaction():  # re-entrant: the inner block joins the outer
            store.append("s", _events(2))
        assert store.last_seq("s") == 3  # inside, the transaction sees its own writes
        raise RuntimeError("roll back")
    assert store.last_seq("s") == 1
    assert [e.seq for e in store.read_events("s")] == [1]


def test_a_transaction_keeps_other_writers_out_between_read_and_append(store: Any) -> None:
    store.create_session(_meta("s"))
    store.append("s", _events(1))
    other_done = threading.Event()
    results: list[int] = []

    def other_writer() -> None:
        stored = store.append("s", _events(1, "other"))
        results.append(stored[0].seq)
        other_done.set()

    with store.transaction():
        tail = store.read_events("s")
        thread = threading.Thread(target=other_writer)
        thread.start()
        # The other writer must wait for this transaction (generous: a loaded machine).
        assert not other_done.wait(0.5)
        mine = store.append("s", _events(1, "mine"))
        assert mine[0].parent_id == tail[-1].id and mine[0].seq == 2
    thread.join(30)
    assert results == [3]


def test_open_turns_are_the_unfinished_starts_oldest_first(store: Any) -> None:
    store.create_session(_meta("s"))

    def start(m: str) -> Event:
        return Event(EventType.ASSISTANT_TURN_START, {"messageId": m})

    store.append("s", [start("m1"), start("m2"), start("m3")])
    store.append("s", [Event(EventType.ASSISTANT_TURN_END, {"messageId": "m2"})])
    store.append("s", [Event(EventType.ABORT, {"messageId": "m3", "reason": "x"})])
    store.append("s", _events(5))
    assert [e.data["messageId"] for e in store.open_turns("s")] == ["m1"]
    store.append("s", [start("m4")])
    assert [(e.data["messageId"], e.seq) for e in store.open_turns("s")] == [("m1", 1), ("m4", 11)]
    assert store.open_turns("missing") == []


def test_fork_copies_events_and_counts_in_one_transaction(store: Any) -> None:
    store.create_session(_meta("src"))
    store.append(
        "src",
        [
            Event(EventType.USER_MESSAGE, {"content": "q"}),
            Event(EventType.ASSISTANT_MESSAGE, {"content": "a", "model": "m1"}),
            Event(EventType.USER_MESSAGE, {"content": "q2"}),
            # a turn still open in the source (its process runs): left out of the fork
            Event(EventType.USER_MESSAGE, {"content": "open"}, id="open-turn"),
            Event(EventType.ASSISTANT_TURN_START, {"messageId": "open-turn"}),
        ],
    )

    def copy(events: list[Event]) -> list[Event]:
        return [Event(e.type, dict(e.data)) for e in events]

    forked = store.fork_session("src", {**_meta("fork"), "messageCount": 99}, copy)
    assert (forked["messageCount"], forked["turnCount"]) == (3, 2)
    assert (forked["summary"], forked["lastModel"]) == ("q", "m1")
    assert store.open_turns("fork") == []
    assert [e.data["content"] for e in store.read_events("fork")] == ["q", "a", "q2"]
    assert [e.seq for e in store.read_events("fork")] == [1, 2, 3]
    with pytest.raises(SessionNotFoundError):
        store.fork_session("missing", _meta("f2"), copy)
    with pytest.raises(SessionExistsError):
        store.fork_session("src", _meta("fork"), copy)

    def broken(events: list[Event]) -> list[Event]:
        raise RuntimeError("the copy failed half-way")

    with pytest.raises(RuntimeError):
        store.fork_session("src", _meta("f3"), broken)
    assert store.get_session("f3") is None and store.read_events("f3") == []


def test_paged_reads_and_the_newest_sessions(store: Any) -> None:
    for i in range(5):
        store.create_session(_meta(f"s{i}", f"2026-01-0{i + 1}T00:00:00+00:00"))
    store.append("s0", _events(7))
    assert [s["sessionId"] for s in store.list_sessions(limit=2)] == ["s0", "s4"]
    assert [e.seq for e in store.read_events("s0", after=2, limit=3)] == [3, 4, 5]
    assert [e.seq for e in store.read_last("s0", 3)] == [5, 6, 7]
    assert [e.seq for e in store.page("s0", last=2)] == [6, 7]
    assert [e.seq for e in store.page("s0", after=5)] == [6, 7]
    assert [e.seq for e in store.iter_events("s0", after=1, chunk=2)] == [2, 3, 4, 5, 6, 7]


def test_concurrent_writers_in_four_processes_get_gap_free_numbers(
    store: Any, store_spec: dict[str, Any]
) -> None:
    store.create_session(_meta("s"))
    workers = [Worker("append", store=store_spec, session="s", worker=w, n=25) for w in range(4)]
    try:
        for worker in workers:
            worker.expect("READY")
        for worker in workers:
            worker.send("GO")
        for worker in workers:
            worker.expect("DONE", timeout=120)
    finally:
        for worker in workers:
            worker.close()
    events = store.read_events("s")
    assert [e.seq for e in events] == list(range(1, 201))
    assert [e.parent_id for e in events[1:]] == [e.id for e in events[:-1]]
    # Each batch is contiguous (atomic) and each writer's batches keep their order.
    for first, second in zip(events[::2], events[1::2], strict=True):
        assert (first.data["w"], first.data["i"]) == (second.data["w"], second.data["i"])
    for w in range(4):
        assert [e.data["i"] for e in events[::2] if e.data["w"] == w] == list(range(25))
    assert Counter(e.data["w"] for e in events) == {0: 50, 1: 50, 2: 50, 3: 50}


def test_kill_9_mid_turn_then_resume_marks_the_turn_and_goes_on(
    store_spec: dict[str, Any], tmp_path: Path
) -> None:
    args = client_args(store_spec, str(tmp_path / "node"))
    setup = CopilotClient(**args, fallback_model="echo")
    setup.create_session(session_id="s", model="echo")
    setup.stop(timeout=10)
    worker = Worker("hang", store=store_spec, home=str(tmp_path / "dead"), session="s")
    try:
        worker.expect("STARTED")
        worker.kill()
    finally:
        worker.close()
    client = CopilotClient(**args, fallback_model="echo")
    try:
        session = client.resume_session("s")
        types = [e.type for e in session.get_messages()]
        assert types[-3:] == [
            EventType.ABORT,
            EventType.ASSISTANT_TURN_END,
            EventType.SESSION_RESUME,
        ]
        _assert_usable_and_whole(session, "after the crash")
    finally:
        client.stop(timeout=10)


# -- PostgreSQL: schema, migrations, owners ------------------------------------------------------


def _connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def test_schema_keys_every_table_by_owner_and_session_with_nothing_spanning_sessions(
    pg_url: str,
) -> None:
    from copilot.store_postgres import PostgresStore

    PostgresStore(pg_url, owner="a").close()
    with _connect(pg_url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = "
                "'public'::regnamespace ORDER BY relname"
            )
        ]
        assert tables == [
            "copilot_blob_refs",
            "copilot_blobs",
            "copilot_events",
            "copilot_schema",
            "copilot_search",
            "copilot_sessions",
        ]
        for table in tables:
            key = [
                r[0]
                for r in conn.execute(
                    "SELECT a.attname FROM pg_index i CROSS JOIN LATERAL "
                    "unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) JOIN pg_attribute a "
                    "ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                    "WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY k.n",
                    (table,),
                )
            ]
            if table == "copilot_schema":  # the version table: a Citus reference table
                assert key == ["version"]
            elif table == "copilot_blobs":  # an owner's attachments, shared by its sessions
                assert key == ["owner", "sha256"]
            else:
                assert key[:2] == ["owner", "session_id"], (table, key)
            # Every other unique index leads with the same key (Citus needs the distribution
            # column in each unique constraint).
            for (columns,) in conn.execute(
                "SELECT array_agg(a.attname ORDER BY k.n) FROM pg_index i CROSS JOIN LATERAL "
                "unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) JOIN pg_attribute a "
                "ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                "WHERE i.indrelid = %s::regclass AND i.indisunique GROUP BY i.indexrelid",
                (table,),
            ):
                assert table in ("copilot_schema", "copilot_blobs") or columns[:2] == [
                    "owner",
                    "session_id",
                ]
        assert (
            conn.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f'").fetchone()[0]
            == 0
        )
        assert conn.execute("SELECT count(*) FROM pg_sequences").fetchone()[0] == 0
        assert (
            conn.execute(
                "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "WHERE c.relname LIKE 'copilot_%%' AND a.attidentity <> ''"
            ).fetchone()[0]
            == 0
        )
        json_types = conn.execute(
            "SELECT DISTINCT data_type FROM information_schema.columns WHERE table_name "
            "LIKE 'copilot_%%' AND data_type IN ('json', 'jsonb', 'bytea') ORDER BY 1"
        ).fetchall()
        assert json_types == [("bytea",), ("jsonb",)]
        # bytes only for attachments' bytes (issue 14): never JSON stored as bytes
        bytea = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_name "
            "LIKE 'copilot_%%' AND data_type = 'bytea'"
        ).fetchall()
        assert bytea == [("copilot_blobs", "data")]


def test_migrations_run_once_and_a_newer_schema_is_a_typed_error(pg_url: str) -> None:
    from copilot._pg_schema import SCHEMA_VERSION
    from copilot.store_postgres import PostgresStore

    stores: list[Any] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(PostgresStore(pg_url, owner="a"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and len(stores) == 4
    for opened in stores:
        opened.close()
    with _connect(pg_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM copilot_schema")]
        assert versions == list(range(1, SCHEMA_VERSION + 1))
        conn.execute("INSERT INTO copilot_schema (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreSchemaError, match=rf"version {SCHEMA_VERSION + 1}.*upgrade"):
        PostgresStore(pg_url, owner="a")


def test_an_append_on_a_stale_head_retries_even_after_delete_and_create_again(
    pg_url: str,
) -> None:
    from copilot.store_postgres import PostgresStore

    here, elsewhere = PostgresStore(pg_url, owner="o"), PostgresStore(pg_url, owner="o")
    try:
        here.create_session({**_meta("s"), "startTime": "old"})
        here.append("s", _events(1, "old"))  # `here` now remembers the head
        elsewhere.delete_session("s")
        elsewhere.create_session({**_meta("s"), "startTime": "new"})
        elsewhere.append("s", _events(2, "new"))  # as many changes as `here` saw: same count
        stored = here.append("s", _events(1, "here"))
        assert stored[0].seq == 3
        assert [e.data["content"] for e in here.read_events("s")] == ["new0", "new1", "here0"]
        assert here.get_session("s")["startTime"] == "new"
        elsewhere.update_session("s", summary="from elsewhere")  # metadata only: a new rev too
        here.append("s", _events(1, "again"))
        assert here.get_session("s")["summary"] == "from elsewhere"
    finally:
        here.close()
        elsewhere.close()


def test_a_long_read_is_pipelined_in_ranges_and_misses_nothing_past_a_stale_head(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from copilot import store_postgres
    from copilot.store_postgres import PostgresStore

    monkeypatch.setattr(store_postgres, "_READ_CHUNK", 3)  # ranges of 3: 10 events, 4 queries
    here, elsewhere = PostgresStore(pg_url, owner="o"), PostgresStore(pg_url, owner="o")
    try:
        here.create_session(_meta("s"))
        written = here.append("s", _events(10, "a"))  # `here` remembers the head: seq 10
        assert here.read_events("s") == written
        assert [e.seq for e in here.read_events("s", after=4)] == list(range(5, 11))
        assert [e.seq for e in here.read_events("s", after=2, limit=5)] == [3, 4, 5, 6, 7]
        more = elsewhere.append("s", _events(5, "b"))  # `here`'s head is now 5 events behind
        assert here.read_events("s") == written + more
        fresh = PostgresStore(pg_url, owner="o")  # no head remembered: it reads the head first
        try:
            assert fresh.read_events("s") == written + more
            with fresh.transaction():
                assert [e.seq for e in fresh.read_events("s", after=1)] == list(range(2, 16))
        finally:
            fresh.close()
        elsewhere.delete_session("s")  # `here` still remembers 10 events
        elsewhere.create_session(_meta("s"))
        again = elsewhere.append("s", _events(2, "c"))
        assert here.read_events("s") == again
        assert here.read_events("missing") == []
    finally:
        here.close()
        elsewhere.close()


def test_a_long_read_decodes_each_event_when_used_and_numbers_a_gapped_log_as_stored(
    pg_url: str, postgres_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from copilot import store_postgres
    from copilot.events import StoredEvent
    from copilot.store_postgres import PostgresStore

    monkeypatch.setattr(store_postgres, "_READ_CHUNK", 3)
    store = PostgresStore(pg_url, owner="o")
    dbname = pg_url.rsplit("/", 1)[1]
    try:
        store.create_session(_meta("s"))
        written = store.append(
            "s",
            [
                Event(EventType.USER_MESSAGE, {"content": "big", "n": 2**70 + 1}),
                Event(EventType.ASSISTANT_TURN_START, {"messageId": "m"}, ephemeral=True),
                *_events(8, "a"),
            ],
        )
        read = store.read_events("s")
        assert all(type(e) is StoredEvent for e in read)  # the long path: parsed when used
        assert type(store.read_events("s", after=8)[0]) is not StoredEvent  # 2 events: at once
        assert [(e.seq, e.id, e.type, e.parent_id, e.ephemeral, e.timestamp) for e in read] == [
            (e.seq, e.id, e.type, e.parent_id, e.ephemeral, e.timestamp) for e in written
        ]
        assert read[0].data["n"] == 2**70 + 1 and read == written
        seen: list[Event] = []  # fork uses every event: its long read parses each range at once

        def copy(events: list[Event]) -> list[Event]:
            seen.extend(events)
            return [Event(e.type, dict(e.data)) for e in events]

        store.fork_session("s", _meta("f"), copy)
        finished = [written[0], *written[2:]]  # the open turn's start is left out of a fork
        assert seen == finished and not [e for e in seen if type(e) is StoredEvent]
        assert [e.data.get("content") for e in store.read_events("f")] == [
            e.data.get("content") for e in finished
        ]
        unused = store.read_events("s")[3]  # not parsed yet: an append numbers it after parsing
        tail = store.read_events("f", after=8)[0]
        assert store.append("f", [unused])[0].seq == 10
        appended = store.read_events("f", after=9)[0]
        assert (appended.seq, appended.parent_id, appended.id) == (10, tail.id, written[3].id)
        assert appended.data == written[3].data
        # a gap (only a write outside the package makes one): numbered as stored, not shifted
        postgres_server.execute(
            "DELETE FROM copilot_events WHERE session_id = 's' AND seq = 5", dbname
        )
        gapped = store.read_events("s")
        assert [e.seq for e in gapped] == [1, 2, 3, 4, 6, 7, 8, 9, 10]
        assert [e.id for e in gapped] == [e.id for e in written if e.seq != 5]
        # a row that is not an event: the read returns, the event raises when first used
        postgres_server.execute(
            'UPDATE copilot_events SET event = \'{"id": "x", "type": 1}\'::jsonb WHERE session_id = \'s\' AND seq = 8',
            dbname,
        )
        damaged = store.read_events("s", after=6)
        assert damaged[0].type == EventType.USER_MESSAGE
        with pytest.raises(StoreCorruptedError, match="event 8 in the record 's events 7-"):
            _ = damaged[1].type
        postgres_server.execute(  # each way of not being an event, and one that is
            "UPDATE copilot_events SET event = CASE seq WHEN 2 THEN '[]'::jsonb "
            'WHEN 3 THEN \'{"id": "x", "type": "t", "timestamp": "s", "data": 1}\'::jsonb '
            'WHEN 4 THEN \'{"id": 7, "type": "t", "timestamp": "s"}\'::jsonb '
            'WHEN 6 THEN \'{"id": "x", "type": "t", "timestamp": "s", "data": null}\'::jsonb '
            "END WHERE session_id = 's' AND seq IN (2, 3, 4, 6)",
            dbname,
        )
        assert [(d["kind"], d["key"], d["repairable"]) for d in store.check()] == [
            ("head", None, False),  # the gap at 5
            *[("corrupt-record", f"s event {seq}", False) for seq in (2, 3, 4, 8)],
        ]
    finally:
        store.close()


def test_a_read_asks_for_the_head_only_when_it_knows_nothing_of_the_session(
    two_stores: tuple[Any, Any], tmp_path: Path
) -> None:
    writer, reader = two_stores
    writer.create_session(_meta("s"))
    writer.append("s", _events(3))

    def statements(store: Any, read: Callable[[], Any]) -> int:
        trace = tmp_path / "trace"  # the pool's one connection, traced while it reads
        with trace.open("w") as out:
            with store._pool.connection() as conn:
                conn.pgconn.trace(out.fileno())
            read()
            with store._pool.connection() as conn:
                conn.pgconn.untrace()
        return sum("\tQuery\t" in line or "\tBind\t" in line for line in trace.open())

    # first read: how long the log is (the session's row), then the events
    assert statements(reader, lambda: reader.read_events("s")) == 2
    writer.append("s", _events(2, "more"))
    # later reads: the newest seq it read says how long a read can be: one statement
    assert statements(reader, lambda: reader.read_events("s", after=3)) == 1
    assert [e.seq for e in reader.read_events("s")] == [1, 2, 3, 4, 5]
    assert statements(writer, lambda: writer.read_events("s")) == 1  # its head: one too


def _traced(store: Any, tmp_path: Path, act: Callable[[], Any]) -> list[str]:
    """The statements ``act`` sends on this thread's open transaction's connection."""
    connection = store._local.tx.connection
    trace = tmp_path / "trace"
    with trace.open("w") as out:
        connection.pgconn.trace(out.fileno())
        try:
            act()
        finally:
            connection.pgconn.untrace()
    return [
        line.split("\t")[-1].strip()
        for line in trace.open()
        if "\tQuery\t" in line or "\tBind\t" in line
    ]


def test_a_transaction_locks_a_session_with_its_begin_and_reads_the_locked_row_once(
    pg_url: str, tmp_path: Path
) -> None:
    """A turn's start (lock, metadata, tail, append, commit) costs three round trips: BEGIN
    and the locked head in one, the append, the COMMIT; the tail it reads is the events this
    store appended last, kept while the head it locked still has their revision."""
    from copilot.store_postgres import PostgresStore

    store = PostgresStore(pg_url, owner="o", max_size=1)
    try:
        store.create_session(_meta("s"))
        first = store.append("s", _events(3))
        second = store.append("s", _events(2, "turn"))
        fresh = [(e.seq, e.id, e.parent_id, e.data["content"]) for e in store.read_events("s")]
        with store.transaction():
            sent = _traced(store, tmp_path, lambda: store.get_session("s"))
            assert len(sent) == 1 and sent[0].startswith('"BEGIN; SELECT meta::text')
            meta = store.get_session("s")
            meta["turnCount"] = 99  # a copy: the held head is not changed through it
            got: dict[str, Any] = {}
            sent = _traced(
                store,
                tmp_path,
                lambda: got.update(
                    meta=store.get_session("s"),
                    seq=store.last_seq("s"),
                    tail=store.read_events("s", after=first[0].seq),
                    limited=store.read_events("s", after=0, limit=2),
                    none=store.read_events("s", after=5),
                ),
            )
            assert sent == []  # all from the locked row and the events this store appended
            assert got["meta"]["turnCount"] == 0 and got["seq"] == 5 and got["none"] == []
            tail = [(e.seq, e.id, e.parent_id, e.data["content"]) for e in got["tail"]]
            assert tail == fresh[1:]
            assert [e.seq for e in got["limited"]] == [1, 2]
            sent = _traced(store, tmp_path, lambda: store.append("s", _events(1, "next")))
            assert len(sent) == 1 and '{"events":[' in sent[0]  # one statement: the append
        assert [e.seq for e in second] == [4, 5]
        assert [e.data["content"] for e in store.read_events("s", after=5)] == ["next0"]
        # the store keeps the newest 64 events it appended: older ones come from the database
        store.create_session(_meta("many"))
        store.append("many", _events(70))
        with store.transaction():
            assert [e.seq for e in store.read_events("many", after=0)] == list(range(1, 71))
            sent = _traced(store, tmp_path, lambda: store.read_events("many", after=6))
            assert sent == []
            assert [e.seq for e in store.read_events("many", after=6)] == list(range(7, 71))
            assert [e.seq for e in store.read_events("many", after=5)] == list(range(6, 71))
    finally:
        store.close()


def test_what_a_store_keeps_of_its_appends_is_bounded_and_reads_stay_whole(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import copilot.store_postgres as module

    monkeypatch.setattr(module, "_RECENT_SESSIONS", 3)
    monkeypatch.setattr(module, "_RECENT_CHARS", 2_000)
    monkeypatch.setattr(module, "_REMEMBERED_SESSIONS", 2)
    store = module.PostgresStore(pg_url, owner="o", max_size=1)
    try:
        _keeps_a_bounded_part(store)
    finally:
        store.close()


def _keeps_a_bounded_part(store: Any) -> None:
    for name in ("a", "b", "c", "d"):
        store.create_session(_meta(name))
        store.append(name, _events(2, name))
    assert list(store._recent) == ["b", "c", "d"]  # the least recently written went first
    big = [Event(EventType.USER_MESSAGE, {"content": "x" * 800}) for _ in range(3)]
    store.append("b", big)  # 3 x ~950 characters: only the newest that fit 2,000 are kept
    assert list(store._recent) == ["c", "d", "b"]
    kept = store._recent["b"].rows
    assert [seq for seq, _ in kept] == [4, 5] and sum(len(t) for _, t in kept) <= 2_000
    with store.transaction():  # whatever was dropped comes from the database
        assert [e.seq for e in store.read_events("a")] == [1, 2]
        assert [e.seq for e in store.read_events("b", after=1)] == [2, 3, 4, 5]
        assert [len(e.data["content"]) for e in store.read_events("b", after=3)] == [800, 800]
    # the heads and read lengths it remembers are bounded too: a forgotten head costs a read
    for name in ("a", "b", "c"):
        store.append(name, _events(1, "again"))
    assert list(store._heads) == ["b", "c"]
    assert [e.seq for e in store.append("a", _events(1, "once more"))] == [4]
    assert list(store._heads) == ["c", "a"] and len(store._seen) <= 2


def test_a_transaction_reads_what_others_wrote_and_nothing_a_rollback_undid(
    two_stores: tuple[Any, Any], tmp_path: Path
) -> None:
    store, other = two_stores
    store.create_session(_meta("s"))
    store.append("s", _events(2))
    other.append("s", _events(1, "other"))  # after this store's last append
    with store.transaction():
        sent = _traced(store, tmp_path, lambda: store.read_events("s", after=1))
        assert len(sent) == 2  # BEGIN with the lock, then the events from the database
    assert [e.data["content"] for e in store.read_events("s", after=1)] == ["e1", "other0"]
    # an append rolled back: its events are never read back, by this store or another
    with pytest.raises(RuntimeError), store.transaction():
        store.append("s", _events(2, "gone"))
        raise RuntimeError("the turn failed")
    with store.transaction():
        assert [e.data["content"] for e in store.read_events("s", after=1)] == [
            "e1",
            "other0",
        ]
        assert store.last_seq("s") == 3
        written = store.append("s", _events(1, "kept"))
    assert written[0].seq == 4
    assert [e.data["content"] for e in other.read_events("s")] == [
        "e0",
        "e1",
        "other0",
        "kept0",
    ]
    # rolled back, then another writer's event takes the same number: theirs is read
    with pytest.raises(RuntimeError), store.transaction():
        store.append("s", _events(1, "gone again"))
        raise RuntimeError("the turn failed")
    other.append("s", _events(1, "theirs"))
    with store.transaction():
        assert [e.data["content"] for e in store.read_events("s", after=4)] == ["theirs0"]
    # metadata changed inside the transaction: the next append there reads the row again
    with store.transaction():
        assert store.update_session("s", title="t")["title"] == "t"
        assert store.get_session("s")["title"] == "t"
        store.append("s", _events(1, "after title"))
    assert store.get_session("s")["title"] == "t"
    assert [e.seq for e in store.read_events("s")] == [1, 2, 3, 4, 5, 6]
    # deleted or renamed inside the transaction: gone there at once
    with store.transaction():
        assert store.get_session("s") is not None
        store.rename_session("s", "renamed")
        assert store.get_session("s") is None and store.last_seq("s") == 0
        assert store.read_events("s") == []
        store.delete_session("renamed")
        assert store.get_session("renamed") is None and store.last_seq("renamed") == 0
    assert store.list_sessions() == []


def test_events_read_back_whole_and_a_row_that_is_not_an_event_is_a_typed_error(
    pg_url: str, postgres_server: Any
) -> None:
    from copilot.store_postgres import PostgresStore

    store = PostgresStore(pg_url, owner="tester")
    try:
        store.create_session(_meta("s"))
        written = store.append(
            "s",
            [
                Event(EventType.USER_MESSAGE, {"content": "hi", "n": 2**70 + 1}),
                Event(EventType.ASSISTANT_TURN_START, {"messageId": "m"}, ephemeral=True),
            ],
        )
        read = store.read_events("s")
        assert [(e.seq, e.id, e.type, e.parent_id, e.ephemeral, e.timestamp) for e in read] == [
            (e.seq, e.id, e.type, e.parent_id, e.ephemeral, e.timestamp) for e in written
        ]
        assert read[0].type == EventType.USER_MESSAGE
        assert read[0].data["n"] == 2**70 + 1  # over 64 bits, not a float: json reads it
        assert dict(read[1].data) == {"messageId": "m"}
        dbname = pg_url.rsplit("/", 1)[1]
        for bad in ('{"id": "x", "type": 1, "timestamp": "t"}', '{"id": "x", "type": "t"}', "[]"):
            postgres_server.execute(
                f"UPDATE copilot_events SET event = '{bad}'::jsonb WHERE seq = 2", dbname
            )
            with pytest.raises(StoreCorruptedError, match="event 2 of session 's'"):
                store.read_events("s")
    finally:
        store.close()


def test_check_finds_a_head_behind_its_log_and_repair_moves_it(pg_url: str) -> None:
    from copilot.store_postgres import PostgresStore

    store = PostgresStore(pg_url, owner="o")
    try:
        store.create_session(_meta("s"))
        store.create_session(_meta("sound"))
        store.append("s", _events(3))
        assert store.check() == []
        with _connect(pg_url) as conn:  # a write outside the package rewinds the head
            conn.execute("UPDATE copilot_sessions SET seq = 1 WHERE session_id = 's'")
        damage = store.check()
        assert [(d["kind"], d["sessionId"], d["repairable"]) for d in damage] == [
            ("head", "s", True)
        ]
        assert [d["repaired"] for d in store.repair()] == [True]
        assert store.check() == []
        stored = store.append("s", _events(1, "after"))
        assert stored[0].seq == 4 and stored[0].parent_id == store.read_events("s")[2].id
    finally:
        store.close()


def test_owners_are_kept_apart(pg_url: str) -> None:
    from copilot.store_postgres import PostgresStore

    alice, bob = PostgresStore(pg_url, owner="alice"), PostgresStore(pg_url, owner="bob")
    try:
        alice.create_session(_meta("chat"))
        bob.create_session(_meta("chat"))  # the same id, another owner: no collision
        alice.append("chat", _events(2, "alice"))
        bob.append("chat", _events(1, "bob"))
        bob.create_session(_meta("bob-only"))
        assert [e.data["content"] for e in alice.read_events("chat")] == ["alice0", "alice1"]
        assert [e.data["content"] for e in bob.read_events("chat")] == ["bob0"]
        assert [s["sessionId"] for s in alice.list_sessions()] == ["chat"]
        assert alice.get_session("bob-only") is None
        with pytest.raises(SessionNotFoundError):
            alice.delete_session("bob-only")
        with pytest.raises(SessionNotFoundError):
            alice.append("bob-only", _events(1))
        assert alice.delete_session("chat") == 2
        assert [e.data["content"] for e in bob.read_events("chat")] == ["bob0"]
    finally:
        alice.close()
        bob.close()


def test_clients_of_two_owners_see_only_their_sessions(pg_url: str, tmp_path: Path) -> None:
    a = CopilotClient(tmp_path / "a", store=pg_url, owner="alice", fallback_model="echo")
    b = CopilotClient(tmp_path / "b", store=pg_url, owner="bob", fallback_model="echo")
    try:
        a.create_session(session_id="mine", model="echo").send_and_wait(prompt="hi", timeout=60)
        assert [s["sessionId"] for s in a.list_sessions()] == ["mine"]
        assert b.list_sessions() == [] and b.get_session_metadata("mine") is None
        with pytest.raises(SessionNotFoundError):
            b.resume_session("mine")
        b.delete_sessions(older_than=timedelta(0))
        assert [s["sessionId"] for s in a.list_sessions()] == ["mine"]
        # prune works through delete_sessions on the shared store too
        assert [s["sessionId"] for s in a.delete_sessions(older_than=timedelta(0))] == ["mine"]
        assert a.list_sessions() == []
    finally:
        a.stop(timeout=10)
        b.stop(timeout=10)


def test_a_store_from_before_search_is_migrated_and_indexed_on_first_search(pg_url: str) -> None:
    from copilot._pg_schema import SCHEMA_VERSION
    from copilot.store_postgres import PostgresStore

    old = PostgresStore(pg_url, owner="a")
    try:
        for name in ("one", "two"):
            old.create_session(_meta(name))
            prompt = Event(EventType.USER_MESSAGE, {"content": f"old words {name}"})
            start = Event(EventType.ASSISTANT_TURN_START, {"messageId": prompt.id, "model": "m"})
            old.append(name, [Event(EventType.SESSION_START, {"model": "m"}), prompt, start])
        old.create_session(_meta("empty"))
        before = old.search("old", limit=10)
    finally:
        old.close()
    assert len(before) == 2
    with _connect(pg_url) as conn:  # back to schema 1: as a version without search left it
        conn.execute("DROP TABLE copilot_search, copilot_blobs, copilot_blob_refs")
        conn.execute("ALTER TABLE copilot_sessions DROP COLUMN unindexed")
        conn.execute("DELETE FROM copilot_schema WHERE version > 1")
    store = PostgresStore(pg_url, owner="a")
    other = PostgresStore(pg_url, owner="b")  # another owner's first search indexes nothing
    try:
        with _connect(pg_url) as conn:
            assert conn.execute("SELECT max(version) FROM copilot_schema").fetchone()[0] == (
                SCHEMA_VERSION
            )
            assert conn.execute("SELECT count(*) FROM copilot_search").fetchone()[0] == 0
        assert other.search("old") == []
        calls: list[tuple[int, int]] = []
        hits = store.search("old", limit=10, progress=lambda *call: calls.append(call))
        assert [{k: v for k, v in h.items() if k != "rank"} for h in hits] == [
            {k: v for k, v in h.items() if k != "rank"} for h in before
        ]
        assert calls == [(0, 6), (3, 6), (6, 6)]  # two sessions of 3 events (empty: none)
        calls.clear()
        store.search("old", progress=lambda *call: calls.append(call))
        assert calls == []  # indexed once
        assert store.reindex(progress=lambda *call: calls.append(call)) == 2
        assert calls[0] == (0, 6) and calls[-1] == (6, 6)
        assert len(store.search("old")) == 2
    finally:
        store.close()
        other.close()


def test_a_transaction_whose_first_lock_fails_is_rolled_back_and_the_connection_reused(
    postgres_server: Any, pg_url: str
) -> None:
    from psycopg import pq

    from copilot.store_postgres import PostgresStore

    PostgresStore(pg_url, owner="setup").close()  # the tables' owner creates the schema
    dbname = pg_url.rsplit("/", 1)[1]
    postgres_server.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'reader') "
        "THEN CREATE ROLE reader LOGIN; END IF; END $$"
    )
    with _connect(pg_url) as conn:
        conn.execute("GRANT SELECT ON copilot_schema TO reader")  # and nothing else
    store = PostgresStore(postgres_server.url(dbname, user="reader"), owner="o", max_size=1)
    try:
        for _ in range(2):  # the same pooled connection each time: not left mid-transaction
            with pytest.raises(StoreError, match="permission denied") as caught:
                with store.transaction():
                    store.get_session("s")
            assert "aborted" not in str(caught.value)
            with store._pool.connection() as connection:
                assert connection.pgconn.transaction_status == pq.TransactionStatus.IDLE
    finally:
        store.close()


def test_row_level_security_with_two_database_roles(postgres_server: Any, pg_url: str) -> None:
    from copilot.store_postgres import ROW_LEVEL_SECURITY, PostgresStore

    PostgresStore(pg_url, owner="setup").close()  # the tables' owner creates the schema
    dbname = pg_url.rsplit("/", 1)[1]
    for role in ("alice", "bob"):
        postgres_server.execute(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') "
            f"THEN CREATE ROLE {role} LOGIN; END IF; END $$"
        )
    with _connect(pg_url) as conn:
        conn.execute(ROW_LEVEL_SECURITY)
    alice_url = postgres_server.url(dbname, user="alice")
    bob_url = postgres_server.url(dbname, user="bob")
    alice = PostgresStore(alice_url, owner="alice")
    liar = PostgresStore(bob_url, owner="alice")  # bob's role claiming to be alice
    bob = PostgresStore(bob_url, owner="bob")
    try:
        alice.create_session(_meta("secret"))
        alice.append("secret", _events(2))
        assert liar.get_session("secret") is None
        assert liar.list_sessions() == [] and liar.read_events("secret") == []
        with pytest.raises(SessionNotFoundError):
            liar.append("secret", _events(1))
        with pytest.raises(StoreError, match="row-level security"):
            liar.create_session(_meta("forged"))
        bob.create_session(_meta("bobs"))
        assert [s["sessionId"] for s in alice.list_sessions()] == ["secret"]
        assert [s["sessionId"] for s in bob.list_sessions()] == ["bobs"]
        assert alice.last_seq("secret") == 2
        alice.append("secret", [Event(EventType.USER_MESSAGE, {"content": "the vault code"})])
        assert [h["seq"] for h in alice.search("vault")] == [3]
        assert liar.search("vault") == [] and bob.search("vault") == []  # the index too
    finally:
        for opened in (alice, liar, bob):
            opened.close()


def test_migrating_a_database_under_row_level_security_secures_the_search_table(
    postgres_server: Any, pg_url: str
) -> None:
    from copilot.store_postgres import PostgresStore

    PostgresStore(pg_url, owner="setup").close()
    with _connect(pg_url) as conn:  # schema 1, secured as ROW_LEVEL_SECURITY read before search
        conn.execute("DROP TABLE copilot_search, copilot_blobs, copilot_blob_refs")
        conn.execute("ALTER TABLE copilot_sessions DROP COLUMN unindexed")
        conn.execute("DELETE FROM copilot_schema WHERE version > 1")
        for table in ("copilot_sessions", "copilot_events"):
            conn.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            conn.execute(
                f"CREATE POLICY copilot_owner ON {table} "
                "USING (owner = current_user) WITH CHECK (owner = current_user)"
            )
            conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO PUBLIC")
        conn.execute("GRANT SELECT ON copilot_schema TO PUBLIC")
    for role in ("alice", "bob"):
        postgres_server.execute(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') "
            f"THEN CREATE ROLE {role} LOGIN; END IF; END $$"
        )
    PostgresStore(pg_url, owner="setup").close()  # the tables' owner migrates to schema 2
    dbname = pg_url.rsplit("/", 1)[1]
    alice = PostgresStore(postgres_server.url(dbname, user="alice"), owner="alice")
    liar = PostgresStore(postgres_server.url(dbname, user="bob"), owner="alice")
    try:
        alice.create_session(_meta("secret"))
        alice.append("secret", [Event(EventType.USER_MESSAGE, {"content": "the vault code"})])
        assert [h["sessionId"] for h in alice.search("vault")] == ["secret"]
        assert liar.search("vault") == []
    finally:
        alice.close()
        liar.close()


def test_store_spec_from_argument_environment_and_config(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from copilot.store_postgres import PostgresStore

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("COPILOT_JUPYTER_STORE", pg_url)
    client = CopilotClient(home, owner="envuser", fallback_model="echo")
    client.start()
    try:
        assert isinstance(client._core.store, PostgresStore)
        assert client._core.store.owner == "envuser"
    finally:
        client.stop(timeout=10)
    monkeypatch.delenv("COPILOT_JUPYTER_STORE")
    (home / "config.toml").write_text(f'store = "{pg_url}"\n')
    monkeypatch.setenv("JUPYTERHUB_USER", "hubuser")
    client = CopilotClient(home, fallback_model="echo")
    client.start()
    try:
        assert client._core.store.owner == "hubuser"
        assert "password" not in repr(client._core.store)
    finally:
        client.stop(timeout=10)
    (home / "config.toml").write_text('store = "postgresql://u:hunter2@db/x"\n')
    with pytest.raises(ConfigError, match="PGPASSWORD") as caught:
        CopilotClient(home)
    assert "hunter2" not in str(caught.value)
    (home / "config.toml").write_text('store = "redis://x"\n')
    with pytest.raises(ConfigError, match=r"diskcache.*postgresql://"):
        CopilotClient(home)
    (home / "config.toml").unlink()
    with pytest.raises(ConfigError, match="owner= partitions a shared store"):
        CopilotClient(home, owner="x").start()


# -- PostgreSQL: live changes ---------------------------------------------------------------------


def test_notify_reaches_a_subscriber_from_another_process(pg_url: str) -> None:
    from copilot.store_postgres import PostgresStore

    store = PostgresStore(pg_url, owner="tester")
    other_owner = PostgresStore(pg_url, owner="someone-else")
    try:
        assert isinstance(store, ChangeFeed)
        store.create_session(_meta("s"))
        other_owner.create_session(_meta("s"))
        heard: list[tuple[str, int]] = []
        got = threading.Event()

        def on_change(session_id: str, seq: int) -> None:
            heard.append((session_id, seq))
            got.set()

        with store.subscribe(on_change) as subscription:
            assert subscription.ready.wait(30)
            other_owner.append("s", _events(3))  # another owner's channel: not heard
            spec = {"kind": "postgres", "url": pg_url, "owner": "tester"}
            _append_elsewhere(store=spec, session="s", worker=0, n=1)
            assert got.wait(30)
        assert heard == [("s", 2)]
        # wait_for_change wakes on a commit by another process, and returns at once if the
        # change is already there.
        assert store.wait_for_change("s", after=1, timeout=0) == 2
        waiter: list[int] = []
        thread = threading.Thread(
            target=lambda: waiter.append(store.wait_for_change("s", after=2, timeout=60))
        )
        thread.start()
        time.sleep(0.3)
        assert waiter == []
        _append_elsewhere(store=spec, session="s", worker=1, n=1)
        thread.join(30)
        assert waiter == [4]
        assert store.wait_for_change("s", after=4, timeout=0.2) == 4  # timeout: no change
    finally:
        store.close()
        other_owner.close()


# -- PostgreSQL: faults ---------------------------------------------------------------------------


def test_a_connection_killed_mid_transaction_rolls_back_and_the_store_reconnects(
    pg_url: str, postgres_server: Any
) -> None:
    from copilot.store_postgres import PostgresStore

    store = PostgresStore(pg_url, owner="tester", max_size=2)
    try:
        store.create_session(_meta("s"))
        store.append("s", _events(1))
        with pytest.raises(StoreConnectionError, match="rolled back"), store.transaction():
            store.append("s", _events(2, "half"))
            (pid,) = store._local.tx.cursor.connection.execute("SELECT pg_backend_pid()").fetchone()
            postgres_server.execute(f"SELECT pg_terminate_backend({pid})")
            store.append("s", _events(1, "after"))
        assert [e.data["content"] for e in store.read_events("s")] == ["e0"]
        assert store.append("s", _events(1, "next"))[0].seq == 2
    finally:
        store.close()


def test_the_pool_lends_a_healthy_connection_without_a_round_trip_and_replaces_a_dead_one(
    pg_url: str, postgres_server: Any, tmp_path: Path
) -> None:
    import psycopg

    from copilot.store_postgres import PostgresStore, _check_connection

    # The check before each loan: nothing on the wire for a healthy idle connection ...
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SELECT 1")
        trace = tmp_path / "trace"
        with trace.open("w") as out:
            conn.pgconn.trace(out.fileno())
            _check_connection(conn)
            conn.pgconn.untrace()
        assert trace.read_text() == ""
        # ... and a failing round trip for one the server closed (so the pool replaces it).
        (pid,) = conn.execute("SELECT pg_backend_pid()").fetchone()
        postgres_server.execute(f"SELECT pg_terminate_backend({pid})")
        time.sleep(0.2)  # the server's goodbye reaches the socket
        with pytest.raises(psycopg.OperationalError):
            _check_connection(conn)
    # Through the store: every pooled connection killed while idle, the next calls just work.
    store = PostgresStore(pg_url, owner="tester", max_size=2)
    try:
        store.create_session(_meta("s"))
        assert store.append("s", _events(1))[0].seq == 1
        dbname = pg_url.rsplit("/", 1)[1]
        killed = postgres_server.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid()"
        )
        assert killed and all(ok for (ok,) in killed)
        time.sleep(0.2)
        assert [e.seq for e in store.append("s", _events(2, "after"))] == [2, 3]
        assert [e.data["content"] for e in store.read_events("s")] == ["e0", "after0", "after1"]
    finally:
        store.close()


def test_appends_reuse_one_cursor_per_connection_and_replace_a_closed_one(pg_url: str) -> None:
    from copilot.store_postgres import PostgresStore

    store = PostgresStore(pg_url, owner="tester", max_size=1)
    try:
        store.create_session(_meta("s"))
        store.append("s", _events(1))
        with store._pool.connection() as connection:
            kept = connection._copilot_append_cursor
        store.append("s", _events(1, "second"))
        with store._pool.connection() as connection:
            assert connection._copilot_append_cursor is kept
        # reads do not use it (a long read's rows would stay referenced by a kept cursor)
        assert len(store.read_events("s")) == 2
        assert kept.rowcount == 1  # still the append's one-row answer
        kept.close()
        assert [e.seq for e in store.append("s", _events(1, "third"))] == [3]
        with store._pool.connection() as connection:
            assert connection._copilot_append_cursor is not kept
    finally:
        store.close()


def test_a_notification_names_a_non_ascii_session_exactly(pg_url: str) -> None:
    from copilot.store_postgres import PostgresStore

    store = PostgresStore(pg_url, owner="tester")
    try:
        name = 'café ☕ "quoted" \\ 語'
        store.create_session(_meta(name))
        heard: list[tuple[str, int]] = []
        got = threading.Event()
        with store.subscribe(lambda s, q: (heard.append((s, q)), got.set())) as subscription:
            assert subscription.ready.wait(30)
            store.append(name, _events(2))
            assert got.wait(30)
        assert heard == [(name, 2)]
        # the transaction's first lock quotes the name into its query (psycopg's literal)
        with store.transaction():
            assert store.get_session(name)["sessionId"] == name
            assert store.append(name, _events(1, "in a transaction"))[0].seq == 3
        assert store.get_session("x' OR 'a'='a") is None
        with store.transaction():
            assert store.get_session("x' OR 'a'='a") is None
    finally:
        store.close()


def test_pool_exhaustion_waits_then_raises_a_typed_timeout(pg_url: str) -> None:
    from copilot.store_postgres import PostgresStore

    store = PostgresStore(pg_url, owner="tester", max_size=1, timeout=0.5)
    try:
        store.create_session(_meta("s"))
        release = threading.Event()
        holding = threading.Event()

        def hold() -> None:
            with store.transaction():
                store.last_seq("s")
                holding.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        assert holding.wait(30)
        started = time.monotonic()
        with pytest.raises(StoreTimeoutError, match="max_size") as caught:
            store.last_seq("s")
        assert isinstance(caught.value, StoreConnectionError)
        assert time.monotonic() - started >= 0.45  # it waited for the pool's timeout first
        # A caller that waits less than the timeout gets the connection once it is free.
        threading.Timer(0.1, release.set).start()
        assert store.append("s", _events(1))[0].seq == 1
        holder.join(30)
    finally:
        store.close()


def test_server_restart_between_turns_and_the_next_turn_works(
    postgres_server: Any, pg_url: str, tmp_path: Path
) -> None:
    client = CopilotClient(
        tmp_path / "home",
        store=pg_url,
        owner="tester",
        fallback_model="echo",
        providers={"echo": {"chunk_delay": 0.3}},
    )
    try:
        session = client.create_session(session_id="s", model="echo")
        assert session.send_and_wait(prompt="one two", timeout=60).data.content == "echo: one two"
        # Restart the server while a turn streams: the turn's final append reconnects.
        message_id = session.send(prompt="during the restart of the server")
        time.sleep(0.5)
        postgres_server.restart()
        events = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            events = session.get_messages()
            if any(
                e.type == EventType.ASSISTANT_TURN_END and e.data["messageId"] == message_id
                for e in events
            ):
                break
            time.sleep(0.2)
        replies = [e.data["content"] for e in events if e.type == EventType.ASSISTANT_MESSAGE]
        assert replies[-1] == "echo: during the restart of the server"
        _assert_usable_and_whole(session, "after")
    finally:
        client.stop(timeout=10)


# -- PostgreSQL: two nodes ------------------------------------------------------------------------


def test_two_nodes_serve_one_session_alternately(pg_url: str, tmp_path: Path) -> None:
    spec = {"kind": "postgres", "url": pg_url, "owner": "alice"}
    setup = CopilotClient(tmp_path / "setup", store=pg_url, owner="alice", fallback_model="echo")
    setup.create_session(session_id="shared", model="echo")
    setup.stop(timeout=10)
    nodes = [
        Worker("node", store=spec, home=str(tmp_path / f"node{i}"), session="shared")
        for i in range(2)
    ]
    try:
        for node in nodes:
            node.expect("READY")
        contexts = []
        for turn in range(4):
            node = nodes[turn % 2]
            node.send(f'{{"op": "send", "prompt": "turn {turn}"}}')
            reply = node.expect("REPLY")
            assert reply["content"] == f"echo: turn {turn}"
            contexts.append(reply["context"])
        # Each node's model saw every earlier turn, whichever node served it.
        assert contexts[3] == [
            "turn 0",
            "echo: turn 0",
            "turn 1",
            "echo: turn 1",
            "turn 2",
            "echo: turn 2",
            "turn 3",
        ]
        for node in nodes:
            node.send('{"op": "quit"}')
            node.expect("BYE")
    finally:
        for node in nodes:
            node.close()
    reader = CopilotClient(tmp_path / "reader", store=pg_url, owner="alice")
    try:
        prompts = [
            e.data["content"]
            for e in reader.get_messages("shared")
            if e.type == EventType.USER_MESSAGE
        ]
        assert prompts == ["turn 0", "turn 1", "turn 2", "turn 3"]
        assert reader.get_session_metadata("shared")["turnCount"] == 4
    finally:
        reader.stop(timeout=10)


def test_diskcache_store_is_still_the_default(tmp_path: Path) -> None:
    client = CopilotClient(tmp_path / "home")
    client.start()
    try:
        assert isinstance(client._core.store, EventStore)
    finally:
        client.stop(timeout=10)


def test_server_down_mid_turn_fails_the_turn_typed_and_the_next_turn_works(
    postgres_server: Any, pg_url: str, tmp_path: Path
) -> None:
    client = CopilotClient(
        tmp_path / "home",
        store=pg_url + "?pool_timeout=5&pool_max_size=3",
        owner="tester",
        fallback_model="echo",
        providers={"echo": {"chunk_delay": 0.4}},
    )
    try:
        client.start()
        assert client._core.store._max_size == 3
        session = client.create_session(session_id="s", model="echo")
        started = threading.Event()
        session.on(lambda e: e.type == EventType.ASSISTANT_TURN_START and started.set())
        message_id = session.send(prompt="a reply the store will not take")
        assert started.wait(30)
        postgres_server.stop("fast")  # the connection is lost while the reply streams
        try:
            with pytest.raises(StoreConnectionError):
                session.send_and_wait(prompt="queued behind it", timeout=120)
        finally:
            postgres_server.start()
        events = session.get_messages()
        # No half-written turn: its prompt and start are stored, its reply batch is not.
        turn = [e.type for e in events if message_id in (e.id, e.data.get("messageId"))]
        assert turn == [
            EventType.USER_MESSAGE,
            EventType.ASSISTANT_TURN_START,
        ]
        _assert_usable_and_whole(session, "back again")
    finally:
        client.stop(timeout=10)


# -- the example: two web servers, one user's conversation -------------------------------------


def _http(method: str, url: str, user: str, body: dict[str, Any] | None = None) -> Any:
    import json
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"X-User": user})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def test_example_web_app_two_uvicorn_servers_serve_one_conversation_alternately(
    pg_url: str, tmp_path: Path
) -> None:
    import os
    import socket
    import subprocess
    import sys
    import urllib.error

    pytest.importorskip("starlette", reason="the example needs starlette (the test extra)")
    pytest.importorskip("uvicorn", reason="the example needs uvicorn (the test extra)")
    root = Path(__file__).resolve().parents[1]
    servers, ports = [], []
    for i in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        env = dict(
            os.environ,
            COPILOT_JUPYTER_STORE=pg_url,
            COPILOT_JUPYTER_HOME=str(tmp_path / f"server{i}"),  # nothing shared on disk
            PYTHONPATH=os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH")))),
        )
        servers.append(
            subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "examples.shared_chat.app:app",
                 "--host", "127.0.0.1", "--port", str(ports[i]), "--log-level", "warning"],
                cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
        )  # fmt: skip
    try:
        for port, server in zip(ports, servers, strict=True):
            deadline = time.monotonic() + 60
            while True:
                try:
                    _http("GET", f"http://127.0.0.1:{port}/health", "probe")
                    break
                except (urllib.error.URLError, ConnectionError):
                    assert server.poll() is None, server.stderr.read()
                    assert time.monotonic() < deadline, "the example server did not start"
                    time.sleep(0.2)
        served_by = []
        for turn in range(4):  # no sticky routing: the servers take turns
            port = ports[turn % 2]
            answer = _http(
                "POST", f"http://127.0.0.1:{port}/chat/demo", "alice", {"prompt": f"t{turn}"}
            )
            assert answer["reply"] == f"echo: t{turn}" and answer["turns"] == turn + 1
            served_by.append(answer["servedBy"])
        assert served_by[0] == served_by[2] != served_by[1] == served_by[3]
        expected = [m for t in range(4) for m in (("user", f"t{t}"), ("assistant", f"echo: t{t}"))]
        for port in ports:
            history = _http("GET", f"http://127.0.0.1:{port}/chat/demo", "alice")
            assert [(m["role"], m["content"]) for m in history["messages"]] == expected
        # another user sees nothing of alice's conversation, on either server
        with pytest.raises(urllib.error.HTTPError) as caught:
            _http("GET", f"http://127.0.0.1:{ports[1]}/chat/demo", "bob")
        assert caught.value.code == 404
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)
