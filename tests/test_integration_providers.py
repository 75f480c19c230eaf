"""Issue 3 end to end: the client, real HTTP on 127.0.0.1, the openai provider, the embedded model.

Everything goes through CopilotClient/Session (routing, retries, the store), not the provider
alone: the provider unit tests live in test_provider_*.py.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import time
from pathlib import Path

import pytest
from helpers import types_of

from copilot import (
    CopilotClient,
    EventType,
    ProviderConnectionError,
    ProviderResponseError,
    ProviderStatusError,
    ProviderTimeoutError,
)
from copilot.testing import Fault, Reply, unused_port

SEED = Path(__file__).parent / "seed" / "session-management.md"
SECRET = "sk-test-SECRET-4f1c9a7d2e"


@pytest.fixture
def openai_env(monkeypatch, openai_server):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    return openai_server


@pytest.fixture
def fast_client(home, openai_env):
    client = CopilotClient(base_directory=home, fallback_model="echo", request_timeout=5)
    yield client
    client.stop(timeout=5)


def chat_requests(server):
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


@pytest.mark.timeout(60)
def test_seed_multiple_sessions_routed_to_a_server_and_to_the_fallback(
    openai_env, monkeypatch, tmp_path
):
    """gpt-4.1 goes to the OpenAI-compatible server, claude-sonnet-4.5 (no key) to the fallback."""
    monkeypatch.setenv("COPILOT_JUPYTER_HOME", str(tmp_path))
    monkeypatch.setenv("COPILOT_JUPYTER_FALLBACK_MODEL", "echo")
    block = re.findall(r"```python\n(.*?)```", SEED.read_text(), re.S)[0]
    ns: dict = {}
    exec(compile(block, "<seed>", "exec"), ns)
    sent = {r.json["messages"][-1]["content"]: r.json for r in chat_requests(openai_env)}
    assert {body["model"] for body in sent.values()} == {"gpt-4.1"}
    python = [m["content"] for m in sent["How do I create a virtual environment?"]["messages"]]
    typescript = [m["content"] for m in sent["How do I set up tsconfig?"]["messages"]]
    assert python == [
        "You are helping with a Python project",
        "echo: You are helping with a Python project",
        "How do I create a virtual environment?",
    ]
    assert typescript[0] == "You are helping with a TypeScript project" and len(typescript) == 3
    assert not any("Go project" in str(body) for body in sent.values())
    go = [r.messages for r in ns["client"]._core.provider("echo").requests]
    assert [m.content for m in go[-1]] == [
        "You are helping with a Go project",
        "echo: You are helping with a Go project",
        "How do I initialize a module?",
    ]
    checker = CopilotClient()
    models = {}
    for info in checker.list_sessions():
        events = checker.resume_session(info["sessionId"]).get_messages()
        models[info["model"]] = {e.data.model for e in events if e.type == "assistant.message"}
    checker.stop()
    assert models == {"gpt-4.1": {"openai:gpt-4.1"}, "claude-sonnet-4.5": {"echo"}}


def test_streamed_reply_usage_and_answering_model(fast_client, openai_env):
    openai_env.enqueue(Reply(content="Use python -m venv .venv", model="gpt-4.1-2025-04-14"))
    session = fast_client.create_session(model="gpt-4.1")
    deltas = []
    session.on(
        lambda e: (
            deltas.append(e.data.deltaContent) if e.type == "assistant.message_delta" else None
        )
    )
    reply = session.send_and_wait(prompt="venv?", temperature=0.2, max_tokens=50)
    assert reply.data.content == "Use python -m venv .venv" == "".join(deltas)
    assert reply.data.model == "openai:gpt-4.1" and reply.data.responseModel == "gpt-4.1-2025-04-14"
    body = chat_requests(openai_env)[-1].json
    assert body["temperature"] == 0.2 and body["stream"] is True
    usage = [e for e in session.get_messages() if e.type == EventType.ASSISTANT_USAGE][0].data
    assert usage.inputTokens == 1 and usage.outputTokens == 5  # the server counts words


def test_429_with_retry_after_is_retried_once(fast_client, openai_env):
    openai_env.enqueue(Fault.status(429, retry_after=0.5), Reply(content="after the wait"))
    session = fast_client.create_session(model="gpt-4.1")
    started = time.perf_counter()
    assert session.send_and_wait(prompt="hi").data.content == "after the wait"
    assert time.perf_counter() - started >= 0.5
    events = session.get_messages()
    assert types_of(events).count("user.message") == 1
    assert [e.data.errorType for e in events if e.type == "session.warning"] == ["RateLimitError"]
    assert len(chat_requests(openai_env)) == 2


def test_5xx_until_retries_run_out(make_client, openai_env):
    client = make_client(max_retries=1)
    openai_env.enqueue(Fault.status(503), Fault.status(503))
    session = client.create_session(model="gpt-4.1")
    with pytest.raises(ProviderStatusError) as info:
        session.send_and_wait(prompt="hi")
    assert info.value.status_code == 503
    error = [e for e in session.get_messages() if e.type == EventType.SESSION_ERROR][0]
    assert error.data.statusCode == 503
    assert session.send_and_wait(prompt="again").data.content == "echo: again"


@pytest.mark.parametrize(
    "fault",
    [
        Fault.disconnect_after(2, "one two three four five"),
        Fault.truncate_after(2),
        Fault.malformed(),
    ],
    ids=["disconnect", "truncate", "malformed"],
)
def test_a_broken_stream_is_never_stored_as_an_answer(make_client, openai_env, fault):
    client = make_client(max_retries=0)
    openai_env.enqueue(fault)
    session = client.create_session(model="gpt-4.1")
    with pytest.raises(ProviderResponseError):
        session.send_and_wait(prompt="hi")
    assert "assistant.message" not in types_of(session.get_messages())
    assert session.send_and_wait(prompt="next").data.content == "echo: next"
    assert [m["content"] for m in chat_requests(openai_env)[-1].json["messages"]] == ["next"]


def test_a_hanging_server_times_out(make_client, openai_env):
    client = make_client(max_retries=0, request_timeout=0.5)
    openai_env.enqueue(Fault.hang(20))
    session = client.create_session(model="gpt-4.1")
    started = time.perf_counter()
    with pytest.raises(ProviderTimeoutError):
        session.send_and_wait(prompt="hi")
    # Half the hang: a timeout that did not fire waits all 20 s; 20 x the 0.5 s timeout leaves
    # room for a loaded machine.
    assert time.perf_counter() - started < 10


def test_connection_refused_is_reported_within_seconds(home, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{unused_port()}/v1")
    client = CopilotClient(base_directory=home)  # default retries: 2, backoff 0.5 s + 1 s
    session = client.create_session(model="gpt-4.1")
    started = time.perf_counter()
    with pytest.raises(ProviderConnectionError):
        session.send_and_wait(prompt="hi")
    # Two retries after 0.5 s + 1 s of backoff; generous (15 s) for a loaded machine, still far
    # below what a connection timeout or the SDK's own retries would add.
    assert time.perf_counter() - started < 15
    assert types_of(session.get_messages()).count("session.warning") == 2
    client.stop()


def test_the_api_key_never_reaches_the_store_events_reprs_or_logs(
    make_client, home, openai_env, caplog
):
    caplog.set_level(logging.DEBUG)
    client = make_client(max_retries=0)
    session = client.create_session(session_id="secret-check", model="gpt-4.1")
    openai_env.enqueue(
        Reply(content="fine"),
        Fault.status(401, body={"error": {"message": f"Incorrect API key provided: {SECRET}"}}),
        Fault.status(500),
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        session.send_and_wait(prompt="one")
        for _ in range(2):
            with pytest.raises(ProviderStatusError) as info:
                session.send_and_wait(prompt="two")
            assert SECRET not in str(info.value) and SECRET not in repr(info.value)
        texts = [repr(client), repr(session), repr(client.get_provider("openai"))]
        texts += [repr(e) for e in session.get_messages()]
        print(client.list_sessions(), client.list_models())
    client.stop()
    assert chat_requests(openai_env)[0].headers["authorization"] == f"Bearer {SECRET}"
    for text in [*texts, out.getvalue(), caplog.text]:
        assert SECRET not in text
    needle = SECRET.encode()
    stored = [p for p in Path(home).rglob("*") if p.is_file()]
    assert stored, "the store wrote nothing?"
    for path in stored:
        data = path.read_bytes()
        assert needle not in data, path
        assert SECRET[-10:].encode() not in data, path


@pytest.mark.local_model
@pytest.mark.timeout(120)
def test_the_embedded_model_through_the_client_is_deterministic(make_client):
    pytest.importorskip("llama_cpp", reason="the [local] extra (llama-cpp-python) is not installed")
    client = make_client()
    answers = []
    for name in ("first", "second"):
        session = client.create_session(session_id=name)  # the default model: local:smollm2
        reply = session.send_and_wait(prompt="What is the capital of France?", max_tokens=24)
        assert reply.data.model == "local:smollm2"
        answers.append(reply.data.content)
    client.stop()
    # the words depend on the llama.cpp build; determinism is what holds on every build
    assert answers[0] == answers[1] and len(answers[0].split()) > 3
