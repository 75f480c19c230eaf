"""The defects adversarial testing found, each as a test: recovery however far back, forks that
are consistent and crash-safe, options checked before a turn is queued, no key behind an
error's context, and a soak of writers, a forker and a deleter under random SIGKILLs."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import stream_once
from procs import Worker

from copilot import (
    CopilotClient,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    ProviderError,
)
from copilot.events import Event, EventType, new_id
from copilot.providers.base import ChatMessage
from copilot.providers.openai import OpenAIProvider
from copilot.store import EventStore
from copilot.testing import Fault, ScriptedOpenAIServer

#: a reply of 61 pieces: with chunk_delay 0.1 s it streams for six seconds
LONG_PROMPT = " ".join(f"word{i}" for i in range(60))
_OUTCOMES = ("assistant.message", "abort", "session.error")


def _client(home: str, **providers: Any) -> CopilotClient:
    client = CopilotClient(base_directory=home, fallback_model="echo", providers=providers)
    client.start()
    return client


def _code_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _outcomes(events: list[Event]) -> dict[str, list[str]]:
    """Each prompt's id -> the outcome events (reply, error or abort) recorded for it."""
    found: dict[str, list[str]] = {e.id: [] for e in events if e.type == "user.message"}
    for event in events:
        if event.type in _OUTCOMES and event.data.get("messageId") in found:
            found[event.data["messageId"]].append(event.type)
    return found


def _counts(events: list[Event]) -> tuple[int, int]:
    """(turnCount, messageCount) as turns count them: prompts, and prompts plus replies."""
    prompts = sum(1 for e in events if e.type == "user.message")
    return prompts, prompts + sum(1 for e in events if e.type == "assistant.message")


