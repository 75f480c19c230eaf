"""Sessions: the turn queue and its recording (the core), and the sync and async faces.

:class:`SessionCore` lives on the client's private event loop. It takes turns from a queue in
order, one at a time; different sessions run concurrently. A turn records ``user.message`` and
``assistant.turn_start``, builds the model context from the conversation tail, streams the
reply (ephemeral ``assistant.message_delta`` events), and records ``assistant.message``,
``assistant.usage`` and ``assistant.turn_end``, then emits ``session.idle``. A failure becomes a
stored ``session.error``, an abort a stored ``abort`` with the partial reply: every prompt that
was sent ends with a reply, an error or an abort in the log.

:class:`Session` and :class:`AsyncSession` only wait; the logic exists once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .attachments import Attachment, resolve_attachments
from .compaction import (
    KEEP_TURNS_NOW,
    SUMMARY_SHARE,
    compaction_settings,
    plan_compaction,
    summary_messages,
)
from .context import MESSAGE_OVERHEAD, ConversationTail
from .errors import (
    CopilotError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    ProviderError,
    ProviderTimeoutError,
    SessionClosedError,
    SessionNotFoundError,
    StoreError,
    ToolRoundLimitError,
    TurnAbortedError,
    TurnTimeoutError,
    VisionNotSupportedError,
)
from .events import Event, EventType, new_id
from .providers.base import ChatMessage, ModelRequest, estimate_tokens
from .rewind import rest_of_turn, rewound_turns
from .routing import Route
from .tool_loop import SessionTools, combine_steps, run_tool_loop, steps_tokens
from .turn import StreamResult, stream_reply
from .validation import (
    validate_metadata,
    validate_option,
    validate_paging,
    validate_prompt,
    validate_send,
)

if TYPE_CHECKING:
    from ._loop import LoopThread
    from ._readers import ReaderThread
    from ._services import SessionServices

__all__ = ["AsyncSession", "EventHandler", "Session", "SessionCore"]

log = logging.getLogger("copilot")

EventHandler = Callable[[Event], Any]

#: events per page of iter_messages
_PAGE = 1000
#: how many finished turns keep their result for a late send_and_wait / wait_for
_KEEP_RESULTS = 256
_HOST = socket.gethostname()


@dataclass(slots=True)
class _Turn:
    message_id: str
    prompt: str
    replaces: str | None
    metadata: dict[str, Any] | None
    options: dict[str, Any]
    future: asyncio.Future[Event]
    #: the prompt as sent, when ``on_user_prompt_submitted`` changed it
    original_prompt: str | None = None
    #: the context the request was built with (``session.usage_info`` after the reply)
    context: dict[str, Any] | None = None
    #: the prompt's attachments, checked and read (bytes included)
    attachments: list[Attachment] = field(default_factory=list)

    def user_data(self) -> dict[str, Any]:
        """The ``data`` of this turn's ``user.message`` event (attachments by reference)."""
        data: dict[str, Any] = {"content": self.prompt}
        if self.attachments:
            data["attachments"] = [a.reference() for a in self.attachments]
        if self.original_prompt is not None:
            data["originalContent"] = self.original_prompt
        if self.replaces:
            data["replaces"] = self.replaces
        if self.metadata:
            data["metadata"] = self.metadata
        return data


@dataclass(frozen=True, slots=True)
class _Send:
    """A prompt checked on the caller's side, ready to be queued (with its id chosen there)."""

    prompt: str
    replaces: str | None
    metadata: dict[str, Any] | None
    options: dict[str, Any]
    attachments: list[Attachment]
    message_id: str = field(default_factory=new_id)


@dataclass(frozen=True, slots=True)
class _Begun:
    """A turn that began: its prompt and start are stored, its request is built."""

    route: Route
    request: ModelRequest


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How a turn's model call ended: exactly one of a result, an error or an abort reason."""

    result: StreamResult | None = None
    error: CopilotError | None = None
    aborted: str | None = None
    #: the tool calls and results the turn added to its context (the last step saw them)
    tool_messages: tuple[ChatMessage, ...] = ()


@dataclass(slots=True)
class _ModelChange:
    model: str
    future: asyncio.Future[None]
    message_id: str = field(default_factory=new_id)


def _mark_retrieved(future: asyncio.Future[Any]) -> None:
    # A turn nobody waits on may fail; its error is in the log, so don't warn on shutdown.
    if not future.cancelled():
        future.exception()


def _settle(
    done: concurrent.futures.Future[Event],
    future: asyncio.Future[Event] | None,
    error: BaseException | None,
) -> None:
    """Copy a turn's outcome (``future``'s, or ``error``) into ``done``, the future another
    thread waits on; nothing if that waiter gave up (cancelled ``done``)."""
    if not done.set_running_or_notify_cancel():
        return
    if future is not None:
        if future.cancelled():
            error = TurnAbortedError("the turn was aborted")
        else:
            error = future.exception()
    if error is not None:
        done.set_exception(error)
    else:
        assert future is not None
        done.set_result(future.result())


def _timed_out(message_id: str, timeout: float | None) -> TurnTimeoutError:
    return TurnTimeoutError(
        f"no reply within {timeout} s; the turn goes on in the background "
        f"(session.abort() stops it)",
        message_id,
    )


def _process_alive(pid: int, host: str, writer: str, live_writers: set[str]) -> bool:
    if host != _HOST:
        return True  # another machine: we cannot tell, so we do not touch its turn
    if pid == os.getpid():
        return writer in live_writers
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def interrupted_events(message_id: str) -> list[Event]:
    """The ``abort`` and ``assistant.turn_end`` that close a turn whose process died."""
    reason = "interrupted: the process running this turn ended before the reply finished"
    abort = {"messageId": message_id, "reason": reason, "partialContent": ""}
    return [
        Event(EventType.ABORT, abort),
        Event(EventType.ASSISTANT_TURN_END, {"messageId": message_id}),
    ]


