"""Worker processes for the multi-process and crash tests, and the parent's handle on them.

A worker is this file run as a script: ``python procs.py <command> <json arguments>``. It opens
its own :class:`copilot.CopilotClient` on the directory it is given (a fresh process's view of
the store) and talks to the parent through lines on stdin/stdout:

- ``TAG <json>`` lines go to the parent (:meth:`Worker.expect` waits for a tag);
- the parent sends JSON lines (``{"op": ...}``) to the ``serve`` command, and a bare ``GO``
  line to commands that wait at a start barrier.

Commands:

``turns``   resume a session, print ``READY``, wait for ``GO``, run ``n`` turns with prompts
            ``p{proc}-{i}`` and print ``RESULT`` with each turn's message id, reply and the
            model context echo was shown.
``serve``   resume a session, print ``READY``, then answer ``{"op": "send", "prompt": ...}``
            (one turn), ``{"op": "loop", "prefix": ..., "n": ...}`` (turns until one fails,
            printing ``TURN i`` after each), ``{"op": "resume"}`` (resume_session again) and
            ``{"op": "quit"}``, each with a ``REPLY`` line.
``stream``  resume a session with a slow echo, print ``DELTA <message id>`` at the first
            streamed piece of the reply, finish the turn and print ``DONE``.
``resume``  wait for ``GO``, resume a session (recovering turns a dead process left open),
            print ``RESUMED``; ``slow_scan`` seconds pause each read of the open turns.
``create``  wait for ``GO``, create a session, print ``CREATED`` saying whether it won.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def _code_root() -> str:
    """The directory the parent imported ``copilot`` from: the workers import the same code."""
    import copilot

    return str(Path(copilot.__file__).resolve().parents[1])


# -- the parent's side -------------------------------------------------------------------------


class Worker:
    """A worker process started by a test; ``expect`` reads its tagged lines with a timeout.

    Subclasses run another worker script (``script``) with other settings (``extra_env``,
    ``expect_timeout``): ``store_workers.Worker``.
    """

    script: Path = Path(__file__).resolve()
    extra_env: dict[str, str] = {"COPILOT_JUPYTER_FALLBACK_MODEL": "echo"}
    expect_timeout: float = 30.0

    def __init__(self, command: str, **args: Any) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_code_root(), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        self.command = command
        self.proc = subprocess.Popen(
            [sys.executable, str(self.script), command, json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env,
        )
        self.pid = self.proc.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def expect(self, tag: str, timeout: float | None = None) -> Any:
        """Wait for the next line tagged ``tag`` and return its JSON payload (None if bare)."""
        timeout = self.expect_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"worker {self.command} (pid {self.pid}) printed no {tag} line within "
                    f"{timeout} s; stderr:\n{self.stderr}"
                )
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(5)
                raise AssertionError(
                    f"worker {self.command} (pid {self.pid}) exited with "
                    f"{self.proc.returncode} before printing {tag}; stderr:\n{self.stderr}"
                )
            head, _, payload = line.partition(" ")
            if head == tag:
                return json.loads(payload) if payload else None

    def write(self, line: str) -> None:
        """Write one line to the worker's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def go(self) -> None:
        """Release the worker from its start barrier."""
        self.write("GO")

    def request(self, timeout: float = 30.0, **op: Any) -> dict[str, Any]:
        """Send one ``serve`` operation and return its ``REPLY``."""
        self.write(json.dumps(op))
        return self.expect("REPLY", timeout)

    def finish(self, timeout: float = 30.0) -> None:
        """Wait for the worker to exit on its own; fail unless it exited cleanly."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"worker {self.command} did not exit in {timeout} s; stderr:\n{self.stderr}"
            ) from None
        assert code == 0, f"worker {self.command} exited with {code}; stderr:\n{self.stderr}"

    def kill(self) -> None:
        """SIGKILL the worker and reap it (a zombie's pid would still look alive)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    send = write
    close = kill  # end the worker if it still runs: no cleanup runs in it


def context_of(request: Any) -> list[list[str]]:
    """An echo request's messages as ``[role, content]`` pairs (JSON-ready)."""
    return [[m.role, m.content] for m in request.messages]


# -- the worker's side -------------------------------------------------------------------------

_out_lock = threading.Lock()


def _emit(tag: str, payload: Any = None) -> None:
    line = tag if payload is None else f"{tag} {json.dumps(payload)}"
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _wait_go() -> None:
    line = sys.stdin.readline()
    if line.strip() != "GO":
        raise SystemExit(f"expected GO, got {line!r}")


def _client(args: dict[str, Any]):
    from copilot import CopilotClient

    providers = {}
    if args.get("chunk_delay"):
        providers["echo"] = {"chunk_delay": float(args["chunk_delay"])}
    client = CopilotClient(base_directory=args["home"], fallback_model="echo", providers=providers)
    client.start()
    return client


def _turn(client: Any, session: Any, prompt: str, timeout: float | None) -> dict[str, Any]:
    echo = client.get_provider("echo")
    try:
        reply = session.send_and_wait(prompt, timeout=timeout)
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__, "message": str(exc)}
    return {
        "ok": True,
        "messageId": reply.data["messageId"],
        "reply": reply.data["content"],
        "context": context_of(echo.requests[-1]),
    }


