"""The tool loop against real servers on 127.0.0.1, through both providers' official SDKs:
model -> tools -> model, the events it records, and the requests the servers received."""

from __future__ import annotations

import asyncio

import pytest
from helpers import get_time, get_weather, tool_calls_in, tool_results_in

from copilot.errors import ToolRoundLimitError
from copilot.events import EventType
from copilot.providers.anthropic import AnthropicProvider
from copilot.providers.base import ChatMessage, ModelRequest
from copilot.providers.openai import OpenAIProvider
from copilot.testing import Reply, ScriptedAnthropicServer, ScriptedOpenAIServer, ToolCall
from copilot.tool_loop import NO_RESULT_TEXT, replay_steps, run_tool_loop, step_messages
from copilot.tool_runner import ToolRunner
from copilot.tools import PermissionHandler
from copilot.turn import RetryPolicy, stream_reply

pytestmark = pytest.mark.timeout(60)


class Family:
    """One provider family: its server, its provider, and how to read what it received."""

    def __init__(self, kind: str, monkeypatch) -> None:
        self.kind = kind
        if kind == "openai":
            self.server = ScriptedOpenAIServer().start()
            monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
            self.provider = OpenAIProvider({"base_url": self.server.base_url})
            self.model = "gpt-4o"
        else:
            self.server = ScriptedAnthropicServer().start()
            monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
            self.provider = AnthropicProvider({"base_url": self.server.base_url})
            self.model = "claude-sonnet-4-6"

    def bodies(self) -> list[dict]:
        return [r.json for r in self.server.requests]

    def results_in(self, body: dict) -> dict[str, str]:
        """call id -> result text, as the request carried them."""
        return tool_results_in(self.kind, body)

    def calls_in(self, body: dict) -> list[str]:
        """The ids of the calls the request replayed."""
        return tool_calls_in(self.kind, body)


@pytest.fixture(params=["openai", "anthropic"])
def family(request, monkeypatch):
    fam = Family(request.param, monkeypatch)
    yield fam
    fam.server.stop()


def loop(family: Family, prompt: str, *, max_rounds: int = 4, tools=(get_weather, get_time)):
    """Run the loop; return (the ToolTurn or the ToolRoundLimitError, the recorded events)."""
    runner = ToolRunner(
        list(tools), session_id="s1", on_permission_request=PermissionHandler.approve_all
    )
    events = []

    async def go():
        async def step(messages):
            request = ModelRequest(family.model, messages, {}, 30.0, runner.schemas())
            return await stream_reply(
                family.provider,
                request,
                RetryPolicy(max_retries=0),
                lambda t, a: None,
                lambda e, a, d: None,
                [],
            )

        try:
            return await run_tool_loop(
                step,
                (ChatMessage("user", prompt),),
                runner,
                max_rounds=max_rounds,
                message_id="m1",
                model_id=f"{family.kind}:{family.model}",
                record=events.append,
            )
        except ToolRoundLimitError as error:  # returned, for the test to read the events too
            return error
        finally:
            await family.provider.aclose()

    return asyncio.run(go()), events


def test_two_tools_then_an_answer(family):
    family.server.enqueue(
        Reply(
            "Let me look.",
            tool_calls=[
                ToolCall("get_weather", {"city": "Paris"}, id="id_w"),
                ToolCall("get_time", {"city": "Paris"}, id="id_t"),
            ],
        ),
        Reply("It is sunny and noon in Paris."),
    )
    turn, events = loop(family, "Weather and time in Paris?")
    assert turn.final.completion.content == "It is sunny and noon in Paris."
    assert turn.rounds == 1 and len(turn.steps) == 2
    kinds = [e.type for e in events]
    assert kinds[0] == EventType.ASSISTANT_MESSAGE
    assert events[0].data["toolRequests"] == [
        {"toolCallId": "id_w", "name": "get_weather", "arguments": {"city": "Paris"}},
        {"toolCallId": "id_t", "name": "get_time", "arguments": {"city": "Paris"}},
    ]
    assert events[0].data["content"] == "Let me look."
    # each call starts before it completes; both complete, with their results
    for call_id in ("id_w", "id_t"):
        mine = [e.type for e in events if e.data.get("toolCallId") == call_id]
        assert mine == [
            EventType.TOOL_EXECUTION_START,
            EventType.PERMISSION_REQUESTED,
            EventType.PERMISSION_COMPLETED,
            EventType.TOOL_EXECUTION_COMPLETE,
        ]
    completes = {
        e.data["toolCallId"]: e.data["result"]["content"]
        for e in events
        if e.type == EventType.TOOL_EXECUTION_COMPLETE
    }
    assert completes == {"id_w": "sunny in Paris", "id_t": "12:00 in Paris"}
    first, second = family.bodies()
    assert {t.get("name") or t["function"]["name"] for t in first["tools"]} == {
        "get_weather",
        "get_time",
    }
    assert family.calls_in(first) == [] and family.results_in(first) == {}
    assert family.calls_in(second) == ["id_w", "id_t"]
    assert family.results_in(second) == completes  # results present, ids matching


