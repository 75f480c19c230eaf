"""The store's format: a store written by the previous version migrates on open losing nothing,
and the paged reads (``get_messages(after=, limit=, last=)``, ``iter_messages``,
``list_sessions(limit=)``) return exactly the slices of the full reads."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import diskcache
import pytest

from copilot import (
    AsyncCopilotClient,
    CopilotClient,
    InvalidArgumentError,
    InvalidArgumentTypeError,
)
from copilot.errors import StoreCorruptedError
from copilot.events import CHUNK_ROWS, Event, EventType, StoredEvent, renumber
from copilot.store import ROW_EVENTS, STORE_FORMAT, EventStore

FIXTURE = Path(__file__).parent / "fixtures" / "store-v1"
FIXTURE_V2 = Path(__file__).parent / "fixtures" / "store-v2"
FIXTURE_V3 = Path(__file__).parent / "fixtures" / "store-v3"


def _client(home: str | Path) -> CopilotClient:
    client = CopilotClient(base_directory=home, fallback_model="echo")
    client.start()
    return client


def _as_dicts(events: list[Event]) -> list[dict]:
    return [dict(e.to_dict(), seq=e.seq) for e in events]


def _event_rows(store: EventStore, session_id: str) -> list[tuple[str, str]]:
    query = "SELECT key, value FROM Cache WHERE key >= ? AND key < ? AND raw = 1 ORDER BY key"
    return store._cache._sql(query, (f"e/{session_id}/", f"e/{session_id}/:")).fetchall()


# -- migration -------------------------------------------------------------------------------


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """A copy of the store written by commit d009bf6 (format 1: no recency index, heads
    without open turns), made by tests/fixtures/store-v1's script in that version."""
    home = tmp_path / "old"
    shutil.copytree(FIXTURE / "home", home)
    return home


def test_a_store_of_the_previous_version_migrates_on_open_losing_nothing(old_store: Path) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())
    assert not (old_store / "sessions" / "cache.db-wal").exists()  # all in the one file

    client = _client(old_store)
    try:
        store = client._core.store
        assert store._get("v/format") == {"version": STORE_FORMAT}
        assert client.list_sessions() == expected["sessions"]
        assert client.list_sessions(limit=2) == expected["sessions"][:2]
        assert client.get_last_session_id() == expected["sessions"][0]["sessionId"]
        for session_id, events in expected["events"].items():
            assert _as_dicts(client.get_messages(session_id)) == events
        # the old head has no list of open turns: it is completed from the log
        assert "open" not in store._get("h/beta")
        assert [e.data["messageId"] for e in store.open_turns("beta")] == ["m-cut"]
        # its writer is long gone (reported as open-turn where its pid is free and the host
        # is this one); nothing else is damage
        assert [d for d in client.check() if d["kind"] != "open-turn"] == []
        session = client.resume_session("alpha")
        session.send_and_wait("after the migration")
        assert client.list_sessions(limit=1)[0]["sessionId"] == "alpha"
        old = expected["events"]["alpha"]
        assert _as_dicts(client.get_messages("alpha"))[: len(old)] == old
    finally:
        client.stop()


def test_a_format_2_store_migrates_to_rows_per_turn_losing_nothing(tmp_path: Path) -> None:
    """tests/fixtures/store-v2 was written by commit bd34175 (format 2: one row per event)."""
    home = tmp_path / "v2"
    shutil.copytree(FIXTURE_V2 / "home", home)
    expected = json.loads((FIXTURE_V2 / "expected.json").read_text())
    client = _client(home)
    try:
        store = client._core.store
        assert store._get("v/format") == {"version": STORE_FORMAT} and STORE_FORMAT == 3
        assert client.list_sessions() == expected["sessions"]
        for session_id, events in expected["events"].items():
            # ids, seq, parentId, timestamps and data exactly as the old version read them
            assert _as_dicts(client.get_messages(session_id)) == events
            rows = _event_rows(store, session_id)
            assert len(rows) < len(events) or len(events) == 1  # a turn's events in a row
            assert all(value.startswith("[") for key, value in rows if key[-12:] != "000000000001")
            # every page is the slice of the whole read, whatever row it starts in
            for after in range(len(events)):
                assert _as_dicts(client.get_messages(session_id, after, 3)) == events[after:][:3]
        turn_rows = [json.loads(v) for _, v in _event_rows(store, "alpha")]
        assert [e["type"] for e in turn_rows[1]] == [
            "user.message",
            "assistant.turn_start",
            "assistant.message",
            "assistant.usage",
            "assistant.turn_end",
        ]
        assert [e.data["messageId"] for e in store.open_turns("beta")] == ["m-cut"]
        assert [d for d in client.check() if d["kind"] != "open-turn"] == []
        assert {h["sessionId"] for h in client.search("beta again")} == {"beta"}  # index kept
        session = client.resume_session("alpha")
        session.send_and_wait("after the migration")
        old = expected["events"]["alpha"]
        now = _as_dicts(client.get_messages("alpha"))
        assert now[: len(old)] == old
        assert now[len(old)]["seq"] == old[-1]["seq"] + 1
        assert now[len(old)]["parentId"] == old[-1]["id"]
    finally:
        client.stop()