def cmd_turns(args: dict[str, Any]) -> None:
    client = _client(args)
    session = client.resume_session(args["sid"])
    _emit("READY")
    _wait_go()
    results = []
    for i in range(args["n"]):
        result = _turn(client, session, f"p{args['proc']}-{i}", timeout=60)
        result["prompt"] = f"p{args['proc']}-{i}"
        results.append(result)
    client.stop(timeout=10)
    _emit("RESULT", results)


def cmd_serve(args: dict[str, Any]) -> None:
    client = _client(args)
    session = client.resume_session(args["sid"])
    _emit("READY")
    timeout = args.get("timeout", 20)
    for line in sys.stdin:
        op = json.loads(line)
        if op["op"] == "send":
            _emit("REPLY", _turn(client, session, op["prompt"], timeout))
        elif op["op"] == "loop":
            done = []
            for i in range(op["n"]):
                result = _turn(client, session, f"{op['prefix']}-{i}", timeout)
                if not result["ok"]:
                    _emit("REPLY", {"turns": done, "failure": result})
                    break
                done.append(result["messageId"])
                _emit("TURN", i)
            else:
                _emit("REPLY", {"turns": done, "failure": None})
        elif op["op"] == "resume":
            try:
                session = client.resume_session(args["sid"])
            except Exception as exc:
                _emit("REPLY", {"ok": False, "error": type(exc).__name__, "message": str(exc)})
            else:
                events = session.get_messages()
                _emit("REPLY", {"ok": True, "types": [e.type for e in events]})
        elif op["op"] == "quit":
            started = time.monotonic()
            client.stop(timeout=10)
            _emit("REPLY", {"stopSeconds": time.monotonic() - started})
            return


def cmd_stream(args: dict[str, Any]) -> None:
    client = _client(args)
    session = client.resume_session(args["sid"])
    seen = threading.Event()

    def on_event(event: Any) -> None:
        if event.type == "assistant.message_delta" and not seen.is_set():
            seen.set()
            _emit("DELTA", event.data["messageId"])

    session.on(on_event)
    reply = session.send_and_wait(args["prompt"], timeout=60)
    client.stop(timeout=10)
    _emit("DONE", {"messageId": reply.data["messageId"], "content": reply.data["content"]})


def _slow_scans(delay: float) -> None:
    """Fault injection: the store pauses after every read of a log's open turns (a slow disk,
    or a scheduler that preempts there). Only timing changes, so races become reproducible."""
    from copilot.store import EventStore

    read = EventStore.open_turns

    def slow(self, *args: Any, **kwargs: Any):
        found = read(self, *args, **kwargs)
        time.sleep(delay)
        return found

    # Widen the window between the recovery's read of the open turns and its marking, so that
    # concurrent resumers really race (the test proves the marking happens once anyway).
    EventStore.open_turns = slow  # type: ignore[method-assign]


def cmd_resume(args: dict[str, Any]) -> None:
    if args.get("slow_scan"):
        _slow_scans(float(args["slow_scan"]))
    client = _client(args)
    _emit("READY")
    _wait_go()
    client.resume_session(args["sid"])
    client.stop(timeout=10)
    _emit("RESUMED")


def cmd_create(args: dict[str, Any]) -> None:
    from copilot import SessionExistsError

    client = _client(args)
    _emit("READY")
    _wait_go()
    try:
        client.create_session(args["sid"], model="echo")
        outcome = "created"
    except SessionExistsError:
        outcome = "exists"
    client.stop(timeout=10)
    _emit("CREATED", outcome)


def main(argv: list[str]) -> None:
    command, raw = argv[1], argv[2]
    {
        "turns": cmd_turns,
        "serve": cmd_serve,
        "stream": cmd_stream,
        "resume": cmd_resume,
        "create": cmd_create,
    }[command](json.loads(raw))


if __name__ == "__main__":
    main(sys.argv)
