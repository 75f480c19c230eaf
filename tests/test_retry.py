"""Faults during a turn: bounded retries, then a stored session.error and a typed exception.
The prompt is stored once, a cut-off reply is never stored as an answer, the session goes on."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from helpers import types_of

from copilot import (
    AuthenticationError,
    EventType,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    RateLimitError,
)
from copilot.providers.base import ModelRequest, Provider, StreamItem, TextDelta


def test_a_retryable_error_is_retried_and_the_prompt_stored_once(client):
    echo = client.get_provider("echo")
    echo.enqueue(ProviderConnectionError("connection reset"), "second try")
    session = client.create_session(model="echo")
    assert session.send_and_wait(prompt="hi").data.content == "second try"
    events = session.get_messages()
    assert types_of(events).count("user.message") == 1
    warning = [e for e in events if e.type == EventType.SESSION_WARNING][0]
    assert warning.data.warningType == "retry" and "connection reset" in warning.data.message
    usage = [e for e in events if e.type == EventType.ASSISTANT_USAGE][0]
    assert usage.data.attempts == 2


def test_retry_after_is_honoured(client):
    client.get_provider("echo").enqueue(RateLimitError("slow down", retry_after=0.3), "ok")
    session = client.create_session(model="echo")
    started = time.perf_counter()
    assert session.send_and_wait(prompt="hi").data.content == "ok"
    assert time.perf_counter() - started >= 0.3


def test_retries_are_bounded_then_the_error_is_stored_and_raised(make_client):
    client = make_client(max_retries=2)
    echo = client.get_provider("echo")
    echo.enqueue(*[ProviderConnectionError("refused") for _ in range(3)])
    session = client.create_session(model="echo")
    with pytest.raises(ProviderConnectionError):
        session.send_and_wait(prompt="hi")
    assert len(echo.requests) == 3
    events = session.get_messages()
    error = [e for e in events if e.type == EventType.SESSION_ERROR][0]
    assert error.data.errorType == "ProviderConnectionError"
    assert "assistant.message" not in types_of(events)
    assert types_of(events)[-1] == "assistant.turn_end"
    assert session.send_and_wait(prompt="next").data.content == "echo: next"
    sent = [m.content for m in echo.requests[-1].messages]
    assert sent == ["next"]  # the failed prompt had no answer: not in the context


def test_non_retryable_errors_fail_at_once(client):
    echo = client.get_provider("echo")
    echo.enqueue(AuthenticationError("bad key: set OPENAI_API_KEY", status_code=401))
    session = client.create_session(model="echo")
    with pytest.raises(AuthenticationError):
        session.send_and_wait(prompt="hi")
    assert len(echo.requests) == 1
    error = [e for e in session.get_messages() if e.type == EventType.SESSION_ERROR][0]
    assert error.data.statusCode == 401


class CutOff(Provider):
    """Streams some text and stops without a final message, as a dropped connection does."""

    name = "cutoff"

    def __init__(self, settings=None):
        super().__init__(settings)
        self.calls = 0

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        self.calls += 1
        yield TextDelta("half an ans")


class Broken(Provider):
    name = "broken"

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        raise ZeroDivisionError("provider bug")
        yield  # pragma: no cover


def test_a_cut_off_reply_is_never_stored_as_an_answer(client):
    provider = CutOff()
    client.register_provider("cutoff", provider)
    session = client.create_session(model="cutoff:any")
    with pytest.raises(ProviderResponseError, match="cut off"):
        session.send_and_wait(prompt="hi")
    assert provider.calls == 3  # retried twice
    assert "assistant.message" not in types_of(session.get_messages())


def test_an_unexpected_provider_exception_becomes_a_provider_error(client):
    client.register_provider("broken", Broken())
    session = client.create_session(model="broken:any")
    with pytest.raises(ProviderError, match="ZeroDivisionError: provider bug"):
        session.send_and_wait(prompt="hi")
    session.set_model("echo")
    assert session.send_and_wait(prompt="fine").data.content == "echo: fine"


# -- the delay policy, pinned ---------------------------------------------------------------

from copilot.turn import RetryPolicy  # noqa: E402


def _connection() -> ProviderConnectionError:
    return ProviderConnectionError("refused")


def test_backoff_doubles_from_the_base_and_is_capped_by_max_wait():
    policy = RetryPolicy(max_retries=6, backoff=0.5, max_wait=4.0)
    delays = [policy.delay(_connection(), attempt) for attempt in range(1, 7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_retries_stop_after_max_retries_and_for_non_retryable_errors():
    policy = RetryPolicy(max_retries=2, backoff=0.5)
    assert policy.delay(_connection(), 2) == 1.0
    assert policy.delay(_connection(), 3) is None
    assert RetryPolicy(max_retries=0).delay(_connection(), 1) is None
    assert policy.delay(AuthenticationError("bad key", status_code=401), 1) is None


def test_retry_after_is_the_servers_word_within_max_wait():
    policy = RetryPolicy(max_retries=3, backoff=0.5, max_wait=10.0)
    # longer than the backoff: the server's hint wins
    assert policy.delay(RateLimitError("slow", status_code=429, retry_after=1.5), 1) == 1.5
    assert policy.delay(RateLimitError("slow", status_code=429, retry_after=7.0), 2) == 7.0
    # shorter than the backoff: still the server's hint (it knows when it will take us back)
    assert policy.delay(RateLimitError("slow", status_code=429, retry_after=0.1), 3) == 0.1
    # exactly max_wait is honoured; beyond it the turn gives up instead of stalling
    assert policy.delay(RateLimitError("slow", status_code=429, retry_after=10.0), 1) == 10.0
    assert policy.delay(RateLimitError("slow", status_code=429, retry_after=10.01), 1) is None
    # a 429 without a hint backs off like any retryable error
    assert policy.delay(RateLimitError("slow", status_code=429), 2) == 1.0
    # the retry count bounds 429s too
    assert policy.delay(RateLimitError("slow", status_code=429, retry_after=1.0), 4) is None


def test_a_retry_after_longer_than_the_backoff_is_waited_for_end_to_end(
    make_client, openai_server, monkeypatch
):
    # The real OpenAI provider against a local server answering 429 with Retry-After 1.5 s,
    # three times the first backoff (0.5 s): the retry comes no sooner than the server asked.
    from copilot.testing import Fault, Reply

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-retry")
    server = openai_server
    server.enqueue(Fault.status(429, retry_after=1.5), Reply("after the wait"))
    client = make_client(providers={"openai": {"base_url": server.base_url}})
    session = client.create_session(model="openai:gpt-4o")
    assert session.send_and_wait(prompt="hi", timeout=30).data.content == "after the wait"
    first, second = server.chat_requests
    assert second.time - first.time >= 1.5
    warning = [e for e in session.get_messages() if e.type == EventType.SESSION_WARNING][0]
    assert (
        warning.data.errorType == "RateLimitError" and "retrying in 1.5 s" in warning.data.message
    )
