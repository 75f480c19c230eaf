"""``%copilot compact NAME`` and ``%copilot usage [NAME]`` in an IPython shell (echo answers)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from helpers import copilot_extension
from IPython.testing import globalipapp
from IPython.utils.capture import CapturedIO, capture_output

from copilot import EventType
from copilot_jupyter.usage import has_matplotlib, usage_rows


@pytest.fixture(scope="module")
def shell() -> Any:
    return globalipapp.get_ipython()


@pytest.fixture
def ip(shell: Any, tmp_path, monkeypatch) -> Iterator[Any]:
    with copilot_extension(shell, str(tmp_path / "home"), monkeypatch) as loaded:
        yield loaded


def run(ip: Any, code: str) -> tuple[Any, CapturedIO]:
    with capture_output() as captured:
        result = ip.run_cell(code, store_history=True)
    return result, captured


def text_of(captured: CapturedIO) -> str:
    shown = [o.data.get("text/plain", "") for o in captured.outputs]
    return "\n".join([captured.stdout, captured.stderr, *shown])


def test_usage_table_and_totals(ip) -> None:
    run(ip, "%copilot new chat")
    for word in ("alpha", "beta", "gamma"):
        run(ip, f"%%copilot chat\n{word} words here")
    _, captured = run(ip, "%copilot usage chat")
    text = text_of(captured)
    assert "turn  model" in text
    assert "session chat: 3 turns" in text and "$0.000000" in text  # echo costs nothing
    rows = [line for line in text.splitlines() if line.startswith(("1 ", "2 ", "3 "))]
    assert len(rows) == 3
    # the chart shows only where matplotlib is installed; the table always
    figures = [o for o in captured.outputs if "image/png" in o.data]
    assert bool(figures) == has_matplotlib()


def test_compact_now(ip) -> None:
    run(ip, "%copilot new chat")
    _, captured = run(ip, "%copilot compact chat")
    assert "nothing old enough to summarize yet" in text_of(captured)
    for i in range(5):
        run(ip, f"%%copilot chat\nprompt number {i}")
    _, captured = run(ip, "%copilot compact chat")
    assert "3 turns summarized" in text_of(captured)
    events = ip.run_cell("import copilot_jupyter.state as s; s.get_state().client").result
    stored = events.get_messages("chat")
    assert any(e.type == EventType.SESSION_COMPACTION_COMPLETE for e in stored)
    rows = usage_rows(stored)
    assert [r.compaction for r in rows] == [False] * 5 + [True]
    _, captured = run(ip, "%copilot usage chat")
    assert "5 (summary)" in text_of(captured) and "1 compactions" in text_of(captured)


def test_usage_of_an_unknown_session_is_a_clear_error(ip) -> None:
    _, captured = run(ip, "%copilot usage nope")
    assert "nope" in text_of(captured) and "Traceback" not in text_of(captured)


def test_usage_chart_is_a_png_with_the_compactions(ip) -> None:
    pytest.importorskip("matplotlib")
    from copilot_jupyter.usage import usage_chart

    run(ip, "%copilot new chat")
    for i in range(5):
        run(ip, f"%%copilot chat\nprompt number {i}")
    run(ip, "%copilot compact chat")
    _, captured = run(ip, "%copilot usage chat")
    (png,) = [o.data["image/png"] for o in captured.outputs if "image/png" in o.data]
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    client = ip.run_cell("import copilot_jupyter.state as s; s.get_state().client").result
    figure = usage_chart(usage_rows(client.get_messages("chat")), "t")
    (axes, fill) = figure.axes
    assert len(axes.patches) == 10  # input and output bars for 5 turns
    dashed = [line for line in axes.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_xdata()[0] == 5.5  # after turn 5
    assert 0 < max(fill.lines[0].get_ydata()) <= 100
