"""The client: sessions in a store, models through providers, one private event loop.

:class:`ClientCore` holds the logic and runs on the private loop; :class:`CopilotClient` (sync,
as the seed shows) and :class:`AsyncCopilotClient` (awaitable, for code already inside an
event loop) only wait on it.
"""

from __future__ import annotations

import asyncio
import enum
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ._loop import LoopThread
from .config import (
    DEFAULT_MODEL_ENV,
    FALLBACK_ENV,
    check_provider_settings,
    home_directory,
    load_config,
)
from .errors import CopilotError, InvalidArgumentError, SessionNotFoundError
from .events import Event, EventType, new_id, utc_now
from .providers import PROVIDERS, load_provider_class
from .providers.base import Availability, Provider
from .routing import Router
from .session import AsyncSession, Session, SessionCore
from .stores import STORE_ENV, open_store, store_kind
from .turn import RetryPolicy
from .validation import validate_session_id

__all__ = ["AsyncCopilotClient", "ClientCore", "ClientState", "CopilotClient"]

#: the embedded offline model: the default when nothing else is configured
EMBEDDED_MODEL = "local:smollm2"

#: writer ids of the clients started in this process (a turn they own is not "interrupted")
_LIVE_WRITERS: set[str] = set()


class ClientState(enum.Enum):
    """The life of a client."""

    NEW = "new"  # constructed; start() or the first call starts it
    STARTED = "started"  # the loop runs; sessions can be opened
    # stop() ran: sessions are closed, the loop is gone. start() or the next call starts it
    # again, so the seed's blocks run in order in one notebook (block 2 reuses the client
    # that block 1 stopped), as with the official SDK's auto-start.
    STOPPED = "stopped"


