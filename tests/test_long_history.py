"""History editing, SDK-shaped: fork at a point, truncate (session.snapshot_rewind), a display
title (session.title_changed), and a real rename of the id in one store transaction, on the
diskcache store and a real PostgreSQL, and across two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from store_workers import open_store

from copilot import CopilotClient, EventType
from copilot.errors import (
    InvalidArgumentError,
    SessionExistsError,
    SessionNotFoundError,
)
from copilot.events import Event
from copilot.testing import ScriptedOpenAIServer

# -- the store's rename, on both stores --------------------------------------------------------


@pytest.fixture(params=["diskcache", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "diskcache":
        spec: dict[str, Any] = {"kind": "diskcache", "path": str(tmp_path / "sessions")}
    else:
        url = request.getfixturevalue("postgres_server").new_database()
        spec = {"kind": "postgres", "url": url, "owner": "tester"}
    opened = open_store(spec)
    yield opened
    opened.close()


def _meta(session_id: str) -> dict[str, Any]:
    return {
        "sessionId": session_id,
        "modifiedTime": "2026-01-01T00:00:00+00:00",
        "messageCount": 0,
        "turnCount": 0,
        "title": "kept",
    }


def _prompts(n: int) -> list[Event]:
    return [Event(EventType.USER_MESSAGE, {"content": f"p{i}"}) for i in range(n)]


def test_rename_moves_log_head_and_metadata(store: Any) -> None:
    store.create_session(_meta("old"))
    before = store.append("old", _prompts(3))
    renamed = store.rename_session("old", "new")
    assert renamed["sessionId"] == "new" and renamed["title"] == "kept"
    assert store.get_session("old") is None
    assert store.read_events("old") == []
    assert store.read_events("new") == before
    assert [s["sessionId"] for s in store.list_sessions()] == ["new"]
    # the head moved too: the next event continues the chain
    nxt = store.append("new", _prompts(1))[0]
    assert nxt.seq == 4 and nxt.parent_id == before[-1].id
    with pytest.raises(SessionNotFoundError):
        store.append("old", _prompts(1))


def test_rename_refuses_a_taken_id_and_changes_nothing(store: Any) -> None:
    store.create_session(_meta("a"))
    store.create_session(_meta("b"))
    events_a = store.append("a", _prompts(2))
    events_b = store.append("b", _prompts(1))
    with pytest.raises(SessionExistsError):
        store.rename_session("a", "b")
    assert store.read_events("a") == events_a and store.read_events("b") == events_b
    with pytest.raises(SessionNotFoundError):
        store.rename_session("missing", "c")
    assert store.get_session("c") is None


# -- the client: truncate, fork at, title, rename ----------------------------------------------


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-history")
    with ScriptedOpenAIServer() as srv:
        yield srv


def _client(home: str, server: ScriptedOpenAIServer) -> CopilotClient:
    return CopilotClient(base_directory=home, providers={"openai": {"base_url": server.base_url}})


def _sent(server: ScriptedOpenAIServer) -> list[str]:
    return [m["content"] for m in server.chat_requests[-1].json["messages"]]


def test_truncate_rewinds_the_context_and_keeps_the_log(home, server):
    client = _client(home, server)
    session = client.create_session(session_id="t", model="openai:gpt-4o")
    first = session.send_and_wait("one")
    session.send_and_wait("two")
    session.send_and_wait("three")
    end_of_first = next(
        e
        for e in session.get_events()
        if e.type == EventType.ASSISTANT_TURN_END and e.data.messageId == first.data.messageId
    )
    total = len(session.get_events())
    rewind = session.truncate(end_of_first.id)
    assert rewind.type == EventType.SESSION_SNAPSHOT_REWIND
    assert rewind.data.upToEventId == end_of_first.id
    assert rewind.data.eventsRemoved == total - end_of_first.seq
    assert len(rewind.data.messageIds) == 2
    # the log keeps everything, the rewind is one more event
    assert len(session.get_events()) == total + 1
    assert client.get_session_metadata("t")["turnCount"] == 1
    session.send_and_wait("four")
    assert _sent(server) == ["one", "echo: one", "four"]
    with pytest.raises(InvalidArgumentError, match="has no event"):
        session.truncate("nope")
    client.stop()


def test_truncate_through_a_turn_removes_that_turn(home, server):
    client = _client(home, server)
    session = client.create_session(model="openai:gpt-4o")
    session.send_and_wait("one")
    second = session.send_and_wait("two")
    prompt = next(e for e in session.get_events() if e.id == second.data.messageId)
    session.truncate(prompt.id)  # keeps the prompt event; its reply goes
    session.send_and_wait("three")
    assert _sent(server) == ["one", "echo: one", "three"]
    client.stop()


def test_fork_at_an_event(home, server):
    client = _client(home, server)
    session = client.create_session(session_id="src", model="openai:gpt-4o")
    first = session.send_and_wait("one")
    session.send_and_wait("two")
    point = first.id  # the first reply: the fork keeps turn one, whole
    fork = client.fork_session("src", "dst", to_event_id=point)
    fork.send_and_wait("other")
    assert _sent(server) == ["one", "echo: one", "other"]
    # a point inside a turn leaves that turn out (no open turn in the fork)
    start = next(e for e in session.get_events() if e.type == EventType.ASSISTANT_TURN_START)
    cut = client.fork_session("src", "cut", to_event_id=start.id)
    assert [e.type for e in cut.get_events()] == [EventType.SESSION_START]
    assert client.get_session_metadata("cut")["turnCount"] == 0
    with pytest.raises(InvalidArgumentError, match="no completed-turn event"):
        client.fork_session("src", "bad", to_event_id="nope")
    assert client.get_session_metadata("bad") is None
    # rewound events are not copied
    session.truncate(first.id)
    client.fork_session("src", "after-rewind").send_and_wait("x")
    assert _sent(server) == ["one", "echo: one", "x"]
    client.stop()


def test_title_is_separate_from_the_id(home, server):
    client = _client(home, server)
    session = client.create_session(session_id="id-1", model="openai:gpt-4o")
    event = session.set_title("  My   analysis ")
    assert event.type == EventType.SESSION_TITLE_CHANGED and event.data.title == "My analysis"
    meta = client.get_session_metadata("id-1")
    assert meta["title"] == "My analysis" and meta["sessionId"] == "id-1"
    with pytest.raises(InvalidArgumentError):
        session.set_title("   ")
    assert client.get_session_metadata("id-1")["title"] == "My analysis"
    client.stop()


def test_rename_through_the_client_closes_the_open_object(home, server):
    client = _client(home, server)
    session = client.create_session(session_id="before", model="openai:gpt-4o")
    session.send_and_wait("one")
    session.set_title("T")
    meta = client.rename_session("before", "after")
    assert meta["sessionId"] == "after" and meta["title"] == "T"
    assert session.closed
    assert client.get_session_metadata("before") is None
    client.resume_session("after").send_and_wait("two")
    assert _sent(server) == ["one", "echo: one", "two"]
    with pytest.raises(InvalidArgumentError, match="the new id is the old one"):
        client.rename_session("after", "after")
    client.stop()


_CHILD = textwrap.dedent(
    """
    import json, sys
    from copilot import CopilotClient
    home, url, step = sys.argv[1], sys.argv[2], sys.argv[3]
    client = CopilotClient(base_directory=home, providers={"openai": {"base_url": url}})
    out = {}
    if step == "edit":
        s = client.resume_session("shared")
        events = s.get_events()
        first_end = [e for e in events if e.type == "assistant.turn_end"][0]
        s.truncate(first_end.id)
        s.send_and_wait("from the child")
        client.fork_session("shared", "child-fork", to_event_id=first_end.id)
        s.disconnect()
        client.rename_session("shared", "renamed")
    out["sessions"] = sorted(m["sessionId"] for m in client.list_sessions())
    client.stop()
    print(json.dumps(out))
    """
)


def test_truncate_fork_at_and_rename_across_two_processes(home, server):
    client = _client(home, server)
    session = client.create_session(session_id="shared", model="openai:gpt-4o")
    session.send_and_wait("one")
    session.send_and_wait("two")
    session.disconnect()
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-history"}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, home, server.base_url, "edit"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["sessions"] == ["child-fork", "renamed"]
    assert _sent(server) == ["one", "echo: one", "from the child"]
    # this process sees the other's edits: the old id is gone, the new one has the rewind
    assert client.get_session_metadata("shared") is None
    with pytest.raises(SessionNotFoundError):
        client.resume_session("shared")
    renamed = client.resume_session("renamed")
    renamed.send_and_wait("back here")
    assert _sent(server) == [
        "one",
        "echo: one",
        "from the child",
        "echo: from the child",
        "back here",
    ]
    client.resume_session("child-fork").send_and_wait("fork")
    assert _sent(server) == ["one", "echo: one", "fork"]
    client.stop()


def test_rewound_turns_stay_recoverable_by_a_fork_inside_the_removed_range(home, server):
    client = _client(home, server)
    session = client.create_session(session_id="r", model="openai:gpt-4o")
    first = session.send_and_wait("one")
    second = session.send_and_wait("two")
    session.send_and_wait("three")
    session.truncate(first.id)  # "two" and "three" leave the conversation
    session.send_and_wait("four")
    assert _sent(server) == ["one", "echo: one", "four"]
    # the removed events are still in the log: a fork at one of them brings them back
    back = client.fork_session("r", "recovered", to_event_id=second.id)
    back.send_and_wait("five")
    assert _sent(server) == ["one", "echo: one", "two", "echo: two", "five"]
    client.stop()
