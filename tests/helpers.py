"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from copilot.providers.base import ModelRequest, StreamItem
from copilot.providers.echo import EchoProvider
from copilot.tools import define_tool


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, what: str = "", interval: float = 0.01
) -> object:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``
    seconds, naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


def types_of(events) -> list[str]:
    """The event types, in order."""
    return [e.type for e in events]


def stream_once(provider, model, messages, options=None, timeout=None):
    """Stream one request through ``provider``; return (items, error). Closes the provider."""

    async def go():
        items, error = [], None
        try:
            request = ModelRequest(model, messages, options or {}, timeout)
            async for item in provider.stream(request):
                items.append(item)
        except Exception as exc:  # the caller inspects it
            error = exc
        finally:
            await provider.aclose()
        return items, error

    return asyncio.run(go())


def stream_fails(items, error, error_type):
    """Assert the stream failed with exactly ``error_type`` and produced no Completion."""
    from copilot.providers.base import Completion

    assert type(error) is error_type, (error, items)
    assert not any(isinstance(item, Completion) for item in items)


class StreamCalls:
    """The ``run`` / ``ok`` / ``fail`` helpers of the provider tests, bound to their default
    model and messages: ``run, ok, fail = StreamCalls("gpt-4o", HELLO)``.

    Each call streams one request through a provider and closes it (:func:`stream_once`);
    keyword arguments ``model``, ``messages``, ``options`` and ``timeout`` override the defaults.
    """

    def __init__(self, model: str, messages: Any) -> None:
        self.model = model
        self.messages = messages

    def __iter__(self):
        return iter((self.run, self.ok, self.fail))

    def run(self, provider, model=None, messages=None, options=None, timeout=None):
        """Stream one request; return (items, error)."""
        model = self.model if model is None else model
        messages = self.messages if messages is None else messages
        return stream_once(provider, model, messages, options, timeout)

    def ok(self, provider, **kwargs):
        """Stream one request that must succeed; return its items."""
        items, error = self.run(provider, **kwargs)
        assert error is None, error
        return items

    def fail(self, provider, error_type, **kwargs):
        """Stream one request that must fail with exactly ``error_type``; return (error, items)."""
        items, error = self.run(provider, **kwargs)
        stream_fails(items, error, error_type)
        return error, items


class HeldEcho(EchoProvider):
    """An echo model whose replies wait until released, so tests can pin what happens while a
    turn is in the model without timing it.

    ``release()`` lets every held and later reply through; with ``until_in_flight=n`` they are
    released as soon as ``n`` replies are in the model at once (a rendezvous: it proves the turns
    overlap, where a wall-time bound would only suggest it). A reply held longer than
    ``timeout`` seconds goes on anyway, so a test that fails does not hang; ``max_in_flight``
    then tells the story.
    """

    def __init__(
        self,
        settings: dict[str, Any] | None = None,
        *,
        until_in_flight: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(settings)
        self.released = threading.Event()
        self.until_in_flight = until_in_flight
        self.timeout = timeout
        self.in_flight = 0
        self.max_in_flight = 0

    def release(self) -> None:
        """Let every held reply, and every later one, through."""
        self.released.set()

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        self.in_flight += 1  # the client's loop runs every stream: no lock needed
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.until_in_flight is not None and self.in_flight >= self.until_in_flight:
            self.release()
        try:
            deadline = time.monotonic() + self.timeout
            while not self.released.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            async for item in super().stream(request):
                yield item
        finally:
            self.in_flight -= 1


@define_tool(description="Today's weather in a city")
def get_weather(city: str) -> str:
    """A sync tool of the tool tests: the weather, always sunny."""
    return f"sunny in {city}"


@define_tool(description="The local time in a city")
async def get_time(city: str) -> str:
    """An async tool of the tool tests: the time, always noon."""
    return f"12:00 in {city}"


def tool_results_in(kind: str, body: dict) -> dict[str, str]:
    """Call id -> result text, as a request body of provider family ``kind`` (``"openai"`` or
    ``"anthropic"``) carried them."""
    if kind == "openai":
        return {m["tool_call_id"]: m["content"] for m in body["messages"] if m["role"] == "tool"}
    return {
        block["tool_use_id"]: block.get("content", "")
        for m in body["messages"]
        if isinstance(m["content"], list)
        for block in m["content"]
        if block["type"] == "tool_result"
    }


def tool_calls_in(kind: str, body: dict) -> list[str]:
    """The ids of the tool calls a request body of provider family ``kind`` replays, in order."""
    if kind == "openai":
        return [c["id"] for m in body["messages"] for c in m.get("tool_calls") or ()]
    return [
        block["id"]
        for m in body["messages"]
        if isinstance(m["content"], list)
        for block in m["content"]
        if block["type"] == "tool_use"
    ]


@contextlib.contextmanager
def copilot_extension(shell: Any, home: str, monkeypatch: Any) -> Iterator[Any]:
    """``shell`` with the copilot_jupyter extension loaded on the store ``home``, echo answering
    every model; afterwards the extension is unloaded, its ``%config`` dropped and the shared
    state's client stopped."""
    from copilot_jupyter.state import reset_state

    monkeypatch.setenv("COPILOT_JUPYTER_HOME", home)
    monkeypatch.setenv("COPILOT_JUPYTER_MODEL", "echo")
    monkeypatch.setenv("COPILOT_JUPYTER_FALLBACK_MODEL", "echo")
    reset_state(None)
    shell.run_cell("%load_ext copilot_jupyter")
    try:
        yield shell
    finally:
        shell.run_cell("%unload_ext copilot_jupyter")
        shell.config.pop("CopilotMagics", None)  # %config writes to the shell's shared config
        previous = reset_state(None)
        if previous is not None:
            previous.client.stop(timeout=5)
