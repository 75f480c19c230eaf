"""Infinite sessions: a 200-turn session on a scripted server whose model has a 2,000-token
window compacts by summary; every request fits and holds the summary plus the recent turns;
the summary request itself reaches the server; a fresh process resumes from the summary; a
failing summary falls back to truncation, recorded."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap

import pytest

from copilot import CopilotClient, EventType
from copilot.compaction import (
    SUMMARIZER_INSTRUCTIONS,
    SUMMARY_HEADING,
    compaction_settings,
)
from copilot.errors import InvalidArgumentError, InvalidArgumentTypeError
from copilot.providers.base import estimate_tokens
from copilot.testing import ScriptedOpenAIServer, unused_port

WINDOW = 2000


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-compaction")
    with ScriptedOpenAIServer(context_window=WINDOW) as srv:
        yield srv


def _client(home: str, server: ScriptedOpenAIServer, **providers) -> CopilotClient:
    settings = {"openai": {"base_url": server.base_url, "context_window": WINDOW}, **providers}
    return CopilotClient(base_directory=home, providers=settings, max_retries=0)


def _prompt(i: int) -> str:
    return f"turn {i}: please remember that marker number {i} belongs to the elephant collection"


def _is_summary_request(request) -> bool:
    return request.json["messages"][0]["content"] == SUMMARIZER_INSTRUCTIONS


def _estimate(request) -> int:
    return sum(estimate_tokens(m["content"]) + 4 for m in request.json["messages"])


@pytest.mark.timeout(600)
def test_two_hundred_turns_compact_and_every_request_fits(home, server):
    client = _client(home, server)
    session = client.create_session(
        session_id="long", model="openai:gpt-4o", system_message="You keep track of markers."
    )
    for i in range(200):
        session.send_and_wait(_prompt(i), timeout=60)
    session.compact()  # waits for a background summary that may still be running
    events = session.get_events()
    types = [e.type for e in events]
    starts = [e.data for e in events if e.type == EventType.SESSION_COMPACTION_START]
    completes = [e.data for e in events if e.type == EventType.SESSION_COMPACTION_COMPLETE]
    assert len(starts) >= 5 and len(completes) == len(starts)
    assert all(c["success"] for c in completes)
    for c in completes:
        assert c["postCompactionTokens"] < c["preCompactionTokens"]
        assert c["fromSeq"] <= c["throughSeq"]
    # consecutive summaries cover consecutive ranges of the log
    assert all(b["fromSeq"] > a["throughSeq"] for a, b in itertools.pairwise(completes))
    # the summary replaced truncation: no turn left anything out
    assert EventType.SESSION_TRUNCATION not in types
    # get_events still returns every event: all 200 prompts and replies
    assert types.count(EventType.USER_MESSAGE) == 200
    assert types.count(EventType.ASSISTANT_MESSAGE) == 200

    requests = server.chat_requests
    summaries = [r for r in requests if _is_summary_request(r)]
    chats = [r for r in requests if not _is_summary_request(r)]
    assert len(summaries) == len(starts)  # every summary request reached the server
    assert len(chats) == 200
    for request in requests:
        assert _estimate(request) <= WINDOW  # what we count, and the server's own check passed
    first_done = next(e.seq for e in events if e.type == EventType.SESSION_COMPACTION_COMPLETE)
    prompts_after = [
        e.data.content for e in events if e.type == EventType.USER_MESSAGE and e.seq > first_done
    ]
    later = chats[-len(prompts_after) :]
    for prompt, request in zip(prompts_after, later, strict=True):
        messages = request.json["messages"]
        system = messages[0]["content"]
        assert messages[0]["role"] == "system"
        assert system.startswith("You keep track of markers.")
        assert SUMMARY_HEADING in system  # the summary...
        assert messages[-1]["content"] == prompt  # ...the prompt...
        assert len(messages) >= 5  # ...and at least the two turns before it
    # the last request: the newest summary, then only turns after what it covers
    last_summary = completes[-1]["summary"]
    assert last_summary in chats[-1].json["messages"][0]["content"]
    sent = [m["content"] for m in chats[-1].json["messages"][1:]]
    assert _prompt(0) not in sent and _prompt(199) in sent
    # a summary request holds the transcript of the turns it summarizes, and the summary before
    second = summaries[1].json["messages"][1]["content"]
    assert "Summary of what came before" in second
    totals = client.get_session_metadata("long")["usage"]
    assert totals["turns"] == 200 and totals["compactions"] == len(completes)
    client.stop()

    # a fresh process resumes with the summary in its context
    child = textwrap.dedent(
        """
        import sys
        from copilot import CopilotClient
        home, url = sys.argv[1], sys.argv[2]
        client = CopilotClient(
            base_directory=home,
            providers={"openai": {"base_url": url, "context_window": 2000}},
        )
        client.resume_session("long").send_and_wait("and now, from another process")
        client.stop()
        """
    )
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-compaction"}
    done = subprocess.run(
        [sys.executable, "-c", child, home, server.base_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    resumed = server.chat_requests[-1].json["messages"]
    assert last_summary in resumed[0]["content"]
    assert resumed[-1]["content"] == "and now, from another process"
    assert _prompt(199) in [m["content"] for m in resumed]
    assert _prompt(0) not in [m["content"] for m in resumed[1:]]


@pytest.mark.timeout(300)
def test_a_failing_summary_falls_back_to_truncation(home, server):
    # the summary model's server does not listen: every summary fails at once
    broken = {"base_url": f"http://127.0.0.1:{unused_port()}/v1", "context_window": WINDOW}
    client = _client(home, server, **{"openai-compatible": broken})
    session = client.create_session(
        model="openai:gpt-4o", infinite_sessions={"summary_model": "openai-compatible:summer"}
    )
    for i in range(60):
        session.send_and_wait(_prompt(i), timeout=60)
    events = session.get_events()
    completes = [e.data for e in events if e.type == EventType.SESSION_COMPACTION_COMPLETE]
    assert completes and not any(c["success"] for c in completes)
    assert all(c["fallback"] == "truncation" for c in completes)
    assert all("ProviderConnectionError" in c["error"] for c in completes)
    assert any(e.type == EventType.SESSION_TRUNCATION for e in events)
    for request in server.chat_requests:  # every turn still got its answer, within the window
        assert _estimate(request) <= WINDOW
        assert SUMMARY_HEADING not in request.json["messages"][0]["content"]
    assert len(server.chat_requests) == 60
    client.stop()


def test_compaction_off_truncates_as_before(home, server):
    client = _client(home, server)
    session = client.create_session(model="openai:gpt-4o", infinite_sessions={"enabled": False})
    for i in range(40):
        session.send_and_wait(_prompt(i))
    types = [e.type for e in session.get_events()]
    assert EventType.SESSION_COMPACTION_START not in types
    assert EventType.SESSION_TRUNCATION in types
    assert session.compact() is not None  # compact() works even when automatic is off
    client.stop()


def test_compact_now_and_nothing_to_compact(home, server):
    client = _client(home, server)
    session = client.create_session(model="openai:gpt-4o")
    assert session.compact() is None  # an empty session has nothing to summarize
    for i in range(8):
        session.send_and_wait(_prompt(i))
    done = session.compact()
    assert done is not None and done.data.success
    assert done.data.messageIds  # the oldest turns, while the newest stay as they are
    session.send_and_wait("next")
    sent = server.chat_requests[-1].json["messages"]
    assert SUMMARY_HEADING in sent[0]["content"]
    assert _prompt(7) in [m["content"] for m in sent]
    client.stop()


def test_infinite_sessions_settings_are_checked():
    assert compaction_settings(None).background_compaction_threshold == 0.80
    with pytest.raises(InvalidArgumentError, match="no key 'threshold'"):
        compaction_settings({"threshold": 0.5})
    with pytest.raises(InvalidArgumentError, match="must not exceed"):
        compaction_settings(
            {"background_compaction_threshold": 0.9, "buffer_exhaustion_threshold": 0.8}
        )
    with pytest.raises(InvalidArgumentError, match="above 0 and at most 1"):
        compaction_settings({"buffer_exhaustion_threshold": 1.5})
    with pytest.raises(InvalidArgumentTypeError):
        compaction_settings({"enabled": "yes"})


def test_infinite_sessions_on_resume_are_stored(home, server):
    client = _client(home, server)
    client.create_session(session_id="s", model="openai:gpt-4o").disconnect()
    client.resume_session("s", infinite_sessions={"enabled": False})
    assert client.get_session_metadata("s")["infiniteSessions"]["enabled"] is False
    assert json.dumps(client.get_session_metadata("s"))  # JSON in the metadata
    client.stop()


@pytest.mark.timeout(300)
def test_turns_that_use_tools_count_their_results_and_are_summarized_with_them(home, server):
    """A tool's results fill the window as much as the replies do: the compaction counts them
    (before, a session of tool turns was never compacted, only truncated) and its transcript
    shows each call and its result, cut (what a tool found is what the summary must keep)."""
    from copilot.compaction import TOOL_RESULT_CHARS
    from copilot.testing import Reply, ToolCall
    from copilot.tools import PermissionHandler, define_tool

    @define_tool(description="Look up a key in the catalogue")
    def lookup(key: int) -> str:
        return f"catalogue entry {key}: " + "shelf row column " * 140  # ~2,400 characters

    client = _client(home, server)
    session = client.create_session(
        session_id="tools",
        model="openai:gpt-4o",
        tools=[lookup],
        on_permission_request=PermissionHandler.approve_all,
        infinite_sessions={"summary_model": "echo"},  # summaries do not take scripted replies
    )
    for i in range(8):
        server.enqueue(Reply(tool_calls=[ToolCall("lookup", {"key": i})]), Reply(f"noted {i}"))
        assert session.send_and_wait(f"look up key {i}", timeout=60).data.content == f"noted {i}"
    session.compact()
    events = session.get_events()
    types = [e.type for e in events]
    completes = [e.data for e in events if e.type == EventType.SESSION_COMPACTION_COMPLETE]
    assert completes and all(c["success"] for c in completes)
    assert EventType.SESSION_TRUNCATION not in types  # summarized, not left out
    for request in server.chat_requests:
        assert _estimate(request) <= WINDOW  # the server's own check passed too
    summaries = [r for r in client.get_provider("echo").requests]
    assert summaries
    transcript = summaries[0].messages[1].content
    assert "User: look up key 0\nAssistant called lookup(" in transcript
    assert '{"key": 0}' in transcript or '{"key":0}' in transcript
    result_line = next(line for line in transcript.splitlines() if line.startswith("Tool result"))
    assert result_line.startswith("Tool result: catalogue entry 0: shelf row column")
    assert result_line.endswith("characters left out)")
    assert len(result_line) < TOOL_RESULT_CHARS + 80
    assert "Assistant: noted 0" in transcript
    client.stop()