def _format_2_store(directory: Path, rows: dict[str, str], head: dict) -> None:
    """A store in format 2's layout: one JSON row per event, marker 2."""
    store = EventStore(directory)
    store.create_session({"sessionId": "s", "model": "echo", "modifiedTime": ""})
    for key, text in rows.items():
        store._cache.set(key, text, tag="s")
    store._set("h/s", head)
    store._set("v/format", {"version": 2})
    store.close()


def test_the_migration_copies_rows_as_stored_and_leaves_unreadable_ones(tmp_path: Path) -> None:
    def event(seq: int, kind: str, data: str) -> str:
        parent = "null" if seq == 1 else f'"e{seq - 1}"'
        return (
            f'{{"id":"e{seq}","type":"{kind}","timestamp":"t{seq}","parentId":{parent},'
            f'"ephemeral":false,"data":{data}}}'
        )

    big = "x" * (2**20 + 10)  # over 1 MiB: the old row is a value file
    rows = {
        "e/s/000000000001": event(
            1, "user.message", '{"content":"a","n":123456789012345678901234}'
        ),
        "e/s/000000000002": event(2, "assistant.message", '{"content":"b","x":NaN}'),
        "e/s/000000000003": event(3, "assistant.message", f'{{"content":"{big}"}}'),
        "e/s/000000000004": event(4, "user.message", '{"content":"c"}'),
        "e/s/000000000005": "{truncated",  # damaged: stays where it is
        "e/s/000000000006": event(6, "assistant.message", '{"content":"d"}'),
        "e/s/000000000007": event(7, "user.message", '{"content":"e"}'),
        "e/s/000000000009": event(9, "assistant.message", '{"content":"f"}'),  # after a gap
    }
    _format_2_store(tmp_path / "store", rows, {"seq": 9, "last": "e9", "open": {}})
    store = EventStore(tmp_path / "store")
    try:
        stored = dict(_event_rows(store, "s"))
        # a turn per row, the JSON text of each event copied as it was (NaN, a 78-bit integer)
        # a turn per row (a new one at each prompt, after a damaged row and at a gap), the
        # JSON text of each event copied as it was (NaN, a 78-bit integer)
        assert stored == {
            "e/s/000000000001": None,  # events 1-3: over 1 MiB, in a value file
            "e/s/000000000004": rows["e/s/000000000004"],
            "e/s/000000000005": "{truncated",
            "e/s/000000000006": rows["e/s/000000000006"],
            "e/s/000000000007": rows["e/s/000000000007"],
            "e/s/000000000009": rows["e/s/000000000009"],
        }
        first_three = ",\n".join(rows[f"e/s/00000000000{i}"] for i in (1, 2, 3))
        assert store._cache.get("e/s/000000000001") == f"[\n{first_three}\n]"
        kinds = {(d["kind"], d["key"]) for d in store.check()}
        assert kinds == {("corrupt-record", "e/s/000000000005"), ("sequence-gap", None)}
        events = [e for e in store.iter_events_backwards("s", before=5)][::-1]
        assert [e.seq for e in events] == [1, 2, 3, 4]
        assert [e.parent_id for e in events] == [None, "e1", "e2", "e3"]
        assert events[0].data["n"] == 123456789012345678901234
        assert events[1].data["x"] != events[1].data["x"]  # NaN
        assert events[2].data["content"] == big
    finally:
        store.close()
    assert not list((tmp_path / "store").glob("*/*/*.val"))[1:]  # the old file was removed


