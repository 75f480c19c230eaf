"""The script vocabulary the test servers share: :class:`Reply`, :class:`Fault`, :class:`ToolCall`.

Both :class:`~copilot.testing.ScriptedOpenAIServer` (Chat Completions) and
:class:`~copilot.testing.ScriptedAnthropicServer` (Messages API) answer from a FIFO script of
these items and record every request as a :class:`RecordedRequest`. Each server writes an item
in its own wire format: a ``Reply`` with ``tool_calls`` streams OpenAI ``tool_calls`` fragments
or Anthropic ``tool_use`` blocks; ``Fault.status(429)`` is an OpenAI or an Anthropic error body.

Token accounting is deliberately simple and deterministic: **one token per whitespace-separated
word** (see :func:`count_tokens`).
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Fault",
    "RecordedRequest",
    "Reply",
    "ToolCall",
    "count_tokens",
    "default_reply_content",
    "message_text",
    "prompt_token_count",
    "split_chunks",
    "unused_port",
]

_WORD_RE = re.compile(r"\s*\S+\s*")

# --------------------------------------------------------------------------------------------
# Helpers (public: tests can use them to compute the expected default reply / usage)
# --------------------------------------------------------------------------------------------


def count_tokens(text: str) -> int:
    """Return the server's token count for ``text``: the number of whitespace-separated words."""
    return len(text.split())


def message_text(message: Mapping[str, Any]) -> str:
    """Return the text of one chat message.

    ``content`` may be a string, ``None`` or a list of content parts; for a list, the ``text`` of
    every part that has one (and the text of Anthropic ``tool_result`` blocks) is joined with
    single spaces.
    """
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            p.get("text") if "text" in p else message_text(p)
            for p in content
            if isinstance(p, Mapping)
        ]
        return " ".join(p for p in parts if isinstance(p, str) and p)
    return ""


def prompt_token_count(messages: Iterable[Mapping[str, Any]]) -> int:
    """Return ``prompt_tokens`` for a request: :func:`count_tokens` summed over all messages."""
    return sum(count_tokens(message_text(m)) for m in messages if isinstance(m, Mapping))


def default_reply_content(messages: Iterable[Mapping[str, Any]]) -> str:
    """Return the default (unscripted) reply: ``"echo: " + <last user message text>``.

    If there is no user message the result is ``"echo: "``.
    """
    last = ""
    for m in messages:
        if isinstance(m, Mapping) and m.get("role") == "user":
            last = message_text(m)
    return "echo: " + last


def split_chunks(content: str) -> list[str]:
    """Split ``content`` into streaming chunks: words, each keeping its surrounding spaces.

    ``"".join(split_chunks(s)) == s`` always holds; ``""`` gives ``[]``.
    """
    pieces = _WORD_RE.findall(content)
    if not pieces and content:
        pieces = [content]  # whitespace only
    return pieces


