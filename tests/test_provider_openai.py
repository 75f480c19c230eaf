"""The OpenAI-protocol providers against a real (scripted) server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import logging
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import openai
import pytest
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
from copilot.providers.base import (
    ChatMessage,
    Completion,
    ModelRequest,
    TextDelta,
    ToolCallRequest,
    ToolSchema,
    estimate_tokens,
)
from copilot.providers.openai import (
    GitHubModelsProvider,
    OllamaProvider,
    OpenAICompatibleProvider,
    OpenAIProvider,
    _ollama_url,
    parse_retry_after,
)
from copilot.testing import Fault, Reply, ToolCall, unused_port

KEY = "sk-test-SECRET-0123456789abcdef"
GH_TOKEN = "ghp_TESTTOKEN_abcdefghijklmnop"
HELLO = (ChatMessage("system", "Be brief."), ChatMessage("user", "hello world"))


run, ok, fail = StreamCalls("gpt-4o", HELLO)


@pytest.fixture
def server(openai_server):
    """conftest's scripted OpenAI server, under the short name these tests use."""
    return openai_server


@pytest.fixture
def provider(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return OpenAIProvider({"base_url": server.base_url})


# -- streaming ------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_streams_deltas_then_one_completion_with_usage(server, provider):
    server.enqueue(
        Reply(
            chunks=["Hello", " there", "!"],
            model="gpt-4o-2024-08-06",
            prompt_tokens=7,
            completion_tokens=3,
        )
    )
    items = ok(provider)
    assert items[:-1] == [TextDelta("Hello"), TextDelta(" there"), TextDelta("!")]
    assert items[-1] == Completion(
        content="Hello there!",
        model="gpt-4o-2024-08-06",  # what the server says answered, not the requested name
        input_tokens=7,
        output_tokens=3,
        finish_reason="stop",
    )
    body = server.chat_requests[-1].json
    assert body["model"] == "gpt-4o"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello world"},
    ]
    assert server.chat_requests[-1].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.timeout(30)
def test_finish_reason_length_is_reported(server, provider):
    server.enqueue(Reply("cut here", finish_reason="length"))
    assert ok(provider)[-1].finish_reason == "length"


@pytest.mark.timeout(30)
def test_usage_is_none_when_the_server_sends_none(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    provider = OpenAIProvider({"base_url": server.base_url, "stream_usage": False})
    completion = ok(provider)[-1]
    assert completion.content == "echo: hello world"
    assert completion.input_tokens is None and completion.output_tokens is None
    assert "stream_options" not in server.chat_requests[-1].json


@pytest.mark.timeout(30)
def test_options_are_passed_through(server, provider):
    options = {
        "temperature": 0.25,
        "max_tokens": 50,
        "top_p": 0.5,
        "seed": 7,
        "stop": ["END"],
        "not_an_option": 1,
    }
    ok(provider, options=options)
    body = server.chat_requests[-1].json
    assert body["temperature"] == 0.25
    assert body["max_tokens"] == 50  # a non-OpenAI endpoint gets max_tokens
    assert body["top_p"] == 0.5
    assert body["seed"] == 7
    assert body["stop"] == ["END"]
    assert "not_an_option" not in body
    assert "max_completion_tokens" not in body


@pytest.mark.timeout(30)
def test_the_request_body_is_the_one_the_sdks_create_sends(server, provider):
    """Messages and tools go past the SDK's request transform (in ``extra_body``, which
    replaces the body's keys): the server receives the same JSON as the SDK's own
    ``create(**kwargs)`` sends for them."""
    messages = (
        *HELLO,
        ChatMessage("assistant", "hi", tool_calls=(ToolCallRequest("c1", "f", {"x": 1}),)),
        ChatMessage("tool", '{"ok": true}', tool_call_id="c1"),
        ChatMessage("user", "and now é \u2028 ünïcode"),
    )
    tools = (
        ToolSchema("f", "does f", {"type": "object", "properties": {"x": {"type": "integer"}}}),
    )
    request = ModelRequest("gpt-4o", messages, {"temperature": 0.5, "seed": 3}, tools=tools)
    server.enqueue(Reply("one"), Reply("two"))

    async def both() -> None:
        async for _ in provider.stream(request):
            pass
        await provider.aclose()
        kwargs = OpenAIProvider({"base_url": server.base_url})._request_kwargs(request)
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY) as raw:
            async for _ in await raw.chat.completions.create(**kwargs):
                pass

    asyncio.run(both())
    ours, sdks = (r.json for r in server.chat_requests[-2:])
    assert ours == sdks
    assert ours["messages"][2]["tool_calls"][0]["function"]["name"] == "f"
    assert ours["tools"][0]["function"]["parameters"]["properties"] == {"x": {"type": "integer"}}


