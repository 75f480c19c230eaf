"""The magics in a real headless IPython shell, answered by the echo model.

Every test gets its own store (``COPILOT_JUPYTER_HOME`` in ``tmp_path``) and a fresh shared
state; output is captured with IPython's ``capture_output`` so the tests see the same display
messages (and display-id updates) a notebook would get.
"""

from __future__ import annotations

import _thread
import doctest
import json
import re
import sys
import threading
import time
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import nbformat
import pytest
from helpers import copilot_extension
from IPython.core.display_functions import DisplayHandle
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.testing import globalipapp
from IPython.utils.capture import CapturedIO, capture_output

import copilot_jupyter
from copilot import CopilotClient, EventType, ProviderError
from copilot.history import exchanges_of
from copilot_jupyter import CopilotMagics
from copilot_jupyter.display import PLACEHOLDER, extract_code, render
from copilot_jupyter.export import to_markdown
from copilot_jupyter.formatting import time_ago
from copilot_jupyter.interpolate import interpolate
from copilot_jupyter.state import CopilotState, get_state, reset_state

# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    return globalipapp.get_ipython()


@pytest.fixture
def ip(shell: InteractiveShell, tmp_path, monkeypatch) -> Iterator[InteractiveShell]:
    """The shell with the extension loaded on a fresh store; echo answers every model."""
    with copilot_extension(shell, str(tmp_path / "home"), monkeypatch) as loaded:
        yield loaded


@pytest.fixture
def slow(ip: InteractiveShell, tmp_path) -> CopilotClient:
    """A shared state whose echo model streams one word every 20 ms."""
    client = CopilotClient(providers={"echo": {"chunk_delay": 0.02}})
    reset_state(CopilotState(client))
    return client


def run(ip: InteractiveShell, code: str, cell_id: str | None = None) -> tuple[Any, CapturedIO]:
    """Run a cell like a notebook would (stored in the history); return result and output."""
    with capture_output() as captured:
        result = ip.run_cell(code, store_history=True, cell_id=cell_id)
    return result, captured


def text_of(captured: CapturedIO) -> str:
    """Everything the cell showed, as text."""
    shown = [o.data.get("text/plain", "") for o in captured.outputs]
    return "\n".join([captured.stdout, captured.stderr, *shown])


def updates_of(captured: CapturedIO) -> tuple[str, list[dict[str, Any]]]:
    """The placeholder's display id and the bundles of its in-place updates, in order.

    While the reply streams the placeholder shows it; the last update empties it again.
    """
    first = next(o for o in captured.outputs if (o.transient or {}).get("display_id"))
    display_id = first.transient["display_id"]
    assert first.data == PLACEHOLDER  # the placeholder starts empty
    updates = [
        o.data
        for o in captured.outputs
        if o.update and (o.transient or {}).get("display_id") == display_id
    ]
    return display_id, updates


def live_updates(captured: CapturedIO) -> list[dict[str, Any]]:
    """The updates that showed the streaming reply (the emptying update left out)."""
    _, updates = updates_of(captured)
    if updates:
        assert updates[-1] == PLACEHOLDER  # emptied when the finished reply is shown
    return updates[:-1]


def final_reply(captured: CapturedIO) -> dict[str, Any]:
    """The finished reply: the display of its own right after the placeholder."""
    outputs = captured.outputs
    start = next(i for i, o in enumerate(outputs) if (o.transient or {}).get("display_id"))
    return next(o.data for o in outputs[start + 1 :] if not o.update and not o.transient)


def echo_requests() -> list[Any]:
    return get_state().client.get_provider("echo").requests


def events_of(name: str) -> list[Any]:
    return get_state().open_session(name, create=False).get_messages()


def assert_quiet_failure(result: Any, captured: CapturedIO, *words: str) -> None:
    """A failure shown as a short message: no traceback, the message says what to do."""
    output = text_of(captured)
    assert "Traceback" not in output
    for word in words:
        assert word in output


# -- loading -------------------------------------------------------------------------------


def test_load_ext_registers_line_and_cell_magic(ip: InteractiveShell) -> None:
    assert "copilot" in ip.magics_manager.magics["line"]
    assert "copilot" in ip.magics_manager.magics["cell"]
    assert any(isinstance(c, CopilotMagics) for c in ip.configurables)


def test_unload_ext_removes_the_magics_and_stops_the_client(ip: InteractiveShell) -> None:
    run(ip, "%%copilot chat\nhi")
    client = get_state().client
    ip.run_cell("%unload_ext copilot_jupyter")
    assert "copilot" not in ip.magics_manager.magics["line"]
    assert "copilot" not in ip.magics_manager.magics["cell"]
    assert not any(isinstance(c, CopilotMagics) for c in ip.configurables)
    assert client.state.value == "stopped"
    ip.run_cell("%load_ext copilot_jupyter")  # the fixture unloads again


# -- %%copilot -----------------------------------------------------------------------------


def test_cell_streams_reply_into_one_display_and_shows_a_footer(ip: InteractiveShell) -> None:
    result, captured = run(ip, "%%copilot chat\nHello there")
    assert result.success
    assert final_reply(captured)["text/markdown"] == "echo: Hello there"
    footer = captured.outputs[-1].data["text/plain"]
    assert "echo" in footer and "tokens" in footer and "session chat" in footer
    assert get_state().current_session == "chat"
    assert result.result is None  # nothing lands in Out


def test_bare_cell_uses_current_session_then_default(ip: InteractiveShell) -> None:
    run(ip, "%%copilot\nfirst")
    assert get_state().current_session == "default"
    run(ip, "%copilot new other")
    run(ip, "%%copilot\nsecond")
    assert [e.data.content for e in events_of("other") if e.type == EventType.USER_MESSAGE] == [
        "second"
    ]
    assert len([e for e in events_of("default") if e.type == EventType.USER_MESSAGE]) == 1


def test_bare_cell_without_current_session_and_no_default_is_refused(ip: InteractiveShell) -> None:
    ip.run_cell("%config CopilotMagics.default_session = ''")
    result, captured = run(ip, "%%copilot\nhello")
    assert isinstance(result.error_in_exec, UsageError)
    assert "%copilot use NAME" in captured.stderr
    assert get_state().client.list_sessions() == []


