"""A scriptable, Anthropic-compatible HTTP server: the Messages API twin of the OpenAI one.

Standard library only. It speaks enough of ``POST /v1/messages`` for the official
``anthropic`` SDK: streaming answers are the documented SSE events (``message_start``,
``content_block_start``, ``ping``, ``content_block_delta``, ``content_block_stop``,
``message_delta``, ``message_stop``); non-streaming answers are one ``message`` object. It
answers from the same script vocabulary as :class:`~copilot.testing.ScriptedOpenAIServer`
(:class:`Reply`, :class:`Fault`, :class:`ToolCall`), written in Anthropic's wire format:

* a ``Reply``'s text is one ``text`` block streamed as ``text_delta`` events; each
  :class:`ToolCall` is a ``tool_use`` block whose input arrives as ``input_json_delta``
  fragments; ``finish_reason`` in OpenAI's words is mapped (``stop`` -> ``end_turn``,
  ``length`` -> ``max_tokens``, ``tool_calls`` -> ``tool_use``, ``content_filter`` ->
  ``refusal``); Anthropic's own words pass through;
* a ``Reply``'s ``reasoning`` is a ``thinking`` block streamed first (``thinking_delta``
  events, then a ``signature_delta``: :func:`thinking_signature` of its text);
* usage: ``message_start`` reports ``input_tokens`` (``Reply.prompt_tokens``, or the word count
  of the request) and ``output_tokens: 1``, plus ``Reply.extra_usage`` (cache fields);
  ``message_delta`` reports the final ``output_tokens``;
* faults: ``status`` (an Anthropic error body ``{"type": "error", "error": {...}}``),
  ``disconnect`` / ``truncate`` after ``n`` text deltas, ``malformed`` (a data line that is not
  JSON), ``error_event`` (an ``error`` event mid-stream), ``hang``.

Requests are checked as the API checks them: ``model``, ``max_tokens`` and ``messages`` are
required; roles alternate starting with ``user``; every ``tool_use`` block is answered by a
``tool_result`` in the next user message, and every ``tool_result`` answers a ``tool_use`` of the
message before; with ``thinking`` enabled, the assistant message before the last set of
``tool_result`` blocks starts with a ``thinking`` (its signature checked) or
``redacted_thinking`` block, and in any message thinking blocks come first; otherwise
``400 invalid_request_error`` (no script item consumed).

Example::

    from anthropic import Anthropic
    from copilot.testing import Reply, ScriptedAnthropicServer, ToolCall

    with ScriptedAnthropicServer() as server:
        server.enqueue(Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"})]))
        client = Anthropic(api_key="sk-test", base_url=server.base_url, max_retries=0)
        ...
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, cast

from ._http import BaseHandler, ScriptedServer
from .script import Fault, RecordedRequest, Reply, ToolCall, count_tokens, default_reply_content
from .script import prompt_token_count as _prompt_token_count
from .script import split_chunks as _split_chunks

__all__ = [
    "ERROR_TYPES",
    "ScriptedAnthropicServer",
    "message_problem",
    "thinking_problem",
    "thinking_signature",
]

#: HTTP status -> Anthropic error type
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

#: finish reasons in OpenAI's words -> Anthropic stop reasons
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def _error(status: int, message: str) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def message_problem(messages: Iterable[Any]) -> str | None:
    """What the Messages API would refuse in ``messages`` (roles, tool pairing), or None."""
    previous_role = None
    open_calls: set[str] = set()
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or m.get("role") not in ("user", "assistant"):
            return f"messages.{i}: each message needs a role of 'user' or 'assistant'"
        role = m["role"]
        if previous_role is None and role != "user":
            return "messages: the first message must use the 'user' role"
        if role == previous_role:
            return f"messages.{i}: roles must alternate between 'user' and 'assistant'"
        blocks = m.get("content")
        blocks = blocks if isinstance(blocks, list) else []
        if role == "user":
            answered = {
                b.get("tool_use_id")
                for b in blocks
                if isinstance(b, Mapping) and b.get("type") == "tool_result"
            }
            stray = answered - open_calls
            if stray:
                return (
                    f"messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{', '.join(sorted(map(str, stray)))}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
            missing = open_calls - answered
            if missing:
                return (
                    f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(sorted(missing))}. Each `tool_use` block "
                    "must have a corresponding `tool_result` block in the next message."
                )
            open_calls = set()
        else:
            open_calls = {
                b.get("id")
                for b in blocks
                if isinstance(b, Mapping) and b.get("type") == "tool_use"
            }
        previous_role = role
    if open_calls:
        return (
            "messages: the last assistant message has `tool_use` blocks without results: "
            f"{', '.join(sorted(open_calls))}"
        )
    return None


def thinking_signature(thinking: str) -> str:
    """The signature this server gives a thinking block's text (the API's is opaque too; it
    refuses a block whose text or signature was changed)."""
    return "sig-" + hashlib.sha256(thinking.encode()).hexdigest()[:32]


_THINKING_TYPES = ("thinking", "redacted_thinking")


def thinking_problem(messages: list[Any], thinking_enabled: bool) -> str | None:
    """What the Messages API would refuse in ``messages``' thinking blocks, or None.

    In every assistant message, thinking blocks come first. With thinking enabled, when the
    last message answers tool calls, the assistant message that made them starts with a
    thinking block whose signature matches its text (or a ``redacted_thinking`` block).
    """
    for i, m in enumerate(messages):
        blocks = m.get("content") if m.get("role") == "assistant" else None
        if not isinstance(blocks, list) or not blocks:
            continue
        kinds = [b.get("type") if isinstance(b, Mapping) else None for b in blocks]
        if any(k in _THINKING_TYPES for k in kinds) and kinds[0] not in _THINKING_TYPES:
            return (
                f"messages.{i}.content.0: If an assistant message contains any thinking "
                f"blocks, the first block must be thinking or redacted_thinking. Found {kinds[0]}."
            )
        for j, block in enumerate(blocks):
            if kinds[j] == "thinking" and block.get("signature") != thinking_signature(
                str(block.get("thinking", ""))
            ):
                return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
    if not thinking_enabled or len(messages) < 2:
        return None
    last, before = messages[-1], messages[-2]
    results = last.get("content") if last.get("role") == "user" else None
    if not (
        isinstance(results, list)
        and any(isinstance(b, Mapping) and b.get("type") == "tool_result" for b in results)
    ):
        return None
    blocks = before.get("content")
    first = blocks[0].get("type") if isinstance(blocks, list) and blocks else "text"
    if first not in _THINKING_TYPES:
        return (
            f"messages.{len(messages) - 2}.content.0.type: Expected `thinking` or "
            f"`redacted_thinking`, but found `{first}`. When `thinking` is enabled, a final "
            "`assistant` message must start with a thinking block (preceeding the lastmost set "
            "of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks "
            "from previous turns. To avoid this requirement, disable `thinking`."
        )
    return None


class _Handler(BaseHandler):
    server_version = "ScriptedAnthropic/1.0"

    @property
    def owner(self) -> ScriptedAnthropicServer:
        """The scripted server this handler answers for (the HTTP server holds it)."""
        return cast("ScriptedAnthropicServer", cast(Any, self.server).owner)

    request_id_header = "request-id"

    def route(self, path: str, body: Any) -> None:
        if path == "/v1/messages" and self.command == "POST":
            self._messages(body)
        else:
            self._send_json(404, _error(404, f"Not found: {self.command} {self.path}"))

    def _messages(self, req: Any) -> None:
        owner = self.owner
        if not isinstance(req, dict):
            self._send_json(400, _error(400, "the request body is not valid JSON"))
            return
        for name in ("model", "max_tokens", "messages"):
            if name not in req:
                self._send_json(400, _error(400, f"{name}: Field required"))
                return
        messages = req["messages"]
        if not isinstance(messages, list) or not messages:
            self._send_json(400, _error(400, "messages: at least one message is required"))
            return
        thinking = req.get("thinking")
        enabled = isinstance(thinking, Mapping) and thinking.get("type") == "enabled"
        problem = message_problem(messages) or thinking_problem(messages, enabled)
        if problem is not None:
            self._send_json(400, _error(400, problem))
            return
        item = owner._next_script_item()
        self._request_id = owner._next_id()
        self._wait(owner.latency)
        model = req["model"] if isinstance(req["model"], str) else ""
        prompt_tokens = _prompt_token_count(messages)
        stream = bool(req.get("stream"))
        if isinstance(item, Fault):
            self._fault(item, messages, model, stream, prompt_tokens)
            return
        reply = item if item is not None else Reply(default_reply_content(messages))
        self._reply(reply, model, stream, prompt_tokens)

    # -- answers ------------------------------------------------------------------------------

    def _message(self, model: str, usage: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self._request_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }

    def _event(self, name: str, data: dict[str, Any] | str) -> None:
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        self._send_event(text, event=name)

    def _numbered(self, reply: Reply) -> list[tuple[str, ToolCall]]:
        owner = self.owner
        return [(call.id or owner._next_call_id(), call) for call in reply.tool_calls]

    def _reply(self, reply: Reply, model: str, stream: bool, prompt_tokens: int) -> None:
        owner = self.owner
        out_model = reply.model or model
        input_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else prompt_tokens
        output_tokens = (
            reply.completion_tokens
            if reply.completion_tokens is not None
            else count_tokens(reply.content)
        )
        stop_reason = _STOP_REASONS.get(reply.reason, reply.reason)
        calls = self._numbered(reply)
        if not stream:
            message = self._message(
                out_model,
                {"input_tokens": input_tokens, "output_tokens": output_tokens, **reply.extra_usage},
            )
            if reply.reasoning:
                message["content"].append(
                    {
                        "type": "thinking",
                        "thinking": reply.reasoning,
                        "signature": thinking_signature(reply.reasoning),
                    }
                )
            if reply.content or not calls:
                message["content"].append({"type": "text", "text": reply.content})
            for call_id, call in calls:
                message["content"].append(
                    {
                        "type": "tool_use",
                        "id": call_id,
                        "name": call.name,
                        "input": json.loads(call.arguments),
                    }
                )
            message["stop_reason"] = stop_reason
            self._send_json(200, message, {"request-id": self._request_id})
            return
        delay = reply.chunk_delay if reply.chunk_delay is not None else owner.chunk_delay
        usage = {"input_tokens": input_tokens, "output_tokens": 1, **reply.extra_usage}
        self._start_stream()
        self._event(
            "message_start", {"type": "message_start", "message": self._message(out_model, usage)}
        )
        index = 0
        if reply.reasoning:
            block = {"type": "thinking", "thinking": "", "signature": ""}
            self._event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": block},
            )
            for piece in _split_chunks(reply.reasoning):
                delta = {"type": "thinking_delta", "thinking": piece}
                self._event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            delta = {"type": "signature_delta", "signature": thinking_signature(reply.reasoning)}
            self._event(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
            self._event("content_block_stop", {"type": "content_block_stop", "index": index})
            index += 1
        if reply.content or not calls:
            self._text_block(index, reply.stream_chunks(), delay)
            index += 1
        for call_id, call in calls:
            block = {"type": "tool_use", "id": call_id, "name": call.name, "input": {}}
            self._event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": block},
            )
            for piece in call.argument_chunks():
                self._wait(delay)
                delta = {"type": "input_json_delta", "partial_json": piece}
                self._event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            self._event("content_block_stop", {"type": "content_block_stop", "index": index})
            index += 1
        delta = {"stop_reason": stop_reason, "stop_sequence": None}
        self._event(
            "message_delta",
            {"type": "message_delta", "delta": delta, "usage": {"output_tokens": output_tokens}},
        )
        self._event("message_stop", {"type": "message_stop"})
        self._end_stream()

    def _text_block(
        self, index: int, chunks: list[str], delay: float, *, close: bool = True
    ) -> None:
        block = {"type": "text", "text": ""}
        self._event(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": block},
        )
        self._event("ping", {"type": "ping"})
        for chunk in chunks:
            self._wait(delay)
            delta = {"type": "text_delta", "text": chunk}
            self._event(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        if close:
            self._event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _fault(
        self, fault: Fault, messages: list[Any], model: str, stream: bool, prompt_tokens: int
    ) -> None:
        owner = self.owner
        if fault.kind == "status":
            headers = {"request-id": self._request_id}
            if fault.retry_after is not None:
                ra = fault.retry_after
                headers["retry-after"] = str(int(ra)) if float(ra).is_integer() else f"{ra:g}"
            headers.update(fault.headers)
            body = fault.body if fault.body is not None else _error(fault.code, "scripted")
            self._send_json(fault.code, body, headers)
            return
        if fault.kind == "hang":
            self._wait(fault.seconds)
            self._drop()
        if not stream:
            self._send_json(500, _error(500, f"scripted {fault.kind} fault (non-streaming)"))
            return
        usage = {"input_tokens": prompt_tokens, "output_tokens": 1}
        self._start_stream()
        self._event(
            "message_start", {"type": "message_start", "message": self._message(model, usage)}
        )
        if fault.kind == "malformed":
            self._send_event(fault.payload, event="content_block_start")
            self._end_stream()
            return
        content = fault.content if fault.content is not None else default_reply_content(messages)
        chunks = _split_chunks(content)[: fault.n_chunks]
        self._text_block(0, chunks, owner.chunk_delay, close=False)
        if fault.kind == "disconnect":
            self._drop()
        if fault.kind == "error_event":
            error = {"type": fault.error_type, "message": fault.message}
            self._event("error", {"type": "error", "error": error})
        self._end_stream()


class ScriptedAnthropicServer(ScriptedServer):
    """An Anthropic-compatible HTTP server on a daemon thread, driven by a FIFO script.

    ``base_url`` is ``http://HOST:PORT`` (the SDK appends ``/v1/messages``). Every request is
    recorded in :attr:`requests`; :attr:`message_requests` keeps the ``POST /v1/messages`` ones.
    """

    handler_class = _Handler
    endpoint: ClassVar[str] = "/v1/messages"
    id_prefix: ClassVar[str] = "msg_scripted"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        chunk_delay: float = 0.0,
    ) -> None:
        super().__init__(host, port, latency=latency, chunk_delay=chunk_delay)
        self._call_number = 0

    @property
    def message_requests(self) -> list[RecordedRequest]:
        """Recorded ``POST /v1/messages`` requests, oldest first."""
        return self._endpoint_requests()

    def _next_call_id(self) -> str:
        with self._lock:
            self._call_number += 1
            return f"toolu_{self._call_number:02d}"
