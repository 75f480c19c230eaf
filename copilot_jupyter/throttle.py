"""Coalescing calls in time: at most one call per interval, and never losing the last one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Throttle"]


class Throttle:
    """Call ``fn`` at most once every ``interval`` seconds.

    A call inside the window is deferred to its end (on a timer thread) and merged with any
    other call made meanwhile, so the last update is never lost and a burst costs one call.
    :meth:`close` cancels a deferred call; calls after it do nothing.
    """

    def __init__(self, interval: float, fn: Callable[[], None]) -> None:
        self.interval = interval
        self._fn = fn
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._last = 0.0
        self._closed = False

    def __call__(self) -> None:
        """Call ``fn`` now, or at the end of the current window."""
        with self._lock:
            if self._closed or self._timer is not None:
                return
            delay = self._last + self.interval - time.monotonic()
            if delay > 0:
                self._timer = threading.Timer(delay, self._fire)
                self._timer.daemon = True
                self._timer.start()
                return
            self._last = time.monotonic()
        self._fn()

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
            if self._closed:
                return
            self._last = time.monotonic()
        self._fn()

    def close(self) -> None:
        """Cancel a deferred call; later calls do nothing."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