def test_session_is_resumed_with_its_history_by_a_new_client(ip: InteractiveShell) -> None:
    run(ip, "%%copilot chat\nremember 7")
    # a kernel restart, as far as the client is concerned: a new client on the same store
    get_state().client.stop()
    reset_state(None)
    run(ip, "%%copilot chat\nwhat number?")
    contents = [m.content for m in echo_requests()[-1].messages]
    assert contents == ["remember 7", "echo: remember 7", "what number?"]


def test_model_option_creates_then_switches_keeping_context(ip: InteractiveShell) -> None:
    run(ip, "%%copilot chat -m echo\none")
    assert get_state().client.get_session_metadata("chat")["model"] == "echo"
    run(ip, "%%copilot chat -m echo:echo\ntwo")
    assert get_state().client.get_session_metadata("chat")["model"] == "echo:echo"
    assert any(e.type == EventType.SESSION_MODEL_CHANGE for e in events_of("chat"))
    assert [m.content for m in echo_requests()[-1].messages] == ["one", "echo: one", "two"]


def test_system_option_sets_a_new_sessions_system_message(ip: InteractiveShell) -> None:
    run(ip, '%%copilot terse -s "Answer in one word."\nhi')
    first = echo_requests()[-1].messages[0]
    assert (first.role, first.content) == ("system", "Answer in one word.")
    _, captured = run(ip, '%%copilot terse -s "Something else"\nagain')
    assert "keeps its system message" in captured.stderr
    assert echo_requests()[-1].messages[0].content == "Answer in one word."


def test_new_option_refuses_an_existing_session(ip: InteractiveShell) -> None:
    run(ip, "%%copilot chat --new\none")
    result, captured = run(ip, "%%copilot chat --new\ntwo")
    assert_quiet_failure(result, captured, "already exists", "--new")
    assert len([e for e in events_of("chat") if e.type == EventType.USER_MESSAGE]) == 1


@pytest.mark.parametrize(
    "line",
    ["%%copilot chat -f nope", "%%copilot chat --bogus", "%%copilot a b", '%%copilot "chat'],
)
def test_bad_cell_arguments_are_usage_errors(ip: InteractiveShell, line: str) -> None:
    result, captured = run(ip, f"{line}\nhello")
    assert isinstance(result.error_in_exec, UsageError)
    assert "Traceback" not in text_of(captured)
    assert get_state().client.list_sessions() == []


def test_empty_cell_is_a_usage_error(ip: InteractiveShell) -> None:
    result, _ = run(ip, "%%copilot chat\n   \n")
    assert isinstance(result.error_in_exec, UsageError)


def test_magic_line_is_not_var_expanded(ip: InteractiveShell) -> None:
    ip.user_ns["who"] = "expanded"
    run(ip, '%%copilot chat -s "about {who} and $who"\nhi')
    assert echo_requests()[-1].messages[0].content == "about {who} and $who"


# -- interpolation ---------------------------------------------------------------------------


def test_interpolate_doctest_runs() -> None:
    import copilot_jupyter.interpolate

    result = doctest.testmod(copilot_jupyter.interpolate)
    assert result.attempted >= 1 and result.failed == 0


def test_interpolate_rules() -> None:
    ns = {"x": 42, "s": "{x}", "obj": types.SimpleNamespace(shape=(3, 4), _secret="no")}
    inputs = ["", "a = 1", "b = 2"]
    outputs = {2: "two"}
    cases = {
        "{x}": "42",
        "{{x}}": "{x}",
        "{{{x}}}": "{42}",
        "{missing}": "{missing}",
        "{s}": "{x}",  # values are not interpolated again
        "{obj.shape}": "(3, 4)",
        "{obj._secret}": "{obj._secret}",
        "{obj.nope}": "{obj.nope}",
        "{In[1]} / {In[2]}": "a = 1 / b = 2",
        "{In[0]} {In[9]}": "{In[0]} {In[9]}",
        "{Out[2]} {Out[1]}": "two {Out[1]}",
        '{"a": 1} { x } {x!r} {x:>3} {x[0]}': '{"a": 1} { x } {x!r} {x:>3} {x[0]}',
        "lone { and } braces": "lone { and } braces",
        "{x}}": "42}",
    }
    for text, expected in cases.items():
        assert interpolate(text, ns, inputs=inputs, outputs=outputs) == expected, text


def test_cell_prompt_is_interpolated_once_from_namespace_and_history(ip: InteractiveShell) -> None:
    start = ip.execution_count
    run(ip, "x = 42")
    run(ip, "'out' + 'put'")
    run(ip, "template = '{x}'")
    prompt = f"{{x}} {{In[{start}]}} {{Out[{start + 1}]}} {{{{x}}}} {{nope}} {{template}}"
    run(ip, f"%%copilot chat\n{prompt}")
    assert echo_requests()[-1].messages[-1].content == "42 x = 42 output {x} {nope} {x}"


# -- formats -----------------------------------------------------------------------------------


def test_format_code_puts_the_code_in_the_next_cell(ip: InteractiveShell, monkeypatch) -> None:
    calls: list[tuple[str, bool]] = []
    monkeypatch.setattr(ip, "set_next_input", lambda s, replace=False: calls.append((s, replace)))
    run(ip, "%%copilot chat -f code\nwrite:\n```python\nx = 1\nprint(x)\n```")
    assert calls == [("x = 1\nprint(x)", False)]


