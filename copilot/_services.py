"""What a session core needs from its client, handed over as one explicit object.

A :class:`~copilot.session.SessionCore` never imports or reaches into the client: the client
builds one :class:`SessionServices` and passes it to every session core it opens. Imports run
one way: the faces (``client.py``, ``session.py``) -> the cores -> the store and providers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .prices import PriceTable
    from .providers.base import Provider
    from .routing import Router
    from .store import EventStore
    from .turn import RetryPolicy

__all__ = ["SessionServices"]


@dataclass(frozen=True, slots=True)
class SessionServices:
    """The client's services a session core uses; one instance per client, shared.

    ``provider(name)`` returns the provider instance named ``name`` (built on first use);
    ``close(core, timeout)`` closes a session core and forgets it in the client;
    ``tool_models()`` lists the models that can call tools.
    """

    store: EventStore
    router: Router
    provider: Callable[[str], Provider]
    retry_policy: RetryPolicy
    request_timeout: float | None
    writer_id: str
    close: Callable[[Any, float | None], Awaitable[None]]
    #: the ids of the usable models that can call tools (blocking; for error messages)
    tool_models: Callable[[], list[str]]
    #: model prices for ``assistant.usage``'s ``cost`` (None: the shipped table)
    prices: PriceTable | None = None
    #: the ids of the usable models that read images (blocking; for error messages)
    vision_models: Callable[[], list[str]] = list
    #: the per-attachment cap in bytes (``CopilotClient(max_attachment_bytes=...)``)
    max_attachment_bytes: int = 20 * 2**20