def _assert_whole(events: list[Event]) -> None:
    """Every prompt has exactly one outcome and one turn end; sequence numbers have no gap."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    for message_id, outcomes in _outcomes(events).items():
        assert len(outcomes) == 1, (message_id, outcomes)
    ends = [e.data["messageId"] for e in events if e.type == "assistant.turn_end"]
    assert len(ends) == len(set(ends))


# -- 1. recovery looks as far back as it must ------------------------------------------------


@pytest.mark.timeout(120)
def test_a_dead_turn_is_recovered_after_more_than_200_later_events(home: str) -> None:
    client = _client(home)
    session = client.create_session("far", model="echo")  # client B keeps it open
    session.send_and_wait("before")
    worker = Worker("stream", home=home, sid="far", prompt=LONG_PROMPT, chunk_delay=0.1)
    try:
        message_id = worker.expect("DELTA")
    finally:
        worker.kill()  # SIGKILL after assistant.turn_start
    for i in range(45):  # 45 turns x 5 events: the dead turn is 225+ events back
        session.send_and_wait(f"later {i}")
    client.stop()

    fresh = _client(home)
    try:
        events = fresh.resume_session("far").get_messages()
        resume = [e for e in events if e.type == "session.resume"][-1]
        assert resume.data["interruptedTurns"] == 1
        assert len([e for e in events if e.seq > events[-1].seq - 230]) >= 225
        assert _outcomes(events)[message_id] == ["abort"]
        _assert_whole(events)
    finally:
        fresh.stop()


def test_open_turns_cost_does_not_grow_with_the_log(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "store")
    store.create_session({"sessionId": "s", "model": "echo"})
    start = Event(EventType.ASSISTANT_TURN_START, {"messageId": "old", "pid": 1})
    store.append("s", [Event(EventType.USER_MESSAGE, {"content": "p"}, id="old"), start])
    for i in range(2000):
        mid = new_id()
        store.append(
            "s",
            [
                Event(EventType.USER_MESSAGE, {"content": f"p{i}"}, id=mid),
                Event(EventType.ASSISTANT_TURN_START, {"messageId": mid}),
                Event(EventType.ASSISTANT_TURN_END, {"messageId": mid}),
            ],
        )
    seen: list[str] = []
    store._cache._con.set_trace_callback(seen.append)
    try:
        found = store.open_turns("s")
    finally:
        store._cache._con.set_trace_callback(None)
    assert [e.data["messageId"] for e in found] == ["old"]
    assert len(seen) <= 3  # the head, and one key per open turn: no scan of the log
    store.close()


def test_a_head_written_before_open_turns_existed_is_completed(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "store")
    store.create_session({"sessionId": "s", "model": "echo"})
    start = Event(EventType.ASSISTANT_TURN_START, {"messageId": "m"})
    store.append("s", [Event(EventType.USER_MESSAGE, {"content": "p"}, id="m"), start])
    store._set("h/s", {"seq": 2, "last": start.id})  # the previous version's head
    assert [e.id for e in store.open_turns("s")] == [start.id]
    store.append("s", [Event(EventType.ASSISTANT_TURN_END, {"messageId": "m"})])
    assert store.open_turns("s") == []
    assert store._get("h/s")["open"] == {}
    store.close()


# -- 2. a fork copies a consistent snapshot ----------------------------------------------------


@pytest.mark.timeout(60)
def test_a_fork_during_a_running_reply_copies_only_completed_turns(home: str) -> None:
    client = _client(home, echo={"chunk_delay": 0.05})
    try:
        source = client.create_session("src", model="echo")
        source.send_and_wait("done before")
        started = threading.Event()
        source.on(lambda e: started.set() if e.type == "assistant.message_delta" else None)
        running = source.send(" ".join(f"w{i}" for i in range(20)))  # about 1 s of reply
        assert started.wait(10)
        fork = client.fork_session("src", "copy")
        source._runner.run(source._core.wait_for(running, 30))

        copied = client.get_messages("copy")
        assert [e.data.get("content") for e in copied if e.type == "user.message"] == [
            "done before"
        ]
        _assert_whole(copied)
        meta = client.get_session_metadata("copy")
        assert (meta["turnCount"], meta["messageCount"]) == (1, 2)
        assert _outcomes(client.get_messages("src"))[running] == ["assistant.message"]
        reply = fork.send_and_wait("in the fork")  # the fork goes on from the snapshot
        assert reply.data["content"] == "echo: in the fork"
    finally:
        client.stop()
    again = _client(home)
    try:
        _assert_whole(again.resume_session("copy").get_messages())
    finally:
        again.stop()


def test_copies_remap_ids_skip_lifecycle_events_and_take_the_new_model(home: str) -> None:
    client = _client(home)
    try:
        source = client.create_session("src", model="echo")
        first = source.send_and_wait("first").data["messageId"]
        source.send_and_wait("again", replaces=first)
        client.resume_session("src")  # adds a session.resume
        client.fork_session("src", "copy", model="echo:echo")
        copied = client.get_messages("copy")
        assert [e.type for e in copied].count("session.start") == 1
        assert "session.resume" not in [e.type for e in copied]
        assert copied[0].data["model"] == "echo:echo"
        assert client.get_session_metadata("copy")["model"] == "echo:echo"
        source_ids = {e.id for e in client.get_messages("src")}
        prompts = [e for e in copied if e.type == "user.message"]
        assert not source_ids & {e.id for e in copied}
        assert prompts[1].data["replaces"] == prompts[0].id
        for event in copied:
            if "messageId" in event.data:
                assert event.data["messageId"] in {p.id for p in prompts}
    finally:
        client.stop()


@pytest.mark.timeout(120)
def test_fork_metadata_counts_what_it_copied_under_concurrent_writes(home: str) -> None:
    client = _client(home)
    client.create_session("busy", model="echo").send_and_wait("seed")
    writers = [Worker("serve", home=home, sid="busy") for _ in range(2)]
    try:
        for worker in writers:
            worker.expect("READY")
            worker.write(json.dumps({"op": "loop", "prefix": f"w{worker.pid}", "n": 60}))
        for k in range(12):
            client.fork_session("busy", f"fork-{k}")
            time.sleep(0.05)
        for worker in writers:
            assert worker.expect("REPLY", 60)["failure"] is None
            worker.request(op="quit")
    finally:
        for worker in writers:
            worker.kill()
    try:
        for k in range(12):
            events = client.get_messages(f"fork-{k}")
            meta = client.get_session_metadata(f"fork-{k}")
            assert (meta["turnCount"], meta["messageCount"]) == _counts(events)
            _assert_whole(events)
    finally:
        client.stop()


# -- 3. a fork is whole or absent after SIGKILL ------------------------------------------------


def _big_session(home: str, turns: int = 7000) -> int:
    """A session of ``turns`` completed turns (5 events each) written straight to the store."""
    client = _client(home)
    client.create_session("big", model="echo")
    client.stop()
    store = EventStore(Path(home) / "sessions")
    batch: list[Event] = []
    for i in range(turns):
        mid = new_id()
        batch += [
            Event(EventType.USER_MESSAGE, {"content": f"prompt {i}"}, id=mid),
            Event(EventType.ASSISTANT_TURN_START, {"messageId": mid, "model": "echo"}),
            Event(EventType.ASSISTANT_MESSAGE, {"messageId": mid, "content": f"reply {i}"}),
            Event(EventType.ASSISTANT_USAGE, {"messageId": mid}),
            Event(EventType.ASSISTANT_TURN_END, {"messageId": mid}),
        ]
        if len(batch) >= 5000:
            store.append("big", batch)
            batch = []
    store.append("big", batch)
    total = store.last_seq("big")
    store.close()
    return total


_FORKER = textwrap.dedent(
    """
    import sys
    from copilot import CopilotClient
    client = CopilotClient(base_directory=sys.argv[1], fallback_model="echo")
    client.start()
    print("FORKING", flush=True)
    client.fork_session("big", sys.argv[2])
    print("FORKED", flush=True)
    client.stop()
    """
)


@pytest.mark.timeout(300)
def test_a_fork_killed_at_random_moments_is_whole_or_absent(home: str) -> None:
    total = _big_session(home)
    assert total >= 35_000
    rng = random.Random(11)
    outcomes = []
    for attempt in range(4):
        fork_id = f"fork-{attempt}"
        child = subprocess.Popen(
            [sys.executable, "-c", _FORKER, home, fork_id],
            stdout=subprocess.PIPE,
            text=True,
            env=_code_env(),
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "FORKING"
        time.sleep(rng.uniform(0.0, 0.6))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        client = _client(home)
        try:
            meta = client.get_session_metadata(fork_id)
            store = client._core.store
            events = store.read_events(fork_id)
            if meta is None:
                outcomes.append("absent")
                assert events == []
                client.fork_session("big", fork_id)  # a retry works: nothing half-made
                events = store.read_events(fork_id)
                meta = client.get_session_metadata(fork_id)
            else:
                outcomes.append("whole")
            assert len(events) == 1 + (total - 1)  # its start + every copied event
            assert meta["messageCount"] == 14_000 and meta["turnCount"] == 7000
            assert client.check() == []
        finally:
            client.stop()
    assert "absent" in outcomes, outcomes  # at least one kill landed inside the fork


# -- 4. options are checked before the turn is queued ----------------------------------------

_BAD_OPTIONS = [
    ({"max_tokens": "abc"}, InvalidArgumentTypeError, "max_tokens is an integer >= 1"),
    ({"max_tokens": 0}, InvalidArgumentError, "max_tokens is an integer >= 1"),
    ({"max_tokens": True}, InvalidArgumentTypeError, "max_tokens"),
    ({"max_tokens": 1.5}, InvalidArgumentTypeError, "max_tokens"),
    ({"temperature": math.nan}, InvalidArgumentError, "temperature is a finite number from 0 to 2"),
    ({"temperature": math.inf}, InvalidArgumentError, "temperature"),
    ({"temperature": 2.5}, InvalidArgumentError, "from 0 to 2"),
    ({"temperature": "hot"}, InvalidArgumentTypeError, "temperature"),
    ({"top_p": -0.1}, InvalidArgumentError, "top_p is a finite number from 0 to 1"),
    ({"seed": 2**64}, InvalidArgumentError, "seed"),
    ({"seed": False}, InvalidArgumentTypeError, "seed"),
    ({"stop": 5}, InvalidArgumentTypeError, "stop is a string or a list"),
    ({"stop": ["a", "b", "c", "d", "e"]}, InvalidArgumentError, "stop"),
    ({"stop": [""]}, InvalidArgumentError, "stop"),
    ({"timeout": 0}, InvalidArgumentError, "timeout is a finite number > 0"),
    ({"timeout": -math.inf}, InvalidArgumentError, "timeout"),
    ({"replaces": 123}, InvalidArgumentTypeError, "replaces is the message id"),
    ({"replaces": ""}, InvalidArgumentError, "replaces"),
    ({"metadata": {"x": math.nan}}, InvalidArgumentError, "metadata"),
    ({"max_token": 5}, InvalidArgumentError, "unknown option max_token"),
]


@pytest.mark.parametrize(
    ("options", "error", "words"), _BAD_OPTIONS, ids=[repr(o[0])[:40] for o in _BAD_OPTIONS]
)
def test_a_bad_send_option_is_refused_before_anything_is_queued(
    client: CopilotClient, options: dict, error: type, words: str
) -> None:
    session = client.create_session("opts", model="echo")
    before = client.get_messages("opts")
    with pytest.raises(error) as raised:
        session.send("hello", **options)
    assert words in str(raised.value)
    with pytest.raises(error):
        session.send_and_wait("hello", **options)
    with pytest.raises(error):  # the SDK's dict form goes through the same checks
        session.send({"prompt": "hello", **options})
    assert client.get_messages("opts") == before  # nothing queued, nothing stored
    assert session.send_and_wait("still fine").data["content"] == "echo: still fine"


def test_good_options_pass_unchanged_and_reach_the_provider(client: CopilotClient) -> None:
    session = client.create_session("opts", model="echo")
    options = {"temperature": 0, "max_tokens": 1, "top_p": 1.0, "seed": -5, "stop": ["\n"]}
    session.send_and_wait("hi", **options, timeout=30)
    sent = client.get_provider("echo").requests[-1].options
    assert sent == {**options, "temperature": 0.0}
    session.send_and_wait("hi", temperature=2, max_tokens=None)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"timeout": "soon"}, InvalidArgumentTypeError, "timeout"),
        ({"timeout": math.nan}, InvalidArgumentError, "timeout"),
        ({"timeout": 0}, InvalidArgumentError, "timeout"),
    ],
)
def test_send_and_wait_checks_its_own_timeout(
    client: CopilotClient, kwargs: dict, error: type, words: str
) -> None:
    session = client.create_session("opts", model="echo")
    with pytest.raises(error, match=words):
        session.send_and_wait("hello", **kwargs)
    assert client.get_messages("opts")[-1].type == "session.start"


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"streaming": "yes"}, InvalidArgumentTypeError, "streaming is True or False"),
        ({"streaming": 1}, InvalidArgumentTypeError, "streaming"),
        ({"model": 123}, InvalidArgumentTypeError, "model is a non-empty string"),
        ({"model": " "}, InvalidArgumentError, "model"),
    ],
)
def test_create_session_checks_its_options_before_storing(
    client: CopilotClient, kwargs: dict, error: type, words: str
) -> None:
    with pytest.raises(error, match=words):
        client.create_session("made", **kwargs)
    assert client.get_session_metadata("made") is None


# -- provider errors do not keep the key in their context ----------------------------------

KEY = "sk-reliability-SECRET-4f1c9e"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("status", [401, 403, 400, 429, 500])
def test_no_chained_exception_of_a_provider_error_holds_the_key(
    monkeypatch: pytest.MonkeyPatch, openai_server: ScriptedOpenAIServer, status: int
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    body = {"error": {"message": f"Incorrect API key provided: {KEY}", "type": "x"}}
    openai_server.enqueue(Fault.status(status, body=body))
    provider = OpenAIProvider({"base_url": openai_server.base_url})
    hello = (ChatMessage("user", "hello"),)
    _, error = stream_once(provider, "gpt-4o", hello, None, None)
    assert isinstance(error, ProviderError)
    seen, chain = 0, [error]
    while chain and seen < 20:
        exc = chain.pop()
        seen += 1
        assert KEY not in f"{exc!s} {exc!r} {getattr(exc, 'body', '')}", type(exc)
        chain += [c for c in (exc.__cause__, exc.__context__) if c is not None]


# -- soak: writers, a forker and a deleter under random SIGKILLs ----------------------------

_SOAK_WRITER = textwrap.dedent(
    """
    import sys, itertools
    from copilot import CopilotClient, CopilotError
    client = CopilotClient(base_directory=sys.argv[1], fallback_model="echo",
                           providers={"echo": {"chunk_delay": 0.002}})
    client.start()
    sid = sys.argv[2]
    for i in itertools.count():
        try:
            try:
                session = client.resume_session(sid)
            except CopilotError:
                session = client.create_session(sid, model="echo")
            session.send_and_wait(f"{sid} turn {i} " + "w " * 20, timeout=30)
        except CopilotError:
            pass  # deleted meanwhile by the deleter: start again
    """
)
_SOAK_FORKER = textwrap.dedent(
    """
    import sys, itertools, random, time
    from copilot import CopilotClient, CopilotError
    client = CopilotClient(base_directory=sys.argv[1], fallback_model="echo")
    client.start()
    for i in itertools.count():
        try:
            time.sleep(0.05)
            client.fork_session(random.choice(sys.argv[2:]), f"fork-{random.random():.9f}")
        except CopilotError:
            pass
    """
)
_SOAK_DELETER = textwrap.dedent(
    """
    import sys, time, random
    from copilot import CopilotClient, CopilotError
    client = CopilotClient(base_directory=sys.argv[1], fallback_model="echo")
    client.start()
    while True:
        time.sleep(0.5)
        forks = [s["sessionId"] for s in client.list_sessions()
                 if s["sessionId"].startswith("fork-")]
        for sid in random.sample(forks, min(2, len(forks))) + [random.choice(sys.argv[2:])]:
            try:
                client.delete_session(sid)
            except CopilotError:
                pass
    """
)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_soak_writers_forker_deleter_with_random_kills(home: str) -> None:
    duration = float(os.environ.get("COPILOT_SOAK_SECONDS", "60"))
    sids = [f"soak-{n}" for n in range(4)]
    rng = random.Random(2026)
    roles = [(_SOAK_WRITER, [sid]) for sid in sids]
    roles += [(_SOAK_FORKER, sids), (_SOAK_DELETER, sids)]

    def spawn(code: str, args: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", code, home, *args],
            env=_code_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    procs = [spawn(code, args) for code, args in roles]
    kills = 0
    deadline = time.monotonic() + duration
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.2, 1.5))
            index = rng.randrange(len(procs))
            os.kill(procs[index].pid, signal.SIGKILL)
            procs[index].wait(10)
            kills += 1
            procs[index] = spawn(*roles[index])
            for proc in procs:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    client = _client(home)  # no writer lives now: resuming closes their open turns
    try:
        sessions = client.list_sessions()
        assert kills >= duration / 2
        forks = [s for s in sessions if s["sessionId"].startswith("fork-")]
        for meta in sessions:
            client.resume_session(meta["sessionId"])
            events = client.get_messages(meta["sessionId"])
            _assert_whole(events)
            if meta["sessionId"].startswith("fork-"):
                # a fork's metadata counts exactly what it holds (it gets no turns later)
                stored = client.get_session_metadata(meta["sessionId"])
                assert (stored["turnCount"], stored["messageCount"]) == _counts(events)
        assert [d for d in client.check() if d["kind"] != "orphan-file"] == []
        print(f"soak: {kills} kills, {len(sessions)} sessions, {len(forks)} forks")
    finally:
        client.stop()
