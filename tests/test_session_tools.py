"""Sessions that act: tools, permission and hooks through create_session / resume_session,
against real servers on 127.0.0.1 (ScriptedOpenAIServer and ScriptedAnthropicServer, through
the official SDKs), on both faces."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import get_time, get_weather, tool_calls_in, tool_results_in

from copilot import AsyncCopilotClient, CopilotClient
from copilot.errors import (
    InvalidArgumentError,
    ProviderTimeoutError,
    ToolRoundLimitError,
    ToolsNotSupportedError,
    TurnAbortedError,
)
from copilot.events import EventType
from copilot.testing import Reply, ScriptedAnthropicServer, ScriptedOpenAIServer, ToolCall
from copilot.tool_runner import ERROR_TEXT
from copilot.tools import PermissionHandler, PermissionRequestResult, define_tool

REPO = Path(__file__).resolve().parents[1]
APPROVE = PermissionHandler.approve_all
TOOL_TYPES = {
    EventType.TOOL_EXECUTION_START,
    EventType.TOOL_EXECUTION_COMPLETE,
    EventType.PERMISSION_REQUESTED,
    EventType.PERMISSION_COMPLETED,
    EventType.HOOK_START,
    EventType.HOOK_END,
}

pytestmark = pytest.mark.timeout(120)


class Family:
    """A provider family: its server, the client settings that reach it, how to read requests."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "openai":
            self.server = ScriptedOpenAIServer().start()
            self.model = "openai:gpt-4o"
            self.env = {"OPENAI_API_KEY": "sk-test"}
        else:
            self.server = ScriptedAnthropicServer().start()
            self.model = "anthropic:claude-sonnet-4-6"
            self.env = {"ANTHROPIC_API_KEY": "sk-ant-test"}
        self.providers = {kind: {"base_url": self.server.base_url}}

    def bodies(self) -> list[dict]:
        return [r.json for r in self.server.requests if r.method == "POST"]

    def results_in(self, body: dict) -> dict[str, str]:
        """call id -> result text, as the request carried them."""
        return tool_results_in(self.kind, body)

    def calls_in(self, body: dict) -> list[str]:
        """The ids of the calls the request replayed."""
        return tool_calls_in(self.kind, body)


@pytest.fixture(params=["openai", "anthropic"])
def family(request, monkeypatch):
    fam = Family(request.param)
    for name, value in fam.env.items():
        monkeypatch.setenv(name, value)
    yield fam
    fam.server.stop()


@pytest.fixture
def make_client(make_client, family):
    """conftest's factory (it stops every client), for clients reaching the family's server,
    started."""

    def make(**kwargs):
        client = make_client(providers=family.providers, max_retries=0, **kwargs)
        client.start()
        return client

    return make


def tool_events(session):
    return [e for e in session.get_messages() if e.type in TOOL_TYPES]


def two_calls(family, answer="Sunny and noon in Paris."):
    family.server.enqueue(
        Reply(
            "Let me look.",
            tool_calls=[
                ToolCall("get_weather", {"city": "Paris"}, id="id_w"),
                ToolCall("get_time", {"city": "Paris"}, id="id_t"),
            ],
        ),
        Reply(answer),
    )


# -- the main path ------------------------------------------------------------------------------


