"""The client: sessions in a store, models through providers, one private event loop.

:class:`ClientCore` holds the logic and runs on the private loop; :class:`CopilotClient` (sync,
as the seed shows) and :class:`AsyncCopilotClient` (awaitable, for code already inside an
event loop) only wait on it.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from . import _exit
from ._loop import LoopThread
from ._readers import ReaderThread
from ._services import SessionServices
from .attachments import DEFAULT_MAX_BYTES, check_max_bytes
from .compaction import compaction_settings
from .config import (
    DEFAULT_MODEL_ENV,
    FALLBACK_ENV,
    check_provider_settings,
    home_directory,
    load_config,
)
from .errors import (
    CopilotError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    ModelNotAvailableError,
    SessionNotFoundError,
    StoreCorruptedError,
)
from .events import Event, EventType, new_id, utc_now
from .prices import PriceTable
from .providers import PROVIDERS, load_provider_class
from .providers.base import Availability, Provider
from .rewind import cut_at, without_rewound
from .routing import Router
from .search import Progress
from .session import AsyncSession, Session, SessionCore, effective_system, interrupted_events
from .store import EventStore
from .stores import STORE_ENV, open_store, store_kind
from .tool_loop import DEFAULT_MAX_TOOL_ROUNDS, SessionTools, ToolConfig
from .tool_runner import DEFAULT_TOOL_TIMEOUT
from .tools import Tool
from .turn import RetryPolicy
from .validation import (
    validate_limit,
    validate_option,
    validate_paging,
    validate_session_id,
    validate_session_options,
)

__all__ = ["AsyncCopilotClient", "ClientCore", "ClientState", "CopilotClient"]

T = TypeVar("T")

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
        prices: Mapping[str, Any] | None = None,
        max_attachment_bytes: int = DEFAULT_MAX_BYTES,
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
        # provider() runs on the loop thread and, for list_models, on a worker thread
        self._providers_lock = threading.Lock()
        #: what every session core of this client is handed (it never sees the client)
        self.services = SessionServices(
            store=self.store,
            router=self.router,
            provider=self.provider,
            retry_policy=retry_policy,
            request_timeout=request_timeout,
            writer_id=self.writer_id,
            close=self.close_session,
            tool_models=self.tool_models,
            prices=PriceTable(prices),
            vision_models=self.vision_models,
            max_attachment_bytes=max_attachment_bytes,
        )

    # -- providers ---------------------------------------------------------------------------

    def provider(self, name: str) -> Provider:
        """The provider instance named ``name``, built on first use."""
        with self._providers_lock:
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
        with self._providers_lock:
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

    async def alist_models(self) -> list[dict[str, Any]]:
        """:meth:`list_models` on a worker thread: a provider's availability check may block
        (a network probe, a model file's check), and the loop must go on streaming."""
        return await asyncio.to_thread(self.list_models)

    def list_models(self) -> list[dict[str, Any]]:
        """Every model the providers know, with whether it is usable now (blocking)."""
        models = []
        for name in list(self._registry):
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
                        "tools": provider.supports_tools(model),
                        "vision": provider.supports_images(model),
                    }
                )
        return models

    def tool_models(self) -> list[str]:
        """The ids of the usable models that can call tools (for error messages; blocking)."""
        return [m["id"] for m in self.list_models() if m["usable"] and m["tools"]]

    def vision_models(self) -> list[str]:
        """The ids of the usable models that read images (for error messages; blocking)."""
        return [m["id"] for m in self.list_models() if m["usable"] and m["vision"]]

    def _tools_for(
        self, session_id: str, model: str, config: ToolConfig | None
    ) -> SessionTools | None:
        """Check a session's tool arguments, and that its model can call tools if it has any."""
        tools = config.build(session_id) if config is not None else None
        if tools is not None and tools.has_tools:
            try:
                route = self.router.resolve(model)
            except ModelNotAvailableError:
                # resume and fork open a session whose model may be away for now: its turns
                # report that (and check tools again) when they run
                return tools
            provider = self.provider(route.provider)
            tools.check_model(provider, route.name, route.model_id, self.tool_models)
        return tools

    async def _session_started(self, core: SessionCore, source: str) -> None:
        if core.tools is not None:
            await core.tools.hook(
                "on_session_start", {"source": source}, lambda e: core.record([e])
            )

    # -- sessions ----------------------------------------------------------------------------

    async def create_session(
        self,
        session_id: str | None,
        model: str | None,
        system_message: str | None,
        streaming: bool,
        tool_config: ToolConfig | None = None,
        reasoning_effort: str | None = None,
        infinite_sessions: Mapping[str, Any] | None = None,
    ) -> SessionCore:
        session_id = new_id() if session_id is None else validate_session_id(session_id)
        compaction = None if infinite_sessions is None else compaction_settings(infinite_sessions)
        validate_session_options(model=model, streaming=streaming)
        reasoning_effort = validate_option("reasoning_effort", reasoning_effort)
        model = model or self.default_model
        route = self.router.resolve(model)
        tools = self._tools_for(session_id, model, tool_config)
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
        if reasoning_effort is not None:
            metadata["reasoningEffort"] = reasoning_effort
        if compaction is not None:
            metadata["infiniteSessions"] = compaction.to_dict()
        self.store.create_session(metadata)
        core = SessionCore(self.services, metadata, tools)
        self.sessions[session_id] = core
        start = {"model": model, "resolvedModel": route.model_id, "systemMessage": system_message}
        core.record([Event(EventType.SESSION_START, start)])
        await self._session_started(core, "new")
        return core

    async def resume_session(
        self,
        session_id: str,
        tool_config: ToolConfig | None = None,
        system_message: tuple[str, str | None] | None = None,
        reasoning_effort: str | None = None,
        infinite_sessions: Mapping[str, Any] | None = None,
    ) -> SessionCore:
        validate_session_id(session_id)
        reasoning_effort = validate_option("reasoning_effort", reasoning_effort)
        changes = _resume_changes(system_message, reasoning_effort)
        if infinite_sessions is not None:
            changes["infiniteSessions"] = compaction_settings(infinite_sessions).to_dict()
        open_core = self.sessions.get(session_id)
        metadata = self.store.get_session(session_id)
        tools = None
        if metadata is not None:
            tools = self._tools_for(session_id, metadata["model"], tool_config)
        if open_core is not None and not open_core.closed:
            if metadata is not None and metadata.get("startTime") == open_core.start_time:
                open_core.tools = tools  # tools are code: the ones given now (none if none)
                if changes:
                    data = {"model": open_core.model, "interruptedTurns": 0, **changes}
                    data.update(_sent_system({**metadata, **changes}, changes))
                    open_core.record(
                        [Event(EventType.SESSION_RESUME, data)], update=_apply(changes)
                    )
                    open_core.apply_settings(changes)
                await self._session_started(open_core, "resume")
                return open_core
            await self.close_session(open_core, timeout=0)  # deleted elsewhere
        if metadata is None:
            raise SessionNotFoundError(session_id)
        core = SessionCore(self.services, {**metadata, **changes}, tools)
        interrupted = core.recover_interrupted(_LIVE_WRITERS)
        data = {"model": core.model, "interruptedTurns": interrupted, **changes}
        data.update(_sent_system({**metadata, **changes}, changes))
        core.record([Event(EventType.SESSION_RESUME, data)], update=_apply(changes))
        self.sessions[session_id] = core
        await self._session_started(core, "resume")
        return core

    async def fork_session(
        self,
        source_id: str,
        new_id: str,
        model: str | None,
        tool_config: ToolConfig | None = None,
        to_event_id: str | None = None,
    ) -> SessionCore:
        source = self.store.get_session(validate_session_id(source_id))
        if source is None:
            raise SessionNotFoundError(source_id)
        validate_session_id(new_id)
        if model is not None:
            self.router.resolve(model)
        tools = self._tools_for(new_id, model or source["model"], tool_config)
        now = utc_now()
        metadata = {
            **{k: v for k, v in source.items() if k != "lastModel"},
            "sessionId": new_id,
            "startTime": now,
            "modifiedTime": now,
            "model": model or source["model"],
            "forkedFrom": source_id,
        }
        start = {
            "model": metadata["model"],
            "systemMessage": effective_system(metadata),
            "forkedFrom": source_id,
        }

        def copy(events: list[Event]) -> list[Event]:
            if to_event_id is not None:
                events = cut_at(events, to_event_id, source_id)
            return [Event(EventType.SESSION_START, start), *_copy_events(without_rewound(events))]

        # One store transaction reads, copies and writes (whole or absent after a crash); a
        # thread keeps the loop serving other sessions while a long log is copied.
        record = await asyncio.to_thread(self.store.fork_session, source_id, metadata, copy)
        core = SessionCore(self.services, record, tools)
        self.sessions[new_id] = core
        await self._session_started(core, "new")
        return core

    async def rename_session(
        self, old_id: str, new_id: str, timeout: float | None
    ) -> dict[str, Any]:
        """Give a session a new id in one store transaction; an open session object of it in
        this client is closed first (its queued turns finish, as ``destroy`` does)."""
        validate_session_id(old_id)
        validate_session_id(new_id)
        if old_id == new_id:
            raise InvalidArgumentError(f"rename_session: the new id is the old one ({old_id!r})")
        core = self.sessions.get(old_id)
        if core is not None and not core.closed:
            await self.close_session(core, timeout)
        return await asyncio.to_thread(self.store.rename_session, old_id, new_id)

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

    def check(self, live_writers: set[str]) -> list[dict[str, Any]]:
        """The store's damage (:meth:`EventStore.check`) plus every open turn whose writer
        process has died (``open-turn``; :meth:`repair` closes it as interrupted)."""
        damage = self.store.check()
        for meta in self.store.list_sessions():
            session_id = meta["sessionId"]
            try:
                starts = self.store.open_turns(session_id)
            except (SessionNotFoundError, StoreCorruptedError):
                continue  # deleted meanwhile, or a damaged head check() already reported
            for start in starts:
                if not SessionCore._owner_alive(start, live_writers):
                    detail = (
                        f"turn {start.data.get('messageId')} was left open by process "
                        f"{start.data.get('pid')}, which has ended"
                    )
                    damage.append(
                        {
                            "kind": "open-turn",
                            "sessionId": session_id,
                            "key": None,
                            "detail": detail,
                            "repairable": True,
                        }
                    )
        return damage

    def repair(self, live_writers: set[str]) -> list[dict[str, Any]]:
        """Repair the store, then close the open turns of dead writers as interrupted; return
        the damage found, each with ``"repaired"``. No event is deleted."""
        damage = self.store.repair()
        for meta in self.store.list_sessions():
            session_id = meta["sessionId"]
            with self.store.transaction():
                try:
                    starts = self.store.open_turns(session_id)
                except (SessionNotFoundError, StoreCorruptedError):
                    continue
                for start in starts:
                    if SessionCore._owner_alive(start, live_writers):
                        continue
                    message_id = start.data.get("messageId")
                    self.store.append(session_id, interrupted_events(message_id))
                    damage.append(
                        {
                            "kind": "open-turn",
                            "sessionId": session_id,
                            "key": None,
                            "detail": f"turn {message_id} closed as interrupted",
                            "repairable": True,
                            "repaired": True,
                        }
                    )
        return damage


