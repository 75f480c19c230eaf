"""Tests for copilot.testing.anthropic_server, driven through the real ``anthropic`` SDK."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import pytest

from copilot.testing import (
    Fault,
    Reply,
    ScriptedAnthropicServer,
    ToolCall,
    count_tokens,
)
from copilot.testing.anthropic_server import message_problem

USER = [{"role": "user", "content": "hello brave new world"}]

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def server() -> Iterator[ScriptedAnthropicServer]:
    with ScriptedAnthropicServer() as s:
        yield s


def _client(server: ScriptedAnthropicServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="sk-ant-test", base_url=server.base_url, max_retries=0)


def _events(server: ScriptedAnthropicServer, messages=USER, **kw: object) -> list:
    stream = _client(server).messages.create(
        model="claude-x", max_tokens=100, messages=messages, stream=True, **kw
    )
    return list(stream)


def test_default_reply_echoes_the_last_user_message_and_counts_words(server) -> None:
    events = _events(server)
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]  # the SDK drops the ping
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == "echo: hello brave new world"
    assert events[0].message.usage.input_tokens == 4
    assert events[0].message.model == "claude-x"
    assert events[-2].usage.output_tokens == count_tokens(text)
    assert events[-2].delta.stop_reason == "end_turn"


def test_requests_are_recorded(server) -> None:
    _events(server, system="Be brief.")
    (request,) = server.message_requests
    assert request.path == "/v1/messages"
    sent = request.headers.get("x-api-key") or request.headers.get("authorization")
    assert sent in ("sk-ant-test", "Bearer sk-ant-test")
    assert request.json["system"] == "Be brief." and request.json["messages"] == USER


def test_finish_reasons_in_openai_words_are_mapped(server) -> None:
    server.enqueue(Reply("a", finish_reason="length"), Reply("b", finish_reason="pause_turn"))
    assert _events(server)[-2].delta.stop_reason == "max_tokens"
    assert _events(server)[-2].delta.stop_reason == "pause_turn"  # Anthropic's own word passes


def test_tool_use_blocks_stream_their_input_in_fragments(server) -> None:
    server.enqueue(
        Reply(
            "Checking.",
            tool_calls=[ToolCall("a", {"x": 1}), ToolCall("b", '{"y": 2}', id="toolu_b")],
        )
    )
    events = _events(server)
    starts = [e.content_block for e in events if e.type == "content_block_start"]
    assert [s.type for s in starts] == ["text", "tool_use", "tool_use"]
    assert [(s.id, s.name) for s in starts[1:]] == [("toolu_01", "a"), ("toolu_b", "b")]
    partial = {}
    for e in events:
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta":
            partial.setdefault(e.index, []).append(e.delta.partial_json)
    assert partial == {1: ['{"', 'x"', ": 1}"], 2: ['{"', 'y"', ": 2}"]}
    assert events[-2].delta.stop_reason == "tool_use"


def test_non_streamed_message_with_tool_use(server) -> None:
    server.enqueue(Reply(tool_calls=[ToolCall("a", {"x": 1})], prompt_tokens=9))
    message = _client(server).messages.create(model="claude-x", max_tokens=10, messages=USER)
    assert [b.type for b in message.content] == ["tool_use"]
    assert message.content[0].input == {"x": 1}
    assert message.stop_reason == "tool_use" and message.usage.input_tokens == 9


def test_answered_tool_use_passes(server) -> None:
    messages = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t", "name": "a", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r"}]},
    ]
    server.enqueue(Reply("done"))
    assert _events(server, messages=messages)[-1].type == "message_stop"


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ([{"role": "assistant", "content": "x"}], "first message must use the 'user' role"),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            "roles must alternate",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "a", "input": {}}],
                },
                {"role": "user", "content": "no result"},
            ],
            "without `tool_result` blocks immediately after: t1",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "no call"},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "zz"}]},
            ],
            "unexpected `tool_use_id` found in `tool_result` blocks: zz",
        ),
    ],
)
def test_malformed_conversations_are_refused_as_the_api_does(server, messages, problem) -> None:
    server.enqueue(Reply("never used"))
    with pytest.raises(anthropic.BadRequestError, match=problem):
        _events(server, messages=messages)
    assert server.pending == 1
    assert message_problem(messages) is not None


def test_status_fault_has_an_anthropic_error_body(server) -> None:
    server.enqueue(Fault.status(429, retry_after=3))
    with pytest.raises(anthropic.RateLimitError) as caught:
        _events(server)
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "scripted"},
    }
    assert caught.value.response.headers["retry-after"] == "3"


def test_error_event_mid_stream(server) -> None:
    server.enqueue(Fault.error_event(2))
    got = []
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        for e in _client(server).messages.create(
            model="claude-x", max_tokens=10, messages=USER, stream=True
        ):
            if e.type == "content_block_delta":
                got.append(e.delta.text)
    assert got == ["echo: ", "hello "]


def test_disconnect_cuts_the_stream(server) -> None:
    server.enqueue(Fault.disconnect_after(1))
    # mid-body, the SDK lets the HTTP library's error through: "incomplete chunked read"
    with pytest.raises(Exception, match="incomplete chunked read"):
        _events(server)


def test_stop_cuts_a_hang_short(server) -> None:
    server.enqueue(Fault.hang(30))
    client = anthropic.Anthropic(api_key="k", base_url=server.base_url, max_retries=0, timeout=0.3)
    began = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        client.messages.create(model="claude-x", max_tokens=10, messages=USER)
    assert time.monotonic() - began < 10  # the client's 0.3 s timeout, not the 30 s hang


def test_the_server_checks_thinking_blocks_as_the_api_does():
    from copilot.testing.anthropic_server import thinking_problem, thinking_signature

    block = {"type": "thinking", "thinking": "Look.", "signature": thinking_signature("Look.")}
    use = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    result = {"type": "tool_result", "tool_use_id": "t1", "content": "ok"}
    asked = {"role": "user", "content": "hi"}

    def convo(*assistant: dict) -> list[dict]:
        return [
            asked,
            {"role": "assistant", "content": list(assistant)},
            {"role": "user", "content": [result]},
        ]

    assert thinking_problem(convo(block, use), True) is None
    assert thinking_problem(convo(use), False) is None  # thinking off: not needed
    assert "Expected `thinking` or `redacted_thinking`, but found `tool_use`" in thinking_problem(
        convo(use), True
    )
    redacted = {"type": "redacted_thinking", "data": "x"}
    assert thinking_problem(convo(redacted, use), True) is None
    assert "the first block must be thinking" in thinking_problem(convo(use, block), False)
    tampered = {**block, "thinking": "Look!"}
    assert "Invalid `signature`" in thinking_problem(convo(tampered, use), True)
    # a plain question after an answer: nothing to check
    assert thinking_problem([asked, {"role": "assistant", "content": "hello"}, asked], True) is None
