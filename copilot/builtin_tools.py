"""Ready-made tools over the client itself.

:func:`search_sessions_tool` lets a session's model recall earlier conversations through the
full-text search of :meth:`copilot.CopilotClient.search`::

    session = client.create_session(
        session_id="helper",
        tools=[search_sessions_tool(client)],
        on_permission_request=PermissionHandler.approve_all,  # or ask the user
    )

The tool reads every session's prompts and replies, so it is not ``skip_permission``: each
call goes through the session's permission handler (denied without one). By default it leaves
out the session that calls it (its own context already holds its history); naming that session
with ``session_id`` searches it. Each hit is a JSON object with ``sessionId``, ``timestamp``,
``type`` (``user.message`` or ``assistant.message``) and ``snippet`` (matches in «»), best
first, at most :data:`MAX_HITS`. A query the search cannot parse answers the model with a
failure naming the syntax (its message), not an exception.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from pydantic import BaseModel, Field

from .errors import InvalidArgumentError
from .tools import Tool, ToolInvocation, ToolResult, define_tool

__all__ = ["MAX_HITS", "SearchSessionsParams", "search_sessions_tool"]

#: the most hits one call returns
MAX_HITS = 10
#: how many hits are fetched to fill ``limit`` after the calling session's are left out
_OVERFETCH = 50
_KEYS = ("sessionId", "timestamp", "type", "snippet")


class SearchSessionsParams(BaseModel):
    """The arguments of ``search_sessions``."""

    query: str = Field(
        min_length=1,
        description='words to find; "a phrase", prefix*, AND / OR / NOT; case-insensitive',
    )
    session_id: str | None = Field(None, description="search only this session")
    limit: int = Field(5, ge=1, le=MAX_HITS, description=f"most hits, 1 to {MAX_HITS}")


def _hits(
    found: list[dict[str, Any]], params: SearchSessionsParams, caller: str
) -> list[dict[str, Any]]:
    if params.session_id != caller:
        found = [hit for hit in found if hit.get("sessionId") != caller]
    return [{key: hit.get(key) for key in _KEYS} for hit in found[: params.limit]]


def _bad_query(error: InvalidArgumentError) -> ToolResult:
    return ToolResult(f"The search query is not valid: {error}", result_type="failure")


def search_sessions_tool(client: Any, *, name: str = "search_sessions") -> Tool:
    """A ``search_sessions`` tool over ``client`` (a :class:`~copilot.CopilotClient` or an
    :class:`~copilot.AsyncCopilotClient`): full-text search of every session's prompts and
    replies, returning JSON hits best first (see the module docstring)."""
    description = (
        "Search earlier chat sessions (prompts and replies) by what was said. Returns JSON "
        "hits, best first: sessionId, timestamp, type, snippet (matches marked with «»). "
        "The current session is left out unless session_id names it."
    )

    def fetch_size(params: SearchSessionsParams) -> int:
        return params.limit if params.session_id else params.limit + _OVERFETCH

    if inspect.iscoroutinefunction(client.search):

        async def search_async(
            params: SearchSessionsParams, invocation: ToolInvocation
        ) -> str | ToolResult:
            try:
                found = await client.search(
                    params.query, session_id=params.session_id, limit=fetch_size(params)
                )
            except InvalidArgumentError as error:
                return _bad_query(error)
            return json.dumps(_hits(found, params, invocation.session_id), ensure_ascii=False)

        return define_tool(name, description=description, handler=search_async)

    def search(params: SearchSessionsParams, invocation: ToolInvocation) -> str | ToolResult:
        try:
            found = client.search(
                params.query, session_id=params.session_id, limit=fetch_size(params)
            )
        except InvalidArgumentError as error:
            return _bad_query(error)
        return json.dumps(_hits(found, params, invocation.session_id), ensure_ascii=False)

    return define_tool(name, description=description, handler=search)
