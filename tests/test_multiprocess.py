"""Several processes on one store: one session's log stays a single, consistent conversation.

Every worker is a real process (``tests/procs.py``) with its own ``CopilotClient`` on the same
directory, as several notebooks or kernels sharing a home directory would be.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from procs import Worker

from copilot import CopilotClient
from copilot.store import EventStore

N_PROCS = 4
N_TURNS = 25


def _store(home: str) -> EventStore:
    return EventStore(Path(home) / "sessions")


def _raw_keys(home: str) -> list[str]:
    """Every key in the store's SQLite table, read without diskcache."""
    with sqlite3.connect(Path(home) / "sessions" / "cache.db") as db:
        return [row[0] for row in db.execute("SELECT key FROM Cache")]


def _check_chain(events) -> None:
    """Sequence numbers 1..N, gap-free and unique; each parentId is the previous event's id."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len({e.id for e in events}) == len(events)
    assert events[0].parent_id is None
    for before, event in itertools.pairwise(events):
        assert event.parent_id == before.id, f"broken parent chain at seq {event.seq}"


def _stop(workers: list[Worker]) -> None:
    for worker in workers:
        worker.kill()


def _serving(home: str, session_id: str, **args: Any) -> Worker:
    """A ``serve`` worker, READY, on a session created here first (killed if it fails to start)."""
    with CopilotClient(base_directory=home, fallback_model="echo") as client:
        client.create_session(session_id, model="echo")
    worker = Worker("serve", home=home, sid=session_id, **args)
    try:
        worker.expect("READY")
    except BaseException:
        worker.kill()
        raise
    return worker


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_four_processes_interleave_turns_on_one_session(home: str) -> None:
    with CopilotClient(base_directory=home, fallback_model="echo") as client:
        client.create_session("shared", model="echo")
    workers = [
        # a short pause inside each reply, so that turns of different processes overlap
        Worker("turns", home=home, sid="shared", proc=k, n=N_TURNS, chunk_delay=0.005)
        for k in range(N_PROCS)
    ]
    try:
        for worker in workers:
            worker.expect("READY")
        for worker in workers:  # start together: the turns interleave
            worker.go()
        results = {k: worker.expect("RESULT", timeout=90) for k, worker in enumerate(workers)}
        for worker in workers:
            worker.finish()
    finally:
        _stop(workers)

    store = _store(home)
    events = store.read_events("shared")
    _check_chain(events)
    kinds = Counter(e.type for e in events)
    assert kinds["session.start"] == 1
    assert kinds["session.resume"] == N_PROCS
    assert kinds["session.error"] == kinds["abort"] == 0
    total = N_PROCS * N_TURNS
    for kind in ("user.message", "assistant.turn_start", "assistant.message", "assistant.turn_end"):
        assert kinds[kind] == total, kind

    users = [e for e in events if e.type == "user.message"]
    prompts = [e.data["content"] for e in users]
    expected = {f"p{k}-{i}" for k in range(N_PROCS) for i in range(N_TURNS)}
    assert sorted(prompts) == sorted(expected) and len(set(prompts)) == total
    # the processes really ran together: their prompts are interleaved, not in blocks
    owners = [p.split("-")[0] for p in prompts]
    switches = sum(1 for x, y in itertools.pairwise(owners) if x != y)
    assert switches > 2 * N_PROCS, f"the workers barely overlapped: {''.join(owners)}"
    # each process's prompts are in its own order
    for k in range(N_PROCS):
        mine = [int(p.split("-")[1]) for p in prompts if p.startswith(f"p{k}-")]
        assert mine == list(range(N_TURNS))

    # each reply answers the right prompt, once, after its prompt
    user_of = {e.id: e for e in users}
    seq_of_reply: dict[str, int] = {}
    for kind in (
        "assistant.turn_start",
        "assistant.message",
        "assistant.usage",
        "assistant.turn_end",
    ):
        per_turn = [e for e in events if e.type == kind]
        assert len({e.data["messageId"] for e in per_turn}) == total, f"{kind} repeated"
        for e in per_turn:
            assert e.data["messageId"] in user_of and e.seq > user_of[e.data["messageId"]].seq
    for e in events:
        if e.type == "assistant.message":
            assert e.data["content"] == "echo: " + user_of[e.data["messageId"]].data["content"]
            seq_of_reply[user_of[e.data["messageId"]].data["content"]] = e.seq

    meta = store.get_session("shared")
    assert meta["messageCount"] == 2 * total  # start and resume events count no messages
    assert meta["turnCount"] == total

    # What each worker saw: its replies, and a context that is a consistent view of the log.
    seq_of_user = {e.data["content"]: e.seq for e in users}
    id_of_user = {e.data["content"]: e.id for e in users}
    for k, turns in results.items():
        assert [t["prompt"] for t in turns] == [f"p{k}-{i}" for i in range(N_TURNS)]
        for turn in turns:
            prompt = turn["prompt"]
            assert turn["ok"], turn
            assert turn["reply"] == f"echo: {prompt}"
            assert turn["messageId"] == id_of_user[prompt]
            context = turn["context"]
            assert context[-1] == ["user", prompt]
            pairs = context[:-1]
            assert len(pairs) % 2 == 0
            shown = []
            for (role_u, text_u), (role_a, text_a) in zip(pairs[::2], pairs[1::2], strict=True):
                assert (role_u, role_a) == ("user", "assistant")
                assert text_a == f"echo: {text_u}", "a reply paired with the wrong prompt"
                shown.append(text_u)
            # in log order, each exchange once, the process's own earlier turns all there
            assert [seq_of_user[p] for p in shown] == sorted(seq_of_user[p] for p in set(shown))
            assert len(set(shown)) == len(shown)
            own_seq = seq_of_user[prompt]
            assert prompt not in shown
            # everything answered before this prompt was stored is shown ...
            answered_before = {p for p, s in seq_of_reply.items() if s < own_seq}
            assert answered_before <= set(shown), sorted(answered_before - set(shown))
            # ... and what is shown is a prefix of the log: no later reply without an earlier one
            if shown:
                horizon = max(seq_of_reply[p] for p in shown)
                complete = {p for p, s in seq_of_reply.items() if s <= horizon and p != prompt}
                assert complete == set(shown)

    # still resumable, with all 100 exchanges as context, in log order
    with CopilotClient(base_directory=home, fallback_model="echo") as client:
        session = client.resume_session("shared")
        assert session.send_and_wait("final").data["content"] == "echo: final"
        context = [[m.role, m.content] for m in client.get_provider("echo").requests[-1].messages]
        in_order = sorted(prompts, key=seq_of_user.__getitem__)
        assert context == [
            m for p in in_order for m in (["user", p], ["assistant", f"echo: {p}"])
        ] + [["user", "final"]]
        _check_chain(session.get_messages())
    assert store.get_session("shared")["messageCount"] == 2 * total + 2
    store.close()


@pytest.mark.timeout(60)
def test_two_processes_alternating_see_each_others_turns(home: str) -> None:
    with CopilotClient(base_directory=home, fallback_model="echo") as client:
        client.create_session("duo", model="echo")
    a, b = Worker("serve", home=home, sid="duo"), Worker("serve", home=home, sid="duo")
    try:
        a.expect("READY")
        b.expect("READY")
        history: list[str] = []
        for i in range(3):
            for name, worker in (("a", a), ("b", b)):
                prompt = f"{name}{i}"
                result = worker.request(op="send", prompt=prompt)
                assert result["ok"], result
                assert result["reply"] == f"echo: {prompt}"
                # the other process's turns are in this one's model context, in order
                expected = [m for p in history for m in (["user", p], ["assistant", f"echo: {p}"])]
                assert result["context"] == [*expected, ["user", prompt]]
                history.append(prompt)
        a.request(op="quit")
        b.request(op="quit")
        a.finish()
        b.finish()
    finally:
        _stop([a, b])
    store = _store(home)
    users = [e.data["content"] for e in store.read_events("duo") if e.type == "user.message"]
    assert users == history
    store.close()


@pytest.mark.timeout(90)
def test_delete_in_one_process_while_another_appends(home: str) -> None:
    # a slow stream, so the delete is likely to land inside a turn
    worker = _serving(home, "doomed", chunk_delay=0.01, timeout=5)
    try:
        worker.write(json.dumps({"op": "loop", "prefix": "w", "n": 100_000}))
        for _ in range(3):
            worker.expect("TURN")
        with CopilotClient(base_directory=home, fallback_model="echo") as client:
            client.delete_session("doomed")
            assert "doomed" not in [s["sessionId"] for s in client.list_sessions()]
        outcome = worker.expect("REPLY", timeout=30)
        # the appender is told, it does not hang and does not recreate the session
        assert outcome["failure"] is not None
        assert outcome["failure"]["error"] == "SessionNotFoundError", outcome["failure"]
        again = worker.request(op="send", prompt="again", timeout=30)
        assert not again["ok"] and again["error"] == "SessionNotFoundError", again
        # Below the drain bound stop(timeout=10) of tests/procs.py: a stop that found a turn
        # still hanging waits all of it. Not a speed claim, so generous for a loaded machine.
        assert worker.request(op="quit")["stopSeconds"] < 10
        worker.finish()
    finally:
        _stop([worker])
    store = _store(home)
    assert store.read_events("doomed") == []
    assert store.get_session("doomed") is None
    assert store.last_seq("doomed") == 0
    assert all(s["sessionId"] != "doomed" for s in store.list_sessions())
    store.close()
    # no orphan: not one key of the session is left in the table
    assert [k for k in _raw_keys(home) if "doomed" in k] == []


@pytest.mark.timeout(60)
def test_delete_removes_large_events_another_process_stored_in_files(home: str) -> None:
    """Events over 1 MiB live in files beside the database; delete leaves none behind."""
    big = ("y" * 1000 + " ") * 1100
    worker = _serving(home, "big")
    try:
        assert worker.request(op="send", prompt=big)["reply"] == f"echo: {big}"
        worker.request(op="quit")
        worker.finish()
    finally:
        _stop([worker])

    def files() -> list[Path]:
        return sorted((Path(home) / "sessions").rglob("*.val"))

    assert len(files()) == 2  # the prompt and the reply
    with CopilotClient(base_directory=home, fallback_model="echo") as client:
        events = client.resume_session("big").get_messages()
        assert [e.data["content"] for e in events if e.type == "user.message"] == [big]
        client.delete_session("big")
    assert files() == []
    assert [k for k in _raw_keys(home) if "big" in k] == []


@pytest.mark.timeout(60)
def test_session_deleted_and_recreated_elsewhere_does_not_leak_its_old_context(home: str) -> None:
    """A process holding a session open must not send a deleted conversation to the model."""
    worker = _serving(home, "reused", timeout=8)
    try:
        for i in range(3):
            assert worker.request(op="send", prompt=f"secret-{i}")["ok"]
        with CopilotClient(base_directory=home, fallback_model="echo") as client:
            client.delete_session("reused")
            client.create_session("reused", model="echo").send_and_wait("fresh")
        result = worker.request(op="send", prompt="after")
        if result["ok"]:  # it continues in the new session, with that session's context
            assert result["context"] == [
                ["user", "fresh"],
                ["assistant", "echo: fresh"],
                ["user", "after"],
            ], "the deleted conversation was sent to the model"
        else:  # or it is told its session is gone
            assert result["error"] in ("SessionNotFoundError", "SessionClosedError"), result
        worker.request(op="quit")
        worker.finish()
    finally:
        _stop([worker])
    store = _store(home)
    stored = json.dumps([e.to_dict() for e in store.read_events("reused")])
    assert "secret" not in stored
    store.close()


@pytest.mark.timeout(60)
def test_resume_in_a_process_holding_a_session_deleted_elsewhere(home: str) -> None:
    """resume_session must not hand back a stale open session: the store decides."""
    worker = _serving(home, "gone", timeout=8)
    try:
        assert worker.request(op="send", prompt="one")["ok"]
        with CopilotClient(base_directory=home, fallback_model="echo") as client:
            client.delete_session("gone")
        result = worker.request(op="resume")
        assert not result["ok"] and result["error"] == "SessionNotFoundError", result

        # deleted and created again: resume opens the new session, with its history
        with CopilotClient(base_directory=home, fallback_model="echo") as client:
            client.create_session("gone", model="echo").send_and_wait("new life")
        result = worker.request(op="resume")
        assert result["ok"], result
        assert result["types"][0] == "session.start" and result["types"][-1] == "session.resume"
        reply = worker.request(op="send", prompt="hello again")
        assert reply["ok"], reply
        assert reply["context"] == [
            ["user", "new life"],
            ["assistant", "echo: new life"],
            ["user", "hello again"],
        ]
        worker.request(op="quit")
        worker.finish()
    finally:
        _stop([worker])


@pytest.mark.timeout(60)
def test_concurrent_create_of_one_id_has_exactly_one_winner(home: str) -> None:
    workers = [Worker("create", home=home, sid="race") for _ in range(N_PROCS)]
    try:
        for worker in workers:
            worker.expect("READY")
        for worker in workers:
            worker.go()
        outcomes = sorted(worker.expect("CREATED") for worker in workers)
        for worker in workers:
            worker.finish()
    finally:
        _stop(workers)
    assert outcomes == ["created"] + ["exists"] * (N_PROCS - 1)
    store = _store(home)
    events = store.read_events("race")
    assert [e.type for e in events] == ["session.start"]
    assert [s["sessionId"] for s in store.list_sessions()] == ["race"]
    store.close()
