"""OpenAI-protocol providers: ``openai``, ``github``, ``ollama`` and ``openai-compatible``.

All four talk the Chat Completions wire format through the official ``openai`` package
(``openai.AsyncOpenAI``, ``stream=True`` with ``stream_options={"include_usage": True}``) and
differ only in where they connect and which environment variable holds the key:

* ``openai``: base URL from the ``base_url`` setting, else ``OPENAI_BASE_URL``, else the SDK
  default (api.openai.com); key ``OPENAI_API_KEY``; usable when the key is set *or* a base URL
  is configured (a local server needs no key).
* ``github`` (GitHub Models, models named ``openai/gpt-4.1``): base URL from the setting, else
  ``https://models.github.ai/inference``; key ``GITHUB_TOKEN``; usable when the key is set.
* ``ollama``: base URL from the setting, else ``OLLAMA_HOST`` (``/v1`` appended); no key needed
  (``OLLAMA_API_KEY`` is sent if set, for a proxy in front); usable when one of the two is set.
* ``openai-compatible``: base URL from the setting, else ``OPENAI_COMPATIBLE_BASE_URL``; key
  ``OPENAI_COMPATIBLE_API_KEY``, optional; usable when a base URL is set.

Settings (``CopilotClient(providers={"openai": {...}})``): ``base_url``; ``api_key_env`` (the
*name* of the environment variable holding the key; the key itself is never a setting);
``timeout`` (seconds without progress: to the first byte and between chunks, default 60);
``connect_timeout`` (default 5, so a refused or unroutable host is reported within seconds);
``context_window`` and ``context_windows`` (``{model: tokens}``); ``stream_usage`` (default True:
set False for an old local server that rejects ``stream_options``).

Decisions, documented here once:

* **Secrets.** The key is read from the environment when the SDK client is built (lazily, on
  the first :meth:`stream`, on the event loop that uses it) and passed straight into it; it is
  stored nowhere else, is absent from ``repr()``, and every error message is scrubbed of it.
  A local server needs no key: when only a base URL is configured the placeholder
  ``"not-needed"`` is sent.
* **One attempt.** ``max_retries=0``: the core owns retries.
* **Timeouts.** ``timeout`` bounds inactivity, not the whole reply (long answers may stream
  for minutes). ``ModelRequest.timeout``, when given, is a hard deadline for the whole call and
  also caps the inactivity timeout.
* **Errors** are translated once, here: SDK timeouts -> :class:`ProviderTimeoutError`;
  connection failures before the response -> :class:`ProviderConnectionError`; 429 ->
  :class:`RateLimitError` with ``retry_after`` from ``retry-after-ms`` or ``Retry-After``
  (seconds or an HTTP date); 401/403 -> :class:`AuthenticationError` naming the key variable;
  other statuses -> :class:`ProviderStatusError`; a connection lost mid-stream, a chunk that is
  not JSON or a stream that ends without a ``finish_reason`` -> :class:`ProviderResponseError`
  ("the reply was cut off ...").
* **Tools** go out as ``tools=[{"type": "function", ...}]``; the streamed ``tool_calls``
  fragments are joined per ``index`` (arguments arrive split over many chunks, several calls
  per step) into :class:`ToolCallRequest` items of the ``Completion``. Earlier calls and
  results are replayed as the assistant message's ``tool_calls`` and ``role: "tool"``
  messages. Every model is assumed able to call tools; the ``tools`` setting (False) says
  otherwise for a compatible server whose model cannot.
* **Token counting** uses :func:`estimate_tokens`, never ``tiktoken``: tiktoken downloads its
  encodings on first use (which hangs or fails with the network closed), and the GitHub, Ollama
  and compatible providers serve models whose tokenizers tiktoken does not know anyway.
* **reasoning_effort** (``low``, ``medium``, ``high``) is sent as ``reasoning_effort``, except
  to OpenAI's own API for a model outside the reasoning families (o1, o3, o4, gpt-5), which
  would reject it. Thinking text streamed as ``reasoning_content`` or ``reasoning`` deltas
  becomes :attr:`Completion.reasoning`.
* **max_tokens** is sent as ``max_completion_tokens`` to OpenAI's own API (where ``max_tokens``
  is deprecated and rejected by the o-series models) and as ``max_tokens`` to every other
  endpoint (local servers and GitHub Models understand it). Options passed through:
  ``temperature``, ``max_tokens``, ``top_p``, ``seed``, ``stop`` (and an explicit
  ``max_completion_tokens``); other options are not sent.
* **Context windows**: ``context_windows[model]`` setting, then the ``context_window`` setting,
  then the table of known OpenAI models (dated snapshots match their family by prefix), then
  the class default (8192). The ``github`` provider defaults to 8000 for every model, since
  GitHub Models' free tier caps a request at 8000 input tokens whatever the model's window;
  paid users can raise it with the settings. ``ollama`` defaults to 4096, Ollama's default
  ``num_ctx``, which its OpenAI endpoint cannot change (longer prompts are cut silently).
* **ollama** is usable only when ``OLLAMA_HOST`` or a ``base_url`` setting says where the server
  is: reporting a provider as usable just because a default port might be open would make
  routing pick it and fail later. ``OLLAMA_HOST`` takes Ollama's own forms (``host``,
  ``host:port``, ``http://host:port``); the port defaults to 11434 and ``/v1`` is appended.
  An Ollama URL without a path gets ``/v1`` too, whichever way it was given.
* **openai-compatible** exists so that a local server (llama.cpp, vLLM, LM Studio) and the real
  OpenAI API can be used side by side in one client (``openai:gpt-4.1`` and
  ``openai-compatible:qwen3``): a ``base_url`` on ``openai`` covers the single-endpoint case.
  Its key variable is ``OPENAI_COMPATIBLE_API_KEY``, optional.

:class:`copilot.providers._sdk._SDKProvider` holds what the providers built on the
Stainless-generated SDKs share (client life cycle, timeouts, error translation);
:mod:`copilot.providers.anthropic` uses it too.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from ._sdk import StreamReader, _SDKProvider, parse_retry_after
from .base import ChatMessage, Completion, ModelRequest, StreamItem, TextDelta, ToolCallRequest

__all__ = [
    "GitHubModelsProvider",
    "OllamaProvider",
    "OpenAICompatibleProvider",
    "OpenAIProvider",
    "openai_messages",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

#: context windows of OpenAI models; dated snapshots match by the longest prefix
OPENAI_CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-5": 400_000,
    "gpt-5-mini": 400_000,
    "gpt-5-nano": 400_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.1-mini": 1_047_576,
    "gpt-4.1-nano": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
    "chatgpt-4o-latest": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4": 8192,
    "o1": 200_000,
    "o1-mini": 128_000,
    "o3": 200_000,
    "o3-mini": 200_000,
    "o3-pro": 200_000,
    "o4-mini": 200_000,
    "gpt-3.5-turbo": 16_385,
}


#: OpenAI model families that accept image parts
VISION_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4-turbo", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")


def openai_messages(messages: tuple[ChatMessage, ...]) -> list[dict[str, Any]]:
    """``messages`` in the Chat Completions wire format.

    An assistant message that called tools carries ``tool_calls`` (its content ``None`` when it
    wrote no text); each result is a ``{"role": "tool", "tool_call_id": ...}`` message.
    """
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
        elif m.role == "assistant" and m.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": m.content or None,
                    "tool_calls": [
                        {
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        }
                        for call in m.tool_calls
                    ],
                }
            )
        elif m.attachments:
            out.append({"role": m.role, "content": openai_content_parts(m)})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def openai_content_parts(message: ChatMessage) -> list[dict[str, Any]]:
    """A message with images as Chat Completions content parts: its text, then one
    ``image_url`` part per image, a base64 ``data:`` URI."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}]
    for attachment in message.attachments:
        encoded = base64.b64encode(attachment.data).decode("ascii")
        url = f"data:{attachment.mime_type};base64,{encoded}"
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


