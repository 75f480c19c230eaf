"""Closing the clients still running when the interpreter exits, quietly and losslessly.

A script that ends (normally, by ``sys.exit`` or by an uncaught exception) without
``client.stop()`` would otherwise lose its queued turns: the client's loop runs on a daemon
thread, which the interpreter freezes after the ``atexit`` hooks ran, and asyncio would print
``Task was destroyed but it is pending!`` for each idle session. Every started client registers
its shutdown here; one ``atexit`` hook runs them, doing what ``stop()`` does: queued turns get
:data:`EXIT_TIMEOUT` seconds to finish, what is left is recorded as ``user.message`` + ``abort``.

``atexit`` hooks run after non-daemon threads were joined and before daemon threads stop, so
the client's loop thread still serves the drain.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable

__all__ = ["EXIT_TIMEOUT", "register", "unregister"]

log = logging.getLogger("copilot")

#: seconds each session's queued turns get to finish at interpreter exit (then: aborted)
EXIT_TIMEOUT: float = 10.0

_lock = threading.Lock()
#: shutdown functions of the running clients, by a key of the client's choosing, with the pid
#: of the process that started them (a forked child has no copy of their loop threads)
_running: dict[int, tuple[int, Callable[[float], None]]] = {}


def register(key: int, shutdown: Callable[[float], None]) -> None:
    """Call ``shutdown(EXIT_TIMEOUT)`` at interpreter exit unless unregistered before."""
    with _lock:
        _running[key] = (os.getpid(), shutdown)


def unregister(key: int) -> None:
    """Forget the shutdown registered under ``key`` (the client was stopped)."""
    with _lock:
        _running.pop(key, None)


@atexit.register
def _shutdown_all() -> None:
    with _lock:
        pending = [shutdown for pid, shutdown in _running.values() if pid == os.getpid()]
        _running.clear()
    for shutdown in pending:
        try:
            shutdown(EXIT_TIMEOUT)
        except Exception:  # one client's failure must not stop the others' drain
            log.exception("closing a copilot client at interpreter exit failed")
