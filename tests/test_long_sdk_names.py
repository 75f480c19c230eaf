"""The Copilot SDK's current names beside the seed's: get_events, disconnect, system_message
modes, reasoning_effort and assistant.reasoning, checked on the requests real scripted
servers (OpenAI and Anthropic wire formats, on 127.0.0.1) receive."""

from __future__ import annotations

import asyncio

import pytest

from copilot import AsyncCopilotClient, CopilotClient, EventType
from copilot.errors import InvalidArgumentError, InvalidArgumentTypeError
from copilot.testing import Reply, ScriptedAnthropicServer, ScriptedOpenAIServer


@pytest.fixture
def openai_server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-long")
    with ScriptedOpenAIServer() as server:
        yield server


@pytest.fixture
def anthropic_server(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-long")
    with ScriptedAnthropicServer() as server:
        yield server


def _client(home, server, provider="openai") -> CopilotClient:
    return CopilotClient(base_directory=home, providers={provider: {"base_url": server.base_url}})


def _system(request) -> list[str]:
    return [m["content"] for m in request.json["messages"] if m["role"] == "system"]


def test_get_events_and_disconnect_are_get_messages_and_destroy(home, openai_server):
    client = _client(home, openai_server)
    session = client.create_session(session_id="names", model="openai:gpt-4o")
    session.send_and_wait("hello")
    assert session.get_events() == session.get_messages()
    assert [e.seq for e in session.get_events(after=2, limit=2)] == [3, 4]
    assert session.get_events(last=1) == session.get_messages()[-1:]
    session.disconnect()
    assert session.closed
    assert client.resume_session("names").get_events()[0].type == EventType.SESSION_START
    client.stop()


def test_async_get_events_and_disconnect(home, openai_server):
    async def go() -> None:
        async with AsyncCopilotClient(
            base_directory=home, providers={"openai": {"base_url": openai_server.base_url}}
        ) as client:
            session = await client.create_session(model="openai:gpt-4o")
            await session.send_and_wait("hello")
            assert await session.get_events() == await session.get_messages()
            await session.disconnect()
            assert session.closed

    asyncio.run(go())


def test_system_message_modes_reach_the_request(home, openai_server):
    client = _client(home, openai_server)
    # new session: no built-in prompt, so append gives the content as the whole message
    session = client.create_session(
        session_id="sys", model="openai:gpt-4o", system_message={"mode": "append", "content": "A."}
    )
    session.send_and_wait("one")
    assert _system(openai_server.chat_requests[-1]) == ["A."]
    session.disconnect()
    # append on resume: added after the session's own message
    session = client.resume_session("sys", system_message={"mode": "append", "content": "B."})
    session.send_and_wait("two")
    assert _system(openai_server.chat_requests[-1]) == ["A.\n\nB."]
    # appending again replaces the appended part: it does not pile up
    session = client.resume_session("sys", system_message={"mode": "append", "content": "C."})
    session.send_and_wait("three")
    assert _system(openai_server.chat_requests[-1]) == ["A.\n\nC."]
    # replace: the content is the whole message, the appended part is gone
    session = client.resume_session("sys", system_message={"mode": "replace", "content": "R."})
    session.send_and_wait("four")
    assert _system(openai_server.chat_requests[-1]) == ["R."]
    meta = client.get_session_metadata("sys")
    assert meta["systemMessage"] == "R." and meta["systemMessageAppend"] is None
    client.stop()
    # a fresh client (another process's view) sends what was stored
    client = _client(home, openai_server)
    client.resume_session("sys").send_and_wait("five")
    assert _system(openai_server.chat_requests[-1]) == ["R."]
    resumes = [e.data for e in client.get_messages("sys") if e.type == EventType.SESSION_RESUME]
    assert resumes[0]["systemMessageAppend"] == "B."
    client.stop()


def test_bad_system_message_mode_is_a_typed_error(home, openai_server):
    client = _client(home, openai_server)
    with pytest.raises(InvalidArgumentError, match="'append' or 'replace'"):
        client.create_session(system_message={"mode": "customize", "content": "x"})
    with pytest.raises(InvalidArgumentTypeError, match="content is a string"):
        client.create_session(system_message={"mode": "replace", "content": 3})
    assert client.list_sessions() == []
    client.stop()


def test_reasoning_effort_reaches_the_openai_request(home, openai_server):
    client = _client(home, openai_server)
    session = client.create_session(model="openai:o3-mini", reasoning_effort="low")
    session.send_and_wait("a")
    assert openai_server.chat_requests[-1].json["reasoning_effort"] == "low"
    session.send_and_wait("b", reasoning_effort="high")  # the send's own wins
    assert openai_server.chat_requests[-1].json["reasoning_effort"] == "high"
    plain = client.create_session(model="openai:gpt-4o")
    plain.send_and_wait("c")
    assert "reasoning_effort" not in openai_server.chat_requests[-1].json
    with pytest.raises(InvalidArgumentError, match="reasoning_effort is 'low' or 'medium'"):
        session.send("d", reasoning_effort="extreme")
    with pytest.raises(InvalidArgumentError, match="reasoning_effort"):
        client.create_session(reasoning_effort="max")
    client.stop()


def test_reasoning_effort_on_resume_is_stored(home, openai_server):
    client = _client(home, openai_server)
    client.create_session(session_id="r", model="openai:o3-mini").disconnect()
    client.resume_session("r", reasoning_effort="medium").send_and_wait("a")
    assert openai_server.chat_requests[-1].json["reasoning_effort"] == "medium"
    assert client.get_session_metadata("r")["reasoningEffort"] == "medium"
    client.stop()


def test_reasoning_effort_not_sent_to_openai_models_that_do_not_reason(monkeypatch):
    # OpenAI's own API rejects reasoning_effort for gpt-4.1 with a 400: it is left out there
    from copilot.providers.base import ChatMessage, ModelRequest
    from copilot.providers.openai import OpenAIProvider

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    provider = OpenAIProvider({})
    request = ModelRequest("gpt-4.1", (ChatMessage("user", "x"),), {"reasoning_effort": "low"})
    assert "reasoning_effort" not in provider._request_kwargs(request)
    request = ModelRequest("o4-mini", (ChatMessage("user", "x"),), {"reasoning_effort": "low"})
    assert provider._request_kwargs(request)["reasoning_effort"] == "low"


def test_reasoning_text_is_stored_as_assistant_reasoning(home, openai_server):
    client = _client(home, openai_server)
    session = client.create_session(model="openai:o3-mini")
    openai_server.enqueue(Reply("the answer", reasoning="first I think, then I answer"))
    reply = session.send_and_wait("q")
    events = session.get_events()
    thinking = [e for e in events if e.type == EventType.ASSISTANT_REASONING]
    assert len(thinking) == 1
    assert thinking[0].data.content == "first I think, then I answer"
    assert thinking[0].data.messageId == reply.data.messageId
    assert thinking[0].data.reasoningId
    assert reply.data.content == "the answer"
    # the reasoning is not sent back to the model as part of the reply
    session.send_and_wait("again")
    sent = [m["content"] for m in openai_server.chat_requests[-1].json["messages"]]
    assert sent == ["q", "the answer", "again"]
    session.send_and_wait("no thinking")
    assert sum(e.type == EventType.ASSISTANT_REASONING for e in session.get_events()) == 1
    client.stop()


def test_anthropic_extended_thinking(home, anthropic_server):
    client = _client(home, anthropic_server, "anthropic")
    session = client.create_session(model="anthropic:claude-sonnet-4-6", reasoning_effort="medium")
    anthropic_server.enqueue(Reply("42", reasoning="six times seven"))
    session.send_and_wait("q", temperature=0.5)
    body = anthropic_server.message_requests[-1].json
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert body["max_tokens"] > 4096  # the budget counts inside max_tokens
    assert "temperature" not in body  # refused by the API with thinking on
    thinking = [e for e in session.get_events() if e.type == EventType.ASSISTANT_REASONING]
    assert [e.data.content for e in thinking] == ["six times seven"]
    session.send_and_wait("r", reasoning_effort="high", max_tokens=20000)
    body = anthropic_server.message_requests[-1].json
    assert body["thinking"]["budget_tokens"] == 16384 and body["max_tokens"] == 20000
    plain = client.create_session(model="anthropic:claude-sonnet-4-6")
    plain.send_and_wait("s")
    assert "thinking" not in anthropic_server.message_requests[-1].json
    client.stop()