def unused_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` with nothing listening (for connection-refused tests).

    The port is obtained from the OS and released again, so it is free at the time of the call;
    nothing will listen on it unless someone else grabs it later (unlikely in a test run).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------
# Script items
# --------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One HTTP request received by the server (any endpoint, any outcome).

    ``headers`` has lower-cased names. ``json`` is the decoded body, or ``None`` when the body was
    empty or not valid JSON (the raw bytes are in ``body``). ``time`` is ``time.monotonic()`` when
    the request line and headers had been read. ``client`` is the peer ``(host, port)``: requests
    sharing it came over the same (keep-alive) connection.
    """

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    body: bytes = b""
    time: float = 0.0
    client: tuple[str, int] = ("", 0)


@dataclass
class ToolCall:
    """A tool call a scripted :class:`Reply` makes.

    * ``arguments``: the JSON text (or a dict, written as JSON) the model sends.
    * ``id``: the call's id; ``None`` lets the server number it (``call_1``, ``toolu_1`` ...).
    * ``chunks``: how the argument text is split over stream events; ``None`` splits it in
      three (so every test sees arguments arrive in pieces). Must join to the text.
    """

    name: str
    arguments: str | Mapping[str, Any] = "{}"
    id: str | None = None
    chunks: list[str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.arguments, str):
            self.arguments = json.dumps(dict(self.arguments))
        if self.chunks is not None and "".join(self.chunks) != self.arguments:
            raise ValueError("ToolCall.chunks must join to ToolCall.arguments")

    def argument_chunks(self) -> list[str]:
        """The pieces the arguments are streamed as."""
        if self.chunks is not None:
            return list(self.chunks)
        text = self.arguments
        third = max(1, len(text) // 3)
        return [p for p in (text[:third], text[third : 2 * third], text[2 * third :]) if p]


@dataclass
class Reply:
    """A scripted successful chat completion.

    * ``content``: the assistant text. If omitted and ``chunks`` is given, ``"".join(chunks)``.
    * ``model``: model id reported in the response; ``None`` echoes the request's ``model``.
    * ``prompt_tokens`` / ``completion_tokens``: usage to report; ``None`` computes them with
      :func:`prompt_token_count` / :func:`count_tokens`.
    * ``chunks``: how to split ``content`` when streaming (each becomes one SSE chunk); ``None``
      uses :func:`split_chunks`. Must join to ``content``.
    * ``finish_reason``: reported at the end, in OpenAI's words (``"stop"``, ``"length"``,
      ``"tool_calls"``; the Anthropic server maps them to ``end_turn``, ``max_tokens``,
      ``tool_use`` and passes its own words through); ``None``: ``"tool_calls"`` when the reply
      calls tools, else ``"stop"``.
    * ``chunk_delay``: seconds between SSE events for this reply; ``None`` uses the server's.
    * ``tool_calls``: the tools the reply calls, after its text (see :class:`ToolCall`).
    * ``extra_usage``: more usage fields to report (e.g. Anthropic's
      ``cache_read_input_tokens``).
    * ``reasoning``: thinking text streamed before the reply (OpenAI-compatible
      ``reasoning_content`` deltas, Anthropic ``thinking`` blocks); empty: none.
    """

    content: str = ""
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    chunks: list[str] | None = None
    finish_reason: str | None = None
    chunk_delay: float | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    extra_usage: dict[str, int] = field(default_factory=dict)
    reasoning: str = ""

    def __post_init__(self) -> None:
        if self.chunks is not None:
            self.chunks = list(self.chunks)
            joined = "".join(self.chunks)
            if not self.content:
                self.content = joined
            elif joined != self.content:
                raise ValueError("Reply.chunks must join to Reply.content")

    def stream_chunks(self) -> list[str]:
        """Return the content chunks this reply is streamed as."""
        return list(self.chunks) if self.chunks is not None else split_chunks(self.content)

    @property
    def reason(self) -> str:
        """The finish reason to report (see ``finish_reason``)."""
        if self.finish_reason is not None:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"


FaultKind = Literal["status", "disconnect", "truncate", "malformed", "hang", "error_event"]


@dataclass
class Fault:
    """A scripted failure. Build one with the classmethods, not the constructor.

    Behaviour for a streaming (``stream: true``) request / a non-streaming one:

    * :meth:`status`: an HTTP error with an OpenAI error body, in both cases.
    * :meth:`disconnect_after`: SSE role chunk + ``n`` content chunks, then the TCP connection is
      closed without the chunked terminator (a cut-off stream) / headers announcing the full
      ``Content-Length`` and half the body, then the connection is closed.
    * :meth:`truncate_after`: role chunk + ``n`` content chunks, then a clean end of the body
      (chunked terminator) with no ``finish_reason`` chunk and no ``[DONE]`` / a complete
      ``chat.completion`` holding only those chunks' text and ``finish_reason: null``.
    * :meth:`malformed`: ``200`` and an SSE ``data:`` line that is not JSON (then ``[DONE]``) /
      ``200`` with ``Content-Type: application/json`` and a body that is not JSON.
    * :meth:`hang`: nothing is sent for ``seconds``; then the connection is closed without a
      response. :meth:`ScriptedOpenAIServer.stop` cuts the wait short.
    * :meth:`error_event`: ``n`` content chunks, then an error inside the ``200`` stream (an
      Anthropic ``error`` event, an OpenAI ``data: {"error": ...}`` line), then a clean end.

    The Anthropic server writes the same faults in its own wire format (its error bodies are
    ``{"type": "error", "error": {"type", "message"}}``).
    """

    kind: FaultKind
    code: int = 500
    body: dict[str, Any] | None = None
    retry_after: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    n_chunks: int = 0
    content: str | None = None
    seconds: float = 0.0
    payload: str = "{this is not json"
    message: str = "Overloaded"
    error_type: str = "overloaded_error"

    @classmethod
    def status(
        cls,
        code: int,
        body: dict[str, Any] | None = None,
        retry_after: float | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Answer with HTTP ``code`` and an OpenAI error body.

        ``body`` defaults to ``{"error": {"message", "type", "param", "code"}}`` with values that
        match what OpenAI sends for that status. ``retry_after`` (seconds) adds a ``Retry-After``
        header; ``headers`` adds any other response headers.
        """
        if not 100 <= code <= 599:
            raise ValueError(f"invalid HTTP status {code}")
        return cls(
            "status", code=code, body=body, retry_after=retry_after, headers=dict(headers or {})
        )

    @classmethod
    def disconnect_after(cls, n_chunks: int, content: str | None = None) -> Fault:
        """Stream ``n_chunks`` content chunks, then drop the connection (no terminator/[DONE]).

        ``content`` is split with :func:`split_chunks`; ``None`` uses the default echo reply.
        """
        return cls("disconnect", n_chunks=_non_negative(n_chunks), content=content)

    @classmethod
    def truncate_after(cls, n_chunks: int, content: str | None = None) -> Fault:
        """Stream ``n_chunks`` content chunks, then end the body cleanly without a
        ``finish_reason`` and without ``data: [DONE]``."""
        return cls("truncate", n_chunks=_non_negative(n_chunks), content=content)

    @classmethod
    def malformed(cls, payload: str = "{this is not json") -> Fault:
        """Answer ``200`` with an SSE ``data:`` line (or a JSON body) that is ``payload``."""
        return cls("malformed", payload=payload)

    @classmethod
    def hang(cls, seconds: float) -> Fault:
        """Accept the request and send nothing for ``seconds``, then close the connection."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return cls("hang", seconds=float(seconds))

    @classmethod
    def error_event(
        cls,
        n_chunks: int = 0,
        message: str = "Overloaded",
        error_type: str = "overloaded_error",
        content: str | None = None,
    ) -> Fault:
        """Stream ``n_chunks`` content chunks, then an error event with ``message``."""
        return cls(
            "error_event",
            n_chunks=_non_negative(n_chunks),
            message=message,
            error_type=error_type,
            content=content,
        )


def _non_negative(n: int) -> int:
    if n < 0:
        raise ValueError("n_chunks must be >= 0")
    return int(n)
