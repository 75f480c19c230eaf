"""Notebook context in a real headless IPython shell: {Err}, {Err[n]}, {@name}, fix, explain.

The echo model answers the prompts whose text the tests read back; ``%copilot fix`` and
``%copilot explain`` talk to a :class:`copilot.testing.ScriptedOpenAIServer` on 127.0.0.1, and
the tests assert on the request it received.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import copilot_extension
from IPython.core.interactiveshell import InteractiveShell
from IPython.testing import globalipapp
from IPython.utils.capture import CapturedIO, capture_output

from copilot import CopilotClient, EventType
from copilot.testing import Fault, Reply, ScriptedOpenAIServer, message_text
from copilot_jupyter import CopilotMagics
from copilot_jupyter.context import (
    KEPT_ERRORS,
    MESSAGE_LIMIT,
    TRACEBACK_LIMIT,
    CellErrors,
    plain,
)
from copilot_jupyter.interpolate import interpolate
from copilot_jupyter.state import CopilotState, get_state, reset_state
from copilot_jupyter.summaries import MAX_COLUMNS, REPR_LIMIT, SUMMARY_LIMIT, summarize

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
def server(ip: InteractiveShell) -> Iterator[ScriptedOpenAIServer]:
    """A scripted OpenAI server serving gpt-4.1 to the shared state's client."""
    with ScriptedOpenAIServer() as s:
        client = CopilotClient(providers={"openai": {"base_url": s.base_url}})
        previous = reset_state(CopilotState(client))
        if previous is not None:
            previous.client.stop(timeout=5)
        yield s


def run(ip: InteractiveShell, code: str) -> tuple[Any, CapturedIO]:
    """Run a cell like a notebook would (stored in the history); return result and output."""
    with capture_output() as captured:
        result = ip.run_cell(code, store_history=True)
    return result, captured


def magics(ip: InteractiveShell) -> CopilotMagics:
    return ip.magics_manager.registry["CopilotMagics"]


def prompts(name: str) -> list[str]:
    """The prompts stored in session ``name``."""
    events = get_state().client.get_messages(name)
    return [e.data["content"] for e in events if e.type == EventType.USER_MESSAGE]


def chat_requests(server: ScriptedOpenAIServer) -> list[dict[str, Any]]:
    return [r.json for r in server.requests if r.path.endswith("/chat/completions")]


def last_user_text(request: dict[str, Any]) -> str:
    return message_text([m for m in request["messages"] if m["role"] == "user"][-1])


# -- {Err} and {Err[n]} --------------------------------------------------------------------


def test_err_is_the_last_errors_traceback_as_plain_text(ip: InteractiveShell) -> None:
    failing, _ = run(ip, "def ratio(a, b):\n    return a / b\n\nratio(1, 0)")
    n = failing.execution_count
    assert failing.error_in_exec is not None
    run(ip, "%%copilot errs\nWhat went wrong?\n{Err}")
    sent = prompts("errs")[-1]
    error = magics(ip).errors.last
    assert error is not None
    assert sent == f"What went wrong?\n{error.traceback}"
    assert (error.cell, error.type, error.message) == (n, "ZeroDivisionError", "division by zero")
    # the cell's frames, labelled as IPython labels them, and the innermost line; no colours,
    # and none of IPython's own frames (run_code)
    assert error.traceback.startswith("Traceback (most recent call last):\n")
    assert f'File "Cell In[{n}]", line 4, in <module>\n    ratio(1, 0)' in error.traceback
    assert f'File "Cell In[{n}]", line 2, in ratio\n    return a / b' in error.traceback
    assert error.traceback.endswith("ZeroDivisionError: division by zero")
    assert "\x1b" not in sent
    assert "interactiveshell" not in sent and "run_code" not in sent
    assert error.code == "def ratio(a, b):\n    return a / b\n\nratio(1, 0)"


