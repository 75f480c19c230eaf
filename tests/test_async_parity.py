"""The async client does what the sync one does: the same scenarios, played on both faces.

Each scenario is written once, against a small adapter (:class:`Face`) that calls a method of
the face under test and awaits the result on the async face. The adapter also pins the shape
of each face: every call returns an awaitable on the async face and a plain value on the sync
one (the sync face runs inside the scenario's event loop, as in a notebook cell). What only
the async face has (``asyncio.gather``, cancelling an awaited task) is tested after them.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from helpers import HeldEcho, types_of

from copilot import (
    AsyncCopilotClient,
    CopilotClient,
    EventType,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    ModelNotAvailableError,
    SessionExistsError,
    SessionNotFoundError,
    TurnAbortedError,
)

Client = CopilotClient | AsyncCopilotClient


class Face:
    """One face of the client API, called the same way whichever it is."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_async = name == "async"

    def __repr__(self) -> str:
        return f"Face({self.name!r})"

    def client(self, home: str, **kwargs: Any) -> Client:
        """A client of this face on ``home``, echo as the fallback model unless given."""
        kwargs.setdefault("fallback_model", "echo")
        cls = AsyncCopilotClient if self.is_async else CopilotClient
        return cls(base_directory=home, **kwargs)

    async def __call__(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``method``; await its result on the async face (where it must be awaitable)."""
        result = method(*args, **kwargs)
        assert inspect.isawaitable(result) is self.is_async, (self, method)
        return await result if self.is_async else result

    async def collect(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> list:
        """Every item of ``iter_messages``-like ``method``: an async iterator on the async
        face, a plain iterator on the sync one."""
        iterator = method(*args, **kwargs)
        assert hasattr(iterator, "__aiter__") is self.is_async, (self, method)
        if self.is_async:
            return [item async for item in iterator]
        return list(iterator)


Scenario = Callable[[Face, Any], Awaitable[Any]]


def play(face: Face, home: str, scenario: Scenario, **client_kwargs: Any) -> Any:
    """Run ``scenario(face, client)`` in an event loop; the client is stopped whatever happens."""

    async def main() -> Any:
        client = face.client(home, **client_kwargs)
        try:
            return await scenario(face, client)
        finally:
            await face(client.stop, timeout=5)

    return asyncio.run(main())


@pytest.fixture(params=["sync", "async"])
def face(request: pytest.FixtureRequest) -> Face:
    return Face(request.param)


async def _exchange(do: Face, session: Any, prompt: str) -> str:
    return (await do(session.send_and_wait, prompt=prompt)).data.content


async def _streaming(session: Any, text: str = "w") -> None:
    """Return once ``session`` has streamed ``text`` (the deltas reaching a handler); 10 s at
    most. Deltas are delivered, not stored, so this listens rather than reads."""
    streamed: list[str] = []
    unsubscribe = session.on(
        lambda e: (
            streamed.append(e.data.deltaContent)
            if e.type == EventType.ASSISTANT_MESSAGE_DELTA
            else None
        )
    )
    try:
        for _ in range(1000):
            if text in "".join(streamed):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"the session never streamed {text!r}")
    finally:
        unsubscribe()


async def _until(do: Face, session: Any, predicate: Callable[[list], bool]) -> list:
    """Poll the session's events (through the face) until ``predicate`` holds; 10 s at most."""
    for _ in range(1000):
        events = await do(session.get_messages)
        if predicate(events):
            return events
        await asyncio.sleep(0.01)
    raise AssertionError("the session never reached the expected state")


# -- the scenarios, on both faces ---------------------------------------------------------


def test_create_send_and_list(face: Face, home: str) -> None:
    async def scenario(do: Face, client: Client) -> list[str]:
        session = await do(client.create_session, session_id="a", model="gpt-4.1")
        assert await _exchange(do, session, "hello") == "echo: hello"  # the fallback answers
        assert await _exchange(do, session, "again") == "echo: again"
        await do(client.create_session, session_id="b", model="echo")
        assert [s["sessionId"] for s in await do(client.list_sessions)] == ["b", "a"]
        assert [s["sessionId"] for s in await do(client.list_sessions, limit=1)] == ["b"]
        assert (await do(client.get_session_metadata, "a"))["messageCount"] == 4
        assert await do(client.get_session_metadata, "missing") is None
        assert await do(client.get_last_session_id) == "b"
        resumed = await do(client.resume_session, "a")
        assert resumed.session_id == "a" and resumed.model == "gpt-4.1"
        models = await do(client.list_models)
        assert any(m["id"] == "echo" and m["usable"] for m in models)
        return types_of(await do(session.get_messages))

    assert play(face, home, scenario) == [
        EventType.SESSION_START,
        EventType.USER_MESSAGE,
        EventType.SESSION_WARNING,  # gpt-4.1 has no key here: echo stands in, announced once
        EventType.ASSISTANT_TURN_START,
        EventType.ASSISTANT_MESSAGE,
        EventType.ASSISTANT_USAGE,
        EventType.ASSISTANT_TURN_END,
        EventType.USER_MESSAGE,
        EventType.ASSISTANT_TURN_START,
        EventType.ASSISTANT_MESSAGE,
        EventType.ASSISTANT_USAGE,
        EventType.ASSISTANT_TURN_END,
    ]


def test_both_faces_record_the_same_log(home: str, tmp_path) -> None:
    """The same scenario leaves the same events (types and data, ids and times aside)."""

    async def scenario(do: Face, client: Client) -> list[tuple[str, dict]]:
        session = await do(client.create_session, session_id="same", model="echo")
        first = await do(session.send, prompt="one")
        await do(session.wait, first, 10)
        await do(session.send_and_wait, prompt="two", replaces=first)
        await do(session.set_model, "echo")
        # what differs between any two runs: ids, the writer, timings
        volatile = {"messageId", "replaces", "writer", "pid", "duration", "timeToFirstToken"}
        return [
            (e.type, {k: v for k, v in e.data.items() if k not in volatile})
            for e in await do(session.get_messages)
        ]

    sync = play(Face("sync"), str(tmp_path / "sync"), scenario)
    async_ = play(Face("async"), str(tmp_path / "async"), scenario)
    assert sync == async_ and len(sync) > 10


def test_errors_are_the_same_types(face: Face, home: str) -> None:
    async def scenario(do: Face, client: Client) -> None:
        session = await do(client.create_session, session_id="a", model="echo")
        with pytest.raises(SessionExistsError):
            await do(client.create_session, session_id="a")
        with pytest.raises(InvalidArgumentError, match="prompt"):
            await do(session.send, prompt="")
        with pytest.raises(InvalidArgumentTypeError, match="a prompt is a string"):
            await do(session.send, prompt=3)
        for call in (client.resume_session, client.delete_session, client.get_messages):
            with pytest.raises(SessionNotFoundError, match="'missing'"):
                await do(call, "missing")
        with pytest.raises(SessionNotFoundError):
            await do(client.fork_session, "missing", "copy")
        with pytest.raises(SessionExistsError):
            await do(client.fork_session, "a", "a")
        with pytest.raises(InvalidArgumentError, match="no turn 'never-sent'"):
            await do(session.wait, "never-sent", 1)
        with pytest.raises(InvalidArgumentError, match="limit"):
            await do(client.list_sessions, limit=0)
        with pytest.raises(InvalidArgumentError, match="at least one word"):
            await do(client.search, "  ")
        # nothing above wrote a thing
        assert types_of(await do(session.get_messages)) == [EventType.SESSION_START]
        assert [s["sessionId"] for s in await do(client.list_sessions)] == ["a"]

    play(face, home, scenario)


def test_an_unavailable_model_is_refused_without_a_fallback(face: Face, home: str) -> None:
    async def scenario(do: Face, client: Client) -> None:
        with pytest.raises(ModelNotAvailableError, match="OPENAI_API_KEY"):
            await do(client.create_session, model="gpt-4.1")
        session = await do(client.create_session, session_id="e", model="echo")
        with pytest.raises(ModelNotAvailableError):
            await do(session.set_model, "claude-sonnet-4.5")
        assert session.model == "echo"
        assert [s["sessionId"] for s in await do(client.list_sessions)] == ["e"]

    play(face, home, scenario, fallback_model=None)


def test_fork_copies_the_history_under_another_model(face: Face, home: str) -> None:
    async def scenario(do: Face, client: Client) -> None:
        source = await do(client.create_session, session_id="a", model="echo")
        await _exchange(do, source, "first")
        fork = await do(client.fork_session, "a", "b", model="echo-b")
        assert fork.session_id == "b" and fork.model == "echo-b"
        copied = await do(fork.get_messages)
        assert copied[0].type == EventType.SESSION_START
        assert (copied[0].data.model, copied[0].data.forkedFrom) == ("echo-b", "a")
        assert types_of(copied[1:]) == types_of((await do(source.get_messages))[1:])
        assert await _exchange(do, fork, "second") == "echo: second"
        sent = [m.content for m in client.get_provider("echo").requests[-1].messages]
        assert sent == ["first", "echo: first", "second"]
        assert EventType.SESSION_RESUME not in types_of(await do(fork.get_messages))
        source_types = types_of(await do(source.get_messages))
        assert source_types.count(EventType.USER_MESSAGE) == 1  # the source is unchanged

    play(face, home, scenario, routes={"echo-b": "echo"})


def test_delete_removes_the_session(face: Face, home: str) -> None:
    async def scenario(do: Face, client: Client) -> None:
        session = await do(client.create_session, session_id="doomed", model="echo")
        await _exchange(do, session, "x")
        await do(client.create_session, session_id="kept", model="echo")
        await do(client.delete_session, "doomed")
        assert [s["sessionId"] for s in await do(client.list_sessions)] == ["kept"]
        assert await do(client.get_session_metadata, "doomed") is None
        with pytest.raises(SessionNotFoundError):
            await do(client.resume_session, "doomed")

    play(face, home, scenario)


def test_abort_of_the_running_turn_and_of_a_queued_one(face: Face, home: str) -> None:
    async def scenario(do: Face, client: Client) -> None:
        session = await do(client.create_session, model="echo")
        running = await do(session.send, prompt="w " * 40)  # 2 s at 50 ms a word
        queued = await do(session.send, prompt="queued")
        await _streaming(session)
        assert await do(session.abort, queued) is True  # only that one, still queued
        assert await do(session.abort) is True  # the running turn
        for message_id in (running, queued):
            with pytest.raises(TurnAbortedError):
                await do(session.wait, message_id, 10)
        assert await do(session.abort) is False  # nothing left to abort
        events = await do(session.get_messages)
        aborts = {e.data.messageId: e for e in events if e.type == EventType.ABORT}
        assert set(aborts) == {running, queued}
        assert aborts[running].data.partialContent.startswith("echo: w")
        assert EventType.ASSISTANT_MESSAGE not in types_of(events)
        assert await _exchange(do, session, "next") == "echo: next"

    play(face, home, scenario, providers={"echo": {"chunk_delay": 0.05}})


def test_set_model_keeps_the_context(face: Face, home: str) -> None:
    async def scenario(do: Face, client: Client) -> None:
        session = await do(client.create_session, session_id="m", model="echo")
        await _exchange(do, session, "remember me")
        await do(session.set_model, "echo-b")
        assert session.model == "echo-b"
        await _exchange(do, session, "next")
        sent = [m.content for m in client.get_provider("echo").requests[-1].messages]
        assert sent == ["remember me", "echo: remember me", "next"]
        events = await do(session.get_messages)
        change = [e for e in events if e.type == EventType.SESSION_MODEL_CHANGE]
        assert [c.data for c in change] == [{"previousModel": "echo", "newModel": "echo-b"}]
        assert (await do(client.get_session_metadata, "m"))["model"] == "echo-b"

    play(face, home, scenario, routes={"echo-b": "echo"})


def test_paging_and_iterating_the_messages(face: Face, home: str) -> None:
    async def scenario(do: Face, client: Client) -> None:
        session = await do(client.create_session, session_id="p", model="echo")
        for i in range(3):
            await _exchange(do, session, f"turn {i}")
        events = await do(session.get_messages)
        ids = [e.id for e in events]
        seqs = [e.seq for e in events]
        assert len(events) == 16 and seqs == sorted(seqs)
        for reader in (session.get_messages, lambda **kw: client.get_messages("p", **kw)):
            page = await do(reader, after=seqs[4], limit=3)
            assert [e.id for e in page] == ids[5:8]
            assert [e.id for e in await do(reader, after=seqs[-1])] == []
            assert [e.id for e in await do(reader, limit=2)] == ids[:2]
            assert [e.id for e in await do(reader, last=3)] == ids[-3:]
            assert [e.id for e in await do(reader, last=100)] == ids
            with pytest.raises(InvalidArgumentError, match="cannot be combined"):
                await do(reader, after=1, last=1)
            with pytest.raises(InvalidArgumentError, match="limit"):
                await do(reader, limit=0)
        assert [e.id for e in await do.collect(session.iter_messages)] == ids
        assert [e.id for e in await do.collect(session.iter_messages, after=seqs[9])] == ids[10:]
        assert [e.id for e in await do.collect(client.iter_messages, "p")] == ids
        # reading writes nothing: no session.resume from the client's reads
        assert [e.id for e in await do(session.get_messages)] == ids

    play(face, home, scenario)


def test_search_and_check(face: Face, home: str) -> None:
    async def scenario(do: Face, client: Client) -> None:
        pivots = await do(client.create_session, session_id="pivots", model="echo")
        await _exchange(do, pivots, "how do I call df.pivot_table with margins")
        other = await do(client.create_session, session_id="other", model="echo")
        await _exchange(do, other, "plot a histogram")
        hits = await do(client.search, "pivot_table")
        assert {h["sessionId"] for h in hits} == {"pivots"}
        assert {h["type"] for h in hits} == {EventType.USER_MESSAGE, EventType.ASSISTANT_MESSAGE}
        assert "«" in hits[0]["snippet"]
        assert await do(client.search, "histogram", session_id="pivots") == []
        assert len(await do(client.search, "histogram OR pivot_table", limit=1)) == 1
        assert await do(client.check) == []
        assert await do(client.repair) == []

    play(face, home, scenario)


def test_wait_for_sent_turns_in_any_order(face: Face, home: str) -> None:
    async def scenario(do: Face, client: Client) -> list[str]:
        session = await do(client.create_session, model="echo")
        first = await do(session.send, prompt="one")
        second = await do(session.send, prompt="two")
        replies = [await do(session.wait, second, 10), await do(session.wait, first, 10)]
        return [r.data.content for r in replies]

    assert play(face, home, scenario, providers={"echo": {"chunk_delay": 0.02}}) == [
        "echo: two",
        "echo: one",
    ]


@pytest.mark.parametrize("writer, reader", [("sync", "async"), ("async", "sync")])
def test_both_faces_share_the_store(home: str, writer: str, reader: str) -> None:
    async def write(do: Face, client: Client) -> None:
        session = await do(client.create_session, session_id="shared", model="echo")
        await _exchange(do, session, "hello")

    async def read(do: Face, client: Client) -> list[str]:
        session = await do(client.resume_session, "shared")
        return [e.data.content for e in await do(session.get_messages) if "content" in e.data]

    play(Face(writer), home, write)
    assert play(Face(reader), home, read) == ["hello", "echo: hello"]


def test_the_adapter_notices_a_face_that_blocks(home: str) -> None:
    """The check the scenarios rely on: a sync method called as the async face fails."""

    async def scenario(do: Face, client: Client) -> None:
        sync = CopilotClient(base_directory=home, fallback_model="echo")
        try:
            with pytest.raises(AssertionError):
                await do(sync.list_sessions)
        finally:
            sync.stop(timeout=5)

    play(Face("async"), home, scenario)


# -- what only the async face has -------------------------------------------------------------


def test_async_sessions_run_concurrently(home: str) -> None:
    # A rendezvous, not a stopwatch: the replies are held until all four turns are in the
    # model at once, which cannot happen if sessions ran one after another.
    held = HeldEcho(until_in_flight=4)

    async def main() -> list[str]:
        async with AsyncCopilotClient(base_directory=home) as client:
            client.register_provider("held", held)
            sessions = [await client.create_session(model="held:echo") for _ in range(4)]
            replies = await asyncio.gather(
                *(s.send_and_wait(prompt=f"{i}") for i, s in enumerate(sessions))
            )
        return [r.data.content for r in replies]

    assert asyncio.run(main()) == ["echo: 0", "echo: 1", "echo: 2", "echo: 3"]
    assert held.max_in_flight == 4


def test_cancelling_an_awaited_turn_aborts_it(home: str) -> None:
    async def main() -> tuple[list, str]:
        client = AsyncCopilotClient(base_directory=home, providers={"echo": {"chunk_delay": 0.05}})
        session = await client.create_session(model="echo")
        task = asyncio.ensure_future(session.send_and_wait(prompt="w " * 40))
        await _streaming(session)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        events = await _until(Face("async"), session, lambda ev: "abort" in types_of(ev))
        reply = await session.send_and_wait(prompt="next")
        await client.stop()
        return events, reply.data.content

    events, reply = asyncio.run(main())
    abort = [e for e in events if e.type == EventType.ABORT][0]
    assert abort.data.partialContent.startswith("echo: w")
    assert reply == "echo: next"