def test_a_turn_that_calls_two_tools_then_answers(family, make_client):
    client = make_client()
    session = client.create_session(
        model=family.model, tools=[get_weather, get_time], on_permission_request=APPROVE
    )
    two_calls(family)
    reply = session.send_and_wait("Weather and time in Paris?", timeout=60)
    assert reply.data.content == "Sunny and noon in Paris."
    types = [e.type for e in session.get_messages()]
    turn = types[types.index(EventType.USER_MESSAGE) :]
    assert turn[:3] == [
        EventType.USER_MESSAGE,
        EventType.ASSISTANT_TURN_START,
        EventType.ASSISTANT_MESSAGE,  # the step with the calls
    ]
    assert turn[-3:] == [
        EventType.ASSISTANT_MESSAGE,  # the answer
        EventType.ASSISTANT_USAGE,
        EventType.ASSISTANT_TURN_END,
    ]
    assert set(turn[3:-3]) == TOOL_TYPES - {EventType.HOOK_START, EventType.HOOK_END}
    events = session.get_messages()
    step = next(e for e in events if e.type == EventType.ASSISTANT_MESSAGE)
    assert [r["toolCallId"] for r in step.data["toolRequests"]] == ["id_w", "id_t"]
    for call_id in ("id_w", "id_t"):
        mine = [e.type for e in events if e.data.get("toolCallId") == call_id]
        assert mine == [
            EventType.TOOL_EXECUTION_START,
            EventType.PERMISSION_REQUESTED,
            EventType.PERMISSION_COMPLETED,
            EventType.TOOL_EXECUTION_COMPLETE,
        ]
    first, second = family.bodies()
    assert family.calls_in(first) == [] and family.results_in(first) == {}
    assert family.calls_in(second) == ["id_w", "id_t"]
    assert family.results_in(second) == {"id_w": "sunny in Paris", "id_t": "12:00 in Paris"}
    usage = next(e for e in events if e.type == EventType.ASSISTANT_USAGE)
    assert usage.data["attempts"] == 2  # two model steps, one attempt each

    # the next turn replays the calls and results in the provider's wire format
    family.server.enqueue(Reply("You are welcome."))
    session.send_and_wait("Thanks!", timeout=60)
    third = family.bodies()[-1]
    assert family.calls_in(third) == ["id_w", "id_t"]
    assert family.results_in(third) == {"id_w": "sunny in Paris", "id_t": "12:00 in Paris"}


def test_the_async_face_runs_the_same_turn(family, home):
    async def go():
        async with AsyncCopilotClient(
            base_directory=home, providers=family.providers, max_retries=0
        ) as client:
            session = await client.create_session(
                model=family.model, tools=[get_weather, get_time], on_permission_request=APPROVE
            )
            two_calls(family, "async answer")
            reply = await session.send_and_wait("Weather and time?", timeout=60)
            return reply, await session.get_messages()

    reply, events = asyncio.run(go())
    assert reply.data.content == "async answer"
    completes = [e for e in events if e.type == EventType.TOOL_EXECUTION_COMPLETE]
    assert {e.data["toolCallId"]: e.data["result"]["content"] for e in completes} == {
        "id_w": "sunny in Paris",
        "id_t": "12:00 in Paris",
    }
    assert family.results_in(family.bodies()[-1]) == {
        "id_w": "sunny in Paris",
        "id_t": "12:00 in Paris",
    }


# -- permission, hooks, failures ----------------------------------------------------------------


def test_a_denied_call_reaches_the_model_as_denied_and_the_turn_goes_on(family, make_client):
    asked = []

    def deny(request, invocation):
        asked.append((request.tool_name, request.args))
        return PermissionRequestResult("denied-interactively-by-user")

    session = make_client().create_session(
        model=family.model, tools=[get_weather], on_permission_request=deny
    )
    family.server.enqueue(
        Reply(tool_calls=[ToolCall("get_weather", {"city": "Oslo"}, id="d1")]),
        Reply("I was not allowed to look."),
    )
    reply = session.send_and_wait("Weather in Oslo?", timeout=60)
    assert reply.data.content == "I was not allowed to look."
    assert asked == [("get_weather", {"city": "Oslo"})]
    assert family.results_in(family.bodies()[-1]) == {
        "d1": "The user denied permission to run 'get_weather'."
    }
    complete = [e for e in tool_events(session) if e.type == EventType.TOOL_EXECUTION_COMPLETE]
    assert complete[0].data["resultType"] == "denied"
    assert EventType.TOOL_EXECUTION_START in [e.type for e in tool_events(session)]


