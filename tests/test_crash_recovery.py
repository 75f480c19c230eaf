"""Crashes and hostile stores: a killed process's turn is closed on resume, a live one's is not,
and the store never runs code it reads."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import diskcache
import pytest
from procs import Worker

from copilot import CopilotClient, StoreCorruptedError
from copilot.events import Event
from copilot.store import EventStore

#: a reply of 61 pieces: with chunk_delay 0.1 s it streams for six seconds
LONG_PROMPT = " ".join(f"word{i}" for i in range(60))


def _client(home: str) -> CopilotClient:
    client = CopilotClient(base_directory=home, fallback_model="echo")
    client.start()
    return client


def _store(home: str) -> EventStore:
    return EventStore(Path(home) / "sessions")


def _assert_log_corrupted(home: str, session_id: str) -> None:
    """Both ways of reading the session's log refuse it with StoreCorruptedError."""
    store = _store(home)
    try:
        with pytest.raises(StoreCorruptedError):
            store.read_events(session_id)
        with pytest.raises(StoreCorruptedError):
            list(store.iter_events_backwards(session_id))
    finally:
        store.close()


def _context(client: CopilotClient) -> list[list[str]]:
    return [[m.role, m.content] for m in client.get_provider("echo").requests[-1].messages]


def _check_chain(events) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    for before, event in itertools.pairwise(events):
        assert event.parent_id == before.id


def _terminals(events, message_id: str) -> list[str]:
    """The events that ended turn ``message_id`` (a complete turn has exactly one turn_end)."""
    return [
        e.type
        for e in events
        if e.type in ("assistant.message", "abort", "session.error", "assistant.turn_end")
        and e.data.get("messageId") == message_id
    ]


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(out.stdout)


# -- kill -9 -------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_turn_of_a_killed_process_is_marked_interrupted_on_resume(home: str) -> None:
    client = _client(home)
    client.create_session("crash", model="echo").send_and_wait("before")
    client.stop()

    worker = Worker("stream", home=home, sid="crash", prompt=LONG_PROMPT, chunk_delay=0.1)
    try:
        message_id = worker.expect("DELTA")  # the reply is streaming now
    finally:
        worker.kill()  # SIGKILL, and reaped

    store = _store(home)
    before_resume = store.read_events("crash")
    assert _terminals(before_resume, message_id) == [], "the turn was not left open by the kill"
    assert [e for e in before_resume if e.type == "assistant.turn_start"][-1].data[
        "messageId"
    ] == message_id

    client = _client(home)  # a fresh process's view
    try:
        session = client.resume_session("crash")
        events = session.get_messages()
        _check_chain(events)
        added = events[len(before_resume) :]
        assert [e.type for e in added] == ["abort", "assistant.turn_end", "session.resume"]
        abort = added[0]
        assert abort.data["messageId"] == message_id
        assert "interrupted" in abort.data["reason"]
        assert added[1].data["messageId"] == message_id
        assert added[2].data["interruptedTurns"] == 1

        # a new turn works; the cut-off prompt has no answer and is not shown as answered
        reply = session.send_and_wait("after")
        assert reply.data["content"] == "echo: after"
        context = _context(client)
        assert context == [["user", "before"], ["assistant", "echo: before"], ["user", "after"]]
        assert not any(LONG_PROMPT in text for _role, text in context)
    finally:
        client.stop()

    # the next process finds nothing to recover: the turn is marked once
    client = _client(home)
    try:
        events = client.resume_session("crash").get_messages()
        assert events[-1].type == "session.resume"
        assert events[-1].data["interruptedTurns"] == 0
        assert _terminals(events, message_id) == ["abort", "assistant.turn_end"]
        _check_chain(events)
    finally:
        client.stop()
    store.close()


