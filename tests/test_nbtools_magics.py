"""Notebook tools from the magics, in a real headless IPython shell answered by the echo model.

The echo model calls a tool when the prompt's lines read ``call NAME {JSON}``
(:mod:`copilot.providers.echo`), so each test drives a real tool round through the real client,
store and tool runner; only the front end is absent (a click is ``Button.click()``).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import copilot_extension
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.testing import globalipapp
from IPython.utils.capture import CapturedIO, capture_output

from copilot import EventType
from copilot.history import exchanges_of
from copilot_jupyter.state import ToolSetting, get_state, reset_state

pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    return globalipapp.get_ipython()


@pytest.fixture
def ip(shell: InteractiveShell, tmp_path, monkeypatch) -> Iterator[InteractiveShell]:
    with copilot_extension(shell, str(tmp_path / "home"), monkeypatch) as loaded:
        loaded.run_cell(
            "import pandas as pd\ndf = pd.DataFrame({'city': ['Paris', 'Oslo', 'Rome'], "
            "'temp': [21.5, 9.0, 25.25]})",
            store_history=True,
        )
        try:
            yield loaded
        finally:
            for name in ("df", "made_by_tool"):
                loaded.user_ns.pop(name, None)


def run(ip: InteractiveShell, code: str) -> CapturedIO:
    with capture_output() as captured:
        ip.run_cell(code, store_history=True)
    return captured


def html_outputs(captured: CapturedIO) -> list[str]:
    return [o.data["text/html"] for o in captured.outputs if "text/html" in o.data]


def text_of(captured: CapturedIO) -> str:
    shown = [o.data.get("text/plain", "") for o in captured.outputs]
    return "\n".join([captured.stdout, captured.stderr, *shown])


def tool_events(name: str) -> list[Any]:
    return [
        e
        for e in get_state().client.get_messages(name)
        if e.type.startswith(("tool.", "permission."))
    ]


DESCRIBE = '%%copilot nb --tools notebook\ncall describe_variable {"name": "df"}'


def test_tools_notebook_flag_calls_describe_and_shows_a_collapsible_block(ip):
    captured = run(ip, DESCRIBE)
    blocks = [h for h in html_outputs(captured) if "<details" in h]
    assert len(blocks) == 1
    block = blocks[0]
    assert re.search(
        r"<summary>🔧 describe_variable\(name=&quot;df&quot;\) · success</summary>", block
    )
    assert "shape (3, 2)" in block and "Paris" in block
    # the reply (echo answers with the tool's result) follows the block
    assert "shape (3, 2)" in text_of(captured)
    assert [e.type for e in tool_events("nb")] == [
        EventType.TOOL_EXECUTION_START,
        EventType.TOOL_EXECUTION_COMPLETE,
    ]
    assert get_state().tool_setting("nb") == ToolSetting(True, False)


def test_without_tools_the_call_line_is_only_echoed(ip):
    captured = run(ip, '%%copilot plain\ncall describe_variable {"name": "df"}')
    assert not [h for h in html_outputs(captured) if "<details" in h]
    assert 'echo: call describe_variable {"name": "df"}' in text_of(captured)
    assert tool_events("plain") == []


def test_the_setting_is_remembered_in_the_kernel_and_tools_none_turns_it_off(ip):
    run(ip, DESCRIBE)
    again = run(ip, "%%copilot nb\ncall list_variables")
    assert "df: DataFrame, shape 3x2" in text_of(again)
    off = run(ip, "%%copilot nb --tools none\ncall list_variables")
    assert "echo: call list_variables" in text_of(off)
    assert get_state().tool_setting("nb") == ToolSetting(False, False)


def test_tools_are_never_stored_a_new_state_starts_with_them_off(ip, tmp_path):
    run(ip, DESCRIBE)
    previous = reset_state(None)
    previous.client.stop(timeout=5)
    captured = run(ip, "%%copilot nb\ncall list_variables")
    assert "echo: call list_variables" in text_of(captured)


def test_tools_subcommand_turns_them_on_and_off_for_an_open_session(ip):
    run(ip, "%%copilot s1\nhello")
    assert "notebook tools off" in text_of(run(ip, "%copilot tools s1"))
    assert "notebook tools on" in text_of(run(ip, "%copilot tools s1 on"))
    # the open session got its tools at once
    assert "df: DataFrame" in text_of(run(ip, "%%copilot s1\ncall list_variables"))
    run(ip, "%copilot tools s1 off")
    assert "echo: call list_variables" in text_of(run(ip, "%%copilot s1\ncall list_variables"))
    # without a name: the current session
    assert "notebook tools on" in text_of(run(ip, "%copilot tools on"))
    assert get_state().tool_setting("s1").enabled


def test_tools_subcommand_errors_are_clear(ip):
    captured = run(ip, "%copilot tools ghost on")
    assert "no session 'ghost'" in text_of(captured) and "Traceback" not in text_of(captured)
    run(ip, "%%copilot s1\nhello")
    with pytest.raises(UsageError, match="--allow-run-code goes with on"):
        ip.run_line_magic("copilot", "tools s1 off --allow-run-code")
    with pytest.raises(UsageError, match="invalid choice"):
        ip.run_line_magic("copilot", "tools s1 maybe")
    with pytest.raises(UsageError, match="--allow-run-code needs the notebook tools"):
        ip.run_cell_magic("copilot", "s1 --tools none --allow-run-code", "hi")
    with pytest.raises(UsageError, match="invalid choice"):
        ip.run_cell_magic("copilot", "s1 --tools web", "hi")


def test_default_tools_traitlet_applies_to_sessions_without_a_setting(ip):
    ip.run_line_magic("config", "CopilotMagics.default_tools = 'notebook'")
    assert "df: DataFrame" in text_of(run(ip, "%%copilot d1\ncall list_variables"))
    run(ip, "%copilot tools d1 off")  # an explicit setting wins over the default
    assert "echo: call list_variables" in text_of(run(ip, "%%copilot d1\ncall list_variables"))


def test_run_code_is_off_unless_allowed(ip):
    captured = run(ip, '%%copilot nb --tools notebook\ncall run_code {"code": "1+1"}')
    # run_code is not offered: echo does not call it
    assert 'echo: call run_code {"code": "1+1"}' in text_of(captured)
    assert "made_by_tool" not in ip.user_ns


def _click_when_shown(button: str, delay: float = 0.0) -> threading.Thread:
    """Click Approve or Deny on the first approval the notebook shows (from another thread,
    as the kernel would handle the click)."""
    broker = get_state().approvals

    def click() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pending = broker.pending()
            if pending and pending[0].shown.wait(5):
                time.sleep(delay)
                getattr(pending[0], f"{button}_button").click()
                return
            time.sleep(0.01)

    thread = threading.Thread(target=click, daemon=True)
    thread.start()
    return thread


RUN = (
    '%%copilot rc --allow-run-code\ncall run_code {"code": "made_by_tool = 41 + 1\\nmade_by_tool"}'
)


def test_run_code_approved_in_the_cell_runs_and_shows_the_widget(ip):
    clicker = _click_when_shown("approve")
    captured = run(ip, RUN)
    clicker.join(5)
    assert ip.user_ns["made_by_tool"] == 42
    widgets_shown = [
        o for o in captured.outputs if "application/vnd.jupyter.widget-view+json" in o.data
    ]
    assert len(widgets_shown) == 1  # the approval widget, in this cell's output
    blocks = "".join(html_outputs(captured))
    assert "run_code(code=" in blocks and "· success" in blocks
    kinds = [
        e.data.get("result", {}).get("kind")
        for e in tool_events("rc")
        if e.type == EventType.PERMISSION_COMPLETED
    ]
    assert kinds == ["approved"]


def test_run_code_denied_by_click_does_not_run(ip):
    clicker = _click_when_shown("deny")
    captured = run(ip, RUN)
    clicker.join(5)
    assert "made_by_tool" not in ip.user_ns
    assert "denied-interactively-by-user" in "".join(html_outputs(captured))
    completed = [e for e in tool_events("rc") if e.type == EventType.TOOL_EXECUTION_COMPLETE]
    assert completed[-1].data["resultType"] == "denied"


def test_run_code_nobody_answers_is_denied_after_the_timeout(ip):
    ip.run_line_magic("config", "CopilotMagics.approval_timeout = 0.3")
    started = time.monotonic()
    captured = run(ip, RUN)
    waited = time.monotonic() - started
    assert "made_by_tool" not in ip.user_ns
    assert waited >= 0.3  # it did wait for the click
    assert "user-not-available" in "".join(html_outputs(captured))
    approval_events = [e for e in tool_events("rc") if e.type == EventType.PERMISSION_COMPLETED]
    assert approval_events[-1].data["result"]["kind"] == "user-not-available"
    # the session is usable afterwards
    assert "echo: hi" in text_of(run(ip, "%%copilot rc\nhi"))


def test_tool_blocks_are_escaped_and_capped_in_the_cell(ip):
    # a DataFrame's head is shown whole (no repr cap): the 4,000-character tool cap, then
    # the block's 2,000-character cap apply
    ip.user_ns["made_by_tool"] = pd.DataFrame({"s": ["<script>alert(1)</script>" + "x" * 5000]})
    captured = run(
        ip, '%%copilot cap --tools notebook\ncall describe_variable {"name": "made_by_tool"}'
    )
    block = next(h for h in html_outputs(captured) if "<details" in h)
    assert "(4,040 characters; 2,000 shown)</pre>" in block
    assert len(block) < 2600
    captured = run(ip, '%%copilot cap\ncall describe_variable {"name": "<script>x</script>"}')
    block = next(h for h in html_outputs(captured) if "<details" in h)
    assert "<script>" not in block
    assert "(name=&quot;&lt;script&gt;x&lt;/script&gt;&quot;)" in block  # the arguments
    assert "There is no variable &#x27;&lt;script&gt;x&lt;/script&gt;&#x27;" in block  # result


def test_exchange_tool_calls_fold_into_the_history_of_the_session(ip):
    run(ip, DESCRIBE)
    exchange = exchanges_of(get_state().client.get_messages("nb"))[-1]
    assert [c["type"] for c in exchange.tool_calls][:2] == [
        EventType.ASSISTANT_MESSAGE,
        EventType.TOOL_EXECUTION_START,
    ]


def test_an_export_shows_each_tool_call_with_its_result(ip, tmp_path):
    import json as jsonlib

    run(ip, DESCRIBE)
    run(ip, f"%copilot export nb {tmp_path / 'nb.md'}")
    markdown = (tmp_path / "nb.md").read_text()
    prompt, rest = markdown.split("**[1] You:**", 1)[1].split("<details", 1)
    assert "call describe_variable" in prompt
    block, reply = rest.split("</details></div>", 1)
    assert "<summary>🔧 describe_variable(name=&quot;df&quot;) · success</summary>" in block
    assert "shape (3, 2)" in block
    assert "**[1] " in reply and "shape (3, 2)" in reply  # the reply comes after the block
    run(ip, f"%copilot export nb {tmp_path / 'nb.ipynb'}")
    cells = jsonlib.loads((tmp_path / "nb.ipynb").read_text())["cells"]
    answer = "".join(cells[2]["source"])
    assert answer.index("<summary>🔧 describe_variable") < answer.index(
        "shape (3, 2)", answer.index("</details>")
    )
    # a session without tools exports as before: no block
    run(ip, "%%copilot plain\nhello")
    run(ip, f"%copilot export plain {tmp_path / 'plain.md'}")
    assert "<details" not in (tmp_path / "plain.md").read_text()
