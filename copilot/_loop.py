"""The private event loop behind both faces of the client.

One asyncio loop runs on a daemon thread for the client's life. The sync face submits
coroutines and waits on the returned future; the async face awaits the same future wrapped for
the caller's loop. Nothing here calls ``asyncio.run``, so both faces work inside a notebook
cell, whose thread already runs ipykernel's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .errors import ClientStateError

T = TypeVar("T")

__all__ = ["LoopThread"]


class LoopThread:
    """An asyncio event loop on its own daemon thread."""

    def __init__(self, name: str = "copilot-core") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def running(self) -> bool:
        """True until :meth:`stop` has run."""
        return self._thread.is_alive() and not self.loop.is_closed()

    def in_loop_thread(self) -> bool:
        """True when called from the loop's own thread (an event handler, say)."""
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; return a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def check_blocking_allowed(self) -> None:
        """Raise :class:`ClientStateError` on the loop's own thread, where a blocking call
        would wait for itself."""
        if self.in_loop_thread():
            raise ClientStateError(
                "a blocking client call was made from the client's own event thread (inside "
                "an event handler); use session.send(), which does not wait, or the async client"
            )

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Have the loop call ``fn(*args)`` soon, without waiting (calls run in the order
        posted). ``fn`` reports its outcome itself, e.g. through a future it is given."""
        if self.in_loop_thread():
            self.loop.call_soon(fn, *args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block this thread until it finishes."""
        try:
            self.check_blocking_allowed()
        except ClientStateError:
            coro.close()
            raise
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and await it from another running loop."""
        if self.in_loop_thread():
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a plain function on the loop thread and return its result."""
        if self.in_loop_thread():
            return fn(*args)

        async def call() -> T:
            return fn(*args)

        return self.run(call())

    async def acall(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a plain function on the loop thread; await it from another running loop."""
        if self.in_loop_thread():
            return fn(*args)

        async def call() -> T:
            return fn(*args)

        return await self.arun(call())

    def stop(self) -> None:
        """Stop the loop and join its thread; pending tasks are cancelled."""
        if self.loop.is_closed():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
        self.loop.close()