def test_rows_written_before_the_line_layout_read_the_same(tmp_path: Path) -> None:
    """tests/fixtures/store-v3 was written by commit baf1559: format 3 with each row one
    compact JSON array. Its rows are read (parsed at once) and appended to: old and new
    layouts side by side in one session, nothing renumbered."""
    home = tmp_path / "v3"
    shutil.copytree(FIXTURE_V3 / "home", home)
    expected = json.loads((FIXTURE_V3 / "expected.json").read_text())
    client = _client(home)
    try:
        store = client._core.store
        assert client.list_sessions() == expected["sessions"]
        for session_id, events in expected["events"].items():
            assert _as_dicts(client.get_messages(session_id)) == events
            assert all(v.startswith("[{") for _, v in _event_rows(store, session_id))
        session = client.resume_session("alpha")
        session.send_and_wait("after the upgrade")
        old = expected["events"]["alpha"]
        now = _as_dicts(client.get_messages("alpha"))
        assert now[: len(old)] == old
        assert [e["seq"] for e in now] == list(range(1, len(now) + 1))
        assert now[len(old)]["parentId"] == old[-1]["id"]
        new_rows = [v for k, v in _event_rows(store, "alpha") if int(k[-12:]) > len(old)]
        assert new_rows and all(v.startswith("[\n{") for v in new_rows)
        assert [d for d in client.check() if d["kind"] != "open-turn"] == []
    finally:
        client.stop()


def test_the_store_fits_diskcaches_schema_once_and_keeps_it(tmp_path: Path) -> None:
    """The listing index exists, diskcache's statistics triggers are inert and its expiry
    index partial, in a new store, in an older one opened by this version, and after
    diskcache itself opens the store again (its CREATE ... IF NOT EXISTS)."""
    home = tmp_path / "v3"
    shutil.copytree(FIXTURE_V3 / "home", home)
    assert "copilot_recent" not in _schema_of(home / "sessions")
    for directory in (tmp_path / "new", home / "sessions"):
        EventStore(directory).close()
        diskcache.Cache(str(directory)).close()
        schema = _schema_of(directory)
        assert schema["copilot_recent"].endswith(
            "DESC, key DESC, raw, mode, filename, value) WHERE key >= 's/' AND key < 's0'"
        )
        triggers = [name for name in schema if name.startswith("Settings_")]
        assert len(triggers) == 5
        assert all(" FOR EACH ROW WHEN 0 BEGIN " in schema[name] for name in triggers)
        assert schema["Cache_expire_time"].endswith("WHERE expire_time IS NOT NULL")
    store = EventStore(tmp_path / "new")
    try:
        before = store._cache._sql("SELECT key, value FROM Settings").fetchall()
        store.create_session({"sessionId": "s", "modifiedTime": "t"})
        store.append("s", [Event(EventType.USER_MESSAGE, {"content": "q"})])
        assert store._cache._sql("SELECT key, value FROM Settings").fetchall() == before
    finally:
        store.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    """A new, empty event store."""
    opened = EventStore(tmp_path / "s")
    yield opened
    opened.close()