#: events per page of iter_messages
_PAGE = 1000


def _list_sessions(store: EventStore, limit: int | None = None) -> list[dict[str, Any]]:
    return store.list_sessions(limit)


def _get_session_metadata(store: EventStore, session_id: str) -> dict[str, Any] | None:
    return store.get_session(validate_session_id(session_id))


def _get_attachment(store: EventStore, sha256: str) -> bytes | None:
    if not isinstance(sha256, str) or len(sha256) != 64:
        raise InvalidArgumentError(
            f"an attachment is named by its sha256 (64 hex digits, the sha256 of a "
            f"user.message's data.attachments), not {sha256!r}"
        )
    return store.get_blob(sha256.lower())


def _get_messages(
    store: EventStore,
    session_id: str,
    after: int = 0,
    limit: int | None = None,
    last: int | None = None,
) -> list[Event]:
    if store.get_session(validate_session_id(session_id)) is None:
        raise SessionNotFoundError(session_id)
    return store.page(session_id, after, limit, last)


def _get_last_session_id(store: EventStore) -> str | None:
    sessions = store.list_sessions(1)
    return sessions[0]["sessionId"] if sessions else None


def _search_store(
    store: EventStore,
    query: str,
    session_id: str | None,
    model: str | None,
    since: Any,
    until: Any,
    limit: int,
    progress: Progress | None,
) -> list[dict[str, Any]]:
    if session_id is not None and store.get_session(validate_session_id(session_id)) is None:
        raise SessionNotFoundError(session_id)
    return store.search(
        query,
        session_id=session_id,
        model=model,
        since=since,
        until=until,
        limit=limit,
        progress=progress,
    )


