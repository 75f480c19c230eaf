"""Plain-text formatting of times, token usage and sessions, shared by the magics and the panel.

>>> format_usage({"inputTokens": 12, "outputTokens": 8, "duration": 410.0})
'12 in · 8 out tokens · 0.41 s'
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = [
    "context_fill",
    "describe_session",
    "format_count",
    "format_usage",
    "shorten",
    "time_ago",
]


def time_ago(iso: str | None, now: datetime | None = None) -> str:
    """``just now``, ``5 min ago``, ``3 h ago``, ``2 d ago`` or the date, from an ISO time."""
    if not iso:
        return "never"
    try:
        then = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    seconds = ((now or datetime.now(UTC)) - then).total_seconds()
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    if seconds < 7 * 86400:
        return f"{int(seconds // 86400)} d ago"
    return then.date().isoformat()


def format_usage(data: dict[str, Any]) -> str:
    """``12 in · 8 out tokens · 0.41 s`` from an ``assistant.usage`` event's data.

    ``duration`` is in milliseconds; missing parts are left out.
    """
    parts = []
    tokens_in, tokens_out = data.get("inputTokens"), data.get("outputTokens")
    if tokens_in is not None or tokens_out is not None:
        parts.append(f"{tokens_in or 0} in · {tokens_out or 0} out tokens")
    duration = data.get("duration")
    if duration is not None:
        parts.append(f"{float(duration) / 1000:.2f} s")
    return " · ".join(parts)


def context_fill(data: dict[str, Any]) -> str:
    """``context 12% of 8,192 tokens`` from an ``assistant.usage`` event's data: how full the
    model's input budget was for that turn (empty when the turn did not report it).

    >>> context_fill({"contextTokens": 1000, "tokenLimit": 8192})
    'context 12% of 8,192 tokens'
    """
    tokens, limit = data.get("contextTokens"), data.get("tokenLimit")
    if not isinstance(tokens, int) or not isinstance(limit, int) or limit <= 0:
        return ""
    return f"context {tokens * 100 // limit}% of {limit:,} tokens"


def format_count(count: int, noun: str) -> str:
    """``1 turn``, ``2 turns``, ``1,234 characters``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def shorten(text: str, width: int) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``width`` characters with ``…``."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def describe_session(meta: dict[str, Any]) -> dict[str, str]:
    """What the session picker shows of a session: ``title``, ``detail`` and ``summary``.

    ``title`` is the session's name; ``detail`` is ``model · N turns · last used``;
    ``summary`` is the session's summary (its first prompt) on one line, or "".
    """
    return {
        "title": str(meta.get("sessionId")),
        "detail": " · ".join(
            (
                str(meta.get("model", "?")),
                format_count(int(meta.get("turnCount", 0) or 0), "turn"),
                time_ago(meta.get("modifiedTime")),
            )
        ),
        "summary": shorten(str(meta.get("summary") or ""), 200),
    }