def _schema_of(directory: Path) -> dict[str, str]:
    with sqlite3.connect(directory / "cache.db") as db:
        return dict(db.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"))


def test_listing_every_session_reads_the_listing_index_only(store: EventStore) -> None:
    for i in range(3):
        store.create_session({"sessionId": f"s{i}", "modifiedTime": f"t{i}"})
    statements: list[str] = []
    store._cache._con.set_trace_callback(statements.append)
    try:
        listed = store.list_sessions()
    finally:
        store._cache._con.set_trace_callback(None)
    assert [r["sessionId"] for r in listed] == ["s2", "s1", "s0"]
    (query,) = [q for q in statements if "FROM Cache" in q]
    plan = " ".join(row[-1] for row in store._cache._sql("EXPLAIN QUERY PLAN " + query))
    assert plan == "SCAN Cache USING COVERING INDEX copilot_recent"  # no sort step


def test_an_append_writes_one_event_per_line_that_a_json_reader_reads(store: EventStore) -> None:
    store.create_session({"sessionId": "s", "modifiedTime": "t"})
    written = store.append(
        "s",
        [
            Event(EventType.USER_MESSAGE, {"content": "two\nlines, and ,\n inside"}),
            Event(EventType.ASSISTANT_MESSAGE, {"content": "]\n[{", "n": [1, {"a": 2}]}),
        ],
    )
    ((key, text),) = _event_rows(store, "s")
    assert key == "e/s/000000000001"
    assert text.count("\n") == 3 and text.startswith("[\n{") and text.endswith("}\n]")
    # the row is still the JSON array format 3 wrote: an older reader parses it
    assert json.loads(text) == [e.to_dict() for e in written]
    assert store.read_events("s") == written


def _undecoded(event: Event) -> bool:
    return event._chunk is not None  # type: ignore[attr-defined]  # StoredEvent's slot


def test_a_read_parses_only_the_chunks_whose_events_are_used(store: EventStore) -> None:
    store.create_session({"sessionId": "s", "modifiedTime": "t"})
    for i in range(CHUNK_ROWS + 2):  # one row of two events per append
        store.append(
            "s",
            [
                Event(EventType.USER_MESSAGE, {"content": f"q{i}"}),
                Event(EventType.ASSISTANT_MESSAGE, {"content": f"a{i}"}),
            ],
        )
    events = store.read_events("s")
    n = 2 * (CHUNK_ROWS + 2)
    assert [e.seq for e in events] == list(range(1, n + 1))  # known without parsing
    assert all(isinstance(e, StoredEvent) and _undecoded(e) for e in events)
    last = events[-1]
    assert last.data["content"] == f"a{CHUNK_ROWS + 1}"  # the second chunk, and only it
    assert [_undecoded(e) for e in events] == [True] * 2 * CHUNK_ROWS + [False] * 4
    assert events[-2].type == EventType.USER_MESSAGE and last.parent_id == events[-2].id
    stored = [d for _, v in _event_rows(store, "s") for d in json.loads(v)]
    assert [e.to_dict() for e in events] == stored  # the first chunk parsed here
    assert not any(_undecoded(e) for e in events)
    # renumbering a read event (an append of it) decodes it first: its stored fields
    # cannot overwrite the new numbers
    fresh = store.read_events("s", limit=1)[0]
    renumber(fresh, "set-before", 99)
    assert (fresh.type, fresh.parent_id, fresh.seq) == ("user.message", "set-before", 99)


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        (
            '[\n{"id":"a","type":"user.message","timestamp":"t"},\n{"id":}\n]',
            "the record 'e/s/000000000001' is not valid JSON",
        ),
        (
            '[\n{"id":"a","type":"user.message","timestamp":"t"},\n{"id":1,"type":"x"}\n]',
            "the event 2 in the record 'e/s/000000000001' is not an event",
        ),
        # three lines, two events: a hand edit that broke the layout
        (
            '[\n{"id":"a","type":"user.message","timestamp":"t"},\n\n{"id":"b","type":"abort",'
            '"timestamp":"t"}\n]',
            "does not hold the 3 events its layout says",
        ),
    ],
)
def test_a_damaged_row_in_the_line_layout_is_a_typed_error_when_used(
    store: EventStore, stored: str, message: str
) -> None:
    store.create_session({"sessionId": "s", "modifiedTime": "t"})
    store._cache.set("e/s/000000000001", stored, tag="s")
    store._set("h/s", {"seq": stored.count("\n") - 1, "last": "b", "open": {}})
    events = store.read_events("s")  # counted by its lines, not parsed yet
    with pytest.raises(StoreCorruptedError, match=re.escape(message)) as caught:
        [e.type for e in events]
    assert "client.check()" in str(caught.value)
    assert ("corrupt-record", "e/s/000000000001") in {(d["kind"], d["key"]) for d in store.check()}