def test_err_n_picks_a_cell_and_unknown_ones_stay_as_written(ip: InteractiveShell) -> None:
    run(ip, "%%copilot errs\nbefore any error: {Err} {Err[1]}")
    first, _ = run(ip, "raise KeyError('first')")
    ok, _ = run(ip, "x = 1")
    second, _ = run(ip, "raise ValueError('second')")
    a, b, c = first.execution_count, ok.execution_count, second.execution_count
    run(ip, f"%%copilot errs\n[{{Err[{a}]}}] [{{Err[{b}]}}] [{{Err}}] {{{{Err}}}}")
    before, after = prompts("errs")
    assert before == "before any error: {Err} {Err[1]}"
    errors = magics(ip).errors
    assert errors.get(a).traceback.endswith("KeyError: 'first'")
    assert after == (
        f"[{errors.get(a).traceback}] [{{Err[{b}]}}] [{errors.get(c).traceback}] {{Err}}"
    )
    assert errors.get(b) is None and errors.last is errors.get(c)


def test_a_cell_that_does_not_compile_is_recorded(ip: InteractiveShell) -> None:
    failing, _ = run(ip, "def f(:\n    pass")
    assert failing.error_before_exec is not None
    error = magics(ip).errors.get(failing.execution_count)
    assert error.type == "SyntaxError"
    # only the syntax error's own lines: the compiler's frames are IPython's
    assert error.traceback.startswith(f'  File "Cell In[{failing.execution_count}]", line 1')
    assert error.traceback.endswith("SyntaxError: invalid syntax")
    assert "Traceback" not in error.traceback


def test_recording_errors_does_not_change_how_they_show(shell: InteractiveShell) -> None:
    """The traceback the user sees is IPython's, the same with the extension loaded or not."""
    code = "def g():\n    raise RuntimeError('shown as before')\ng()"
    hooks = (sys.excepthook, shell.custom_exceptions, shell.CustomTB, shell.showtraceback)
    reset_state(None)
    _, without = run(shell, code)
    shell.run_cell("%load_ext copilot_jupyter")
    try:
        _, with_extension = run(shell, code)
        assert (sys.excepthook, shell.custom_exceptions, shell.CustomTB) == hooks[:3]
        assert shell.showtraceback == hooks[3]
        recorded = magics(shell).errors.last
    finally:
        shell.run_cell("%unload_ext copilot_jupyter")
        reset_state(None)
    # only the cell number differs between the two runs
    strip = __import__("re").compile(r"In\[\d+\]|Cell In\[\d+\]")
    assert strip.sub("", plain(with_extension.stdout)) == strip.sub("", plain(without.stdout))
    assert "RuntimeError: shown as before" in with_extension.stdout
    assert recorded is not None and recorded.message == "shown as before"
    # unloading unregisters the observer: errors after it are not recorded anywhere
    assert all(
        getattr(callback, "__self__", None).__class__ is not CellErrors
        for callback in shell.events.callbacks["post_run_cell"]
    )


def test_tracebacks_and_messages_are_capped(ip: InteractiveShell) -> None:
    # 300 distinct frames (repeated frames would be folded into one line by Python)
    chain = "".join(f"def f{i}():\n    return f{i + 1}()\n" for i in range(300))
    deep, _ = run(ip, chain + "def f300():\n    raise LookupError('deep')\nf0()")
    long, _ = run(ip, "raise ValueError('x' * 5000)")
    errors = magics(ip).errors
    recursion = errors.get(deep.execution_count)
    head, _, kept = recursion.traceback.partition("\n")
    assert head.startswith("[… the first ") and head.endswith(
        " characters of the traceback left out …]"
    )
    assert len(kept) == TRACEBACK_LIMIT  # the tail: innermost frames and the error line
    assert kept.endswith("in f300\n    raise LookupError('deep')\nLookupError: deep")
    message = errors.get(long.execution_count).message
    assert message == "x" * MESSAGE_LIMIT + (
        f"\n[… message cut: 5,000 characters, the first {MESSAGE_LIMIT:,} kept]"
    )


def test_a_cell_run_without_history_is_only_the_last_error(ip: InteractiveShell) -> None:
    """nbval runs cells with store_history=False: IPython gives them no number of their own."""
    stored, _ = run(ip, "raise KeyError('stored')")
    with capture_output():
        ip.run_cell("raise KeyError('unstored')", store_history=False)
    errors = magics(ip).errors
    assert errors.last.message == "'unstored'" and errors.last.cell is None
    assert errors.get(stored.execution_count).message == "'stored'"
    assert list(errors.texts()) == [stored.execution_count]


