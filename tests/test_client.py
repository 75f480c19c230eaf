"""The sync client: sessions, turns, events, errors and lifecycle, through the echo model."""

from __future__ import annotations

import asyncio
import itertools
import threading
from datetime import timedelta

import pytest
from helpers import HeldEcho, types_of, wait_until

from copilot import (
    ClientState,
    ClientStateError,
    CopilotClient,
    CopilotError,
    EventType,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    ModelNotAvailableError,
    SessionClosedError,
    SessionExistsError,
    SessionNotFoundError,
    TurnAbortedError,
    TurnTimeoutError,
)

STORED_TURN = [
    "user.message",
    "assistant.turn_start",
    "assistant.message",
    "assistant.usage",
    "assistant.turn_end",
]


# -- sessions -------------------------------------------------------------------------------


def test_create_session_generates_an_id_and_stores_metadata(client):
    session = client.create_session(model="echo")
    assert len(session.session_id) == 32
    info = client.get_session_metadata(session.session_id)
    assert info["model"] == "echo" and info["messageCount"] == 0
    for key in ("sessionId", "startTime", "modifiedTime", "model", "summary", "messageCount"):
        assert key in client.list_sessions()[0]


def test_custom_id_round_trips_and_taken_id_is_refused(client):
    client.create_session(session_id="user-123-chat", model="echo")
    with pytest.raises(SessionExistsError, match="user-123-chat") as info:
        client.create_session(session_id="user-123-chat", model="echo")
    assert "resume_session('user-123-chat')" in str(info.value)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a" * 129,
        "with/slash",
        "back\\slash",
        "..",
        "a..b",
        ".",
        "tab\there",
        "nl\n",
        " lead",
        "trail ",
        "\x00",
    ],
)
def test_malformed_ids_are_value_errors_naming_the_problem(client, bad):
    with pytest.raises(InvalidArgumentError) as info:
        client.create_session(session_id=bad, model="echo")
    assert isinstance(info.value, ValueError)
    assert "session id" in str(info.value)
    assert client.list_sessions() == []


def test_non_string_id_is_a_type_error(client):
    with pytest.raises(InvalidArgumentTypeError) as info:
        client.create_session(session_id=123, model="echo")
    assert isinstance(info.value, TypeError)


def test_resume_and_delete_of_unknown_ids(client):
    with pytest.raises(SessionNotFoundError, match="list_sessions") as info:
        client.resume_session("nope")
    assert isinstance(info.value, LookupError) and info.value.session_id == "nope"
    with pytest.raises(SessionNotFoundError):
        client.delete_session("nope")
    assert client.get_session_metadata("nope") is None


def test_list_sessions_most_recent_first_and_last_session_id(client):
    a = client.create_session(session_id="a", model="echo")
    client.create_session(session_id="b", model="echo")
    assert client.get_last_session_id() == "b"
    a.send_and_wait(prompt="hello there")
    assert [s["sessionId"] for s in client.list_sessions()] == ["a", "b"]
    assert client.get_last_session_id() == "a"
    info = client.list_sessions()[0]
    assert info["summary"] == "hello there" and info["messageCount"] == 2


def test_delete_session_removes_every_key(client):
    session = client.create_session(session_id="gone", model="echo")
    session.send_and_wait(prompt="one")
    keep = client.create_session(session_id="kept", model="echo")
    keep.send_and_wait(prompt="two")
    client.delete_session("gone")
    cache = client._core.store._cache
    assert [k for k in cache.iterkeys() if "gone" in k] == []
    assert [e.type for e in keep.get_messages()].count("user.message") == 1
    with pytest.raises(SessionClosedError):
        session.send(prompt="after delete")


def test_delete_sessions_older_than(client):
    for sid in ("old-1", "old-2", "new"):
        client.create_session(session_id=sid, model="echo")
    store = client._core.store
    for sid in ("old-1", "old-2"):
        store.update_session(sid, modifiedTime="2020-01-01T00:00:00.000000+00:00")
    listed = client.delete_sessions(older_than=timedelta(days=30), dry_run=True)
    assert sorted(s["sessionId"] for s in listed) == ["old-1", "old-2"]
    assert len(client.list_sessions()) == 3
    removed = client.delete_sessions(older_than=timedelta(days=30))
    assert sorted(s["sessionId"] for s in removed) == ["old-1", "old-2"]
    assert [s["sessionId"] for s in client.list_sessions()] == ["new"]
    with pytest.raises(InvalidArgumentError):
        client.delete_sessions(older_than=30)