def test_hooks_change_the_arguments_and_the_result(family, make_client):
    ran_with = []

    @define_tool(description="Look a city up")
    def lookup(city: str) -> str:
        ran_with.append(city)
        return f"found {city}"

    hooks = {
        "on_pre_tool_use": lambda data, ctx: {
            "modifiedArgs": {"city": data["toolArgs"]["city"] + "!"}
        },
        "on_post_tool_use": lambda data, ctx: {
            "modifiedResult": data["toolResult"].text_result_for_llm.upper()
        },
    }
    session = make_client().create_session(
        model=family.model, tools=[lookup], on_permission_request=APPROVE, hooks=hooks
    )
    family.server.enqueue(
        Reply(tool_calls=[ToolCall("lookup", {"city": "Rome"}, id="h1")]), Reply("ok")
    )
    session.send_and_wait("Find Rome", timeout=60)
    assert ran_with == ["Rome!"]
    assert family.results_in(family.bodies()[-1]) == {"h1": "FOUND ROME!"}
    hook_types = [e.data["hookType"] for e in tool_events(session) if e.type == EventType.HOOK_END]
    assert hook_types == ["preToolUse", "postToolUse"]


def test_a_tool_that_raises_tells_the_model_it_failed_and_the_log_why(family, make_client):
    @define_tool(description="Read a secret file")
    def read_file(path: str) -> str:
        raise FileNotFoundError(f"/home/me/.ssh/{path}")

    session = make_client().create_session(
        model=family.model, tools=[read_file], on_permission_request=APPROVE
    )
    family.server.enqueue(
        Reply(tool_calls=[ToolCall("read_file", {"path": "id_rsa"}, id="e1")]),
        Reply("The tool failed."),
    )
    assert session.send_and_wait("read it", timeout=60).data.content == "The tool failed."
    assert family.results_in(family.bodies()[-1]) == {"e1": ERROR_TEXT}
    assert ".ssh" not in json.dumps(family.bodies()[-1])
    complete = [e for e in tool_events(session) if e.type == EventType.TOOL_EXECUTION_COMPLETE][0]
    assert complete.data["error"] == {"message": "FileNotFoundError: /home/me/.ssh/id_rsa"}


def test_a_tool_hanging_past_its_timeout_is_a_timeout_result(family, make_client):
    release = threading.Event()

    @define_tool(description="Never answers in time")
    def slow() -> str:
        release.wait(20)
        return "late"

    session = make_client().create_session(
        model=family.model, tools=[slow], on_permission_request=APPROVE, tool_timeout=0.3
    )
    family.server.enqueue(Reply(tool_calls=[ToolCall("slow", {}, id="t1")]), Reply("gave up"))
    try:
        assert session.send_and_wait("go", timeout=60).data.content == "gave up"
    finally:
        release.set()
    assert family.results_in(family.bodies()[-1]) == {
        "t1": "The tool did not finish within 0.3 s and was abandoned."
    }
    complete = [e for e in tool_events(session) if e.type == EventType.TOOL_EXECUTION_COMPLETE][0]
    assert complete.data["resultType"] == "timeout"


def test_max_rounds_ends_the_turn_with_a_typed_error_and_the_session_goes_on(family, make_client):
    session = make_client().create_session(
        model=family.model,
        tools=[get_weather],
        on_permission_request=APPROVE,
        max_tool_rounds=1,
    )
    family.server.enqueue(
        Reply(tool_calls=[ToolCall("get_weather", {"city": "A"}, id="m1")]),
        Reply(tool_calls=[ToolCall("get_weather", {"city": "B"}, id="m2")]),
    )
    with pytest.raises(ToolRoundLimitError, match="after 1 rounds"):
        session.send_and_wait("loop", timeout=60)
    assert len(family.bodies()) == 2
    events = session.get_messages()
    assert events[-2].type == EventType.SESSION_ERROR
    assert events[-2].data["errorType"] == "ToolRoundLimitError"
    rejected = [e for e in events if e.data.get("toolCallId") == "m2"]
    assert [e.data["resultType"] for e in rejected] == ["rejected"]
    # the session is usable, and the failed exchange stays out of the next context
    family.server.enqueue(Reply("fresh start"))
    assert session.send_and_wait("again", timeout=60).data.content == "fresh start"
    assert family.calls_in(family.bodies()[-1]) == []