def test_threads_using_one_read_decode_each_chunk_safely(store: EventStore) -> None:
    """Events of one read used from several threads at once (a panel and a kernel thread):
    every thread sees every event whole, however their decodes of a chunk interleave."""
    store.create_session({"sessionId": "s", "modifiedTime": "t"})
    for i in range(6 * CHUNK_ROWS):
        store.append("s", [Event(EventType.USER_MESSAGE, {"content": f"q{i}"})])
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over as often as possible: interleave decodes
    try:
        for _ in range(5):
            events = store.read_events("s")
            barrier = threading.Barrier(8)
            seen: list[list[str] | BaseException] = []

            def use(
                order: list[Event] = events,
                barrier: threading.Barrier = barrier,
                seen: list[list[str] | BaseException] = seen,
            ) -> None:
                barrier.wait()
                try:
                    seen.append([e.data["content"] for e in order])
                except BaseException as exc:  # reported below, with the others
                    seen.append(exc)

            threads = [threading.Thread(target=use) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            expected = [f"q{i}" for i in range(6 * CHUNK_ROWS)]
            assert seen == [expected] * 8
    finally:
        sys.setswitchinterval(switch)


def test_a_rename_copies_each_row_as_stored(store: EventStore) -> None:
    store.create_session({"sessionId": "old", "modifiedTime": "t"})
    for i in range(2):
        store.append(
            "old",
            [
                Event(EventType.USER_MESSAGE, {"content": f"q{i}"}),
                Event(EventType.ABORT, {"reason": "x"}),
            ],
        )
    before = [(k[-12:], v) for k, v in _event_rows(store, "old")]
    store.rename_session("old", "new")
    assert [(k[-12:], v) for k, v in _event_rows(store, "new")] == before
    assert _event_rows(store, "old") == []


def test_the_migration_runs_once(old_store: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="copilot"):
        _client(old_store).stop()
        _client(old_store).stop()
    assert caplog.text.count("migrated the store") == 1


# -- paging ----------------------------------------------------------------------------------


@pytest.fixture
def long_session(client: CopilotClient) -> list[Event]:
    session = client.create_session("long", model="echo")
    for i in range(30):
        session.send(f"prompt {i}")
    session.send_and_wait("last prompt")
    return client.get_messages("long")


def test_pages_are_slices_of_the_whole_read(client: CopilotClient, long_session) -> None:
    whole = long_session
    assert len(whole) > 150
    session = client.resume_session("long")
    whole = client.get_messages("long")
    assert client.get_messages("long", 10, 25) == whole[10:35]
    assert client.get_messages("long", after=len(whole) - 3) == whole[-3:]
    assert client.get_messages("long", last=20) == whole[-20:]
    assert client.get_messages("long", last=10_000) == whole
    assert session.get_messages(after=5, limit=1) == whole[5:6]
    assert session.get_messages(last=1) == whole[-1:]
    assert list(client.iter_messages("long")) == whole
    assert list(session.iter_messages(after=100)) == whole[100:]


def test_reads_at_every_row_boundary(tmp_path: Path) -> None:
    """Appends of 1 to 7 events and one longer than a row holds: every page, tail and
    backward read is the slice of the whole log, with each event's own seq and parentId."""
    store = EventStore(tmp_path / "store")
    store.create_session({"sessionId": "s", "model": "echo", "modifiedTime": ""})
    for size in [1, 3, 7, 2, 1, ROW_EVENTS + 40, 5]:
        store.append("s", [Event(EventType.USER_MESSAGE, {"n": i}) for i in range(size)])
    whole = store.read_events("s")
    total = len(whole)
    assert [e.seq for e in whole] == list(range(1, total + 1))
    assert [e.parent_id for e in whole] == [None] + [e.id for e in whole[:-1]]
    assert len(_event_rows(store, "s")) == 8  # one row per append, the long one split in two
    for after in range(total + 1):
        assert store.read_events("s", after) == whole[after:]
        for limit in (1, 2, 5):
            assert store.read_events("s", after, limit) == whole[after : after + limit]
    for count in range(1, 30):
        assert store.read_last("s", count) == whole[-count:]
    for before in range(1, total + 2):
        assert list(store.iter_events_backwards("s", before, chunk=2)) == whole[: before - 1][::-1]
    assert list(store.iter_events("s", after=3, chunk=4)) == whole[3:]
    store.close()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"limit": 0}, InvalidArgumentError),
        ({"limit": "5"}, InvalidArgumentTypeError),
        ({"after": -1}, InvalidArgumentError),
        ({"after": True}, InvalidArgumentTypeError),
        ({"last": 0}, InvalidArgumentError),
        ({"last": 5, "after": 2}, InvalidArgumentError),
        ({"last": 5, "limit": 2}, InvalidArgumentError),
    ],
)
def test_bad_paging_arguments_are_refused(
    client: CopilotClient, long_session, kwargs: dict, error: type
) -> None:
    with pytest.raises(error):
        client.get_messages("long", **kwargs)
    with pytest.raises(error):
        client.resume_session("long").get_messages(**kwargs)


def test_the_newest_events_cost_one_range_read_at_any_length(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "store")
    store.create_session({"sessionId": "s", "model": "echo", "modifiedTime": ""})
    for _ in range(20):
        store.append("s", [Event(EventType.USER_MESSAGE, {"content": "x"}) for _ in range(1000)])
    seen: list[str] = []
    store._cache._con.set_trace_callback(seen.append)
    try:
        newest = store.read_last("s", 20)
    finally:
        store._cache._con.set_trace_callback(None)
    assert [e.seq for e in newest] == list(range(19_981, 20_001))
    assert len(seen) == 1  # one SELECT ... ORDER BY key DESC LIMIT 20
    store.close()