def test_fork_copies_history_and_leaves_the_source_alone(client):
    source = client.create_session(session_id="src", model="echo", system_message="Be brief.")
    source.send_and_wait(prompt="first")
    fork = client.fork_session("src", "dst")
    fork.send_and_wait(prompt="second")
    sent = client.get_provider("echo").requests[-1].messages
    assert [(m.role, m.content) for m in sent] == [
        ("system", "Be brief."),
        ("user", "first"),
        ("assistant", "echo: first"),
        ("user", "second"),
    ]
    assert types_of(source.get_messages()).count("user.message") == 1
    source_ids = {e.id for e in source.get_messages()}
    assert not source_ids & {e.id for e in fork.get_messages()}
    assert client.get_session_metadata("dst")["forkedFrom"] == "src"
    with pytest.raises(SessionExistsError):
        client.fork_session("src", "dst")
    with pytest.raises(SessionNotFoundError):
        client.fork_session("missing", "x")


# -- models ---------------------------------------------------------------------------------


def test_unavailable_model_without_fallback_names_the_fix(make_client):
    client = make_client()
    with pytest.raises(ModelNotAvailableError) as info:
        client.create_session(model="gpt-4.1")
    message = str(info.value)
    assert "OPENAI_API_KEY" in message and "COPILOT_JUPYTER_FALLBACK_MODEL" in message
    assert client.list_sessions() == []


def test_fallback_is_announced_and_recorded(client):
    session = client.create_session(model="gpt-4.1")
    reply = session.send_and_wait(prompt="hi")
    assert reply.data.model == "echo"
    warnings = [e for e in session.get_messages() if e.type == EventType.SESSION_WARNING]
    assert len(warnings) == 1 and "gpt-4.1" in warnings[0].data.message
    session.send_and_wait(prompt="again")  # announced once, not every turn
    assert types_of(session.get_messages()).count("session.warning") == 1


def test_list_models_marks_usable_ones(client):
    models = {m["id"]: m for m in client.list_models()}
    assert models["echo"]["usable"] is True
    openai_models = [m for m in models.values() if m["provider"] == "openai"]
    assert openai_models and not openai_models[0]["usable"]
    assert "OPENAI_API_KEY" in openai_models[0]["reason"]


def test_set_model_keeps_context(make_client):
    client = make_client(routes={"echo-b": "echo"})
    session = client.create_session(model="echo")
    session.send_and_wait(prompt="remember me")
    session.set_model("echo-b")
    assert session.model == "echo-b"
    session.send_and_wait(prompt="next")
    sent = [m.content for m in client.get_provider("echo").requests[-1].messages]
    assert sent == ["remember me", "echo: remember me", "next"]
    change = [e for e in session.get_messages() if e.type == EventType.SESSION_MODEL_CHANGE]
    assert change[0].data == {"previousModel": "echo", "newModel": "echo-b"}
    assert client.get_session_metadata(session.session_id)["model"] == "echo-b"
    with pytest.raises(ModelNotAvailableError):
        session.set_model("claude-sonnet-4.5")


# -- turns and events -----------------------------------------------------------------------


def test_send_returns_the_message_id_at_once(client):
    # The model holds the reply until released: send returning while it is held shows it
    # does not wait for the reply (a wall-time bound would flake on a loaded machine).
    held = HeldEcho()
    client.register_provider("held", held)
    session = client.create_session(model="held:echo")
    message_id = session.send(prompt="a b c d e f g h")
    wait_until(lambda: held.in_flight == 1, what="the turn to reach the model")
    assert "assistant.message" not in types_of(session.get_messages())
    held.release()
    reply = session.send_and_wait(prompt="next")  # turns run in order
    assert reply.data.content == "echo: next"
    user = [e for e in session.get_messages() if e.type == EventType.USER_MESSAGE]
    assert user[0].id == message_id and user[0].data.content == "a b c d e f g h"


