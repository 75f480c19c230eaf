"""The ``anthropic`` provider: Claude models through the official ``anthropic`` package.

It streams with ``AsyncAnthropic().messages.create(stream=True)`` and reads the raw Messages
API events (``message_start``, ``content_block_delta``, ``message_delta``, ``message_stop``).

Settings (``CopilotClient(providers={"anthropic": {...}})``): ``base_url`` (else the
``ANTHROPIC_BASE_URL`` environment variable, else the SDK default); ``api_key_env`` (the *name* of
the variable holding the key, default ``ANTHROPIC_API_KEY``); ``timeout`` (seconds without
progress, default 60); ``connect_timeout`` (default 5); ``max_output`` (the reply's token
limit, default 4096: the API requires one; the ``max_tokens`` option overrides it per request;
``max_tokens`` is accepted as a setting too, but the config file refuses setting names containing
"token" as possible secrets, hence ``max_output``); ``context_window`` and ``context_windows``
(``{model: tokens}``).

Decisions, documented here once (the rest is shared with the OpenAI providers through
:class:`copilot.providers._sdk._SDKProvider`: lazy client, ``max_retries=0``, timeouts,
deadline, error translation, key scrubbing):

* **Availability**: the ``anthropic`` package must be installed
  (``pip install 'copilot-jupyter[anthropic]'``) and ``ANTHROPIC_API_KEY`` set, or a base URL
  configured (an Anthropic-compatible local server needs no key; ``"not-needed"`` is sent).
* **Messages**: system messages go to the ``system`` parameter (joined by blank lines);
  messages whose text is empty or only whitespace are dropped (the API rejects them); then
  consecutive messages of the same role are merged, joined by blank lines, since the API
  requires user and assistant turns to alternate.
* **Options**: ``max_tokens`` is passed through; ``stop`` (a string or a list) becomes
  ``stop_sequences``; ``seed`` has no Anthropic equivalent and is not sent. ``temperature``,
  ``top_p`` and ``top_k`` are sent only when the installed SDK's ``messages.create`` still has
  them: recent SDKs (2.x) dropped them, as current Claude models reject sampling parameters
  with a 400, so with those SDKs they are left out (logged at DEBUG) rather than failing every
  request of a user who sets a temperature for all models.
* **reasoning_effort** turns extended thinking on: ``thinking={"type": "enabled",
  "budget_tokens": B}`` with B = 1024 / 4096 / 16384 for low / medium / high (``max_tokens``
  is raised by B when it would not exceed it; sampling options are left out, which the API
  refuses with thinking). ``thinking_delta`` text becomes :attr:`Completion.reasoning`. The
  ``thinking`` and ``redacted_thinking`` blocks themselves, signatures included, become
  :attr:`Completion.reasoning_opaque` (their JSON): a step that called tools is stored with
  them (``reasoningOpaque``), and while thinking is on each replayed tool step's assistant
  message starts with them, as the API requires of the one before the newest tool results (it
  answers 400 otherwise). With thinking off they are left out.
* **The reply** is complete only when ``message_stop`` arrives; a stream that ends before it is
  a cut-off reply (:class:`ProviderResponseError`), as is an ``error`` event mid-stream (e.g.
  ``overloaded_error``). ``input_tokens`` counts the cached prompt tokens too
  (``input_tokens + cache_creation_input_tokens + cache_read_input_tokens``): the whole prompt
  occupies the context window. ``finish_reason`` uses the OpenAI words the rest of the package
  uses: ``end_turn`` and ``stop_sequence`` -> ``stop``, ``max_tokens`` -> ``length``,
  ``refusal`` -> ``content_filter``, ``tool_use`` -> ``tool_calls``; others pass unchanged.
* **Tools** go out as ``tools=[{"name", "description", "input_schema"}]``; a ``tool_use``
  block's input arrives as ``input_json_delta`` fragments, joined per block into a
  :class:`ToolCallRequest` (``stop_reason: tool_use`` reads ``tool_calls``). Earlier calls are
  replayed as the assistant's ``tool_use`` blocks and their results as ``tool_result`` blocks
  of the next user message (merged with any text of that turn, results first).
* **Context windows**: every ``claude-*`` model has 200,000 tokens; other names get the class
  default (8192) unless the settings say otherwise.
* **models()** lists the model names the installed ``anthropic`` package knows, minus those it
  marks deprecated, so the list follows SDK upgrades instead of going stale here.
* **Token counting** uses :func:`estimate_tokens`: Anthropic's tokenizer is only reachable
  through a network call (``messages.count_tokens``), and counting must work offline and
  synchronously.
"""