def test_max_tokens_is_sent_as_max_completion_tokens_to_the_openai_api(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    request = ModelRequest("o4-mini", HELLO, {"max_tokens": 10})
    kwargs = OpenAIProvider()._request_kwargs(request)
    assert kwargs["max_completion_tokens"] == 10
    assert "max_tokens" not in kwargs


@pytest.mark.timeout(30)
def test_client_is_built_lazily_reused_and_closed(server, provider):
    assert provider._client is None  # nothing is built before the first stream()

    async def two_turns():
        await_items = []
        for _ in range(2):
            async for item in provider.stream(ModelRequest("gpt-4o", HELLO)):
                await_items.append(item)
        client = provider._client
        await provider.aclose()
        return client, await_items

    client, items = asyncio.run(two_turns())
    assert client is not None and client.is_closed()
    assert provider._client is None
    assert sum(isinstance(i, Completion) for i in items) == 2
    first, second = server.chat_requests
    assert first.client == second.client  # the same keep-alive connection: one client


@pytest.mark.timeout(30)
def test_an_abandoned_stream_is_closed_and_the_provider_stays_usable(server, provider):
    server.enqueue(Reply(" ".join(["word"] * 50), chunk_delay=0.01))

    async def abandon_then_ask_again():
        stream = provider.stream(ModelRequest("gpt-4o", HELLO))
        first = await stream.__anext__()
        await stream.aclose()  # what the core does on abort()
        items = [item async for item in provider.stream(ModelRequest("gpt-4o", HELLO))]
        await provider.aclose()
        return first, items

    first, items = asyncio.run(abandon_then_ask_again())
    assert first == TextDelta("word ")
    assert items[-1].content == "echo: hello world"


@pytest.mark.timeout(30)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_provider_used_from_a_new_event_loop_builds_a_new_client(server, provider):
    async def one_turn():
        items = [item async for item in provider.stream(ModelRequest("gpt-4o", HELLO))]
        return provider._client, items[-1]

    first_client, first = asyncio.run(one_turn())  # no aclose(): its loop is gone afterwards
    second_client, second = asyncio.run(one_turn())
    asyncio.run(provider.aclose())
    assert first.content == second.content == "echo: hello world"
    assert first_client is not second_client
    # the first client's connection died with its loop: collect it here, not in a later test
    del first_client, second_client
    gc.collect()


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_rate_limit_carries_retry_after_and_is_tried_once(server, provider):
    server.enqueue(Fault.status(429, retry_after=1))
    error, _ = fail(provider, RateLimitError)
    assert error.retry_after == 1.0
    assert error.status_code == 429 and error.retryable
    assert len(server.chat_requests) == 1  # one attempt: the SDK does not retry


@pytest.mark.timeout(30)
def test_rate_limit_retry_after_ms_wins(server, provider):
    server.enqueue(Fault.status(429, retry_after=9, headers={"retry-after-ms": "1500"}))
    error, _ = fail(provider, RateLimitError)
    assert error.retry_after == 1.5


def test_parse_retry_after_forms():
    now = time.time()
    date = format_datetime(datetime.fromtimestamp(now, UTC) + timedelta(seconds=30))
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    assert 28 <= parse_retry_after({"retry-after": date}, now=now) <= 31
    past = format_datetime(datetime.fromtimestamp(now, UTC) - timedelta(seconds=30))
    assert parse_retry_after({"retry-after": past}, now=now) == 0.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "-1"}) is None
    assert parse_retry_after({}) is None


