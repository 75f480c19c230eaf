"""Routing: from the model name a user writes to a provider and that provider's model name.

Resolution of a model string, in order:

1. **Routes** (``CopilotClient(routes=...)`` over the ``[routes]`` table of the config file) map
   a name to another: ``{"gpt-4.1": "github:openai/gpt-4.1"}``.
2. **Explicit ids** ``provider:model`` name the provider (``ollama:llama3.2:3b`` splits at the
   first colon; a prefix that is not a provider's name is part of a bare name).
3. **Bare names** go to their family's providers, the first usable one winning: ``gpt-*``,
   ``o1``/``o3``/``o4*`` to ``openai`` then ``github``; ``claude-*`` to ``anthropic``;
   ``smollm2`` to ``local``; ``echo`` to ``echo``; anything else to ``ollama``.
4. **Fallback.** If no candidate is usable and a fallback model is set (argument, config, or
   ``COPILOT_JUPYTER_FALLBACK_MODEL``), the fallback serves and the session records a
   ``session.warning``. Otherwise :class:`UnroutableModelError` (a
   :class:`~copilot.errors.ModelNotAvailableError`) says what would make the model usable
   (which variable to set, which extra to install).

A name that is not a known model id but close to one (``gpt4.1``) gets a suggestion first,
``did you mean 'gpt-4.1'?``, from :data:`KNOWN_MODELS` and the configured routes
(:func:`suggest_models`, by :mod:`difflib`), both in the error and in the fallback's warning.
The error keeps its parts (``detail``, ``reasons``, ``suggestions``) apart from the hint in API
terms, so the magics and the CLI can phrase their own hints.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from .errors import ConfigError, ModelNotAvailableError
from .providers import PROVIDERS
from .providers.base import Availability

__all__ = [
    "KNOWN_MODELS",
    "Route",
    "Router",
    "UnroutableModelError",
    "candidates_for",
    "suggest_models",
]

#: model names a user is likely to mean (the suggestions for a typo come from these and the
#: configured routes); bare names as users write them, resolved by the families below
KNOWN_MODELS: tuple[str, ...] = (
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-5",
    "gpt-5-mini",
    "o3",
    "o3-mini",
    "o4-mini",
    "claude-sonnet-4",
    "claude-sonnet-4-5",
    "claude-opus-4",
    "claude-opus-4-1",
    "claude-3-5-haiku-latest",
    "smollm2",
    "local:smollm2",
    "echo",
)
#: how close a name must be to a known one to be suggested (difflib's ratio, 0..1)
_SUGGEST_CUTOFF = 0.75

_FAMILIES: list[tuple[re.Pattern[str], tuple[str, ...]]] = [
    (re.compile(r"^(gpt-|chatgpt-|o[134](-|$))"), ("openai:{m}", "github:openai/{m}")),
    (re.compile(r"^claude-"), ("anthropic:{m}",)),
    (re.compile(r"^smollm2$"), ("local:smollm2",)),
    (re.compile(r"^echo$"), ("echo:echo",)),
]
_DEFAULT_FAMILY = ("ollama:{m}",)
_MAX_ALIAS_HOPS = 8


@dataclass(frozen=True, slots=True)
class Route:
    """Where a model string leads: ``provider`` serves ``name``; ``fallback`` if it stands in."""

    requested: str
    provider: str
    name: str
    fallback: bool = False
    warning: str | None = None

    @property
    def model_id(self) -> str:
        """The explicit id of the model that serves, e.g. ``openai:gpt-4.1`` (``echo`` alone)."""
        return "echo" if self.provider == "echo" else f"{self.provider}:{self.name}"


def _split(model: str, providers: Collection[str]) -> tuple[str, str] | None:
    provider, sep, name = model.partition(":")
    if sep and provider in providers and name:
        return provider, name
    return None


def candidates_for(
    model: str,
    routes: Mapping[str, str] | None = None,
    providers: Collection[str] = PROVIDERS.keys(),
) -> list[tuple[str, str]]:
    """The (provider, name) pairs that could serve ``model``, in order of preference.

    ``providers`` are the provider names an explicit ``provider:model`` id may use.
    """
    routes = routes or {}
    seen = set()
    while model in routes:
        if model in seen or len(seen) > _MAX_ALIAS_HOPS:
            raise ConfigError(f"the routes loop on {model!r}; fix the [routes] table")
        seen.add(model)
        model = routes[model]
    explicit = _split(model, providers)
    if explicit is not None:
        return [explicit]
    templates = next((t for pattern, t in _FAMILIES if pattern.search(model)), _DEFAULT_FAMILY)
    pairs = (_split(t.format(m=model), providers) for t in templates)
    return [p for p in pairs if p is not None]


def suggest_models(model: str, known: Iterable[str] = KNOWN_MODELS) -> list[str]:
    """Known model names close to ``model`` (a typo), best first; none if ``model`` is known.

    >>> suggest_models("gpt4.1")
    ['gpt-4.1']
    >>> suggest_models("gpt-4.1")
    []
    """
    names = list(dict.fromkeys(known))
    if model in names:
        return []
    folded = {name.lower(): name for name in names}
    matches = difflib.get_close_matches(model.lower(), folded, n=3, cutoff=_SUGGEST_CUTOFF)
    return [folded[match] for match in matches]


class UnroutableModelError(ModelNotAvailableError):
    """No provider can serve ``model`` now: the facts apart from the hint in API terms.

    ``str(error)`` is the whole message for API users. ``detail`` is the message without the
    API's fallback hint (``CopilotClient(fallback_model=...)``); ``reasons`` holds each
    candidate provider's reason; ``suggestions`` the close known names (a typo). A surface
    that is not the API (the magics, the CLI) shows ``detail`` and its own hint.
    """

    #: the fallback hint in API terms (what ``str(error)`` ends with)
    API_HINT = (
        "Or set a fallback: CopilotClient(fallback_model=...) or COPILOT_JUPYTER_FALLBACK_MODEL "
        "(e.g. 'local:smollm2' or 'echo')"
    )

    def __init__(self, model: str, reasons: list[str], suggestions: list[str]) -> None:
        self.reasons = list(reasons)
        self.suggestions = list(suggestions)
        self.detail = f"model {model!r} is not available: {_why(reasons, suggestions)}"
        super().__init__(f"{self.detail}. {self.API_HINT}", model=model)


def _why(reasons: list[str], suggestions: list[str]) -> str:
    """Why a model is not available: a suggestion first (a typo), then each provider's reason."""
    why = "; ".join(reasons) or "no provider serves this name"
    if not suggestions:
        return why
    names = " or ".join(repr(name) for name in suggestions)
    return f"did you mean {names}? Otherwise: {why}"


