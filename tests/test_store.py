"""The event store: a log that never evicts, never unpickles, appends at constant cost."""

from __future__ import annotations

import json
import os
import stat

import pytest

from copilot import SessionExistsError, SessionNotFoundError, StoreError
from copilot.events import Event
from copilot.store import EventStore


@pytest.fixture
def store(tmp_path):
    s = EventStore(tmp_path / "store")
    s.create_session({"sessionId": "s", "model": "echo"})
    yield s
    s.close()


def turn(i: int) -> list[Event]:
    return [
        Event("user.message", {"content": f"prompt {i}"}),
        Event("assistant.message", {"content": f"reply {i}", "messageId": "x"}),
    ]


def statements_per_append(store: EventStore) -> list[str]:
    con = store._cache._con
    seen: list[str] = []
    con.set_trace_callback(seen.append)
    try:
        store.append("s", turn(0))
    finally:
        con.set_trace_callback(None)
    return seen


def test_settings_make_it_a_log(store):
    assert store._cache.eviction_policy == "none"
    assert stat.S_IMODE(os.stat(store.directory).st_mode) == 0o700


def test_append_costs_the_same_at_10_and_10000_events(store):
    for i in range(5):
        store.append("s", turn(i))
    small = statements_per_append(store)
    for i in range(5000):
        store.append("s", turn(i))
    large = statements_per_append(store)
    assert store.last_seq("s") == 10014
    assert len(small) == len(large)  # one key per event: nothing grows with the history
    # no statement touches the session's other events (diskcache's own cull of expired keys
    # reads its expire_time index, which holds nothing here)
    assert not any("e/s/0000000000" in q and "INSERT" not in q for q in large[1:])
    assert not any("COUNT(" in q.upper() for q in large)


def test_values_are_json_text(store):
    store.append("s", turn(1))
    rows = store._cache._sql("SELECT key, mode, value FROM Cache").fetchall()
    assert rows and all(isinstance(value, str) for _key, _mode, value in rows)
    with pytest.raises(StoreError):
        store._cache.set("e/s/999999999999", {"a": "dict, would be pickled"})
    with pytest.raises(StoreError):
        store._cache.set(("tuple", "key"), "x")


def test_sequence_numbers_and_parents(store):
    stored = store.append("s", turn(1)) + store.append("s", turn(2))
    assert [e.seq for e in stored] == [1, 2, 3, 4]
    assert [e.parent_id for e in stored[1:]] == [e.id for e in stored[:-1]]
    assert store.read_events("s", after=2) == stored[2:]
    assert [e.seq for e in store.iter_events_backwards("s", chunk=3)] == [4, 3, 2, 1]
    assert [e.seq for e in store.iter_events_backwards("s", before=3)] == [2, 1]


def test_large_values_round_trip(store):
    big = "x" * (3 * 2**20)  # past the inline limit: diskcache keeps it in a file
    store.append("s", [Event("assistant.message", {"content": big})])
    assert store.read_events("s")[0].data.content == big


def _value_files(store) -> list[str]:
    return [
        row[0] for row in store._cache._sql("SELECT filename FROM Cache WHERE filename NOT NULL")
    ]


def test_a_row_written_in_one_statement_moves_between_inline_and_file_cleanly(store):
    """Rows are written by one UPSERT when inline; a row whose old value is in a file, or a
    text that may reach diskcache's 1 MiB file limit, goes through diskcache's set, which
    keeps or removes the file: no row points at a missing file, no file is left behind."""
    big = "é" * (2**19)  # 512 Ki characters: inline (diskcache counts characters)
    store.update_session("s", note=big, more="é" * 2**19)  # the record: over 1 Mi, a file
    assert len(_value_files(store)) == 1
    store.update_session("s", more="small")  # the old file's row: through set(), file gone
    assert _value_files(store) == [] and not list(store.directory.glob("*/*/*.val"))
    assert store.get_session("s")["note"] == big and store.get_session("s")["more"] == "small"
    store.append("s", turn(0))  # inline again: the UPSERT, one statement per row
    statements = statements_per_append(store)
    assert sum(q.startswith("SELECT rowid, filename FROM Cache") for q in statements) == 0
    # four rows (the events, h/, s/, m/), each one statement (a trace repeats a statement
    # once per trigger it fires: distinct texts)
    assert len({q for q in statements if q.startswith("INSERT INTO Cache (key")}) == 4
    assert store.get_session("s")["note"] == big