@pytest.mark.timeout(30)
def test_server_error_is_a_status_error_and_tried_once(server, provider):
    server.enqueue(Fault.status(500))
    error, _ = fail(provider, ProviderStatusError)
    assert error.status_code == 500 and error.retryable
    assert len(server.chat_requests) == 1


@pytest.mark.timeout(30)
def test_bad_request_is_not_retryable(server, provider):
    server.enqueue(Fault.status(400))
    error, _ = fail(provider, ProviderStatusError)
    assert error.status_code == 400 and not error.retryable


@pytest.mark.timeout(30)
@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_name_the_env_var(server, provider, status):
    server.enqueue(Fault.status(status))
    error, _ = fail(provider, AuthenticationError)
    assert error.status_code == status
    assert "OPENAI_API_KEY" in str(error)


@pytest.mark.timeout(30)
def test_disconnect_mid_stream_is_a_cut_off_reply(server, provider):
    server.enqueue(Fault.disconnect_after(2, content="one two three four"))
    error, items = fail(provider, ProviderResponseError)
    assert "cut off" in str(error)
    assert items == [TextDelta("one "), TextDelta("two ")]


@pytest.mark.timeout(30)
def test_stream_without_finish_reason_is_a_cut_off_reply(server, provider):
    server.enqueue(Fault.truncate_after(2, content="one two three four"))
    error, items = fail(provider, ProviderResponseError)
    assert "cut off" in str(error) and "finish_reason" in str(error)
    assert items == [TextDelta("one "), TextDelta("two ")]


@pytest.mark.timeout(30)
def test_a_chunk_that_is_not_json_is_a_response_error(server, provider):
    server.enqueue(Fault.malformed())
    error, _ = fail(provider, ProviderResponseError)
    assert "malformed" in str(error)


