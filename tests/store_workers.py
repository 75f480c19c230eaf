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
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


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


class Worker:
    """A worker process; ``expect(tag)`` waits for its next line with that tag."""

    def __init__(self, command: str, **args: Any) -> None:
        import copilot

        root = str(Path(copilot.__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), command, json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.command = command
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr), daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def expect(self, tag: str, timeout: float = 60.0) -> Any:
        """The payload of the next line tagged ``tag`` (None if bare); AssertionError if none."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                self.proc.wait(10)
                raise AssertionError(
                    f"worker {self.command} exited ({self.proc.returncode}) before {tag}:\n"
                    + "".join(self._stderr)
                )
            head, _, payload = line.partition(" ")
            if head == tag:
                return json.loads(payload) if payload else None
        raise AssertionError(f"worker {self.command}: no {tag} line:\n" + "".join(self._stderr))

    def send(self, line: str) -> None:
        """Write one line to the worker's stdin."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL the worker (no cleanup runs in it) and reap it."""
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        """End the worker if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


if __name__ == "__main__":
    command, raw = sys.argv[1], json.loads(sys.argv[2])
    {"append": _append, "hang": _hang, "node": _node}[command](raw)
