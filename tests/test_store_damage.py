"""A damaged or hostile store: planted rows touch nothing outside it, appends never overwrite,
storage failures are typed, and check()/repair() report and fix damage without losing events."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from copilot import (
    AsyncCopilotClient,
    CopilotClient,
    StoreCorruptedError,
    StoreError,
    StoreFullError,
    StorePermissionError,
)
from copilot.events import Event, EventType
from copilot.store import EventStore


def _client(home: str) -> CopilotClient:
    client = CopilotClient(base_directory=home, fallback_model="echo")
    client.start()
    return client


def _sql(home: str, statement: str, params: tuple = ()) -> None:
    """Change the store's SQLite file directly, as a person or a hostile program could."""
    con = sqlite3.connect(Path(home) / "sessions" / "cache.db")
    try:
        con.execute(statement, params)
        con.commit()
    finally:
        con.close()


def _event_rows(home: str) -> dict[str, str]:
    con = sqlite3.connect(Path(home) / "sessions" / "cache.db")
    try:
        # (this read ``WHERE key``, which SQLite takes as a number: always false for these
        # keys, so the comparisons of the log before and after a repair compared nothing)
        query = "SELECT key, value FROM Cache WHERE key >= 'e/' AND key < 'e0' AND raw = 1"
        rows = con.execute(query).fetchall()
    finally:
        con.close()
    assert rows, "no event rows: the comparison would prove nothing"
    return dict(rows)


