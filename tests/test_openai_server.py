"""Tests for copilot.testing.openai_server, driven through the real ``openai`` SDK."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from copilot.testing import (
    DEFAULT_MODEL,
    Fault,
    RecordedRequest,
    Reply,
    ScriptedOpenAIServer,
    ToolCall,
    count_tokens,
    default_reply_content,
    prompt_token_count,
    split_chunks,
    unused_port,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
USER = [{"role": "user", "content": "hello brave new world"}]
#: A per-request stall the keep-alive tests must not see: Linux's delayed ACK (40 ms).
STALL = 0.04

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as s:
        yield s


def _client(server: ScriptedOpenAIServer, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0, **kw)


def _aclient(server: ScriptedOpenAIServer, **kw: object) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0, **kw)


def _stream_deltas(client: openai.OpenAI, **kw: object) -> tuple[list[str], list[object]]:
    """Return (content deltas of content chunks, all chunks)."""
    chunks = list(
        client.chat.completions.create(model="gpt-x", messages=USER, stream=True, **kw)  # type: ignore[call-overload]
    )
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    return deltas, chunks


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def test_helpers() -> None:
    assert count_tokens("  a b\tc\n") == 3
    assert prompt_token_count([{"role": "system", "content": "x y"}, *USER]) == 6
    assert default_reply_content([*USER, {"role": "assistant", "content": "z"}]) == (
        "echo: hello brave new world"
    )
    assert default_reply_content([]) == "echo: "
    parts = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]
    assert default_reply_content(parts) == "echo: a b"
    assert split_chunks("echo: hello  world ") == ["echo: ", "hello  ", "world "]
    assert split_chunks("") == []
    for s in ["", "  ", " lead", "a\nb  c\t", "x"]:
        assert "".join(split_chunks(s)) == s
    with pytest.raises(ValueError):
        Reply("abc", chunks=["a", "b"])
    assert Reply(chunks=["a", "b"]).content == "ab"
    with pytest.raises(TypeError):
        ScriptedOpenAIServer().enqueue("nope")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# default reply
# ------------------------------------------------------------------------------------------


def test_default_reply_non_streaming(server: ScriptedOpenAIServer) -> None:
    msgs = [{"role": "system", "content": "be terse"}, *USER]
    r = _client(server).chat.completions.create(model="gpt-x", messages=msgs)  # type: ignore[arg-type]
    assert r.object == "chat.completion"
    assert r.model == "gpt-x"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "echo: hello brave new world"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.prompt_tokens == 6  # whitespace words over all messages
    assert r.usage.completion_tokens == 5
    assert r.usage.total_tokens == 11


def test_default_reply_streaming_with_usage(server: ScriptedOpenAIServer) -> None:
    deltas, chunks = _stream_deltas(_client(server), stream_options={"include_usage": True})
    assert deltas == ["echo: ", "hello ", "brave ", "new ", "world"]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    first = chunks[0]
    assert first.choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish == [None] * 6 + ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (4, 5)
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_without_usage_has_no_usage_chunk(server: ScriptedOpenAIServer) -> None:
    _, chunks = _stream_deltas(_client(server))
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_raw_sse_wire_format(server: ScriptedOpenAIServer) -> None:
    client = _client(server)
    with client.chat.completions.with_streaming_response.create(
        model="gpt-x", messages=USER, stream=True, stream_options={"include_usage": True}
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["transfer-encoding"] == "chunked"
        text = "".join(resp.iter_text())
    events = text.split("\n\n")
    assert events[-1] == ""
    assert events[-2] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["total_tokens"] == 9


def test_async_client_streaming_and_not(server: ScriptedOpenAIServer) -> None:
    async def go() -> tuple[str | None, list[str]]:
        client = _aclient(server)
        try:
            r = await client.chat.completions.create(model="m-async", messages=USER)
            stream = await client.chat.completions.create(
                model="m-async", messages=USER, stream=True
            )
            deltas = [
                c.choices[0].delta.content async for c in stream if c.choices[0].delta.content
            ]
            return r.choices[0].message.content, deltas
        finally:
            await client.close()

    content, deltas = asyncio.run(go())
    assert content == "echo: hello brave new world"
    assert "".join(deltas) == content
    assert len(deltas) == 5


# ------------------------------------------------------------------------------------------
# scripted replies
# ------------------------------------------------------------------------------------------


def test_scripted_reply_custom_chunks(server: ScriptedOpenAIServer) -> None:
    server.enqueue(Reply(chunks=["Hel", "lo", ", wor", "ld!"], model="other-model"))
    deltas, chunks = _stream_deltas(_client(server))
    assert deltas == ["Hel", "lo", ", wor", "ld!"]
    assert {c.model for c in chunks} == {"other-model"}


def test_script_is_fifo_then_default(server: ScriptedOpenAIServer) -> None:
    server.enqueue(Reply("one", prompt_tokens=100, completion_tokens=7), Reply("two"))
    assert server.pending == 2
    client = _client(server)
    r1 = client.chat.completions.create(model="gpt-x", messages=USER)
    r2 = client.chat.completions.create(model="gpt-x", messages=USER)
    r3 = client.chat.completions.create(model="gpt-x", messages=USER)
    assert [r.choices[0].message.content for r in (r1, r2, r3)] == [
        "one",
        "two",
        "echo: hello brave new world",
    ]
    assert r1.usage is not None and (r1.usage.prompt_tokens, r1.usage.completion_tokens) == (100, 7)
    assert server.pending == 0


def test_reply_finish_reason_and_reset(server: ScriptedOpenAIServer) -> None:
    server.enqueue(Reply("cut", finish_reason="length"), Reply("never"))
    client = _client(server)
    r = client.chat.completions.create(model="gpt-x", messages=USER)
    assert r.choices[0].finish_reason == "length"
    server.reset()
    assert server.requests == [] and server.pending == 0
    r = client.chat.completions.create(model="gpt-x", messages=USER)
    assert r.choices[0].message.content == "echo: hello brave new world"
    assert len(server.requests) == 1


# ------------------------------------------------------------------------------------------
# faults
# ------------------------------------------------------------------------------------------


def test_429_with_retry_after(server: ScriptedOpenAIServer) -> None:
    server.enqueue(Fault.status(429, retry_after=3))
    with pytest.raises(openai.RateLimitError) as ei:
        _client(server).chat.completions.create(model="gpt-x", messages=USER)
    err = ei.value
    assert err.status_code == 429
    assert err.response.headers["retry-after"] == "3"
    assert isinstance(err.body, dict) and err.body["code"] == "rate_limit_exceeded"
    assert err.code == "rate_limit_exceeded"


def test_fractional_retry_after_and_custom_body(server: ScriptedOpenAIServer) -> None:
    body = {"error": {"message": "slow down", "type": "requests", "code": "x"}}
    server.enqueue(Fault.status(429, body, retry_after=0.25, headers={"x-extra": "1"}))
    with pytest.raises(openai.RateLimitError) as ei:
        _client(server).chat.completions.create(model="gpt-x", messages=USER, stream=True)
    assert ei.value.response.headers["retry-after"] == "0.25"
    assert ei.value.response.headers["x-extra"] == "1"
    assert ei.value.message == "Error code: 429 - slow down"


def test_429_is_retried_by_sdk_after_retry_after(server: ScriptedOpenAIServer) -> None:
    server.enqueue(Fault.status(429, retry_after=0.3))
    client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=1)
    t0 = time.monotonic()
    r = client.chat.completions.create(model="gpt-x", messages=USER)
    assert time.monotonic() - t0 >= 0.28
    assert r.choices[0].message.content == "echo: hello brave new world"
    assert len(server.chat_requests) == 2


@pytest.mark.parametrize("stream", [False, True])
def test_500_and_503(server: ScriptedOpenAIServer, stream: bool) -> None:
    server.enqueue(Fault.status(500), Fault.status(503))
    client = _client(server)
    with pytest.raises(openai.InternalServerError) as ei:
        client.chat.completions.create(model="gpt-x", messages=USER, stream=stream)
    assert ei.value.status_code == 500
    assert isinstance(ei.value.body, dict) and ei.value.body["type"] == "server_error"
    with pytest.raises(openai.InternalServerError) as ei:
        client.chat.completions.create(model="gpt-x", messages=USER, stream=stream)
    assert ei.value.status_code == 503


def test_disconnect_mid_stream(server: ScriptedOpenAIServer) -> None:
    server.enqueue(Fault.disconnect_after(2, content="one two three four"))
    stream = _client(server).chat.completions.create(model="gpt-x", messages=USER, stream=True)
    got: list[str | None] = []
    # The SDK wraps the transport error (httpx "incomplete chunked read") in APIConnectionError.
    with pytest.raises(openai.APIConnectionError) as ei:
        for chunk in stream:
            got.append(chunk.choices[0].delta.content)
    assert not isinstance(ei.value, openai.APITimeoutError)
    assert "incomplete chunked read" in repr(ei.value.__cause__)
    assert got == ["", "one ", "two "]


def test_disconnect_async(server: ScriptedOpenAIServer) -> None:
    server.enqueue(Fault.disconnect_after(1))

    async def go() -> list[str | None]:
        got: list[str | None] = []
        async with _aclient(server) as client:
            stream = await client.chat.completions.create(model="gpt-x", messages=USER, stream=True)
            async for chunk in stream:
                got.append(chunk.choices[0].delta.content)
        return got

    with pytest.raises(openai.APIConnectionError):
        asyncio.run(go())


def test_disconnect_non_streaming(server: ScriptedOpenAIServer) -> None:
    server.enqueue(Fault.disconnect_after(0))
    with pytest.raises(openai.APIConnectionError):
        _client(server).chat.completions.create(model="gpt-x", messages=USER)


def test_truncate_after_leaves_no_finish_reason(server: ScriptedOpenAIServer) -> None:
    server.enqueue(Fault.truncate_after(2))
    client = _client(server)
    deltas, chunks = _stream_deltas(client, stream_options={"include_usage": True})
    assert deltas == ["echo: ", "hello "]
    assert len(chunks) == 3  # role chunk + 2 content chunks, no usage chunk
    assert all(c.choices and c.choices[0].finish_reason is None for c in chunks)
    # the connection ended cleanly: the next request on the same client works
    r = client.chat.completions.create(model="gpt-x", messages=USER)
    assert r.choices[0].finish_reason == "stop"


def test_truncate_non_streaming(server: ScriptedOpenAIServer) -> None:
    server.enqueue(Fault.truncate_after(1, content="alpha beta"))
    r = _client(server).chat.completions.create(model="gpt-x", messages=USER)
    assert r.choices[0].message.content == "alpha "
    assert r.choices[0].finish_reason is None


def test_malformed_stream(server: ScriptedOpenAIServer) -> None:
    server.enqueue(Fault.malformed())
    stream = _client(server).chat.completions.create(model="gpt-x", messages=USER, stream=True)
    # The SDK does not wrap it: a bare json.JSONDecodeError escapes the iterator.
    with pytest.raises(json.JSONDecodeError):
        list(stream)


def test_malformed_non_streaming(server: ScriptedOpenAIServer) -> None:
    server.enqueue(Fault.malformed())
    # Not wrapped either: the SDK's response.json() raises json.JSONDecodeError.
    with pytest.raises(json.JSONDecodeError):
        _client(server).chat.completions.create(model="gpt-x", messages=USER)


@pytest.mark.timeout(10)
def test_hang_times_out_client(server: ScriptedOpenAIServer) -> None:
    server.enqueue(Fault.hang(5))
    client = _client(server, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="gpt-x", messages=USER)
    # The type proves the client gave up before the 5 s hang ended (its end closes the
    # connection: a plain APIConnectionError); the lower bound that the server held the
    # request silent for the whole 0.5 s timeout. The upper bound is generous (a loaded machine).
    assert 0.45 <= time.monotonic() - t0 < 4.5


@pytest.mark.timeout(10)
def test_hang_times_out_async_stream(server: ScriptedOpenAIServer) -> None:
    server.enqueue(Fault.hang(5))

    async def go() -> None:
        async with _aclient(server, timeout=0.5) as client:
            await client.chat.completions.create(model="gpt-x", messages=USER, stream=True)

    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        asyncio.run(go())
    # as above: the type proves the timeout fired inside the hang, the lower bound its length
    assert 0.45 <= time.monotonic() - t0 < 4.5


@pytest.mark.timeout(10)
def test_stop_interrupts_hang() -> None:
    server = ScriptedOpenAIServer().start()
    server.enqueue(Fault.hang(30))
    errors: list[BaseException] = []

    def call() -> None:
        try:
            _client(server, timeout=20).chat.completions.create(model="gpt-x", messages=USER)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 5
    while not server.chat_requests and time.monotonic() < deadline:
        time.sleep(0.01)
    server.stop()
    # The join's 5 s is the generous bound: without stop() the call would wait for its 20 s
    # timeout (a timeout error) or the 30 s hang; a connection error proves stop() cut it.
    t.join(5)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], openai.APIConnectionError)
    assert not isinstance(errors[0], openai.APITimeoutError)


@pytest.mark.timeout(10)
def test_connection_refused() -> None:
    port = unused_port()
    client = openai.OpenAI(api_key="sk-test", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    t0 = time.monotonic()
    with pytest.raises(openai.APIConnectionError) as ei:
        client.chat.completions.create(model="gpt-x", messages=USER)
    assert not isinstance(ei.value, openai.APITimeoutError)  # refused, not waited out
    # A refusal is immediate; the bound is generous for a loaded machine and still below the
    # SDK's 5 s connect timeout, so a connection waited out rather than refused fails here.
    assert time.monotonic() - t0 < 4.0
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


# ------------------------------------------------------------------------------------------
# validation, other endpoints
# ------------------------------------------------------------------------------------------


def test_missing_fields_400_without_consuming_script(server: ScriptedOpenAIServer) -> None:
    server.enqueue(Reply("kept"))
    client = _client(server)
    with pytest.raises(openai.BadRequestError) as ei:
        client.post("/chat/completions", body={"model": "gpt-x"}, cast_to=object)
    assert ei.value.status_code == 400
    assert isinstance(ei.value.body, dict) and ei.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as ei:
        client.post("/chat/completions", body={"messages": USER}, cast_to=object)
    assert isinstance(ei.value.body, dict) and ei.value.body["param"] == "model"
    assert server.pending == 1
    r = client.chat.completions.create(model="gpt-x", messages=USER)
    assert r.choices[0].message.content == "kept"


def test_context_window_exceeded() -> None:
    with ScriptedOpenAIServer(context_window=3) as server:
        with pytest.raises(openai.BadRequestError) as ei:
            _client(server).chat.completions.create(model="gpt-x", messages=USER)
        assert ei.value.code == "context_length_exceeded"
        assert "maximum context length is 3 tokens" in ei.value.message


def test_models_list_and_404(server: ScriptedOpenAIServer) -> None:
    client = _client(server)
    client.chat.completions.create(model="gpt-x", messages=USER)
    models = client.models.list().data
    assert {m.id for m in models} == {DEFAULT_MODEL, "gpt-x"}
    assert all(m.object == "model" and m.owned_by == "scripted" for m in models)
    assert client.models.retrieve("gpt-x").id == "gpt-x"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
    with pytest.raises(openai.NotFoundError) as ei:
        client.embeddings.create(model="e", input="x")
    assert isinstance(ei.value.body, dict) and ei.value.body["type"] == "invalid_request_error"


# ------------------------------------------------------------------------------------------
# recording, timing, keep-alive
# ------------------------------------------------------------------------------------------


def test_requests_recorded_and_headers_not_logged(
    server: ScriptedOpenAIServer, capfd: pytest.CaptureFixture[str]
) -> None:
    client = _client(server)
    msgs = [{"role": "system", "content": "sys"}, *USER]
    client.chat.completions.create(model="gpt-x", messages=msgs, temperature=0.5)  # type: ignore[arg-type]
    client.models.list()
    assert len(server.requests) == 2
    req = server.requests[0]
    assert isinstance(req, RecordedRequest)
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.json == {"model": "gpt-x", "messages": msgs, "temperature": 0.5}
    assert json.loads(req.body) == req.json
    assert req.headers["authorization"] == "Bearer sk-test"
    assert server.requests[1].method == "GET" and server.requests[1].json is None
    assert server.last_request is server.requests[1]
    assert server.chat_requests == [req]
    out, err = capfd.readouterr()
    assert "sk-test" not in out + err
    assert "POST" not in out + err


def test_latency_honoured() -> None:
    with ScriptedOpenAIServer(latency=0.2) as server:
        client = _client(server)
        client.models.list()  # warm up the connection (latency applies to chat only)
        t0 = time.monotonic()
        client.chat.completions.create(model="gpt-x", messages=USER)
        elapsed = time.monotonic() - t0
        # The lower bound proves the latency; the upper bound is generous for a loaded machine
        # and only catches a latency applied many times over.
        assert 0.2 <= elapsed < 2.0
        server.enqueue(Fault.status(500))
        t0 = time.monotonic()
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-x", messages=USER)
        assert time.monotonic() - t0 >= 0.2


def test_chunk_delay_honoured() -> None:
    with ScriptedOpenAIServer(chunk_delay=0.05) as server:
        client = _client(server)
        stream = client.chat.completions.create(model="gpt-x", messages=USER, stream=True)
        times = [time.monotonic() for _ in stream]
        # 7 events (role, 5 content, finish) + [DONE]: 7 gaps of 50 ms
        assert len(times) == 7
        assert times[-1] - times[0] >= 5 * 0.05 * 0.9
        # A reply's own chunk_delay=0 overrides the server's: with the server's 50 ms, these
        # 60 chunks would take at least 3 s. The 1.5 s bound is generous for a loaded machine.
        server.enqueue(Reply(" ".join(["w"] * 60), chunk_delay=0.0))
        t0 = time.monotonic()
        chunks = list(client.chat.completions.create(model="gpt-x", messages=USER, stream=True))
        assert len(chunks) >= 60
        assert time.monotonic() - t0 < 1.5


@pytest.mark.parametrize("stream", [False, True])
def test_keep_alive_many_requests_fast(server: ScriptedOpenAIServer, stream: bool) -> None:
    client = _client(server)
    n = 200
    durations = []
    for i in range(n):
        t0 = time.monotonic()
        msgs = [{"role": "user", "content": f"n {i}"}]
        if stream:
            text = "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(model="gpt-x", messages=msgs, stream=True)  # type: ignore[arg-type]
            )
        else:
            r = client.chat.completions.create(model="gpt-x", messages=msgs)  # type: ignore[arg-type]
            text = r.choices[0].message.content or ""
        assert text == f"echo: n {i}"
        durations.append(time.monotonic() - t0)
    # Fast means no per-request stall (a delayed ACK costs 40 ms, a reconnect more): the median
    # request stays below that. The median shrugs off a loaded machine's occasional slow request.
    assert statistics.median(durations) < STALL, statistics.median(durations)
    assert len(server.requests) == n
    connections = len({r.client for r in server.requests})
    if stream:
        # The sync SDK stops reading at `data: [DONE]` and closes the response before the
        # chunked terminator, so httpcore drops the connection: one connection per stream.
        assert connections <= n
    else:
        assert connections == 1  # all requests over one keep-alive connection


def test_keep_alive_async_streaming(server: ScriptedOpenAIServer) -> None:
    """AsyncOpenAI drains the body after [DONE] on HTTP/1.1, so the connection is reused."""

    durations = []

    async def go() -> None:
        async with _aclient(server) as client:
            for i in range(100):
                t0 = time.monotonic()
                msgs = [{"role": "user", "content": f"n {i}"}]
                stream = await client.chat.completions.create(
                    model="gpt-x", messages=msgs, stream=True
                )
                text = "".join([c.choices[0].delta.content or "" async for c in stream])
                assert text == f"echo: n {i}"
                durations.append(time.monotonic() - t0)

    asyncio.run(go())
    assert statistics.median(durations) < STALL, statistics.median(durations)  # as above
    assert len(server.requests) == 100
    assert len({r.client for r in server.requests}) == 1


def test_concurrent_clients(server: ScriptedOpenAIServer) -> None:
    async def go() -> list[str | None]:
        async with _aclient(server) as client:
            rs = await asyncio.gather(
                *[
                    client.chat.completions.create(
                        model="gpt-x", messages=[{"role": "user", "content": str(i)}]
                    )
                    for i in range(20)
                ]
            )
        return [r.choices[0].message.content for r in rs]

    assert asyncio.run(go()) == [f"echo: {i}" for i in range(20)]
    assert len(server.requests) == 20


def test_context_manager_and_restart() -> None:
    server = ScriptedOpenAIServer()
    assert not server.running
    with server as s:
        assert s is server and s.running
        assert s.base_url == f"http://127.0.0.1:{s.port}/v1"
        assert s.port != 0
        port = s.port
    assert not server.running
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    server.stop()  # idempotent


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_module_cli_serves_until_terminated() -> None:
    port = unused_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "copilot.testing.openai_server",
            "--port",
            str(port),
            "--latency",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == f"http://127.0.0.1:{port}/v1"
        client = openai.OpenAI(api_key="sk-test", base_url=line, max_retries=0)
        t0 = time.monotonic()
        r = client.chat.completions.create(model="gpt-x", messages=USER)
        assert time.monotonic() - t0 >= 0.05
        assert r.choices[0].message.content == "echo: hello brave new world"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "sk-test" not in out + err


# -- tool calls -------------------------------------------------------------------------------


def test_streamed_tool_calls_arrive_in_fragments_per_index(server: ScriptedOpenAIServer) -> None:
    server.enqueue(
        Reply(
            tool_calls=[
                ToolCall("a", {"x": 1}, id="call_x"),
                ToolCall("b", '{"y": "two"}', chunks=['{"y"', ': "tw', 'o"}']),
            ]
        )
    )
    chunks = list(
        _client(server).chat.completions.create(model="gpt-x", messages=USER, stream=True)
    )
    fragments = [
        (tc.index, tc.id, tc.function.name, tc.function.arguments)
        for c in chunks
        if c.choices
        for tc in c.choices[0].delta.tool_calls or ()
    ]
    assert fragments == [
        (0, "call_x", "a", ""),
        (0, None, None, '{"'),
        (0, None, None, 'x"'),
        (0, None, None, ": 1}"),
        (1, "call_1", "b", ""),
        (1, None, None, '{"y"'),
        (1, None, None, ': "tw'),
        (1, None, None, 'o"}'),
    ]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_non_streamed_tool_calls(server: ScriptedOpenAIServer) -> None:
    server.enqueue(Reply("ok", tool_calls=[ToolCall("a", {"x": 1})], finish_reason="stop"))
    done = _client(server).chat.completions.create(model="gpt-x", messages=USER)
    message = done.choices[0].message
    assert message.content == "ok"
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("call_1", "a", '{"x": 1}')
    ]
    assert done.choices[0].finish_reason == "stop"  # a scripted reason wins


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        (
            [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        _call := {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "a", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "user", "content": "again"},
            ],
            "did not have response messages: c1",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "tool", "tool_call_id": "zz", "content": "r"},
            ],
            "must be a response to a preceeding message with 'tool_calls'",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": None, "tool_calls": [_call]},
            ],
            "responding to each 'tool_call_id': c1",
        ),
    ],
)
def test_unanswered_or_stray_tool_messages_are_refused_as_openai_does(
    server: ScriptedOpenAIServer, messages: list[dict], problem: str
) -> None:
    server.enqueue(Reply("never used"))
    with pytest.raises(openai.BadRequestError, match=problem):
        _client(server).chat.completions.create(model="gpt-x", messages=messages)
    assert server.pending == 1  # a refused request consumes no script item


def test_answered_tool_calls_pass(server: ScriptedOpenAIServer) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "result"},
    ]
    done = _client(server).chat.completions.create(model="gpt-x", messages=messages)
    assert done.choices[0].message.content == "echo: q"
    assert server.chat_requests[-1].json["messages"][2]["tool_call_id"] == "c1"


def test_error_event_mid_stream(server: ScriptedOpenAIServer) -> None:
    server.enqueue(Fault.error_event(1, message="Overloaded now"))
    got: list[str] = []
    with pytest.raises(openai.APIError, match="Overloaded now"):
        for chunk in _client(server).chat.completions.create(
            model="gpt-x", messages=USER, stream=True
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert got == ["echo: "]