@pytest.mark.timeout(60)
def test_turn_of_a_live_process_is_not_marked(home: str) -> None:
    client = _client(home)
    client.create_session("alive", model="echo")
    client.stop()
    prompt = " ".join(f"w{i}" for i in range(30))  # about 2.4 s of streaming
    worker = Worker("stream", home=home, sid="alive", prompt=prompt, chunk_delay=0.08)
    try:
        message_id = worker.expect("DELTA")
        client = _client(home)
        try:
            session = client.resume_session("alive")
            events = session.get_messages()
            # resumed while the other process was mid-turn ...
            assert _terminals(events, message_id) == [], "the worker finished too early"
            # ... and its turn was left alone
            assert events[-1].type == "session.resume"
            assert events[-1].data["interruptedTurns"] == 0
            assert not [e for e in events if e.type == "abort"]

            done = worker.expect("DONE", timeout=30)
            worker.finish()
            assert done == {"messageId": message_id, "content": f"echo: {prompt}"}
            events = session.get_messages()
            assert _terminals(events, message_id) == ["assistant.message", "assistant.turn_end"]
            stored = next(e for e in events if e.type == "assistant.message")
            assert stored.data["content"] == f"echo: {prompt}"
            _check_chain(events)

            # this process's next turn sees the other process's finished exchange
            session.send_and_wait("next")
            assert _context(client) == [
                ["user", prompt],
                ["assistant", f"echo: {prompt}"],
                ["user", "next"],
            ]
        finally:
            client.stop()
    finally:
        worker.kill()

    client = _client(home)
    try:
        events = client.resume_session("alive").get_messages()
        assert events[-1].data["interruptedTurns"] == 0
        assert not [e for e in events if e.type == "abort"]
    finally:
        client.stop()


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_concurrent_resumes_mark_an_interrupted_turn_only_once(tmp_path: Path) -> None:
    """Processes resuming a crashed session at the same moment must not each mark its turns.

    Each resumer's scan of the log is slowed down (only timing changes), so that all of them
    scan before any of them marks: finding the open turns and marking them must be atomic.
    """
    for round_ in range(2):
        home = str(tmp_path / f"round{round_}")
        client = _client(home)
        client.create_session("shared", model="echo")
        client.stop()
        # three turns left open by a process that has died
        store = _store(home)
        dead = _dead_pid()
        lost = []
        for i in range(3):
            user = Event("user.message", {"content": f"lost {i}"})
            start = {
                "messageId": user.id,
                "model": "echo",
                "pid": dead,
                "host": socket.gethostname(),
                "writer": "a-writer-that-died",
            }
            store.append("shared", [user, Event("assistant.turn_start", start)])
            lost.append(user.id)

        slow_scan = 0.3 if round_ == 0 else 0  # the second round: the natural timing
        workers = [Worker("resume", home=home, sid="shared", slow_scan=slow_scan) for _ in range(4)]
        try:
            for worker in workers:
                worker.expect("READY")
            for worker in workers:
                worker.go()
            for worker in workers:
                worker.expect("RESUMED")
                worker.finish()
        finally:
            for worker in workers:
                worker.kill()
        events = store.read_events("shared")
        _check_chain(events)
        for message_id in lost:
            assert _terminals(events, message_id) == ["abort", "assistant.turn_end"], (
                f"round {round_}: an interrupted turn was marked more than once"
            )
        resumes = [e.data["interruptedTurns"] for e in events if e.type == "session.resume"]
        assert len(resumes) == 4 and sum(resumes) == 3
        store.close()


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_kill_9_under_concurrent_load_leaves_a_consistent_log(home: str) -> None:
    client = _client(home)
    client.create_session("load", model="echo")
    client.stop()
    workers = [
        Worker("turns", home=home, sid="load", proc=k, n=30, chunk_delay=0.005) for k in range(2)
    ]
    victim = Worker("serve", home=home, sid="load", chunk_delay=0.005)
    try:
        for worker in workers:
            worker.expect("READY")
        victim.expect("READY")
        for worker in workers:
            worker.go()
        victim.write(json.dumps({"op": "loop", "prefix": "victim", "n": 100_000}))
        for _ in range(5):
            victim.expect("TURN")
        victim.kill()  # somewhere in its sixth turn, or between turns
        results = [worker.expect("RESULT", timeout=60) for worker in workers]
        for worker in workers:
            worker.finish()
    finally:
        for worker in [*workers, victim]:
            worker.kill()
    assert all(turn["ok"] for result in results for turn in result)

    store = _store(home)
    before = store.read_events("load")
    _check_chain(before)
    open_turns = [
        e.data["messageId"]
        for e in before
        if e.type == "assistant.turn_start" and not _terminals(before, e.data["messageId"])
    ]
    assert len(open_turns) <= 1  # only the victim can have left a turn open

    client = _client(home)
    try:
        session = client.resume_session("load")
        events = session.get_messages()
        _check_chain(events)
        assert events[-1].data["interruptedTurns"] == len(open_turns)
        users = [e for e in events if e.type == "user.message"]
        for user in users:  # every prompt sent ended exactly once, with a reply or an abort
            ends = _terminals(events, user.id)
            assert ends in (
                ["assistant.message", "assistant.turn_end"],
                ["abort", "assistant.turn_end"],
            )
        assert [_terminals(events, m) for m in open_turns] == [
            ["abort", "assistant.turn_end"]
        ] * len(open_turns)
        assert session.send_and_wait("after the crash").data["content"] == "echo: after the crash"
    finally:
        client.stop()
    store.close()