def _reindex_store(store: EventStore, progress: Progress | None) -> int:
    return store.reindex(progress)


class _Running:
    """A started client: its core on the private loop, its reader thread, its exit hook.

    :meth:`shutdown` is ``stop()``; it runs at interpreter exit too (:mod:`copilot._exit`)
    if the program did not stop the client itself.
    """

    def __init__(self, home: Path, core_args: Mapping[str, Any]) -> None:
        self.runner = LoopThread()
        try:
            # built on the loop thread: the store's first connection belongs to that thread,
            # which closes it in ClientCore.aclose
            self.core = self.runner.call(functools.partial(ClientCore, home, **core_args))
        except BaseException:
            self.runner.stop()
            raise
        self.readers = ReaderThread(self.core.store.close)
        self.closed = False
        _LIVE_WRITERS.add(self.core.writer_id)
        _exit.register(id(self), self.shutdown)

    def _begin_shutdown(self) -> bool:
        if self.closed:
            return False
        self.closed = True
        _exit.unregister(id(self))
        return True

    def _finish(self) -> None:
        self.readers.close()
        self.runner.stop()
        _LIVE_WRITERS.discard(self.core.writer_id)

    def shutdown(self, timeout: float | None) -> None:
        """Close every session (queued turns get ``timeout`` s), the providers, the store's
        connections and both threads."""
        if not self._begin_shutdown():
            return
        try:
            self.runner.run(self.core.aclose(timeout))
        finally:
            self._finish()

    async def ashutdown(self, timeout: float | None) -> None:
        """:meth:`shutdown`, awaited: the caller's loop goes on meanwhile."""
        if not self._begin_shutdown():
            return
        try:
            await self.runner.arun(self.core.aclose(timeout))
        finally:
            await asyncio.to_thread(self._finish)


_NOT_COPIED = frozenset({EventType.SESSION_START, EventType.SESSION_RESUME})
_ID_FIELDS = ("messageId", "replaces")


