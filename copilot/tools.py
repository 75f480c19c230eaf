"""Tools a session's model may call, the permission asked before each call, and the hooks.

The names and shapes follow the GitHub Copilot SDK for Python (``copilot/tools.py`` and
``copilot/session.py`` of the ``github-copilot-sdk`` package), so code written for it reads the
same here:

* :func:`define_tool` builds a :class:`Tool` from a typed function, as a decorator or a call::

      class WeatherParams(BaseModel):
          city: str = Field(description="the city's name")

      @define_tool(description="Today's weather in a city")
      def get_weather(params: WeatherParams) -> str:
          return f"sunny in {params.city}"

  The JSON schema comes from the pydantic model (``params_type=`` or the first parameter's
  annotation). Beyond the SDK, a function with plain typed parameters works too
  (``def get_weather(city: str, unit: Literal["C", "F"] = "C")``): a pydantic model is built
  from its type hints and the arguments are passed by keyword.
* Handler shapes, as the SDK accepts them: ``f(params)``, ``f(params, invocation)``, ``f()``,
  ``f(invocation: ToolInvocation)``; ``Tool(..., handler=f)`` takes ``f(invocation)``. Sync
  handlers run on a worker thread, never on the event loop; async ones are awaited.
* A handler returns a string, ``None``, a JSON-able value or pydantic model (or a list of them;
  sent to the model as JSON), or a :class:`ToolResult`.
* :class:`PermissionRequest` / :class:`PermissionRequestResult` and
  :meth:`PermissionHandler.approve_all`; without a handler every call that needs permission is
  denied (as in the SDK; ``skip_permission=True`` tools need none).
* :class:`SessionHooks`: ``on_pre_tool_use`` (may deny, allow without asking, or change the
  arguments), ``on_post_tool_use`` (may change the result), ``on_user_prompt_submitted``,
  ``on_session_start``, ``on_session_end``, ``on_error_occurred``; each is called as
  ``hook(input, {"session_id": ...})`` and returns a dict (or None).

Running the calls of one model step is :mod:`copilot.tool_runner`'s job.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import re
import types
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any, Literal, NotRequired, TypedDict, get_type_hints, overload
from uuid import UUID

from pydantic import BaseModel, ValidationError, create_model

from .errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = [
    "ErrorOccurredHookInput",
    "PermissionHandler",
    "PermissionRequest",
    "PermissionRequestResult",
    "PostToolUseHookInput",
    "PostToolUseHookOutput",
    "PreToolUseHookInput",
    "PreToolUseHookOutput",
    "SessionEndHookInput",
    "SessionHooks",
    "SessionStartHookInput",
    "Tool",
    "ToolHandler",
    "ToolInvocation",
    "ToolResult",
    "ToolResultType",
    "UserPromptSubmittedHookInput",
    "UserPromptSubmittedHookOutput",
    "define_tool",
    "normalize_result",
    "select_tools",
]

ToolResultType = Literal["success", "failure", "rejected", "denied", "timeout"]

#: what the OpenAI and Anthropic APIs accept as a function name
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class ToolResult:
    """The result of one tool call.

    ``text_result_for_llm`` is what the model is shown; ``error`` is kept in the log for the
    user and never sent to the model.
    """

    text_result_for_llm: str = ""
    result_type: ToolResultType = "success"
    error: str | None = None
    tool_telemetry: dict[str, Any] | None = None


@dataclass
class ToolInvocation:
    """What a handler is told about the call it serves."""

    session_id: str = ""
    tool_call_id: str = ""
    tool_name: str = ""
    arguments: Any = None


ToolHandler = Callable[[ToolInvocation], Any]


@dataclass
class Tool:
    """A tool: its name and description (shown to the model), handler and parameters' schema.

    ``handler(invocation)`` may be sync or async. ``parameters`` is the JSON schema of the
    arguments (None: no parameters). ``skip_permission`` lets calls run without asking the
    session's permission handler.
    """

    name: str
    description: str
    handler: ToolHandler | None = None
    parameters: dict[str, Any] | None = None
    skip_permission: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise InvalidArgumentTypeError(
                f"a tool's name must be a string, not {type(self.name).__name__}"
            )
        if not _NAME.match(self.name):
            raise InvalidArgumentError(
                f"tool name {self.name!r} is not allowed: use 1-64 letters, digits, '_' or '-' "
                "(what the model APIs accept)"
            )
        if self.handler is not None and not callable(self.handler):
            raise InvalidArgumentTypeError(f"tool {self.name!r}: handler must be callable")
        if self.parameters is not None and not isinstance(self.parameters, Mapping):
            raise InvalidArgumentTypeError(
                f"tool {self.name!r}: parameters must be a JSON schema dict"
            )

    def schema(self) -> dict[str, Any]:
        """The parameters' JSON schema as sent to the model (an empty object schema if None)."""
        return dict(self.parameters) if self.parameters else {"type": "object", "properties": {}}


