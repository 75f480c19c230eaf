"""Notebook tools in the panel and the approval widget: real widgets, clicked with ``.click()``.

The panel's turns run on the client's threads while the kernel is idle, so a tool call's
approval shows in the panel (not in a cell); the echo model calls the tools the prompt names
(``call NAME {JSON}``), through the real client, store and tool runner.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from IPython.testing import globalipapp

from copilot import CopilotClient, EventType
from copilot.tools import PermissionRequest
from copilot_jupyter.approval import Approval, ApprovalBroker
from copilot_jupyter.panel import SessionPanel
from copilot_jupyter.state import CopilotState, ToolSetting, reset_state
from copilot_jupyter.transcript import Transcript

pytestmark = pytest.mark.timeout(60)


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


@pytest.fixture
def shell():
    ip = globalipapp.get_ipython()
    # a name that sorts first: other tests leave variables in the shared shell, and
    # list_variables is cut at its size cap
    ip.user_ns["A_sales"] = [3, 1, 4, 1, 5]
    yield ip
    ip.user_ns.pop("A_sales", None)
    ip.user_ns.pop("made_in_panel", None)


@pytest.fixture
def panel(tmp_path: Path, monkeypatch, shell) -> Iterator[SessionPanel]:
    monkeypatch.setenv("COPILOT_JUPYTER_HOME", str(tmp_path / "home"))
    client = CopilotClient(tmp_path / "store", default_model="echo")
    state = CopilotState(client, shell=shell)
    previous = reset_state(state)
    p = SessionPanel(state=state, poll_interval=0.1)
    yield p
    p.close()
    reset_state(previous)
    client.stop(timeout=5)


def ask(panel: SessionPanel, prompt: str) -> str:
    before = len(panel.controller.state.client.get_messages(panel.controller.selected))
    panel.prompt.value = prompt
    panel.send_button.click()
    sid = panel.controller.selected
    wait_until(
        lambda: any(
            e.type == EventType.ASSISTANT_TURN_END
            for e in panel.controller.state.client.get_messages(sid)[before:]
        ),
        what="the turn's end",
    )
    wait_until(lambda: not panel.controller.busy, what="idle")
    return panel.controller.transcript_html


def test_the_toggle_turns_the_shown_sessions_tools_on_and_off(panel):
    c = panel.controller
    assert panel.tools_toggle.disabled  # no session shown yet
    c.new_session("p1")
    assert not panel.tools_toggle.disabled and not panel.tools_toggle.value
    html = ask(panel, "call list_variables")
    assert "echo: call list_variables" in html and "<details" not in html
    panel.tools_toggle.value = True
    assert c.state.tool_setting("p1") == ToolSetting(True, False)
    assert c.notebook_tools
    html = ask(panel, "call list_variables")
    # the call shows as a collapsible block in the transcript, and the reply has the result
    assert "<summary>🔧 list_variables() · success</summary>" in html
    assert "A_sales: list, length 5" in html
    panel.tools_toggle.value = False
    assert c.state.tool_setting("p1") == ToolSetting(False, False)
    assert "<details" not in ask(panel, "call list_variables").split("call list_variables")[-1]


def test_the_toggle_follows_the_magics_setting_and_the_selection(panel):
    c = panel.controller
    c.new_session("a")
    c.new_session("b")
    c.state.set_notebook_tools("a", True)  # as %copilot tools a on does
    assert not panel.tools_toggle.value  # b is shown
    c.select("a")
    assert panel.tools_toggle.value and c.notebook_tools
    c.select("b")
    assert not panel.tools_toggle.value


def test_a_panel_turns_run_code_approval_shows_in_the_panel_and_approve_runs_it(panel, shell):
    c = panel.controller
    c.new_session("rc")
    c.state.set_notebook_tools("rc", True, allow_run_code=True)
    panel.prompt.value = 'call run_code {"code": "made_in_panel = sum(A_sales)\\nmade_in_panel"}'
    panel.send_button.click()
    wait_until(lambda: panel.approvals.children, what="the approval in the panel")
    approval = c.approvals[0]
    assert "made_in_panel = sum(A_sales)" in approval.widget.children[1].value
    approval.approve_button.click()
    wait_until(lambda: shell.user_ns.get("made_in_panel") == 14, what="the code run")
    wait_until(lambda: "run_code(code=" in c.transcript_html, what="the block")
    wait_until(lambda: not panel.approvals.children, what="the approval gone")


def test_a_panel_turns_run_code_denied_by_click(panel, shell):
    c = panel.controller
    c.new_session("rc")
    c.state.set_notebook_tools("rc", True, allow_run_code=True)
    panel.prompt.value = 'call run_code {"code": "made_in_panel = 1"}'
    panel.send_button.click()
    wait_until(lambda: panel.approvals.children, what="the approval in the panel")
    c.approvals[0].deny_button.click()
    wait_until(lambda: "denied-interactively-by-user" in c.transcript_html, what="the denial")
    assert "made_in_panel" not in shell.user_ns


# -- the approval widget on its own ----------------------------------------------------------


def request(code: str = "print(1)") -> PermissionRequest:
    return PermissionRequest("run_code", "Run code", {"code": code}, "call_1")


def ask_in_thread(broker: ApprovalBroker) -> tuple[threading.Thread, list]:
    answers: list = []
    thread = threading.Thread(
        target=lambda: answers.append(broker.handler(request(), {"session_id": "s"}))
    )
    thread.start()
    return thread, answers


def test_approve_click_answers_approved():
    broker = ApprovalBroker(timeout=30)
    thread, answers = ask_in_thread(broker)
    wait_until(broker.pending)
    (approval,) = broker.take_new()
    assert "print(1)" in approval.widget.children[1].value
    approval.approve_button.click()
    thread.join(5)
    assert answers[0].kind == "approved" and answers[0].approved
    assert approval.approve_button.disabled and approval.deny_button.disabled
    assert "approved" in approval.status.value
    approval.deny_button.click()  # a second click changes nothing
    assert approval.result.kind == "approved"
    assert broker.pending() == []


def test_deny_click_answers_denied():
    broker = ApprovalBroker(timeout=30)
    thread, answers = ask_in_thread(broker)
    wait_until(broker.pending)
    broker.pending()[0].deny_button.click()
    thread.join(5)
    assert answers[0].kind == "denied-interactively-by-user" and not answers[0].approved


def test_nobody_answering_is_a_denial_after_the_timeout():
    broker = ApprovalBroker(timeout=0.2)
    started = time.monotonic()
    thread, answers = ask_in_thread(broker)
    thread.join(10)
    waited = time.monotonic() - started
    assert answers[0].kind == "user-not-available" and not answers[0].approved
    assert "0.2 s" in answers[0].feedback
    assert waited >= 0.2
    assert broker.pending() == []


def test_the_code_shown_is_escaped_and_capped():
    approval = Approval(request("<script>alert(1)</script>" + "x" * 30_000))
    shown = approval.widget.children[1].value
    assert "<script>" not in shown and "&lt;script&gt;" in shown
    assert "30,025 characters in all" in shown and len(shown) < 21_000


def test_transcript_renders_tool_calls_collapsed_between_prompt_and_reply(tmp_path):
    client = CopilotClient(tmp_path / "store", default_model="echo")
    try:
        from copilot.tools import define_tool

        @define_tool(description="shout", skip_permission=True)
        def shout(text: str) -> str:
            return text.upper() + " <b>"

        session = client.create_session(session_id="t", tools=[shout])
        session.send_and_wait('call shout {"text": "hi"}')
        html = Transcript(client.get_messages("t")).html()
    finally:
        client.stop(timeout=5)
    user, rest = html.split('<div class="cj-tools">', 1)
    assert "call shout" in user
    block, reply = rest.split("</div>", 1)
    assert block == (
        '<details class="cj-tool cj-tool-success"><summary>🔧 shout(text=&quot;hi&quot;) · '
        "success</summary><pre>HI &lt;b&gt;</pre></details>"
    )
    assert "HI &lt;b&gt;" in reply  # echo answers with the result
