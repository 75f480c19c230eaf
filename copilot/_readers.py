"""The thread a client's store reads run on, so no caller's thread or loop ever holds them.

Pure reads (list sessions, metadata, messages) need no event loop, but they must not run on
the caller's thread either: on an async caller they would block its loop, and on any thread
diskcache opens an SQLite connection that stays open until garbage collection. One reader
thread per client runs them; :meth:`ReaderThread.close` closes its connection, so ``stop()``
leaves no connection behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["ReaderThread"]

_Job = tuple[Callable[..., Any], tuple[Any, ...], concurrent.futures.Future[Any]]


class ReaderThread:
    """One daemon thread that runs a client's store reads, in order."""

    def __init__(self, close_connection: Callable[[], None], name: str = "copilot-reader") -> None:
        self._close_connection = close_connection
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # delivered to the caller, who raises it
                future.set_exception(exc)
        self._close_connection()  # this thread's SQLite connection

    def _submit(
        self, fn: Callable[..., T], args: tuple[Any, ...]
    ) -> concurrent.futures.Future[T] | None:
        # Under the lock, a job is either queued before close()'s end marker (so it is served)
        # or sees the thread closed: none is left waiting on a thread that has gone.
        with self._lock:
            if self._closed:
                return None
            future: concurrent.futures.Future[T] = concurrent.futures.Future()
            self._jobs.put((fn, args, future))
            return future

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the reader thread and block this thread for the result.

        Once closed (a session object read after ``stop()``), the read runs on this thread
        and closes the connection it opened.
        """
        if threading.current_thread() is self._thread:
            return fn(*args)
        future = self._submit(fn, args)
        if future is None:
            return self._detached(fn, *args)
        return future.result()

    async def acall(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the reader thread; the caller's loop goes on meanwhile."""
        future = self._submit(fn, args)
        if future is None:
            return await asyncio.to_thread(self._detached, fn, *args)
        return await asyncio.wrap_future(future)

    def _detached(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        finally:
            self._close_connection()

    def close(self, timeout: float = 30.0) -> None:
        """Finish the queued reads, close the thread's store connection, end the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._jobs.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
