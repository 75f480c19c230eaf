"""One turn of a session: stream a reply with retries, and say how it ended.

:func:`stream_reply` drives a provider for one request under the client's retry policy and
reports progress through callbacks; it stores nothing itself. The session records the outcome.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ProviderError, ProviderResponseError, RateLimitError
from .providers.base import Completion, ModelRequest, Provider, TextDelta

__all__ = ["RetryPolicy", "StreamResult", "stream_reply"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failed model call is tried again.

    Only errors marked ``retryable`` are retried (connection, timeout, 429, 5xx, a cut-off
    stream). A 429's ``Retry-After`` is honoured when it is at most ``max_wait`` seconds.
    """

    max_retries: int = 2
    backoff: float = 0.5
    max_wait: float = 60.0

    def delay(self, error: ProviderError, attempt: int) -> float | None:
        """Seconds to wait before retry number ``attempt`` (1-based), or None to give up."""
        if not error.retryable or attempt > self.max_retries:
            return None
        if isinstance(error, RateLimitError) and error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.max_wait else None
        return min(self.backoff * 2 ** (attempt - 1), self.max_wait)


@dataclass(slots=True)
class StreamResult:
    """A complete reply and how long it took."""

    completion: Completion
    duration_ms: float
    first_token_ms: float | None
    attempts: int


async def stream_reply(
    provider: Provider,
    request: ModelRequest,
    policy: RetryPolicy,
    on_delta: Callable[[str, int], None],
    on_retry: Callable[[ProviderError, int, float], None],
    partial: list[str],
) -> StreamResult:
    """Stream one reply, retrying per ``policy``.

    ``on_delta(text, attempt)`` gets each piece; ``on_retry(error, attempt, delay)`` is told
    before each retry; ``partial`` holds the current attempt's text so far (read on abort).
    Raises the last :class:`ProviderError` when retries are exhausted.
    """
    started = time.perf_counter()
    attempt = 0
    while True:
        attempt += 1
        partial.clear()
        first_token_ms = None
        try:
            completion = None
            async for item in provider.stream(request):
                if isinstance(item, TextDelta):
                    if first_token_ms is None:
                        first_token_ms = (time.perf_counter() - started) * 1000
                    partial.append(item.text)
                    on_delta(item.text, attempt)
                elif isinstance(item, Completion):
                    completion = item
            if completion is None:
                raise ProviderResponseError(
                    "the reply ended without a final message (cut off)",
                    provider=provider.name,
                    model=request.model,
                )
            return StreamResult(
                completion=completion,
                duration_ms=(time.perf_counter() - started) * 1000,
                first_token_ms=first_token_ms,
                attempts=attempt,
            )
        except ProviderError as error:
            delay = policy.delay(error, attempt)
            if delay is None:
                raise
            on_retry(error, attempt, delay)
            await asyncio.sleep(delay)
