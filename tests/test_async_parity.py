"""The async client does what the sync one does, inside a running event loop."""

from __future__ import annotations

import asyncio

import pytest
from helpers import types_of

from copilot import (
    AsyncCopilotClient,
    CopilotClient,
    InvalidArgumentError,
    SessionExistsError,
    SessionNotFoundError,
    TurnAbortedError,
)


def run(coro):
    return asyncio.run(coro)


def test_async_session_lifecycle(home):
    async def main():
        async with AsyncCopilotClient(base_directory=home, fallback_model="echo") as client:
            session = await client.create_session(session_id="a", model="gpt-4.1")
            reply = await session.send_and_wait(prompt="hello")
            assert reply.data.content == "echo: hello"
            await session.send_and_wait(prompt="again")
            assert [s["sessionId"] for s in await client.list_sessions()] == ["a"]
            assert (await client.get_session_metadata("a"))["messageCount"] == 4
            assert await client.get_last_session_id() == "a"
            with pytest.raises(SessionExistsError):
                await client.create_session(session_id="a")
            with pytest.raises(InvalidArgumentError):
                await session.send(prompt="")
            fork = await client.fork_session("a", "b")
            await fork.send_and_wait(prompt="third")
            await session.destroy()
            resumed = await client.resume_session("a")
            events = await resumed.get_messages()
            assert types_of(events).count("assistant.message") == 2
            await client.delete_session("a")
            with pytest.raises(SessionNotFoundError):
                await client.resume_session("a")
            models = await client.list_models()
            assert any(m["id"] == "echo" and m["usable"] for m in models)
            return fork.session_id

    assert run(main()) == "b"
    sync = CopilotClient(base_directory=home)
    assert [s["sessionId"] for s in sync.list_sessions()] == ["b"]  # both faces share the store
    sync.stop()


def test_async_sessions_run_concurrently(home):
    async def main():
        client = AsyncCopilotClient(base_directory=home, providers={"echo": {"latency": 0.4}})
        sessions = [await client.create_session(model="echo") for _ in range(4)]
        loop = asyncio.get_running_loop()
        started = loop.time()
        replies = await asyncio.gather(
            *(s.send_and_wait(prompt=f"{i}") for i, s in enumerate(sessions))
        )
        elapsed = loop.time() - started
        await client.stop()
        return [r.data.content for r in replies], elapsed

    contents, elapsed = run(main())
    assert contents == ["echo: 0", "echo: 1", "echo: 2", "echo: 3"]
    assert elapsed < 1.2


def test_cancelling_an_awaited_turn_aborts_it(home):
    async def main():
        client = AsyncCopilotClient(base_directory=home, providers={"echo": {"chunk_delay": 0.05}})
        session = await client.create_session(model="echo")
        task = asyncio.ensure_future(session.send_and_wait(prompt="w " * 40))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            events = await session.get_messages()
            if "abort" in types_of(events):
                break
            await asyncio.sleep(0.02)
        reply = await session.send_and_wait(prompt="next")
        await client.stop()
        return events, reply

    events, reply = run(main())
    abort = [e for e in events if e.type == "abort"][0]
    assert abort.data.partialContent.startswith("echo: w")
    assert reply.data.content == "echo: next"


def test_abort_raises_turn_aborted_for_the_waiter(home):
    async def main():
        client = AsyncCopilotClient(base_directory=home, providers={"echo": {"chunk_delay": 0.05}})
        session = await client.create_session(model="echo")
        waiter = asyncio.ensure_future(session.send_and_wait(prompt="w " * 40))
        await asyncio.sleep(0.3)
        await session.abort()
        with pytest.raises(TurnAbortedError):
            await waiter
        await client.stop()

    run(main())


def test_async_wait_for_a_sent_turn(home):
    async def main():
        client = AsyncCopilotClient(base_directory=home, providers={"echo": {"chunk_delay": 0.02}})
        session = await client.create_session(model="echo")
        first = await session.send(prompt="one")
        second = await session.send(prompt="two")
        replies = await asyncio.gather(session.wait(second, 10), session.wait(first, 10))
        with pytest.raises(InvalidArgumentError):
            await session.wait("never-sent", 1)
        await client.stop()
        return [r.data.content for r in replies]

    assert run(main()) == ["echo: two", "echo: one"]