def _copy_events(events: list[Event]) -> list[Event]:
    """Copies of a session's events with fresh ids, their cross-references remapped.

    ``session.start`` and ``session.resume`` are not copied (the fork has its own start). A
    ``messageId`` or ``replaces`` naming an event that was not copied is dropped rather than
    left pointing into the source session.
    """
    new_ids: dict[str, str] = {}
    copies = []
    for event in events:
        if event.type in _NOT_COPIED:
            continue
        new_ids[event.id] = new_id()
        data = dict(event.data)
        for name in _ID_FIELDS:
            if name in data:
                if data[name] in new_ids:
                    data[name] = new_ids[data[name]]
                else:
                    del data[name]
        copies.append(Event(event.type, data, id=new_ids[event.id], timestamp=event.timestamp))
    return copies


def _tool_config(
    tools: list[Tool] | None,
    available_tools: list[str] | None,
    excluded_tools: list[str] | None,
    on_permission_request: Callable[..., Any] | None,
    hooks: Mapping[str, Any] | None,
    max_tool_rounds: int,
    tool_timeout: float | None,
) -> ToolConfig:
    """The tool arguments of a face's call, bundled for the core (checked there)."""
    return ToolConfig(
        tools,
        available_tools,
        excluded_tools,
        on_permission_request,
        hooks,
        max_tool_rounds,
        tool_timeout,
    )


def _system_spec(
    system_message: str | Mapping[str, Any] | None,
) -> tuple[str, str | None] | None:
    """``(mode, content)`` of a ``system_message`` argument, or None when it was not given.

    The Copilot SDK's shape is ``{"mode": "append" | "replace", "content": ...}`` (mode
    defaults to ``"append"``); a plain string is ``"replace"`` with that content.
    """
    if system_message is None:
        return None
    if isinstance(system_message, str):
        return "replace", system_message or None
    if not isinstance(system_message, Mapping):
        raise InvalidArgumentTypeError(
            "system_message is a string or {'mode': 'append' | 'replace', 'content': str}, "
            f"not {type(system_message).__name__}"
        )
    mode = system_message.get("mode", "append")
    content = system_message.get("content")
    if mode not in ("append", "replace"):
        raise InvalidArgumentError(
            f"system_message mode is 'append' or 'replace', not {mode!r} "
            "('customize' of the Copilot SDK has no sections to customize here)"
        )
    if content is not None and not isinstance(content, str):
        raise InvalidArgumentTypeError(
            f"system_message content is a string, not {type(content).__name__}"
        )
    return mode, content or None


def _system_text(system_message: str | Mapping[str, Any] | None) -> str | None:
    # A new session has no system message of its own yet: both modes give the content.
    spec = _system_spec(system_message)
    return None if spec is None else spec[1]


def _resume_changes(
    system_message: tuple[str, str | None] | None, reasoning_effort: str | None
) -> dict[str, Any]:
    """The metadata a resume changes: ``replace`` sets the session's system message (and
    drops an appended part); ``append`` sets the part added after it (replacing the part an
    earlier ``append`` set, so resuming twice does not append twice)."""
    changes: dict[str, Any] = {}
    if system_message is not None:
        mode, content = system_message
        if mode == "replace":
            changes.update(systemMessage=content, systemMessageAppend=None)
        else:
            changes["systemMessageAppend"] = content
    if reasoning_effort is not None:
        changes["reasoningEffort"] = reasoning_effort
    return changes