def test_sessions_index(store):
    with pytest.raises(SessionExistsError):
        store.create_session({"sessionId": "s", "model": "echo"})
    store.create_session({"sessionId": "t", "model": "echo"})
    assert {s["sessionId"] for s in store.list_sessions()} == {"s", "t"}
    store.append("s", turn(1))
    assert store.delete_session("s") == 2
    assert store.read_events("s") == [] and store.get_session("s") is None
    with pytest.raises(SessionNotFoundError):
        store.append("s", turn(2))  # no orphan events for a deleted session
    assert store.read_events("s") == []


def test_ids_that_share_a_prefix_do_not_mix(store):
    store.create_session({"sessionId": "s-2", "model": "echo"})
    store.append("s", turn(1))
    store.append("s-2", turn(2))
    assert [e.data.content for e in store.read_events("s")] == ["prompt 1", "reply 1"]
    assert [e.data.content for e in store.read_events("s-2")] == ["prompt 2", "reply 2"]


def test_a_directory_that_cannot_be_used_is_a_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises((StoreError, OSError)):
        EventStore(blocker / "store")


def test_an_append_runs_no_cull_of_expired_keys(store):
    """Nothing in the store expires (cull_limit=0): no write looks for expired keys (issue 12)."""
    store.append("s", turn(0))
    statements = statements_per_append(store)
    assert statements  # the trace works
    assert not any("expire_time <" in q for q in statements)
    reopened = EventStore(store.directory)  # the setting holds in every process
    try:
        assert reopened._cache.cull_limit == 0
    finally:
        reopened.close()


def test_list_sessions_keeps_that_order_for_records_sqlite_orders_otherwise(store):
    """The listing index gives SQLite's order; records it orders otherwise (a time that is a
    number, null or missing, a time past ASCII, a row read through the checks) still come in
    (str(modifiedTime), sessionId) order, newest first."""
    store.delete_session("s")
    times = {"a": "2026-01-01T00:00:00", "b": "2026-01-01T00:00:00\u00e9", "c": 5, "d": None}
    for sid, modified in times.items():
        store.create_session({"sessionId": sid, "model": "echo", "modifiedTime": modified})
    store.create_session({"sessionId": "e", "model": "echo"})  # no time at all
    store._cache.set("s/f", '{"sessionId":"f","modifiedTime":"2026-06-01"}', tag=None)
    big = "2026-02-01T00:00:00+00:00"
    store._cache.set("s/g", json.dumps({"sessionId": "g", "modifiedTime": big, "x": "y" * 2**21}))
    assert store._cache._sql("SELECT filename FROM Cache WHERE key = 's/g'").fetchone()[0]
    times.update(e="", f="2026-06-01", g=big)
    expected = sorted(times, key=lambda s: (str(times[s]), s), reverse=True)
    assert expected == ["d", "c", "f", "g", "b", "a", "e"]  # str(None), str(5) sort high
    assert [r["sessionId"] for r in store.list_sessions()] == expected
    only_strings = {k: v for k, v in times.items() if k in "abf"}
    for sid in "cdeg":
        store.delete_session(sid)
    assert [r["sessionId"] for r in store.list_sessions()] == sorted(
        only_strings, key=lambda s: (only_strings[s], s), reverse=True
    )


def test_list_sessions_orders_by_modified_time_then_id_in_every_case(store):
    """list_sessions() sorts by one string key, modifiedTime NUL sessionId: the order of
    the (modifiedTime, sessionId) pairs, also when one time is a prefix of another, when
    ids tie-break, and (by the pairs themselves) when a time holds a NUL."""
    store.delete_session("s")
    times = {
        "a": "2026-01-01T00:00:00",
        "b": "2026-01-01T00:00:00.5",  # the first is its prefix: it sorts below this one
        "c": "2026-01-01T00:00:00",  # the same time as "a": the id breaks the tie
        "d": "2026-01-01T00:00:00/",  # "/" sorts below "." but above the separator
        "e": "2025",
    }
    for sid, modified in times.items():
        store.create_session({"sessionId": sid, "model": "echo", "modifiedTime": modified})
    expected = sorted(times, key=lambda s: (times[s], s), reverse=True)
    assert [r["sessionId"] for r in store.list_sessions()] == expected == ["d", "b", "c", "a", "e"]
    # a NUL in a time: one string key would put "z" (same time up to the NUL, a later id)
    # above "f"; the pairs put the longer time first
    for sid, modified in (("f", "2026-01-01T00:00:00\0a"), ("z", "2026-01-01T00:00:00")):
        store.create_session({"sessionId": sid, "model": "echo", "modifiedTime": modified})
        times[sid] = modified
    expected = sorted(times, key=lambda s: (times[s], s), reverse=True)
    assert expected == ["d", "b", "f", "z", "c", "a", "e"]
    assert [r["sessionId"] for r in store.list_sessions()] == expected
