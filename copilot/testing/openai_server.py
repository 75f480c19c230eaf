"""A scriptable, OpenAI-compatible HTTP server for tests, benchmarks and local experiments.

Standard library only. The server speaks just enough of the OpenAI REST API for the official
``openai`` SDK (and anything else that talks the same wire format) to work against it:

* ``POST /v1/chat/completions`` -- streaming (SSE, chunked transfer encoding) and non-streaming.
* ``GET /v1/models`` and ``GET /v1/models/{id}``.
* anything else -> ``404`` with an OpenAI-shaped error body.

Responses to ``/v1/chat/completions`` come from a FIFO *script* of :class:`Reply` and
:class:`Fault` objects (see :meth:`ScriptedOpenAIServer.enqueue`). When the script is empty the
server answers deterministically with ``"echo: " + <content of the last user message>``.

Token accounting is deliberately simple and deterministic: **one token per whitespace-separated
word** (see :func:`count_tokens`). ``prompt_tokens`` is the word count summed over the text of all
request messages; ``completion_tokens`` is the word count of the reply content.

Example::

    from openai import OpenAI
    from copilot.testing import Fault, Reply, ScriptedOpenAIServer

    with ScriptedOpenAIServer() as server:
        server.enqueue(Reply("hi there"), Fault.status(429, retry_after=1))
        client = OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)
        ...
        assert server.requests[0].json["messages"][-1]["content"] == "hello"

Run standalone with ``python -m copilot.testing.openai_server --port 8123 [--latency 0.05]``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from typing import Self

__all__ = [
    "DEFAULT_MODEL",
    "Fault",
    "RecordedRequest",
    "Reply",
    "ScriptedOpenAIServer",
    "count_tokens",
    "default_reply_content",
    "main",
    "message_text",
    "prompt_token_count",
    "split_chunks",
    "unused_port",
]

DEFAULT_MODEL = "test-model"
"""Model id always listed by ``GET /v1/models``."""

_SYSTEM_FINGERPRINT = "fp_scripted"
_OWNED_BY = "scripted"
_WORD_RE = re.compile(r"\s*\S+\s*")

_ERROR_TYPES: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    409: ("invalid_request_error", None),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", None),
    504: ("server_error", None),
}


# --------------------------------------------------------------------------------------------
# Helpers (public: tests can use them to compute the expected default reply / usage)
# --------------------------------------------------------------------------------------------


def count_tokens(text: str) -> int:
    """Return the server's token count for ``text``: the number of whitespace-separated words."""
    return len(text.split())


def message_text(message: Mapping[str, Any]) -> str:
    """Return the text of one chat message.

    ``content`` may be a string, ``None`` or a list of content parts; for a list, the ``text`` of
    every part that has one is joined with single spaces.
    """
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, Mapping)]
        return " ".join(p for p in parts if isinstance(p, str))
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
class Reply:
    """A scripted successful chat completion.

    * ``content``: the assistant text. If omitted and ``chunks`` is given, ``"".join(chunks)``.
    * ``model``: model id reported in the response; ``None`` echoes the request's ``model``.
    * ``prompt_tokens`` / ``completion_tokens``: usage to report; ``None`` computes them with
      :func:`prompt_token_count` / :func:`count_tokens`.
    * ``chunks``: how to split ``content`` when streaming (each becomes one SSE chunk); ``None``
      uses :func:`split_chunks`. Must join to ``content``.
    * ``finish_reason``: reported in the last choice chunk / the choice (``"stop"``, ``"length"``,
      ...).
    * ``chunk_delay``: seconds between SSE events for this reply; ``None`` uses the server's.
    """

    content: str = ""
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    chunks: list[str] | None = None
    finish_reason: str = "stop"
    chunk_delay: float | None = None

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


FaultKind = Literal["status", "disconnect", "truncate", "malformed", "hang"]


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


def _non_negative(n: int) -> int:
    if n < 0:
        raise ValueError("n_chunks must be >= 0")
    return int(n)


