"""The tool loop of one turn, and how stored tool steps become model messages again.

:func:`run_tool_loop` drives a turn that may call tools: model -> tool calls -> results ->
model, until a reply without tool calls. Each step that calls tools is recorded as an
``assistant.message`` whose ``toolRequests`` lists the calls (the Copilot SDK's shape), followed
by the tool runner's events (``tool.execution_start`` ... ``tool.execution_complete``). After
``max_rounds`` rounds a reply that still calls tools has its calls recorded as ``rejected`` and the
turn ends with :class:`~copilot.errors.ToolRoundLimitError`: every recorded call has a result, so
the history replays cleanly in later turns.

:func:`step_messages` is the other direction: a recorded step (its ``assistant.message`` data and
the ``tool.execution_complete`` data of its calls) as the :class:`ChatMessage` items a provider
writes in its wire format. A call without a recorded result (a process killed mid-tool) gets a
result saying so, because both APIs refuse a call left unanswered.

The loop does no I/O itself: the caller gives it the model step (with its retries and deltas) and
the function that records events.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    ToolRoundLimitError,
    ToolsNotSupportedError,
)
from .events import Event, EventType
from .providers.base import (
    MESSAGE_OVERHEAD,
    ChatMessage,
    Completion,
    Provider,
    ToolCallRequest,
    ToolSchema,
)
from .tool_runner import DEFAULT_TOOL_TIMEOUT, ToolRunner
from .tools import Tool, select_tools
from .turn import StreamResult

__all__ = [
    "DEFAULT_MAX_TOOL_ROUNDS",
    "NO_RESULT_TEXT",
    "SessionTools",
    "ToolConfig",
    "ToolTurn",
    "combine_steps",
    "replay_steps",
    "run_tool_loop",
    "step_event",
    "step_messages",
    "tool_requests",
]

DEFAULT_MAX_TOOL_ROUNDS = 8
NO_RESULT_TEXT = "The tool call has no recorded result: the turn was interrupted."


@dataclass(frozen=True, slots=True)
class ToolConfig:
    """The tool arguments of ``create_session`` / ``resume_session`` / ``fork_session``, as
    given (checked by :meth:`build` once the session id is known)."""

    tools: Sequence[Tool] | None = None
    available_tools: Sequence[str] | None = None
    excluded_tools: Sequence[str] | None = None
    on_permission_request: Callable[..., Any] | None = None
    hooks: Mapping[str, Any] | None = None
    max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS
    tool_timeout: float | None = DEFAULT_TOOL_TIMEOUT

    def build(self, session_id: str) -> SessionTools | None:
        """The checked :class:`SessionTools` of session ``session_id`` (None: no tools, no
        hooks)."""
        return SessionTools.build(
            session_id,
            tools=self.tools,
            available_tools=self.available_tools,
            excluded_tools=self.excluded_tools,
            on_permission_request=self.on_permission_request,
            hooks=self.hooks,
            max_tool_rounds=self.max_tool_rounds,
            tool_timeout=self.tool_timeout,
        )


@dataclass(slots=True)
class SessionTools:
    """What a session was given to act with: its tool runner (tools, permission handler,
    hooks) and its limits. Code, never stored: a resumed session is given them again."""

    runner: ToolRunner
    max_rounds: int = DEFAULT_MAX_TOOL_ROUNDS

    @classmethod
    def build(
        cls,
        session_id: str,
        *,
        tools: Sequence[Tool] | None = None,
        available_tools: Sequence[str] | None = None,
        excluded_tools: Sequence[str] | None = None,
        on_permission_request: Callable[..., Any] | None = None,
        hooks: Mapping[str, Any] | None = None,
        max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
        tool_timeout: float | None = DEFAULT_TOOL_TIMEOUT,
    ) -> SessionTools | None:
        """Check ``create_session``'s tool arguments; None when the session has neither tools
        nor hooks (it then runs exactly as before)."""
        chosen = select_tools(tools, available_tools, excluded_tools)
        if on_permission_request is not None and not callable(on_permission_request):
            raise InvalidArgumentTypeError(
                "on_permission_request must be callable, e.g. PermissionHandler.approve_all"
            )
        if isinstance(max_tool_rounds, bool) or not isinstance(max_tool_rounds, int):
            raise InvalidArgumentTypeError("max_tool_rounds must be an int")
        if max_tool_rounds < 0:
            raise InvalidArgumentError(f"max_tool_rounds must be 0 or more, not {max_tool_rounds}")
        if tool_timeout is not None and (
            isinstance(tool_timeout, bool)
            or not isinstance(tool_timeout, (int, float))
            or tool_timeout <= 0
        ):
            raise InvalidArgumentError(
                f"tool_timeout must be a positive number of seconds or None, not {tool_timeout!r}"
            )
        runner = ToolRunner(
            chosen,
            session_id=session_id,
            on_permission_request=on_permission_request,
            hooks=hooks,
            timeout=None if tool_timeout is None else float(tool_timeout),
        )
        if not chosen and not runner.hooks:
            return None
        return cls(runner, max_tool_rounds)

    @property
    def has_tools(self) -> bool:
        """Whether the model is offered any tool."""
        return bool(self.runner.tools)

    def schemas(self) -> tuple[ToolSchema, ...]:
        """The tools as the model sees them."""
        return self.runner.schemas()

    def check_model(
        self, provider: Provider, model: str, model_id: str, capable: Callable[[], list[str]]
    ) -> None:
        """Raise :class:`ToolsNotSupportedError` if the session has tools and ``model`` cannot
        call them; ``capable()`` lists the model ids that can (for the message)."""
        if not self.has_tools or provider.supports_tools(model):
            return
        others = capable()
        hint = f"models that can: {', '.join(others[:8])}" if others else "no usable model can"
        raise ToolsNotSupportedError(
            f"model {model_id!r} cannot call tools, and this session has tools "
            f"({', '.join(self.runner.tools)}); {hint}. Pick one of those, or turn the "
            "session's tools off (tools= in Python, --tools none in a notebook, the Notebook "
            "tools toggle in the panel).",
            model=model_id,
        )

    async def hook(
        self, key: str, data: dict[str, Any], record: Callable[[Event], None]
    ) -> dict[str, Any] | None:
        """Call a session hook (``on_user_prompt_submitted``, ``on_session_start`` ...),
        recording ``hook.start`` / ``hook.end``; returns its output or None."""
        return await self.runner.call_hook(
            key, data, lambda kind, payload: record(Event(kind, payload))
        )


@dataclass(slots=True)
class ToolTurn:
    """A finished tool loop: the final reply, every model step, the rounds of tool calls."""

    final: StreamResult
    steps: list[StreamResult] = field(default_factory=list)
    rounds: int = 0
    #: the messages the loop added to the turn's context: each step's calls and results
    added: tuple[ChatMessage, ...] = ()


def combine_steps(steps: Sequence[StreamResult]) -> StreamResult:
    """One result for a turn of several model steps: the last step's reply, with the token
    counts, durations and attempts of all steps added up (None when no step reported them)."""
    last = steps[-1]

    def total(name: str) -> int | None:
        values = [getattr(s.completion, name) for s in steps]
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    completion = dataclasses.replace(
        last.completion,
        input_tokens=total("input_tokens"),
        output_tokens=total("output_tokens"),
    )
    return StreamResult(
        completion=completion,
        duration_ms=sum(s.duration_ms for s in steps),
        first_token_ms=next(
            (s.first_token_ms for s in steps if s.first_token_ms is not None), None
        ),
        attempts=sum(s.attempts for s in steps),
    )


def tool_requests(calls: Sequence[ToolCallRequest]) -> list[dict[str, Any]]:
    """The ``toolRequests`` of an ``assistant.message``: id, name, arguments (parsed when they
    parse, else the text the model wrote)."""
    out = []
    for call in calls:
        try:
            arguments: Any = json.loads(call.arguments) if call.arguments.strip() else {}
        except ValueError:
            arguments = call.arguments
        out.append({"toolCallId": call.id, "name": call.name, "arguments": arguments})
    return out


def step_event(message_id: str, model_id: str, completion: Completion) -> Event:
    """The ``assistant.message`` recording a step that called tools (with the provider's
    ``reasoningOpaque``, handed back with the calls when the step is replayed)."""
    data = {
        "messageId": message_id,
        "content": completion.content,
        "toolRequests": tool_requests(completion.tool_calls),
        "model": model_id,
        "responseModel": completion.model,
        "finishReason": completion.finish_reason,
    }
    if completion.reasoning_opaque is not None:
        data["reasoningOpaque"] = completion.reasoning_opaque
    return Event(EventType.ASSISTANT_MESSAGE, data)


def step_messages(
    step: Mapping[str, Any], completes: Mapping[str, Mapping[str, Any]]
) -> list[ChatMessage]:
    """A recorded step as model messages: the assistant's calls, then one result per call.

    ``step`` is an ``assistant.message``'s data with ``toolRequests``; ``completes`` maps a call
    id to its ``tool.execution_complete`` data.
    """
    calls = []
    for request in step.get("toolRequests") or ():
        arguments = request.get("arguments")
        text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
        calls.append(ToolCallRequest(request["toolCallId"], request["name"], text))
    opaque = step.get("reasoningOpaque")
    messages = [
        ChatMessage(
            "assistant",
            step.get("content") or "",
            tool_calls=tuple(calls),
            reasoning_opaque=opaque if isinstance(opaque, str) else None,
        )
    ]
    for call in calls:
        complete = completes.get(call.id)
        if complete is None:
            text = NO_RESULT_TEXT
        else:
            text = (complete.get("result") or {}).get("content", "")
        messages.append(ChatMessage("tool", text, tool_call_id=call.id))
    return messages


def steps_tokens(messages: Iterable[ChatMessage], count_tokens: Callable[[str], int]) -> int:
    """The tokens tool-step messages take in a model's context: each message's text and its
    overhead, each call's name and arguments. The one count of tool steps: a turn's context,
    its usage info and compaction all use it."""
    total = 0
    for message in messages:
        total += count_tokens(message.content) + MESSAGE_OVERHEAD
        total += sum(count_tokens(c.name + c.arguments) for c in message.tool_calls)
    return total


def replay_steps(entries: Sequence[Mapping[str, Any]]) -> list[ChatMessage]:
    """The model messages of one exchange's tool steps, in order.

    ``entries`` are the exchange's tool records in log order, each an event's data plus its
    ``type`` (what :class:`copilot.history.History` keeps in ``Exchange.tool_calls``): the
    ``assistant.message`` of each step (with ``toolRequests``) and the ``tool.*`` events.
    """
    completes = {
        entry["toolCallId"]: entry
        for entry in entries
        if entry.get("type") == EventType.TOOL_EXECUTION_COMPLETE and "toolCallId" in entry
    }
    messages: list[ChatMessage] = []
    for entry in entries:
        if entry.get("type") == EventType.ASSISTANT_MESSAGE and entry.get("toolRequests"):
            messages += step_messages(entry, completes)
    return messages


async def run_tool_loop(
    step: Callable[[tuple[ChatMessage, ...]], Awaitable[StreamResult]],
    messages: tuple[ChatMessage, ...],
    runner: ToolRunner,
    *,
    max_rounds: int,
    message_id: str,
    model_id: str,
    record: Callable[[Event], None],
    remaining: Callable[[], float | None] = lambda: None,
) -> ToolTurn:
    """Run model steps and tool rounds until a reply without tool calls; return it.

    ``step(messages)`` makes one model call (retries included) and returns its result;
    ``record(event)`` stores and announces one event. Raises
    :class:`~copilot.errors.ToolRoundLimitError` when the model still calls tools after
    ``max_rounds`` rounds (its calls recorded as rejected first). Cancelling the loop (an
    abort) cancels a running tool; the runner records it as aborted. ``remaining()`` gives the
    seconds left of the turn's time (None: unbounded): each round's calls get at most that.
    """
    steps: list[StreamResult] = []
    rounds = 0
    given = len(messages)
    while True:
        result = await step(messages)
        steps.append(result)
        completion = result.completion
        if not completion.tool_calls:
            return ToolTurn(result, steps, rounds, tuple(messages[given:]))
        record(step_event(message_id, model_id, completion))
        if rounds >= max_rounds:
            _reject(completion.tool_calls, max_rounds, message_id, record)
            raise ToolRoundLimitError(
                f"the model still asked for tools after {max_rounds} rounds in one turn; "
                "its last calls were not run. Raise max_tool_rounds= on the session if the "
                "task needs more.",
                message_id,
            )
        rounds += 1
        round_ = await runner.run(
            completion.tool_calls, message_id=message_id, on_event=record, timeout=remaining()
        )
        messages = (
            *messages,
            ChatMessage(
                "assistant",
                completion.content,
                tool_calls=completion.tool_calls,
                reasoning_opaque=completion.reasoning_opaque,
            ),
            *(
                ChatMessage("tool", o.result.text_result_for_llm, tool_call_id=o.call.id)
                for o in round_.outcomes
            ),
        )


def _reject(
    calls: Sequence[ToolCallRequest],
    max_rounds: int,
    message_id: str,
    record: Callable[[Event], None],
) -> None:
    text = f"Not run: the limit of {max_rounds} tool rounds in one turn was reached."
    for call in calls:
        record(
            Event(
                EventType.TOOL_EXECUTION_COMPLETE,
                {
                    "messageId": message_id,
                    "toolCallId": call.id,
                    "toolName": call.name,
                    "success": False,
                    "resultType": "rejected",
                    "result": {"content": text},
                    "error": {"message": f"tool round limit ({max_rounds}) reached"},
                    "durationMs": 0.0,
                },
            )
        )
