"""Where the data lives, and the optional config file.

The home directory is ``base_directory`` if given, else ``$COPILOT_JUPYTER_HOME``, else the
user data directory (platformdirs: ``~/.local/share/copilot-jupyter`` on Linux). It holds the
event store (``sessions/``) and an optional ``config.toml``::

    default_model = "local:smollm2"      # the model of create_session() without model=
    fallback_model = "echo"              # serves when the requested model has no provider
    store = "postgresql://copilot@db/copilot"   # a shared store (default: diskcache in sessions/)

    [routes]                             # names -> explicit ids
    "gpt-4.1" = "github:openai/gpt-4.1"

    [providers.openai]                   # non-secret provider settings
    base_url = "http://127.0.0.1:8080/v1"

    [prices."openai:gpt-4.1"]            # dollars per million tokens (copilot.prices)
    input = 2.0
    output = 8.0

API keys are never read from this file: they come from environment variables only, so the file
can be shared and a key never sits where the store, a log or a notebook could show it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import platformdirs

from .errors import ConfigError
from .prices import PriceTable

__all__ = ["Config", "home_directory", "load_config"]

HOME_ENV = "COPILOT_JUPYTER_HOME"
FALLBACK_ENV = "COPILOT_JUPYTER_FALLBACK_MODEL"
DEFAULT_MODEL_ENV = "COPILOT_JUPYTER_MODEL"
_SECRET_NAMES = frozenset(
    {"key", "api_key", "apikey", "token", "secret", "password", "authorization"}
)
_SECRET_SUFFIXES = ("_key", "_token", "_secret", "_password")


@dataclass(slots=True)
class Config:
    """The settings of ``config.toml``."""

    default_model: str | None = None
    fallback_model: str | None = None
    routes: dict[str, str] = field(default_factory=dict)
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    store: str | None = None
    #: ``[prices."provider:model"]`` tables: input/output dollars per million tokens
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)


def home_directory(base_directory: str | os.PathLike[str] | None = None) -> Path:
    """The directory that holds the store and the config file."""
    if base_directory is not None:
        return Path(base_directory).expanduser()
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("copilot-jupyter", appauthor=False))


def check_provider_settings(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Refuse secrets in provider settings: keys come from environment variables only."""
    if not isinstance(settings, Mapping):
        raise ConfigError(f"settings of provider {name!r} must be a table/dict")
    for key in settings:
        lowered = str(key).lower()
        if lowered in _SECRET_NAMES or lowered.endswith(_SECRET_SUFFIXES):
            raise ConfigError(
                f"provider {name!r}: {key!r} looks like a secret; secrets are read from "
                f"environment variables only (use '{key}_env' to name the variable)"
            )
    return dict(settings)


def _has_password(url: str) -> bool:
    """Whether a libpq URL or key=value string carries a password."""
    if "://" not in url:
        return "password" in url.lower()
    parts = urlsplit(url)
    return parts.password is not None or "password" in parse_qs(parts.query)


def load_config(home: Path) -> Config:
    """Read ``home/config.toml`` (absent: defaults). Raises :class:`ConfigError` if malformed."""
    path = home / "config.toml"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Config()
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    routes = raw.get("routes", {})
    providers = raw.get("providers", {})
    if not isinstance(routes, dict) or not all(isinstance(v, str) for v in routes.values()):
        raise ConfigError(f"{path}: [routes] maps model names to model ids (strings)")
    if not isinstance(providers, dict):
        raise ConfigError(f"{path}: [providers.NAME] tables hold provider settings")
    store = raw.get("store")
    if store is not None and not isinstance(store, str):
        raise ConfigError(f"{path}: store is a string ('diskcache' or a postgresql:// URL)")
    if store and _has_password(store):
        raise ConfigError(
            f"{path}: the store URL holds a password; secrets never go in this file: give it "
            "in PGPASSWORD or ~/.pgpass (libpq reads both)"
        )
    prices = raw.get("prices", {})
    if not isinstance(prices, dict):
        raise ConfigError(f'{path}: [prices."provider:model"] tables hold input and output prices')
    try:
        PriceTable(prices)  # a bad price fails when the client is built, not at a turn
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return Config(
        prices=prices,
        store=store,
        default_model=raw.get("default_model"),
        fallback_model=raw.get("fallback_model"),
        routes=dict(routes),
        providers={name: check_provider_settings(name, s) for name, s in providers.items()},
    )