@pytest.mark.timeout(30)
def test_a_silent_server_times_out_within_the_timeout_setting(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server.enqueue(Fault.hang(10))
    provider = OpenAIProvider({"base_url": server.base_url, "timeout": 0.5})
    start = time.monotonic()
    error, _ = fail(provider, ProviderTimeoutError)
    elapsed = time.monotonic() - start
    # The type proves the timeout fired before the 10 s hang ended (its end is a connection
    # error); the message and the lower bound that it was the 0.5 s setting. The upper bound
    # is generous (10x the setting) for a loaded machine: it only catches a much longer wait.
    assert "within 0.5 s" in str(error)
    assert 0.45 <= elapsed < 5


@pytest.mark.timeout(30)
def test_request_timeout_is_a_deadline_for_the_whole_reply(server, provider):
    # each chunk arrives well within the inactivity limit; the whole reply does not
    server.enqueue(Reply(" ".join(["word"] * 40), chunk_delay=0.1))
    error, items = fail(provider, ProviderTimeoutError, timeout=0.6)
    # the whole reply takes 4 s: the deadline cut it short, after some deltas had arrived
    assert 0 < len(items) < 40, items
    assert "no complete reply" in str(error) and "within 0.6 s" in str(error)


@pytest.mark.timeout(30)
def test_connection_refused_is_reported_within_seconds(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    provider = OpenAIProvider({"base_url": f"http://127.0.0.1:{unused_port()}/v1"})
    start = time.monotonic()
    error, _ = fail(provider, ProviderConnectionError)
    # The type proves the path. A refusal is immediate: the bound is generous for a loaded
    # machine and only catches a wait for a long timeout. (One attempt, no SDK retry, is
    # pinned by the *_tried_once tests, which count requests.)
    assert time.monotonic() - start < 8
    assert error.retryable


FAULTS = [
    None,
    Fault.status(429, retry_after=1),
    Fault.status(500),
    Fault.status(401),
    Fault.status(401, body={"error": {"message": f"Incorrect API key provided: {KEY}"}}),
    Fault.disconnect_after(1),
    Fault.truncate_after(1),
    Fault.malformed(),
    Fault.hang(10),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: "reply" if f is None else f.kind)
def test_the_key_never_leaks_and_errors_name_provider_and_model(server, monkeypatch, caplog, fault):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    provider = OpenAIProvider({"base_url": server.base_url, "timeout": 0.5})
    if fault is not None:
        server.enqueue(fault)
    assert KEY not in repr(provider)
    items, error = run(provider, model="gpt-4o")
    assert server.chat_requests[-1].headers["authorization"] == f"Bearer {KEY}"  # it was sent
    assert KEY not in repr(provider)
    assert KEY not in caplog.text
    assert caplog.records, "DEBUG logging was captured"
    if fault is None:
        assert error is None and isinstance(items[-1], Completion)
        return
    assert isinstance(error, ProviderError)
    assert KEY not in str(error) and KEY not in repr(error)
    assert error.provider == "openai" and error.model == "gpt-4o"
    cause = error.__cause__
    while cause is not None:  # a chained cause is shown in tracebacks: it must not leak either
        assert KEY not in str(cause)
        cause = cause.__cause__


# -- availability ---------------------------------------------------------------------------


def test_availability_needs_a_key_or_a_base_url(monkeypatch):
    state = OpenAIProvider().availability()
    assert not state.usable
    assert "OPENAI_API_KEY" in state.reason and "OPENAI_BASE_URL" in state.reason
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert OpenAIProvider().availability().usable
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    assert OpenAIProvider().availability().usable
    monkeypatch.delenv("OPENAI_BASE_URL")
    assert OpenAIProvider({"base_url": "http://127.0.0.1:1/v1"}).availability().usable


def test_api_key_env_setting_names_another_variable(monkeypatch):
    monkeypatch.setenv("MY_OPENAI_KEY", KEY)
    assert not OpenAIProvider().availability().usable
    assert OpenAIProvider({"api_key_env": "MY_OPENAI_KEY"}).availability().usable


def test_availability_without_the_openai_package(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setitem(sys.modules, "openai", None)  # import openai now fails
    state = OpenAIProvider().availability()
    assert not state.usable and "pip install openai" in state.reason


def test_the_module_imports_without_the_openai_package():
    code = (
        "import sys; sys.modules['openai'] = None\n"
        "from copilot.providers.openai import OpenAIProvider\n"
        "state = OpenAIProvider({'base_url': 'http://127.0.0.1:1/v1'}).availability()\n"
        "assert not state.usable and 'openai' in state.reason, state\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.timeout(30)
def test_unusable_provider_raises_without_calling_out():
    _, error = run(OpenAIProvider())
    assert type(error) is ProviderError and not error.retryable
    assert "OPENAI_API_KEY" in str(error)


@pytest.mark.timeout(30)
def test_a_local_server_needs_no_key(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    items = ok(OpenAIProvider())
    assert items[-1].content == "echo: hello world"
    assert server.chat_requests[-1].headers["authorization"] == "Bearer not-needed"


# -- context windows and tokens -------------------------------------------------------------


def test_context_windows():
    provider = OpenAIProvider()
    assert provider.context_window("gpt-4.1") == 1_047_576
    assert provider.context_window("gpt-4.1-mini") == 1_047_576
    assert provider.context_window("gpt-4o") == 128_000
    assert provider.context_window("gpt-4o-mini-2024-07-18") == 128_000  # a dated snapshot
    assert provider.context_window("o3") == 200_000
    assert provider.context_window("o4-mini") == 200_000
    assert provider.context_window("gpt-3.5-turbo") == 16_385
    assert provider.context_window("my-finetune") == 8192
    overridden = OpenAIProvider({"context_window": 32_000, "context_windows": {"gpt-4o": 1000}})
    assert overridden.context_window("gpt-4o") == 1000
    assert overridden.context_window("gpt-4.1") == 32_000
    assert "gpt-4.1" in provider.models()


def test_count_tokens_is_the_offline_estimate():
    text = "The quick brown fox jumps over the lazy dog. " * 10
    assert OpenAIProvider().count_tokens("gpt-4o", text) == estimate_tokens(text)


# -- GitHub Models, Ollama, OpenAI-compatible -----------------------------------------------


@pytest.mark.timeout(30)
def test_github_sends_the_github_token(server, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", GH_TOKEN)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # must not be used
    provider = GitHubModelsProvider({"base_url": server.base_url})
    items = ok(provider, model="openai/gpt-4.1")
    assert items[-1].content == "echo: hello world"
    request = server.chat_requests[-1]
    assert request.headers["authorization"] == f"Bearer {GH_TOKEN}"
    assert request.json["model"] == "openai/gpt-4.1"


@pytest.mark.timeout(30)
def test_github_refused_token_names_github_token(server, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("GITHUB_TOKEN", GH_TOKEN)
    server.enqueue(Fault.status(401, body={"error": {"message": f"bad token {GH_TOKEN}"}}))
    error, _ = fail(GitHubModelsProvider({"base_url": server.base_url}), AuthenticationError)
    assert "GITHUB_TOKEN" in str(error) and GH_TOKEN not in str(error)
    assert error.provider == "github"
    assert GH_TOKEN not in caplog.text


def test_github_defaults(monkeypatch):
    provider = GitHubModelsProvider()
    assert provider.base_url == "https://models.github.ai/inference"
    state = provider.availability()
    assert not state.usable and "GITHUB_TOKEN" in state.reason
    # a base URL alone is not enough: GitHub Models always needs the token
    assert not GitHubModelsProvider({"base_url": "http://127.0.0.1:1/v1"}).availability().usable
    monkeypatch.setenv("GITHUB_TOKEN", GH_TOKEN)
    assert provider.availability().usable
    assert GH_TOKEN not in repr(provider)
    assert provider.context_window("openai/gpt-4.1") == 8000
    assert not provider._official_api()


@pytest.mark.timeout(30)
def test_ollama_uses_ollama_host(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # must not be sent to Ollama
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{server.port}")
    provider = OllamaProvider()
    assert provider.availability().usable
    items = ok(provider, model="llama3.2", options={"max_tokens": 5})
    assert items[-1].content == "echo: hello world"
    request = server.chat_requests[-1]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer not-needed"
    assert request.json["model"] == "llama3.2" and request.json["max_tokens"] == 5


@pytest.mark.timeout(30)
def test_ollama_base_url_setting_without_path_gets_v1(server):
    provider = OllamaProvider({"base_url": f"http://127.0.0.1:{server.port}"})
    assert ok(provider, model="llama3.2")[-1].content == "echo: hello world"
    assert server.chat_requests[-1].path == "/v1/chat/completions"


def test_ollama_is_unusable_until_told_where_the_server_is():
    state = OllamaProvider().availability()
    assert not state.usable and "OLLAMA_HOST" in state.reason
    assert OllamaProvider().context_window("llama3.2") == 4096


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:11434/v1"),
        ("localhost:1234", "http://localhost:1234/v1"),
        ("0.0.0.0", "http://127.0.0.1:11434/v1"),
        ("http://gpu-box:11434/", "http://gpu-box:11434/v1"),
        ("https://ollama.example.com", "https://ollama.example.com/v1"),
        ("http://h:5/v1", "http://h:5/v1"),
        ("[::1]:8000", "http://[::1]:8000/v1"),
    ],
)
def test_ollama_host_forms(host, url):
    assert _ollama_url(host) == url


@pytest.mark.timeout(30)
def test_openai_compatible_provider_needs_a_base_url(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # the real OpenAI key must not go to it
    assert not OpenAICompatibleProvider().availability().usable
    monkeypatch.setenv("OPENAI_COMPATIBLE_BASE_URL", server.base_url)
    provider = OpenAICompatibleProvider()
    assert provider.availability().usable
    assert ok(provider, model="qwen3")[-1].content == "echo: hello world"
    assert server.chat_requests[-1].headers["authorization"] == "Bearer not-needed"


# -- tools ----------------------------------------------------------------------------------

WEATHER = ToolSchema(
    "get_weather",
    "Today's weather",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def run_tools(provider, messages, tools=(WEATHER,)):
    async def go():
        try:
            request = ModelRequest("gpt-4o", messages, {}, None, tuple(tools))
            return [item async for item in provider.stream(request)]
        finally:
            await provider.aclose()

    return asyncio.run(go())


@pytest.mark.timeout(30)
def test_streamed_tool_calls_split_over_chunks_become_tool_call_requests(server, provider):
    server.enqueue(
        Reply(
            "Let me check.",
            tool_calls=[
                ToolCall("get_weather", {"city": "Paris"}, id="call_a"),
                ToolCall("get_weather", '{"city": "Oslo"}', chunks=['{"ci', 'ty": "Os', 'lo"}']),
            ],
        )
    )
    items = run_tools(provider, HELLO)
    completion = items[-1]
    assert items[:-1] == [TextDelta("Let "), TextDelta("me "), TextDelta("check.")]
    assert completion.finish_reason == "tool_calls"
    assert completion.content == "Let me check."
    assert completion.tool_calls == (
        ToolCallRequest("call_a", "get_weather", '{"city": "Paris"}'),
        ToolCallRequest("call_1", "get_weather", '{"city": "Oslo"}'),
    )
    body = server.chat_requests[-1].json
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Today's weather",
                "parameters": dict(WEATHER.parameters),
            },
        }
    ]


@pytest.mark.timeout(30)
def test_the_arguments_really_arrive_in_pieces(server, provider):
    """The scripted server splits every call's arguments over several chunks by default."""
    server.enqueue(Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"})]))
    with_tools = run_tools(provider, HELLO)[-1]
    assert with_tools.tool_calls[0].arguments == '{"city": "Paris"}'
    assert ToolCall("get_weather", {"city": "Paris"}).argument_chunks() == [
        '{"cit',
        'y": "',
        'Paris"}',
    ]


@pytest.mark.timeout(30)
def test_calls_and_results_are_replayed_in_the_openai_wire_format(server, provider):
    messages = (
        ChatMessage("user", "weather in Paris and Oslo?"),
        ChatMessage(
            "assistant",
            "",
            tool_calls=(
                ToolCallRequest("c1", "get_weather", '{"city": "Paris"}'),
                ToolCallRequest("c2", "get_weather", '{"city": "Oslo"}'),
            ),
        ),
        ChatMessage("tool", "sunny", tool_call_id="c1"),
        ChatMessage("tool", "rain", tool_call_id="c2"),
    )
    server.enqueue(Reply("Paris is sunny, Oslo rainy."))
    completion = run_tools(provider, messages)[-1]
    assert completion.content == "Paris is sunny, Oslo rainy." and completion.tool_calls == ()
    assert server.chat_requests[-1].json["messages"] == [
        {"role": "user", "content": "weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
    ]


@pytest.mark.timeout(30)
def test_a_call_without_its_result_is_refused_like_openai_does(server, provider):
    messages = (
        ChatMessage("user", "weather?"),
        ChatMessage("assistant", "", tool_calls=(ToolCallRequest("c1", "get_weather", "{}"),)),
        ChatMessage("user", "and now?"),
    )

    async def go():
        try:
            request = ModelRequest("gpt-4o", messages, {}, None, (WEATHER,))
            return [item async for item in provider.stream(request)]
        finally:
            await provider.aclose()

    with pytest.raises(ProviderStatusError, match="must be followed by tool messages"):
        asyncio.run(go())


@pytest.mark.timeout(30)
def test_no_tools_means_no_tools_key(server, provider):
    ok(provider)
    assert "tools" not in server.chat_requests[-1].json


def test_tool_support():
    assert OpenAIProvider().supports_tools("gpt-4.1")
    assert GitHubModelsProvider().supports_tools("openai/gpt-4.1")
    assert not OpenAICompatibleProvider({"tools": False}).supports_tools("tiny")