def _sent_system(metadata: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``{"systemMessage": <what is sent from now on>}`` for a resume that changed it (the
    event's ``systemMessage`` is, as in ``session.start``, the message the model is sent;
    the metadata keeps the session's own and the appended part apart)."""
    if "systemMessage" not in changes and "systemMessageAppend" not in changes:
        return {}
    return {"systemMessage": effective_system(metadata)}


def _apply(changes: dict[str, Any]) -> Callable[[dict[str, Any]], None] | None:
    """A metadata update that writes ``changes`` (None when there are none)."""
    if not changes:
        return None
    return lambda meta: meta.update(changes)


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
        max_attachment_bytes: int = DEFAULT_MAX_BYTES,
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
            "prices": config.prices,
            "max_attachment_bytes": check_max_bytes(max_attachment_bytes),
        }
        self._running: _Running | None = None
        self._ever_started = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} home={str(self.home)!r} state={self.state.value}>"

    @property
    def default_model(self) -> str:
        """The model of ``create_session()`` without ``model=``."""
        return self._core_args["default_model"]

    @property
    def max_attachment_bytes(self) -> int:
        """The per-attachment cap in bytes (``max_attachment_bytes=``, default 20 MiB)."""
        return self._core_args["max_attachment_bytes"]

    @property
    def fallback_model(self) -> str | None:
        """The model that serves when a requested one has no usable provider, or None."""
        return self._core_args["fallback_model"]

    @property
    def routes(self) -> dict[str, str]:
        """Model names routed to model ids (the config file's ``[routes]`` and ``routes=``)."""
        return dict(self._core_args["routes"])

    @property
    def state(self) -> ClientState:
        """Where the client is in its life: new, started or stopped."""
        if self._running is not None and not self._running.closed:
            return ClientState.STARTED
        return ClientState.STOPPED if self._ever_started else ClientState.NEW

    @property
    def _core(self) -> ClientCore | None:
        # the running core, for tests and the notebook tools of this package
        return None if self._running is None else self._running.core

    def _start(self) -> None:
        if self.state is ClientState.STARTED:
            return
        self._running = _Running(self.home, self._core_args)
        self._ever_started = True

    def _started(self) -> _Running:
        if self.state is not ClientState.STARTED:
            self._start()
        assert self._running is not None
        return self._running

    async def _astarted(self) -> _Running:
        # Starting opens the store (disk I/O): off the caller's loop.
        if self.state is not ClientState.STARTED:
            await asyncio.to_thread(self._start)
        assert self._running is not None
        return self._running

    # Pure reads need no event loop: they run on the client's reader thread, never on the
    # caller's (whose loop they would block, and where they would leave an SQLite connection).

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        running = self._started()
        return running.readers.call(fn, running.core.store, *args)

    async def _aread(self, fn: Callable[..., T], *args: Any) -> T:
        running = await self._astarted()
        return await running.readers.acall(fn, running.core.store, *args)

    def get_provider(self, name: str) -> Provider:
        """The client's provider instance named ``name`` (``"echo"``, ``"openai"``...)."""
        running = self._started()
        return running.runner.call(running.core.provider, name)

    def register_provider(self, name: str, provider: Provider) -> None:
        """Serve model ids ``name:...`` with ``provider``."""
        running = self._started()
        running.runner.call(running.core.register_provider, name, provider)

    # Search reads and rebuilds on the client's reader thread, like every other read: never
    # on the loop (a rebuild there would stall every streaming session) nor the caller's.

    def _search(self, *args: Any) -> list[dict[str, Any]]:
        return self._read(_search_store, *args)

    def _reindex(self, progress: Progress | None) -> int:
        return self._read(_reindex_store, progress)


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

    A program that ends without ``stop()`` gets it at interpreter exit: queued turns get
    :data:`copilot._exit.EXIT_TIMEOUT` seconds, what is left is recorded as aborted.
    """

    def start(self) -> None:
        """Start the client's event loop. Calls made before start() start it too."""
        self._start()

    def stop(self, timeout: float | None = 60.0) -> None:
        """Close every session (queued turns finish, up to ``timeout`` s each), then stop."""
        if self._running is not None:
            self._running.shutdown(timeout)
        self._ever_started = True

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
        *,
        tools: list[Tool] | None = None,
        available_tools: list[str] | None = None,
        excluded_tools: list[str] | None = None,
        on_permission_request: Callable[..., Any] | None = None,
        hooks: Mapping[str, Any] | None = None,
        max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
        tool_timeout: float | None = DEFAULT_TOOL_TIMEOUT,
        reasoning_effort: str | None = None,
        infinite_sessions: Mapping[str, Any] | None = None,
    ) -> Session:
        """Create a new session and store it. Raises SessionExistsError if the id is taken.

        ``system_message`` is a string or the Copilot SDK's ``{"mode": "append" | "replace",
        "content": ...}``; there is no built-in system prompt, so on a new session both modes
        make ``content`` the system message (they differ on :meth:`resume_session`).
        ``reasoning_effort`` (``"low"``, ``"medium"``, ``"high"``) is the session's default
        for providers that reason (a send's own ``reasoning_effort`` wins).
        ``infinite_sessions`` is the Copilot SDK's ``InfiniteSessionConfig`` (``enabled``,
        ``background_compaction_threshold``, ``buffer_exhaustion_threshold``; on by default,
        0.80 and 0.95) plus ``summary_model``: see :mod:`copilot.compaction`.

        ``tools`` (see :func:`copilot.tools.define_tool`) let the model act: each call asks
        ``on_permission_request`` (``PermissionHandler.approve_all`` approves all; without a
        handler calls are denied, as in the Copilot SDK) unless the tool has
        ``skip_permission``. ``available_tools`` / ``excluded_tools`` pick among them by name;
        ``hooks`` is a :class:`copilot.tools.SessionHooks` dict; a turn runs at most
        ``max_tool_rounds`` rounds of calls, each call at most ``tool_timeout`` seconds. Tools
        are code, never stored: give them again to ``resume_session``. A model that cannot
        call tools raises :class:`~copilot.errors.ToolsNotSupportedError`.
        """
        running = self._started()
        text = _system_text(system_message)
        config = _tool_config(
            tools,
            available_tools,
            excluded_tools,
            on_permission_request,
            hooks,
            max_tool_rounds,
            tool_timeout,
        )
        created = running.core.create_session(
            session_id, model, text, streaming, config, reasoning_effort, infinite_sessions
        )
        return Session(running.runner.run(created), running.runner, running.readers)

    def resume_session(
        self,
        session_id: str,
        *,
        tools: list[Tool] | None = None,
        available_tools: list[str] | None = None,
        excluded_tools: list[str] | None = None,
        on_permission_request: Callable[..., Any] | None = None,
        hooks: Mapping[str, Any] | None = None,
        max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
        tool_timeout: float | None = DEFAULT_TOOL_TIMEOUT,
        system_message: str | Mapping[str, Any] | None = None,
        reasoning_effort: str | None = None,
        infinite_sessions: Mapping[str, Any] | None = None,
    ) -> Session:
        """Open a stored session with its history. Raises SessionNotFoundError if unknown.

        ``system_message={"mode": "replace", "content": ...}`` (or a string) replaces the
        session's system message from now on; ``{"mode": "append", "content": ...}`` adds
        ``content`` after it (a later append replaces that added part, it does not pile up).
        ``reasoning_effort`` changes the session's default. Both are stored in its metadata.

        The tool arguments are those of :meth:`create_session`: a session is given its tools
        each time it is opened; calls and results already in its history stay in its context
        even if it is not given those tools again.
        """
        running = self._started()
        config = _tool_config(
            tools,
            available_tools,
            excluded_tools,
            on_permission_request,
            hooks,
            max_tool_rounds,
            tool_timeout,
        )
        resumed = running.core.resume_session(
            session_id,
            config,
            _system_spec(system_message),
            reasoning_effort,
            infinite_sessions,
        )
        return Session(running.runner.run(resumed), running.runner, running.readers)

    def list_sessions(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Every stored session's metadata (``sessionId``, ``startTime``, ``modifiedTime``,
        ``model``, ``summary``, ``messageCount``...), most recently used first; with
        ``limit``, the newest ``limit`` only (read through an index: fast at any count)."""
        return self._read(_list_sessions, validate_limit(limit))

    def get_session_metadata(self, session_id: str) -> dict[str, Any] | None:
        """A stored session's metadata, or None: check a session exists before resuming it."""
        return self._read(_get_session_metadata, session_id)

    def get_attachment(self, sha256: str) -> bytes | None:
        """The bytes of a stored attachment (``user.message`` ``data.attachments[i].sha256``),
        or None once no session references it."""
        return self._read(_get_attachment, sha256)

    def get_last_session_id(self) -> str | None:
        """The id of the most recently used session, or None."""
        return self._read(_get_last_session_id)

    def get_messages(
        self,
        session_id: str,
        after: int = 0,
        limit: int | None = None,
        *,
        last: int | None = None,
    ) -> list[Event]:
        """A stored session's events, oldest first, without opening the session (nothing
        is written: no ``session.resume``). Raises SessionNotFoundError if unknown.

        Pages: ``after`` (events whose ``seq`` is greater), ``limit`` (at most that many),
        or ``last=N`` (the newest N). :meth:`iter_messages` reads any length in constant
        memory.
        """
        return self._read(_get_messages, session_id, *validate_paging(after, limit, last))

    def iter_messages(self, session_id: str, after: int = 0) -> Iterator[Event]:
        """A stored session's events, oldest first, read 1,000 at a time (constant memory)."""
        after = validate_paging(after, None)[0]
        while True:
            page = self._read(_get_messages, session_id, after, _PAGE, None)
            yield from page
            if len(page) < _PAGE:
                return
            after = page[-1].seq or after

    def delete_session(self, session_id: str) -> None:
        """Remove a session and all its data from disk."""
        running = self._started()
        running.runner.run(running.core.delete_session(session_id))

    def fork_session(
        self,
        source_id: str,
        new_id: str,
        *,
        model: str | None = None,
        tools: list[Tool] | None = None,
        available_tools: list[str] | None = None,
        excluded_tools: list[str] | None = None,
        on_permission_request: Callable[..., Any] | None = None,
        hooks: Mapping[str, Any] | None = None,
        max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
        tool_timeout: float | None = DEFAULT_TOOL_TIMEOUT,
        to_event_id: str | None = None,
    ) -> Session:
        """Copy a stored session's history into a new session (to try another direction or
        another ``model``); the source is unchanged. Tool arguments as in
        :meth:`create_session`. ``to_event_id`` forks at a point: the events up to and
        including that one (a turn the point cuts through is left out; events a
        ``truncate`` removed never are copied)."""
        running = self._started()
        config = _tool_config(
            tools,
            available_tools,
            excluded_tools,
            on_permission_request,
            hooks,
            max_tool_rounds,
            tool_timeout,
        )
        forked = running.core.fork_session(source_id, new_id, model, config, to_event_id)
        return Session(running.runner.run(forked), running.runner, running.readers)

    def rename_session(
        self, old_id: str, new_id: str, *, timeout: float | None = 60.0
    ) -> dict[str, Any]:
        """Change a session's id in one store transaction (its log, title and totals move
        with it); return the new metadata. An open session object of ``old_id`` in this
        client is closed first (queued turns finish, up to ``timeout`` s); resume it under
        ``new_id``. A client in another process that still holds ``old_id`` open gets
        SessionNotFoundError at its next write. Raises SessionNotFoundError /
        SessionExistsError."""
        running = self._started()
        return running.runner.run(running.core.rename_session(old_id, new_id, timeout))

    def delete_sessions(
        self, older_than: timedelta, *, dry_run: bool = False
    ) -> list[dict[str, Any]]:
        """Delete every session unused for longer than ``older_than``; return their metadata."""
        running = self._started()
        return running.runner.run(running.core.delete_sessions(older_than, dry_run))

    def list_models(self) -> list[dict[str, Any]]:
        """Every known model: ``id``, ``provider``, ``usable`` now, ``reason`` if not."""
        running = self._started()
        return running.runner.run(running.core.alist_models())

    def check(self) -> list[dict[str, Any]]:
        """Damage in the store: a list of ``{"kind", "sessionId", "key", "detail",
        "repairable"}`` dicts, empty when the store is sound. Kinds: ``corrupt-record``,
        ``sequence-gap``, ``head-behind``, ``head-missing``, ``open-index``,
        ``orphan-events``, ``orphan-file``, ``open-turn`` (a dead process's unfinished turn).
        Reads only."""
        return self._started().core.check(set(_LIVE_WRITERS))

    def repair(self) -> list[dict[str, Any]]:
        """Fix the damage :meth:`check` reports as repairable, without deleting any event;
        return the damage found, each with ``"repaired"`` (True if fixed)."""
        return self._started().core.repair(set(_LIVE_WRITERS))

    def search(
        self,
        query: str,
        *,
        session_id: str | None = None,
        model: str | None = None,
        since: datetime | date | timedelta | str | None = None,
        until: datetime | date | timedelta | str | None = None,
        limit: int = 20,
        progress: Progress | None = None,
    ) -> list[dict[str, Any]]:
        """Full-text search over every session's prompts and replies; hits best first.

        ``query``: words, ``"a phrase"``, ``prefix*``, ``AND`` / ``OR`` / ``NOT``, parentheses;
        case- and accent-insensitive; ``df.pivot_table`` finds the identifier. Filters:
        ``session_id``, ``model`` (``"gpt-4.1"`` or ``"openai:gpt-4.1"``), ``since`` /
        ``until`` (datetime, date, timedelta back from now, or ISO string; naive is local
        time). Each hit: ``sessionId``, ``eventId``, ``messageId``, ``seq``, ``type``,
        ``timestamp``, ``model``, ``replaced``, ``snippet`` (matches in «»), ``rank`` (bm25,
        lower is better). A store written before search existed is indexed on the first
        call; ``progress(done, total)`` follows it.

        >>> client.search('pivot_table NOT excel', since=timedelta(days=30))  # doctest: +SKIP
        """
        return self._search(query, session_id, model, since, until, limit, progress)

    def reindex(self, progress: Progress | None = None) -> int:
        """Rebuild the search index from the stored logs; return the events indexed."""
        return self._reindex(progress)