def test_event_sequence_and_storage(client):
    session = client.create_session(model="echo")
    seen = []
    session.on(seen.append)
    reply = session.send_and_wait(prompt="one two three")
    wait_until(lambda: seen and seen[-1].type == "session.idle")
    delivered = types_of(seen)
    assert delivered[:2] == ["user.message", "assistant.turn_start"]
    assert delivered.count("assistant.message_delta") == 4  # "echo:", "one ", "two ", "three"
    assert delivered[-4:] == [
        "assistant.message",
        "assistant.usage",
        "assistant.turn_end",
        "session.idle",
    ]
    deltas = [e.data.deltaContent for e in seen if e.type == "assistant.message_delta"]
    assert "".join(deltas) == reply.data.content == "echo: one two three"
    stored = session.get_messages()
    assert types_of(stored) == ["session.start", *STORED_TURN]
    assert all(not e.ephemeral for e in stored) and all(e.ephemeral for e in seen if e.seq is None)
    for previous, event in itertools.pairwise(stored):
        assert event["parentId"] == previous["id"] and event.seq == previous.seq + 1
    assert set(stored[0]) == {"id", "type", "timestamp", "parentId", "ephemeral", "data"}
    usage = stored[4].data
    assert usage.inputTokens > 0 and usage.outputTokens > 0 and usage.duration >= 0


def test_streaming_false_sends_no_deltas(client):
    session = client.create_session(model="echo", streaming=False)
    seen = []
    session.on(seen.append)
    session.send_and_wait(prompt="one two three")
    wait_until(lambda: seen and seen[-1].type == "session.idle")
    assert "assistant.message_delta" not in types_of(seen)


def test_a_raising_handler_does_not_stop_others_and_unsubscribe_works(client, caplog):
    session = client.create_session(model="echo")
    first, second = [], []

    def broken(event):
        raise RuntimeError("handler bug")

    session.on(broken)
    unsubscribe = session.on(first.append)
    session.on(second.append)
    session.send_and_wait(prompt="x")
    wait_until(lambda: second and second[-1].type == "session.idle")
    assert types_of(first) == types_of(second)
    assert "handler bug" in caplog.text
    unsubscribe()
    count = len(first)
    session.send_and_wait(prompt="y")
    wait_until(lambda: second[-1].type == "session.idle" and len(second) > count)
    assert len(first) == count


def test_turns_of_one_session_run_in_order(slow_client):
    session = slow_client.create_session(model="echo")
    ids = [session.send(prompt=f"turn {i}") for i in range(5)]
    session.destroy()
    replies = [e for e in session.get_messages() if e.type == EventType.ASSISTANT_MESSAGE]
    assert [r.data.messageId for r in replies] == ids
    assert [r.data.content for r in replies] == [f"echo: turn {i}" for i in range(5)]


def test_sessions_run_concurrently(client):
    # A rendezvous, not a stopwatch: the replies are held until all four turns are in the
    # model at once, which cannot happen if sessions ran one after another.
    held = HeldEcho(until_in_flight=4)
    client.register_provider("held", held)
    sessions = [client.create_session(model="held:echo") for _ in range(4)]
    ids = [s.send(prompt=f"hi {i}") for i, s in enumerate(sessions)]
    for i, (session, message_id) in enumerate(zip(sessions, ids, strict=True)):
        assert session.wait(message_id, 30).data.content == f"echo: hi {i}"
    assert held.max_in_flight == 4


def test_empty_and_non_string_prompts(client):
    session = client.create_session(model="echo")
    for bad in ("", "   ", "\n"):
        with pytest.raises(InvalidArgumentError):
            session.send(prompt=bad)
    for bad in (None, 42, b"bytes", ["list"]):
        with pytest.raises(InvalidArgumentTypeError):
            session.send(prompt=bad)
    assert types_of(session.get_messages()) == ["session.start"]


def test_sdk_style_dict_prompt(client):
    session = client.create_session(model="echo")
    assert session.send_and_wait({"prompt": "dict form"}).data.content == "echo: dict form"


def test_system_message_leads_every_context(client):
    session = client.create_session(model="echo", system_message={"content": "You are terse."})
    session.send_and_wait(prompt="a")
    session.send_and_wait(prompt="b")
    sent = client.get_provider("echo").requests[-1].messages
    assert sent[0].role == "system" and sent[0].content == "You are terse."
    assert [m.content for m in sent[1:]] == ["a", "echo: a", "b"]


def test_history_is_trimmed_to_the_context_window_and_recorded(make_client):
    client = make_client(providers={"echo": {"context_window": 400}})
    # compaction off: this is the fallback that leaves old turns out (issue 17 summarizes them)
    session = client.create_session(
        model="echo", system_message="SYSTEM", infinite_sessions={"enabled": False}
    )
    for i in range(30):
        session.send_and_wait(prompt=f"question number {i} " + "x" * 40)
    sent = client.get_provider("echo").requests[-1].messages
    assert sent[0].content == "SYSTEM" and sent[-1].content.startswith("question number 29 ")
    assert 3 < len(sent) < 30
    budget = 400 - 100  # window minus the reserve for the answer
    assert sum(len(m.content) / 4 + 4 for m in sent) <= budget + 4 * len(sent)
    truncations = [e for e in session.get_messages() if e.type == EventType.SESSION_TRUNCATION]
    assert truncations and truncations[-1].data.turnsOmitted == 29 - truncations[-1].data.turnsSent


