"""A multi-user chat service on a shared PostgreSQL store: run it on several servers at once.

Every server process opens its own clients on the same database, so any process can serve any
request: no sticky routing, no shared memory, no session affinity. Each user's sessions are
theirs alone (one ``AsyncCopilotClient`` per user, ``owner=`` the user).

Run two servers behind any load balancer (or none: talk to either port)::

    export COPILOT_JUPYTER_STORE=postgresql://copilot@db/copilot   # password: PGPASSWORD
    uvicorn examples.shared_chat.app:app --port 8001 &
    uvicorn examples.shared_chat.app:app --port 8002 &
    curl -H 'X-User: alice' -d '{"prompt": "hello"}' localhost:8001/chat/demo
    curl -H 'X-User: alice' -d '{"prompt": "and again"}' localhost:8002/chat/demo
    curl -H 'X-User: alice' localhost:8001/chat/demo

``X-User`` stands for whatever your authentication sets (an OAuth proxy's header, a session
cookie); never trust it from the open internet. ``COPILOT_EXAMPLE_MODEL`` picks the model
(default ``echo``, which needs no key).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from copilot import AsyncCopilotClient, EventType
from copilot.errors import CopilotError, SessionExistsError, SessionNotFoundError

MODEL = os.environ.get("COPILOT_EXAMPLE_MODEL", "echo")
SERVER = f"{os.uname().nodename}:{os.getpid()}"

_clients: dict[str, AsyncCopilotClient] = {}
_lock = asyncio.Lock()


async def client_for(user: str) -> AsyncCopilotClient:
    """This process's client for ``user`` (one per owner, opened on first use)."""
    async with _lock:
        client = _clients.get(user)
        if client is None:
            # The store comes from $COPILOT_JUPYTER_STORE; owner= keeps users apart.
            client = AsyncCopilotClient(owner=user, fallback_model="echo")
            await client.start()
            _clients[user] = client
        return client


def _user(request: Request) -> str:
    user = request.headers.get("x-user", "")
    if not user:
        raise CopilotError("send the user's name in the X-User header")
    return user


async def chat(request: Request) -> JSONResponse:
    """POST a prompt to the user's session (created on first use); returns the reply."""
    session_id = request.path_params["session_id"]
    body = await request.json()
    client = await client_for(_user(request))
    try:
        session = await client.resume_session(session_id)
    except SessionNotFoundError:
        try:
            session = await client.create_session(session_id=session_id, model=MODEL)
        except SessionExistsError:  # another server created it at the same moment
            session = await client.resume_session(session_id)
    reply = await session.send_and_wait(prompt=body["prompt"], timeout=120)
    meta = await client.get_session_metadata(session_id) or {}
    return JSONResponse(
        {"reply": reply.data.content, "turns": meta.get("turnCount"), "servedBy": SERVER}
    )


async def history(request: Request) -> JSONResponse:
    """GET the user's conversation, whichever server wrote it."""
    session_id = request.path_params["session_id"]
    client = await client_for(_user(request))
    try:
        events = await client.get_messages(session_id)
    except SessionNotFoundError:
        return JSONResponse({"error": f"no session {session_id!r}"}, status_code=404)
    roles = {EventType.USER_MESSAGE: "user", EventType.ASSISTANT_MESSAGE: "assistant"}
    messages = [
        {"role": roles[e.type], "content": e.data.get("content", "")}
        for e in events
        if e.type in roles
    ]
    return JSONResponse({"messages": messages, "servedBy": SERVER})


async def error(request: Request, exc: Exception) -> JSONResponse:
    """Errors of the library as JSON with their type, never a stack trace."""
    status = 404 if isinstance(exc, SessionNotFoundError) else 400
    return JSONResponse({"error": str(exc), "type": type(exc).__name__}, status_code=status)


async def health(request: Request) -> JSONResponse:
    """GET: this server is up (and which one it is)."""
    return JSONResponse({"ok": True, "servedBy": SERVER})


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    for client in list(_clients.values()):
        await client.stop(timeout=10)


app = Starlette(
    routes=[
        Route("/chat/{session_id}", chat, methods=["POST"]),
        Route("/chat/{session_id}", history, methods=["GET"]),
        Route("/health", health),
    ],
    exception_handlers={CopilotError: error},
    lifespan=lifespan,
)

__all__ = ["app"]
