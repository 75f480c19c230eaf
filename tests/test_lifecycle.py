"""The client's life: the async face never blocks its caller's loop, stop() leaves no store
connection open, and a program that exits without stop() loses no queued turn, quietly."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from copilot import AsyncCopilotClient, CopilotClient
from copilot.events import EventType
from copilot.providers.base import Availability
from copilot.providers.echo import EchoProvider

T = TypeVar("T")

#: how long the planted slow part blocks; a call that blocked the caller's loop would leave
#: a gap between ticks at least this long, a non-blocking one gaps of about the tick (10 ms)
SLOW = 0.6


async def _ticking(awaitable: Awaitable[T]) -> tuple[T, float, float]:
    """Await ``awaitable`` while a ticker runs on this loop; return the result, the longest
    gap between ticks and how long the call took."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.02)
    started = time.perf_counter()
    result = await awaitable
    took = time.perf_counter() - started
    done.set()
    await ticker
    return result, max(gaps), took


def _slow(fn: Any) -> Any:
    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(SLOW)
        return fn(*args, **kwargs)

    return slow


class _SlowCheckProvider(EchoProvider):
    """An echo model whose availability check takes SLOW seconds (a network probe, say)."""

    def availability(self) -> Availability:
        time.sleep(SLOW)
        return Availability(True)


def _assert_responsive(gap: float, took: float) -> None:
    assert took >= SLOW  # the slow part did run
    # Generous bound (half the planted delay): a blocked loop shows a gap >= SLOW.
    assert gap < SLOW / 2, f"the caller's loop stalled for {gap:.3f} s"


@pytest.mark.parametrize(
    "read", ["get_session_metadata", "list_sessions", "get_last_session_id", "get_messages"]
)
def test_async_client_reads_never_block_the_callers_loop(home, read):
    async def scenario() -> None:
        client = AsyncCopilotClient(base_directory=home)
        await client.create_session(session_id="s", model="echo")
        store = client._core.store
        for name in ("get_session", "list_sessions", "read_events"):
            setattr(store, name, _slow(getattr(store, name)))
        args = () if read in ("list_sessions", "get_last_session_id") else ("s",)
        result, gap, took = await _ticking(getattr(client, read)(*args))
        assert result  # metadata, a list, an id, events: something was read
        _assert_responsive(gap, took)
        await client.stop()

    asyncio.run(scenario())


def test_async_session_get_messages_never_blocks_the_callers_loop(home):
    async def scenario() -> None:
        client = AsyncCopilotClient(base_directory=home)
        session = await client.create_session(session_id="s", model="echo")
        await session.send_and_wait(prompt="hello")
        store = client._core.store
        store.read_events = _slow(store.read_events)
        events, gap, took = await _ticking(session.get_messages())
        assert [e.type for e in events].count(EventType.ASSISTANT_MESSAGE) == 1
        _assert_responsive(gap, took)
        await client.stop()

    asyncio.run(scenario())


def test_async_list_models_never_blocks_the_callers_loop(home):
    async def scenario() -> None:
        client = AsyncCopilotClient(base_directory=home)
        await client.start()
        # Warm up first: the first call imports the providers' SDKs (llama_cpp...), which
        # holds the GIL for a moment whatever thread imports it.
        await client.list_models()
        client.register_provider("slowcheck", _SlowCheckProvider())
        models, gap, took = await _ticking(client.list_models())
        assert any(m["provider"] == "slowcheck" and m["usable"] for m in models)
        _assert_responsive(gap, took)
        await client.stop()

    asyncio.run(scenario())


def test_list_models_does_not_stall_a_streaming_turn(home):
    # The availability check runs on a worker thread, not on the client's loop: a turn's
    # deltas keep coming while list_models() waits on a slow check.
    client = CopilotClient(base_directory=home, providers={"echo": {"chunk_delay": 0.01}})
    client.list_models()  # warm up: the first call imports the providers' SDKs
    client.register_provider("slowcheck", _SlowCheckProvider())
    session = client.create_session(model="echo")
    stamps: list[float] = []
    session.on(
        lambda e: (
            stamps.append(time.perf_counter())
            if e.type == EventType.ASSISTANT_MESSAGE_DELTA
            else None
        )
    )
    message_id = session.send(prompt="w " * 150)
    while not stamps:
        time.sleep(0.005)
    client.list_models()
    session.wait(message_id, timeout=30)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert max(gaps) < SLOW / 2, f"the stream stalled for {max(gaps):.3f} s"
    client.stop()


def _open_store_files(home: str) -> list[str]:
    """Files under ``home`` this process holds open (SQLite database, WAL, shared memory)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(Path(home).resolve())):
            found.append(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("face", ["sync", "async"])
def test_stop_closes_every_store_connection(home, face):
    if face == "sync":
        client = CopilotClient(base_directory=home)
        session = client.create_session(session_id="s", model="echo")
        session.send_and_wait(prompt="hello")
        session.get_messages()
        client.get_messages("s")
        client.list_sessions()
        client.get_session_metadata("s")
        assert _open_store_files(home)  # the check sees connections while they are open
        client.stop()
    else:

        async def scenario() -> None:
            client = AsyncCopilotClient(base_directory=home)
            session = await client.create_session(session_id="s", model="echo")
            await session.send_and_wait(prompt="hello")
            await session.get_messages()
            await client.get_messages("s")
            await client.list_sessions()
            assert _open_store_files(home)
            await client.stop()

        asyncio.run(scenario())
    assert _open_store_files(home) == []
    # a session object read after stop() opens a connection for the read and closes it
    assert len(session.get_messages()) > 3 if face == "sync" else True
    assert _open_store_files(home) == []


# -- exit without stop() --------------------------------------------------------------------

_SCRIPT = """
import sys
import copilot._exit
from copilot import CopilotClient