# -- planted rows: nothing outside the store is read or deleted --------------------------------


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file beside the store (``../../victim.txt`` seen from the store's directory)."""
    path = tmp_path / "victim.txt"
    path.write_text("precious data outside the store")
    return path


def test_the_exact_planted_row_of_the_issue_reads_and_deletes_nothing(
    home: str, victim: Path
) -> None:
    client = _client(home)
    try:
        client.create_session("a", model="echo").send_and_wait("hello")
        assert (Path(home) / "sessions" / "../../victim.txt").resolve() == victim
        _sql(
            home,
            "UPDATE Cache SET mode=3, filename='../../victim.txt', value=NULL "
            "WHERE key='e/a/000000000002'",
        )
        with pytest.raises(StoreCorruptedError, match=r"victim\.txt"):
            client.get_messages("a")
        with pytest.raises(StoreCorruptedError):
            client.delete_session("a")
        assert victim.read_text() == "precious data outside the store"
        assert client.get_session_metadata("a") is not None  # the delete did nothing
        kinds = {(d["kind"], d["key"]) for d in client.check()}
        assert ("corrupt-record", "e/a/000000000002") in kinds
    finally:
        client.stop()
    assert victim.exists()


def _value_name(home: str) -> str:
    """A name of the form diskcache gives value files, under the store."""
    return "ab/cd/" + "0" * 28 + ".val"


@pytest.mark.parametrize(
    "plant",
    ["absolute path", "symlink with a valid name", "binary mode", "pickle mode", "text with value"],
)
def test_other_foreign_files_and_modes_are_refused(home: str, victim: Path, plant: str) -> None:
    client = _client(home)
    try:
        client.create_session("a", model="echo").send_and_wait("hello")
        key = "e/a/000000000002"
        if plant == "absolute path":
            _sql(
                home,
                "UPDATE Cache SET mode=3, filename=?, value=NULL WHERE key=?",
                (str(victim), key),
            )
        elif plant == "symlink with a valid name":
            name = _value_name(home)
            link = Path(home) / "sessions" / name
            link.parent.mkdir(parents=True)
            link.symlink_to(victim)
            _sql(home, "UPDATE Cache SET mode=3, filename=?, value=NULL WHERE key=?", (name, key))
        elif plant == "binary mode":
            _sql(home, "UPDATE Cache SET mode=2 WHERE key=?", (key,))
        elif plant == "pickle mode":
            _sql(home, "UPDATE Cache SET mode=4 WHERE key=?", (key,))
        else:
            _sql(home, "UPDATE Cache SET mode=3, filename=? WHERE key=?", (_value_name(home), key))
        with pytest.raises(StoreCorruptedError):
            client.get_messages("a")
        if plant in ("binary mode", "pickle mode", "text with value"):
            # no file outside the store is named: deleting the rows is harmless
            client.delete_session("a")
        else:
            with pytest.raises(StoreCorruptedError):
                client.delete_session("a")
            assert client.get_session_metadata("a") is not None
    finally:
        client.stop()
    assert victim.read_text() == "precious data outside the store"


def test_large_values_still_round_trip_through_files(home: str) -> None:
    client = _client(home)
    try:
        big = "word " * 300_000  # 1.5 MB: stored in a value file
        session = client.create_session("big", model="echo")
        reply = session.send_and_wait(big)
        assert reply.data["content"] == f"echo: {big}"
        assert [e.data.get("content") for e in client.get_messages("big")][1] == big
        client.delete_session("big")
        assert not list((Path(home) / "sessions").glob("*/*/*.val"))
    finally:
        client.stop()


# -- appends never overwrite ---------------------------------------------------------------


def test_a_rewound_head_overwrites_nothing_and_repair_moves_it(home: str) -> None:
    client = _client(home)
    try:
        session = client.create_session("a", model="echo")
        for i in range(3):
            session.send_and_wait(f"turn {i}")
        before = _event_rows(home)
        head = json.loads(client._core.store._cache.get("h/a"))
        rewound = {**head, "seq": head["seq"] - 7}
        _sql(home, "UPDATE Cache SET value=? WHERE key='h/a'", (json.dumps(rewound),))
        with pytest.raises(StoreCorruptedError, match="repair"):
            session.send_and_wait("after the rewind", timeout=10)
        assert _event_rows(home) == before  # not one event replaced
        damage = client.check()
        assert [d["kind"] for d in damage] == ["head-behind"]
        assert all(d["repaired"] for d in client.repair())
        assert client.check() == []
        reply = session.send_and_wait("after the repair", timeout=10)
        assert reply.data["content"] == "echo: after the repair"
        after = _event_rows(home)
        assert {k: v for k, v in after.items() if k in before} == before
    finally:
        client.stop()


# -- check and repair ----------------------------------------------------------------------


def _dead_pid() -> int:
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(out.stdout)


def _damaged_store(home: str) -> dict[str, int]:
    """A store with one damage of each kind; returns each session's event count."""
    client = _client(home)
    for sid in ("gap", "index", "head", "open", "orphans", "intact"):
        session = client.create_session(sid, model="echo")
        session.send_and_wait(f"hello {sid}")
    client.stop()
    store = EventStore(Path(home) / "sessions")
    start = Event(
        EventType.ASSISTANT_TURN_START,
        {
            "messageId": "m-dead",
            "model": "echo",
            "pid": _dead_pid(),
            "host": os.uname().nodename,
            "writer": "gone",
        },
    )
    store.append("open", [Event(EventType.USER_MESSAGE, {"content": "lost"}, id="m-dead"), start])
    counts = {
        sid: len(store.read_events(sid)) for sid in ("gap", "index", "head", "open", "orphans")
    }
    store.close()
    # the row of the turn's prompt (format 3: one row per append, here events 2 and 3)
    lost = json.loads(_event_rows(home)["e/gap/000000000002"])
    assert [e["type"] for e in lost] == ["user.message", "assistant.turn_start"]
    _sql(home, "DELETE FROM Cache WHERE key='e/gap/000000000002'")
    counts["gap"] -= len(lost)
    _sql(home, "UPDATE Cache SET value='{truncated' WHERE key='s/index'")
    _sql(
        home, "UPDATE Cache SET value=? WHERE key='h/head'", (json.dumps({"seq": 2, "last": None}),)
    )
    _sql(home, "DELETE FROM Cache WHERE key='s/orphans'")
    return counts


def _plant_orphan_file(home: str) -> Path:
    orphan = Path(home) / "sessions" / "12" / "34" / ("5" * 28 + ".val")
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_text('"left behind"')
    return orphan


def test_orphan_value_files_are_swept_when_the_store_opens(home: str) -> None:
    _client(home).stop()
    orphan = _plant_orphan_file(home)
    kept = Path(home) / "sessions" / "12" / "34" / ("6" * 28 + ".txt")
    client = _client(home)
    try:
        assert not orphan.exists()
        assert not kept.exists() or kept.read_text()  # nothing else is touched
    finally:
        client.stop()


def test_check_reports_each_damage_and_repair_fixes_it_without_losing_events(home: str) -> None:
    counts = _damaged_store(home)
    before = _event_rows(home)
    client = _client(home)
    try:
        orphan = _plant_orphan_file(home)  # after the open, which would sweep it
        damage = client.check()
        found = {(d["kind"], d["sessionId"]) for d in damage}
        assert found == {
            ("sequence-gap", "gap"),
            ("corrupt-record", "index"),
            ("head-behind", "head"),
            ("open-turn", "open"),
            ("orphan-events", "orphans"),
            ("orphan-file", None),
            ("recency-index", None),  # the index records it follows were damaged
        }
        assert {d["kind"]: d["repairable"] for d in damage}["sequence-gap"] is False
        assert "intact" in [s["sessionId"] for s in client.list_sessions()]

        repaired = client.repair()
        assert {(d["kind"], d["sessionId"]): d["repaired"] for d in repaired} == {
            ("sequence-gap", "gap"): False,  # the lost event cannot come back; reported
            ("corrupt-record", "index"): True,
            ("head-behind", "head"): True,
            ("open-turn", "open"): True,
            ("orphan-events", "orphans"): True,
            ("orphan-file", None): True,
            ("recency-index", None): True,
        }
        after = _event_rows(home)
        assert {k: v for k, v in after.items() if k in before} == before  # nothing lost
        assert not orphan.exists()
        assert [d["kind"] for d in client.check()] == ["sequence-gap"]
        listed = {s["sessionId"]: s for s in client.list_sessions()}
        assert set(listed) == {"gap", "index", "head", "open", "orphans", "intact"}
        assert listed["index"]["turnCount"] == 1 and listed["orphans"]["messageCount"] == 2
        events = client.get_messages("open")
        assert [e.type for e in events[-2:]] == ["abort", "assistant.turn_end"]
        assert len(events) == counts["open"] + 2
        for sid in ("index", "head", "orphans"):  # every repaired session works again
            reply = client.resume_session(sid).send_and_wait("again", timeout=10)
            assert reply.data["content"] == "echo: again"
    finally:
        client.stop()


def test_async_check_and_repair(home: str) -> None:
    _damaged_store(home)

    async def main() -> None:
        async with AsyncCopilotClient(base_directory=home, fallback_model="echo") as client:
            _plant_orphan_file(home)
            kinds = sorted(d["kind"] for d in await client.check())
            assert "orphan-file" in kinds and "head-behind" in kinds
            await client.repair()
            assert [d["kind"] for d in await client.check()] == ["sequence-gap"]

    asyncio.run(main())


# -- storage failures are typed --------------------------------------------------------------

_CHILD_PRELUDE = textwrap.dedent(
    """
    import json, os, resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    from copilot import CopilotClient
    home = sys.argv[1]

    def limit(size):
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))

    def orphans():
        root = os.path.join(home, "sessions")
        return sorted(
            os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".val")
        )
    """
)


def _child(code: str, home: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD_PRELUDE + textwrap.dedent(code), home],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_file_size_limit_is_a_store_full_error_and_the_turn_gets_its_outcome(home: str) -> None:
    result = _child(
        """
        client = CopilotClient(base_directory=home, fallback_model="echo")
        client.start()
        session = client.create_session("full", model="echo")
        session.send_and_wait("fits")
        echo = client.get_provider("echo")
        echo.enqueue("word " * 300_000)  # a 1.5 MB reply: written to a value file
        limit(1_000_000)
        try:
            session.send_and_wait("the reply will not fit", timeout=30)
            error = None
        except Exception as exc:
            error = [type(exc).__name__, str(exc)]
        left = orphans()
        limit(resource.RLIM_INFINITY)  # space is back
        session.send_and_wait("after", timeout=30)
        client.stop()
        print(json.dumps({"error": error, "orphans": left}))
        """,
        home,
    )
    name, message = result["error"]
    assert name == "StoreFullError"
    assert str(Path(home) / "sessions") in message and "free space" in message
    assert result["orphans"] == []  # the cut-short value file was removed
    client = _client(home)
    try:
        events = client.get_messages("full")
        prompts = [e for e in events if e.type == "user.message"]
        assert len(prompts) == 3
        for prompt in prompts:  # every prompt has exactly one outcome, the big reply too
            ends = [
                e
                for e in events
                if e.type == "assistant.turn_end" and e.data["messageId"] == prompt.id
            ]
            assert len(ends) == 1, prompt.data["content"]
        big = [
            e for e in events if e.type == "assistant.message" and len(e.data["content"]) > 10**6
        ]
        assert len(big) == 1
        assert client.check() == []
    finally:
        client.stop()


def test_a_prompt_that_does_not_fit_is_a_typed_error_and_stores_nothing(home: str) -> None:
    result = _child(
        """
        client = CopilotClient(base_directory=home, fallback_model="echo")
        client.start()
        session = client.create_session("full", model="echo")
        limit(os.path.getsize(os.path.join(home, "sessions", "cache.db")) + 4096)
        errors = []
        for prompt in ("x " * 20_000, "y " * 600_000):  # in SQLite, then in a value file
            try:
                session.send_and_wait(prompt, timeout=30)
            except Exception as exc:
                errors.append(type(exc).__name__)
        left = orphans()
        limit(resource.RLIM_INFINITY)
        session.send_and_wait("after", timeout=30)
        client.stop()
        print(json.dumps({"errors": errors, "orphans": left}))
        """,
        home,
    )
    assert result == {"errors": ["StoreFullError", "StoreFullError"], "orphans": []}
    client = _client(home)
    try:
        types = [e.type for e in client.get_messages("full")]
        assert types.count("user.message") == 1  # only "after": the failed prompts left nothing
        assert client.check() == []
    finally:
        client.stop()


def test_a_full_tmpfs_is_a_store_full_error(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or done.returncode}")
    client = CopilotClient(base_directory=str(mount / "home"), fallback_model="echo")
    try:
        client.start()
        session = client.create_session("full", model="echo")
        with pytest.raises(StoreFullError, match="free space"):
            for i in range(500):
                session.send_and_wait(f"turn {i} " + "z " * 2000, timeout=30)
        assert client.get_messages("full")  # reading still works on a full disk
        remount = ["mount", "-o", "remount,size=8m", str(mount)]
        subprocess.run(remount, check=True)  # space is back
        session.send_and_wait("after", timeout=30)
        events = client.get_messages("full")
        for prompt in (e for e in events if e.type == "user.message"):
            ends = [
                e
                for e in events
                if e.type == "assistant.turn_end" and e.data["messageId"] == prompt.id
            ]
            assert len(ends) == 1, prompt.data["content"][:20]
    finally:
        client.stop(timeout=5)
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_base_directory_without_write_permission_is_a_store_permission_error() -> None:
    # The parent exists and can be traversed, but this user cannot write in it. Root ignores
    # permissions, so the child drops to nobody (after its imports) when run as root; the
    # directory lives outside pytest's tmp tree, whose 0700 directories nobody cannot enter.
    outer = Path(tempfile.mkdtemp(prefix="copilot-perm-"))
    try:
        outer.chmod(0o755)
        parent = outer / "locked"
        parent.mkdir(mode=0o555)
        code = textwrap.dedent(
            f"""
            import os, sys, json
            from copilot import CopilotClient
            import copilot.store, copilot.providers.echo  # imported while root can read them
            if os.geteuid() == 0:
                os.setgid(65534); os.setuid(65534)
            try:
                CopilotClient(base_directory={str(parent / "home")!r}).list_sessions()
            except Exception as exc:
                print(json.dumps([type(exc).__name__, isinstance(exc, PermissionError), str(exc)]))
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            timeout=60,
        )
    finally:
        shutil.rmtree(outer, ignore_errors=True)
    assert out.returncode == 0, out.stderr
    name, is_permission_error, message = json.loads(out.stdout)
    assert name == "StorePermissionError" and is_permission_error
    assert str(parent / "home") in message and "base_directory" in message
    assert issubclass(StorePermissionError, StoreError)


def test_a_damaged_database_page_is_a_store_corrupted_error(home: str) -> None:
    client = _client(home)
    client.create_session("a", model="echo").send_and_wait("hello")
    client.stop()
    db = Path(home) / "sessions" / "cache.db"
    data = bytearray(db.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the schema page
    db.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptedError, match="repair"):
        c = CopilotClient(base_directory=home, fallback_model="echo")
        c.list_sessions()