def _error_body(code: int, message: str | None = None, param: str | None = None) -> dict[str, Any]:
    etype, ecode = _ERROR_TYPES.get(
        code, ("server_error" if code >= 500 else "invalid_request_error", None)
    )
    if message is None:
        try:
            message = f"Scripted error: {code} {HTTPStatus(code).phrase}"
        except ValueError:
            message = f"Scripted error: {code}"
    return {"error": {"message": message, "type": etype, "param": param, "code": ecode}}


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _Abort(Exception):
    """Raised inside the handler to drop the connection silently."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], owner: ScriptedOpenAIServer) -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Swallow per-connection errors (client went away, ...): never print tracebacks."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "ScriptedOpenAI/1.0"
    sys_version = ""
    server: _HTTPServer

    # -- lifecycle --------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, *args: Any) -> None:
        """Silenced: request lines and headers (API keys) must never reach stdout/stderr."""

    def log_error(self, *args: Any) -> None:
        """Silenced as well."""

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except _Abort:
            self.close_connection = True
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True

    # -- dispatch ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        owner = self.server.owner
        received = time.monotonic()
        body = self._read_body()
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        path = self.path.split("?", 1)[0]
        owner._record(
            RecordedRequest(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                json=parsed,
                body=body,
                time=received,
                client=(str(self.client_address[0]), int(self.client_address[1])),
            )
        )
        if path.endswith("/") and len(path) > 1:
            path = path.rstrip("/")
        if path == "/v1/chat/completions" and self.command == "POST":
            self._chat_completions(parsed)
        elif path == "/v1/models" and self.command == "GET":
            self._send_json(200, {"object": "list", "data": owner._model_objects()})
        elif path.startswith("/v1/models/") and self.command == "GET":
            model_id = path[len("/v1/models/") :]
            if model_id in owner._models_seen():
                self._send_json(200, owner._model_object(model_id))
            else:
                msg = f"The model '{model_id}' does not exist"
                self._send_json(404, _error_body(404, msg, "model"))
        else:
            msg = f"Unknown request URL: {self.command} {self.path}."
            self._send_json(404, _error_body(404, msg))

    def _read_body(self) -> bytes:
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            parts = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise _Abort
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until blank line
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    # -- response helpers -------------------------------------------------------------------

    def _send_json(
        self,
        code: int,
        obj: Any,
        headers: Mapping[str, str] | None = None,
        raw: bytes | None = None,
    ) -> None:
        data = raw if raw is not None else json.dumps(obj, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        # headers + body in one write (one TCP segment for small answers)
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(data)
        self.flush_headers()

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", self._request_id)
        # not flushed: the headers go out together with the first event
        self._headers_buffer.append(b"\r\n")

    def _write(self, data: bytes) -> None:
        if getattr(self, "_headers_buffer", None):
            self._headers_buffer.append(data)
            self.flush_headers()
        else:
            self.wfile.write(data)

    def _send_event(self, data: str, *, end: bool = False) -> None:
        """Send one SSE event as one HTTP chunk (one write); ``end`` appends the terminator."""
        payload = b"data: " + data.encode() + b"\n\n"
        tail = b"0\r\n\r\n" if end else b""
        self._write(b"%x\r\n%s\r\n%s" % (len(payload), payload, tail))

    def _end_stream(self) -> None:
        self._write(b"0\r\n\r\n")

    def _drop(self) -> None:
        """Close the TCP connection now (FIN), mid-response, and stop serving it."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        raise _Abort

    def _wait(self, seconds: float) -> None:
        if seconds > 0 and self.server.owner._stopping.wait(seconds):
            self._drop()

    # -- /v1/chat/completions ---------------------------------------------------------------

    def _chat_completions(self, req: Any) -> None:
        owner = self.server.owner
        if not isinstance(req, dict):
            msg = "We could not parse the JSON body of your request."
            self._send_json(400, _error_body(400, msg))
            return
        for name in ("model", "messages"):
            if name not in req:
                err = _error_body(400, f"Missing required parameter: '{name}'.", name)
                err["error"]["code"] = "missing_required_parameter"
                self._send_json(400, err)
                return
        messages = req["messages"]
        model = req["model"]
        if not isinstance(messages, list) or not isinstance(model, str):
            bad = "messages" if not isinstance(messages, list) else "model"
            self._send_json(400, _error_body(400, f"Invalid type for '{bad}'.", bad))
            return
        owner._note_model(model)
        prompt_tokens = prompt_token_count(messages)
        if prompt_tokens > owner.context_window:
            msg = (
                f"This model's maximum context length is {owner.context_window} tokens. "
                f"However, your messages resulted in {prompt_tokens} tokens. "
                "Please reduce the length of the messages."
            )
            err = _error_body(400, msg, "messages")
            err["error"]["code"] = "context_length_exceeded"
            self._send_json(400, err)
            return

        item = owner._next_script_item()
        stream = bool(req.get("stream"))
        so = req.get("stream_options")
        include_usage = stream and isinstance(so, dict) and bool(so.get("include_usage"))
        self._request_id = owner._next_id()
        self._wait(owner.latency)

        if isinstance(item, Fault):
            self._fault(item, messages, model, stream, include_usage, prompt_tokens)
            return
        reply = item if item is not None else Reply(default_reply_content(messages))
        self._reply(reply, model, stream, include_usage, prompt_tokens)

    def _usage(self, prompt: int, completion: int) -> dict[str, Any]:
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _chunk(self, model: str, choices: list[Any], include_usage: bool, usage: Any = None) -> str:
        obj: dict[str, Any] = {
            "id": self._request_id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": model,
            "system_fingerprint": _SYSTEM_FINGERPRINT,
            "choices": choices,
        }
        if include_usage:
            obj["usage"] = usage
        return json.dumps(obj, separators=(",", ":"))

    @staticmethod
    def _delta(delta: dict[str, Any], finish_reason: str | None = None) -> list[Any]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]

    def _reply(
        self, reply: Reply, model: str, stream: bool, include_usage: bool, prompt_tokens: int
    ) -> None:
        owner = self.server.owner
        self._created = int(time.time())
        out_model = reply.model or model
        usage = self._usage(
            reply.prompt_tokens if reply.prompt_tokens is not None else prompt_tokens,
            reply.completion_tokens
            if reply.completion_tokens is not None
            else count_tokens(reply.content),
        )
        if not stream:
            self._send_json(
                200, self._completion(out_model, reply.content, reply.finish_reason, usage)
            )
            return
        delay = reply.chunk_delay if reply.chunk_delay is not None else owner.chunk_delay
        events = [
            self._chunk(out_model, self._delta({"role": "assistant", "content": ""}), include_usage)
        ]
        events += [
            self._chunk(out_model, self._delta({"content": c}), include_usage)
            for c in reply.stream_chunks()
        ]
        events.append(self._chunk(out_model, self._delta({}, reply.finish_reason), include_usage))
        if include_usage:
            events.append(self._chunk(out_model, [], True, usage))
        self._start_stream()
        for i, ev in enumerate(events):
            if i and delay:
                self._wait(delay)
            self._send_event(ev)
        if delay:
            self._wait(delay)
        # [DONE] and the chunked terminator in one write: clients that drain the body after
        # [DONE] (AsyncOpenAI on HTTP/1.1) find the end at once and keep the connection.
        self._send_event("[DONE]", end=True)

    def _completion(
        self, model: str, content: str, finish_reason: str | None, usage: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "id": self._request_id,
            "object": "chat.completion",
            "created": self._created,
            "model": model,
            "system_fingerprint": _SYSTEM_FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage,
        }

    def _fault(
        self,
        fault: Fault,
        messages: list[Any],
        model: str,
        stream: bool,
        include_usage: bool,
        prompt_tokens: int,
    ) -> None:
        owner = self.server.owner
        self._created = int(time.time())
        if fault.kind == "status":
            headers = {"x-request-id": self._request_id}
            if fault.retry_after is not None:
                ra = fault.retry_after
                headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else f"{ra:g}"
            headers.update(fault.headers)
            body = fault.body if fault.body is not None else _error_body(fault.code)
            self._send_json(fault.code, body, headers)
            return
        if fault.kind == "hang":
            self._wait(fault.seconds)
            self._drop()
        if fault.kind == "malformed":
            if not stream:
                self._send_json(200, None, raw=fault.payload.encode())
                return
            self._start_stream()
            self._send_event(fault.payload)
            self._send_event("[DONE]", end=True)
            return
        # disconnect / truncate
        content = fault.content if fault.content is not None else default_reply_content(messages)
        chunks = split_chunks(content)[: fault.n_chunks]
        if not stream:
            partial = "".join(chunks)
            if fault.kind == "truncate":
                usage = self._usage(prompt_tokens, count_tokens(partial))
                self._send_json(200, self._completion(model, partial, None, usage))
                return
            usage = self._usage(prompt_tokens, count_tokens(content))
            data = json.dumps(self._completion(model, content, "stop", usage)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self._drop()
        self._start_stream()
        self._send_event(
            self._chunk(model, self._delta({"role": "assistant", "content": ""}), include_usage)
        )
        for c in chunks:
            self._wait(owner.chunk_delay)
            self._send_event(self._chunk(model, self._delta({"content": c}), include_usage))
        if fault.kind == "disconnect":
            self._drop()
        self._end_stream()


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class ScriptedOpenAIServer:
    """An OpenAI-compatible HTTP server on a daemon thread, driven by a FIFO script.

    * ``latency``: seconds to wait before the first byte of every ``/v1/chat/completions``
      response that passed validation (scripted faults included).
    * ``chunk_delay``: seconds between consecutive SSE events of a stream.
    * ``context_window``: requests whose ``prompt_tokens`` (see :func:`prompt_token_count`)
      exceed it get OpenAI's ``400 context_length_exceeded`` error (no script item consumed).

    ``port=0`` picks a free port; read the actual one from :attr:`port` / :attr:`base_url` after
    :meth:`start`. Also usable as a context manager (``with ScriptedOpenAIServer() as s:``).

    Every request, on any path, is appended to :attr:`requests` (thread-safe) before it is
    answered. Requests rejected by validation (400) do not consume a script item.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        chunk_delay: float = 0.0,
        context_window: int = 8192,
    ) -> None:
        self.host = host
        self.port = port
        self.latency = latency
        self.chunk_delay = chunk_delay
        self.context_window = context_window
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._script: deque[Reply | Fault] = deque()
        self._models: dict[str, None] = {DEFAULT_MODEL: None}
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1`` -- pass it as ``base_url`` to the ``openai`` client."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._httpd is not None

    def start(self) -> ScriptedOpenAIServer:
        """Bind and start serving on a daemon thread; returns ``self``. Idempotent."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer((self.host, self.port), self)
        self.port = int(httpd.server_address[1])
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ScriptedOpenAIServer:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open (keep-alive, hanging or streaming) connections. Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with httpd.connections_lock:
            conns = list(httpd.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_forever(self) -> None:
        """Start (if needed) and block until :meth:`stop` is called or KeyboardInterrupt."""
        self.start()
        try:
            while self._httpd is not None and not self._stopping.wait(0.5):
                pass
        finally:
            self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ScriptedOpenAIServer {self.base_url} {state}, {len(self._script)} scripted>"

    # -- scripting --------------------------------------------------------------------------

    def enqueue(self, *responses: Reply | Fault) -> None:
        """Append replies/faults to the FIFO script consumed by ``/v1/chat/completions``.

        Each valid chat request pops one item; when the script is empty the default echo reply
        is used (see :func:`default_reply_content`).
        """
        for r in responses:
            if not isinstance(r, (Reply, Fault)):
                raise TypeError(f"expected Reply or Fault, got {type(r).__name__}")
        with self._lock:
            self._script.extend(responses)

    @property
    def pending(self) -> int:
        """Number of script items not consumed yet."""
        with self._lock:
            return len(self._script)

    def reset(self) -> None:
        """Forget recorded requests, pending script items and requested models."""
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self._models = {DEFAULT_MODEL: None}

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """Recorded ``POST /v1/chat/completions`` requests, oldest first."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r.method == "POST" and r.path.split("?")[0].rstrip("/") == "/v1/chat/completions"
            ]

    @property
    def last_request(self) -> RecordedRequest | None:
        """The most recent recorded request, or ``None``."""
        with self._lock:
            return self.requests[-1] if self.requests else None

    # -- internals used by the handler ------------------------------------------------------

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)

    def _next_script_item(self) -> Reply | Fault | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    def _next_id(self) -> str:
        return f"chatcmpl-scripted{next(self._ids):08d}"

    def _note_model(self, model: str) -> None:
        with self._lock:
            self._models[model] = None

    def _models_seen(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def _model_object(self, model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": _OWNED_BY}

    def _model_objects(self) -> list[dict[str, Any]]:
        return [self._model_object(m) for m in self._models_seen()]


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m copilot.testing.openai_server``: serve until interrupted (Ctrl-C / SIGTERM)."""
    p = argparse.ArgumentParser(
        prog="python -m copilot.testing.openai_server",
        description="Serve a scripted OpenAI-compatible API (default: 'echo: <last user msg>').",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8123, help="0 picks a free port (default 8123)")
    p.add_argument("--latency", type=float, default=0.0, help="seconds before the first byte")
    p.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between SSE chunks")
    p.add_argument("--context-window", type=int, default=8192)
    args = p.parse_args(argv)
    server = ScriptedOpenAIServer(
        args.host,
        args.port,
        latency=args.latency,
        chunk_delay=args.chunk_delay,
        context_window=args.context_window,
    )

    def _on_term(signum: int, frame: Any) -> None:
        server._stopping.set()

    signal.signal(signal.SIGTERM, _on_term)
    server.start()
    print(server.base_url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