# -- define_tool -----------------------------------------------------------------------------


@overload
def define_tool(
    name: str | None = None,
    *,
    description: str | None = None,
    skip_permission: bool = False,
) -> Callable[[Callable[..., Any]], Tool]: ...


@overload
def define_tool(
    name: str,
    *,
    description: str | None = None,
    handler: Callable[..., Any],
    params_type: type[BaseModel] | None = None,
    skip_permission: bool = False,
) -> Tool: ...


def define_tool(
    name: str | None = None,
    *,
    description: str | None = None,
    handler: Callable[..., Any] | None = None,
    params_type: type[BaseModel] | None = None,
    skip_permission: bool = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Define a tool from a typed function, as a decorator or a call.

    Example::

        @define_tool(description="Add two numbers")
        def add(a: int, b: int) -> int:
            return a + b

        tool = define_tool("lookup", description="Find an issue", handler=lookup,
                           params_type=LookupParams)

    Parameters:
        name: the tool's name (default: the function's name; required with ``handler=``).
        description: what the tool does, for the model (default: the docstring's first
            paragraph).
        handler: the function, when not used as a decorator.
        params_type: the pydantic model of the arguments (default: from the type hints).
        skip_permission: run without asking the permission handler.

    Arguments the model sends are validated against the model; invalid ones give the model a
    failure result naming the problem, and the function is not called.
    """

    def decorator(fn: Callable[..., Any]) -> Tool:
        if not callable(fn):
            raise InvalidArgumentTypeError("define_tool needs a function to wrap")
        tool_name = name if name is not None else getattr(fn, "__name__", "")
        call = _Call.inspect(fn, params_type, tool_name)
        text = description if description is not None else _doc_summary(fn)
        return Tool(
            name=tool_name,
            description=text,
            handler=call.handler(),
            parameters=call.schema(),
            skip_permission=skip_permission,
        )

    if handler is not None:
        if name is None:
            raise InvalidArgumentError("define_tool(handler=...) needs a name")
        return decorator(handler)
    if callable(name):  # bare @define_tool without parentheses
        fn, name = name, None
        return decorator(fn)
    return decorator


@dataclass
class _Call:
    """How a wrapped function is called: which arguments it takes and how they are validated."""

    fn: Callable[..., Any]
    tool_name: str
    #: "none" f(), "invocation" f(inv), "params" f(params[, inv]), "keywords" f(**fields)
    style: Literal["none", "invocation", "params", "keywords"]
    model: type[BaseModel] | None = None
    invocation_param: str | None = None
    takes_invocation: bool = False

    @classmethod
    def inspect(
        cls, fn: Callable[..., Any], params_type: type[BaseModel] | None, tool_name: str
    ) -> _Call:
        signature = inspect.signature(fn)
        params = [
            p
            for p in signature.parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        try:
            hints = get_type_hints(fn)
        except Exception as exc:  # an annotation that cannot be resolved
            raise InvalidArgumentTypeError(
                f"tool {tool_name!r}: cannot read the type hints of {fn!r}: {exc}"
            ) from exc
        first = hints.get(params[0].name) if params else None
        if params_type is not None and not _is_model(params_type):
            raise InvalidArgumentTypeError(
                f"tool {tool_name!r}: params_type must be a pydantic BaseModel subclass"
            )
        if not params:
            return cls(fn, tool_name, "none", model=params_type)
        if len(params) == 1 and first is ToolInvocation:
            return cls(fn, tool_name, "invocation")
        if params_type is not None or _is_model(first) or _raw_arguments(first, params, hints):
            return cls(
                fn,
                tool_name,
                "params",
                model=params_type or (first if _is_model(first) else None),
                takes_invocation=len(params) >= 2,
            )
        # plain typed parameters: build the model from the hints
        fields: dict[str, Any] = {}
        invocation_param = None
        for p in params:
            hint = hints.get(p.name, Any)
            if hint is ToolInvocation:
                invocation_param = p.name
                continue
            default = ... if p.default is p.empty else p.default
            fields[p.name] = (hint, default)
        model = create_model(f"{tool_name}_arguments", **fields)
        return cls(fn, tool_name, "keywords", model=model, invocation_param=invocation_param)

    def schema(self) -> dict[str, Any] | None:
        if self.model is None:
            return None
        schema = self.model.model_json_schema()
        schema.pop("title", None)
        return schema

    def arguments(self, invocation: ToolInvocation) -> tuple[list[Any], dict[str, Any]]:
        """The positional and keyword arguments for ``fn`` (raises ValidationError)."""
        raw = invocation.arguments if invocation.arguments is not None else {}
        if self.style == "none":
            return [], {}
        if self.style == "invocation":
            return [invocation], {}
        if self.style == "params":
            value = self.model.model_validate(raw) if self.model is not None else raw
            return ([value, invocation] if self.takes_invocation else [value]), {}
        validated = self.model.model_validate(raw)
        kwargs = {name: getattr(validated, name) for name in type(validated).model_fields}
        if self.invocation_param:
            kwargs[self.invocation_param] = invocation
        return [], kwargs

    def handler(self) -> ToolHandler:
        """A ``handler(invocation)`` of the same colour (sync or async) as ``fn``."""
        if inspect.iscoroutinefunction(self.fn):

            async def async_handler(invocation: ToolInvocation) -> Any:
                try:
                    args, kwargs = self.arguments(invocation)
                except ValidationError as exc:
                    return _invalid_arguments(exc)
                return await self.fn(*args, **kwargs)

            async_handler.__name__ = self.tool_name
            return async_handler

        def sync_handler(invocation: ToolInvocation) -> Any:
            try:
                args, kwargs = self.arguments(invocation)
            except ValidationError as exc:
                return _invalid_arguments(exc)
            return self.fn(*args, **kwargs)

        sync_handler.__name__ = self.tool_name
        return sync_handler


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _raw_arguments(first: Any, params: list[inspect.Parameter], hints: dict[str, Any]) -> bool:
    """Whether ``fn`` takes the raw arguments dict, as the SDK passes it: ``f(args[, inv])``."""
    if len(params) > 2:
        return False
    if len(params) == 2 and hints.get(params[1].name, ToolInvocation) is not ToolInvocation:
        return False
    origin = typing.get_origin(first) or first
    return first is None or first is Any or origin in (dict, Mapping)


def _invalid_arguments(exc: ValidationError) -> ToolResult:
    """The failure the model sees for arguments that do not fit the schema (as in the SDK)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(map(str, err["loc"]))
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return ToolResult(
        text_result_for_llm="Invalid tool arguments:\n" + "\n".join(parts),
        result_type="failure",
        error=str(exc),
    )