from __future__ import annotations

import base64
import importlib
import inspect
import json
import logging
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from ._sdk import StreamReader, _SDKProvider
from .base import ChatMessage, Completion, ModelRequest, StreamItem, TextDelta, ToolCallRequest

__all__ = ["AnthropicProvider", "anthropic_messages"]

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 4096

#: sampling options sent only if the installed SDK still accepts them
SAMPLING_OPTIONS = ("temperature", "top_p", "top_k")

#: extended thinking budget (tokens) per ``reasoning_effort``; the API's minimum is 1024
THINKING_BUDGETS: dict[str, int] = {"low": 1024, "medium": 4096, "high": 16384}

#: context windows by model family (names match by ``-``-bounded prefix)
CLAUDE_CONTEXT_WINDOWS: dict[str, int] = {"claude": 200_000}

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "refusal": "content_filter",
    "tool_use": "tool_calls",
}


def anthropic_messages(
    messages: tuple[ChatMessage, ...], *, thinking: bool = False
) -> tuple[str | None, list[dict[str, Any]]]:
    """Split ``messages`` into the ``system`` text and alternating user/assistant messages.

    Tool calls become ``tool_use`` blocks of the assistant message; results become
    ``tool_result`` blocks of the next user message. Text-only neighbours of one role are joined
    by blank lines; a message that has blocks keeps them, in order (results before any text).
    With ``thinking`` (extended thinking on), an assistant message that called tools starts
    with the thinking blocks that came with the calls (its ``reasoning_opaque``).
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            if message.content.strip():
                system.append(message.content)
            continue
        role, content = _anthropic_content(message, thinking)
        if content is None:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] = _merge(turns[-1]["content"], content)
        else:
            turns.append({"role": role, "content": content})
    return ("\n\n".join(system) if system else None), turns


def _anthropic_content(
    message: ChatMessage, thinking: bool
) -> tuple[str, str | list[dict[str, Any]] | None]:
    """The role and content one message becomes (content None: drop it)."""
    if message.role == "tool":
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if message.content:
            block["content"] = message.content
        return "user", [block]
    if message.role == "assistant" and message.tool_calls:
        blocks: list[dict[str, Any]] = (
            _thinking_blocks(message.reasoning_opaque) if thinking else []
        )
        if message.content.strip():
            blocks.append({"type": "text", "text": message.content})
        for call in message.tool_calls:
            blocks.append(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": _input(call)}
            )
        return "assistant", blocks
    if message.attachments:
        parts: list[dict[str, Any]] = [
            {
                "type": "image",
                "source": {
                    "type": "base64",
                    "media_type": a.mime_type,
                    "data": base64.b64encode(a.data).decode("ascii"),
                },
            }
            for a in message.attachments
        ]
        if message.content.strip():
            parts.append({"type": "text", "text": message.content})
        return message.role, parts
    return message.role, (message.content if message.content.strip() else None)


#: the content blocks that carry extended thinking
_THINKING_BLOCKS = ("thinking", "redacted_thinking")


def thinking_record(blocks: list[dict[str, Any]]) -> str | None:
    """The ``reasoning_opaque`` text of a reply's thinking blocks (None: there were none)."""
    return json.dumps(blocks, ensure_ascii=False) if blocks else None


def _thinking_blocks(record: str | None) -> list[dict[str, Any]]:
    """The thinking blocks kept in ``record`` (:func:`thinking_record`); none from a record
    this provider did not write (another provider's, or damaged)."""
    if not record:
        return []
    try:
        blocks = json.loads(record)
    except ValueError:
        return []
    if not isinstance(blocks, list) or not all(
        isinstance(b, dict) and b.get("type") in _THINKING_BLOCKS for b in blocks
    ):
        return []
    return blocks


def _merge(
    first: str | list[dict[str, Any]], second: str | list[dict[str, Any]]
) -> str | list[dict[str, Any]]:
    if isinstance(first, str) and isinstance(second, str):
        return first + "\n\n" + second
    return _blocks(first) + _blocks(second)


