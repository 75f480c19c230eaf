"""Pick the event store: diskcache in the home directory (the default) or a PostgreSQL URL.

The spec comes from ``CopilotClient(store=...)``, else ``$COPILOT_JUPYTER_STORE``, else
``store = "..."`` in ``config.toml``, else ``"diskcache"``. A PostgreSQL URL may end in
``?pool_max_size=8&pool_timeout=30`` (pooled connections; seconds a call waits for one).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import ConfigError
from .store import EventStore
from .store_base import Store

__all__ = ["STORE_ENV", "open_store", "store_kind"]

STORE_ENV = "COPILOT_JUPYTER_STORE"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: URL query parameters the store reads itself (libpq would refuse them): the pool's size and
#: how long a call waits for a free connection before StoreTimeoutError
_POOL_PARAMETERS = {"pool_max_size": int, "pool_timeout": float}


def _pool_options(url: str) -> tuple[str, dict[str, float]]:
    """``url`` without the pool parameters, and those parameters as PostgresStore arguments."""
    parts = urlsplit(url)
    kept, options = [], {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _POOL_PARAMETERS:
            try:
                options[name.removeprefix("pool_")] = _POOL_PARAMETERS[name](value)
            except ValueError:
                raise ConfigError(f"the store URL's {name} is a number, not {value!r}") from None
        else:
            kept.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), options


def store_kind(spec: str | None) -> str:
    """``"diskcache"`` or ``"postgres"`` for a store spec; ConfigError for anything else."""
    if spec is None or spec in ("", "diskcache"):
        return "diskcache"
    if isinstance(spec, str) and spec.startswith(_POSTGRES_SCHEMES):
        return "postgres"
    raise ConfigError(
        "store is 'diskcache' (the default: the sessions/ directory of the home directory) "
        "or a PostgreSQL URL such as 'postgresql://user@host/dbname'; got a "
        f"{type(spec).__name__} that is neither"
    )


def open_store(spec: str | None, home: Path, owner: str | None = None) -> Store:
    """The store ``spec`` names, opened for ``owner``.

    ``owner`` (default ``$JUPYTERHUB_USER``, else the OS user) partitions a shared store; the
    diskcache store belongs to one user's directory and takes no owner.
    """
    if store_kind(spec) == "diskcache":
        if owner is not None:
            raise ConfigError(
                "owner= partitions a shared store; the diskcache store is one user's directory. "
                "Give store='postgresql://...' to serve several owners, or drop owner="
            )
        return EventStore(home / "sessions")
    try:
        from .store_postgres import PostgresStore
    except ImportError as exc:
        raise ConfigError(
            f"a PostgreSQL store needs psycopg and psycopg-pool ({exc}); install them with "
            "pip install 'copilot-jupyter[postgres]'"
        ) from None
    conninfo, options = _pool_options(spec)  # type: ignore[arg-type]  # str: checked above
    return PostgresStore(conninfo, owner=owner, **options)
