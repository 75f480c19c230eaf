"""Model providers and the registry that names them.

A model id is ``provider:model`` (``openai:gpt-4.1``, ``local:smollm2``, ``echo``); see
:mod:`copilot.routing` for how bare names such as ``gpt-4.1`` are resolved. Provider modules
are imported only when first used, so a missing optional package (``anthropic``,
``llama-cpp-python``) never breaks ``import copilot``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .base import (
    Availability,
    ChatMessage,
    Completion,
    ModelRequest,
    Provider,
    StreamItem,
    TextDelta,
    ToolCallRequest,
    ToolSchema,
    estimate_tokens,
)

__all__ = [
    "PROVIDERS",
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
    "load_provider_class",
]

#: provider name -> "module:Class", imported on first use
PROVIDERS: dict[str, str] = {
    "echo": "copilot.providers.echo:EchoProvider",
    "openai": "copilot.providers.openai:OpenAIProvider",
    "github": "copilot.providers.openai:GitHubModelsProvider",
    "ollama": "copilot.providers.openai:OllamaProvider",
    "openai-compatible": "copilot.providers.openai:OpenAICompatibleProvider",
    "anthropic": "copilot.providers.anthropic:AnthropicProvider",
    "local": "copilot.providers.local:LocalProvider",
}


def load_provider_class(name: str, registry: Mapping[str, Any] = PROVIDERS) -> type[Provider]:
    """Import and return the provider class registered as ``name``."""
    target = registry.get(name)
    if target is None:
        known = ", ".join(sorted(registry))
        raise ConfigError(f"unknown provider {name!r}; known providers: {known}")
    if isinstance(target, type):
        return target
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)