class AsyncCopilotClient(_ClientFace):
    """The async twin of :class:`CopilotClient`: the same methods, awaited.

    Works inside a running event loop (IPython's top-level await, ipykernel); no method
    blocks the caller's loop (store reads run on the client's reader thread, model checks on
    a worker thread):

    >>> async with AsyncCopilotClient() as client:
    ...     session = await client.create_session(model="echo")
    ...     reply = await session.send_and_wait(prompt="Hello")
    """

    async def start(self) -> None:
        """Start the client's private event loop."""
        await self._astarted()

    async def stop(self, timeout: float | None = 60.0) -> None:
        """Close every session (queued turns finish first), then stop."""
        if self._running is not None:
            await self._running.ashutdown(timeout)
        self._ever_started = True

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
        *,
        tools: list[Tool] | None = None,
        available_tools: list[str] | None = None,
        excluded_tools: list[str] | None = None,
        on_permission_request: Callable[..., Any] | None = None,
        hooks: Mapping[str, Any] | None = None,
        max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
        tool_timeout: float | None = DEFAULT_TOOL_TIMEOUT,
        reasoning_effort: str | None = None,
        infinite_sessions: Mapping[str, Any] | None = None,
    ) -> AsyncSession:
        """Create a new session; see :meth:`CopilotClient.create_session`."""
        running = await self._astarted()
        text = _system_text(system_message)
        config = _tool_config(
            tools,
            available_tools,
            excluded_tools,
            on_permission_request,
            hooks,
            max_tool_rounds,
            tool_timeout,
        )
        created = running.core.create_session(
            session_id, model, text, streaming, config, reasoning_effort, infinite_sessions
        )
        return AsyncSession(await running.runner.arun(created), running.runner, running.readers)

    async def resume_session(
        self,
        session_id: str,
        *,
        tools: list[Tool] | None = None,
        available_tools: list[str] | None = None,
        excluded_tools: list[str] | None = None,
        on_permission_request: Callable[..., Any] | None = None,
        hooks: Mapping[str, Any] | None = None,
        max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
        tool_timeout: float | None = DEFAULT_TOOL_TIMEOUT,
        system_message: str | Mapping[str, Any] | None = None,
        reasoning_effort: str | None = None,
        infinite_sessions: Mapping[str, Any] | None = None,
    ) -> AsyncSession:
        """Open a stored session; see :meth:`CopilotClient.resume_session`."""
        running = await self._astarted()
        config = _tool_config(
            tools,
            available_tools,
            excluded_tools,
            on_permission_request,
            hooks,
            max_tool_rounds,
            tool_timeout,
        )
        resumed = running.core.resume_session(
            session_id,
            config,
            _system_spec(system_message),
            reasoning_effort,
            infinite_sessions,
        )
        return AsyncSession(await running.runner.arun(resumed), running.runner, running.readers)

    async def list_sessions(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Sessions' metadata, most recently used first; see :meth:`CopilotClient.list_sessions`."""
        return await self._aread(_list_sessions, validate_limit(limit))

    async def get_session_metadata(self, session_id: str) -> dict[str, Any] | None:
        """A stored session's metadata, or None."""
        return await self._aread(_get_session_metadata, session_id)

    async def get_attachment(self, sha256: str) -> bytes | None:
        """The bytes of a stored attachment, or None; see :meth:`CopilotClient.get_attachment`."""
        return await self._aread(_get_attachment, sha256)

    async def get_last_session_id(self) -> str | None:
        """The id of the most recently used session, or None."""
        return await self._aread(_get_last_session_id)

    async def get_messages(
        self,
        session_id: str,
        after: int = 0,
        limit: int | None = None,
        *,
        last: int | None = None,
    ) -> list[Event]:
        """A stored session's events without opening it; see :meth:`CopilotClient.get_messages`."""
        return await self._aread(_get_messages, session_id, *validate_paging(after, limit, last))

    async def iter_messages(self, session_id: str, after: int = 0) -> AsyncIterator[Event]:
        """A stored session's events, 1,000 read at a time off the event loop; see
        :meth:`CopilotClient.iter_messages`."""
        after = validate_paging(after, None)[0]
        while True:
            page = await self._aread(_get_messages, session_id, after, _PAGE, None)
            for event in page:
                yield event
            if len(page) < _PAGE:
                return
            after = page[-1].seq or after

    async def delete_session(self, session_id: str) -> None:
        """Remove a session and all its data from disk."""
        running = await self._astarted()
        await running.runner.arun(running.core.delete_session(session_id))

    async def fork_session(
        self,
        source_id: str,
        new_id: str,
        *,
        model: str | None = None,
        tools: list[Tool] | None = None,
        available_tools: list[str] | None = None,
        excluded_tools: list[str] | None = None,
        on_permission_request: Callable[..., Any] | None = None,
        hooks: Mapping[str, Any] | None = None,
        max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
        tool_timeout: float | None = DEFAULT_TOOL_TIMEOUT,
        to_event_id: str | None = None,
    ) -> AsyncSession:
        """Copy a session's history into a new one; see :meth:`CopilotClient.fork_session`."""
        running = await self._astarted()
        config = _tool_config(
            tools,
            available_tools,
            excluded_tools,
            on_permission_request,
            hooks,
            max_tool_rounds,
            tool_timeout,
        )
        forked = running.core.fork_session(source_id, new_id, model, config, to_event_id)
        return AsyncSession(await running.runner.arun(forked), running.runner, running.readers)

    async def rename_session(
        self, old_id: str, new_id: str, *, timeout: float | None = 60.0
    ) -> dict[str, Any]:
        """Change a session's id; see :meth:`CopilotClient.rename_session`."""
        running = await self._astarted()
        return await running.runner.arun(running.core.rename_session(old_id, new_id, timeout))

    async def delete_sessions(
        self, older_than: timedelta, *, dry_run: bool = False
    ) -> list[dict[str, Any]]:
        """Delete every session unused for longer than ``older_than``; return their metadata."""
        running = await self._astarted()
        return await running.runner.arun(running.core.delete_sessions(older_than, dry_run))

    async def list_models(self) -> list[dict[str, Any]]:
        """Every known model and whether it is usable now."""
        running = await self._astarted()
        return await running.runner.arun(running.core.alist_models())

    async def check(self) -> list[dict[str, Any]]:
        """Damage in the store; see :meth:`CopilotClient.check`. Runs in a worker thread."""
        running = await self._astarted()
        return await asyncio.to_thread(running.core.check, set(_LIVE_WRITERS))

    async def repair(self) -> list[dict[str, Any]]:
        """Repair the store; see :meth:`CopilotClient.repair`. Runs in a worker thread."""
        running = await self._astarted()
        return await asyncio.to_thread(running.core.repair, set(_LIVE_WRITERS))

    async def search(
        self,
        query: str,
        *,
        session_id: str | None = None,
        model: str | None = None,
        since: datetime | date | timedelta | str | None = None,
        until: datetime | date | timedelta | str | None = None,
        limit: int = 20,
        progress: Progress | None = None,
    ) -> list[dict[str, Any]]:
        """Full-text search of prompts and replies; see :meth:`CopilotClient.search`."""
        return await self._aread(
            _search_store, query, session_id, model, since, until, limit, progress
        )

    async def reindex(self, progress: Progress | None = None) -> int:
        """Rebuild the search index from the stored logs; return the events indexed."""
        return await self._aread(_reindex_store, progress)
