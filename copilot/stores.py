"""Pick the event store: diskcache in the home directory (the default) or a PostgreSQL URL.

The spec comes from ``CopilotClient(store=...)``, else ``$COPILOT_JUPYTER_STORE``, else
``store = "..."`` in ``config.toml``, else ``"diskcache"``.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError
from .store import EventStore
from .store_base import Store

__all__ = ["STORE_ENV", "open_store", "store_kind"]

STORE_ENV = "COPILOT_JUPYTER_STORE"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


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
    return PostgresStore(spec, owner=owner)  # type: ignore[arg-type]  # str: checked above