def test_only_the_most_recent_errors_are_kept() -> None:
    errors = CellErrors()
    for cell in range(1, KEPT_ERRORS + 2):
        errors.record(ValueError(str(cell)), f"cell {cell}", cell)
    assert errors.get(1) is None
    assert errors.get(2).message == "2"
    assert len(errors.texts()) == KEPT_ERRORS
    assert errors.last.message == str(KEPT_ERRORS + 1)


def test_errors_of_copilot_cells_are_not_recorded(ip: InteractiveShell) -> None:
    failing, _ = run(ip, "1/0")
    bad, _ = run(ip, "%copilot no-such-subcommand")
    assert bad.error_in_exec is not None  # a UsageError
    assert magics(ip).errors.last.cell == failing.execution_count


def test_ansi_codes_in_an_error_message_are_removed(ip: InteractiveShell) -> None:
    run(
        ip,
        "raise RuntimeError('\\x1b[31mred\\x1b[0m and \\x1b]8;;http://x\\x07link\\x1b]8;;\\x07')",
    )
    assert magics(ip).errors.last.message == "red and link"


# -- summaries: {@name} ------------------------------------------------------------------------


def test_a_dataframe_summary_in_a_prompt(ip: InteractiveShell) -> None:
    ip.user_ns["df"] = pd.DataFrame({"a": [1, 2, 3, 4, 5, 6], "b": list("uvwxyz"), "c": [0.5] * 6})
    run(ip, "%%copilot sums\n{@df}")
    expected = textwrap.dedent(
        """\
        pandas.DataFrame: 6 rows x 3 columns
        dtypes:
          a: int64
          b: {b}
          c: float64
        head(5):
           a  b    c
        0  1  u  0.5
        1  2  v  0.5
        2  3  w  0.5
        3  4  x  0.5
        4  5  y  0.5
        describe():
                      a    c
        count  6.000000  6.0
        mean   3.500000  0.5
        std    1.870829  0.0
        min    1.000000  0.5
        25%    2.250000  0.5
        50%    3.500000  0.5
        75%    4.750000  0.5
        max    6.000000  0.5"""
    ).replace("{b}", str(ip.user_ns["df"]["b"].dtype))
    assert prompts("sums") == [expected]


def test_series_array_and_other_summaries() -> None:
    series = pd.Series([1.0, 2.0, 4.0], name="s")
    assert summarize(series).splitlines()[:2] == [
        "pandas.Series 's': 3 values, dtype float64",
        "head(5):",
    ]
    assert "mean     2.333333" in summarize(series)
    array = np.array([[1.0, np.nan], [3.0, 8.0]])
    assert summarize(array).splitlines()[:2] == [
        "numpy.ndarray: shape (2, 2), dtype float64",
        "min 1, max 8, mean 4, std 2.94392, NaN 1",
    ]
    assert (
        summarize(np.array(["a", "b"])) == "numpy.ndarray: shape (2,), dtype <U1\nvalues: ['a' 'b']"
    )
    assert summarize(list(range(1000))) == (
        "list (1,000 items): [" + ", ".join(map(str, range(20))) + ", ...]"
    )
    assert summarize({"k": 1}) == "dict (1 items): {'k': 1}"


def test_summaries_are_capped() -> None:
    long = summarize("y" * 50_000)
    assert long.startswith("str: 'yyy") and len(long) <= REPR_LIMIT + 100
    wide = pd.DataFrame(np.zeros((3, 60)))
    text = summarize(wide)
    assert text.startswith(
        f"pandas.DataFrame: 3 rows x 60 columns (the first and last {MAX_COLUMNS // 2} of 60 "
        "columns shown)"
    )
    assert text.count(": float64") == MAX_COLUMNS
    tall_text = pd.DataFrame({f"c{i}": ["z" * 200] * 5 for i in range(20)})
    capped = summarize(tall_text)
    assert len(capped) <= SUMMARY_LIMIT + 80
    assert capped.endswith(f"the first {SUMMARY_LIMIT:,} kept]")

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    # reprlib stands in for a repr that raises
    assert summarize(Broken()).startswith("Broken: <Broken instance at 0x")
    assert "describe not available: ValueError" in summarize(pd.DataFrame())