class Router:
    """Resolves model strings against the providers' availability.

    ``availability`` is a function from provider name to :class:`Availability` (the client
    asks its provider instances, so tests and configuration see the same answer);
    ``providers`` is the live collection of provider names (the client's registry, which
    ``register_provider`` extends).
    """

    def __init__(
        self,
        availability: Callable[[str], Availability],
        routes: Mapping[str, str] | None = None,
        fallback_model: str | None = None,
        providers: Collection[str] = PROVIDERS.keys(),
    ) -> None:
        self._availability = availability
        self._providers = providers
        self.routes = dict(routes or {})
        self.fallback_model = fallback_model

    def resolve(self, model: str) -> Route:
        """Pick the provider that serves ``model`` now, or the fallback, or raise."""
        if not isinstance(model, str) or not model.strip():
            raise ModelNotAvailableError("a model name is a non-empty string", model=None)
        candidates = candidates_for(model, self.routes, self._providers)
        reasons = []
        for provider, name in candidates:
            status = self._availability(provider)
            if status.usable:
                return Route(model, provider, name)
            reasons.append(f"{provider}: {status.reason}")
        suggestions = suggest_models(model, [*KNOWN_MODELS, *self.routes])
        if self.fallback_model and self.fallback_model != model:
            why = _why(reasons, suggestions)
            target = self.resolve(self.fallback_model)
            warning = (
                f"model {model!r} is not available ({why}); "
                f"using the fallback model {target.model_id!r}"
            )
            return Route(model, target.provider, target.name, fallback=True, warning=warning)
        raise UnroutableModelError(model, reasons, suggestions)
