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
* **The reply** is complete only when ``message_stop`` arrives; a stream that ends before it is
  a cut-off reply (:class:`ProviderResponseError`), as is an ``error`` event mid-stream (e.g.
  ``overloaded_error``). ``input_tokens`` counts the cached prompt tokens too
  (``input_tokens + cache_creation_input_tokens + cache_read_input_tokens``): the whole prompt
  occupies the context window. ``finish_reason`` uses the OpenAI words the rest of the package
  uses: ``end_turn`` and ``stop_sequence`` -> ``stop``, ``max_tokens`` -> ``length``,
  ``refusal`` -> ``content_filter``, ``tool_use`` -> ``tool_calls``; others pass unchanged.
* **Context windows**: every ``claude-*`` model has 200,000 tokens; other names get the class
  default (8192) unless the settings say otherwise.
* **models()** lists the model names the installed ``anthropic`` package knows, minus those it
  marks deprecated, so the list follows SDK upgrades instead of going stale here.
* **Token counting** uses :func:`estimate_tokens`: Anthropic's tokenizer is only reachable
  through a network call (``messages.count_tokens``), and counting must work offline and
  synchronously.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import typing
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ._sdk import _SDKProvider
from .base import ChatMessage, Completion, ModelRequest, StreamItem, TextDelta

__all__ = ["AnthropicProvider", "anthropic_messages"]

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 4096

#: sampling options sent only if the installed SDK still accepts them
SAMPLING_OPTIONS = ("temperature", "top_p", "top_k")

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
    messages: tuple[ChatMessage, ...],
) -> tuple[str | None, list[dict[str, str]]]:
    """Split ``messages`` into the ``system`` text and alternating user/assistant messages."""
    system: list[str] = []
    turns: list[dict[str, str]] = []
    for message in messages:
        if not message.content.strip():
            continue
        if message.role == "system":
            system.append(message.content)
        elif turns and turns[-1]["role"] == message.role:
            turns[-1]["content"] += "\n\n" + message.content
        else:
            turns.append({"role": message.role, "content": message.content})
    return ("\n\n".join(system) if system else None), turns


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
        system, messages = anthropic_messages(request.messages)
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
        for name in SAMPLING_OPTIONS:
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
        if request.timeout is not None:
            kwargs["timeout"] = self._timeout(request)
        return kwargs

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        self._check_usable(request)
        deadline = self._deadline(request)
        client = self._client_for_this_loop()
        kwargs = self._request_kwargs(request)
        response = await self._call(
            lambda: client.messages.create(**kwargs), request, deadline, started=False
        )
        parts: list[str] = []
        answered_by = ""
        stop_reason: str | None = None
        input_tokens: int | None = None
        output_tokens: int | None = None
        stopped = False
        events = response.__aiter__()
        try:
            while True:
                try:
                    event = await self._call(
                        lambda: events.__anext__(), request, deadline, started=True
                    )
                except StopAsyncIteration:
                    break
                kind = getattr(event, "type", None)
                if kind == "content_block_delta":
                    delta = getattr(event, "delta", None)
                    text = getattr(delta, "text", None)
                    if getattr(delta, "type", None) == "text_delta" and text:
                        parts.append(text)
                        yield TextDelta(text)
                elif kind == "message_start":
                    message = getattr(event, "message", None)
                    answered_by = getattr(message, "model", None) or answered_by
                    usage = getattr(message, "usage", None)
                    input_tokens = _prompt_tokens(usage) if usage is not None else None
                    output_tokens = getattr(usage, "output_tokens", None)
                elif kind == "message_delta":
                    stop_reason = (
                        getattr(getattr(event, "delta", None), "stop_reason", None) or stop_reason
                    )
                    usage = getattr(event, "usage", None)
                    if usage is not None:
                        output_tokens = getattr(usage, "output_tokens", None) or output_tokens
                        if getattr(usage, "input_tokens", None) is not None:
                            input_tokens = _prompt_tokens(usage)
                elif kind == "message_stop":
                    stopped = True
        finally:
            try:
                await response.close()
            except Exception:  # closing a finished or broken stream is best effort
                log.debug("%s: error while closing a stream", self.name, exc_info=True)
        if not stopped:
            raise self._cut_off(request, "the stream ended before message_stop")
        yield Completion(
            content="".join(parts),
            model=answered_by or request.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            finish_reason=_FINISH_REASONS.get(stop_reason or "", stop_reason),
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