copilot._exit.EXIT_TIMEOUT = {exit_timeout}
client = CopilotClient(base_directory=sys.argv[1], providers={{"echo": {{"chunk_delay": {chunk_delay}}}}})
session = client.create_session(session_id="s", model="echo")
ids = [session.send(prompt=f"prompt {{i}} w w w w w") for i in range({sends})]
print(",".join(ids), flush=True)
{ending}
"""

_ENDINGS = {
    "sys.exit": "sys.exit(0)",
    "uncaught exception": "raise RuntimeError('boom at the end of the script')",
    "end of script": "",
}


def _run_script(
    home: str, ending: str, sends: int = 5, exit_timeout: float = 10.0, chunk_delay: float = 0.05
):
    script = _SCRIPT.format(
        exit_timeout=exit_timeout, sends=sends, ending=ending, chunk_delay=chunk_delay
    )
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), home],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _outcomes(home: str) -> dict[str, list[str]]:
    """For every prompt in session ``s``: the outcome events it got, read by a fresh client."""
    reader = CopilotClient(base_directory=home)
    events = reader.get_messages("s")
    reader.stop()
    outcomes: dict[str, list[str]] = {e.id: [] for e in events if e.type == EventType.USER_MESSAGE}
    for event in events:
        if event.type in (EventType.ASSISTANT_MESSAGE, EventType.ABORT, EventType.SESSION_ERROR):
            outcomes[event.data["messageId"]].append(event.type)
    return outcomes


@pytest.mark.parametrize("ending", list(_ENDINGS))
def test_exit_without_stop_finishes_every_queued_turn_quietly(home, ending):
    done = _run_script(home, _ENDINGS[ending])
    ids = done.stdout.strip().split(",")
    assert len(ids) == 5
    assert "Task was destroyed" not in done.stderr and "Exception ignored" not in done.stderr
    if ending == "uncaught exception":
        assert done.returncode == 1 and "RuntimeError: boom at the end" in done.stderr
    else:
        assert done.returncode == 0 and done.stderr == ""
    outcomes = _outcomes(home)
    assert list(outcomes) == ids  # every prompt is in the log, in order
    assert all(got == [EventType.ASSISTANT_MESSAGE] for got in outcomes.values()), outcomes


@pytest.mark.parametrize("ending", list(_ENDINGS))
def test_exit_drain_is_bounded_and_leftovers_are_recorded_as_aborted(home, ending):
    # A turn takes >= 7 x 0.2 s; a drain of 0.5 s leaves at least three of the five queued
    # prompts unfinished even if the script's own exit is slow on a loaded machine.
    started = time.perf_counter()
    done = _run_script(home, _ENDINGS[ending], sends=5, exit_timeout=0.5, chunk_delay=0.2)
    assert time.perf_counter() - started < 60  # bounded: not 5 turns of waiting per turn
    ids = done.stdout.strip().split(",")
    assert "Task was destroyed" not in done.stderr and "Exception ignored" not in done.stderr
    outcomes = _outcomes(home)
    assert list(outcomes) == ids
    assert all(len(got) == 1 for got in outcomes.values()), outcomes  # exactly one each
    kinds = [got[0] for got in outcomes.values()]
    assert kinds[-1] == EventType.ABORT  # the drain was cut short...
    assert kinds.count(EventType.ABORT) >= 3  # ...and what was queued is recorded, not lost


def test_exit_with_an_idle_session_is_silent(home):
    script = textwrap.dedent(
        """
        import sys
        from copilot import AsyncCopilotClient, CopilotClient
        import asyncio
        client = CopilotClient(base_directory=sys.argv[1])
        client.create_session(session_id="idle", model="echo")

        async def main():
            other = AsyncCopilotClient(base_directory=sys.argv[1])
            await other.create_session(session_id="idle-async", model="echo")

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, home], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_exits_without_touching_its_parents_clients(home):
    # The child inherits the registry but not the client's loop thread: its exit must not
    # wait on a loop that does not run there (it would hang), nor write to the parent's log.
    script = textwrap.dedent(
        """
        import os, sys
        from copilot import CopilotClient
        client = CopilotClient(base_directory=sys.argv[1])
        client.create_session(session_id="s", model="echo").send_and_wait(prompt="parent")
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # runs the child's atexit hooks
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        client.stop()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, home], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "0", done.stderr
    assert "Exception ignored" not in done.stderr


def test_reads_racing_stop_are_all_answered(home):
    # Reads from another thread while stop() closes the reader thread: each read is served
    # by the reader thread or, once it is closed, on the caller's thread; none waits forever.
    client = CopilotClient(base_directory=home)
    session = client.create_session(session_id="s", model="echo")
    session.send_and_wait(prompt="hello")
    counts: list[int] = []
    errors: list[BaseException] = []
    stop_reading = threading.Event()

    def read() -> None:
        try:
            while not stop_reading.is_set():
                counts.append(len(session.get_messages()))
        except BaseException as exc:  # reported below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    time.sleep(0.05)
    client.stop()
    time.sleep(0.05)
    stop_reading.set()
    for thread in readers:
        thread.join(10)
    assert not any(t.is_alive() for t in readers) and errors == []
    assert counts and set(counts) == {len(session.get_messages())}
