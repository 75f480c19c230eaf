"""Tool calls as collapsible blocks, for a cell's output and the panel's transcript.

:func:`tool_views` reads an exchange's :attr:`copilot.history.Exchange.tool_calls` (the step
and tool, permission and hook event data, in log order) into one :class:`ToolCallView` per
call: its name, arguments, result, result type and permission decision. :func:`tool_blocks_html`
renders them as ``<details><summary>name(args)</summary>result</details>``, every text escaped
and cut to ``max_chars``; :func:`tool_blocks_text` is the plain-text fallback.

>>> data = [{"type": "tool.execution_start", "toolCallId": "c1", "toolName": "f",
...          "arguments": {"x": "<b>"}},
...         {"type": "tool.execution_complete", "toolCallId": "c1", "resultType": "success",
...          "result": {"content": "ok"}}]
>>> tool_blocks_html(data)
'<div class="cj-tools"><details class="cj-tool cj-tool-success"><summary>🔧 f(x=&quot;&lt;b&gt;&quot;) · success</summary><pre>ok</pre></details></div>'
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from copilot.events import EventType

__all__ = ["SHOWN_TOOL_CHARS", "ToolCallView", "tool_blocks_html", "tool_blocks_text", "tool_views"]

#: the most characters of a call's arguments, and of its result, a block shows
SHOWN_TOOL_CHARS = 2000


@dataclass(slots=True)
class ToolCallView:
    """One tool call as the user sees it."""

    call_id: str
    name: str
    arguments: Any = None
    result: str | None = None
    result_type: str | None = None
    permission: str | None = None


def tool_views(tool_calls: Iterable[Mapping[str, Any]]) -> list[ToolCallView]:
    """One view per call, in the order the calls were made."""
    views: dict[str, ToolCallView] = {}
    for data in tool_calls:
        kind = data.get("type")
        call_id = str(data.get("toolCallId", ""))
        if kind == EventType.ASSISTANT_MESSAGE:
            for request in data.get("toolRequests") or ():
                cid = str(request.get("toolCallId", ""))
                views.setdefault(
                    cid, ToolCallView(cid, str(request.get("name", "?")), request.get("arguments"))
                )
            continue
        if not call_id:
            continue
        view = views.setdefault(call_id, ToolCallView(call_id, str(data.get("toolName", "?"))))
        if kind == EventType.TOOL_EXECUTION_START:
            view.name = str(data.get("toolName", view.name))
            view.arguments = data.get("arguments", view.arguments)
        elif kind == EventType.TOOL_EXECUTION_COMPLETE:
            result = data.get("result")
            content = result.get("content") if isinstance(result, Mapping) else result
            view.result = "" if content is None else str(content)
            view.result_type = str(data.get("resultType") or "")
        elif kind == EventType.PERMISSION_COMPLETED:
            decision = data.get("result")
            if isinstance(decision, Mapping):
                view.permission = str(decision.get("kind", ""))
    return list(views.values())


def _cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}… ({len(text):,} characters; {max_chars:,} shown)"


def _arguments(arguments: Any) -> str:
    if isinstance(arguments, Mapping):
        return ", ".join(
            f"{key}={json.dumps(value, ensure_ascii=False, default=str)}"
            for key, value in arguments.items()
        )
    if arguments in (None, "", {}):
        return ""
    return json.dumps(arguments, ensure_ascii=False, default=str)


def _summary(view: ToolCallView, max_chars: int) -> str:
    status = view.result_type or "running"
    if view.permission and view.permission != "approved" and view.result_type != "success":
        status = f"{status}: {view.permission}"
    return f"{view.name}({_cut(_arguments(view.arguments), max_chars)}) · {status}"


def tool_blocks_html(
    tool_calls: Iterable[Mapping[str, Any]], max_chars: int = SHOWN_TOOL_CHARS
) -> str:
    """The calls as collapsed ``<details>`` blocks (empty string if there are none)."""
    blocks = []
    for view in tool_views(tool_calls):
        kind = html.escape(view.result_type or "running", quote=True)
        result = "(no result yet)" if view.result is None else _cut(view.result, max_chars)
        blocks.append(
            f'<details class="cj-tool cj-tool-{kind}">'
            f"<summary>🔧 {html.escape(_summary(view, max_chars))}</summary>"
            f"<pre>{html.escape(result)}</pre></details>"
        )
    return f'<div class="cj-tools">{"".join(blocks)}</div>' if blocks else ""


def tool_blocks_text(
    tool_calls: Iterable[Mapping[str, Any]], max_chars: int = SHOWN_TOOL_CHARS
) -> str:
    """The calls as plain text: one ``🔧 name(args) · status`` line each, then the result."""
    parts = []
    for view in tool_views(tool_calls):
        result = "" if view.result is None else _cut(view.result, max_chars)
        parts.append(f"🔧 {_summary(view, max_chars)}" + (f"\n{result}" if result else ""))
    return "\n".join(parts)
