"""``search_sessions``: a model recalls earlier conversations, against a real store.

The echo model calls the tool when the prompt reads ``call search_sessions {JSON}`` and then
answers with the tool's result, so the reply is the JSON the model was given.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from copilot import AsyncCopilotClient, CopilotClient, EventType
from copilot.builtin_tools import MAX_HITS, search_sessions_tool
from copilot.tools import PermissionHandler, PermissionRequestResult

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def client(tmp_path: Path):
    c = CopilotClient(tmp_path / "store", default_model="echo")
    old = c.create_session(session_id="old-pivots")
    old.send_and_wait("How do I build a pivot_table of sales by region?")
    other = c.create_session(session_id="plots")
    other.send_and_wait("Draw a histogram of ages")
    yield c
    c.stop(timeout=5)


def call(session, arguments: dict) -> tuple[str, list]:
    reply = session.send_and_wait(f"call search_sessions {json.dumps(arguments)}")
    return reply.data["content"], session.get_messages()


def test_the_model_finds_an_earlier_session_by_what_was_said(client):
    helper = client.create_session(
        session_id="helper",
        tools=[search_sessions_tool(client)],
        on_permission_request=PermissionHandler.approve_all,
    )
    content, events = call(helper, {"query": "pivot_table"})
    hits = json.loads(content)
    assert {h["sessionId"] for h in hits} == {"old-pivots"}
    assert set(hits[0]) == {"sessionId", "timestamp", "type", "snippet"}
    assert "«pivot_table»" in hits[0]["snippet"]
    assert {h["type"] for h in hits} <= {EventType.USER_MESSAGE, EventType.ASSISTANT_MESSAGE}
    kinds = [e.type for e in events]
    # behind the usual permission rules: it asked
    assert EventType.PERMISSION_REQUESTED in kinds


def test_the_calling_session_is_left_out_unless_named(client):
    helper = client.create_session(
        session_id="helper",
        tools=[search_sessions_tool(client)],
        on_permission_request=PermissionHandler.approve_all,
    )
    helper.send_and_wait("histogram notes for later")
    hits = json.loads(call(helper, {"query": "histogram"})[0])
    assert {h["sessionId"] for h in hits} == {"plots"}
    named = json.loads(call(helper, {"query": "histogram", "session_id": "helper"})[0])
    assert named and {h["sessionId"] for h in named} == {"helper"}


def test_limit_is_kept_and_capped(client):
    for n in range(12):
        client.create_session(session_id=f"s{n}").send_and_wait(f"pandas question {n}")
    helper = client.create_session(
        session_id="helper",
        tools=[search_sessions_tool(client)],
        on_permission_request=PermissionHandler.approve_all,
    )
    assert len(json.loads(call(helper, {"query": "pandas", "limit": 3})[0])) == 3
    assert len(json.loads(call(helper, {"query": "pandas", "limit": MAX_HITS})[0])) == MAX_HITS
    content, events = call(helper, {"query": "pandas", "limit": MAX_HITS + 1})
    assert "limit" in content and "less than or equal to 10" in content
    complete = [e for e in events if e.type == EventType.TOOL_EXECUTION_COMPLETE][-1]
    assert complete.data["resultType"] == "failure"


def test_without_permission_it_is_denied_and_nothing_is_searched(client):
    helper = client.create_session(session_id="helper", tools=[search_sessions_tool(client)])
    content, events = call(helper, {"query": "pivot_table"})
    assert "pivot" not in content
    complete = [e for e in events if e.type == EventType.TOOL_EXECUTION_COMPLETE][-1]
    assert complete.data["resultType"] == "denied"

    def deny(request, invocation):
        assert request.tool_name == "search_sessions"
        assert request.args == {"query": "pivot_table"}
        return PermissionRequestResult("denied-by-rules")

    denied = client.create_session(
        session_id="denied", tools=[search_sessions_tool(client)], on_permission_request=deny
    )
    assert "pivot" not in call(denied, {"query": "pivot_table"})[0]


def test_bad_query_syntax_is_a_failure_the_model_reads(client):
    helper = client.create_session(
        session_id="helper",
        tools=[search_sessions_tool(client)],
        on_permission_request=PermissionHandler.approve_all,
    )
    content, events = call(helper, {"query": '"unclosed phrase'})
    assert content.startswith("The search query is not valid: bad search query")
    complete = [e for e in events if e.type == EventType.TOOL_EXECUTION_COMPLETE][-1]
    assert complete.data["resultType"] == "failure"
    # the session goes on
    assert helper.send_and_wait("hello").data["content"] == "echo: hello"


def test_the_async_client_gets_an_async_tool(tmp_path: Path):
    async def main() -> list:
        async with AsyncCopilotClient(tmp_path / "a", default_model="echo") as client:
            first = await client.create_session(session_id="first")
            await first.send_and_wait("remember the word zebra")
            helper = await client.create_session(
                session_id="helper",
                tools=[search_sessions_tool(client)],
                on_permission_request=PermissionHandler.approve_all,
            )
            reply = await helper.send_and_wait('call search_sessions {"query": "zebra"}')
            return json.loads(reply.data["content"])

    hits = asyncio.run(main())
    assert {h["sessionId"] for h in hits} == {"first"}
