"""Worker processes for the shared-store tests: ``python store_workers.py <command> <json>``.

Each opens its own store or client (a fresh process's, or another node's, view), prints tagged
lines (``TAG <json>``) for the parent and reads ``GO`` / JSON lines from stdin.

Commands:

``append``  open the store, print ``READY``, wait for ``GO``, append ``n`` batches of two
            events tagged ``{"w": worker, "i": i}``, print ``DONE``.
``hang``    open a client on the store, resume the session, start a slow turn, print
            ``STARTED`` once its ``assistant.turn_start`` is stored, then wait to be killed.
``node``    open a client (its own home directory) on the store and answer JSON lines:
            ``{"op": "send", "prompt": ...}`` resumes the session and runs one turn (``REPLY``
            with the reply and the model's context), ``{"op": "quit"}``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from procs import Worker as ProcsWorker


def open_store(spec: dict[str, Any]) -> Any:
    """The store a test described: ``{"kind": "diskcache", "path": ...}`` or a PostgreSQL URL."""
    if spec["kind"] == "diskcache":
        from copilot.store import EventStore

        return EventStore(spec["path"])
    from copilot.store_postgres import PostgresStore

    return PostgresStore(spec["url"], owner=spec.get("owner", "tester"))


def client_args(spec: dict[str, Any], home: str) -> dict[str, Any]:
    """CopilotClient arguments for the store: diskcache in ``path``'s home, or the URL."""
    if spec["kind"] == "diskcache":
        return {"base_directory": str(Path(spec["path"]).parent)}
    return {"base_directory": home, "store": spec["url"], "owner": spec.get("owner", "tester")}


def _say(tag: str, payload: Any = None) -> None:
    print(tag if payload is None else f"{tag} {json.dumps(payload)}", flush=True)


def _append(args: dict[str, Any]) -> None:
    from copilot.events import Event, EventType

    store = open_store(args["store"])
    _say("READY")
    assert sys.stdin.readline().strip() == "GO"
    for i in range(args["n"]):
        batch = [
            Event(EventType.USER_MESSAGE, {"w": args["worker"], "i": i, "part": 0}),
            Event(EventType.ASSISTANT_MESSAGE, {"w": args["worker"], "i": i, "part": 1}),
        ]
        store.append(args["session"], batch)
    store.close()
    _say("DONE")


def _hang(args: dict[str, Any]) -> None:
    from copilot import CopilotClient
    from copilot.events import EventType

    client = CopilotClient(
        **client_args(args["store"], args["home"]),
        fallback_model="echo",
        providers={"echo": {"chunk_delay": 5.0}},
    )
    session = client.resume_session(args["session"])
    started = threading.Event()
    session.on(lambda e: e.type == EventType.ASSISTANT_TURN_START and started.set())
    session.send(prompt="a turn that never ends")
    started.wait(30)
    _say("STARTED")
    time.sleep(600)


def _node(args: dict[str, Any]) -> None:
    from copilot import CopilotClient
    from copilot.providers.echo import EchoProvider

    echo = EchoProvider()
    client = CopilotClient(**client_args(args["store"], args["home"]), fallback_model="echo")
    client.register_provider("echo", echo)
    _say("READY")
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "quit":
            break
        session = client.resume_session(args["session"])
        reply = session.send_and_wait(prompt=request["prompt"], timeout=60)
        context = [m.content for m in echo.requests[-1].messages if m.role != "system"]
        _say("REPLY", {"content": reply.data.content, "context": context})
    client.stop(timeout=10)
    _say("BYE")


class Worker(ProcsWorker):
    """A worker process of this script; ``expect(tag)`` waits for its next line with that tag
    (the machinery is ``procs.Worker``'s: one implementation of the line protocol)."""

    script = Path(__file__).resolve()
    extra_env: dict[str, str] = {}
    expect_timeout = 60.0


if __name__ == "__main__":
    command, raw = sys.argv[1], json.loads(sys.argv[2])
    {"append": _append, "hang": _hang, "node": _node}[command](raw)
