"""A scriptable, OpenAI-compatible HTTP server for tests, benchmarks and local experiments.

Standard library only. The server speaks just enough of the OpenAI REST API for the official
``openai`` SDK (and anything else that talks the same wire format) to work against it:

* ``POST /v1/chat/completions`` -- streaming (SSE, chunked transfer encoding) and non-streaming.
* ``GET /v1/models`` and ``GET /v1/models/{id}``.
* anything else -> ``404`` with an OpenAI-shaped error body.

A :class:`Reply` with ``tool_calls`` streams them as OpenAI does: each call's id and name in its
first fragment, its arguments split over the following chunks, several calls told apart by
``index``, then ``finish_reason: "tool_calls"``. Requests are checked as OpenAI checks them: an
assistant message with ``tool_calls`` must be followed by one ``tool`` message per call id, and
a ``tool`` message must answer such a call; otherwise ``400``.

Responses to ``/v1/chat/completions`` come from a FIFO *script* of :class:`Reply` and
:class:`Fault` objects (the vocabulary shared with the Anthropic server, :mod:`copilot.testing.script`) (see :meth:`ScriptedOpenAIServer.enqueue`). When the script is empty the
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
import json
import signal
import sys
import time
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any, ClassVar, cast

from ._http import BaseHandler, ScriptedServer
from .script import (
    Fault,
    RecordedRequest,
    Reply,
    ToolCall,
    count_tokens,
    default_reply_content,
    message_text,
    prompt_token_count,
    split_chunks,
    unused_port,
)

__all__ = [
    "DEFAULT_MODEL",
    "Fault",
    "RecordedRequest",
    "Reply",
    "ScriptedOpenAIServer",
    "ToolCall",
    "count_tokens",
    "default_reply_content",
    "main",
    "message_text",
    "prompt_token_count",
    "split_chunks",
    "tool_message_problem",
    "unused_port",
]

DEFAULT_MODEL = "test-model"
"""Model id always listed by ``GET /v1/models``."""

_SYSTEM_FINGERPRINT = "fp_scripted"
_OWNED_BY = "scripted"
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


def tool_message_problem(messages: Iterable[Any]) -> str | None:
    """What OpenAI would refuse in ``messages``' tool calls and results, or None.

    An assistant message with ``tool_calls`` must be followed by one ``tool`` message for each
    call id (before any other message); a ``tool`` message must answer such a call.
    """
    waiting: set[str] = set()
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            continue
        role = m.get("role")
        if role == "tool":
            call_id = m.get("tool_call_id")
            if call_id not in waiting:
                return (
                    f"Invalid parameter: messages[{i}]: messages with role 'tool' must be a "
                    "response to a preceeding message with 'tool_calls'."
                )
            waiting.discard(call_id)
            continue
        if waiting:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(sorted(waiting))}"
            )
        if role == "assistant":
            waiting = {c.get("id") for c in m.get("tool_calls") or () if isinstance(c, Mapping)}
    if waiting:
        return (
            "An assistant message with 'tool_calls' must be followed by tool messages "
            f"responding to each 'tool_call_id': {', '.join(sorted(waiting))}"
        )
    return None


class _Handler(BaseHandler):
    server_version = "ScriptedOpenAI/1.0"

    @property
    def owner(self) -> ScriptedOpenAIServer:
        """The scripted server this handler answers for (the HTTP server holds it)."""
        return cast("ScriptedOpenAIServer", cast(Any, self.server).owner)

    def route(self, path: str, body: Any) -> None:
        owner = self.owner
        if path == "/v1/chat/completions" and self.command == "POST":
            self._chat_completions(body)
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
        problem = tool_message_problem(messages)
        if problem is not None:
            self._send_json(400, _error_body(400, problem, "messages"))
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
        usage.update(reply.extra_usage)
        calls = self._numbered(reply)
        if not stream:
            self._send_json(
                200, self._completion(out_model, reply.content, reply.reason, usage, calls)
            )
            return
        delay = reply.chunk_delay if reply.chunk_delay is not None else owner.chunk_delay
        events = [
            self._chunk(out_model, self._delta({"role": "assistant", "content": ""}), include_usage)
        ]
        events += [
            self._chunk(out_model, self._delta({"reasoning_content": c}), include_usage)
            for c in split_chunks(reply.reasoning)
        ]
        events += [
            self._chunk(out_model, self._delta({"content": c}), include_usage)
            for c in reply.stream_chunks()
        ]
        for index, (call_id, call) in enumerate(calls):
            first = {
                "index": index,
                "id": call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            events.append(
                self._chunk(out_model, self._delta({"tool_calls": [first]}), include_usage)
            )
            for piece in call.argument_chunks():
                fragment = {"index": index, "function": {"arguments": piece}}
                events.append(
                    self._chunk(out_model, self._delta({"tool_calls": [fragment]}), include_usage)
                )
        events.append(self._chunk(out_model, self._delta({}, reply.reason), include_usage))
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

    def _numbered(self, reply: Reply) -> list[tuple[str, ToolCall]]:
        """The reply's tool calls with their ids (numbered by the server when not scripted)."""
        owner = self.server.owner
        return [(call.id or owner._next_call_id(), call) for call in reply.tool_calls]

    def _completion(
        self,
        model: str,
        content: str,
        finish_reason: str | None,
        usage: dict[str, Any],
        calls: list[tuple[str, ToolCall]] | None = None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if calls:
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call_id, call in calls
            ]
        return {
            "id": self._request_id,
            "object": "chat.completion",
            "created": self._created,
            "model": model,
            "system_fingerprint": _SYSTEM_FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": message,
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
        # disconnect / truncate / error_event
        content = fault.content if fault.content is not None else default_reply_content(messages)
        chunks = split_chunks(content)[: fault.n_chunks]
        if not stream:
            partial = "".join(chunks)
            if fault.kind == "error_event":
                self._send_json(500, _error_body(500, fault.message))
                return
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
        if fault.kind == "error_event":
            error = {
                "message": fault.message,
                "type": fault.error_type,
                "param": None,
                "code": None,
            }
            self._send_event(json.dumps({"error": error}))
        self._end_stream()


class ScriptedOpenAIServer(ScriptedServer):
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

    handler_class = _Handler
    endpoint: ClassVar[str] = "/v1/chat/completions"
    url_suffix: ClassVar[str] = "/v1"
    id_prefix: ClassVar[str] = "chatcmpl-scripted"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        chunk_delay: float = 0.0,
        context_window: int = 8192,
    ) -> None:
        super().__init__(host, port, latency=latency, chunk_delay=chunk_delay)
        self.context_window = context_window
        self._models: dict[str, None] = {DEFAULT_MODEL: None}
        self._call_ids = iter(range(1, 1 << 62))

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1`` -- pass it as ``base_url`` to the ``openai`` client."""
        return super().base_url

    def reset(self) -> None:
        """Forget recorded requests, pending script items and requested models."""
        super().reset()
        with self._lock:
            self._models = {DEFAULT_MODEL: None}

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """Recorded ``POST /v1/chat/completions`` requests, oldest first."""
        return self._endpoint_requests()

    # -- internals used by the handler ------------------------------------------------------

    def _next_call_id(self) -> str:
        with self._lock:
            return f"call_{next(self._call_ids)}"

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
