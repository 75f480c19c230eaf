"""Tools and the tool runner, without a model: define_tool's shapes, permission, hooks,
concurrency, timeouts, cancellation and the events each call leaves."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from copilot.errors import InvalidArgumentError, InvalidArgumentTypeError
from copilot.events import EventType
from copilot.providers.base import ToolCallRequest
from copilot.tool_runner import ERROR_TEXT, ToolRunner
from copilot.tools import (
    PermissionHandler,
    PermissionRequest,
    PermissionRequestResult,
    Tool,
    ToolInvocation,
    ToolResult,
    define_tool,
    normalize_result,
    select_tools,
)

APPROVE = PermissionHandler.approve_all


class CityParams(BaseModel):
    city: str = Field(description="the city's name")


@define_tool(description="Today's weather in a city")
def get_weather(params: CityParams) -> str:
    return f"sunny in {params.city}"


def run(runner: ToolRunner, *calls: ToolCallRequest):
    return asyncio.run(runner.run(list(calls), message_id="m1"))


def call(name: str, arguments: object = None, id: str = "c1") -> ToolCallRequest:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return ToolCallRequest(id, name, text)


def types_of(events) -> list[str]:
    return [e.type for e in events]


# -- define_tool ------------------------------------------------------------------------------


def test_define_tool_over_a_pydantic_model_matches_the_sdk():
    assert isinstance(get_weather, Tool)
    assert get_weather.name == "get_weather"
    assert get_weather.description == "Today's weather in a city"
    assert get_weather.parameters == {
        "properties": {
            "city": {"description": "the city's name", "title": "City", "type": "string"}
        },
        "required": ["city"],
        "type": "object",
    }
    assert get_weather.handler(ToolInvocation(arguments={"city": "Paris"})) == "sunny in Paris"


def test_define_tool_over_plain_type_hints_builds_the_schema_and_passes_keywords():
    @define_tool
    def convert(amount: float, unit: Literal["C", "F"] = "C", inv: ToolInvocation = None) -> dict:
        """Convert a temperature.

        More text that is not the summary."""
        return {"amount": amount, "unit": unit, "call": inv.tool_call_id}

    assert convert.description == "Convert a temperature."
    schema = convert.parameters
    assert schema["required"] == ["amount"]
    assert schema["properties"]["unit"] == {
        "default": "C",
        "enum": ["C", "F"],
        "title": "Unit",
        "type": "string",
    }
    assert "inv" not in schema["properties"]
    out = convert.handler(ToolInvocation(tool_call_id="x", arguments={"amount": "3.5"}))
    assert out == {"amount": 3.5, "unit": "C", "call": "x"}


def test_handler_shapes_of_the_sdk():
    seen = []

    @define_tool(description="no args")
    def none() -> str:
        return "none"

    @define_tool(description="invocation only")
    def only(invocation: ToolInvocation) -> str:
        return invocation.tool_name

    @define_tool(description="params and invocation")
    def both(params: CityParams, invocation: ToolInvocation) -> str:
        seen.append(invocation.session_id)
        return params.city

    @define_tool(description="raw dict")
    def raw(args: dict) -> str:
        return ",".join(sorted(args))

    inv = ToolInvocation("s1", "c", "only", {"city": "Oslo", "b": 1})
    assert none.handler(inv) == "none" and none.parameters is None
    assert only.handler(inv) == "only" and only.parameters is None
    assert both.handler(inv) == "Oslo" and seen == ["s1"]
    assert raw.handler(inv) == "b,city" and raw.parameters is None
    assert both.schema()["required"] == ["city"]
    assert none.schema() == {"type": "object", "properties": {}}


def test_define_tool_as_a_call_and_async_handlers():
    async def lookup(params: CityParams) -> str:
        await asyncio.sleep(0)
        return params.city.upper()

    tool = define_tool("lookup", description="d", handler=lookup)
    assert asyncio.iscoroutinefunction(tool.handler)
    assert asyncio.run(tool.handler(ToolInvocation(arguments={"city": "rome"}))) == "ROME"
    with pytest.raises(InvalidArgumentError, match="needs a name"):
        define_tool(description="d", handler=lookup)


def test_invalid_arguments_are_a_failure_the_model_can_read():
    result = get_weather.handler(ToolInvocation(arguments={"town": "x"}))
    assert isinstance(result, ToolResult) and result.result_type == "failure"
    assert result.text_result_for_llm == "Invalid tool arguments:\ncity: Field required"


@pytest.mark.parametrize("name", ["", "has space", "a" * 65, "dots.not.allowed"])
def test_bad_tool_names_are_refused(name):
    with pytest.raises(InvalidArgumentError, match="not allowed"):
        Tool(name, "d", handler=lambda inv: "x")


def test_normalize_result():
    class Out(BaseModel):
        n: int

    assert normalize_result(None) == ToolResult("")
    assert normalize_result("t") == ToolResult("t")
    assert normalize_result([Out(n=1), Out(n=2)]).text_result_for_llm == '[{"n": 1}, {"n": 2}]'
    assert normalize_result({"a": {1, 2}}).text_result_for_llm in ('{"a": [1, 2]}', '{"a": [2, 1]}')
    kept = ToolResult("x", "failure")
    assert normalize_result(kept) is kept
    with pytest.raises(TypeError, match="as JSON"):
        normalize_result(object())


def test_select_tools():
    a = Tool("a", "A", handler=lambda i: 1)
    b = Tool("b", "B", handler=lambda i: 2)
    assert select_tools([a, b]) == [a, b]
    assert select_tools([a, b], available_tools=["b"]) == [b]
    assert select_tools([a, b], excluded_tools=["b"]) == [a]
    assert select_tools([a, b], available_tools=["a", "b"], excluded_tools=["a"]) == [b]
    with pytest.raises(InvalidArgumentError, match=r"excluded_tools names tools .*'c'"):
        select_tools([a, b], excluded_tools=["c"])
    with pytest.raises(InvalidArgumentError, match="two tools are named 'a'"):
        select_tools([a, a])
    with pytest.raises(InvalidArgumentTypeError, match="list of Tool"):
        select_tools(a)
    with pytest.raises(InvalidArgumentTypeError, match="not function"):
        select_tools([lambda: 1])


# -- the runner: the happy path and the events ------------------------------------------------


def test_one_call_records_start_permission_and_complete_in_order():
    asked: list[PermissionRequest] = []

    def allow(request, invocation):
        asked.append(request)
        assert invocation == {"session_id": "s1"}
        return PermissionRequestResult("approved")

    runner = ToolRunner([get_weather], session_id="s1", on_permission_request=allow)
    round_ = run(runner, call("get_weather", {"city": "Paris"}, "call_9"))
    (outcome,) = round_.outcomes
    assert outcome.result == ToolResult("sunny in Paris")
    assert outcome.arguments == {"city": "Paris"}
    assert types_of(round_.events) == [
        EventType.TOOL_EXECUTION_START,
        EventType.PERMISSION_REQUESTED,
        EventType.PERMISSION_COMPLETED,
        EventType.TOOL_EXECUTION_COMPLETE,
    ]
    start, requested, completed, complete = (e.data for e in round_.events)
    assert start == {
        "messageId": "m1",
        "toolCallId": "call_9",
        "toolName": "get_weather",
        "arguments": {"city": "Paris"},
    }
    assert requested["permissionRequest"] == {
        "kind": "custom-tool",
        "toolName": "get_weather",
        "toolDescription": "Today's weather in a city",
        "args": {"city": "Paris"},
    }
    assert completed["requestId"] == requested["requestId"]
    assert completed["result"] == {"kind": "approved"}
    assert complete["success"] is True and complete["resultType"] == "success"
    assert complete["result"] == {"content": "sunny in Paris"}
    assert "error" not in complete and complete["durationMs"] >= 0
    assert asked == [
        PermissionRequest("get_weather", "Today's weather in a city", {"city": "Paris"}, "call_9")
    ]


def test_skip_permission_tools_are_not_asked_about():
    tool = define_tool("free", description="d", handler=lambda: "ok", skip_permission=True)
    round_ = run(ToolRunner([tool], session_id="s"), call("free"))
    assert round_.outcomes[0].result.text_result_for_llm == "ok"
    assert EventType.PERMISSION_REQUESTED not in types_of(round_.events)


def test_no_permission_handler_denies_as_in_the_sdk():
    round_ = run(ToolRunner([get_weather], session_id="s"), call("get_weather", {"city": "x"}))
    result = round_.outcomes[0].result
    assert result.result_type == "denied"
    assert "no one could be asked" in result.text_result_for_llm
    assert round_.events[2].data["result"] == {"kind": "user-not-available"}


@pytest.mark.parametrize(
    "answer",
    [
        PermissionRequestResult("denied-interactively-by-user", feedback="not today"),
        {"kind": "reject", "feedback": "not today"},
    ],
)
def test_denied_call_never_runs_and_the_model_is_told(answer):
    ran = []
    tool = define_tool("act", description="d", handler=lambda: ran.append(1))

    async def deny(request, invocation):
        return answer

    round_ = run(ToolRunner([tool], session_id="s", on_permission_request=deny), call("act"))
    result = round_.outcomes[0].result
    assert ran == []
    assert result.result_type == "denied"
    assert (
        result.text_result_for_llm == "The user denied permission to run 'act'. Feedback: not today"
    )
    complete = round_.events[-1].data
    assert complete["success"] is False and complete["resultType"] == "denied"


def test_a_permission_handler_that_raises_denies_and_is_recorded():
    def broken(request, invocation):
        raise RuntimeError("ui gone")

    runner = ToolRunner([get_weather], session_id="s", on_permission_request=broken)
    round_ = run(runner, call("get_weather", {"city": "x"}))
    assert round_.outcomes[0].result.result_type == "denied"
    assert round_.events[2].data["error"] == "RuntimeError: ui gone"


# -- failures ---------------------------------------------------------------------------------


def test_a_tool_that_raises_gives_the_model_a_generic_text_and_the_log_the_error():
    errors = []

    def boom(params: CityParams) -> str:
        raise PermissionError("/home/me/.secrets/key.txt is not readable")

    tool = define_tool("boom", description="d", handler=boom)
    hooks = {"on_error_occurred": lambda data, ctx: errors.append(data["error"])}
    runner = ToolRunner([tool], session_id="s", on_permission_request=APPROVE, hooks=hooks)
    round_ = run(runner, call("boom", {"city": "x"}))
    result = round_.outcomes[0].result
    assert result.text_result_for_llm == ERROR_TEXT
    assert "secrets" not in result.text_result_for_llm
    assert result.error == "PermissionError: /home/me/.secrets/key.txt is not readable"
    complete = round_.events[-1].data
    assert complete["error"] == {"message": result.error}
    assert complete["result"] == {"content": ERROR_TEXT}
    assert errors == [result.error]


def test_a_tool_may_show_the_model_a_failure_on_purpose():
    tool = define_tool(
        "f",
        description="d",
        handler=lambda: ToolResult("city unknown", "failure"),
        skip_permission=True,
    )
    result = run(ToolRunner([tool], session_id="s"), call("f")).outcomes[0].result
    assert result == ToolResult("city unknown", "failure")


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ("{not json", "Invalid JSON in the arguments of 'get_weather'"),
        ("[1, 2]", "The arguments of 'get_weather' must be a JSON object."),
    ],
)
def test_bad_json_arguments_are_a_failure_and_nothing_runs(arguments, expected):
    runner = ToolRunner([get_weather], session_id="s", on_permission_request=APPROVE)
    round_ = run(runner, ToolCallRequest("c", "get_weather", arguments))
    result = round_.outcomes[0].result
    assert result.result_type == "failure" and result.text_result_for_llm.startswith(expected)
    assert EventType.PERMISSION_REQUESTED not in types_of(round_.events)
    # the start event keeps what the model wrote: parsed when it parses, else the raw text
    shown = round_.events[0].data["arguments"]
    assert shown == (arguments if arguments.startswith("{not") else json.loads(arguments))


def test_an_unknown_tool_is_a_failure_naming_the_known_ones():
    round_ = run(ToolRunner([get_weather], session_id="s"), call("nope"))
    assert round_.outcomes[0].result.text_result_for_llm == (
        "Tool 'nope' does not exist. Available tools: get_weather."
    )


def test_a_sync_tool_hanging_past_the_timeout_is_abandoned():
    release = threading.Event()

    def hang() -> str:
        release.wait(10)
        return "late"

    tool = define_tool("hang", description="d", handler=hang, skip_permission=True)
    runner = ToolRunner([tool], session_id="s", timeout=0.2)

    async def go():
        try:
            return await runner.run([call("hang")])
        finally:
            release.set()  # let the abandoned thread end before asyncio.run joins it

    round_ = asyncio.run(go())
    result = round_.outcomes[0].result
    assert result.result_type == "timeout"
    assert result.text_result_for_llm == "The tool did not finish within 0.2 s and was abandoned."
    assert round_.events[-1].data["error"] == {"message": "timed out after 0.2 s"}


def test_long_results_are_capped():
    tool = define_tool("big", description="d", handler=lambda: "x" * 100, skip_permission=True)
    result = run(ToolRunner([tool], session_id="s", max_result_chars=10), call("big")).outcomes[0]
    assert result.result.text_result_for_llm == (
        "x" * 10 + "\n[result truncated: 100 characters, the first 10 shown]"
    )
    text = "x" * 10
    exact = define_tool("ten", description="d", handler=lambda: text, skip_permission=True)
    kept = run(ToolRunner([exact], session_id="s", max_result_chars=10), call("ten")).outcomes[0]
    assert kept.result.text_result_for_llm == text  # the boundary: exactly the cap is kept


# -- concurrency and cancellation --------------------------------------------------------------


def test_several_calls_run_concurrently_and_keep_the_models_order():
    barrier = threading.Barrier(2, timeout=5)

    def meet(params: CityParams) -> str:
        barrier.wait()  # both calls must be running at once, or this times out
        return params.city

    async def fast(params: CityParams) -> str:
        return params.city + "!"

    tools = [
        define_tool("meet", description="d", handler=meet),
        define_tool("fast", description="d", handler=fast),
    ]
    runner = ToolRunner(tools, session_id="s", on_permission_request=APPROVE)
    round_ = run(
        runner,
        call("meet", {"city": "a"}, "1"),
        call("meet", {"city": "b"}, "2"),
        call("fast", {"city": "c"}, "3"),
    )
    assert [o.call.id for o in round_.outcomes] == ["1", "2", "3"]
    assert [o.result.text_result_for_llm for o in round_.outcomes] == ["a", "b", "c!"]


def test_sync_handlers_run_off_the_event_loop_thread():
    threads = []

    def where() -> str:
        threads.append(threading.get_ident())
        return "ok"

    tool = define_tool("where", description="d", handler=where, skip_permission=True)
    loop_thread = []

    async def go():
        loop_thread.append(threading.get_ident())
        return await ToolRunner([tool], session_id="s").run([call("where")])

    asyncio.run(go())
    assert threads and threads[0] != loop_thread[0]


def test_cancelling_a_round_cancels_the_tool_and_records_it_aborted():
    started = asyncio.Event()
    cancelled = []

    async def slow() -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "never"

    tool = define_tool("slow", description="d", handler=slow, skip_permission=True)
    events = []

    async def go():
        runner = ToolRunner([tool], session_id="s")
        task = asyncio.create_task(runner.run([call("slow")], on_event=events.append))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    began = time.monotonic()
    asyncio.run(go())
    assert time.monotonic() - began < 10  # far below the tool's 30 s: it was cancelled
    assert cancelled == [True]
    assert types_of(events) == [EventType.TOOL_EXECUTION_START, EventType.TOOL_EXECUTION_COMPLETE]
    assert events[-1].data["error"] == {"message": "aborted"}
    assert events[-1].data["success"] is False


# -- hooks ------------------------------------------------------------------------------------


def test_pre_hook_changes_the_arguments_before_permission_is_asked():
    asked = []

    def allow(request, invocation):
        asked.append(request.args)
        return {"kind": "approved"}

    def pre(data, ctx):
        assert data["toolName"] == "get_weather" and data["sessionId"] == "s"
        return {"modifiedArgs": {"city": data["toolArgs"]["city"].upper()}}

    runner = ToolRunner(
        [get_weather], session_id="s", on_permission_request=allow, hooks={"on_pre_tool_use": pre}
    )
    round_ = run(runner, call("get_weather", {"city": "lima"}))
    assert round_.outcomes[0].result.text_result_for_llm == "sunny in LIMA"
    assert asked == [{"city": "LIMA"}]  # the user approves what will run
    assert types_of(round_.events) == [
        EventType.TOOL_EXECUTION_START,
        EventType.HOOK_START,
        EventType.HOOK_END,
        EventType.PERMISSION_REQUESTED,
        EventType.PERMISSION_COMPLETED,
        EventType.TOOL_EXECUTION_COMPLETE,
    ]
    assert round_.events[2].data["output"] == {"modifiedArgs": {"city": "LIMA"}}
    assert round_.events[-1].data["modifiedArguments"] == {"city": "LIMA"}


@pytest.mark.parametrize(
    ("decision", "runs", "asks"),
    [("deny", False, False), ("allow", True, False), ("ask", True, True), (None, True, True)],
)
def test_pre_hook_permission_decisions(decision, runs, asks):
    ran, asked = [], []
    tool = define_tool("act", description="d", handler=lambda: ran.append(1) or "done")

    def allow(request, invocation):
        asked.append(1)
        return True

    output = (
        {"permissionDecision": decision, "permissionDecisionReason": "policy"} if decision else {}
    )
    runner = ToolRunner(
        [tool],
        session_id="s",
        on_permission_request=allow,
        hooks={"on_pre_tool_use": lambda d, c: output},
    )
    result = run(runner, call("act")).outcomes[0].result
    assert bool(ran) is runs and bool(asked) is asks
    if decision == "deny":
        assert result == ToolResult("The call to 'act' was denied by a hook: policy", "denied")


def test_post_hook_changes_the_result():
    async def post(data, ctx):
        assert data["toolResult"] == ToolResult("sunny in Oslo")
        return {"modifiedResult": {"forecast": "rain"}, "additionalContext": "(hooked)"}

    runner = ToolRunner(
        [get_weather],
        session_id="s",
        on_permission_request=APPROVE,
        hooks={"on_post_tool_use": post},
    )
    round_ = run(runner, call("get_weather", {"city": "Oslo"}))
    assert round_.outcomes[0].result.text_result_for_llm == '{"forecast": "rain"}\n\n(hooked)'
    assert round_.events[-1].data["result"] == {"content": '{"forecast": "rain"}\n\n(hooked)'}


def test_a_hook_that_raises_is_recorded_and_the_call_goes_on():
    def pre(data, ctx):
        raise ValueError("hook bug")

    runner = ToolRunner(
        [get_weather], session_id="s", on_permission_request=APPROVE, hooks={"on_pre_tool_use": pre}
    )
    round_ = run(runner, call("get_weather", {"city": "Oslo"}))
    assert round_.outcomes[0].result.text_result_for_llm == "sunny in Oslo"
    end = next(e for e in round_.events if e.type == EventType.HOOK_END)
    assert end.data["success"] is False and end.data["error"] == "ValueError: hook bug"


def test_unknown_hook_keys_are_refused():
    with pytest.raises(InvalidArgumentError, match="unknown hook 'on_pre_tool'"):
        ToolRunner([], session_id="s", hooks={"on_pre_tool": lambda d, c: None})


def test_schemas_are_what_the_model_sees():
    (schema,) = ToolRunner([get_weather], session_id="s").schemas()
    assert schema.name == "get_weather" and schema.description == "Today's weather in a city"
    assert schema.parameters["required"] == ["city"]


# -- the echo model's documented tool calling -------------------------------------------------


def echo_stream(provider, messages, tools=()):
    from copilot.providers.base import ModelRequest

    async def go():
        return [
            i async for i in provider.stream(ModelRequest("echo", tuple(messages), tools=tools))
        ]

    return asyncio.run(go())


def test_echo_calls_the_tools_a_prompt_names_then_answers_with_the_results():
    from copilot.providers.base import ChatMessage, ToolSchema
    from copilot.providers.echo import EchoProvider

    echo = EchoProvider()
    assert echo.supports_tools("echo")
    tools = (ToolSchema("get_weather", "d"), ToolSchema("now", "d"))
    prompt = ChatMessage("user", 'call get_weather {"city": "Paris"}\ncall now')
    completion = echo_stream(echo, [prompt], tools)[-1]
    assert completion.content == "" and completion.finish_reason == "tool_calls"
    assert completion.tool_calls == (
        ToolCallRequest("echo_call_1", "get_weather", '{"city": "Paris"}'),
        ToolCallRequest("echo_call_2", "now", "{}"),
    )
    history = [
        prompt,
        ChatMessage("assistant", "", tool_calls=completion.tool_calls),
        ChatMessage("tool", "sunny in Paris", tool_call_id="echo_call_1"),
        ChatMessage("tool", "12:00", tool_call_id="echo_call_2"),
    ]
    answer = echo_stream(echo, history, tools)[-1]
    assert answer.content == "sunny in Paris\n12:00" and answer.tool_calls == ()
    # ids keep counting over the context, so they stay unique in a session
    again = [*history, ChatMessage("assistant", answer.content), ChatMessage("user", "call now")]
    assert echo_stream(echo, again, tools)[-1].tool_calls == (
        ToolCallRequest("echo_call_3", "now", "{}"),
    )


def test_echo_only_calls_offered_tools_and_whole_prompts():
    from copilot.providers.base import ChatMessage, ToolSchema
    from copilot.providers.echo import EchoProvider

    echo = EchoProvider()
    tools = (ToolSchema("now", "d"),)
    for text in ("call missing {}", "call now\nand chat", "please call now"):
        completion = echo_stream(echo, [ChatMessage("user", text)], tools)[-1]
        assert completion.tool_calls == () and completion.content == f"echo: {text}"
    no_tools = echo_stream(echo, [ChatMessage("user", "call now")])[-1]
    assert no_tools.tool_calls == ()


def test_echo_replays_a_queued_completion_with_tool_calls():
    from copilot.providers.base import ChatMessage, Completion
    from copilot.providers.echo import EchoProvider

    echo = EchoProvider()
    scripted = Completion("", "echo", tool_calls=(ToolCallRequest("x", "any", "{}"),))
    echo.enqueue(scripted)
    completion = echo_stream(echo, [ChatMessage("user", "hi")])[-1]
    assert completion.tool_calls == scripted.tool_calls
    assert completion.finish_reason == "tool_calls"


# -- a session's tools ------------------------------------------------------------------------


def test_session_tools_build_checks_its_arguments():
    from copilot.tool_loop import SessionTools

    assert SessionTools.build("s") is None  # no tools, no hooks: the session runs as before
    hooked = SessionTools.build("s", hooks={"on_session_start": lambda d, c: None})
    assert hooked is not None and not hooked.has_tools
    built = SessionTools.build("s", tools=[get_weather], max_tool_rounds=3, tool_timeout=5)
    assert built.has_tools and built.max_rounds == 3 and built.runner.timeout == 5.0
    assert [s.name for s in built.schemas()] == ["get_weather"]
    with pytest.raises(InvalidArgumentError, match="max_tool_rounds must be 0 or more"):
        SessionTools.build("s", tools=[get_weather], max_tool_rounds=-1)
    with pytest.raises(InvalidArgumentTypeError, match="max_tool_rounds must be an int"):
        SessionTools.build("s", tools=[get_weather], max_tool_rounds=True)
    with pytest.raises(InvalidArgumentError, match="tool_timeout must be a positive"):
        SessionTools.build("s", tools=[get_weather], tool_timeout=0)
    with pytest.raises(InvalidArgumentTypeError, match="on_permission_request must be callable"):
        SessionTools.build("s", tools=[get_weather], on_permission_request="yes")


def test_a_model_that_cannot_call_tools_is_refused_naming_ones_that_can():
    from copilot.errors import ModelNotAvailableError, ToolsNotSupportedError
    from copilot.providers.echo import EchoProvider
    from copilot.providers.local import LocalProvider
    from copilot.tool_loop import SessionTools

    tools = SessionTools.build("s", tools=[get_weather])
    assert not LocalProvider().supports_tools("smollm2")
    tools.check_model(EchoProvider(), "echo", "echo", lambda: [])  # fine
    with pytest.raises(ToolsNotSupportedError) as caught:
        tools.check_model(
            LocalProvider(), "smollm2", "local:smollm2", lambda: ["echo", "openai:gpt-4.1"]
        )
    assert str(caught.value) == (
        "model 'local:smollm2' cannot call tools, and this session has tools (get_weather); "
        "models that can: echo, openai:gpt-4.1. Pick one of those, or turn the session's "
        "tools off (tools= in Python, --tools none in a notebook, the Notebook tools toggle in the "
        "panel)."
    )
    assert (
        isinstance(caught.value, ModelNotAvailableError) and caught.value.model == "local:smollm2"
    )
    # hooks only: no tools to call, any model will do
    SessionTools.build("s", hooks={"on_session_end": print}).check_model(
        LocalProvider(), "smollm2", "local:smollm2", lambda: []
    )


def test_session_hooks_are_recorded():
    from copilot.tool_loop import SessionTools

    def submitted(data, ctx):
        return {"modifiedPrompt": data["prompt"].upper()}

    tools = SessionTools.build("s", hooks={"on_user_prompt_submitted": submitted})
    events = []
    output = asyncio.run(tools.hook("on_user_prompt_submitted", {"prompt": "hi"}, events.append))
    assert output == {"modifiedPrompt": "HI"}
    assert types_of(events) == [EventType.HOOK_START, EventType.HOOK_END]
    assert events[0].data["hookType"] == "userPromptSubmitted"
    assert events[0].data["input"] == {"prompt": "hi"}
    assert events[1].data == {
        "hookInvocationId": events[0].data["hookInvocationId"],
        "hookType": "userPromptSubmitted",
        "output": {"modifiedPrompt": "HI"},
        "success": True,
    }


def test_a_tool_that_never_returns_does_not_keep_the_program_from_exiting():
    import subprocess
    import sys

    code = (
        "import asyncio, time\n"
        "from copilot.providers.base import ToolCallRequest\n"
        "from copilot.tool_runner import ToolRunner\n"
        "from copilot.tools import define_tool\n"
        "tool = define_tool('stuck', description='d', handler=lambda: time.sleep(3600),\n"
        "                   skip_permission=True)\n"
        "runner = ToolRunner([tool], session_id='s', timeout=0.2)\n"
        "round_ = asyncio.run(runner.run([ToolCallRequest('c', 'stuck', '{}')]))\n"
        "print(round_.outcomes[0].result.result_type)\n"
    )
    # the tool sleeps an hour; 60 s is a generous bound for a loaded machine to start Python,
    # time the tool out after 0.2 s and exit, far below what joining the thread would take
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "timeout"


@pytest.mark.parametrize("module", ["tools.py", "tool_runner.py", "tool_loop.py"])
def test_the_tool_modules_import_no_face(module):
    """Imports run one way: the faces use the tool modules, never the reverse."""
    import ast
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "copilot" / module
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"client", "session", "_services"}
    assert imported  # the scan saw the module's relative imports


def test_a_plain_tool_handler_gets_the_invocation_as_in_the_sdk():
    seen = []

    def handler(invocation: ToolInvocation) -> ToolResult:
        seen.append(invocation)
        return ToolResult(f"{invocation.arguments['n'] * 2}")

    tool = Tool(
        "double",
        "Double n",
        handler=handler,
        parameters={"type": "object", "properties": {"n": {"type": "integer"}}},
        skip_permission=True,
    )
    round_ = run(ToolRunner([tool], session_id="s9"), call("double", {"n": 21}, "c7"))
    assert round_.outcomes[0].result == ToolResult("42")
    assert seen == [ToolInvocation("s9", "c7", "double", {"n": 21})]
