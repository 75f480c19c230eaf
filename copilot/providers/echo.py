"""The ``echo`` provider: a deterministic, instant model for tests, demos and benchmarks.

By default it answers ``"echo: <last user message>"``, streamed a word at a time. Tests can
script it like ``llm``'s MockModel: :meth:`EchoProvider.enqueue` queues replies or exceptions,
and :attr:`EchoProvider.requests` records every request it received (the full model context),
so a test can assert what the model was shown.

Tool calling, deterministic, for demos, tests and offline notebooks: when the request offers
tools and the newest message is a user prompt whose lines read ``call NAME {JSON arguments}``
(the JSON optional; NAME one of the offered tools), echo answers with those calls (several
lines, several calls in one step), ids ``echo_call_1``, ``echo_call_2`` ... counted over the
whole context so they stay unique in a session. When the context ends with tool results,
echo answers with the results' texts, one per line. A ``call`` line naming a tool that is not
offered is just echoed. A queued :class:`Completion` (with ``tool_calls``) is replayed as is.

Settings (``CopilotClient(providers={"echo": {...}})``): ``latency`` seconds before the first
delta, ``chunk_delay`` seconds between deltas, ``context_window`` in tokens.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import AsyncIterator

from .base import (
    Completion,
    ModelRequest,
    Provider,
    StreamItem,
    TextDelta,
    ToolCallRequest,
    estimate_tokens,
)

__all__ = ["EchoProvider"]

_WORDS = re.compile(r"\S+\s*|\s+")
_CALL = re.compile(r"^\s*call\s+([A-Za-z0-9_-]{1,64})\s*(\{.*\})?\s*$")


class EchoProvider(Provider):
    """Answers from the prompt, instantly and deterministically."""

    name = "echo"
    default_context_window = 8192

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self.requests: list[ModelRequest] = []
        self._script: deque[str | BaseException | Completion] = deque()

    def models(self) -> list[str]:
        return ["echo"]

    def supports_tools(self, model: str) -> bool:
        return True

    def supports_images(self, model: str) -> bool:
        """Echo "sees" images: it describes them by name, size and hash (for demos)."""
        return True

    def enqueue(self, *replies: str | BaseException | Completion) -> None:
        """Queue replies (text, or a ``Completion`` that may call tools) or exceptions to
        raise, consumed one per request, in order."""
        self._script.extend(replies)

    def tool_calls_for(self, request: ModelRequest) -> tuple[ToolCallRequest, ...]:
        """The calls the newest prompt asks for (``call NAME {...}`` lines), if every line
        is one and names an offered tool; else none."""
        if not request.tools or not request.messages or request.messages[-1].role != "user":
            return ()
        offered = {tool.name for tool in request.tools}
        lines = [line for line in request.messages[-1].content.splitlines() if line.strip()]
        matches = [_CALL.match(line) for line in lines]
        if not matches or not all(m and m.group(1) in offered for m in matches):
            return ()
        done = sum(len(msg.tool_calls) for msg in request.messages)
        return tuple(
            ToolCallRequest(f"echo_call_{done + n}", m.group(1), _arguments(m.group(2)))
            for n, m in enumerate(matches, 1)
        )

    def reply_for(self, request: ModelRequest) -> str:
        """The default reply: the tool results the context ends with, one per line, or
        ``echo: `` and the newest user message."""
        results = []
        for message in reversed(request.messages):
            if message.role != "tool":
                break
            results.append(message.content)
        if results:
            return "\n".join(reversed(results))
        last = next((m for m in reversed(request.messages) if m.role == "user"), None)
        if last is None:
            return "echo: "
        seen = "".join(
            f"\n[image {a.display_name}: {a.mime_type}, {a.size} bytes, sha256 {a.sha256[:12]}]"
            for a in last.attachments
        )
        return f"echo: {last.content}{seen}"

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        self.requests.append(request)
        scripted = self._script.popleft() if self._script else None
        if isinstance(scripted, BaseException):
            raise scripted
        calls = self.tool_calls_for(request) if scripted is None else ()
        if isinstance(scripted, Completion):
            text, calls = scripted.content, scripted.tool_calls
        elif calls:
            text = ""
        else:
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
            finish_reason="tool_calls" if calls else "stop",
            tool_calls=calls,
        )


def _arguments(text: str | None) -> str:
    """The JSON arguments of a ``call`` line, normalised (``{}`` when absent; kept verbatim
    when they do not parse, so the tool runner answers with its invalid-JSON failure)."""
    if not text:
        return "{}"
    try:
        return json.dumps(json.loads(text))
    except ValueError:
        return text