def test_abort_during_a_tool_cancels_it_and_leaves_a_usable_session(family, make_client):
    started, cancelled = threading.Event(), threading.Event()

    @define_tool(description="Takes its time")
    async def wait_long() -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    session = make_client().create_session(
        model=family.model, tools=[wait_long], on_permission_request=APPROVE
    )
    family.server.enqueue(Reply(tool_calls=[ToolCall("wait_long", {}, id="a1")]))
    message_id = session.send("go")
    assert started.wait(30)
    assert session.abort() is True
    with pytest.raises(TurnAbortedError):
        session.wait(message_id, timeout=30)
    assert cancelled.wait(10)
    events = session.get_messages()
    complete = [e for e in events if e.type == EventType.TOOL_EXECUTION_COMPLETE]
    assert [e.data["error"] for e in complete] == [{"message": "aborted"}]
    assert EventType.ABORT in [e.type for e in events]
    family.server.enqueue(Reply("still here"))
    assert session.send_and_wait("hello?", timeout=60).data.content == "still here"
    assert family.calls_in(family.bodies()[-1]) == []  # no half-answered call is replayed


# -- resume, fork, models -----------------------------------------------------------------------


def test_resume_in_a_fresh_process_sends_the_earlier_calls_and_results(family, make_client, home):
    session = make_client().create_session(
        session_id="acts",
        model=family.model,
        tools=[get_weather, get_time],
        on_permission_request=APPROVE,
    )
    two_calls(family)
    session.send_and_wait("Weather and time in Paris?", timeout=60)
    family.server.enqueue(Reply("resumed answer"))
    code = (
        "from copilot import CopilotClient\n"
        f"client = CopilotClient(base_directory={str(home)!r}, "
        f"providers={family.providers!r}, max_retries=0)\n"
        "session = client.resume_session('acts')  # no tools given: they are code\n"
        "print(session.send_and_wait('and tomorrow?', timeout=60).data.content)\n"
        "client.stop()\n"
    )
    env = {**os.environ, **family.env, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "resumed answer"
    last = family.bodies()[-1]
    assert family.calls_in(last) == ["id_w", "id_t"]
    assert family.results_in(last) == {"id_w": "sunny in Paris", "id_t": "12:00 in Paris"}


def test_a_fork_replays_the_calls_too(family, make_client):
    client = make_client()
    session = client.create_session(
        session_id="src",
        model=family.model,
        tools=[get_weather, get_time],
        on_permission_request=APPROVE,
    )
    two_calls(family)
    session.send_and_wait("Weather and time in Paris?", timeout=60)
    fork = client.fork_session("src", "dst")
    family.server.enqueue(Reply("forked"))
    assert fork.send_and_wait("next", timeout=60).data.content == "forked"
    assert family.calls_in(family.bodies()[-1]) == ["id_w", "id_t"]


def test_list_models_says_which_can_call_tools(client):
    models = {m["id"]: m for m in client.list_models()}
    assert models["echo"]["tools"] is True
    assert all(not m["tools"] for m in models.values() if m["provider"] == "local")


def test_tools_on_a_model_that_cannot_call_them_is_a_typed_error_naming_ones_that_can(client):
    with pytest.raises(ToolsNotSupportedError) as caught:
        client.create_session(session_id="no", model="local:smollm2", tools=[get_weather])
    assert "'local:smollm2' cannot call tools" in str(caught.value)
    assert "echo" in str(caught.value)
    assert client.get_session_metadata("no") is None  # nothing stored


def test_bad_tool_arguments_are_refused_before_anything_is_stored(client):
    with pytest.raises(InvalidArgumentError, match="available_tools names tools"):
        client.create_session(
            session_id="bad", model="echo", tools=[get_weather], available_tools=["nope"]
        )
    assert client.get_session_metadata("bad") is None


# -- the echo model and the session hooks -------------------------------------------------------


def test_echo_calls_a_tool_a_prompt_names(client):
    events = []
    hooks = {
        "on_user_prompt_submitted": lambda data, ctx: {"modifiedPrompt": data["prompt"].strip()},
        "on_session_start": lambda data, ctx: events.append(data["source"]),
        "on_session_end": lambda data, ctx: events.append(data["reason"]),
    }
    session = client.create_session(
        model="echo", tools=[get_weather], on_permission_request=APPROVE, hooks=hooks
    )
    reply = session.send_and_wait('  call get_weather {"city": "Lyon"}  ', timeout=30)
    assert reply.data.content == "sunny in Lyon"
    assert events == ["new"]
    prompt = next(e for e in session.get_messages() if e.type == EventType.USER_MESSAGE)
    assert prompt.data["content"] == 'call get_weather {"city": "Lyon"}'
    assert prompt.data["originalContent"] == '  call get_weather {"city": "Lyon"}  '
    resumed = client.resume_session(session.session_id, tools=[get_weather], hooks=hooks)
    assert events == ["new", "resume"]
    assert resumed.session_id == session.session_id
    resumed.destroy()
    assert events == ["new", "resume", "user_exit"]
    hook_types = [
        e.data["hookType"]
        for e in client.get_messages(session.session_id)
        if e.type == EventType.HOOK_END
    ]
    assert hook_types == ["sessionStart", "userPromptSubmitted", "sessionStart", "sessionEnd"]


def test_a_process_killed_mid_tool_leaves_a_session_that_resumes_cleanly(home):
    """SIGKILL while a tool runs: the next process marks the turn interrupted, and its next
    context holds no call without a result (both APIs would refuse one)."""
    code = (
        "import sys, time\n"
        "from copilot import CopilotClient, PermissionHandler, define_tool\n"
        "@define_tool(description='hangs')\n"
        "def hang() -> str:\n"
        "    print('TOOL RUNNING', flush=True)\n"
        "    time.sleep(3600)\n"
        f"client = CopilotClient(base_directory={str(home)!r})\n"
        "s = client.create_session(session_id='killed', model='echo', tools=[hang],\n"
        "                          on_permission_request=PermissionHandler.approve_all)\n"
        "s.send_and_wait('call hang', timeout=3600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "TOOL RUNNING"
    finally:
        child.kill()  # SIGKILL
        child.wait(30)
    client = CopilotClient(base_directory=home, fallback_model="echo")
    try:
        session = client.resume_session("killed")
        resumed = [e for e in session.get_messages() if e.type == EventType.SESSION_RESUME]
        assert resumed[-1].data["interruptedTurns"] == 1
        starts = [e for e in session.get_messages() if e.type == EventType.TOOL_EXECUTION_START]
        assert [e.data["toolName"] for e in starts] == ["hang"]  # it was recorded live
        assert session.send_and_wait("hello", timeout=30).data.content == "echo: hello"
        sent = client.get_provider("echo").requests[-1].messages
        assert [(m.role, m.content) for m in sent] == [("user", "hello")]
    finally:
        client.stop()


def test_the_turns_timeout_bounds_its_tool_rounds_too(client):
    """A turn's ``timeout`` option bounds the whole turn: a tool still running when it runs
    out gets a timeout result, and the turn fails instead of asking the model again."""

    @define_tool(description="Slower than the turn")
    async def slow() -> str:
        await asyncio.sleep(30)
        return "late"

    session = client.create_session(
        model="echo", tools=[slow], on_permission_request=APPROVE, tool_timeout=60
    )
    message_id = session.send("call slow", timeout=1.0)
    with pytest.raises(ProviderTimeoutError, match="the turn's 1 s ran out during its tool calls"):
        session.wait(message_id, timeout=30)  # far below the tool's 30 s: the turn was cut
    events = session.get_messages()
    complete = [e for e in events if e.type == EventType.TOOL_EXECUTION_COMPLETE]
    assert [e.data["resultType"] for e in complete] == ["timeout"]
    assert events[-2].type == EventType.SESSION_ERROR
    assert events[-2].data["errorType"] == "ProviderTimeoutError"
    assert len(client.get_provider("echo").requests) == 1  # the model was not asked again
    assert session.send_and_wait("still usable?", timeout=30).data.content == "echo: still usable?"


def test_the_async_face_aborts_a_running_tool_and_resumes_with_tools(home):
    started = threading.Event()  # set on the client's loop, read on this test's loop

    @define_tool(description="Waits")
    async def wait_long() -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    async def go():
        async with AsyncCopilotClient(base_directory=home) as client:
            session = await client.create_session(
                session_id="async-abort",
                model="echo",
                tools=[wait_long],
                on_permission_request=APPROVE,
            )
            message_id = await session.send("call wait_long")
            for _ in range(3000):
                if started.is_set():
                    break
                await asyncio.sleep(0.01)
            assert await session.abort() is True
            with pytest.raises(TurnAbortedError):
                await session.wait(message_id, timeout=30)
            again = await client.resume_session(
                "async-abort", tools=[get_weather], on_permission_request=APPROVE
            )
            reply = await again.send_and_wait('call get_weather {"city": "Nice"}', timeout=30)
            return reply, await again.get_messages()

    reply, events = asyncio.run(go())
    assert reply.data.content == "sunny in Nice"
    completes = [e.data for e in events if e.type == EventType.TOOL_EXECUTION_COMPLETE]
    assert [c["toolName"] for c in completes] == ["wait_long", "get_weather"]
    assert completes[0]["error"] == {"message": "aborted"}


@pytest.mark.parametrize("family", ["anthropic"], indirect=True)
def test_claude_thinking_blocks_go_back_with_each_tool_round_in_the_turn_and_later_turns(
    family, make_client
):
    """With extended thinking on, the API refuses a tool round whose assistant message does not
    start with the thinking block (signature intact) that came with the calls."""
    client = make_client()
    session = client.create_session(
        model=family.model,
        tools=[get_weather, get_time],
        on_permission_request=APPROVE,
        reasoning_effort="low",
    )
    family.server.enqueue(
        Reply(
            reasoning="First the weather.", tool_calls=[ToolCall("get_weather", {"city": "Paris"})]
        ),
        Reply(
            "Now the time.",
            reasoning="Then the time.",
            tool_calls=[ToolCall("get_time", {"city": "Paris"})],
        ),
        Reply("Sunny, noon.", reasoning="Both known."),
    )
    assert session.send_and_wait("Weather and time in Paris?", timeout=60).data.content == (
        "Sunny, noon."
    )
    bodies = family.bodies()
    assert len(bodies) == 3 and all(b["thinking"]["type"] == "enabled" for b in bodies)
    second, third = bodies[1]["messages"], bodies[2]["messages"]
    assert [b["type"] for b in second[1]["content"]] == ["thinking", "tool_use"]
    assert second[1]["content"][0]["thinking"] == "First the weather."
    assert [b["type"] for b in third[3]["content"]] == ["thinking", "text", "tool_use"]
    assert third[3]["content"][0]["thinking"] == "Then the time."
    # the log keeps the blocks: a later turn (and a resumed session) sends them again
    steps = [e for e in session.get_messages() if e.data.get("toolRequests")]
    assert all(isinstance(e.data["reasoningOpaque"], str) for e in steps)
    family.server.enqueue(
        Reply(reasoning="Again.", tool_calls=[ToolCall("get_weather", {"city": "Oslo"})]),
        Reply("Snow.", reasoning="Done."),
    )
    resumed = make_client().resume_session(
        session.session_id, tools=[get_weather, get_time], on_permission_request=APPROVE
    )
    assert resumed.send_and_wait("And Oslo?", timeout=60).data.content == "Snow."
    later = family.bodies()[-1]["messages"]
    firsts = [
        m["content"][0]["type"]
        for m in later
        if m["role"] == "assistant" and isinstance(m["content"], list)
    ]
    assert firsts == ["thinking", "thinking", "thinking"]