def test_iterating_a_long_session_keeps_memory_flat(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "store")
    store.create_session({"sessionId": "s", "model": "echo", "modifiedTime": ""})
    text = "a reply of some length " * 10
    for _ in range(20):
        batch = [Event(EventType.ASSISTANT_MESSAGE, {"content": text}) for _ in range(1000)]
        store.append("s", batch)

    tracemalloc.start()
    count = sum(1 for event in store.iter_events("s") if event.data["content"])
    iterating = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    events = store.read_events("s")
    whole = sum(1 for event in events if event.data["content"])  # every event used
    reading = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == whole == 20_000
    # the iterator holds one chunk of 1,000 events: a twentieth of the whole log, with room
    # for the allocator's slack (a ratio measured in the same test, not an absolute size)
    assert iterating < reading / 5, (iterating, reading)
    store.close()


def test_async_paging(home: str) -> None:
    async def main() -> None:
        async with AsyncCopilotClient(base_directory=home, fallback_model="echo") as client:
            session = await client.create_session("a", model="echo")
            for i in range(3):
                await session.send_and_wait(f"p{i}")
            whole = await client.get_messages("a")
            assert await client.get_messages("a", last=4) == whole[-4:]
            assert await session.get_messages(after=2, limit=3) == whole[2:5]
            assert [e async for e in client.iter_messages("a")] == whole
            assert [e async for e in session.iter_messages(after=1)] == whole[1:]
            assert (await client.list_sessions(limit=1))[0]["sessionId"] == "a"

    asyncio.run(main())


# -- the newest sessions -------------------------------------------------------------------


def test_list_sessions_limit_is_the_prefix_of_the_full_list(client: CopilotClient) -> None:
    sessions = {sid: client.create_session(sid, model="echo") for sid in "abcdefgh"}
    for sid in "dbhd":
        sessions[sid].send_and_wait(f"touch {sid}")
    client.delete_session("b")
    client.fork_session("a", "a2")
    whole = client.list_sessions()
    assert [s["sessionId"] for s in whole][:3] == ["a2", "d", "h"]
    for limit in (1, 3, 8, 50):
        assert client.list_sessions(limit=limit) == whole[:limit]
    assert client.check() == []
    with pytest.raises(InvalidArgumentError):
        client.list_sessions(limit=0)


def test_a_stale_index_entry_is_skipped_and_repaired(client: CopilotClient) -> None:
    for sid in ("x", "y"):
        client.create_session(sid, model="echo")
    store = client._core.store
    store._set(f"m/9999-01-01T00:00:00/{'x'}", "x")  # an entry no record matches
    assert [s["sessionId"] for s in client.list_sessions(limit=2)] == ["y", "x"]
    assert [d["kind"] for d in client.check()] == ["recency-index"]
    client.repair()
    assert client.check() == []


def test_the_recency_index_reads_a_few_keys_at_any_count(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "store")
    for i in range(3000):
        store.create_session(
            {"sessionId": f"s{i}", "model": "echo", "modifiedTime": f"2026-01-01T{i:08d}"}
        )
    seen: list[str] = []
    store._cache._con.set_trace_callback(seen.append)
    try:
        newest = store.list_sessions(limit=50)
    finally:
        store._cache._con.set_trace_callback(None)
    assert [s["sessionId"] for s in newest] == [f"s{i}" for i in range(2999, 2949, -1)]
    assert len(seen) <= 51  # one range read of the index, one read per session
    store.close()


def test_values_orjson_refuses_still_round_trip(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "store")
    store.create_session({"sessionId": "s", "model": "echo", "modifiedTime": ""})
    big = 2**70 + 1  # over 64 bits (not a float either): written and read by json instead
    store.append("s", [Event(EventType.USER_MESSAGE, {"content": "x", "metadata": {"n": big}})])
    store._cache.set(
        "e/s/000000000002", '{"id":"i","type":"abort","timestamp":"t","data":{"x":NaN}}'
    )
    events = store.read_events("s")
    assert events[0].data["metadata"] == {"n": big}
    assert events[1].data["x"] != events[1].data["x"]  # NaN, as the previous version wrote it
    store.close()
