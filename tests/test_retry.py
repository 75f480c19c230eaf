"""Faults during a turn: bounded retries, then a stored session.error and a typed exception.
The prompt is stored once, a cut-off reply is never stored as an answer, the session goes on."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from helpers import types_of

from copilot import (
    AuthenticationError,
    CopilotClient,
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


def test_retries_are_bounded_then_the_error_is_stored_and_raised(home):
    client = CopilotClient(base_directory=home, max_retries=2)
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
    client.stop()


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