class ClientCore:
    """The client's logic, on its private loop: the store, the router, providers, sessions."""

    def __init__(
        self,
        home: Path,
        *,
        default_model: str,
        fallback_model: str | None,
        routes: Mapping[str, str],
        provider_settings: Mapping[str, Mapping[str, Any]],
        retry_policy: RetryPolicy,
        request_timeout: float | None,
        store: str | None = None,
        owner: str | None = None,
    ) -> None:
        self.home = home
        self.store = open_store(store, home, owner)
        self.default_model = default_model
        self._registry: dict[str, Any] = dict(PROVIDERS)
        self.router = Router(self.availability, routes, fallback_model, self._registry.keys())
        self.retry_policy = retry_policy
        self.request_timeout = request_timeout
        self.writer_id = new_id()
        self.sessions: dict[str, SessionCore] = {}
        self._settings = {name: dict(s) for name, s in provider_settings.items()}
        self._providers: dict[str, Provider] = {}

    # -- providers ---------------------------------------------------------------------------

    def provider(self, name: str) -> Provider:
        """The provider instance named ``name``, built on first use."""
        instance = self._providers.get(name)
        if instance is None:
            cls = load_provider_class(name, self._registry)
            instance = cls(self._settings.get(name, {}))
            self._providers[name] = instance
        return instance

    def register_provider(self, name: str, provider: Provider) -> None:
        """Serve ``name:...`` model ids with ``provider`` (a custom or pre-configured instance)."""
        if not isinstance(provider, Provider):
            raise InvalidArgumentError("register_provider takes a copilot.providers.Provider")
        self._registry[name] = type(provider)
        self._providers[name] = provider

    def availability(self, name: str) -> Availability:
        """Whether provider ``name`` can serve now; never raises."""
        try:
            return self.provider(name).availability()
        except CopilotError as exc:
            return Availability(False, str(exc))
        except ImportError as exc:
            return Availability(False, f"cannot import its module: {exc}")

    def list_models(self) -> list[dict[str, Any]]:
        """Every model the providers know, with whether it is usable now."""
        models = []
        for name in self._registry:
            status = self.availability(name)
            try:
                provider = self.provider(name)
                names = provider.models()
            except (CopilotError, ImportError):
                continue
            for model in names:
                model_id = "echo" if name == "echo" else f"{name}:{model}"
                models.append(
                    {
                        "id": model_id,
                        "provider": name,
                        "name": model,
                        "usable": status.usable,
                        "reason": status.reason,
                        "contextWindow": provider.context_window(model),
                    }
                )
        return models

    # -- sessions ----------------------------------------------------------------------------

    async def create_session(
        self,
        session_id: str | None,
        model: str | None,
        system_message: str | None,
        streaming: bool,
    ) -> SessionCore:
        session_id = new_id() if session_id is None else validate_session_id(session_id)
        model = model or self.default_model
        route = self.router.resolve(model)
        now = utc_now()
        metadata = {
            "sessionId": session_id,
            "startTime": now,
            "modifiedTime": now,
            "model": model,
            "summary": "",
            "messageCount": 0,
            "turnCount": 0,
            "systemMessage": system_message,
            "streaming": streaming,
        }
        self.store.create_session(metadata)
        core = SessionCore(self, metadata)
        self.sessions[session_id] = core
        start = {"model": model, "resolvedModel": route.model_id, "systemMessage": system_message}
        core.record([Event(EventType.SESSION_START, start)])
        return core

    async def resume_session(self, session_id: str) -> SessionCore:
        validate_session_id(session_id)
        open_core = self.sessions.get(session_id)
        metadata = self.store.get_session(session_id)
        if open_core is not None and not open_core.closed:
            if metadata is not None and metadata.get("startTime") == open_core.start_time:
                return open_core
            await self.close_session(open_core, timeout=0)  # deleted elsewhere
        if metadata is None:
            raise SessionNotFoundError(session_id)
        core = SessionCore(self, metadata)
        interrupted = core.recover_interrupted(_LIVE_WRITERS)
        data = {"model": core.model, "interruptedTurns": interrupted}
        core.record([Event(EventType.SESSION_RESUME, data)])
        self.sessions[session_id] = core
        return core

    async def fork_session(self, source_id: str, new_id: str, model: str | None) -> SessionCore:
        source = self.store.get_session(validate_session_id(source_id))
        if source is None:
            raise SessionNotFoundError(source_id)
        validate_session_id(new_id)
        if model is not None:
            self.router.resolve(model)
        now = utc_now()
        metadata = {
            **source,
            "sessionId": new_id,
            "startTime": now,
            "modifiedTime": now,
            "model": model or source["model"],
            "forkedFrom": source_id,
        }
        self.store.create_session(metadata)
        start = {
            "model": metadata["model"],
            "systemMessage": metadata.get("systemMessage"),
            "forkedFrom": source_id,
        }
        copies = [Event(EventType.SESSION_START, start)]
        copies += _copy_events(self.store.read_events(source_id))
        core = SessionCore(self, metadata)
        self.sessions[new_id] = core
        core.record(copies)
        return core

    async def close_session(self, core: SessionCore, timeout: float | None) -> None:
        await core.close(timeout)
        if self.sessions.get(core.session_id) is core:
            del self.sessions[core.session_id]

    async def delete_session(self, session_id: str) -> None:
        validate_session_id(session_id)
        if self.store.get_session(session_id) is None:
            raise SessionNotFoundError(session_id)
        open_core = self.sessions.get(session_id)
        if open_core is not None:
            await self.close_session(open_core, timeout=0)
        self.store.delete_session(session_id)

    async def delete_sessions(self, older_than: timedelta, dry_run: bool) -> list[dict[str, Any]]:
        if not isinstance(older_than, timedelta) or older_than < timedelta(0):
            raise InvalidArgumentError("older_than is a non-negative datetime.timedelta")
        cutoff = (datetime.now(UTC) - older_than).isoformat(timespec="microseconds")
        old = [s for s in self.store.list_sessions() if s.get("modifiedTime", "") < cutoff]
        if not dry_run:
            for info in old:
                try:
                    await self.delete_session(info["sessionId"])
                except SessionNotFoundError:
                    pass  # deleted meanwhile by another process
        return old

    async def aclose(self, timeout: float | None) -> None:
        """Close every open session (letting queued turns finish), then the providers."""
        await asyncio.gather(
            *(self.close_session(c, timeout) for c in list(self.sessions.values()))
        )
        for provider in self._providers.values():
            try:
                await provider.aclose()
            except Exception:  # closing must go on for the other providers
                pass
        self.store.close()


