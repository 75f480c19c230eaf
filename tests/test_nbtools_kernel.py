"""``%%copilot --tools notebook`` in a real IPython kernel (jupyter_client), with the echo model.

The approval of ``run_code`` is clicked the way a browser does: a ``comm_msg`` with the button's
``click`` event, sent on the shell channel while the cell still runs (the cell lets the kernel
handle it); nobody clicking denies the call after ``approval_timeout``.
"""

from __future__ import annotations

import html
import time
from typing import Any

import pytest
from test_magics_kernel import Execution, Kernel, kernel  # noqa: F401  (module-scoped fixture)

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(180)]

SETUP = """
%load_ext copilot_jupyter
import pandas as pd
df = pd.DataFrame({"city": ["Paris", "Oslo", "Rome", "Lima"], "temp": [21.5, 9.0, 25.25, 18.0]})
"""


def tool_blocks(execution: Execution) -> list[str]:
    return [
        m["content"]["data"]["text/html"]
        for m in execution.of_type("display_data")
        if "<details" in m["content"]["data"].get("text/html", "")
    ]


def test_tools_notebook_describes_a_dataframe_and_shows_the_collapsible_block(
    kernel: Kernel,  # noqa: F811
) -> None:
    kernel.run(SETUP)
    execution = kernel.run('%%copilot kt --tools notebook\ncall describe_variable {"name": "df"}')
    (block,) = tool_blocks(execution)
    assert block.startswith('<div class="cj-tools"><details class="cj-tool cj-tool-success">')
    assert "<summary>🔧 describe_variable(name=&quot;df&quot;) · success</summary>" in block
    result = html.unescape(block.split("<pre>", 1)[1])
    assert result.startswith("df: pandas.DataFrame, shape (4, 2)")
    assert "Lima" in result
    # the reply (echo repeats the tool's result) cites the shape
    assert "df: pandas.DataFrame, shape (4, 2)" in execution.text


def _click(k: Kernel, comm_id: str) -> None:
    """What the browser sends when a Button is clicked."""
    content = {"comm_id": comm_id, "data": {"method": "custom", "content": {"event": "click"}}}
    k.client.shell_channel.send(k.client.session.msg("comm_msg", content))


RUN = '%%copilot kr --allow-run-code\ncall run_code {"code": "made_by_tool = len(df) * 10"}'


def test_run_code_runs_after_a_click_on_approve_while_the_cell_waits(
    kernel: Kernel,  # noqa: F811
) -> None:
    kernel.run(SETUP)
    approve: list[str] = []
    clicked: list[str] = []

    def on_message(message: dict[str, Any]) -> None:
        content = message["content"]
        if message["msg_type"] == "comm_open":
            state = content.get("data", {}).get("state", {})
            if state.get("_model_name") == "ButtonModel" and state.get("description") == "Approve":
                approve.append(content["comm_id"])
        elif (
            message["msg_type"] == "display_data"
            and not clicked
            and "application/vnd.jupyter.widget-view+json" in content["data"]
        ):
            clicked.append(approve[0])  # the user sees the widget, then clicks
            _click(kernel, approve[0])

    execution = kernel.collect(kernel.send(RUN), on_message)
    assert execution.reply["status"] == "ok", execution.text
    assert clicked
    views = [
        m
        for m in execution.of_type("display_data")
        if "application/vnd.jupyter.widget-view+json" in m["content"]["data"]
    ]
    assert len(views) == 1  # the approval widget, in the cell's output
    (block,) = tool_blocks(execution)
    assert "run_code(code=&quot;made_by_tool = len(df) * 10&quot;) · success" in block
    assert kernel.json("made_by_tool") == 40


def test_run_code_is_denied_when_nobody_answers(kernel: Kernel) -> None:  # noqa: F811
    kernel.run(SETUP)
    kernel.run("%config CopilotMagics.approval_timeout = 1.0\nmade_by_tool = None")
    started = time.monotonic()
    execution = kernel.run(RUN)
    waited = time.monotonic() - started
    (block,) = tool_blocks(execution)
    assert "· denied: user-not-available" in block
    assert kernel.json("made_by_tool") is None
    assert waited >= 1.0  # it waited for the click (a lower bound only: the machine is shared)
    kernel.run("%config CopilotMagics.approval_timeout = 120.0")