def test_the_summary_syntax_leaves_every_older_syntax_alone(ip: InteractiveShell) -> None:
    """{@x} is new; {x}, {x.attr}, {{x}}, {x!r}, {x:>5}, {In[n]}, {Out[n]} mean what they meant."""
    ip.user_ns["arr"] = np.arange(4)
    out, _ = run(ip, "[1, 2]")
    n = out.execution_count
    namespace = {"x": "X", "arr": ip.user_ns["arr"]}
    text = (
        f"{{x}} {{arr.shape}} {{{{x}}}} {{x!r}} {{x:>5}} {{{{@x}}}} {{@missing}} {{@_private}} "
        f"{{@x.__class__}} {{ @x }} {{@arr}} {{@Out[{n}]}} {{Out[{n}]}} {{@Out[999]}}"
    )
    result = interpolate(text, namespace, outputs={n: [1, 2]})
    assert result == (
        "X (4,) {x} {x!r} {x:>5} {@x} {@missing} {@_private} {@x.__class__} { @x } "
        "numpy.ndarray: shape (4,), dtype int64\nmin 0, max 3, mean 1.5, std 1.11803, NaN 0\n"
        "values: [0 1 2 3] "
        "list (2 items): [1, 2] [1, 2] {@Out[999]}"
    )
    # a summary is inserted once and never scanned again
    assert interpolate("{@t}", {"t": "{x}"}) == "str: '{x}'"