# -- the store's defences ----------------------------------------------------------------------


def test_store_directory_is_owner_only(home: str) -> None:
    client = _client(home)
    try:
        client.create_session("private", model="echo")
        assert (Path(home) / "sessions").stat().st_mode & 0o777 == 0o700
    finally:
        client.stop()
    # a directory that exists with looser permissions is tightened when opened
    os.chmod(Path(home) / "sessions", 0o755)
    client = _client(home)
    try:
        client.list_sessions()
        assert (Path(home) / "sessions").stat().st_mode & 0o777 == 0o700
    finally:
        client.stop()


class _Payload:
    """Unpickling this object creates the file ``path``: proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _plant(home: str, key: str, value: object) -> None:
    """Write ``value`` under ``key`` as any diskcache user could (pickled if it is an object)."""
    raw = diskcache.Cache(str(Path(home) / "sessions"))
    try:
        raw.set(key, value)
    finally:
        raw.close()


def test_payload_is_live(tmp_path: Path) -> None:
    """The control: unpickling the payload does create its file."""
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(str(marker)))).close()
    assert marker.exists()


@pytest.mark.parametrize("where", ["existing event", "event past the head", "metadata"])
def test_pickled_record_is_never_unpickled(home: str, tmp_path: Path, where: str) -> None:
    client = _client(home)
    client.create_session("target", model="echo").send_and_wait("hello")
    client.stop()
    marker = tmp_path / f"pwned-{where.replace(' ', '-')}"
    key = {
        "existing event": "e/target/000000000002",
        "event past the head": "e/target/000000000099",
        "metadata": "s/target",
    }[where]
    _plant(home, key, _Payload(str(marker)))

    client = _client(home)
    try:
        if where == "metadata":
            with pytest.raises(StoreCorruptedError):
                client.get_session_metadata("target")
            assert client.list_sessions() == []  # skipped with a warning, not unpickled
        else:
            _assert_log_corrupted(home, "target")
        with pytest.raises(StoreCorruptedError):
            client.resume_session("target").get_messages()
    finally:
        client.stop()
    assert not marker.exists(), "a pickled record was unpickled: stored data ran code"


@pytest.mark.timeout(30)
def test_pickled_head_fails_the_turn_instead_of_hanging(home: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned-head"
    client = _client(home)
    try:
        session = client.create_session("target", model="echo")
        session.send_and_wait("hello")
        before = session.get_messages()
        _plant(home, "h/target", _Payload(str(marker)))
        with pytest.raises(StoreCorruptedError):
            session.send_and_wait("next", timeout=5)
        assert session.get_messages() == before  # nothing was appended past the bad head
    finally:
        client.stop()
    assert not marker.exists()


_NOT_AN_EVENT = {
    "bytes": b"\x80\x04binary",
    "not JSON": "{truncated",
    "JSON array": "[1, 2]",
    "JSON string": '"text"',
    "object without fields": '{"no": "fields"}',
    "data not an object": '{"id": "x", "type": "user.message", "timestamp": "t", "data": [1]}',
}


@pytest.mark.parametrize("value", list(_NOT_AN_EVENT.values()), ids=list(_NOT_AN_EVENT))
def test_malformed_event_raises_store_corrupted(home: str, value: object) -> None:
    client = _client(home)
    try:
        client.create_session("target", model="echo").send_and_wait("hello")
        _plant(home, "e/target/000000000003", value)
        _assert_log_corrupted(home, "target")
    finally:
        client.stop()


@pytest.mark.parametrize("value", ["[1, 2]", '"text"', "{truncated", b"bytes"])
def test_malformed_metadata_raises_store_corrupted(
    home: str, value: object, caplog: pytest.LogCaptureFixture
) -> None:
    client = _client(home)
    try:
        client.create_session("target", model="echo")
        client.create_session("intact", model="echo")
        _plant(home, "s/target", value)
        with caplog.at_level("WARNING", logger="copilot"):
            listed = client.list_sessions()
        # one damaged record does not hide the others: it is skipped and named in a warning
        assert [s["sessionId"] for s in listed] == ["intact"]
        assert "'s/target'" in caplog.text
        with pytest.raises(StoreCorruptedError):
            client.get_session_metadata("target")
    finally:
        client.stop()
