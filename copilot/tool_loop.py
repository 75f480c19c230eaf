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

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ToolRoundLimitError
from .events import Event, EventType
from .providers.base import ChatMessage, Completion, ToolCallRequest
from .tool_runner import ToolRunner
from .turn import StreamResult

__all__ = [
    "DEFAULT_MAX_TOOL_ROUNDS",
    "NO_RESULT_TEXT",
    "ToolTurn",
    "run_tool_loop",
    "step_event",
    "step_messages",
    "tool_requests",
]

DEFAULT_MAX_TOOL_ROUNDS = 8
NO_RESULT_TEXT = "The tool call has no recorded result: the turn was interrupted."


@dataclass(slots=True)
class ToolTurn:
    """A finished tool loop: the final reply, every model step, the rounds of tool calls."""

    final: StreamResult
    steps: list[StreamResult] = field(default_factory=list)
    rounds: int = 0


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
    """The ``assistant.message`` recording a step that called tools."""
    return Event(
        EventType.ASSISTANT_MESSAGE,
        {
            "messageId": message_id,
            "content": completion.content,
            "toolRequests": tool_requests(completion.tool_calls),
            "model": model_id,
            "responseModel": completion.model,
            "finishReason": completion.finish_reason,
        },
    )


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
    messages = [ChatMessage("assistant", step.get("content") or "", tool_calls=tuple(calls))]
    for call in calls:
        complete = completes.get(call.id)
        if complete is None:
            text = NO_RESULT_TEXT
        else:
            text = (complete.get("result") or {}).get("content", "")
        messages.append(ChatMessage("tool", text, tool_call_id=call.id))
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
) -> ToolTurn:
    """Run model steps and tool rounds until a reply without tool calls; return it.

    ``step(messages)`` makes one model call (retries included) and returns its result;
    ``record(event)`` stores and announces one event. Raises
    :class:`~copilot.errors.ToolRoundLimitError` when the model still calls tools after
    ``max_rounds`` rounds (its calls recorded as rejected first). Cancelling the loop (an
    abort) cancels a running tool; the runner records it as aborted.
    """
    steps: list[StreamResult] = []
    rounds = 0
    while True:
        result = await step(messages)
        steps.append(result)
        completion = result.completion
        if not completion.tool_calls:
            return ToolTurn(result, steps, rounds)
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
        round_ = await runner.run(completion.tool_calls, message_id=message_id, on_event=record)
        messages = (
            *messages,
            ChatMessage("assistant", completion.content, tool_calls=completion.tool_calls),
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