def test_format_code_without_fences_takes_the_whole_reply(
    ip: InteractiveShell, monkeypatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(ip, "set_next_input", lambda s, replace=False: calls.append(s))
    run(ip, "%%copilot chat --format code\nprint(1)")
    assert calls == ["echo: print(1)"]


def test_format_code_is_not_applied_to_a_failed_turn(ip: InteractiveShell, monkeypatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(ip, "set_next_input", lambda s, replace=False: calls.append(s))
    run(ip, "%copilot new chat")
    get_state().client.get_provider("echo").enqueue(ProviderError("down"))
    run(ip, "%%copilot chat -f code\nprint(1)")
    assert calls == []


def test_formats_render_final_reply(ip: InteractiveShell) -> None:
    echo = get_state().client.get_provider("echo")
    _, captured = run(ip, "%%copilot chat -f text\nplain")
    assert final_reply(captured) == {"text/plain": "echo: plain"}
    echo.enqueue("<b>bold</b>")
    _, captured = run(ip, "%%copilot chat -f html\nx")
    assert final_reply(captured)["text/html"] == "<b>bold</b>"
    echo.enqueue('```json\n{"a": [1, 2]}\n```')
    _, captured = run(ip, "%%copilot chat -f json\nx")
    assert final_reply(captured)["application/json"] == {"a": [1, 2]}
    echo.enqueue(r"\frac{1}{2}")
    _, captured = run(ip, "%%copilot chat -f math\nx")
    assert final_reply(captured)["text/latex"] == r"$\displaystyle \frac{1}{2}$"
    _, captured = run(ip, "%%copilot chat -f json\nnot json")
    assert "not valid JSON" in final_reply(captured)["text/markdown"]


def test_render_and_extract_code_helpers() -> None:
    assert render("a", "markdown", final=False) == {"text/plain": "a", "text/markdown": "a"}
    assert render("<b>", "html", final=False) == {"text/plain": "<b>"}  # no half-rendered HTML
    assert extract_code("x\n```py\na\n```\ny\n```\nb\n```") == "a\n\nb"


# -- re-running a cell -------------------------------------------------------------------------


def test_rerun_of_same_cell_replaces_its_exchange(ip: InteractiveShell) -> None:
    run(ip, "%%copilot chat\nfirst", cell_id="cell-A")
    run(ip, "%%copilot chat\nother", cell_id="cell-B")
    run(ip, "%%copilot chat\nfirst, edited", cell_id="cell-A")
    prompts = [e for e in events_of("chat") if e.type == EventType.USER_MESSAGE]
    assert [p.data.get("replaces") for p in prompts] == [None, None, prompts[0].id]
    contents = [m.content for m in echo_requests()[-1].messages]
    assert contents == ["other", "echo: other", "first, edited"]
    _, captured = run(ip, "%copilot history chat")
    history = captured.outputs[-1].data["text/markdown"]
    assert "first, edited" in history and "other" in history
    assert "You:**\n\nfirst\n" not in history


def test_rerun_is_per_session_and_needs_a_cell_id(ip: InteractiveShell) -> None:
    run(ip, "%%copilot a\none", cell_id="same")
    run(ip, "%%copilot b\none", cell_id="same")  # another session: nothing to replace there
    run(ip, "%%copilot a\ntwo")
    run(ip, "%%copilot a\ntwo")  # no cell id (a terminal): no replacement
    replaces = [e.data.get("replaces") for e in events_of("a") if e.type == EventType.USER_MESSAGE]
    assert replaces == [None, None, None]
    assert [e.data.get("replaces") for e in events_of("b") if e.type == EventType.USER_MESSAGE] == [
        None
    ]


# -- streaming, throttling, timeout, interrupt -------------------------------------------------


def test_reply_streams_through_several_updates_of_one_display(
    ip: InteractiveShell, slow: CopilotClient, monkeypatch
) -> None:
    threads: list[threading.Thread] = []
    update = DisplayHandle.update

    def recording_update(self: DisplayHandle, obj: Any, **kwargs: Any) -> None:
        threads.append(threading.current_thread())
        update(self, obj, **kwargs)

    monkeypatch.setattr(DisplayHandle, "update", recording_update)
    words = " ".join(f"w{i}" for i in range(30))  # ~0.6 s at 20 ms a word
    _, captured = run(ip, f"%%copilot chat\n{words}")
    assert threads and set(threads) == {threading.main_thread()}  # never the event thread
    updates = live_updates(captured)
    assert len(updates) >= 2
    assert final_reply(captured)["text/markdown"] == f"echo: {words}"
    partial = [u["text/markdown"] for u in updates]
    assert all(f"echo: {words}".startswith(p) for p in partial)
    assert len(set(partial)) == len(partial)  # no update without new text


def test_update_interval_throttles_the_display(ip: InteractiveShell, slow: CopilotClient) -> None:
    ip.run_cell("%config CopilotMagics.update_interval = 60.0")
    words = " ".join(f"w{i}" for i in range(20))
    _, captured = run(ip, f"%%copilot chat\n{words}")
    assert updates_of(captured)[1] == []  # no live update: nothing was due
    assert final_reply(captured)["text/markdown"] == f"echo: {words}"


def test_timeout_aborts_the_turn_and_keeps_the_partial_reply(
    ip: InteractiveShell, slow: CopilotClient
) -> None:
    ip.run_cell("%config CopilotMagics.timeout = 0.3")
    words = " ".join(f"w{i}" for i in range(100))
    _, captured = run(ip, f"%%copilot chat\n{words}")
    output = text_of(captured)
    assert "no reply within 0.3 s" in output and "aborted" in output
    abort = [e for e in events_of("chat") if e.type == EventType.ABORT]
    assert len(abort) == 1 and abort[0].data.partialContent.startswith("echo: w0")


def test_keyboard_interrupt_aborts_cleanly_and_session_stays_usable(
    ip: InteractiveShell, slow: CopilotClient
) -> None:
    words = " ".join(f"w{i}" for i in range(150))  # ~3 s
    echo = slow.get_provider("echo")

    def press_stop_while_streaming() -> None:  # the kernel's stop button: SIGINT in the cell
        deadline = time.monotonic() + 10
        while not echo.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        _thread.interrupt_main()

    presser = threading.Thread(target=press_stop_while_streaming)
    presser.start()
    try:
        result, captured = run(ip, f"%%copilot chat\n{words}")
    finally:
        presser.join()
    output = text_of(captured)
    assert result.error_in_exec is None
    assert "aborted" in output and "Traceback" not in output and "KeyboardInterrupt" not in output
    abort = [e for e in events_of("chat") if e.type == EventType.ABORT]
    assert len(abort) == 1 and abort[0].data.partialContent.startswith("echo: w0")
    assert final_reply(captured)["text/markdown"] == abort[0].data.partialContent
    result, captured = run(ip, "%%copilot chat\nstill there?")
    assert final_reply(captured)["text/markdown"] == "echo: still there?"


# -- expected failures -------------------------------------------------------------------------


def test_missing_api_key_prints_what_to_do(ip: InteractiveShell, monkeypatch) -> None:
    monkeypatch.delenv("COPILOT_JUPYTER_FALLBACK_MODEL")  # read when the state is first used
    result, captured = run(ip, "%%copilot chat -m gpt-4.1\nhello")
    assert result.error_in_exec is None
    assert_quiet_failure(result, captured, "copilot:", "OPENAI_API_KEY")
    assert get_state().client.list_sessions() == []


def test_provider_error_prints_message_and_session_stays_usable(ip: InteractiveShell) -> None:
    run(ip, "%copilot new chat")
    get_state().client.get_provider("echo").enqueue(ProviderError("the model server is down"))
    result, captured = run(ip, "%%copilot chat\nhello")
    assert_quiet_failure(result, captured, "the model server is down", "still usable")
    _, captured = run(ip, "%%copilot chat\nagain")
    assert final_reply(captured)["text/markdown"] == "echo: again"


def test_invalid_session_name_prints_a_message(ip: InteractiveShell) -> None:
    result, captured = run(ip, "%%copilot a/b\nhello")
    assert_quiet_failure(result, captured, "cannot contain '/'")


# -- subcommands -------------------------------------------------------------------------------


def test_list_shows_a_table_of_sessions(ip: InteractiveShell) -> None:
    _, captured = run(ip, "%copilot list")
    assert "no sessions yet" in captured.stdout
    run(ip, "%%copilot chat\none")
    run(ip, "%%copilot chat\ntwo")
    run(ip, "%copilot new other -m echo:echo")
    _, captured = run(ip, "%copilot list")
    data = captured.outputs[-1].data
    assert "<table>" in data["text/html"] and "chat" in data["text/html"]
    rows = {line.split()[0]: line.split() for line in data["text/plain"].splitlines()[2:]}
    assert rows["chat"][1:3] == ["echo", "2"]
    assert rows["*"][1:4] == ["other", "echo:echo", "0"]  # * marks the current session


def test_list_escapes_html(ip: InteractiveShell) -> None:
    run(ip, "%%copilot chat\n<script>alert(1)</script>")
    _, captured = run(ip, "%copilot list")
    html_table = captured.outputs[-1].data["text/html"]
    assert "<script>" not in html_table and "&lt;script&gt;" in html_table


def test_history_renders_the_transcript(ip: InteractiveShell) -> None:
    for prompt in ("one", "two", "three"):
        run(ip, f"%%copilot chat\n{prompt}")
    _, captured = run(ip, "%copilot history chat")
    text = captured.outputs[-1].data["text/markdown"]
    assert [w for w in ("one", "two", "three") if f"echo: {w}" in text] == ["one", "two", "three"]
    _, captured = run(ip, "%copilot history chat -n 1")
    text = captured.outputs[-1].data["text/markdown"]
    assert "echo: three" in text and "echo: two" not in text and "2 earlier" in text
    _, captured = run(ip, "%copilot history")  # the current session
    assert "echo: one" in captured.outputs[-1].data["text/markdown"]


def test_use_new_delete(ip: InteractiveShell) -> None:
    _, captured = run(ip, '%copilot new chat -m echo:echo -s "be brief"')
    assert "created session chat" in captured.stdout
    meta = get_state().client.get_session_metadata("chat")
    assert (meta["model"], meta["systemMessage"]) == ("echo:echo", "be brief")
    assert get_state().current_session == "chat"
    result, captured = run(ip, "%copilot new chat")
    assert_quiet_failure(result, captured, "already exists")
    run(ip, "%copilot new other")
    run(ip, "%copilot use chat")
    assert get_state().current_session == "chat"
    result, captured = run(ip, "%copilot use nowhere")
    assert_quiet_failure(result, captured, "no session 'nowhere'", "%copilot new nowhere")
    run(ip, "%copilot delete chat")
    assert get_state().client.get_session_metadata("chat") is None
    assert get_state().current_session is None
    result, captured = run(ip, "%copilot delete chat")
    assert_quiet_failure(result, captured, "no session 'chat'")


def test_fork_copies_model_system_message_and_exchanges(ip: InteractiveShell) -> None:
    run(ip, '%%copilot src -m echo:echo -s "sys"\none')
    run(ip, "%copilot fork src dst")
    meta = get_state().client.get_session_metadata("dst")
    assert (meta["model"], meta["systemMessage"]) == ("echo:echo", "sys")
    assert get_state().current_session == "dst"
    run(ip, "%%copilot dst\ntwo")
    contents = [m.content for m in echo_requests()[-1].messages]
    assert contents == ["sys", "one", "echo: one", "two"]
    assert len([e for e in events_of("src") if e.type == EventType.USER_MESSAGE]) == 1
    result, captured = run(ip, "%copilot fork src dst")
    assert_quiet_failure(result, captured, "already exists")


def test_rename_keeps_history_start_time_and_the_cells_that_replace_exchanges(
    ip: InteractiveShell,
) -> None:
    run(ip, "%%copilot old -m echo:echo --tools notebook\none", cell_id="c1")
    before = get_state().client.get_session_metadata("old")
    logged = [e.type for e in get_state().client.get_messages("old")]
    _, captured = run(ip, "%copilot rename old new")
    assert captured.stdout.strip() == "renamed session old to new"
    state = get_state()
    assert state.client.get_session_metadata("old") is None
    after = state.client.get_session_metadata("new")
    assert (after["startTime"], after["messageCount"]) == (before["startTime"], 2)
    assert state.current_session == "new" and state.tool_setting("new").enabled
    assert not state.tool_setting("old").enabled
    # renaming wrote nothing to the log (the session was not opened to check it)
    assert [e.type for e in get_state().client.get_messages("new")] == logged
    # re-running the cell under its new name still replaces its exchange
    run(ip, "%%copilot new\none again", cell_id="c1")
    assert [m.content for m in echo_requests()[-1].messages][-1] == "one again"
    prompts = [e.data["content"] for e in events_of("new") if e.type == EventType.USER_MESSAGE]
    assert prompts == ["one", "one again"]
    assert events_of("new")[-5].data.get("replaces") or any(
        e.data.get("replaces") for e in events_of("new") if e.type == EventType.USER_MESSAGE
    )
    # a session this kernel never opened: renamed without opening it (nothing written)
    client = get_state().client
    client.create_session(session_id="elsewhere", model="echo").destroy()
    logged = [e.type for e in client.get_messages("elsewhere")]
    run(ip, "%copilot rename elsewhere moved")
    assert [e.type for e in client.get_messages("moved")] == logged
    result, captured = run(ip, "%copilot rename new new")
    assert_quiet_failure(result, captured, "already exists")
    result, captured = run(ip, "%copilot rename nowhere other")
    assert_quiet_failure(result, captured, "no session 'nowhere'")


def test_model_subcommand_switches_and_keeps_context(ip: InteractiveShell) -> None:
    run(ip, "%%copilot chat\none")
    _, captured = run(ip, "%copilot model chat echo:echo")
    assert "now uses echo:echo" in captured.stdout
    run(ip, "%%copilot chat\ntwo")
    assert get_state().client.get_session_metadata("chat")["model"] == "echo:echo"
    assert [m.content for m in echo_requests()[-1].messages] == ["one", "echo: one", "two"]


def test_export_md_json_ipynb(ip: InteractiveShell, tmp_path) -> None:
    run(ip, "%%copilot chat\none", cell_id="c1")
    run(ip, "%%copilot chat\ntwo")
    run(ip, "%%copilot chat\none again", cell_id="c1")
    run(ip, f"%copilot export chat {tmp_path / 'chat.md'}")
    markdown = (tmp_path / "chat.md").read_text()
    assert "echo: two" in markdown and "echo: one again" in markdown
    assert "echo: one\n" not in markdown
    run(ip, f"%copilot export chat {tmp_path / 'chat.json'}")
    document = json.loads((tmp_path / "chat.json").read_text())
    assert [x["prompt"] for x in document["exchanges"]] == ["two", "one again"]
    assert sum(e["type"] == EventType.USER_MESSAGE for e in document["events"]) == 3  # auditable
    assert document["session"]["sessionId"] == "chat"
    _, captured = run(ip, f'%copilot export chat "{tmp_path / "sub dir" / "chat.ipynb"}" --mkdir')
    assert "exported session chat" in captured.stdout
    notebook = nbformat.read(tmp_path / "sub dir" / "chat.ipynb", as_version=4)
    assert [c.cell_type for c in notebook.cells] == ["markdown"] * 5
    assert "two" in notebook.cells[1].source and "echo: two" in notebook.cells[2].source
    result, captured = run(ip, f"%copilot export chat {tmp_path / 'chat.txt'}")
    assert_quiet_failure(result, captured, ".md, .json, .ipynb")


def test_prune_lists_then_deletes_with_yes(ip: InteractiveShell) -> None:
    run(ip, "%%copilot old\nhi")
    _, captured = run(ip, "%copilot prune --older-than 30")
    assert "no session unused for more than 30 days" in captured.stdout
    _, captured = run(ip, "%copilot prune --older-than 0")
    assert "old" in captured.outputs[-1].data["text/plain"]
    assert "add --yes" in captured.stdout
    assert get_state().client.get_session_metadata("old") is not None
    _, captured = run(ip, "%copilot prune --older-than 0 --yes")
    assert "deleted 1 session" in captured.stdout
    assert get_state().client.list_sessions() == []
    assert get_state().current_session is None
    result, _ = run(ip, "%copilot prune --older-than -1")
    assert isinstance(result.error_in_exec, UsageError)
    result, _ = run(ip, "%copilot prune")
    assert isinstance(result.error_in_exec, UsageError)


def test_export_refuses_a_missing_folder_unless_mkdir(ip: InteractiveShell, tmp_path) -> None:
    run(ip, "%%copilot chat\nhi")
    target = tmp_path / "nonexistent" / "dir" / "out.md"
    result, captured = run(ip, f"%copilot export chat {target}")
    assert_quiet_failure(result, captured, "does not exist", "--mkdir")
    assert "exported" not in captured.stdout
    assert not (tmp_path / "nonexistent").exists()  # nothing created
    (tmp_path / "file.md").write_text("x")
    result, captured = run(ip, f"%copilot export chat {tmp_path / 'file.md' / 'out.md'}")
    assert_quiet_failure(result, captured, "is not a folder")
    _, captured = run(ip, f"%copilot export chat {target} --mkdir")
    assert captured.stdout.strip() == f"exported session chat to {target}"
    assert "echo: hi" in target.read_text()


def test_models_lists_usable_first_then_the_rest_by_provider(ip: InteractiveShell) -> None:
    _, captured = run(ip, "%copilot models")
    lines = captured.outputs[-1].data["text/plain"].splitlines()[2:]  # below the header
    rows = [line.split(maxsplit=3) for line in lines]
    usable = [r[2] for r in rows]
    assert usable == sorted(usable, reverse=True)  # every "yes" before every "no"
    assert ["echo", "echo", "yes"] in rows
    providers = [r[1] for r in rows if r[2] == "no"]
    # grouped: each provider's models in one run of rows
    runs = [p for i, p in enumerate(providers) if i == 0 or providers[i - 1] != p]
    assert len(runs) == len(set(runs))
    openai = [r for r in rows if r[1] == "openai"]
    assert "OPENAI_API_KEY" in openai[0][3]  # the reason, once per group
    assert all(len(r) == 3 for r in openai[1:])


def test_panel_displays_the_session_panel(ip: InteractiveShell, monkeypatch) -> None:
    class FakePanel:
        def _repr_mimebundle_(self, include=None, exclude=None):
            return {"text/plain": "the panel"}

    module = types.ModuleType("copilot_jupyter.panel")
    module.SessionPanel = FakePanel
    monkeypatch.setitem(sys.modules, "copilot_jupyter.panel", module)
    _, captured = run(ip, "%copilot panel")
    assert captured.outputs[-1].data["text/plain"] == "the panel"


def test_panel_missing_prints_a_message(ip: InteractiveShell, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "copilot_jupyter.panel", None)
    result, captured = run(ip, "%copilot panel")
    assert_quiet_failure(result, captured, "panel is not part of this version")


@pytest.mark.parametrize("line", ["%copilot help", "%copilot", "%copilot -h", "%copilot use -h"])
def test_help(ip: InteractiveShell, line: str) -> None:
    result, captured = run(ip, line)
    assert result.error_in_exec is None
    assert "usage:" in captured.stdout


@pytest.mark.parametrize(
    "line", ["%copilot bogus", "%copilot use", "%copilot model chat", "%copilot history a -n x"]
)
def test_bad_subcommands_are_usage_errors(ip: InteractiveShell, line: str) -> None:
    result, captured = run(ip, line)
    assert isinstance(result.error_in_exec, UsageError)
    assert "usage: %copilot" in captured.stderr and "Traceback" not in text_of(captured)


def usage_error(ip: InteractiveShell, line: str) -> str:
    result, _ = run(ip, line)
    assert isinstance(result.error_in_exec, UsageError), line
    return str(result.error_in_exec)


def test_a_subcommands_usage_error_shows_its_own_usage(ip: InteractiveShell) -> None:
    message = usage_error(ip, "%copilot list --all")
    assert message.splitlines()[-1] == "usage: %copilot list [-h]"
    assert "unrecognized arguments: --all; %copilot list -h lists its options" in message
    message = usage_error(ip, "%copilot history my session")
    assert message.splitlines()[-1].startswith("usage: %copilot history")
    assert 'a name with spaces must be quoted: %copilot history "my session"' in message
    message = usage_error(ip, "%%copilot chat --bogus\nhi")
    assert "\nusage: %%copilot [-h]" in message
    message = usage_error(ip, "%%copilot my session\nhi")
    assert 'a name with spaces must be quoted: %%copilot "my session"' in message


@pytest.mark.parametrize("n", ["0", "-1", "-5"])
def test_history_n_below_one_is_refused(ip: InteractiveShell, n: str) -> None:
    run(ip, "%%copilot chat\nhi")
    message = usage_error(ip, f"%copilot history chat -n {n}")
    assert "1 or more" in message and "leave out -n" in message


def test_history_n_shows_the_last_exchanges(ip: InteractiveShell) -> None:
    for prompt in ("one", "two", "three"):
        run(ip, f"%%copilot chat\n{prompt}")
    _, captured = run(ip, "%copilot history chat -n 1")
    text = captured.outputs[-1].data["text/plain"]
    assert "*2 earlier exchange(s) not shown*" in text
    assert "echo: three" in text and "echo: two" not in text
    _, captured = run(ip, "%copilot history chat -n 3")
    assert "not shown" not in captured.outputs[-1].data["text/plain"]


def test_empty_cell_body_says_the_body_is_the_prompt(ip: InteractiveShell) -> None:
    for cell in ("%%copilot chat", "%%copilot chat\n", "%%copilot chat\n  \n"):
        message = usage_error(ip, cell)
        assert message.startswith("%%copilot: the cell body is the prompt, and it is empty")
        assert "single %" not in message  # not IPython's own "did you mean the line magic"
    assert get_state().client.list_sessions() == []


def test_hints_are_in_the_magics_terms(ip: InteractiveShell, monkeypatch) -> None:
    result, captured = run(ip, "%copilot history nope")
    assert_quiet_failure(result, captured, "%copilot list shows the sessions")
    assert "client." not in captured.stderr
    monkeypatch.delenv("COPILOT_JUPYTER_FALLBACK_MODEL")  # read when the state is first used
    reset_state(None)
    result, captured = run(ip, "%%copilot chat -m gpt4.1\nhello")
    assert_quiet_failure(result, captured, "did you mean 'gpt-4.1'?", "%copilot models")
    assert "CopilotClient(" not in captured.stderr
    assert captured.stderr.index("did you mean") < captured.stderr.index("OLLAMA_HOST")


def test_generation_options_are_passed_to_send(ip: InteractiveShell) -> None:
    _, captured = run(
        ip,
        "%%copilot chat --temperature 0.2 --max-tokens 50 --seed 7 --top-p 0.9 "
        '--stop END --stop "two words"\nhi',
    )
    assert final_reply(captured)["text/markdown"] == "echo: hi"
    assert dict(echo_requests()[-1].options) == {
        "temperature": 0.2,
        "max_tokens": 50,
        "seed": 7,
        "top_p": 0.9,
        "stop": ["END", "two words"],
    }
    run(ip, "%%copilot chat\nagain")
    assert dict(echo_requests()[-1].options) == {}  # options are per cell


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("--temperature hot", "not a number: 'hot'"),
        ("--temperature 3", "out of range (from 0 to 2)"),
        ("--max-tokens 0", "out of range (from 1 up)"),
        ("--max-tokens 1.5", "not a whole number"),
        ("--top-p 1.5", "out of range (from 0 to 1)"),
        ("--seed x", "not a whole number"),
    ],
)
def test_bad_generation_options_are_usage_errors(
    ip: InteractiveShell, options: str, message: str
) -> None:
    assert message in usage_error(ip, f"%%copilot chat {options}\nhi")
    assert get_state().client.list_sessions() == []


