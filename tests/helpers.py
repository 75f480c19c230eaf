"""Small helpers shared by the tests."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01
) -> object:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def types_of(events) -> list[str]:
    """The event types, in order."""
    return [e.type for e in events]


def stream_once(provider, model, messages, options=None, timeout=None):
    """Stream one request through ``provider``; return (items, error). Closes the provider."""
    import asyncio

    from copilot.providers.base import ModelRequest

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