_NOT_COPIED = frozenset({EventType.SESSION_START, EventType.SESSION_RESUME})
_ID_FIELDS = ("messageId", "replaces")


def _copy_events(events: list[Event]) -> list[Event]:
    """Copies of a session's events with fresh ids, their cross-references remapped."""
    new_ids: dict[str, str] = {}
    copies = []
    for event in events:
        if event.type in _NOT_COPIED:
            continue
        new_ids[event.id] = new_id()
        data = dict(event.data)
        for name in _ID_FIELDS:
            if data.get(name) in new_ids:
                data[name] = new_ids[data[name]]
        copies.append(Event(event.type, data, id=new_ids[event.id], timestamp=event.timestamp))
    return copies


def _system_text(system_message: str | Mapping[str, Any] | None) -> str | None:
    # The official SDK passes {"content": ..., "mode": ...}; a plain string is the same content.
    if isinstance(system_message, Mapping):
        system_message = system_message.get("content")
    if system_message is not None and not isinstance(system_message, str):
        raise InvalidArgumentError("system_message is a string or {'content': str}")
    return system_message or None


class _ClientFace:
    """Construction and lifecycle shared by the sync and async clients."""

    def __init__(
        self,
        base_directory: str | os.PathLike[str] | None = None,
        *,
        fallback_model: str | None = None,
        default_model: str | None = None,
        routes: Mapping[str, str] | None = None,
        providers: Mapping[str, Mapping[str, Any]] | None = None,
        max_retries: int = 2,
        request_timeout: float | None = 120.0,
        store: str | None = None,
        owner: str | None = None,
    ) -> None:
        self.home = home_directory(base_directory)
        config = load_config(self.home)
        store = store or os.environ.get(STORE_ENV) or config.store
        store_kind(store)  # a malformed spec fails here, not at the first call
        settings = {name: dict(s) for name, s in config.providers.items()}
        for name, extra in (providers or {}).items():
            settings.setdefault(name, {}).update(check_provider_settings(name, extra))
        self._core_args = {
            "default_model": (
                default_model
                or os.environ.get(DEFAULT_MODEL_ENV)
                or config.default_model
                or EMBEDDED_MODEL
            ),
            "fallback_model": (
                fallback_model or os.environ.get(FALLBACK_ENV) or config.fallback_model
            ),
            "routes": {**config.routes, **(routes or {})},
            "provider_settings": settings,
            "retry_policy": RetryPolicy(max_retries=max_retries),
            "request_timeout": request_timeout,
            "store": store,
            "owner": owner,
        }
        self.state = ClientState.NEW
        self._runner: LoopThread | None = None
        self._core: ClientCore | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} home={str(self.home)!r} state={self.state.value}>"

    @property
    def default_model(self) -> str:
        """The model of ``create_session()`` without ``model=``."""
        return self._core_args["default_model"]

    @property
    def fallback_model(self) -> str | None:
        """The model that serves when a requested one has no usable provider, or None."""
        return self._core_args["fallback_model"]

    @property
    def routes(self) -> dict[str, str]:
        """Model names routed to model ids (the config file's ``[routes]`` and ``routes=``)."""
        return dict(self._core_args["routes"])

    def _start(self) -> None:
        if self.state is ClientState.STARTED:
            return
        self._core = ClientCore(self.home, **self._core_args)
        self._runner = LoopThread()
        _LIVE_WRITERS.add(self._core.writer_id)
        self.state = ClientState.STARTED

    def _started(self) -> tuple[ClientCore, LoopThread]:
        if self.state is not ClientState.STARTED:
            self._start()
        assert self._core is not None and self._runner is not None
        return self._core, self._runner

    def _finish_stop(self) -> None:
        if self._runner is not None:
            self._runner.stop()
        if self._core is not None:
            _LIVE_WRITERS.discard(self._core.writer_id)
        self.state = ClientState.STOPPED

    # Pure reads need no event loop: they run in the caller's thread, on the store directly.

    def _list_sessions(self) -> list[dict[str, Any]]:
        return self._started()[0].store.list_sessions()

    def _get_session_metadata(self, session_id: str) -> dict[str, Any] | None:
        return self._started()[0].store.get_session(validate_session_id(session_id))

    def _get_messages(self, session_id: str, after: int) -> list[Event]:
        store = self._started()[0].store
        if store.get_session(validate_session_id(session_id)) is None:
            raise SessionNotFoundError(session_id)
        return store.read_events(session_id, after=after)

    def _get_last_session_id(self) -> str | None:
        sessions = self._list_sessions()
        return sessions[0]["sessionId"] if sessions else None

    def get_provider(self, name: str) -> Provider:
        """The client's provider instance named ``name`` (``"echo"``, ``"openai"``...)."""
        core, runner = self._started()
        return runner.call(core.provider, name)

    def register_provider(self, name: str, provider: Provider) -> None:
        """Serve model ids ``name:...`` with ``provider``."""
        core, runner = self._started()
        runner.call(core.register_provider, name, provider)