# -- settings ----------------------------------------------------------------------------------


def test_config_default_format_and_footer(ip: InteractiveShell) -> None:
    ip.run_cell("%config CopilotMagics.default_format = 'text'")
    ip.run_cell("%config CopilotMagics.show_footer = False")
    _, captured = run(ip, "%%copilot chat\nhi")
    assert final_reply(captured) == {"text/plain": "echo: hi"}
    assert "tokens" not in text_of(captured)


def test_config_default_model_with_fallback_warning(ip: InteractiveShell) -> None:
    ip.run_cell("%config CopilotMagics.default_model = 'gpt-4.1'")
    _, captured = run(ip, "%%copilot chat\nhi")
    assert get_state().client.get_session_metadata("chat")["model"] == "gpt-4.1"
    assert "using the fallback model 'echo'" in text_of(captured)
    assert final_reply(captured)["text/markdown"] == "echo: hi"


def test_config_rejects_a_bad_format(ip: InteractiveShell) -> None:
    magics = next(c for c in ip.configurables if isinstance(c, CopilotMagics))
    with capture_output():
        ip.run_cell("%config CopilotMagics.default_format = 'pdf'")
    assert magics.default_format == "markdown"


# -- the package face ---------------------------------------------------------------------------


def test_package_exports_the_extension_entry_points() -> None:
    expected = {
        "CopilotMagics",
        "CopilotState",
        "get_state",
        "load_ipython_extension",
        "unload_ipython_extension",
    }
    assert expected <= set(copilot_jupyter.__all__)
    assert all(hasattr(copilot_jupyter, name) for name in copilot_jupyter.__all__)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(5, "just now"), (125, "2 min ago"), (3 * 3600 + 5, "3 h ago"), (2 * 86400 + 5, "2 d ago")],
)
def test_last_used_is_relative_when_recent(seconds: int, expected: str) -> None:
    now = datetime(2025, 1, 10, tzinfo=UTC)
    assert time_ago((now - timedelta(seconds=seconds)).isoformat(), now) == expected
    assert time_ago((now - timedelta(days=30)).isoformat(), now).startswith("2024-12-1")