def test_max_rounds_rejects_the_last_calls_and_ends_the_turn(family):
    family.server.enqueue(
        Reply(tool_calls=[ToolCall("get_weather", {"city": "A"}, id="r1")]),
        Reply(tool_calls=[ToolCall("get_weather", {"city": "B"}, id="r2")]),
    )
    error, events = loop(family, "loop forever", max_rounds=1)
    assert isinstance(error, ToolRoundLimitError)
    assert "after 1 rounds" in str(error) and "max_tool_rounds=" in str(error)
    assert error.message_id == "m1"
    assert len(family.bodies()) == 2  # no third model call
    ran = [e.data["toolCallId"] for e in events if e.type == EventType.TOOL_EXECUTION_START]
    assert ran == ["r1"]
    # the log still answers every call: r2 is rejected, never run
    last = [e for e in events if e.data.get("toolCallId") == "r2"]
    assert [e.type for e in last] == [EventType.TOOL_EXECUTION_COMPLETE]
    assert last[0].data["resultType"] == "rejected"
    assert last[0].data["result"]["content"] == (
        "Not run: the limit of 1 tool rounds in one turn was reached."
    )


def test_recorded_steps_replay_and_the_server_accepts_them(family):
    """Events -> step_messages -> the provider's wire format -> the server's validation."""
    family.server.enqueue(
        Reply(
            tool_calls=[
                ToolCall("get_weather", {"city": "Rome"}, id="a1"),
                ToolCall("get_time", {}, id="a2"),
            ]
        ),
        Reply("done"),
        Reply("second turn answer"),
    )
    turn, events = loop(family, "first")
    step = events[0].data
    completes = {
        e.data["toolCallId"]: e.data for e in events if e.type == EventType.TOOL_EXECUTION_COMPLETE
    }
    history = (
        ChatMessage("user", "first"),
        *step_messages(step, completes),
        ChatMessage("assistant", turn.final.completion.content),
        ChatMessage("user", "second"),
    )

    async def go():
        try:
            request = ModelRequest(
                family.model,
                history,
                {},
                30.0,
                ToolRunner([get_weather, get_time], session_id="s").schemas(),
            )
            return [i async for i in family.provider.stream(request)]
        finally:
            await family.provider.aclose()

    assert asyncio.run(go())[-1].content == "second turn answer"
    body = family.bodies()[-1]
    assert family.calls_in(body) == ["a1", "a2"]
    # get_time got {} but its handler needs a city: the model saw the validation failure
    results = family.results_in(body)
    assert results["a1"] == "sunny in Rome"
    assert results["a2"].startswith("Invalid tool arguments:\ncity: Field required")


def test_a_call_without_a_recorded_result_still_replays():
    step = {"content": "", "toolRequests": [{"toolCallId": "x", "name": "t", "arguments": "{bad"}]}
    assistant, result = step_messages(step, {})
    assert assistant.tool_calls[0].arguments == "{bad"
    assert result == ChatMessage("tool", NO_RESULT_TEXT, tool_call_id="x")


def test_replay_steps_orders_steps_and_matches_results_by_id():
    entries = [
        {
            "type": "assistant.message",
            "content": "a",
            "toolRequests": [
                {"toolCallId": "1", "name": "t", "arguments": {"x": 1}},
                {"toolCallId": "2", "name": "t", "arguments": {}},
            ],
        },
        {"type": "tool.execution_start", "toolCallId": "2"},
        {"type": "tool.execution_complete", "toolCallId": "2", "result": {"content": "two"}},
        {"type": "tool.execution_complete", "toolCallId": "1", "result": {"content": "one"}},
        {
            "type": "assistant.message",
            "content": "",
            "toolRequests": [
                {"toolCallId": "3", "name": "u", "arguments": "raw"},
            ],
        },
    ]
    messages = replay_steps(entries)
    assert [(m.role, m.content, m.tool_call_id) for m in messages] == [
        ("assistant", "a", None),
        ("tool", "one", "1"),
        ("tool", "two", "2"),
        ("assistant", "", None),
        ("tool", NO_RESULT_TEXT, "3"),
    ]
    assert messages[0].tool_calls[0].arguments == '{"x": 1}'
    assert messages[3].tool_calls[0].arguments == "raw"
