"""The Anthropic provider against :class:`copilot.testing.ScriptedAnthropicServer` on 127.0.0.1.

The server speaks enough of the Messages API (``POST /v1/messages`` with ``stream: true``) for
the official ``anthropic`` SDK, emits the documented SSE events and is scripted with the same
``Reply`` / ``Fault`` vocabulary as the OpenAI test server.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import subprocess
import sys
import time

import pytest
from anthropic.resources.messages import AsyncMessages
from helpers import StreamCalls

from copilot.errors import (
    AuthenticationError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderStatusError,
    ProviderTimeoutError,
    RateLimitError,
)
from copilot.providers.anthropic import AnthropicProvider, anthropic_messages
from copilot.providers.base import (
    ChatMessage,
    Completion,
    ModelRequest,
    TextDelta,
    ToolCallRequest,
    ToolSchema,
    estimate_tokens,
)
from copilot.testing import Fault, Reply, ScriptedAnthropicServer, ToolCall, unused_port

KEY = "sk-ant-test-SECRET-0123456789abcdef"
ANSWERING_MODEL = "claude-sonnet-4-6-20260101"
MODEL = "claude-sonnet-4-6"
HELLO = (ChatMessage("system", "Be brief."), ChatMessage("user", "hello world"))


# -- the server: copilot.testing.ScriptedAnthropicServer ------------------------------------

HELLO_REPLY = Reply(
    chunks=["Hello", " there", "!"], model=ANSWERING_MODEL, prompt_tokens=12, completion_tokens=15
)


def carries_key(headers: dict[str, str], key: str) -> bool:
    """Whether the request sent ``key`` (``x-api-key``, or a Bearer token in newer SDKs)."""
    return headers.get("x-api-key") == key or headers.get("authorization") == f"Bearer {key}"


# -- fixtures and helpers -------------------------------------------------------------------


run, ok, fail = StreamCalls(MODEL, HELLO)


@pytest.fixture
def server():
    with ScriptedAnthropicServer() as srv:
        yield srv


@pytest.fixture
def provider(server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    return AnthropicProvider({"base_url": server.base_url, "timeout": 0.5})


# -- streaming ------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_streams_deltas_then_one_completion_with_usage(server, provider):
    server.enqueue(HELLO_REPLY)
    items = ok(provider)
    assert items[:-1] == [TextDelta("Hello"), TextDelta(" there"), TextDelta("!")]
    assert items[-1] == Completion(
        content="Hello there!",
        model=ANSWERING_MODEL,  # what the server says answered
        input_tokens=12,
        output_tokens=15,
        finish_reason="stop",  # end_turn, in the package's words
    )
    request = server.requests[-1]
    assert request.path == "/v1/messages"
    assert carries_key(request.headers, KEY)
    assert "anthropic-version" in request.headers
    body = request.json
    assert body["stream"] is True
    assert body["model"] == MODEL
    assert body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": "hello world"}]
    assert body["max_tokens"] == 4096  # the API requires it; the default


@pytest.mark.timeout(30)
def test_cached_prompt_tokens_count_as_input(server, provider):
    cached = {"cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000}
    server.enqueue(Reply("Hi", prompt_tokens=5, extra_usage=cached, finish_reason="max_tokens"))
    completion = ok(provider)[-1]
    assert completion.input_tokens == 1105
    assert completion.finish_reason == "length"


@pytest.mark.timeout(30)
def test_options_are_mapped(server, provider):
    options = {"temperature": 0.25, "top_p": 0.5, "max_tokens": 50, "stop": "END", "seed": 7}
    ok(provider, options=options)
    body = server.requests[-1].json
    # sampling options go out only if the installed SDK still accepts them
    accepted = inspect.signature(AsyncMessages.create).parameters
    assert body.get("temperature") == (0.25 if "temperature" in accepted else None)
    assert body.get("top_p") == (0.5 if "top_p" in accepted else None)
    assert body["max_tokens"] == 50
    assert body["stop_sequences"] == ["END"]
    assert "seed" not in body and "stop" not in body


@pytest.mark.timeout(30)
def test_max_output_setting(server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    ok(AnthropicProvider({"base_url": server.base_url, "max_output": 123}))
    assert server.requests[-1].json["max_tokens"] == 123


@pytest.mark.timeout(30)
def test_messages_alternate_and_system_goes_to_the_system_parameter(server, provider):
    messages = (
        ChatMessage("system", "Rule one."),
        ChatMessage("user", "a"),
        ChatMessage("user", "b"),
        ChatMessage("assistant", "c"),
        ChatMessage("system", "Rule two."),
        ChatMessage("assistant", "d"),
        ChatMessage("user", "e"),
    )
    ok(provider, messages=messages)
    body = server.requests[-1].json
    assert body["system"] == "Rule one.\n\nRule two."
    assert body["messages"] == [
        {"role": "user", "content": "a\n\nb"},
        {"role": "assistant", "content": "c\n\nd"},
        {"role": "user", "content": "e"},
    ]


def test_anthropic_messages_drops_empty_messages():
    system, turns = anthropic_messages(
        (
            ChatMessage("user", "a"),
            ChatMessage("assistant", "  "),
            ChatMessage("user", "b"),
        )
    )
    assert system is None
    assert turns == [{"role": "user", "content": "a\n\nb"}]


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_rate_limit_carries_retry_after_and_is_tried_once(server, provider):
    server.enqueue(Fault.status(429, retry_after=2))
    error, _ = fail(provider, RateLimitError)
    assert error.retry_after == 2.0
    assert error.status_code == 429 and error.retryable
    assert len(server.requests) == 1  # one attempt: the SDK does not retry


@pytest.mark.timeout(30)
def test_refused_key_is_an_authentication_error(server, provider):
    server.enqueue(Fault.status(401))
    error, _ = fail(provider, AuthenticationError)
    assert error.status_code == 401
    assert "ANTHROPIC_API_KEY" in str(error)


@pytest.mark.timeout(30)
def test_overloaded_is_a_retryable_status_error(server, provider):
    server.enqueue(Fault.status(529))
    error, _ = fail(provider, ProviderStatusError)
    assert error.status_code == 529 and error.retryable
    assert len(server.requests) == 1


@pytest.mark.timeout(30)
def test_disconnect_mid_stream_is_a_cut_off_reply(server, provider):
    server.enqueue(Fault.disconnect_after(2, "Hello there again"))
    error, items = fail(provider, ProviderResponseError)
    assert "cut off" in str(error)
    assert items == [TextDelta("Hello "), TextDelta("there ")]


@pytest.mark.timeout(30)
def test_stream_without_message_stop_is_a_cut_off_reply(server, provider):
    server.enqueue(Fault.truncate_after(1, "Hello there"))
    error, items = fail(provider, ProviderResponseError)
    assert "cut off" in str(error)
    assert items == [TextDelta("Hello ")]


@pytest.mark.timeout(30)
def test_a_data_line_that_is_not_json_is_a_response_error(server, provider):
    server.enqueue(Fault.malformed())
    error, _ = fail(provider, ProviderResponseError)
    assert "malformed" in str(error)


@pytest.mark.timeout(30)
def test_an_error_event_mid_stream_is_a_cut_off_reply(server, provider):
    server.enqueue(Fault.error_event(1, content="Hello there"))
    error, items = fail(provider, ProviderResponseError)
    assert "Overloaded" in str(error) and error.retryable
    assert items == [TextDelta("Hello ")]


@pytest.mark.timeout(30)
def test_a_silent_server_times_out(server, provider):
    server.enqueue(Fault.hang(10))
    start = time.monotonic()
    error, _ = fail(provider, ProviderTimeoutError)
    elapsed = time.monotonic() - start
    # The type proves the timeout fired before the 10 s hang ended (its end is a connection
    # error); the message and the lower bound that it was the provider's 0.5 s setting. The
    # upper bound is generous (10x the setting) for a loaded machine.
    assert "within 0.5 s" in str(error)
    assert 0.45 <= elapsed < 5


@pytest.mark.timeout(30)
def test_connection_refused_is_reported_within_seconds(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    provider = AnthropicProvider({"base_url": f"http://127.0.0.1:{unused_port()}"})
    start = time.monotonic()
    fail(provider, ProviderConnectionError)
    # The type proves the path. A refusal is immediate: the bound is generous for a loaded
    # machine and only catches a wait for a long timeout.
    assert time.monotonic() - start < 8


STEPS = [
    HELLO_REPLY,
    Fault.status(429, retry_after=1),
    Fault.status(401),
    Fault.status(
        401, body={"type": "error", "error": {"type": "authentication_error", "message": KEY}}
    ),
    Fault.status(500),
    Fault.disconnect_after(1),
    Fault.truncate_after(1),
    Fault.malformed(),
    Fault.error_event(1),
    Fault.hang(10),
]


def _step_id(step: Reply | Fault) -> str:
    if isinstance(step, Reply):
        return "reply"
    return f"{step.kind}-{step.code}-{bool(step.body)}"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("step", STEPS, ids=_step_id)
def test_the_key_never_leaks_and_errors_name_provider_and_model(server, monkeypatch, caplog, step):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    provider = AnthropicProvider({"base_url": server.base_url, "timeout": 0.5})
    server.enqueue(step)
    assert KEY not in repr(provider)
    items, error = run(provider, model=MODEL)
    assert carries_key(server.requests[-1].headers, KEY)  # it was sent
    assert KEY not in repr(provider)
    assert KEY not in caplog.text
    assert caplog.records, "DEBUG logging was captured"
    if isinstance(step, Reply):
        assert error is None and isinstance(items[-1], Completion)
        return
    assert isinstance(error, ProviderError)
    assert KEY not in str(error) and KEY not in repr(error)
    assert error.provider == "anthropic" and error.model == MODEL
    cause = error.__cause__
    while cause is not None:
        assert KEY not in str(cause)
        cause = cause.__cause__


# -- availability, context windows ----------------------------------------------------------


def test_availability_needs_the_key(monkeypatch):
    state = AnthropicProvider().availability()
    assert not state.usable and "ANTHROPIC_API_KEY" in state.reason
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    assert AnthropicProvider().availability().usable


def test_availability_without_the_anthropic_package(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setitem(sys.modules, "anthropic", None)  # import anthropic now fails
    state = AnthropicProvider().availability()
    assert not state.usable
    assert "pip install 'copilot-jupyter[anthropic]'" in state.reason


def test_the_module_imports_without_the_sdk_packages():
    code = (
        "import sys; sys.modules['anthropic'] = None; sys.modules['openai'] = None\n"
        "from copilot.providers.anthropic import AnthropicProvider\n"
        "state = AnthropicProvider().availability()\n"
        "assert not state.usable and 'copilot-jupyter[anthropic]' in state.reason, state\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.timeout(30)
def test_anthropic_base_url_env_is_used(server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
    server.enqueue(HELLO_REPLY)
    assert ok(AnthropicProvider())[-1].content == "Hello there!"
    assert server.requests[-1].path == "/v1/messages"


@pytest.mark.timeout(30)
def test_unusable_provider_raises_without_calling_out():
    _, error = run(AnthropicProvider())
    assert type(error) is ProviderError and not error.retryable
    assert "ANTHROPIC_API_KEY" in str(error)


def test_context_windows_and_tokens():
    provider = AnthropicProvider()
    assert provider.context_window(MODEL) == 200_000
    assert provider.context_window("claude-3-5-haiku-20241022") == 200_000
    assert provider.context_window("not-claude") == 8192
    assert AnthropicProvider({"context_window": 1000}).context_window("claude-x") == 1000
    assert provider.count_tokens(MODEL, "abcd" * 10) == estimate_tokens("abcd" * 10)


def test_models_come_from_the_sdk_without_deprecated_ones():
    models = AnthropicProvider().models()
    assert models and all(name.startswith("claude") for name in models)
    assert "claude-sonnet-4-5" not in models  # deprecated in the installed SDK


# -- tools ----------------------------------------------------------------------------------

WEATHER = ToolSchema(
    "get_weather",
    "Today's weather",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def run_tools(provider, messages, tools=(WEATHER,)):
    async def go():
        try:
            request = ModelRequest(MODEL, messages, {}, None, tuple(tools))
            return [item async for item in provider.stream(request)]
        finally:
            await provider.aclose()

    return asyncio.run(go())


@pytest.mark.timeout(30)
def test_streamed_tool_use_blocks_become_tool_call_requests(server, provider):
    server.enqueue(
        Reply(
            "Checking.",
            tool_calls=[
                ToolCall("get_weather", {"city": "Paris"}),
                ToolCall(
                    "get_weather", '{"city": "Oslo"}', id="toolu_x", chunks=['{"city":', ' "Oslo"}']
                ),
            ],
        )
    )
    items = run_tools(provider, HELLO)
    completion = items[-1]
    assert items[:-1] == [TextDelta("Checking.")]
    assert completion.finish_reason == "tool_calls"  # tool_use, in the package's words
    assert completion.tool_calls == (
        ToolCallRequest("toolu_01", "get_weather", '{"city": "Paris"}'),
        ToolCallRequest("toolu_x", "get_weather", '{"city": "Oslo"}'),
    )
    assert server.requests[-1].json["tools"] == [
        {
            "name": "get_weather",
            "description": "Today's weather",
            "input_schema": dict(WEATHER.parameters),
        }
    ]


@pytest.mark.timeout(30)
def test_a_tool_without_arguments_gets_an_empty_object(server, provider):
    server.enqueue(Reply(tool_calls=[ToolCall("get_weather", "", chunks=[])]))
    completion = run_tools(provider, HELLO)[-1]
    assert completion.tool_calls == (ToolCallRequest("toolu_01", "get_weather", "{}"),)


@pytest.mark.timeout(30)
def test_calls_and_results_are_replayed_as_tool_use_and_tool_result_blocks(server, provider):
    messages = (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "weather in Paris and Oslo?"),
        ChatMessage(
            "assistant",
            "Checking.",
            tool_calls=(
                ToolCallRequest("t1", "get_weather", '{"city": "Paris"}'),
                ToolCallRequest("t2", "get_weather", "not json"),
            ),
        ),
        ChatMessage("tool", "sunny", tool_call_id="t1"),
        ChatMessage("tool", "", tool_call_id="t2"),
        ChatMessage("user", "and tomorrow?"),
    )
    server.enqueue(Reply("Rain."))
    completion = run_tools(provider, messages)[-1]
    assert completion.content == "Rain."
    body = server.requests[-1].json
    assert body["system"] == "Be brief."
    assert body["messages"] == [
        {"role": "user", "content": "weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "t2", "name": "get_weather", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "t2"},
                {"type": "text", "text": "and tomorrow?"},
            ],
        },
    ]


@pytest.mark.timeout(30)
def test_a_call_without_its_result_is_refused_like_anthropic_does(server, provider):
    messages = (
        ChatMessage("user", "weather?"),
        ChatMessage("assistant", "", tool_calls=(ToolCallRequest("t1", "get_weather", "{}"),)),
        ChatMessage("user", "hello?"),
    )
    with pytest.raises(ProviderStatusError, match="without `tool_result` blocks"):
        run_tools(provider, messages)


def test_tool_support():
    assert AnthropicProvider().supports_tools(MODEL)


def test_thinking_blocks_lead_a_tool_step_only_while_thinking_is_on():
    from copilot.providers.anthropic import anthropic_messages, thinking_record
    from copilot.providers.base import ChatMessage, ToolCallRequest

    blocks = [
        {"type": "thinking", "thinking": "Look it up.", "signature": "sig-1"},
        {"type": "redacted_thinking", "data": "opaque"},
    ]
    call = ToolCallRequest("toolu_1", "get_weather", '{"city": "Paris"}')
    step = ChatMessage(
        "assistant", "Let me look.", tool_calls=(call,), reasoning_opaque=thinking_record(blocks)
    )
    messages = (
        ChatMessage("user", "Weather?"),
        step,
        ChatMessage("tool", "Sunny", tool_call_id="toolu_1"),
    )
    _, on = anthropic_messages(messages, thinking=True)
    assert on[1]["content"][:2] == blocks
    assert [b["type"] for b in on[1]["content"][2:]] == ["text", "tool_use"]
    _, off = anthropic_messages(messages, thinking=False)
    assert [b["type"] for b in off[1]["content"]] == ["text", "tool_use"]
    # a record this provider did not write (another provider's, or damaged) adds nothing
    for foreign in ("not json", '{"type": "thinking"}', '[{"type": "reasoning", "text": "x"}]', ""):
        odd = ChatMessage("assistant", "", tool_calls=(call,), reasoning_opaque=foreign)
        _, turns = anthropic_messages((messages[0], odd, messages[2]), thinking=True)
        assert [b["type"] for b in turns[1]["content"]] == ["tool_use"]
    assert thinking_record([]) is None


@pytest.mark.timeout(30)
def test_a_replayed_tool_step_carries_its_thinking_only_when_the_request_thinks(server, provider):
    from copilot.providers.anthropic import thinking_record
    from copilot.providers.base import ChatMessage, ToolCallRequest
    from copilot.testing.anthropic_server import thinking_signature

    block = {"type": "thinking", "thinking": "Look.", "signature": thinking_signature("Look.")}
    call = ToolCallRequest("toolu_9", "get_weather", '{"city": "Oslo"}')
    messages = (
        ChatMessage("user", "Weather?"),
        ChatMessage("assistant", "", tool_calls=(call,), reasoning_opaque=thinking_record([block])),
        ChatMessage("tool", "Snow", tool_call_id="toolu_9"),
    )
    server.enqueue(Reply("Snow in Oslo."), Reply("Snow in Oslo."))
    ok(provider, messages=messages)
    plain = server.requests[-1].json
    assert "thinking" not in plain
    assert [b["type"] for b in plain["messages"][1]["content"]] == ["tool_use"]
    ok(provider, messages=messages, options={"reasoning_effort": "low"})
    thinking = server.requests[-1].json
    assert thinking["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert thinking["messages"][1]["content"][0] == block