def _doc_summary(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip()


# -- results ---------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (date, datetime, time)):
        return value.isoformat()
    if isinstance(value, (Decimal, UUID, PurePath)):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def normalize_result(value: Any) -> ToolResult:
    """Turn what a handler returned into a :class:`ToolResult`, as the SDK does.

    ``None`` -> empty success; a string as is; a ``ToolResult`` unchanged; anything else as JSON
    (pydantic models, dataclasses, dates, decimals, UUIDs, enums, sets included). A value that
    cannot be written as JSON raises ``TypeError``.
    """
    if value is None:
        return ToolResult("")
    if isinstance(value, ToolResult):
        return value
    if isinstance(value, str):
        return ToolResult(value)
    try:
        text = json.dumps(value, default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the tool's result cannot be sent to the model as JSON: {exc}") from exc
    return ToolResult(text)


# -- permissions -----------------------------------------------------------------------------


@dataclass
class PermissionRequest:
    """A request to run one tool call; ``kind`` is ``"custom-tool"`` as in the SDK."""

    tool_name: str
    tool_description: str
    args: Any = None
    tool_call_id: str | None = None
    kind: str = "custom-tool"


#: the SDK's decision kinds that approve a call; every other kind denies it
APPROVED_KINDS = frozenset(
    {"approved", "approve-once", "approve-for-session", "approved-for-session"}
)


@dataclass
class PermissionRequestResult:
    """A permission handler's decision.

    ``kind`` takes the SDK's words: ``"approved"`` (or ``"approve-once"``) runs the call;
    ``"denied-interactively-by-user"``, ``"denied-by-rules"``, ``"reject"``,
    ``"user-not-available"`` ... deny it. ``feedback`` is shown to the model with a denial.
    A handler may also return a dict with these keys, or a bool.
    """

    kind: str = "approved"
    feedback: str | None = None

    @property
    def approved(self) -> bool:
        """Whether the call may run."""
        return self.kind in APPROVED_KINDS

    @classmethod
    def coerce(cls, value: Any) -> PermissionRequestResult:
        """Read a handler's answer: a result, a ``{"kind": ...}`` dict, or a bool."""
        if isinstance(value, PermissionRequestResult):
            return value
        if isinstance(value, bool):
            return cls("approved" if value else "denied-interactively-by-user")
        if isinstance(value, Mapping) and isinstance(value.get("kind"), str):
            feedback = value.get("feedback")
            return cls(value["kind"], feedback if isinstance(feedback, str) else None)
        kind = getattr(value, "kind", None)  # the SDK's own decision classes
        if isinstance(kind, str):
            return cls(kind, getattr(value, "feedback", None))
        raise InvalidArgumentTypeError(
            "a permission handler must return a PermissionRequestResult, a {'kind': ...} dict "
            f"or a bool, not {type(value).__name__}"
        )


PermissionHandlerFn = Callable[
    [PermissionRequest, dict[str, Any]],
    PermissionRequestResult | Awaitable[PermissionRequestResult],
]


class PermissionHandler:
    """Ready-made permission handlers."""

    @staticmethod
    def approve_all(
        request: PermissionRequest, invocation: Mapping[str, Any]
    ) -> PermissionRequestResult:
        """Approve every call."""
        return PermissionRequestResult("approved")


# -- hooks -----------------------------------------------------------------------------------


class PreToolUseHookInput(TypedDict):
    """Input of ``on_pre_tool_use``."""

    sessionId: str
    timestamp: datetime
    toolName: str
    toolArgs: Any
    toolCallId: NotRequired[str]


class PreToolUseHookOutput(TypedDict, total=False):
    """Output of ``on_pre_tool_use``: ``deny`` refuses the call (``permissionDecisionReason`` is
    shown to the model), ``allow`` runs it without asking the permission handler, ``ask`` asks
    even a ``skip_permission`` tool; ``modifiedArgs`` replaces the arguments;
    ``additionalContext`` is appended to the result the model sees."""

    permissionDecision: Literal["allow", "deny", "ask"]
    permissionDecisionReason: str
    modifiedArgs: Any
    additionalContext: str


class PostToolUseHookInput(TypedDict):
    """Input of ``on_post_tool_use``."""

    sessionId: str
    timestamp: datetime
    toolName: str
    toolArgs: Any
    toolResult: ToolResult
    toolCallId: NotRequired[str]


class PostToolUseHookOutput(TypedDict, total=False):
    """Output of ``on_post_tool_use``: ``modifiedResult`` (a string, a ``ToolResult`` or any
    JSON-able value) replaces the result; ``additionalContext`` is appended to it."""

    modifiedResult: Any
    additionalContext: str


class UserPromptSubmittedHookInput(TypedDict):
    """Input of ``on_user_prompt_submitted``."""

    sessionId: str
    timestamp: datetime
    prompt: str


class UserPromptSubmittedHookOutput(TypedDict, total=False):
    """Output of ``on_user_prompt_submitted``: ``modifiedPrompt`` replaces the prompt."""

    modifiedPrompt: str
    additionalContext: str


class SessionStartHookInput(TypedDict):
    """Input of ``on_session_start``."""

    sessionId: str
    timestamp: datetime
    source: Literal["startup", "resume", "new"]


class SessionEndHookInput(TypedDict):
    """Input of ``on_session_end``."""

    sessionId: str
    timestamp: datetime
    reason: Literal["complete", "error", "abort", "timeout", "user_exit"]


class ErrorOccurredHookInput(TypedDict):
    """Input of ``on_error_occurred``."""

    sessionId: str
    timestamp: datetime
    error: str
    errorContext: Literal["model_call", "tool_execution", "system", "user_input"]
    recoverable: bool


HookFn = Callable[[Any, dict[str, str]], Any]


class SessionHooks(TypedDict, total=False):
    """The hooks a session may be given (the SDK's keys); each is sync or async."""

    on_pre_tool_use: HookFn
    on_post_tool_use: HookFn
    on_user_prompt_submitted: HookFn
    on_session_start: HookFn
    on_session_end: HookFn
    on_error_occurred: HookFn


#: hook key -> the SDK's hook type name (recorded in hook.start / hook.end events)
HOOK_TYPES: dict[str, str] = {
    "on_pre_tool_use": "preToolUse",
    "on_post_tool_use": "postToolUse",
    "on_user_prompt_submitted": "userPromptSubmitted",
    "on_session_start": "sessionStart",
    "on_session_end": "sessionEnd",
    "on_error_occurred": "errorOccurred",
}


def check_hooks(hooks: Mapping[str, Any] | None) -> dict[str, HookFn]:
    """Validate a ``hooks=`` argument: known keys, callable values. Returns a plain dict."""
    if hooks is None:
        return {}
    if not isinstance(hooks, Mapping):
        raise InvalidArgumentTypeError(
            f"hooks must be a dict of hook name -> function, not {type(hooks).__name__}"
        )
    for key, fn in hooks.items():
        if key not in HOOK_TYPES:
            raise InvalidArgumentError(
                f"unknown hook {key!r}; the hooks are: {', '.join(HOOK_TYPES)}"
            )
        if fn is not None and not callable(fn):
            raise InvalidArgumentTypeError(f"hook {key!r} must be callable")
    return {key: fn for key, fn in hooks.items() if fn is not None}


# -- choosing a session's tools --------------------------------------------------------------


def select_tools(
    tools: Sequence[Tool] | None,
    available_tools: Sequence[str] | None = None,
    excluded_tools: Sequence[str] | None = None,
) -> list[Tool]:
    """The tools a session offers its model, checked.

    ``available_tools`` (names) keeps only those; ``excluded_tools`` then removes names. Tool
    names must be unique; a listed name that is not among ``tools`` is an error (a typo would
    otherwise silently change what the model may do).
    """
    if tools is None:
        tools = []
    if isinstance(tools, (Tool, str, bytes)) or not isinstance(tools, Sequence):
        raise InvalidArgumentTypeError("tools must be a list of Tool objects (see define_tool)")
    seen: dict[str, Tool] = {}
    for tool in tools:
        if not isinstance(tool, Tool):
            raise InvalidArgumentTypeError(
                f"tools must hold Tool objects (see define_tool), not {type(tool).__name__}"
            )
        if tool.name in seen:
            raise InvalidArgumentError(f"two tools are named {tool.name!r}: names must be unique")
        seen[tool.name] = tool
    for label, names in (("available_tools", available_tools), ("excluded_tools", excluded_tools)):
        if names is None:
            continue
        if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
            raise InvalidArgumentTypeError(f"{label} must be a list of tool names")
        unknown = [n for n in names if n not in seen]
        if unknown:
            raise InvalidArgumentError(
                f"{label} names tools this session is not given: {', '.join(map(repr, unknown))}"
                f"; its tools are: {', '.join(seen) or 'none'}"
            )
    chosen = list(seen.values())
    if available_tools is not None:
        chosen = [t for t in chosen if t.name in set(available_tools)]
    if excluded_tools is not None:
        chosen = [t for t in chosen if t.name not in set(excluded_tools)]
    return chosen


def is_async_callable(fn: Any) -> bool:
    """Whether calling ``fn`` gives a coroutine (functions, methods, callables, partials)."""
    while isinstance(fn, types.MethodType | functools.partial):
        fn = fn.func if isinstance(fn, functools.partial) else fn.__func__
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004  # the method itself, not whether fn is callable
    )