class CopilotClient(_ClientFace):
    """Named, persistent AI chat sessions (the synchronous face).

    >>> client = CopilotClient()
    >>> client.start()
    >>> session = client.create_session(session_id="user-123-chat", model="gpt-4.1")
    >>> reply = session.send_and_wait(prompt="Hello")
    >>> client.stop()

    Parameters: ``base_directory`` (where sessions are stored; default
    ``$COPILOT_JUPYTER_HOME`` or the user data directory), ``fallback_model`` (serves when a
    requested model has no usable provider; default ``$COPILOT_JUPYTER_FALLBACK_MODEL``),
    ``default_model`` (for ``create_session()`` without a model; default the embedded
    ``local:smollm2``), ``routes`` (model name -> model id), ``providers`` (provider name ->
    non-secret settings), ``max_retries`` and ``request_timeout`` (seconds) for model calls,
    ``store`` (``"diskcache"`` or a ``postgresql://`` URL; default ``$COPILOT_JUPYTER_STORE``,
    else config.toml's ``store``) and ``owner`` (whose sessions a shared store serves; default
    ``$JUPYTERHUB_USER``, else the OS user).
    """

    def start(self) -> None:
        """Start the client's event loop. Calls made before start() start it too."""
        self._start()

    def stop(self, timeout: float | None = 60.0) -> None:
        """Close every session (queued turns finish, up to ``timeout`` s each), then stop."""
        if self.state is not ClientState.STARTED:
            self.state = ClientState.STOPPED
            return
        assert self._core is not None and self._runner is not None
        try:
            self._runner.run(self._core.aclose(timeout))
        finally:
            self._finish_stop()

    def __enter__(self) -> CopilotClient:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def create_session(
        self,
        session_id: str | None = None,
        model: str | None = None,
        system_message: str | Mapping[str, Any] | None = None,
        streaming: bool = True,
    ) -> Session:
        """Create a new session and store it. Raises SessionExistsError if the id is taken."""
        core, runner = self._started()
        text = _system_text(system_message)
        session = runner.run(core.create_session(session_id, model, text, streaming))
        return Session(session, runner)

    def resume_session(self, session_id: str) -> Session:
        """Open a stored session with its history. Raises SessionNotFoundError if unknown."""
        core, runner = self._started()
        return Session(runner.run(core.resume_session(session_id)), runner)

    def list_sessions(self) -> list[dict[str, Any]]:
        """Every stored session's metadata (``sessionId``, ``startTime``, ``modifiedTime``,
        ``model``, ``summary``, ``messageCount``...), most recently used first."""
        return self._list_sessions()

    def get_session_metadata(self, session_id: str) -> dict[str, Any] | None:
        """A stored session's metadata, or None: check a session exists before resuming it."""
        return self._get_session_metadata(session_id)

    def get_last_session_id(self) -> str | None:
        """The id of the most recently used session, or None."""
        return self._get_last_session_id()

    def get_messages(self, session_id: str, after: int = 0) -> list[Event]:
        """A stored session's events, oldest first, without opening the session (nothing
        is written: no ``session.resume``). Raises SessionNotFoundError if unknown."""
        return self._get_messages(session_id, after)

    def delete_session(self, session_id: str) -> None:
        """Remove a session and all its data from disk."""
        core, runner = self._started()
        runner.run(core.delete_session(session_id))

    def fork_session(self, source_id: str, new_id: str, *, model: str | None = None) -> Session:
        """Copy a stored session's history into a new session (to try another direction or
        another ``model``); the source is unchanged."""
        core, runner = self._started()
        return Session(runner.run(core.fork_session(source_id, new_id, model)), runner)

    def delete_sessions(
        self, older_than: timedelta, *, dry_run: bool = False
    ) -> list[dict[str, Any]]:
        """Delete every session unused for longer than ``older_than``; return their metadata."""
        core, runner = self._started()
        return runner.run(core.delete_sessions(older_than, dry_run))

    def list_models(self) -> list[dict[str, Any]]:
        """Every known model: ``id``, ``provider``, ``usable`` now, ``reason`` if not."""
        core, runner = self._started()
        return runner.call(core.list_models)