class SessionCore:
    """A session on the client's event loop: the queue, the worker, the handlers, the tail."""

    def __init__(
        self,
        services: SessionServices,
        metadata: Mapping[str, Any],
        tools: SessionTools | None = None,
    ) -> None:
        self.services = services
        #: the tools, permission handler and hooks this session object was given (code: never
        #: stored; a resumed session is given them again)
        self.tools = tools
        self.session_id: str = metadata["sessionId"]
        self.model: str = metadata["model"]
        self.streaming: bool = bool(metadata.get("streaming", True))
        self._system_message: str | None = effective_system(metadata)
        #: the session's default ``reasoning_effort`` (a send's own option wins)
        self.reasoning_effort: str | None = metadata.get("reasoningEffort")
        #: tells this session from one deleted and created again under the same id
        self.start_time = metadata.get("startTime")
        self._handlers: tuple[EventHandler, ...] = ()
        self._queue: asyncio.Queue[_Turn | _ModelChange] = asyncio.Queue()
        self._results: OrderedDict[str, asyncio.Future[Event]] = OrderedDict()
        self._current: _Turn | None = None
        self._turn_task: asyncio.Task[None] | None = None
        self._partial: list[str] = []
        self._tail: ConversationTail | None = None
        self._fallback_warned: str | None = None
        #: infinite sessions (copilot.compaction): the settings, the running summary, the
        #: share of the input budget the last reply left filled
        self.compaction = compaction_settings(metadata.get("infiniteSessions"))
        self._compacting: asyncio.Task[Event | None] | None = None
        self._fill = 0.0
        self.closed = False
        self._closing = False
        self._worker = asyncio.get_running_loop().create_task(self._work())

    def apply_settings(self, changes: Mapping[str, Any]) -> None:
        """Take a resume's changed settings (system message, reasoning effort) from now on;
        ``changes`` holds the metadata keys that were just stored."""
        if "systemMessage" in changes or "systemMessageAppend" in changes:
            base = {"systemMessage": self._base_system, **changes}
            self._system_message = effective_system(base)
            self._tail = None  # rebuilt with the new system message at the next turn
        if "reasoningEffort" in changes:
            self.reasoning_effort = changes["reasoningEffort"]
        if "infiniteSessions" in changes:
            self.compaction = compaction_settings(changes["infiniteSessions"])

    @property
    def _base_system(self) -> str | None:
        meta = self.services.store.get_session(self.session_id) or {}
        return meta.get("systemMessage")

    @property
    def client(self) -> SessionServices:
        """The services, under the name recovery (``recover_interrupted``, ``_open_turns``)
        used before they were one object; kept so that code merges unchanged. Use
        :attr:`services` in new code."""
        return self.services

    # -- events ------------------------------------------------------------------------------

    def on(self, handler: EventHandler) -> Callable[[], None]:
        """Call ``handler(event)`` for every event; return a function that unsubscribes it."""
        if not callable(handler):
            raise TypeError("an event handler is a callable taking one event")
        self._handlers = (*self._handlers, handler)

        def unsubscribe() -> None:
            self._handlers = tuple(h for h in self._handlers if h is not handler)

        return unsubscribe

    def _emit(self, event: Event) -> None:
        for handler in self._handlers:
            try:
                handler(event)
            except Exception:  # one broken handler must not silence the others
                log.exception("event handler %r raised on %s", handler, event.type)

    def _notify(self, type: str, data: dict[str, Any]) -> None:
        """Deliver an ephemeral event, built only when a handler listens (a delta's event
        cost more than the rest of its chunk's handling in the library)."""
        if self._handlers:
            self._emit(Event(type, data))

    def record(self, events: list[Event], update: Callable[[dict], None] | None = None) -> None:
        """Append events to the log, then deliver them to the handlers.

        A turn's outcome that could not be written (a full disk) is kept and written before
        the next events of this session, so the turn gets its outcome once space is back.
        """
        self._flush_pending()
        try:
            stored = self.services.store.append(self.session_id, events, update=update)
        except SessionNotFoundError:
            raise
        except StoreError:
            if any(e.type == EventType.ASSISTANT_TURN_END for e in events):
                self._pending_outcomes().append((events, update))
            raise
        for event in stored:
            self._emit(event)

    def _pending_outcomes(self) -> list[tuple[list[Event], Callable[[dict], None] | None]]:
        # Kept in the instance dict, created on first use: the constructor is not touched.
        return self.__dict__.setdefault("_pending", [])

    def _flush_pending(self) -> None:
        """Write the turn outcomes an earlier store failure held back (oldest first)."""
        pending = self._pending_outcomes()
        while pending:
            events, update = pending[0]
            try:
                stored = self.services.store.append(self.session_id, events, update=update)
            except SessionNotFoundError:
                pending.clear()  # deleted meanwhile: nothing left to complete
                raise
            del pending[0]
            for event in stored:
                self._emit(event)

    # -- the queue ---------------------------------------------------------------------------

    def check_open(self) -> None:
        """Raise :class:`SessionClosedError` if this session object was destroyed."""
        if self.closed or self._closing:
            raise SessionClosedError(self.session_id)

    def submit(
        self,
        prompt: str,
        replaces: str | None,
        metadata: dict[str, Any] | None,
        options: dict[str, Any],
        attachments: list[Attachment] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Queue a turn and return its message id (the id its ``user.message`` will have:
        ``message_id``, or a new one).

        Raises :class:`VisionNotSupportedError` (nothing queued) for images on a model that
        cannot read them."""
        self.check_open()
        if attachments:
            self._check_vision(attachments)
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_mark_retrieved)
        turn = _Turn(message_id or new_id(), prompt, replaces, metadata, options, future)
        turn.attachments = list(attachments or ())
        self._results[turn.message_id] = future
        while len(self._results) > _KEEP_RESULTS:
            self._results.popitem(last=False)
        self._queue.put_nowait(turn)
        return turn.message_id

    def _check_vision(self, attachments: list[Attachment]) -> None:
        """Refuse images for a model that cannot see them, naming the models that can."""
        images = [a.display_name for a in attachments if a.is_image]
        if not images:
            return
        try:
            route = self.services.router.resolve(self.model)
        except CopilotError:
            return  # the turn reports the missing model when it runs
        if self.services.provider(route.provider).supports_images(route.name):
            return
        raise VisionNotSupportedError(
            model=route.model_id,
            images=tuple(images),
            seeing=tuple(self.services.vision_models()),
        )

    def submit_and_watch(self, send: _Send, done: concurrent.futures.Future[Event]) -> None:
        """Queue the turn ``send`` and settle ``done`` (a future of another thread) with its
        outcome: the final ``assistant.message``, the turn's error, or what :meth:`submit`
        raised (nothing queued then).

        The sync ``send_and_wait`` posts this to the loop and waits on ``done``: one hop to
        the loop and one back, where a submit and then a wait took two round trips (issue 12,
        2a). The async one calls it from a worker thread (see ``AsyncSession.send_and_wait``).
        """
        try:
            self.submit(
                send.prompt,
                send.replaces,
                send.metadata,
                send.options,
                send.attachments,
                send.message_id,
            )
        except BaseException as exc:
            _settle(done, None, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._results[send.message_id].add_done_callback(lambda future: _settle(done, future, None))

    async def wait_for(self, message_id: str, timeout: float | None) -> Event:
        """Wait for the final ``assistant.message`` of a turn sent by this session object."""
        future = self._results.get(message_id)
        if future is None:
            raise InvalidArgumentError(
                f"no turn {message_id!r} was sent through this session object (or it is one of "
                f"more than {_KEEP_RESULTS} turns ago); read its outcome with get_messages()"
            )
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise _timed_out(message_id, timeout) from None

    async def change_model(self, model: str) -> None:
        """Switch the model for the turns queued after this call, keeping the context."""
        self.check_open()
        self.services.router.resolve(model)  # fail now, not at the next turn
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_ModelChange(model, future))
        await future

    def abort(self, message_id: str | None = None) -> bool:
        """Abort the running turn (or the queued/running turn ``message_id``). True if any."""
        current = self._current
        task = self._turn_task
        running = current is not None and task is not None and not task.done()
        if running and message_id in (None, current.message_id):
            task.cancel()
            return True
        if message_id is not None:
            for turn in list(self._queue._queue):
                if isinstance(turn, _Turn) and turn.message_id == message_id:
                    self._queue._queue.remove(turn)
                    self._queue.task_done()
                    self._abort_unstarted(turn, "aborted before it started")
                    return True
        return False

    async def close(self, timeout: float | None) -> None:
        """Let queued turns finish (up to ``timeout`` s), abort what is left, stop the worker."""
        if self.closed:
            return
        self._closing = True
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            while not self._queue.empty():
                item = self._queue.get_nowait()
                self._queue.task_done()
                if isinstance(item, _Turn):
                    self._abort_unstarted(item, "the session was closed before this turn started")
                else:
                    item.future.cancel()
            if self._turn_task is not None and not self._turn_task.done():
                self._turn_task.cancel()
                await asyncio.wait([self._turn_task])
        self._worker.cancel()
        await asyncio.wait([self._worker])
        if self._compacting is not None and not self._compacting.done():
            self._compacting.cancel()  # recorded as a failed compaction; the log stays whole
            await asyncio.wait([self._compacting])
        if self.tools is not None:
            try:
                await self.tools.hook(
                    "on_session_end", {"reason": "user_exit"}, lambda e: self.record([e])
                )
            except CopilotError:  # the session was deleted meanwhile: nothing to record into
                log.debug("session %s: on_session_end not recorded", self.session_id)
        self.closed = True

    # -- compaction (copilot.compaction) -----------------------------------------------------

    async def compact(self) -> Event | None:
        """Compact now (or wait for the running compaction); returns its
        ``session.compaction_complete``, or None when nothing is old enough to summarize."""
        self.check_open()
        task = self._compacting
        if task is not None and not task.done():
            await asyncio.wait([task])  # a background summary first; then compact what is left
        task = self._start_compaction(now=True)
        await asyncio.wait([task])
        return None if task.cancelled() else task.result()

    def _start_compaction(self, now: bool = False) -> asyncio.Task[Event | None]:
        task = self._compacting
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._compact(now))
            task.add_done_callback(_mark_retrieved)
            self._compacting = task
        return task

    async def _before_turn(self) -> None:
        """Past ``buffer_exhaustion_threshold``, wait for the summary (start one if none runs)
        rather than leave old turns out of this turn's context."""
        settings = self.compaction
        if settings.enabled and self._fill >= settings.buffer_exhaustion_threshold:
            await asyncio.wait([self._start_compaction()])

    async def _compact(self, now: bool = False) -> Event | None:
        """Summarize the oldest exchanges after the current summary; record the outcome.
        ``now`` (``session.compact()``): keep only the newest few exchanges."""
        route = self.services.router.resolve(self.model)
        provider = self.services.provider(route.provider)
        window = provider.context_window(route.name)
        budget = max(window - min(1024, window // 4), 1)
        summarizer = route
        if self.compaction.summary_model:
            summarizer = self.services.router.resolve(self.compaction.summary_model)
        summary_provider = self.services.provider(summarizer.provider)
        summary_window = summary_provider.context_window(summarizer.name)
        summary_max = max(64, int(SUMMARY_SHARE * budget))
        room = summary_window - summary_max - 200  # the instructions and message overheads

        def count(text: str) -> int:
            return provider.count_tokens(route.name, text)

        tail = self._refresh_tail(window)
        keep = KEEP_TURNS_NOW if now else None
        plan = plan_compaction(tail.exchanges(), tail.summary, budget, count, room, keep)
        if plan is None:
            return None
        common = {
            "compactionId": new_id(),
            "model": summarizer.model_id,
            "fromSeq": plan.from_seq,
            "throughSeq": plan.through_seq,
            "preCompactionTokens": plan.tokens_before,
        }
        start = {**common, "turns": len(plan.message_ids)}
        self.record([Event(EventType.SESSION_COMPACTION_START, start)])
        request = ModelRequest(
            summarizer.name,
            summary_messages(plan),
            {"max_tokens": summary_max},
            self.services.request_timeout,
        )
        try:
            result = await stream_reply(
                summary_provider,
                request,
                self.services.retry_policy,
                on_delta=lambda text, attempt: None,
                on_retry=lambda error, attempt, delay: None,
                partial=[],
            )
            summary = result.completion.content.strip()
            if not summary:
                raise ProviderError(f"{summarizer.model_id} returned an empty summary")
        except (CopilotError, asyncio.CancelledError) as error:
            if isinstance(error, asyncio.CancelledError):
                reason = "cancelled: the session was closed"
            else:
                reason = f"{type(error).__name__}: {error}"
            data = {**common, "success": False, "error": reason, "fallback": "truncation"}
            failed = Event(EventType.SESSION_COMPACTION_COMPLETE, data)
            try:
                self.record([failed])
            except CopilotError:
                log.debug("session %s: a failed compaction not recorded", self.session_id)
            return failed
        cut = count(summary) > summary_max
        if cut:
            summary = summary[: summary_max * 4]
        completion = result.completion
        prices = self.services.prices
        cost = None
        if prices is not None:
            cost = prices.cost(
                summarizer.model_id, completion.input_tokens, completion.output_tokens
            )
        summary_tokens = count(summary)
        data = {
            **common,
            "success": True,
            "summary": summary,
            "summaryCut": cut,
            "messageIds": list(plan.message_ids),
            "summaryTokens": summary_tokens,
            "postCompactionTokens": summary_tokens + plan.tokens_kept,
            "inputTokens": completion.input_tokens,
            "outputTokens": completion.output_tokens,
        }
        if cost is not None:
            data["cost"] = cost

        def keep(meta: dict[str, Any]) -> None:
            meta["compaction"] = {"summary": summary, "throughSeq": plan.through_seq}
            add_usage(meta, completion.input_tokens, completion.output_tokens, cost, turn=False)

        done = Event(EventType.SESSION_COMPACTION_COMPLETE, data)
        self.record([done], update=keep)
        if self._tail is tail:
            tail.summary, tail.compacted_through = summary, plan.through_seq
        self._fill = data["postCompactionTokens"] / budget
        return done

    def truncate(self, event_id: str) -> Event:
        """Rewind the session to just after event ``event_id``: the turns after it (and a
        turn it cuts through, before its reply) leave the context, recorded as
        ``session.snapshot_rewind``; a point at a turn's reply or later keeps that turn.
        The log keeps the removed events (``get_events()`` still returns them, a fork before
        the point still has them); the fold and the context skip them."""
        self.check_open()
        if self._current is not None or not self._queue.empty():
            raise InvalidArgumentError(
                "session.truncate() needs an idle session: wait for (or abort) its running and "
                "queued turns first"
            )
        store = self.services.store
        with store.transaction():
            after: list[Event] = []
            point = None
            for event in store.iter_events_backwards(self.session_id):
                if event.id == event_id:
                    point = event
                    break
                after.append(event)
            if point is None:
                raise InvalidArgumentError(
                    f"session {self.session_id!r} has no event {event_id!r}; pick an id from "
                    "session.get_events()"
                )
            after.reverse()
            after = after[rest_of_turn(point, after) :]  # a point at a reply keeps its turn
            gone = rewound_turns(after)
            data = {
                "upToEventId": event_id,
                "eventsRemoved": len(after),
                "eventIds": [e.id for e in after],
                "messageIds": gone,
            }
            prompts = sum(1 for e in after if e.type == EventType.USER_MESSAGE)
            replies = sum(1 for e in after if e.type == EventType.ASSISTANT_MESSAGE)

            def uncount(meta: dict[str, Any]) -> None:
                meta["turnCount"] = max(0, meta.get("turnCount", 0) - prompts)
                meta["messageCount"] = max(0, meta.get("messageCount", 0) - prompts - replies)

            rewind = Event(EventType.SESSION_SNAPSHOT_REWIND, data)
            self.record([rewind], update=uncount)
        self._tail = None  # rebuilt from the log at the next turn
        return rewind

    def set_title(self, title: str) -> Event:
        """Set the session's display title (its id does not change): ``session.title_changed``,
        and ``title`` in its metadata."""
        self.check_open()
        if not isinstance(title, str):
            raise InvalidArgumentTypeError(f"a title is a string, not {type(title).__name__}")
        title = " ".join(title.split())
        if not title or len(title) > 200:
            raise InvalidArgumentError("a title is 1 to 200 characters, not only spaces")
        event = Event(EventType.SESSION_TITLE_CHANGED, {"title": title})
        self.record([event], update=lambda meta: meta.update(title=title))
        return event

    def _abort_unstarted(self, turn: _Turn, reason: str) -> None:
        try:  # every reference in the log has its bytes while the session exists
            self._store_attachments(turn)
        except CopilotError:
            turn.attachments = []  # the session is gone or the store failed: no reference
        events = [
            Event(EventType.USER_MESSAGE, turn.user_data(), id=turn.message_id),
            Event(EventType.ABORT, {"messageId": turn.message_id, "reason": reason}),
        ]
        self.record(events, update=_count_prompt(turn.prompt))
        if not turn.future.done():
            turn.future.set_exception(TurnAbortedError(reason, turn.message_id))

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, _ModelChange):
                    self._apply_model_change(item)
                else:
                    self._current = item
                    task = asyncio.get_running_loop().create_task(self._run(item))
                    self._turn_task = task
                    await asyncio.wait([task])
                    if not item.future.done():
                        # _run could not record the turn's outcome (the session was deleted by
                        # another process, the store failed) or was cancelled before it began
                        error = None if task.cancelled() else task.exception()
                        item.future.set_exception(
                            error or TurnAbortedError("the turn was aborted", item.message_id)
                        )
            except Exception as exc:  # a bug here must not kill the session's worker
                log.exception("session %s: unexpected error in a turn", self.session_id)
                if not item.future.done():
                    item.future.set_exception(exc)
            finally:
                self._current = None
                self._turn_task = None
                self._queue.task_done()

    def _apply_model_change(self, change: _ModelChange) -> None:
        previous, self.model = self.model, change.model
        event = Event(
            EventType.SESSION_MODEL_CHANGE, {"previousModel": previous, "newModel": change.model}
        )
        self.record([event], update=lambda meta: meta.update(model=change.model))
        if not change.future.done():
            change.future.set_result(None)

    # -- a turn ------------------------------------------------------------------------------

    async def _run(self, turn: _Turn) -> None:
        """One turn, in three steps: begin (route, context, prompt stored), stream (the model
        call under the retry policy), record (the outcome). Each step's failure is recorded."""
        if self.tools is not None:
            await self._prompt_hook(turn)
        await self._before_turn()
        begun = self._begin(turn)
        if isinstance(begun, CopilotError):
            self._fail(turn, begun)
            return
        outcome = await self._stream(turn, begun)
        self._record(turn, begun, outcome)

    async def _prompt_hook(self, turn: _Turn) -> None:
        """``on_user_prompt_submitted``: may change the prompt before it is stored and sent."""
        assert self.tools is not None
        output = await self.tools.hook(
            "on_user_prompt_submitted", {"prompt": turn.prompt}, lambda e: self.record([e])
        )
        modified = output.get("modifiedPrompt") if output else None
        if isinstance(modified, str) and modified.strip() and modified != turn.prompt:
            turn.original_prompt, turn.prompt = turn.prompt, modified

    def _begin(self, turn: _Turn) -> _Begun | CopilotError:
        """Resolve the route, build the request and store the prompt and the turn's start.

        One transaction reads the log's tail, builds the context and appends the prompt, the
        turn's start and what the context left out: the context is exactly the log before the
        prompt, even with other writers, and the store work per turn stays the same however
        long the session grows. Handlers hear of it once it has committed. Returns the error
        (the prompt stored, its outcome not yet) when the turn cannot start.
        """
        user = Event(EventType.USER_MESSAGE, turn.user_data(), id=turn.message_id)
        try:
            route = self.services.router.resolve(self.model)
            if self.tools is not None:
                provider = self.services.provider(route.provider)
                self.tools.check_model(
                    provider, route.name, route.model_id, self.services.tool_models
                )
        except CopilotError as error:
            # the bytes first (a crash between leaves a reference the delete releases),
            # then the prompt, whose handlers hear of it once it committed
            self._store_attachments(turn)
            self.record([user], update=_count_prompt(turn.prompt))
            return error
        events = [user]
        if route.warning and self._fallback_warned != route.model_id:
            self._fallback_warned = route.model_id
            warning = {"warningType": "fallback", "message": route.warning, "model": route.model_id}
            events.append(Event(EventType.SESSION_WARNING, warning))
        start_data = {
            "messageId": turn.message_id,
            "model": route.model_id,
            "pid": os.getpid(),
            "host": _HOST,
            "writer": self.services.writer_id,
        }
        events.append(Event(EventType.ASSISTANT_TURN_START, start_data))
        store = self.services.store
        begun: _Begun | CopilotError
        with store.transaction():
            try:
                request, truncation = self._build_request(turn, route)
                begun = _Begun(route, request)
                if truncation is not None:
                    events.append(truncation)
            except CopilotError as error:
                begun = error
            self._store_attachments(turn)
            stored = store.append(self.session_id, events, update=_count_prompt(turn.prompt))
        for event in stored:
            self._emit(event)
        return begun

    def _store_attachments(self, turn: _Turn) -> None:
        """Store the bytes of the turn's attachments (once per content) with this session's
        reference, in the transaction that stores the ``user.message`` naming them."""
        if turn.attachments:
            blobs = [(a.sha256, a.mime_type, a.data) for a in turn.attachments]
            self.services.store.put_blobs(self.session_id, blobs)

    async def _stream(self, turn: _Turn, begun: _Begun) -> _Outcome:
        """Call the model under the retry policy; never raises, the outcome says how it ended.

        A session with tools runs the tool loop here: model -> tool calls -> results -> model,
        all within the turn's ``timeout`` (each model step and each round of calls gets what
        is left of it).
        """
        route = begun.route
        provider = self.services.provider(route.provider)
        loop = asyncio.get_running_loop()
        total = begun.request.timeout
        deadline = None if total is None else loop.time() + float(total)

        def remaining() -> float | None:
            return None if deadline is None else deadline - loop.time()

        async def step(messages: tuple[ChatMessage, ...]) -> StreamResult:
            request = replace(begun.request, messages=messages)
            left = remaining()
            if left is not None and messages is not begun.request.messages:
                if left <= 0:
                    raise ProviderTimeoutError(
                        f"{route.provider} model {route.name!r}: the turn's {total:g} s ran "
                        "out during its tool calls, before the model could answer",
                        provider=route.provider,
                        model=route.name,
                    )
                request = replace(request, timeout=left)
            result = await stream_reply(
                provider,
                request,
                self.services.retry_policy,
                on_delta=lambda text, attempt: self._on_delta(turn, text, attempt),
                on_retry=lambda error, attempt, delay: self._on_retry(turn, error, attempt, delay),
                partial=self._partial,
            )
            if result.completion.tool_calls:
                self._partial.clear()  # that text is recorded with the step, not as a reply
            return result

        try:
            if self.tools is not None and self.tools.has_tools:
                looped = await run_tool_loop(
                    step,
                    begun.request.messages,
                    self.tools.runner,
                    max_rounds=self.tools.max_rounds,
                    message_id=turn.message_id,
                    model_id=route.model_id,
                    record=lambda event: self.record([event]),
                    remaining=remaining,
                )
                result = combine_steps(looped.steps)
                added = looped.added
            else:
                result = await step(begun.request.messages)
                added = ()
        except asyncio.CancelledError:
            return _Outcome(aborted="aborted")
        except CopilotError as error:
            if self.tools is not None and not isinstance(error, ToolRoundLimitError):
                await self._error_hook(error)
            return _Outcome(error=error)
        except Exception as exc:  # a provider bug: report it like any failure
            message = f"{route.provider} failed unexpectedly: {type(exc).__name__}: {exc}"
            return _Outcome(error=ProviderError(message))
        return _Outcome(result=result, tool_messages=added)

    async def _error_hook(self, error: CopilotError) -> None:
        """``on_error_occurred`` for a failed model call (tool errors are the runner's)."""
        assert self.tools is not None
        data = {
            "error": f"{type(error).__name__}: {error}",
            "errorContext": "model_call",
            "recoverable": bool(getattr(error, "retryable", False)),
        }
        await self.tools.hook("on_error_occurred", data, lambda e: self.record([e]))

    def _record(self, turn: _Turn, begun: _Begun, outcome: _Outcome) -> None:
        """Store the outcome of a turn that began, and settle its future."""
        if outcome.aborted is not None:
            self._aborted(turn, outcome.aborted)
            return
        if outcome.error is not None:
            self._fail(turn, outcome.error)
            return
        assert outcome.result is not None
        model_id = begun.route.model_id
        result, completion = outcome.result, outcome.result.completion
        message = Event(
            EventType.ASSISTANT_MESSAGE,
            {
                "messageId": turn.message_id,
                "content": completion.content,
                "model": model_id,
                "responseModel": completion.model,
                "finishReason": completion.finish_reason,
            },
        )
        usage_data: dict[str, Any] = {
            "messageId": turn.message_id,
            "model": model_id,
            "inputTokens": completion.input_tokens,
            "outputTokens": completion.output_tokens,
            "duration": round(result.duration_ms, 3),
            "timeToFirstToken": (
                None if result.first_token_ms is None else round(result.first_token_ms, 3)
            ),
            "attempts": result.attempts,
        }
        prices = self.services.prices
        cost = None
        if prices is not None:
            cost = prices.cost(model_id, completion.input_tokens, completion.output_tokens)
        if cost is not None:
            usage_data["cost"] = cost
        info = None
        if turn.context is not None:
            info = self._usage_info(turn, begun, completion.content, outcome.tool_messages)
            # stored with the usage (a chart of context fill reads the log); the event itself
            # is ephemeral, as in the Copilot SDK
            usage_data["contextTokens"] = info["currentTokens"]
            usage_data["tokenLimit"] = info["tokenLimit"]
        usage = Event(EventType.ASSISTANT_USAGE, usage_data)
        end = Event(EventType.ASSISTANT_TURN_END, {"messageId": turn.message_id})
        reply_events = [message, usage, end]
        if completion.reasoning:
            thinking = {
                "messageId": turn.message_id,
                "reasoningId": new_id(),
                "content": completion.reasoning,
            }
            reply_events.insert(0, Event(EventType.ASSISTANT_REASONING, thinking))

        def count_reply(meta: dict[str, Any]) -> None:
            meta["messageCount"] = meta.get("messageCount", 0) + 1
            meta["lastModel"] = model_id
            add_usage(meta, completion.input_tokens, completion.output_tokens, cost)

        if info is not None:  # ephemeral: delivered just before the reply it counts is stored
            self._notify(EventType.SESSION_USAGE_INFO, info)
        self.record(reply_events, update=count_reply)
        if turn.context is not None and info is not None:
            self._fill = info["currentTokens"] / max(turn.context["budget"], 1)
            settings = self.compaction
            if settings.enabled and self._fill >= settings.background_compaction_threshold:
                self._start_compaction()
        self._notify(EventType.SESSION_IDLE, {})
        if not turn.future.done():
            turn.future.set_result(message)

    def _usage_info(
        self, turn: _Turn, begun: _Begun, reply: str, tool_messages: tuple[ChatMessage, ...] = ()
    ) -> dict[str, Any]:
        """``session.usage_info`` after a reply: the tokens the conversation holds now (the
        context sent, the turn's tool calls and results, the reply) against the model's
        window, in the provider's count."""
        assert turn.context is not None
        provider = self.services.provider(begun.route.provider)

        def count(text: str) -> int:
            return provider.count_tokens(begun.route.name, text)

        reply_tokens = count(reply) + MESSAGE_OVERHEAD
        current = turn.context["tokens"] + steps_tokens(tool_messages, count) + reply_tokens
        return {
            "messageId": turn.message_id,
            "currentTokens": current,
            "tokenLimit": turn.context["window"],
            "messagesLength": turn.context["messages"] + len(tool_messages) + 1,
            "systemTokens": turn.context["system"],
            "conversationTokens": current - turn.context["system"],
        }

    def _build_request(self, turn: _Turn, route: Route) -> tuple[ModelRequest, Event | None]:
        """The model request of ``turn``, and a ``session.truncation`` event if history was
        left out to fit the model's context window."""
        provider = self.services.provider(route.provider)
        window = provider.context_window(route.name)
        max_tokens = turn.options.get("max_tokens")
        reserve = int(max_tokens) if max_tokens else min(1024, window // 4)
        budget = max(window - reserve, 1)
        tail = self._refresh_tail(window)
        if turn.replaces:  # this turn's user.message is stored after the context is built
            tail.drop(turn.replaces)
        counter = f"{route.provider}:{route.name}"
        built = tail.build(
            turn.prompt,
            budget,
            lambda text: provider.count_tokens(route.name, text),
            counter,
            attachments=turn.attachments,
            load=self.services.store.get_blob,
            images=provider.supports_images(route.name),
        )
        tail.forget_before(window, counter)
        system = tail.system_message
        turn.context = {
            "tokens": built.tokens,
            "window": window,
            "budget": budget,
            "messages": len(built.messages),
            "system": provider.count_tokens(route.name, system) + MESSAGE_OVERHEAD if system else 0,
        }
        truncation = None
        if built.omitted_turns:
            data = {
                "messageId": turn.message_id,
                "tokenLimit": budget,
                "tokensSent": built.tokens,
                "turnsSent": sum(1 for m in built.messages if m.role == "user") - 1,
                "turnsOmitted": built.omitted_turns,
                "tokensOmitted": built.omitted_tokens,
            }
            truncation = Event(EventType.SESSION_TRUNCATION, data)
        options = {k: v for k, v in turn.options.items() if k != "timeout"}
        if self.reasoning_effort is not None and options.get("reasoning_effort") is None:
            options["reasoning_effort"] = self.reasoning_effort
        timeout = turn.options.get("timeout", self.services.request_timeout)
        tools = self.tools.schemas() if self.tools is not None else ()
        return ModelRequest(route.name, built.messages, options, timeout, tools), truncation

    def _refresh_tail(self, window: int) -> ConversationTail:
        """The conversation tail, topped up with the events stored since it was last read."""
        store = self.services.store
        meta = store.get_session(self.session_id)
        if meta is None:
            raise SessionNotFoundError(self.session_id)
        if meta.get("startTime") != self.start_time:  # deleted and created again elsewhere
            self.start_time, self._tail = meta.get("startTime"), None
        if self._tail is not None:
            new = store.read_events(self.session_id, after=self._tail.last_seq)
            self._tail.fold(new)
            for event in new:
                data = event.data
                if event.type == EventType.SESSION_COMPACTION_COMPLETE and data.get("success"):
                    self._tail.summary = data["summary"]
                    self._tail.compacted_through = data["throughSeq"]
            return self._tail
        loaded: list[Event] = []
        tokens = 0
        for event in store.iter_events_backwards(self.session_id):
            loaded.append(event)
            if event.type in (EventType.USER_MESSAGE, EventType.ASSISTANT_MESSAGE):
                tokens += estimate_tokens(event.data.get("content", ""))
                if tokens > window:
                    break
        loaded.reverse()
        meta = store.get_session(self.session_id) or {}
        prompts = sum(1 for e in loaded if e.type == EventType.USER_MESSAGE)
        self._tail = ConversationTail(
            self._system_message, max(0, meta.get("turnCount", 0) - prompts)
        )
        self._tail.fold(loaded)
        latest = meta.get("compaction")
        if latest:  # a fresh process starts from the latest summary, kept in the metadata
            self._tail.summary = latest["summary"]
            self._tail.compacted_through = latest["throughSeq"]
        return self._tail

    def _on_delta(self, turn: _Turn, text: str, attempt: int) -> None:
        if self.streaming and self._handlers:
            data = {"messageId": turn.message_id, "deltaContent": text, "attempt": attempt}
            self._emit(Event(EventType.ASSISTANT_MESSAGE_DELTA, data))

    def _on_retry(self, turn: _Turn, error: ProviderError, attempt: int, delay: float) -> None:
        data = {
            "warningType": "retry",
            "messageId": turn.message_id,
            "message": f"retrying in {delay:.1f} s after: {error}",
            "errorType": type(error).__name__,
            "attempt": attempt + 1,
        }
        self.record([Event(EventType.SESSION_WARNING, data)])

    def _fail(self, turn: _Turn, error: CopilotError) -> None:
        data = {
            "messageId": turn.message_id,
            "errorType": type(error).__name__,
            "message": str(error),
        }
        status = getattr(error, "status_code", None)
        if status is not None:
            data["statusCode"] = status
        events = [Event(EventType.SESSION_ERROR, data)]
        events.append(Event(EventType.ASSISTANT_TURN_END, {"messageId": turn.message_id}))
        self.record(events)
        self._notify(EventType.SESSION_IDLE, {})
        if not turn.future.done():
            turn.future.set_exception(error)

    def _aborted(self, turn: _Turn, reason: str) -> None:
        partial = "".join(self._partial)
        data = {"messageId": turn.message_id, "reason": reason, "partialContent": partial}
        end = Event(EventType.ASSISTANT_TURN_END, {"messageId": turn.message_id})
        self.record([Event(EventType.ABORT, data), end])
        self._notify(EventType.SESSION_IDLE, {})
        if not turn.future.done():
            turn.future.set_exception(TurnAbortedError(f"the turn was {reason}", turn.message_id))

    # -- recovery ----------------------------------------------------------------------------

    def recover_interrupted(self, live_writers: set[str]) -> int:
        """Mark turns left open by a process that has died; return how many were marked.

        The scan and the marking share one transaction, so two processes resuming the same
        session at once mark a dead turn once.
        """
        with self.client.store.transaction():
            self._flush_pending()
            dead = [s for s in self._open_turns() if not self._owner_alive(s, live_writers)]
            for start in dead:
                self.record(interrupted_events(start.data["messageId"]))
        return len(dead)

    def _open_turns(self) -> list[Event]:
        """The ``assistant.turn_start`` events of the log's unfinished turns, oldest first,
        however far back (the store keeps them in the log's head)."""
        return self.client.store.open_turns(self.session_id)

    @staticmethod
    def _owner_alive(start: Event, live_writers: set[str]) -> bool:
        data = start.data
        return _process_alive(
            data.get("pid", -1), data.get("host", ""), data.get("writer", ""), live_writers
        )


def effective_system(metadata: Mapping[str, Any]) -> str | None:
    """The system message a session sends: its own, then the part a resume appended."""
    parts = [metadata.get("systemMessage"), metadata.get("systemMessageAppend")]
    return "\n\n".join(p for p in parts if p) or None


def add_usage(
    meta: dict[str, Any],
    input_tokens: int | None,
    output_tokens: int | None,
    cost: float | None,
    *,
    turn: bool = True,
) -> None:
    """Add one model call to the session's ``usage`` totals in its metadata (kept by the
    append's metadata update, so the totals never need the log read): ``turns``,
    ``inputTokens``, ``outputTokens``, ``cost`` (dollars, the priced calls) and
    ``unpricedTurns`` (calls of models with no known price, left out of ``cost``)."""
    usage = dict(meta.get("usage") or {})
    key = "turns" if turn else "compactions"  # a summary's call costs, but is not a turn
    usage[key] = usage.get(key, 0) + 1
    usage["inputTokens"] = usage.get("inputTokens", 0) + (input_tokens or 0)
    usage["outputTokens"] = usage.get("outputTokens", 0) + (output_tokens or 0)
    if cost is None:
        usage["unpricedTurns"] = usage.get("unpricedTurns", 0) + 1
        usage.setdefault("cost", 0.0)
    else:
        usage["cost"] = round(usage.get("cost", 0.0) + cost, 10)
        usage.setdefault("unpricedTurns", 0)
    meta["usage"] = usage


def _count_prompt(prompt: str) -> Callable[[dict[str, Any]], None]:
    def update(meta: dict[str, Any]) -> None:
        meta["messageCount"] = meta.get("messageCount", 0) + 1
        meta["turnCount"] = meta.get("turnCount", 0) + 1
        if not meta.get("summary"):
            meta["summary"] = " ".join(prompt.split())[:100]

    return update


def _prompt_of(prompt: str | Mapping[str, Any] | None, kwargs: dict[str, Any]) -> str:
    # The official SDK takes send({"prompt": ...}); the seed writes send(prompt=...).
    if isinstance(prompt, Mapping):
        kwargs.update({k: v for k, v in prompt.items() if k != "prompt"})
        prompt = prompt.get("prompt")
    return validate_prompt(prompt)


def _with(options: dict[str, Any], attachments: Any) -> dict[str, Any]:
    """The send options with ``attachments`` among them (where the dict form puts them)."""
    if attachments is not None:
        options["attachments"] = attachments
    return options


def _attachments_of(options: dict[str, Any], max_bytes: int) -> list[Attachment]:
    """Take ``attachments`` out of the send options, checked and read (before queuing)."""
    return resolve_attachments(options.pop("attachments", None), max_bytes)


class _SessionFace:
    """What both faces share: identity, handlers, and a repr without secrets."""

    def __init__(self, core: SessionCore, runner: LoopThread, readers: ReaderThread) -> None:
        self._core = core
        self._runner = runner
        self._readers = readers

    @property
    def session_id(self) -> str:
        """The session's id."""
        return self._core.session_id

    @property
    def model(self) -> str:
        """The model the session's next turn asks for."""
        return self._core.model

    @property
    def closed(self) -> bool:
        """True once this session object was destroyed (its data stays on disk)."""
        return self._core.closed or self._core._closing

    def on(self, handler: EventHandler) -> Callable[[], None]:
        """Subscribe ``handler(event)`` to every event; returns the unsubscribe function.

        Handlers run on the client's event thread: keep them short, and do not call blocking
        client methods from them (``send`` is fine).
        """
        return self._core.on(handler)

    def _prepare(
        self,
        prompt: Any,
        replaces: str | None,
        metadata: Mapping[str, Any] | None,
        options: dict[str, Any],
    ) -> _Send:
        """Check a send on the caller's side (the attachments read); raise before anything
        is queued."""
        text = _prompt_of(prompt, options)
        attached = _attachments_of(options, self._core.services.max_attachment_bytes)
        replaces, metadata, options = validate_send(replaces, metadata, options)
        meta = validate_metadata(metadata)
        self._core.check_open()
        return _Send(text, replaces, meta, options, attached)

    def _submit(
        self,
        prompt: Any,
        replaces: str | None,
        metadata: Mapping[str, Any] | None,
        options: dict[str, Any],
    ) -> str:
        send = self._prepare(prompt, replaces, metadata, options)
        return self._runner.call(
            self._core.submit,
            send.prompt,
            send.replaces,
            send.metadata,
            send.options,
            send.attachments,
            send.message_id,
        )

    async def _asubmit(
        self,
        prompt: Any,
        replaces: str | None,
        metadata: Mapping[str, Any] | None,
        options: dict[str, Any],
    ) -> str:
        # The same checks and hop as _submit, from a worker thread: the hop waits for the
        # client's loop, which may be inside a store write, and the caller's loop must not.
        return await asyncio.to_thread(self._submit, prompt, replaces, metadata, options)

    def _queue(
        self,
        prompt: Any,
        replaces: str | None,
        metadata: Mapping[str, Any] | None,
        options: dict[str, Any],
        done: concurrent.futures.Future[Event],
    ) -> _Send:
        """Check a send, queue it and link its outcome to ``done``, returning once the loop
        has queued it (one round trip; errors of the queuing step settle ``done``)."""
        send = self._prepare(prompt, replaces, metadata, options)
        self._runner.call(self._core.submit_and_watch, send, done)
        return send

    def _post(self, send: _Send) -> concurrent.futures.Future[Event]:
        """Queue ``send`` on the client's loop without waiting for it; the returned future
        settles with the turn's outcome (see :meth:`SessionCore.submit_and_watch`)."""
        done: concurrent.futures.Future[Event] = concurrent.futures.Future()
        self._runner.post(self._core.submit_and_watch, send, done)
        return done

    def __repr__(self) -> str:
        state = "destroyed" if self._core.closed else "open"
        return f"<{type(self).__name__} {self.session_id!r} model={self.model!r} {state}>"


class Session(_SessionFace):
    """A conversation: send prompts, read its history. Made by :class:`copilot.CopilotClient`."""

    def send(
        self,
        prompt: Any = None,
        *,
        attachments: list[Mapping[str, Any]] | None = None,
        replaces: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> str:
        """Queue ``prompt`` and return its message id at once; the turn runs in the background.

        Turns of one session run in order; different sessions run concurrently. ``options``
        are generation options (``temperature``, ``max_tokens``, ``timeout``,
        ``reasoning_effort``). ``replaces`` names an earlier turn's message id that this one
        supersedes (a re-run notebook cell):
        that exchange leaves the model context, and stays in the log. ``metadata`` (JSON
        values) is stored with the prompt, never sent to the model.

        ``attachments`` take the Copilot SDK's shapes: ``{"type": "file", "path": ...}`` and
        ``{"type": "blob", "data": <base64>, "mimeType": ..., "displayName": ...}``; images
        (png, jpeg, gif, webp) go to models that can see, UTF-8 text inline under a header
        naming the file. They are checked before the turn is queued
        (:class:`~copilot.errors.AttachmentError` and its subclasses, or
        :class:`~copilot.errors.VisionNotSupportedError`; nothing stored) and their bytes
        are stored once per content, referenced by the ``user.message`` event.
        """
        return self._submit(prompt, replaces, metadata, _with(options, attachments))

    def send_and_wait(
        self,
        prompt: Any = None,
        *,
        timeout: float | None = None,
        attachments: list[Mapping[str, Any]] | None = None,
        replaces: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Event:
        """Send ``prompt`` and wait for its final ``assistant.message`` event.

        Raises the turn's error (a :class:`~copilot.errors.ProviderError`, a
        :class:`~copilot.errors.TurnAbortedError`), or :class:`~copilot.errors.TurnTimeoutError`
        after ``timeout`` seconds. Interrupting the wait (Ctrl-C, the notebook's stop button)
        aborts the turn; the partial reply is kept in an ``abort`` event.
        """
        validate_option("timeout", timeout)
        self._runner.check_blocking_allowed()
        send = self._prepare(prompt, replaces, metadata, _with(options, attachments))
        done = self._post(send)
        try:
            return done.result(timeout)
        except KeyboardInterrupt:
            # runs after the post above (the loop takes them in order), so it finds the turn
            self._runner.call(self._core.abort, send.message_id)
            raise
        except TimeoutError as exc:
            if done.done() and not done.cancelled() and done.exception() is exc:
                raise  # the turn's own error, not this wait running out
            raise _timed_out(send.message_id, timeout) from None

    def wait(self, message_id: str, timeout: float | None = None) -> Event:
        """Wait for the final ``assistant.message`` of a turn this object sent with :meth:`send`.

        Raises what :meth:`send_and_wait` raises; :class:`~copilot.errors.TurnTimeoutError`
        leaves the turn running. :class:`~copilot.errors.InvalidArgumentError` if
        ``message_id`` was not sent through this session object (or is long gone: the last
        256 turns are kept).
        """
        return self._runner.run(self._core.wait_for(message_id, timeout))

    def get_messages(
        self, after: int = 0, limit: int | None = None, *, last: int | None = None
    ) -> list[Event]:
        """The session's stored events, oldest first; with ``after``, only those whose
        ``seq`` is greater (an incremental read: pass the last ``event.seq`` you have);
        ``limit`` caps the count, ``last=N`` reads the newest N."""
        after, limit, last = validate_paging(after, limit, last)
        store = self._core.services.store
        return self._readers.call(store.page, self.session_id, after, limit, last)

    def get_events(
        self, after: int = 0, limit: int | None = None, *, last: int | None = None
    ) -> list[Event]:
        """The Copilot SDK's name for :meth:`get_messages` (the same events, the same paging)."""
        return self.get_messages(after, limit, last=last)

    def iter_messages(self, after: int = 0) -> Iterator[Event]:
        """The session's stored events, oldest first, read 1,000 at a time (constant memory)."""
        after = validate_paging(after, None)[0]
        store = self._core.services.store
        while True:
            page = self._readers.call(store.page, self.session_id, after, _PAGE, None)
            yield from page
            if len(page) < _PAGE:
                return
            after = page[-1].seq or after

    def abort(self, message_id: str | None = None) -> bool:
        """Abort the running turn, or only the turn ``message_id`` (running or still queued).

        The partial reply is stored in an ``abort`` event. Returns True if a turn was aborted.
        """
        return self._runner.call(self._core.abort, message_id)

    def set_model(self, model: str) -> None:
        """Use ``model`` from the next turn on; the conversation's context is kept."""
        self._runner.run(self._core.change_model(model))

    def truncate(self, event_id: str) -> Event:
        """Remove the events after ``event_id`` from the conversation (the Copilot SDK's
        rewind); returns the ``session.snapshot_rewind`` event. The log keeps them: see
        :meth:`SessionCore.truncate`. Raises InvalidArgumentError for an unknown id or while
        a turn runs."""
        return self._runner.call(self._core.truncate, event_id)

    def compact(self) -> Event | None:
        """Summarize the oldest turns now (or wait for the running summary); returns the
        ``session.compaction_complete`` event (``success`` False when the summary failed:
        old turns then fall out of the context as without compaction), or None when the
        context holds nothing old enough to summarize. See :mod:`copilot.compaction`."""
        return self._runner.run(self._core.compact())

    def set_title(self, title: str) -> Event:
        """Set the display title (``session.title_changed``); the id stays. See
        ``client.rename_session`` to change the id."""
        return self._runner.call(self._core.set_title, title)

    def destroy(self, timeout: float | None = 60.0) -> None:
        """Close this session object, keeping its data on disk.

        Queued turns finish first (for up to ``timeout`` seconds; what is left is aborted and
        recorded as such). ``client.resume_session(id)`` opens the session again.
        """
        if self._runner.running:
            self._runner.run(self._core.services.close(self._core, timeout))

    def disconnect(self, timeout: float | None = 60.0) -> None:
        """The Copilot SDK's name for :meth:`destroy`: close this object, keep the data."""
        self.destroy(timeout)


class AsyncSession(_SessionFace):
    """The async twin of :class:`Session`: the same methods, awaited."""

    async def send(
        self,
        prompt: Any = None,
        *,
        attachments: list[Mapping[str, Any]] | None = None,
        replaces: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> str:
        """Queue ``prompt`` and return its message id; see :meth:`Session.send`."""
        return await self._asubmit(prompt, replaces, metadata, _with(options, attachments))

    async def send_and_wait(
        self,
        prompt: Any = None,
        *,
        timeout: float | None = None,
        attachments: list[Mapping[str, Any]] | None = None,
        replaces: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Event:
        """Send ``prompt`` and await its final ``assistant.message``; see :meth:`Session.send_and_wait`."""
        validate_option("timeout", timeout)
        done: concurrent.futures.Future[Event] = concurrent.futures.Future()
        # Checked and queued from a worker thread, waiting for the loop to take the turn (as
        # send() does), then awaited here. Posting without waiting, as the sync face does, was
        # measured: 16 sessions sending at once (bench 4d) took 276-280 ms against 256-265 ms,
        # all sixteen turns starting in one burst.
        send = await asyncio.to_thread(
            self._queue, prompt, replaces, metadata, _with(options, attachments), done
        )
        outcome = asyncio.wrap_future(done)
        try:
            await asyncio.wait([outcome], timeout=timeout)
        except asyncio.CancelledError:
            outcome.cancel()
            self._runner.post(self._core.abort, send.message_id)
            raise
        if not outcome.done():
            outcome.cancel()  # the turn goes on; its outcome is not wanted here any more
            raise _timed_out(send.message_id, timeout)
        return outcome.result()

    async def wait(self, message_id: str, timeout: float | None = None) -> Event:
        """Await the final ``assistant.message`` of a turn sent by :meth:`send`; see
        :meth:`Session.wait`."""
        return await self._runner.arun(self._core.wait_for(message_id, timeout))

    async def get_messages(
        self, after: int = 0, limit: int | None = None, *, last: int | None = None
    ) -> list[Event]:
        """The session's stored events, oldest first; see :meth:`Session.get_messages`."""
        after, limit, last = validate_paging(after, limit, last)
        store = self._core.services.store
        return await self._readers.acall(store.page, self.session_id, after, limit, last)

    async def get_events(
        self, after: int = 0, limit: int | None = None, *, last: int | None = None
    ) -> list[Event]:
        """The Copilot SDK's name for :meth:`get_messages`."""
        return await self.get_messages(after, limit, last=last)

    async def iter_messages(self, after: int = 0) -> AsyncIterator[Event]:
        """The session's stored events, 1,000 read at a time off the event loop."""
        after = validate_paging(after, None)[0]
        store = self._core.services.store
        while True:
            page = await self._readers.acall(store.page, self.session_id, after, _PAGE, None)
            for event in page:
                yield event
            if len(page) < _PAGE:
                return
            after = page[-1].seq or after

    async def abort(self, message_id: str | None = None) -> bool:
        """Abort the running turn, or the turn ``message_id``; see :meth:`Session.abort`."""
        return await self._runner.acall(self._core.abort, message_id)

    async def set_model(self, model: str) -> None:
        """Use ``model`` from the next turn on; see :meth:`Session.set_model`."""
        await self._runner.arun(self._core.change_model(model))

    async def truncate(self, event_id: str) -> Event:
        """Remove the events after ``event_id``; see :meth:`Session.truncate`."""
        return await self._runner.acall(self._core.truncate, event_id)

    async def compact(self) -> Event | None:
        """Summarize the oldest turns now; see :meth:`Session.compact`."""
        return await self._runner.arun(self._core.compact())

    async def set_title(self, title: str) -> Event:
        """Set the display title; see :meth:`Session.set_title`."""
        return await self._runner.acall(self._core.set_title, title)

    async def destroy(self, timeout: float | None = 60.0) -> None:
        """Close this session object, keeping its data; see :meth:`Session.destroy`."""
        if self._runner.running:
            await self._runner.arun(self._core.services.close(self._core, timeout))

    async def disconnect(self, timeout: float | None = 60.0) -> None:
        """The Copilot SDK's name for :meth:`destroy`."""
        await self.destroy(timeout)