class OpenAIProvider(_SDKProvider):
    """OpenAI's Chat Completions API (or any server speaking it, via ``base_url``)."""

    name = "openai"
    install_hint = "pip install openai"
    sdk_module = "openai"
    client_class = "AsyncOpenAI"
    default_api_key_env = "OPENAI_API_KEY"
    base_url_env = "OPENAI_BASE_URL"
    setup_hint = "set OPENAI_API_KEY (or OPENAI_BASE_URL for a local server)"
    default_context_window = 8192

    def _is_configured(self) -> bool:
        # a local server needs no key: a configured base URL is enough
        return self._key_is_set() or self._configured_base_url() is not None

    def supports_images(self, model: str) -> bool:
        """The ``vision`` setting if given; else the families that read images (gpt-4o,
        gpt-4.1, gpt-4-turbo, gpt-5, o1/o3/o4) for OpenAI and GitHub Models, none for other
        OpenAI-protocol servers (their models vary: set ``vision``)."""
        if "vision" in self.settings:
            return bool(self.settings["vision"])
        if self.name not in ("openai", "github"):
            return False
        return model.startswith(VISION_PREFIXES)

    def known_context_windows(self) -> dict[str, int]:
        return dict(OPENAI_CONTEXT_WINDOWS)

    def _official_api(self) -> bool:
        """Whether requests go to OpenAI's own API."""
        url = self.base_url
        return url is None or urlsplit(url).hostname == "api.openai.com"

    @staticmethod
    def _messages(messages: tuple[ChatMessage, ...]) -> list[dict[str, Any]]:
        return openai_messages(messages)

    def _request_kwargs(self, request: ModelRequest) -> dict[str, Any]:
        """The ``chat.completions.create`` arguments for ``request``."""
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": self._messages(request.messages),
            "stream": True,
        }
        if self.settings.get("stream_usage", True):
            kwargs["stream_options"] = {"include_usage": True}
        options = request.options or {}
        for name in ("temperature", "top_p", "seed", "stop", "max_completion_tokens"):
            if options.get(name) is not None:
                kwargs[name] = options[name]
        if options.get("max_tokens") is not None:
            param = "max_completion_tokens" if self._official_api() else "max_tokens"
            kwargs.setdefault(param, options["max_tokens"])
        effort = options.get("reasoning_effort")
        if effort is not None:
            # OpenAI's own API rejects it for models that do not reason (gpt-4.1: 400); any
            # other endpoint gets it as asked (compatible servers take or ignore it)
            if not self._official_api() or is_reasoning_model(request.model):
                kwargs["reasoning_effort"] = effort
            else:
                log.debug(
                    "%s: reasoning_effort not sent: %s does not reason", self.name, request.model
                )
        if request.tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": dict(tool.parameters),
                    },
                }
                for tool in request.tools
            ]
        if request.timeout is not None:
            kwargs["timeout"] = self._timeout(request)
        return kwargs

    def _open_stream(self, client: Any, kwargs: dict[str, Any]) -> Any:
        # The messages and tools travel in ``extra_body``, as they are: they are JSON-ready
        # dicts already, and the SDK's request transform walks each against its TypedDict
        # annotations before sending the same JSON (openai 3.57: 0.18 ms for one message,
        # 4.2 ms for 41, ~32 ms for 300, every turn). ``extra_body`` replaces the body's keys
        # (the SDK's documented way to send fields as given), so the request is the same.
        given = {key: kwargs[key] for key in _SENT_AS_GIVEN if key in kwargs}
        rest = {key: value for key, value in kwargs.items() if key not in given}
        return client.chat.completions.create(**rest, messages=[], extra_body=given)

    def _reader(self, request: ModelRequest) -> StreamReader:
        return _ChatCompletionsReader()