# -- the current session per notebook ----------------------------------------------------------


def restart_kernel_state() -> None:
    """What a kernel restart does to the extension: a new client and a new shared state."""
    previous = reset_state(None)
    if previous is not None:
        previous.client.stop(timeout=5)


def test_current_session_is_remembered_per_notebook(
    ip: InteractiveShell, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "analysis.ipynb"))
    run(ip, "%%copilot analysis\nfirst")
    memory = tmp_path / "home" / "jupyter" / "current-sessions.json"
    assert json.loads(memory.read_text()) == {str(tmp_path / "analysis.ipynb"): "analysis"}

    restart_kernel_state()
    assert get_state().current_session == "analysis"
    _, captured = run(ip, "%copilot list")
    assert captured.outputs[-1].data["text/plain"].splitlines()[2].startswith("* analysis")
    _, captured = run(ip, "%%copilot\nsecond")
    assert "→ session 'analysis': this notebook's current session, remembered" in text_of(captured)
    assert [e.data.content for e in events_of("analysis") if e.type == EventType.USER_MESSAGE] == [
        "first",
        "second",
    ]
    _, captured = run(ip, "%%copilot\nthird")
    assert "→ session" not in text_of(captured)  # said once, not on every cell

    # another notebook has its own current session; this one's is kept
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "other.ipynb"))
    restart_kernel_state()
    assert get_state().current_session is None
    run(ip, "%copilot new scratch")
    assert json.loads(memory.read_text()) == {
        str(tmp_path / "analysis.ipynb"): "analysis",
        str(tmp_path / "other.ipynb"): "scratch",
    }
    # deleting the current session forgets it for the notebook
    run(ip, "%copilot delete scratch")
    assert json.loads(memory.read_text()) == {str(tmp_path / "analysis.ipynb"): "analysis"}