def test_pandas_and_numpy_are_never_imported_by_the_extension(tmp_path) -> None:
    """They are test dependencies only: loading the extension and summarising imports neither."""
    code = textwrap.dedent(
        """
        import sys
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.run_cell("%load_ext copilot_jupyter")
        shell.run_cell("x = [1, 2]\\n1/0", store_history=True)
        from copilot_jupyter.interpolate import interpolate
        print(interpolate("{@x}", shell.user_ns))
        print(sorted(m for m in ("pandas", "numpy") if m in sys.modules))
        """
    )
    env = {**os.environ, "COPILOT_JUPYTER_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2:] == ["list (2 items): [1, 2]", "[]"]


# -- %copilot fix and %copilot explain ---------------------------------------------------------

FIXED = "```python\ndef ratio(a, b):\n    return a / b if b else float('nan')\n\nratio(1, 0)\n```\n\nb was 0."


def test_fix_sends_code_and_traceback_and_puts_the_reply_code_in_a_new_cell(
    ip: InteractiveShell, server: ScriptedOpenAIServer, monkeypatch
) -> None:
    calls: list[tuple[str, bool]] = []
    monkeypatch.setattr(ip, "set_next_input", lambda s, replace=False: calls.append((s, replace)))
    code = "def ratio(a, b):\n    return a / b\n\nratio(1, 0)"
    failing, _ = run(ip, code)
    n = failing.execution_count
    run(ip, "x = 'a cell that works'")
    server.enqueue(Reply(FIXED))
    _, captured = run(ip, "%copilot fix repair -m gpt-4.1")
    assert captured.stderr == ""
    [request] = chat_requests(server)
    assert request["model"] == "gpt-4.1"
    sent = last_user_text(request)
    error = magics(ip).errors.get(n)
    assert sent.startswith("This notebook cell raised ZeroDivisionError. Fix it.")
    assert f"The cell:\n```python\n{code}\n```" in sent
    assert f"The error:\n```\n{error.traceback}\n```" in sent
    assert "ZeroDivisionError: division by zero" in sent and "return a / b" in sent
    # the reply's code in a new cell below, not run; the reply itself shown as Markdown
    assert calls == [
        ("def ratio(a, b):\n    return a / b if b else float('nan')\n\nratio(1, 0)", False)
    ]
    assert any(o.data.get("text/markdown") == FIXED for o in captured.outputs)
    assert "nan" not in str(ip.user_ns.get("_", ""))  # not run
    assert get_state().current_session == "repair"  # as %%copilot repair would
    # a bare fix goes to the current session, as a bare %%copilot does
    server.enqueue(Reply("```python\npass\n```"))
    run(ip, "%copilot fix")
    assert len(prompts("repair")) == 2


def test_a_failed_fix_fills_no_cell_and_the_session_goes_on(
    ip: InteractiveShell, server: ScriptedOpenAIServer, monkeypatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(ip, "set_next_input", lambda s, replace=False: calls.append(s))
    run(ip, "undefined_name + 1")
    server.enqueue(Fault.status(400), Reply("```python\ndefined = 1\n```"))
    result, captured = run(ip, "%copilot fix repair -m gpt-4.1")
    assert result.error_in_exec is None  # one line on stderr, no traceback
    assert captured.stderr.startswith("copilot: ") and "Traceback" not in captured.stderr
    assert "(session 'repair' is still usable)" in captured.stderr
    assert calls == []
    run(ip, "%copilot fix")
    assert calls == ["defined = 1"]
    assert "NameError: name 'undefined_name' is not defined" in sent_of(server, 1)


def test_summaries_doctest_runs() -> None:
    import doctest

    import copilot_jupyter.summaries

    result = doctest.testmod(copilot_jupyter.summaries)
    assert result.attempted == 1 and result.failed == 0


def test_fix_without_a_failed_cell_says_so(ip: InteractiveShell, monkeypatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(ip, "set_next_input", lambda s, replace=False: calls.append(s))
    result, captured = run(ip, "%copilot fix")
    assert result.error_in_exec is None
    assert captured.stderr.strip() == (
        "copilot: no failed cell to fix: no cell has raised an error since "
        "%load_ext copilot_jupyter (%copilot fix works on the last cell that did)"
    )
    assert calls == [] and get_state().client.list_sessions() == []


def test_explain_sends_a_cells_code_and_result(
    ip: InteractiveShell, server: ScriptedOpenAIServer
) -> None:
    ip.user_ns["frame"] = pd.DataFrame({"v": [1, 2, 3]})
    cell, _ = run(ip, "frame.assign(w=frame.v * 2)")
    n = cell.execution_count
    server.enqueue(Reply("It doubles v."), Reply("It divides by zero."))
    _, captured = run(ip, "%copilot explain explainer -m gpt-4.1")
    assert captured.stderr == ""
    sent = last_user_text(chat_requests(server)[0])
    assert sent.startswith(f"Explain what notebook cell In[{n}] does and what its output shows.")
    assert "```python\nframe.assign(w=frame.v * 2)\n```" in sent
    assert f"Its result (Out[{n}]):\n```\npandas.DataFrame: 3 rows x 2 columns" in sent
    assert "It raised an error" not in sent
    assert any(o.data.get("text/markdown") == "It doubles v." for o in captured.outputs)
    # explain N: an older cell, and its error
    failing, _ = run(ip, "1/0")
    run(ip, f"%copilot explain {failing.execution_count}")
    sent = last_user_text(chat_requests(server)[1])
    assert "```python\n1/0\n```" in sent
    assert "It raised an error:\n```\nTraceback" in sent and "ZeroDivisionError" in sent
    assert prompts("explainer") == [sent_of(server, 0), sent]


def sent_of(server: ScriptedOpenAIServer, index: int) -> str:
    return last_user_text(chat_requests(server)[index])


def test_explain_refuses_a_cell_that_did_not_run(ip: InteractiveShell) -> None:
    run(ip, "x = 1")
    last = ip.execution_count - 1  # the cell before the one running %copilot explain
    _, captured = run(ip, "%copilot explain 500")
    assert captured.stderr.strip() == (
        f"copilot: no cell In[500] to explain: the cells run so far are In[1] to In[{last}]"
    )
    result, _ = run(ip, "%copilot explain zero other")
    assert str(result.error_in_exec) == (
        "%copilot explain: not a cell number: 'zero'; the cell number comes first: "
        "%copilot explain [N] [NAME]"
    )
    result, _ = run(ip, "%copilot explain 0")
    assert str(result.error_in_exec) == "%copilot explain: cell numbers start at 1 (got 0)"
    assert get_state().client.list_sessions() == []


def test_help_lists_fix_and_explain(ip: InteractiveShell) -> None:
    _, captured = run(ip, "%copilot help")
    assert "fix" in captured.stdout and "explain" in captured.stdout
    _, captured = run(ip, "%copilot fix -h")
    assert "the fixed code goes into a new cell below (not run)" in " ".join(
        captured.stdout.split()
    )