#: request fields sent as given, past the SDK's transform (see OpenAIProvider._open_stream)
_SENT_AS_GIVEN = ("messages", "tools")


class _ChatCompletionsReader(StreamReader):
    """Reads ``chat.completion.chunk`` objects: content deltas, and ``tool_calls`` deltas
    (each call's id and name in its first fragment, its arguments split over the following
    ones, several calls told apart by ``index``)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.answered_by = ""
        self.finish_reason: str | None = None
        self.usage: Any = None
        #: index -> [id, name, argument fragments]
        self.calls: dict[int, list[Any]] = {}
        #: reasoning text fragments (``reasoning_content`` or ``reasoning`` deltas)
        self.reasoning: list[str] = []

    def feed(self, chunk: Any) -> Iterable[StreamItem]:
        self.answered_by = getattr(chunk, "model", None) or self.answered_by
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        items: list[StreamItem] = []
        for choice in getattr(chunk, "choices", None) or ():
            if getattr(choice, "index", 0) != 0:
                continue
            delta = getattr(choice, "delta", None)
            text = getattr(delta, "content", None) if delta is not None else None
            thinking = _reasoning_text(delta)
            if thinking:
                self.reasoning.append(thinking)
            if text:
                self.parts.append(text)
                items.append(TextDelta(text))
            for fragment in (
                getattr(delta, "tool_calls", None) if delta is not None else None
            ) or ():
                self._tool_fragment(fragment)
            if getattr(choice, "finish_reason", None):
                self.finish_reason = choice.finish_reason
        return items

    def _tool_fragment(self, fragment: Any) -> None:
        index = getattr(fragment, "index", None)
        if index is None:  # some compatible servers send whole calls without an index
            index = len(self.calls)
        call = self.calls.setdefault(index, ["", "", []])
        if getattr(fragment, "id", None):
            call[0] = fragment.id
        function = getattr(fragment, "function", None)
        if function is not None:
            if getattr(function, "name", None) and not call[1]:
                call[1] = function.name
            if getattr(function, "arguments", None):
                call[2].append(function.arguments)

    def cut_off(self) -> str | None:
        return (
            None if self.finish_reason is not None else "the stream ended without a finish_reason"
        )

    def completion(self, request: ModelRequest) -> Completion:
        usage = self.usage
        calls = tuple(
            ToolCallRequest(id or f"call_{index}", name, "".join(parts) or "{}")
            for index, (id, name, parts) in sorted(self.calls.items())
        )
        return Completion(
            content="".join(self.parts),
            model=self.answered_by or request.model,
            input_tokens=getattr(usage, "prompt_tokens", None) if usage is not None else None,
            output_tokens=getattr(usage, "completion_tokens", None) if usage is not None else None,
            finish_reason=self.finish_reason,
            tool_calls=calls,
            reasoning="".join(self.reasoning) or None,
        )


def _reasoning_text(delta: Any) -> str | None:
    """The thinking text of a chunk's delta: ``reasoning_content`` (DeepSeek, llama.cpp, vLLM)
    or ``reasoning`` (OpenRouter, Ollama); the SDK keeps such unknown fields as extras."""
    if delta is None:
        return None
    # The SDK's deltas are pydantic models: declared fields in __dict__, unknown ones in
    # model_extra. Looking there is a tenth of the cost of getattr on a missing name (pydantic
    # raises AttributeError inside), paid for every chunk; other objects take the getattr path.
    extra = getattr(delta, "__pydantic_extra__", None)
    fields = getattr(delta, "__dict__", None) if extra is not None else None
    for name in ("reasoning_content", "reasoning"):
        if fields is not None:
            value = fields.get(name)
            if value is None:
                value = extra.get(name)
        else:
            value = getattr(delta, name, None)
            if value is None:
                value = (getattr(delta, "model_extra", None) or {}).get(name)
        if isinstance(value, str) and value:
            return value
    return None


def is_reasoning_model(model: str) -> bool:
    """Whether an OpenAI model takes ``reasoning_effort`` (the o-series and gpt-5 families)."""
    name = model.rsplit("/", 1)[-1]
    return name.startswith(("o1", "o3", "o4", "gpt-5"))


class GitHubModelsProvider(OpenAIProvider):
    """GitHub Models (``https://models.github.ai/inference``), models named ``openai/gpt-4.1``."""

    name = "github"
    default_api_key_env = "GITHUB_TOKEN"
    base_url_env = None
    default_base_url = "https://models.github.ai/inference"
    setup_hint = "set GITHUB_TOKEN (a GitHub token with the models:read permission)"
    # the free tier caps every request at 8000 input tokens, whatever the model's window
    default_context_window = 8000

    def _is_configured(self) -> bool:
        return self._key_is_set()

    def known_context_windows(self) -> dict[str, int]:
        return {}

    def models(self) -> list[str]:
        return ["openai/gpt-4.1", "openai/gpt-4.1-mini", "openai/gpt-4o", "openai/gpt-4o-mini"]


def _ollama_url(value: str) -> str:
    """Normalise ``OLLAMA_HOST`` forms (``host``, ``host:port``, ``http://host:port/path``).

    Like Ollama's own clients: without a scheme the URL is ``http`` on port 11434; with a scheme
    and no port, the scheme's port. A URL without a path gets ``/v1``.
    """
    value = value.strip().rstrip("/")
    if "://" not in value:
        value = "http://" + value
        if urlsplit(value).port is None:
            netloc = urlsplit(value).netloc
            value = value.replace(netloc, f"{netloc}:11434", 1)
    parts = urlsplit(value)
    netloc = parts.netloc
    if parts.hostname == "0.0.0.0":  # a bind-all address (OLLAMA_HOST=0.0.0.0): connect locally
        netloc = netloc.replace("0.0.0.0", "127.0.0.1", 1)
    path = parts.path.rstrip("/") or "/v1"
    return f"{parts.scheme}://{netloc}{path}"


class OllamaProvider(OpenAIProvider):
    """A local Ollama server through its OpenAI-compatible ``/v1`` endpoint."""

    name = "ollama"
    default_api_key_env = "OLLAMA_API_KEY"  # optional: only a proxy in front would need one
    base_url_env = "OLLAMA_HOST"
    setup_hint = (
        "set OLLAMA_HOST (e.g. http://127.0.0.1:11434) or "
        "providers={'ollama': {'base_url': 'http://127.0.0.1:11434/v1'}}"
    )
    default_base_url = "http://127.0.0.1:11434/v1"  # only used if stream() is called anyway
    default_context_window = 4096  # Ollama's default num_ctx

    def _configured_base_url(self) -> str | None:
        url = super()._configured_base_url()
        return _ollama_url(url) if url else None

    def _is_configured(self) -> bool:
        return self._configured_base_url() is not None

    def known_context_windows(self) -> dict[str, int]:
        return {}


class OpenAICompatibleProvider(OpenAIProvider):
    """A second OpenAI-protocol endpoint (llama.cpp, vLLM, LM Studio ...) next to ``openai``."""

    name = "openai-compatible"
    default_api_key_env = "OPENAI_COMPATIBLE_API_KEY"  # optional
    base_url_env = "OPENAI_COMPATIBLE_BASE_URL"
    setup_hint = (
        "set OPENAI_COMPATIBLE_BASE_URL (e.g. http://127.0.0.1:8080/v1) or "
        "providers={'openai-compatible': {'base_url': ...}}"
    )

    def _is_configured(self) -> bool:
        return self._configured_base_url() is not None

    def known_context_windows(self) -> dict[str, int]:
        return {}