def _blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _input(call: ToolCallRequest) -> dict[str, Any]:
    """A call's arguments as the object ``tool_use.input`` must be ({} if they never parsed:
    the call then failed, and its result says so)."""
    try:
        value = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class AnthropicProvider(_SDKProvider):
    """Anthropic's Messages API (or a server speaking it, via ``base_url``)."""

    name = "anthropic"
    install_hint = "pip install 'copilot-jupyter[anthropic]'"
    sdk_module = "anthropic"
    client_class = "AsyncAnthropic"
    default_api_key_env = "ANTHROPIC_API_KEY"
    base_url_env = "ANTHROPIC_BASE_URL"
    setup_hint = "set ANTHROPIC_API_KEY (or ANTHROPIC_BASE_URL for an Anthropic-compatible server)"
    default_context_window = 8192

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._create_parameters: frozenset[str] | None = None

    def _is_configured(self) -> bool:
        return self._key_is_set() or self._configured_base_url() is not None

    def known_context_windows(self) -> dict[str, int]:
        return dict(CLAUDE_CONTEXT_WINDOWS)

    def supports_images(self, model: str) -> bool:
        """Every Claude model reads images; the ``vision`` setting overrides."""
        if "vision" in self.settings:
            return bool(self.settings["vision"])
        return model.startswith("claude")

    def models(self) -> list[str]:
        """The model names the installed SDK knows, without those it marks deprecated."""
        if not self.sdk_installed():
            return []
        try:
            types = importlib.import_module("anthropic.types")
            names = _string_literals(types.ModelParam)
            deprecated = getattr(
                importlib.import_module("anthropic._data"), "DEPRECATED_MODELS", {}
            )
        except (ImportError, AttributeError):
            return []
        return [name for name in names if name.startswith("claude") and name not in deprecated]

    def _sdk_parameters(self) -> frozenset[str]:
        """The parameters the installed SDK's ``messages.create`` accepts."""
        if self._create_parameters is None:
            create = importlib.import_module("anthropic.resources.messages").AsyncMessages.create
            self._create_parameters = frozenset(inspect.signature(create).parameters)
        return self._create_parameters

    def _request_kwargs(self, request: ModelRequest) -> dict[str, Any]:
        """The ``messages.create`` arguments for ``request``."""
        options: Mapping[str, Any] = request.options or {}
        effort = options.get("reasoning_effort")
        thinking = THINKING_BUDGETS.get(effort) if effort is not None else None
        system, messages = anthropic_messages(request.messages, thinking=thinking is not None)
        max_tokens = options.get("max_tokens")
        if max_tokens is None:
            max_tokens = self.settings.get("max_output", self.settings.get("max_tokens"))
        if max_tokens is None:
            max_tokens = DEFAULT_MAX_TOKENS
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "max_tokens": int(max_tokens),
            "stream": True,
        }
        if system is not None:
            kwargs["system"] = system
        if thinking is not None:
            # extended thinking: the budget counts inside max_tokens, which must exceed it
            kwargs["thinking"] = {"type": "enabled", "budget_tokens": thinking}
            if kwargs["max_tokens"] <= thinking:
                kwargs["max_tokens"] = thinking + kwargs["max_tokens"]
        for name in SAMPLING_OPTIONS:
            if thinking is not None:
                break  # the API refuses temperature, top_p and top_k with thinking on
            if options.get(name) is not None:
                if name in self._sdk_parameters():
                    kwargs[name] = options[name]
                else:
                    log.debug(
                        "%s: option %r is not sent: the SDK no longer has it", self.name, name
                    )
        stop = options.get("stop")
        if stop:
            kwargs["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        if request.tools:
            kwargs["tools"] = [
                {
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": dict(tool.parameters),
                }
                for tool in request.tools
            ]
        if request.timeout is not None:
            kwargs["timeout"] = self._timeout(request)
        return kwargs

    def _open_stream(self, client: Any, kwargs: dict[str, Any]) -> Any:
        return client.messages.create(**kwargs)

    def _reader(self, request: ModelRequest) -> StreamReader:
        return _MessagesReader()


class _MessagesReader(StreamReader):
    """Reads raw Messages API events: text deltas, ``tool_use`` blocks (their input streamed
    as ``input_json_delta`` fragments), usage and the stop reason."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.answered_by = ""
        self.stop_reason: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.stopped = False
        #: block index -> [id, name, input fragments]
        self.calls: dict[int, list[Any]] = {}
        #: extended thinking text, in order
        self.reasoning: list[str] = []
        #: block index -> a thinking or redacted_thinking block as the API sent it (the
        #: thinking text as a list of its deltas until the end)
        self.thinking: dict[int, dict[str, Any]] = {}

    def feed(self, event: Any) -> Iterable[StreamItem]:
        kind = getattr(event, "type", None)
        if kind == "content_block_delta":
            delta = getattr(event, "delta", None)
            delta_type = getattr(delta, "type", None)
            text = getattr(delta, "text", None)
            if delta_type == "text_delta" and text:
                self.parts.append(text)
                return (TextDelta(text),)
            if delta_type == "thinking_delta":
                piece = getattr(delta, "thinking", "") or ""
                self.reasoning.append(piece)
                block = self.thinking.get(getattr(event, "index", -1))
                if block is not None and block["type"] == "thinking":
                    block["thinking"].append(piece)
                return ()
            if delta_type == "signature_delta":
                block = self.thinking.get(getattr(event, "index", -1))
                if block is not None and block["type"] == "thinking":
                    block["signature"] += getattr(delta, "signature", "") or ""
                return ()
            call = self.calls.get(getattr(event, "index", -1))
            if delta_type == "input_json_delta" and call is not None:
                call[2].append(getattr(delta, "partial_json", "") or "")
        elif kind == "content_block_start":
            block = getattr(event, "content_block", None)
            block_type = getattr(block, "type", None)
            if block_type == "tool_use":
                self.calls[event.index] = [block.id, block.name, []]
            elif block_type == "thinking":
                self.thinking[event.index] = {
                    "type": "thinking",
                    "thinking": [getattr(block, "thinking", "") or ""],
                    "signature": getattr(block, "signature", "") or "",
                }
            elif block_type == "redacted_thinking":
                self.thinking[event.index] = {
                    "type": "redacted_thinking",
                    "data": getattr(block, "data", "") or "",
                }
        elif kind == "message_start":
            message = getattr(event, "message", None)
            self.answered_by = getattr(message, "model", None) or self.answered_by
            usage = getattr(message, "usage", None)
            self.input_tokens = _prompt_tokens(usage) if usage is not None else None
            self.output_tokens = getattr(usage, "output_tokens", None)
        elif kind == "message_delta":
            delta = getattr(event, "delta", None)
            self.stop_reason = getattr(delta, "stop_reason", None) or self.stop_reason
            usage = getattr(event, "usage", None)
            if usage is not None:
                self.output_tokens = getattr(usage, "output_tokens", None) or self.output_tokens
                if getattr(usage, "input_tokens", None) is not None:
                    self.input_tokens = _prompt_tokens(usage)
        elif kind == "message_stop":
            self.stopped = True
        return ()

    def cut_off(self) -> str | None:
        return None if self.stopped else "the stream ended before message_stop"

    def completion(self, request: ModelRequest) -> Completion:
        calls = tuple(
            ToolCallRequest(id, name, "".join(parts) or "{}")
            for _, (id, name, parts) in sorted(self.calls.items())
        )
        return Completion(
            content="".join(self.parts),
            model=self.answered_by or request.model,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            finish_reason=_FINISH_REASONS.get(self.stop_reason or "", self.stop_reason),
            tool_calls=calls,
            reasoning="".join(self.reasoning) or None,
            reasoning_opaque=thinking_record(
                [
                    {**b, "thinking": "".join(b["thinking"])} if b["type"] == "thinking" else b
                    for _, b in sorted(self.thinking.items())
                ]
            ),
        )


def _prompt_tokens(usage: Any) -> int | None:
    """The whole prompt's tokens: uncached input plus cache writes and reads."""
    base = getattr(usage, "input_tokens", None)
    if base is None:
        return None
    try:
        cached = int(getattr(usage, "cache_creation_input_tokens", None) or 0)
        cached += int(getattr(usage, "cache_read_input_tokens", None) or 0)
        return int(base) + cached
    except (TypeError, ValueError):
        return None


def _string_literals(annotation: Any) -> list[str]:
    """Every string in the ``Literal[...]`` parts of a type annotation, in order."""
    if isinstance(annotation, str):
        return [annotation]
    found: list[str] = []
    for arg in typing.get_args(annotation):
        if isinstance(arg, str) or typing.get_args(arg):
            found += _string_literals(arg)
    return found