# -- abort, destroy, timeouts ---------------------------------------------------------------


def test_abort_keeps_the_partial_reply_and_the_session_goes_on(slow_client):
    session = slow_client.create_session(model="echo")
    deltas = []
    session.on(lambda e: deltas.append(e) if e.type == "assistant.message_delta" else None)
    message_id = session.send(prompt="w " * 40)
    wait_until(lambda: len(deltas) >= 3)
    session.abort()
    with pytest.raises(TurnAbortedError):
        session.wait(message_id, 10)
    abort = [e for e in session.get_messages() if e.type == EventType.ABORT][0]
    assert abort.data.messageId == message_id
    assert abort.data.partialContent.startswith("echo: w")
    assert len(abort.data.partialContent) < len("echo: " + "w " * 40)
    assert session.send_and_wait(prompt="next").data.content == "echo: next"
    sent = [m.content for m in slow_client.get_provider("echo").requests[-1].messages]
    assert sent[1] == abort.data.partialContent  # the partial reply stays in the context


def test_destroy_lets_queued_turns_finish(slow_client):
    session = slow_client.create_session(model="echo")
    for i in range(3):
        session.send(prompt=f"p{i} a b c")
    session.destroy()
    assert types_of(session.get_messages()).count("assistant.message") == 3
    with pytest.raises(SessionClosedError, match="resume_session"):
        session.send(prompt="after")


def test_destroy_timeout_aborts_what_is_left_and_records_it(slow_client):
    session = slow_client.create_session(model="echo")
    ids = [session.send(prompt="a b c d e f g h i j " * 3) for _ in range(3)]
    session.destroy(timeout=0.2)
    events = session.get_messages()
    for message_id in ids:
        ends = [
            e
            for e in events
            if e.data.get("messageId") == message_id and e.type in ("assistant.message", "abort")
        ]
        assert len(ends) == 1, message_id
        assert message_id in {e.id for e in events if e.type == "user.message"}
    assert types_of(events).count("abort") >= 2


def test_send_and_wait_timeout_leaves_the_turn_running(slow_client):
    session = slow_client.create_session(model="echo")
    with pytest.raises(TurnTimeoutError) as info:
        session.send_and_wait(prompt="a b c d e f g h i j", timeout=0.1)
    assert isinstance(info.value, TimeoutError)
    wait_until(lambda: "assistant.message" in types_of(session.get_messages()))


def test_stop_drains_sessions_and_the_client_restarts_on_use(make_client):
    client = make_client(providers={"echo": {"chunk_delay": 0.02}})
    session = client.create_session(session_id="s", model="echo")
    session.send(prompt="a b c d e")
    client.stop()
    assert client.state is ClientState.STOPPED
    assert types_of(session.get_messages()).count("assistant.message") == 1
    resumed = client.resume_session("s")  # the next call starts the client again
    assert client.state is ClientState.STARTED
    assert resumed.send_and_wait(prompt="again").data.content == "echo: again"


def test_context_manager(home):
    with CopilotClient(base_directory=home) as client:
        client.create_session(session_id="cm", model="echo").send_and_wait(prompt="x")
    assert client.state is ClientState.STOPPED


# -- threads and loops ----------------------------------------------------------------------


def test_sync_api_works_where_an_event_loop_is_running(client):
    """A notebook cell runs inside ipykernel's loop: no asyncio.run on the sync path."""

    async def cell():
        session = client.create_session(model="echo")
        return session.send_and_wait(prompt="inside a loop").data.content

    assert asyncio.run(cell()) == "echo: inside a loop"


def test_blocking_call_from_a_handler_is_refused_but_send_works(client):
    session = client.create_session(model="echo")
    outcome = {}

    def handler(event):
        if event.type == "assistant.turn_end" and "error" not in outcome:
            try:
                client.create_session(model="echo")  # blocks on the client's own thread
            except ClientStateError as exc:
                outcome["error"] = exc
            outcome["follow-up"] = session.send(prompt="follow-up from a handler")

    session.on(handler)
    session.send_and_wait(prompt="first")
    wait_until(lambda: types_of(session.get_messages()).count("assistant.message") == 2)
    assert "event thread" in str(outcome["error"])


