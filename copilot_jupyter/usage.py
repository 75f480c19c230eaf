"""A session's usage, turn by turn: the rows of ``%copilot usage`` and its chart.

Read from the stored log: each ``assistant.usage`` (tokens in and out, the context it left
filled, the cost) is a row; each ``session.compaction_complete`` marks where a summary
replaced older turns. The chart (tokens per turn, context fill, compactions) needs
matplotlib; without it ``%copilot usage`` shows the table only.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from copilot import EventType
from copilot.events import Event

__all__ = ["UsageRow", "has_matplotlib", "usage_chart", "usage_png", "usage_rows"]


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One turn's usage, or a compaction (``compaction`` True: the summary's call)."""

    turn: int
    model: str
    input_tokens: int
    output_tokens: int
    context_tokens: int | None
    token_limit: int | None
    cost: float | None
    compaction: bool = False

    @property
    def fill(self) -> float | None:
        """The share of the model's window the context held after this turn."""
        if not self.context_tokens or not self.token_limit:
            return None
        return self.context_tokens / self.token_limit


def usage_rows(events: Iterable[Event]) -> list[UsageRow]:
    """The turns' usage and the compactions, in log order."""
    rows: list[UsageRow] = []
    turn = 0
    for event in events:
        data = event.data
        if event.type == EventType.ASSISTANT_USAGE:
            turn += 1
            rows.append(
                UsageRow(
                    turn,
                    str(data.get("model", "")),
                    int(data.get("inputTokens") or 0),
                    int(data.get("outputTokens") or 0),
                    data.get("contextTokens"),
                    data.get("tokenLimit"),
                    data.get("cost"),
                )
            )
        elif event.type == EventType.SESSION_COMPACTION_COMPLETE and data.get("success"):
            rows.append(
                UsageRow(
                    turn,
                    str(data.get("model", "")),
                    int(data.get("inputTokens") or 0),
                    int(data.get("outputTokens") or 0),
                    data.get("postCompactionTokens"),
                    None,
                    data.get("cost"),
                    compaction=True,
                )
            )
    return rows


def has_matplotlib() -> bool:
    """Whether the chart can be drawn here."""
    return importlib.util.find_spec("matplotlib") is not None


def usage_chart(rows: list[UsageRow], title: str) -> Any:
    """A matplotlib figure: tokens in and out per turn (bars), the context fill (line, right
    axis) and a dashed line where each compaction happened. Requires matplotlib."""
    from matplotlib.figure import Figure  # drawn without pyplot: no backend is touched

    turns = [r for r in rows if not r.compaction]
    figure = Figure(figsize=(8, 3.5))
    axes = figure.subplots()
    x = [r.turn for r in turns]
    axes.bar(x, [r.input_tokens for r in turns], label="input tokens", color="#8fb3d9")
    axes.bar(
        x,
        [r.output_tokens for r in turns],
        bottom=[r.input_tokens for r in turns],
        label="output tokens",
        color="#f2b279",
    )
    axes.set_xlabel("turn")
    axes.set_ylabel("tokens")
    fill = figure.axes[0].twinx()
    fill.plot(x, [(r.fill or 0) * 100 for r in turns], color="#444", label="context fill %")
    fill.set_ylabel("context fill (% of window)")
    fill.set_ylim(0, 100)
    for row in rows:
        if row.compaction:
            axes.axvline(row.turn + 0.5, color="#c33", linestyle="--", linewidth=1)
    axes.set_title(title)
    axes.legend(loc="upper left", fontsize="small")
    return figure


def usage_png(rows: list[UsageRow], title: str) -> bytes:
    """:func:`usage_chart` as PNG bytes."""
    buffer = io.BytesIO()
    usage_chart(rows, title).savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    return buffer.getvalue()
