"""The notebook toolset on a real headless IPython shell, run through the tool runner."""

from __future__ import annotations

import asyncio
import json

import pytest
from IPython.testing import globalipapp

from copilot.providers.base import ToolCallRequest
from copilot.tool_runner import ToolRunner
from copilot.tools import PermissionHandler
from copilot_jupyter.tools import notebook_tools

pd = pytest.importorskip("pandas")

SECRET = "sk-live-0123456789abcdefSECRET"


@pytest.fixture(scope="module")
def shell():
    return globalipapp.get_ipython()


@pytest.fixture
def ip(shell, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_API_KEY", SECRET)
    # the shell is shared with other test files, which leave their variables in it: set them
    # aside, so list_variables sees exactly this test's (its output is size-capped)
    hidden = shell.user_ns_hidden
    others = {
        name: shell.user_ns.pop(name)
        for name in list(shell.user_ns)
        if not name.startswith("_") and name not in hidden
    }
    shell.run_cell("import pandas as pd", store_history=True)
    shell.run_cell(
        "df = pd.DataFrame({'city': ['Paris', 'Oslo', 'Rome'], 'temp': [21.5, 9.0, 25.25]})",
        store_history=True,
    )
    shell.run_cell("numbers = list(range(7))\nmy_api_key = " + repr(SECRET), store_history=True)
    yield shell
    for name in ("df", "numbers", "my_api_key", "made_by_tool"):
        shell.user_ns.pop(name, None)
    shell.user_ns.update(others)


def call(ip, name, arguments=None, *, allow_run_code=False, permission=None, max_chars=4000):
    tools = notebook_tools(ip, allow_run_code=allow_run_code, max_chars=max_chars)
    runner = ToolRunner(tools, session_id="nb", on_permission_request=permission)
    request = ToolCallRequest("c1", name, json.dumps(arguments or {}))
    round_ = asyncio.run(runner.run([request]))
    return round_.outcomes[0].result, round_.events


def test_list_variables_names_types_and_shapes_never_values(ip):
    result, events = call(ip, "list_variables")
    lines = result.text_result_for_llm.splitlines()
    assert "df: DataFrame, shape 3x2" in lines
    assert "numbers: list, length 7" in lines
    assert "my_api_key: str, length 30" in lines
    assert "Paris" not in result.text_result_for_llm and SECRET not in result.text_result_for_llm
    assert not any(line.startswith(("pd:", "In:", "Out:", "_")) for line in lines)
    # read-only tools need no permission
    assert "permission.requested" not in [e.type for e in events]


def test_describe_a_dataframe_cites_its_shape_dtypes_head_and_statistics(ip):
    result, _ = call(ip, "describe_variable", {"name": "df"})
    text = result.text_result_for_llm
    assert text.startswith("df: pandas.DataFrame, shape (3, 2)")
    assert "temp" in text and "float64" in text
    assert "Paris" in text  # head
    assert "mean" in text and "18.58" in text  # describe(): (21.5 + 9 + 25.25) / 3


def test_describing_is_capped_and_secrets_are_never_shown(ip):
    capped, _ = call(ip, "describe_variable", {"name": "df"}, max_chars=50)
    assert capped.text_result_for_llm.endswith("50 shown]")
    refused, _ = call(ip, "describe_variable", {"name": "my_api_key"})
    assert refused.text_result_for_llm == "'my_api_key' looks like a secret: it is not shown."
    missing, _ = call(ip, "describe_variable", {"name": "nope"})
    assert missing.text_result_for_llm.startswith("There is no variable 'nope'.")


def test_read_cell_gives_input_output_and_error(ip):
    ok = ip.run_cell("21 * 2", store_history=True)
    bad = ip.run_cell("1 / 0", store_history=True)
    result, _ = call(ip, "read_cell", {"n": ok.execution_count})
    assert result.text_result_for_llm == (
        f"In [{ok.execution_count}]:\n21 * 2\n\nOut [{ok.execution_count}]:\n42"
    )
    failed, _ = call(ip, "read_cell", {"n": bad.execution_count})
    assert failed.text_result_for_llm.endswith("Error:\nZeroDivisionError: division by zero")
    none, _ = call(ip, "read_cell", {"n": 10_000})
    assert none.text_result_for_llm.startswith("There is no cell 10000")


def test_run_code_is_absent_unless_allowed(ip):
    names = [t.name for t in notebook_tools(ip)]
    assert names == ["list_variables", "describe_variable", "read_cell"]
    result, _ = call(ip, "run_code", {"code": "1"})
    assert result.text_result_for_llm.startswith("Tool 'run_code' does not exist.")


def test_run_code_needs_permission_and_is_denied_without_it(ip):
    result, events = call(ip, "run_code", {"code": "made_by_tool = 1"}, allow_run_code=True)
    assert result.result_type == "denied"
    assert "made_by_tool" not in ip.user_ns
    assert "permission.requested" in [e.type for e in events]


def test_approved_run_code_prints_returns_and_redacts(ip):
    code = "made_by_tool = df['temp'].max()\nprint('hello')\nimport os\nos.environ['MY_SERVICE_API_KEY']"
    result, _ = call(
        ip,
        "run_code",
        {"code": code},
        allow_run_code=True,
        permission=PermissionHandler.approve_all,
    )
    assert result.text_result_for_llm == "hello\n'[redacted]'"
    assert ip.user_ns["made_by_tool"] == 25.25
    error, _ = call(
        ip,
        "run_code",
        {"code": "x = 1\nundefined_name"},
        allow_run_code=True,
        permission=PermissionHandler.approve_all,
    )
    assert error.text_result_for_llm == "NameError: name 'undefined_name' is not defined (line 2)"