def test_two_clients_on_one_session_see_each_others_turns(make_client):
    first = make_client()
    second = make_client()
    a = first.create_session(session_id="shared", model="echo")
    b = second.resume_session("shared")
    a.send_and_wait(prompt="from a")
    b.send_and_wait(prompt="from b")
    a.send_and_wait(prompt="from a again")
    sent = [m.content for m in first.get_provider("echo").requests[-1].messages]
    assert sent == ["from a", "echo: from a", "from b", "echo: from b", "from a again"]


def test_many_threads_send_to_many_sessions(client):
    sessions = [client.create_session(model="echo") for _ in range(8)]
    errors = []

    def work(session):
        try:
            for i in range(10):
                assert session.send_and_wait(prompt=f"t{i}").data.content == f"echo: t{i}"
        except Exception as exc:  # collected: the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert all(types_of(s.get_messages()).count("assistant.message") == 10 for s in sessions)


def test_every_public_error_derives_from_copilot_error():
    import copilot.errors as errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), CopilotError)


def test_metadata_is_stored_with_the_prompt_and_not_sent(client):
    session = client.create_session(model="echo")
    session.send_and_wait(prompt="hi", metadata={"cellId": "c-1", "n": 2})
    user = next(e for e in session.get_messages() if e.type == "user.message")
    assert user.data.metadata == {"cellId": "c-1", "n": 2}
    assert client.get_provider("echo").requests[-1].options == {}
    with pytest.raises(InvalidArgumentError):
        session.send(prompt="x", metadata={"bad": object()})
    with pytest.raises(InvalidArgumentTypeError):
        session.send(prompt="x", metadata=["not", "a", "mapping"])


def test_abort_a_queued_turn_by_id(slow_client):
    session = slow_client.create_session(model="echo")
    running = session.send(prompt="a b c d e f g h")
    queued = session.send(prompt="queued")
    assert session.abort(queued) is True
    session.destroy()
    events = session.get_messages()
    abort = next(e for e in events if e.type == "abort")
    assert abort.data.messageId == queued and "before it started" in abort.data.reason
    assert [e.data.messageId for e in events if e.type == "assistant.message"] == [running]
    assert session.abort("no-such-turn") is False


def test_client_get_messages_reads_without_opening(client):
    session = client.create_session(session_id="r", model="echo")
    session.send_and_wait(prompt="x")
    session.destroy()
    before = client.get_session_metadata("r")["modifiedTime"]
    events = client.get_messages("r")
    assert types_of(events) == ["session.start", *STORED_TURN]
    assert client.get_messages("r", after=5)[0].type == "assistant.turn_end"
    assert client.get_session_metadata("r")["modifiedTime"] == before  # nothing was written
    with pytest.raises(SessionNotFoundError):
        client.get_messages("missing")


def test_public_settings(make_client):
    client = make_client(fallback_model="echo", routes={"fast": "echo"})
    assert client.default_model == "local:smollm2" and client.fallback_model == "echo"
    assert client.routes == {"fast": "echo"}
    client.routes["x"] = "y"  # a copy: the client's table is unchanged
    assert client.routes == {"fast": "echo"}


def test_a_replacing_prompt_drops_the_old_exchange_from_the_context(client):
    session = client.create_session(model="echo")
    first = session.send(prompt="first")
    session.send_and_wait(prompt="other")
    session.send_and_wait(prompt="first, edited", replaces=first)
    sent = [m.content for m in client.get_provider("echo").requests[-1].messages]
    assert sent == ["other", "echo: other", "first, edited"]
    session.send_and_wait(prompt="next")
    sent = [m.content for m in client.get_provider("echo").requests[-1].messages]
    assert sent == ["other", "echo: other", "first, edited", "echo: first, edited", "next"]
    assert "first" in [e.data.content for e in session.get_messages() if e.type == "user.message"]


def test_wait_returns_the_reply_of_a_sent_turn_and_refuses_unknown_ids(slow_client):
    session = slow_client.create_session(model="echo")
    first = session.send(prompt="one")
    second = session.send(prompt="two")
    assert session.wait(second, timeout=10).data.content == "echo: two"
    assert session.wait(first, timeout=10).data.content == "echo: one"  # a late wait works
    with pytest.raises(InvalidArgumentError, match="get_messages"):
        session.wait("not-a-sent-id", timeout=1)
    slow = session.send(prompt="w " * 40)
    with pytest.raises(TurnTimeoutError):
        session.wait(slow, timeout=0.05)
    assert session.wait(slow, timeout=30).data.content.startswith("echo: w")  # it went on
