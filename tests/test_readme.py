"""The README's Python API example runs as written (echo stands in for gpt-4.1)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_api_example_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("COPILOT_JUPYTER_HOME", str(tmp_path))
    monkeypatch.setenv("COPILOT_JUPYTER_FALLBACK_MODEL", "echo")
    block = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)[0]
    assert "create_session" in block and "resume_session" in block
    out = io.StringIO()
    ns: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), ns)
    lines = out.getvalue().splitlines()
    assert lines[0] == "echo: How do I create a virtual environment? echo"
    assert "[user.message] {'content': 'And how do I activate it?'}" in lines
    assert sum(line.startswith("[assistant.message]") for line in lines) == 2
    ns["client"].stop()


def test_the_tools_example_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("COPILOT_JUPYTER_HOME", str(tmp_path))
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Tools") : text.index("## In Jupyter")]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.S)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md#tools", "exec"), {})
    assert out.getvalue().splitlines() == ["calling get_weather", "sunny in Paris"]
