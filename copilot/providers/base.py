"""The one interface every model provider implements.

A provider turns a :class:`ModelRequest` (the provider's own model name, the chat messages,
options, the tools the model may call) into an async stream: zero or more :class:`TextDelta`,
then exactly one :class:`Completion`. A stream that ends without a ``Completion`` is a cut-off
reply, and the core never stores it as a complete answer.

Tool calling: a request carries the tools' JSON schemas (:class:`ToolSchema`); a model that
wants tools run ends its reply with a ``Completion`` whose ``tool_calls`` holds one
:class:`ToolCallRequest` per call (several per step). The core runs them and sends the next
request with the assistant message (``ChatMessage.tool_calls``) and one ``role="tool"`` message
per result (``ChatMessage.tool_call_id``); each provider writes those in its own wire format.
Providers that cannot call tools say so in :meth:`Provider.supports_tools`.

Providers raise only :mod:`copilot.errors` provider errors: third-party exceptions are
translated here, at the boundary. Retries live in the core (one policy for every provider), so
providers make exactly one attempt per call and set their SDK's own retries to zero.

Secrets (API keys) are read from the environment when the provider is built and kept only
inside the SDK client; they never enter a request object, an event, a repr or a log line.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from ..attachments import Attachment

__all__ = [
    "MESSAGE_OVERHEAD",
    "Availability",
    "ChatMessage",
    "Completion",
    "ModelRequest",
    "Provider",
    "StreamItem",
    "TextDelta",
    "ToolCallRequest",
    "ToolSchema",
    "estimate_tokens",
]

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """One tool call the model asked for.

    ``arguments`` is the JSON text exactly as the model wrote it (it may be invalid JSON: the
    tool runner answers that with a failure result the model can read).
    """

    id: str
    name: str
    arguments: str = "{}"


@dataclass(frozen=True, slots=True)
class ToolSchema:
    """A tool as the model sees it: its name, what it does and its parameters' JSON schema."""

    name: str
    description: str
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of the model context.

    An assistant message may carry the ``tool_calls`` it made (its ``content`` is then the text
    it wrote before them, often empty); a ``role="tool"`` message is the result of the call
    named by ``tool_call_id``, its ``content`` the text the model is shown.

    A user message may carry image ``attachments`` (:class:`copilot.attachments.Attachment`,
    bytes included); each provider writes them as its image parts. Text attachments are
    already in ``content``.
    """

    role: Role
    content: str
    tool_calls: tuple[ToolCallRequest, ...] = ()
    tool_call_id: str | None = None
    attachments: tuple[Attachment, ...] = ()
    #: on an assistant message that called tools: the provider's own record of the reasoning
    #: that came with the calls (:attr:`Completion.reasoning_opaque`), handed back with them
    reasoning_opaque: str | None = None


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """What the core asks of a provider for one turn.

    ``model`` is the provider's own name for the model (``gpt-4.1``, not ``openai:gpt-4.1``).
    ``options`` holds generation options such as ``temperature`` and ``max_tokens``.
    ``timeout`` bounds the whole call in seconds (None: the provider's default).
    ``tools`` are the tools the model may call in this step (empty: none; the request then
    carries no tool definitions at all).
    """

    model: str
    messages: tuple[ChatMessage, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    tools: tuple[ToolSchema, ...] = ()


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the reply's text, in order."""

    text: str


@dataclass(frozen=True, slots=True)
class Completion:
    """The end of a reply: the full text, the model that answered and the token usage.

    ``tool_calls`` holds the tools the model asked to run, in its order (``finish_reason`` is
    then ``"tool_calls"``); empty for a final answer. ``reasoning`` is the model's thinking
    text when the provider returned it (OpenAI-compatible ``reasoning_content``, Anthropic
    ``thinking`` blocks), else None. ``reasoning_opaque`` is what the provider must be handed
    back with the step's tool calls in later requests, as text only it reads (Anthropic: its
    thinking blocks with their signatures, which the API requires before the calls when
    thinking is on); None: nothing. The name is the Copilot SDK's (``reasoningOpaque``).
    """

    content: str
    model: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    tool_calls: tuple[ToolCallRequest, ...] = ()
    reasoning: str | None = None
    reasoning_opaque: str | None = None


StreamItem = TextDelta | Completion


@dataclass(frozen=True, slots=True)
class Availability:
    """Whether a provider can serve requests now, and if not, what would fix it."""

    usable: bool
    reason: str = ""


#: tokens a chat format spends per message beyond its text (role markers, separators)
MESSAGE_OVERHEAD = 4


def estimate_tokens(text: str) -> int:
    """Estimate a token count offline: one token per 4 characters, rounded up.

    This is the documented fallback where no exact tokenizer is available offline (tiktoken
    downloads its encodings on first use). English prose averages about 4 characters per
    token with the GPT and Claude tokenizers; code and non-Latin scripts run denser, so the
    core keeps a safety margin below each model's context window.
    """
    return math.ceil(len(text) / 4) if text else 0


class Provider(ABC):
    """Base class of model providers. Subclasses set ``name`` and implement :meth:`stream`.

    ``settings`` are the non-secret settings from the config file and the client's
    ``providers=`` argument (a base URL, a default context window, timeouts).
    """

    #: the provider's prefix in model ids (``openai`` in ``openai:gpt-4.1``)
    name: ClassVar[str]
    #: the pip extra or package that installs this provider's dependency, for error messages
    install_hint: ClassVar[str | None] = None
    #: context window for models the provider knows nothing specific about
    default_context_window: ClassVar[int] = 8192

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.settings: dict[str, Any] = dict(settings or {})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"

    def availability(self) -> Availability:
        """Whether this provider can serve requests now (package installed, key set)."""
        return Availability(True)

    def models(self) -> list[str]:
        """The model names this provider knows (its own names, without the prefix)."""
        return []

    def context_window(self, model: str) -> int:
        """The context window of ``model`` in tokens."""
        return int(self.settings.get("context_window", self.default_context_window))

    def supports_tools(self, model: str) -> bool:
        """Whether ``model`` can call tools through this provider (default: no)."""
        return False

    def supports_images(self, model: str) -> bool:
        """Whether ``model`` reads image attachments through this provider (default: no)."""
        return False

    def count_tokens(self, model: str, text: str) -> int:
        """Count (or estimate) the tokens ``text`` takes for ``model``."""
        return estimate_tokens(text)

    @abstractmethod
    def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        """Stream the reply: ``TextDelta`` items, then one ``Completion`` (with the tool calls
        the model asked for, if any).

        Implemented as an ``async def`` generator. Raise only ``copilot.errors`` provider errors.
        """

    async def aclose(self) -> None:
        """Release connections and other resources. Called once, on the core's event loop."""
