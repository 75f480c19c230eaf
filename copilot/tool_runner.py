"""Run the tool calls of one model step: hooks, permission, handler, result; no I/O of its own.

:class:`ToolRunner` takes the :class:`~copilot.providers.base.ToolCallRequest` items of one
reply and runs them concurrently (independent calls), each through the same steps:

1. ``tool.execution_start`` (call id, name, the model's arguments);
2. the arguments are parsed (invalid JSON, or not an object: a failure the model can read);
3. ``on_pre_tool_use``: may deny the call, change its arguments, or decide the permission;
4. permission (``permission.requested`` / ``permission.completed``), unless the tool has
   ``skip_permission`` or the pre-hook said ``allow``; no handler means denied, as in the SDK;
5. the handler: async ones awaited, sync ones on a worker thread; bounded by ``timeout``;
6. ``on_post_tool_use``: may change the result;
7. ``tool.execution_complete`` (success, result type, the text the model sees, the error kept
   for the user, duration).

The pre-hook runs *before* the permission question, as in the Copilot CLI, so the user
approves the arguments that will actually run, and a hook that rewrites them cannot slip past
an approval given for other ones.

Sync user code (handlers, the permission handler, hooks) runs on a daemon thread per call, so
a tool that never returns cannot keep the program from exiting.

A handler that raises gives the model the SDK's generic text (``Invoking this tool produced an
error. Detailed information is not available.``): exception messages can hold secrets or
paths. The event keeps ``error`` for the user. A hook that raises is recorded in its
``hook.end`` event and otherwise ignored. Cancelling :meth:`ToolRunner.run` (an abort)
cancels the running handlers and records each unfinished call as completed with
``error: aborted`` before the cancellation propagates, so the log never holds a call without
an outcome. A sync handler's thread cannot be stopped: after a timeout or an abort it runs on
in the background (a daemon thread) and its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import inspect
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .events import Event, EventType, new_id
from .providers.base import ToolCallRequest, ToolSchema
from .tools import (
    HOOK_TYPES,
    PermissionHandler,
    PermissionRequest,
    PermissionRequestResult,
    Tool,
    ToolInvocation,
    ToolResult,
    check_hooks,
    is_async_callable,
    normalize_result,
)

__all__ = [
    "DEFAULT_MAX_RESULT_CHARS",
    "DEFAULT_TOOL_TIMEOUT",
    "ERROR_TEXT",
    "ToolOutcome",
    "ToolRound",
    "ToolRunner",
]

#: what the model is told when a handler raised (the SDK's words)
ERROR_TEXT = "Invoking this tool produced an error. Detailed information is not available."
ABORTED_TEXT = "The tool call was aborted by the user before it finished."
DEFAULT_TOOL_TIMEOUT = 60.0
DEFAULT_MAX_RESULT_CHARS = 50_000


@dataclass(slots=True)
class ToolOutcome:
    """How one call ended: the call, the arguments it ran with, its result, its duration."""

    call: ToolCallRequest
    arguments: Any
    result: ToolResult
    duration_ms: float


@dataclass(slots=True)
class ToolRound:
    """The outcome of one model step's calls (in the model's order) and the events to record."""

    outcomes: list[ToolOutcome] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


class _Denied(Exception):
    """Raised inside one call to end it with a denied result."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class ToolRunner:
    """Runs tool calls for one session. Holds no state between rounds but its configuration.

    Parameters:
        tools: the tools the model may call.
        session_id: told to handlers, the permission handler and hooks.
        on_permission_request: ``f(request, {"session_id": ...})``, sync or async.
        hooks: a :class:`~copilot.tools.SessionHooks` dict.
        timeout: seconds one call may take (None: unbounded).
        max_result_chars: the text a result may send to the model and the log; longer text is
            cut and says so.
    """

    def __init__(
        self,
        tools: Sequence[Tool],
        *,
        session_id: str,
        on_permission_request: Callable[..., Any] | None = None,
        hooks: Mapping[str, Any] | None = None,
        timeout: float | None = DEFAULT_TOOL_TIMEOUT,
        max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
    ) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self.session_id = session_id
        self.on_permission_request = on_permission_request
        self.hooks = check_hooks(hooks)
        self.timeout = timeout
        self.max_result_chars = max_result_chars

    def schemas(self) -> tuple[ToolSchema, ...]:
        """The tools as the model sees them."""
        return tuple(ToolSchema(t.name, t.description, t.schema()) for t in self.tools.values())

    # -- a round ------------------------------------------------------------------------------

    async def run(
        self,
        calls: Sequence[ToolCallRequest],
        *,
        message_id: str | None = None,
        on_event: Callable[[Event], None] | None = None,
        timeout: float | None = None,
    ) -> ToolRound:
        """Run ``calls`` concurrently; return their outcomes in the calls' order.

        ``on_event`` is called with each event as it happens (to record and show it at once);
        the same events are in the returned round, in that order. ``timeout`` lowers the
        per-call limit for this round (what is left of a turn's time).
        """
        limit = self.timeout
        if timeout is not None:
            limit = timeout if limit is None else min(limit, timeout)
        round_ = ToolRound()

        def emit(kind: EventType, data: dict[str, Any]) -> None:
            if message_id is not None:
                data = {"messageId": message_id, **data}
            event = Event(kind, data)
            round_.events.append(event)
            if on_event is not None:
                on_event(event)

        outcomes = await asyncio.gather(*(self._one(call, emit, limit) for call in calls))
        round_.outcomes = list(outcomes)
        return round_

    async def _one(
        self, call: ToolCallRequest, emit: Callable[..., None], limit: float | None
    ) -> ToolOutcome:
        started = time.perf_counter()
        emit(
            EventType.TOOL_EXECUTION_START,
            {"toolCallId": call.id, "toolName": call.name, "arguments": _parse_lenient(call)},
        )
        arguments: Any = None
        modified = False
        try:
            tool = self.tools.get(call.name)
            if tool is None:
                known = ", ".join(self.tools) or "none"
                raise _Failed(f"Tool '{call.name}' does not exist. Available tools: {known}.")
            arguments = _parse_arguments(call)
            arguments, modified, context = await self._pre_hook(tool, call, arguments, emit)
            result = await self._execute(tool, call, arguments, emit, limit)
            result = await self._post_hook(tool, call, arguments, result, emit)
            if context:
                result = dataclasses.replace(
                    result, text_result_for_llm=f"{result.text_result_for_llm}\n\n{context}"
                )
        except _Denied as denied:
            result = ToolResult(denied.text, "denied")
        except _Failed as failed:
            result = ToolResult(failed.text, "failure", error=failed.text)
        except asyncio.CancelledError:
            self._complete(
                call, ToolResult(ABORTED_TEXT, "failure", error="aborted"), started, emit, None
            )
            raise
        result = self._cap(result)
        self._complete(call, result, started, emit, arguments if modified else None)
        return ToolOutcome(call, arguments, result, (time.perf_counter() - started) * 1000)

    def _complete(
        self,
        call: ToolCallRequest,
        result: ToolResult,
        started: float,
        emit: Callable[..., None],
        modified_arguments: Any,
    ) -> None:
        data: dict[str, Any] = {
            "toolCallId": call.id,
            "toolName": call.name,
            "success": result.result_type == "success",
            "resultType": result.result_type,
            "result": {"content": result.text_result_for_llm},
            "durationMs": round((time.perf_counter() - started) * 1000, 3),
        }
        if result.error is not None:
            data["error"] = {"message": result.error}
        if modified_arguments is not None:
            data["modifiedArguments"] = _json_safe(modified_arguments)
        emit(EventType.TOOL_EXECUTION_COMPLETE, data)

    def _cap(self, result: ToolResult) -> ToolResult:
        text = result.text_result_for_llm
        if len(text) <= self.max_result_chars:
            return result
        cut = (
            f"{text[: self.max_result_chars]}\n[result truncated: {len(text)} characters, "
            f"the first {self.max_result_chars} shown]"
        )
        return dataclasses.replace(result, text_result_for_llm=cut)

    # -- the steps ----------------------------------------------------------------------------

    async def _pre_hook(
        self, tool: Tool, call: ToolCallRequest, arguments: Any, emit: Callable[..., None]
    ) -> tuple[Any, bool, str]:
        """Run ``on_pre_tool_use`` and the permission question; return the final arguments."""
        output = await self.call_hook(
            "on_pre_tool_use",
            {"toolName": tool.name, "toolArgs": arguments, "toolCallId": call.id},
            emit,
        )
        decision = output.get("permissionDecision") if output else None
        if decision == "deny":
            reason = output.get("permissionDecisionReason") or "no reason given"
            raise _Denied(f"The call to '{tool.name}' was denied by a hook: {reason}")
        modified = False
        if output and "modifiedArgs" in output:
            arguments, modified = output["modifiedArgs"], True
        needs_permission = decision == "ask" or (not tool.skip_permission and decision != "allow")
        if needs_permission:
            await self._ask_permission(tool, call, arguments, emit)
        context = output.get("additionalContext") if output else None
        return arguments, modified, context if isinstance(context, str) else ""

    async def _ask_permission(
        self, tool: Tool, call: ToolCallRequest, arguments: Any, emit: Callable[..., None]
    ) -> None:
        request = PermissionRequest(tool.name, tool.description, arguments, call.id)
        request_id = new_id()
        emit(
            EventType.PERMISSION_REQUESTED,
            {
                "requestId": request_id,
                "toolCallId": call.id,
                "permissionRequest": {
                    "kind": request.kind,
                    "toolName": tool.name,
                    "toolDescription": tool.description,
                    "args": _json_safe(arguments),
                },
            },
        )
        handler = self.on_permission_request
        error = None
        if handler is None:
            decision = PermissionRequestResult("user-not-available")
        else:
            try:
                answer = await _call_user(handler, request, {"session_id": self.session_id})
                decision = PermissionRequestResult.coerce(answer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken handler denies, as in the SDK
                decision = PermissionRequestResult("user-not-available")
                error = f"{type(exc).__name__}: {exc}"
        data: dict[str, Any] = {
            "requestId": request_id,
            "toolCallId": call.id,
            "result": {"kind": decision.kind},
        }
        if decision.feedback:
            data["result"]["feedback"] = decision.feedback
        if error:
            data["error"] = error
        emit(EventType.PERMISSION_COMPLETED, data)
        if not decision.approved:
            text = f"The user denied permission to run '{tool.name}'."
            if handler is None:
                text = f"Permission to run '{tool.name}' was denied: no one could be asked."
            if decision.feedback:
                text += f" Feedback: {decision.feedback}"
            raise _Denied(text)

    async def _execute(
        self,
        tool: Tool,
        call: ToolCallRequest,
        arguments: Any,
        emit: Callable[..., None],
        limit: float | None,
    ) -> ToolResult:
        if tool.handler is None:
            raise _Failed(f"Tool '{tool.name}' has no handler in this session.")
        invocation = ToolInvocation(self.session_id, call.id, tool.name, arguments)
        try:
            async with asyncio.timeout(limit):
                value = await _call_user(tool.handler, invocation)
            return normalize_result(value)
        except TimeoutError:
            seconds = f"{limit:.3g} s"
            await self._report_error(f"tool '{tool.name}' timed out after {seconds}", emit)
            return ToolResult(
                f"The tool did not finish within {seconds} and was abandoned.",
                "timeout",
                error=f"timed out after {seconds}",
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            await self._report_error(message, emit)
            return ToolResult(ERROR_TEXT, "failure", error=message)

    async def _post_hook(
        self,
        tool: Tool,
        call: ToolCallRequest,
        arguments: Any,
        result: ToolResult,
        emit: Callable[..., None],
    ) -> ToolResult:
        output = await self.call_hook(
            "on_post_tool_use",
            {
                "toolName": tool.name,
                "toolArgs": arguments,
                "toolResult": result,
                "toolCallId": call.id,
            },
            emit,
        )
        if not output:
            return result
        if "modifiedResult" in output:
            try:
                result = normalize_result(output["modifiedResult"])
            except TypeError:  # not JSON-able: the model gets its text form
                result = ToolResult(str(output["modifiedResult"]))
        context = output.get("additionalContext")
        if isinstance(context, str) and context:
            result = dataclasses.replace(
                result, text_result_for_llm=f"{result.text_result_for_llm}\n\n{context}"
            )
        return result

    async def _report_error(self, message: str, emit: Callable[..., None]) -> None:
        await self.call_hook(
            "on_error_occurred",
            {"error": message, "errorContext": "tool_execution", "recoverable": True},
            emit,
        )

    # -- hooks --------------------------------------------------------------------------------

    async def call_hook(
        self, key: str, data: dict[str, Any], emit: Callable[[EventType, dict[str, Any]], None]
    ) -> dict[str, Any] | None:
        """Call hook ``key`` (if set) with ``data`` plus ``sessionId`` and ``timestamp``.

        Records ``hook.start`` / ``hook.end``. Returns the hook's output dict, or None when the
        hook is not set, returned nothing, returned something that is not a dict, or raised
        (recorded in ``hook.end``; a hook never fails the turn).
        """
        hook = self.hooks.get(key)
        if hook is None:
            return None
        hook_type = HOOK_TYPES[key]
        invocation_id = new_id()
        payload = {"sessionId": self.session_id, "timestamp": datetime.now(UTC), **data}
        emit(
            EventType.HOOK_START,
            {"hookInvocationId": invocation_id, "hookType": hook_type, "input": _json_safe(data)},
        )
        end: dict[str, Any] = {"hookInvocationId": invocation_id, "hookType": hook_type}
        try:
            output = await _call_user(hook, payload, {"session_id": self.session_id})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            emit(
                EventType.HOOK_END,
                {**end, "success": False, "error": f"{type(exc).__name__}: {exc}"},
            )
            return None
        if output is not None and not isinstance(output, Mapping):
            message = f"the hook returned {type(output).__name__}, not a dict; ignored"
            emit(EventType.HOOK_END, {**end, "success": False, "error": message})
            return None
        if output:
            end["output"] = _json_safe(dict(output))
        emit(EventType.HOOK_END, {**end, "success": True})
        return dict(output) if output else None


class _Failed(Exception):
    """Raised inside one call to end it with a failure the model may read."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


async def _call_user(fn: Callable[..., Any], *args: Any) -> Any:
    """Call user code: async functions awaited, sync ones on a worker thread.

    The ready-made :meth:`PermissionHandler.approve_all` is called inline: it cannot block.
    """
    if is_async_callable(fn):
        return await fn(*args)
    if fn is PermissionHandler.approve_all:
        return fn(*args)
    value = await _in_daemon_thread(fn, *args)
    if inspect.isawaitable(value):  # a sync callable that returned a coroutine (a lambda)
        value = await value
    return value


async def _in_daemon_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` on a new daemon thread and await its result.

    Not ``asyncio.to_thread``: the default executor's threads are joined at interpreter exit,
    so one tool that never returns (abandoned after its timeout or an abort) would keep the
    program from exiting. A daemon thread is left behind instead. Starting a thread costs
    tens of microseconds, small beside a tool round (see bench row 10a).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():  # cancelled meanwhile: nobody waits for it
            outcome()

    def target() -> None:
        try:
            value = context.run(fn, *args)
        except BaseException as exc:  # handed to the awaiting task, raised there
            report = functools.partial(settle, functools.partial(future.set_exception, exc))
        else:
            report = functools.partial(settle, functools.partial(future.set_result, value))
        try:
            loop.call_soon_threadsafe(report)
        except RuntimeError:  # the loop is closed: the client stopped meanwhile
            pass

    threading.Thread(target=target, name=f"copilot-tool-{fn!r:.40}", daemon=True).start()
    return await future


def _parse_arguments(call: ToolCallRequest) -> dict[str, Any]:
    text = call.arguments.strip() if call.arguments else ""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise _Failed(f"Invalid JSON in the arguments of '{call.name}': {exc}") from None
    if not isinstance(value, dict):
        raise _Failed(f"The arguments of '{call.name}' must be a JSON object.")
    return value


def _parse_lenient(call: ToolCallRequest) -> Any:
    """The arguments for the start event: parsed if they parse, else the raw text."""
    try:
        return json.loads(call.arguments) if call.arguments and call.arguments.strip() else {}
    except ValueError:
        return call.arguments


def _json_safe(value: Any) -> Any:
    """``value`` as plain JSON data (events are stored as JSON); unknown objects as repr."""
    try:
        return json.loads(json.dumps(value, default=_default))
    except (TypeError, ValueError):
        return repr(value)


def _default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, datetime):
        return value.isoformat()
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):
        return model_dump(mode="json")
    return repr(value)