def test_a_remembered_session_that_was_deleted_is_not_restored(
    ip: InteractiveShell, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", "nb.ipynb")
    run(ip, "%%copilot gone\nhi")
    get_state().client.delete_session("gone")  # e.g. from another notebook
    restart_kernel_state()
    assert get_state().current_session is None


def test_without_a_notebook_a_bare_cell_says_where_it_went(ip: InteractiveShell) -> None:
    _, captured = run(ip, "%%copilot\nhi")
    assert "→ session 'default': the default, as no session is current" in text_of(captured)
    assert not (get_state().client.home / "jupyter").exists()  # nothing remembered
    _, captured = run(ip, "%%copilot\nagain")
    assert "→ session" not in text_of(captured)
    _, captured = run(ip, "%%copilot named\nhi")
    assert "→ session" not in text_of(captured)


# -- large prompts and replies -----------------------------------------------------------------


def test_a_large_prompt_is_announced_before_it_is_sent(ip: InteractiveShell) -> None:
    ip.run_cell("%config CopilotMagics.large_prompt = 1000")
    _, captured = run(ip, "%%copilot chat\n" + "x" * 1000)
    assert "large prompt" not in text_of(captured)  # the boundary: not above it
    _, captured = run(ip, "%%copilot chat\n" + "x" * 1001)
    shown = [o.data["text/plain"] for o in captured.outputs]
    assert "large prompt" in shown[0] and "1,001 characters" in shown[0]
    assert shown[1] == ""  # then the reply's placeholder


def test_a_long_reply_is_bounded_live_and_in_the_output(
    ip: InteractiveShell, slow: CopilotClient
) -> None:
    ip.run_cell("%config CopilotMagics.live_limit = 200")
    ip.run_cell("%config CopilotMagics.output_limit = 500")
    words = " ".join(f"w{i:03d}" for i in range(150))  # 749 characters, 3 s at 20 ms a word
    reply = f"echo: {words}"
    _, captured = run(ip, f"%%copilot chat\n{words}")
    updates = live_updates(captured)
    assert len(updates) >= 3
    long = [u["text/plain"] for u in updates if "a long reply" in u["text/plain"]]
    assert long, "the live updates switched to the tail"
    for text in long:
        head, tail = text.split("\n…", 1)
        so_far = int(
            re.search(r"a long reply: ([\d,]+) characters so far", head)[1].replace(",", "")
        )
        assert so_far > 200 and len(tail) == 200
        assert tail == reply[:so_far][-200:]  # the tail of what had streamed
    final = final_reply(captured)
    assert final == {"text/plain": reply[:500] + "\n…"}
    assert "the reply has 755 characters; the first 500 are shown" in text_of(captured)
    assert "%copilot export chat FILE.md" in text_of(captured)
    stored = [e.data.content for e in events_of("chat") if e.type == EventType.ASSISTANT_MESSAGE]
    assert stored == [reply]  # the log keeps the whole reply


def test_display_folds_with_the_shared_history(ip: InteractiveShell, monkeypatch) -> None:
    """The cell's outcome comes from copilot.history: a fold that changes shows in the cell."""
    from copilot.history import History

    applied: list[str] = []
    apply = History.apply

    def shouting_apply(self: History, event: Any) -> Any:
        applied.append(event.type)
        entry = apply(self, event)
        if event.type == EventType.ASSISTANT_MESSAGE:
            entry.reply = entry.reply.upper()  # a fold that reads replies differently
        return entry

    run(ip, "%copilot new chat")
    monkeypatch.setattr(History, "apply", shouting_apply)
    _, captured = run(ip, "%%copilot chat\nhello world")
    assert final_reply(captured)["text/markdown"] == "ECHO: HELLO WORLD"
    ours = applied[applied.index(EventType.USER_MESSAGE) :]
    assert ours[-1] == EventType.ASSISTANT_TURN_END
    assert EventType.ASSISTANT_MESSAGE_DELTA in ours and EventType.ASSISTANT_USAGE in ours


def test_nbval_marker_lines_are_not_part_of_the_prompt(ip: InteractiveShell) -> None:
    run(ip, "%%copilot chat\n# NBVAL_IGNORE_OUTPUT\nHello\n  #NBVAL_SKIP  \n# a heading stays")
    assert echo_requests()[-1].messages[-1].content == "Hello\n# a heading stays"
    assert usage_error(ip, "%%copilot chat\n# NBVAL_IGNORE_OUTPUT\n").startswith(
        "%%copilot: the cell body is the prompt, and it is empty"
    )


def test_history_of_a_huge_reply_is_bounded_too(ip: InteractiveShell) -> None:
    ip.run_cell("%config CopilotMagics.output_limit = 300")
    run(ip, "%%copilot chat\n" + "y" * 400)
    _, captured = run(ip, "%copilot history chat")
    text = captured.outputs[-1].data["text/plain"]
    full = to_markdown("chat", exchanges_of(events_of("chat")))
    assert text.startswith(full[:300] + "\n\n…")
    assert f"the transcript has {len(full):,} characters; the first 300 are shown" in text
    assert "%copilot export chat FILE.md" in text
    ip.run_cell("%config CopilotMagics.output_limit = 100000")
    _, captured = run(ip, "%copilot history chat")
    assert captured.outputs[-1].data["text/plain"] == full


# -- %copilot search ---------------------------------------------------------------------------


def search_rows(captured: CapturedIO) -> list[list[str]]:
    """The hit table's text rows, split into session, when, who, snippet."""
    data = captured.outputs[-1].data
    assert "<table>" in data["text/html"]
    lines = data["text/plain"].splitlines()
    assert lines[0].split() == ["session", "when", "who", "snippet"]
    return [re.split(r"\s{2,}", line, maxsplit=3) for line in lines[2:]]


def test_search_shows_a_table_and_keeps_phrases_whole(ip: InteractiveShell) -> None:
    run(ip, "%%copilot tables\nthe pivot table is great")
    run(ip, "%%copilot other\na pivot of tables")
    _, captured = run(ip, '%copilot search "pivot table"')
    rows = search_rows(captured)
    assert sorted(rows) == [
        ["tables", "just now", "assistant", "echo: the «pivot table» is great"],
        ["tables", "just now", "you", "the «pivot table» is great"],
    ]
    _, captured = run(ip, "%copilot search pivot table*")  # loose words: all must match
    assert {row[0] for row in search_rows(captured)} == {"tables", "other"}
    _, captured = run(ip, "%copilot search of table*")
    assert {row[0] for row in search_rows(captured)} == {"other"}
    _, captured = run(ip, '%copilot search -s other -n 1 pivot NOT "pivot table"')
    assert search_rows(captured) == [["other", "just now", "you", "a «pivot» of tables"]]
    _, captured = run(ip, '%copilot search "pivot table" --session=tables -n 1')
    assert len(search_rows(captured)) == 1
    _, captured = run(ip, "%copilot search excel")
    assert captured.stdout == "no matches for excel\n" and not captured.outputs


def test_search_escapes_html_in_snippets(ip: InteractiveShell) -> None:
    run(ip, "%%copilot chat\n<script>alert(1)</script>")
    _, captured = run(ip, "%copilot search alert")
    markup = captured.outputs[-1].data["text/html"]
    assert "<script>" not in markup and "&lt;script&gt;" in markup


@pytest.mark.parametrize(
    ("line", "query"),
    [
        ('search "a b" -s x', '"a b"'),
        ("search -s x -n 3 a OR b", "a OR b"),
        ('search a* --session="my s" "c d"*', 'a* "c d"*'),
        ("search -n3 -sx -- -s word", "-s word"),
        ('search "don\'t" NOT (x y)', '"don\'t" NOT (x y)'),
    ],
)
def test_raw_search_query_keeps_what_the_user_typed(line: str, query: str) -> None:
    from copilot_jupyter.magics import _raw_search_query

    assert _raw_search_query(line) == query


def test_search_errors_are_one_line_in_the_magics_terms(ip: InteractiveShell) -> None:
    run(ip, "%%copilot chat\nhello")
    before = len(get_state().client.get_messages("chat"))
    result, captured = run(ip, "%copilot search hello -s nope")
    assert result.error_in_exec is None
    assert_quiet_failure(result, captured, "no session 'nope': %copilot list shows the sessions")
    result, captured = run(ip, "%copilot search NOT hello")
    assert_quiet_failure(result, captured, "bad search query: NOT needs a word before it")
    assert len(text_of(captured).strip().splitlines()) == 1
    result, captured = run(ip, "%copilot search -- - ...")
    assert_quiet_failure(result, captured, "a search needs at least one word", "%copilot search")
    assert "client.search" not in text_of(captured)
    assert "usage: %copilot search" in usage_error(ip, "%copilot search")
    assert "1 to 1000 (got 0)" in usage_error(ip, "%copilot search x -n 0")
    assert "1 to 1000 (got 1001)" in usage_error(ip, "%copilot search x -n 1001")
    assert len(get_state().client.get_messages("chat")) == before  # nothing written
