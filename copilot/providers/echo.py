"""The ``echo`` provider: a deterministic, instant model for tests, demos and benchmarks.

By default it answers ``"echo: <last user message>"``, streamed a word at a time. Tests can
script it like ``llm``'s MockModel: :meth:`EchoProvider.enqueue` queues replies or exceptions,
and :attr:`EchoProvider.requests` records every request it received (the full model context),
so a test can assert what the model was shown.

Settings (``CopilotClient(providers={"echo": {...}})``): ``latency`` seconds before the first
delta, ``chunk_delay`` seconds between deltas, ``context_window`` in tokens.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator

from .base import Completion, ModelRequest, Provider, StreamItem, TextDelta, estimate_tokens

__all__ = ["EchoProvider"]

_WORDS = re.compile(r"\S+\s*|\s+")


class EchoProvider(Provider):
    """Answers from the prompt, instantly and deterministically."""

    name = "echo"
    default_context_window = 8192

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self.requests: list[ModelRequest] = []
        self._script: deque[str | BaseException] = deque()

    def models(self) -> list[str]:
        return ["echo"]

    def enqueue(self, *replies: str | BaseException) -> None:
        """Queue replies (text) or exceptions to raise, consumed one per request, in order."""
        self._script.extend(replies)

    def reply_for(self, request: ModelRequest) -> str:
        """The default reply: ``echo: `` and the newest user message."""
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        return f"echo: {last_user}"

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        self.requests.append(request)
        scripted = self._script.popleft() if self._script else None
        if isinstance(scripted, BaseException):
            raise scripted
        text = scripted if scripted is not None else self.reply_for(request)
        latency = float(self.settings.get("latency", 0.0))
        chunk_delay = float(self.settings.get("chunk_delay", 0.0))
        if latency:
            await asyncio.sleep(latency)
        for index, piece in enumerate(_WORDS.findall(text)):
            if chunk_delay and index:
                await asyncio.sleep(chunk_delay)
            yield TextDelta(piece)
        prompt_tokens = sum(estimate_tokens(m.content) for m in request.messages)
        yield Completion(
            content=text,
            model="echo",
            input_tokens=prompt_tokens,
            output_tokens=estimate_tokens(text),
            finish_reason="stop",
        )
