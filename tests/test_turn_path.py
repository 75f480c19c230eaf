"""The turn's path made cheaper for issue 12 (bench row 2a): one hop to the loop for
``send_and_wait``, one deadline timer per model call, events built only for listeners, and
what each of these must keep (timeouts, aborts, typed errors, exactly one outcome)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import types_of, wait_until

from copilot import AsyncCopilotClient, CopilotClient
from copilot.errors import (
    ProviderTimeoutError,
    TurnTimeoutError,
    VisionNotSupportedError,
)
from copilot.events import EventType
from copilot.providers._sdk import _Deadline
from copilot.providers.base import ChatMessage, ModelRequest, TextDelta
from copilot.providers.openai import OpenAIProvider
from copilot.testing import Reply

HELLO = (ChatMessage("user", "hello world"),)
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


class CountingLoop(asyncio.SelectorEventLoop):
    """A real event loop that counts the timers scheduled on it."""

    def __init__(self) -> None:
        super().__init__()
        self.timers = 0

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> Any:
        self.timers += 1
        return super().call_at(when, callback, *args, context=context)


# -- one deadline timer per model call --------------------------------------------------------


@pytest.mark.timeout(60)
def test_the_whole_call_deadline_costs_one_timer_not_one_per_chunk(openai_server):
    # Timers scheduled while streaming 40 chunks, with and without a deadline, on one real
    # loop: the deadline adds one timer, the HTTP stack a varying few of its own (its read
    # timeout differs with a deadline); a timer per chunk would add 40 or more.
    provider = OpenAIProvider({"base_url": openai_server.base_url})
    loop = CountingLoop()

    async def stream(timeout: float | None) -> list[Any]:
        request = ModelRequest("gpt-4o", HELLO, timeout=timeout)
        return [item async for item in provider.stream(request)]

    try:
        counts = []
        for timeout in (None, 60.0, None, 60.0):
            openai_server.enqueue(Reply(chunks=["w "] * 40))
            before = loop.timers
            items = loop.run_until_complete(stream(timeout))
            assert sum(isinstance(i, TextDelta) for i in items) == 40
            counts.append(loop.timers - before)
        loop.run_until_complete(provider.aclose())
    finally:
        loop.close()
    without, with_deadline = counts[2], counts[3]  # the second pair: the client is warm
    assert with_deadline - without < 10, counts


@pytest.mark.timeout(30)
def test_the_deadline_never_cancels_the_consumer_between_chunks(openai_server):
    # The consumer sleeps past the deadline between two items: its own sleep is not cut
    # (the timer cancels only the stream's own waits); the next item raises the timeout.
    provider = OpenAIProvider({"base_url": openai_server.base_url})
    openai_server.enqueue(Reply(chunks=["a ", "b ", "c "], chunk_delay=0.05))

    async def consume() -> tuple[bool, BaseException | None]:
        stream = provider.stream(ModelRequest("gpt-4o", HELLO, timeout=0.3))
        await stream.__anext__()
        slept = False
        try:
            await asyncio.sleep(0.5)
            slept = True
            await stream.__anext__()
        except BaseException as exc:  # the test reports what came out
            await stream.aclose()
            await provider.aclose()
            return slept, exc
        await stream.aclose()
        await provider.aclose()
        return slept, None

    slept, error = asyncio.run(consume())
    assert slept
    assert isinstance(error, ProviderTimeoutError)
    assert "no complete reply" in str(error) and "within 0.3 s" in str(error)


@pytest.mark.timeout(30)
def test_an_abort_during_a_stream_with_a_deadline_stays_a_cancel(openai_server):
    provider = OpenAIProvider({"base_url": openai_server.base_url})
    openai_server.enqueue(Reply(chunks=["w "] * 50, chunk_delay=0.05))

    async def abort() -> tuple[int, int]:
        got: list[Any] = []

        async def consume() -> None:
            async for item in provider.stream(ModelRequest("gpt-4o", HELLO, timeout=30)):
                got.append(item)

        task = asyncio.ensure_future(consume())
        while not got:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await provider.aclose()
        return len(got), task.cancelling()

    items, _ = asyncio.run(abort())
    assert 0 < items < 50


def test_deadline_rules_on_a_bare_loop():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        never = _Deadline(None)
        assert await never.run(lambda: asyncio.sleep(0, "done")) == "done"

        deadline = _Deadline(loop.time() + 0.05)
        assert await deadline.run(lambda: asyncio.sleep(0, 1)) == 1
        with pytest.raises(TimeoutError):
            await deadline.run(lambda: asyncio.sleep(1))
        with pytest.raises(TimeoutError):  # once passed, at once
            await deadline.run(lambda: asyncio.sleep(0))
        assert asyncio.current_task().cancelling() == 0  # its own cancel was taken back
        deadline.close()

        fired = _Deadline(loop.time() + 0.02)
        await asyncio.sleep(0.05)  # fires between waits: this sleep is not cancelled
        with pytest.raises(TimeoutError):
            await fired.run(lambda: asyncio.sleep(0))
        fired.close()

        quiet = _Deadline(loop.time() + 10)
        handle = quiet._handle
        quiet.close()
        assert handle is not None and handle.cancelled()
        quiet.close()  # idempotent

    asyncio.run(main())


# -- send_and_wait: one hop to the loop ---------------------------------------------------------


def _count_posts(client: Any) -> list[int]:
    """Count what other threads hand to the client's loop (a spy on the real loop's method)."""
    loop = client._started().runner.loop
    calls = [0]
    original = loop.call_soon_threadsafe

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    loop.call_soon_threadsafe = counted
    return calls


def test_send_and_wait_hands_the_loop_one_call(client: CopilotClient):
    session = client.create_session(model="echo")
    session.send_and_wait("warm up")
    calls = _count_posts(client)
    reply = session.send_and_wait("hello")
    assert reply.data.content == "echo: hello"
    assert calls[0] == 1  # queue-and-watch; a submit and then a wait took two
    session.send("again")  # send() still waits for the id: one round trip
    assert calls[0] == 2
    events = session.get_messages()
    prompts = [e for e in events if e.type == EventType.USER_MESSAGE]
    assert prompts[1].id == reply.data.messageId  # the id chosen on the caller's side


def test_send_and_wait_raises_what_queuing_raises_and_stores_nothing(
    make_client, openai_server, monkeypatch
):
    # the queuing step's error (images for a model that cannot see) comes back through the
    # one hop, typed; nothing is queued or stored, and the session goes on
    monkeypatch.setenv("OPENAI_COMPATIBLE_BASE_URL", openai_server.base_url)
    client = make_client()
    session = client.create_session(model="openai-compatible:tiny")
    image = {"type": "blob", "data": PNG, "mimeType": "image/png", "displayName": "dot.png"}
    with pytest.raises(VisionNotSupportedError, match=r"dot\.png"):
        session.send_and_wait("what is this?", attachments=[image], timeout=10)
    assert types_of(session.get_messages()) == [EventType.SESSION_START]
    assert openai_server.chat_requests == []
    openai_server.enqueue(Reply(chunks=["ok"]))
    assert session.send_and_wait("still usable", timeout=30).data.content == "ok"


def test_async_send_and_wait_times_out_and_the_turn_goes_on(home: str):
    async def main() -> tuple[BaseException, list[str], str]:
        client = AsyncCopilotClient(base_directory=home, providers={"echo": {"chunk_delay": 0.05}})
        session = await client.create_session(model="echo")
        try:
            await session.send_and_wait("a b c d e f g h", timeout=0.1)
        except TurnTimeoutError as exc:
            error: BaseException = exc
        for _ in range(200):
            events = await session.get_messages()
            if "assistant.message" in types_of(events):
                break
            await asyncio.sleep(0.05)
        after = await session.send_and_wait("next", timeout=30)
        await client.stop()
        return error, types_of(events), after.data.content

    error, kinds, after = asyncio.run(main())
    assert isinstance(error, TurnTimeoutError) and isinstance(error, TimeoutError)
    assert error.message_id is not None
    assert kinds.count("assistant.message") == 1 and "abort" not in kinds
    assert after == "echo: next"


def test_a_sync_send_and_wait_from_a_handler_is_refused(client: CopilotClient):
    from copilot.errors import ClientStateError

    session = client.create_session(model="echo")
    seen: list[BaseException] = []

    def handler(event: Any) -> None:
        if event.type == EventType.ASSISTANT_MESSAGE and not seen:
            try:
                session.send_and_wait("from inside")
            except ClientStateError as exc:
                seen.append(exc)

    session.on(handler)
    session.send_and_wait("hello")
    wait_until(lambda: bool(seen))
    assert "event handler" in str(seen[0])
    kinds = types_of(session.get_messages())
    assert kinds.count("user.message") == 1  # nothing was queued from the handler


# -- the reader's per-chunk work ------------------------------------------------------------


def test_reasoning_text_is_found_in_sdk_deltas_and_plain_objects():
    from types import SimpleNamespace

    from openai.types.chat.chat_completion_chunk import ChoiceDelta

    from copilot.providers.openai import _reasoning_text

    def sdk(**fields: Any) -> Any:  # as the SDK builds them from the wire (extras kept)
        return ChoiceDelta.model_validate(fields)

    assert _reasoning_text(sdk(content="hi")) is None
    assert _reasoning_text(sdk(reasoning_content="thinking")) == "thinking"
    assert _reasoning_text(sdk(reasoning="aloud")) == "aloud"  # OpenRouter / Ollama's name
    assert _reasoning_text(sdk(reasoning_content="", reasoning="second")) == "second"
    assert _reasoning_text(sdk(reasoning_content=7)) is None  # not text: ignored
    assert _reasoning_text(SimpleNamespace(reasoning_content="plain")) == "plain"
    assert _reasoning_text(SimpleNamespace(content="x")) is None
    assert _reasoning_text(None) is None


def test_stopping_the_client_ends_a_blocked_send_and_wait(make_client):
    # The sync face waits on a future the loop settles: stopping the client (the turn
    # aborted after the stop's grace period, a queued one never started) must settle both
    # waits, never leave a caller blocked.
    import threading

    from copilot.errors import TurnAbortedError

    client = make_client(providers={"echo": {"chunk_delay": 0.05}})
    session = client.create_session(model="echo")
    outcomes: list[BaseException | str] = []

    def wait_for_reply(prompt: str) -> None:
        try:
            outcomes.append(session.send_and_wait(prompt).data.content)
        except BaseException as exc:  # the test reports what came out
            outcomes.append(exc)

    threads = [
        threading.Thread(target=wait_for_reply, args=("w " * 200,)),
        threading.Thread(target=wait_for_reply, args=("queued behind it",)),
    ]
    threads[0].start()
    wait_until(lambda: "user.message" in types_of(session.get_messages()))
    threads[1].start()
    wait_until(lambda: session._core._queue.qsize() == 1)  # queued behind the running turn
    client.stop(timeout=0.2)
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    assert len(outcomes) == 2
    assert all(isinstance(o, TurnAbortedError) for o in outcomes), outcomes
    kinds = types_of(client.get_messages(session.session_id))  # each prompt: one outcome
    assert kinds.count("user.message") == 2 and kinds.count("abort") == 2, kinds
    assert "assistant.message" not in kinds