class AsyncCopilotClient(_ClientFace):
    """The async twin of :class:`CopilotClient`: the same methods, awaited.

    Works inside a running event loop (IPython's top-level await, ipykernel):

    >>> async with AsyncCopilotClient() as client:
    ...     session = await client.create_session(model="echo")
    ...     reply = await session.send_and_wait(prompt="Hello")
    """

    async def start(self) -> None:
        """Start the client's private event loop."""
        self._start()

    async def stop(self, timeout: float | None = 60.0) -> None:
        """Close every session (queued turns finish first), then stop."""
        if self.state is not ClientState.STARTED:
            self.state = ClientState.STOPPED
            return
        assert self._core is not None and self._runner is not None
        try:
            await self._runner.arun(self._core.aclose(timeout))
        finally:
            await asyncio.to_thread(self._finish_stop)

    async def __aenter__(self) -> AsyncCopilotClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def create_session(
        self,
        session_id: str | None = None,
        model: str | None = None,
        system_message: str | Mapping[str, Any] | None = None,
        streaming: bool = True,
    ) -> AsyncSession:
        """Create a new session; see :meth:`CopilotClient.create_session`."""
        core, runner = self._started()
        text = _system_text(system_message)
        session = await runner.arun(core.create_session(session_id, model, text, streaming))
        return AsyncSession(session, runner)

    async def resume_session(self, session_id: str) -> AsyncSession:
        """Open a stored session; see :meth:`CopilotClient.resume_session`."""
        core, runner = self._started()
        return AsyncSession(await runner.arun(core.resume_session(session_id)), runner)

    async def list_sessions(self) -> list[dict[str, Any]]:
        """Every stored session's metadata, most recently used first."""
        return await asyncio.to_thread(self._list_sessions)

    async def get_session_metadata(self, session_id: str) -> dict[str, Any] | None:
        """A stored session's metadata, or None."""
        return self._get_session_metadata(session_id)

    async def get_last_session_id(self) -> str | None:
        """The id of the most recently used session, or None."""
        return await asyncio.to_thread(self._get_last_session_id)

    async def get_messages(self, session_id: str, after: int = 0) -> list[Event]:
        """A stored session's events without opening it; see :meth:`CopilotClient.get_messages`."""
        return await asyncio.to_thread(self._get_messages, session_id, after)

    async def delete_session(self, session_id: str) -> None:
        """Remove a session and all its data from disk."""
        core, runner = self._started()
        await runner.arun(core.delete_session(session_id))

    async def fork_session(
        self, source_id: str, new_id: str, *, model: str | None = None
    ) -> AsyncSession:
        """Copy a session's history into a new one; see :meth:`CopilotClient.fork_session`."""
        core, runner = self._started()
        return AsyncSession(await runner.arun(core.fork_session(source_id, new_id, model)), runner)

    async def delete_sessions(
        self, older_than: timedelta, *, dry_run: bool = False
    ) -> list[dict[str, Any]]:
        """Delete every session unused for longer than ``older_than``; return their metadata."""
        core, runner = self._started()
        return await runner.arun(core.delete_sessions(older_than, dry_run))

    async def list_models(self) -> list[dict[str, Any]]:
        """Every known model and whether it is usable now."""
        core, runner = self._started()
        return runner.call(core.list_models)
