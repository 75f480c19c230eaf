"""The magics in real IPython kernels, driven through jupyter_client like a notebook front end.

One kernel serves the module (restarted by the restart test). It runs this interpreter
(a kernelspec written to a temporary directory, so an installed "python3" spec pointing at
another Python cannot interfere), on a store in a temporary COPILOT_JUPYTER_HOME whose
config.toml slows the echo model to one word every 50 ms, so replies really stream.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from envvars import scrubbed_environ
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from copilot import EventType

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parent.parent
_TIMEOUT = 30
NOTEBOOK = "work/analysis.ipynb"


@dataclass
class Execution:
    """An execute_request's reply and the iopub messages it caused."""

    reply: dict[str, Any]
    messages: list[dict[str, Any]]

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["msg_type"] in types]

    @property
    def text(self) -> str:
        """Every output as text: streams, text/plain of displays and results, tracebacks."""
        parts = []
        for m in self.messages:
            content = m["content"]
            if m["msg_type"] == "stream":
                parts.append(content["text"])
            elif m["msg_type"] in ("display_data", "update_display_data", "execute_result"):
                parts.append(content["data"].get("text/plain", ""))
            elif m["msg_type"] == "error":
                parts.append("\n".join(content["traceback"]))
        return "\n".join(parts)

    @property
    def stdout(self) -> str:
        return "".join(
            m["content"]["text"] for m in self.of_type("stream") if m["content"]["name"] == "stdout"
        )


class Kernel:
    """A kernel and a blocking client, with notebook-like execution helpers."""

    def __init__(self, manager: KernelManager) -> None:
        self.manager = manager
        self.client = manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=_TIMEOUT)

    def send(self, code: str, cell_id: str | None = None) -> str:
        """Send an execute_request as JupyterLab does (the cell id in the metadata)."""
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        metadata = {"cellId": cell_id} if cell_id else {}
        message = self.client.session.msg("execute_request", content, metadata=metadata)
        self.client.shell_channel.send(message)
        return message["header"]["msg_id"]

    def collect(
        self, msg_id: str, on_message: Callable[[dict[str, Any]], None] | None = None
    ) -> Execution:
        """The iopub messages of ``msg_id`` until the kernel is idle again, and the reply."""
        messages = []
        while True:
            message = self.client.get_iopub_msg(timeout=_TIMEOUT)
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            if on_message is not None:
                on_message(message)
            if message["msg_type"] == "status":
                if message["content"]["execution_state"] == "idle":
                    break
                continue
            messages.append(message)
        while True:
            reply = self.client.get_shell_msg(timeout=_TIMEOUT)
            if reply["parent_header"].get("msg_id") == msg_id:
                return Execution(reply["content"], messages)

    def run(self, code: str, cell_id: str | None = None) -> Execution:
        execution = self.collect(self.send(code, cell_id))
        assert execution.reply["status"] == "ok", execution.text
        return execution

    def json(self, expression: str) -> Any:
        """Evaluate ``expression`` in the kernel and return its value, through JSON."""
        code = f"import json as _json\nprint(_json.dumps({expression}))"
        return json.loads(self.run(code).stdout)

    def restart(self) -> None:
        self.manager.restart_kernel(now=True)
        self.client.wait_for_ready(timeout=_TIMEOUT)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    base = tmp_path_factory.mktemp("kernel")
    home = base / "home"
    home.mkdir()
    (home / "config.toml").write_text("[providers.echo]\nchunk_delay = 0.05\n")
    spec_dir = base / "kernels" / "copilot-test"
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "copilot test", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    # module-scoped: built before the autouse fixture clears the test's environment
    env = {k: v for k, v in scrubbed_environ().items() if not k.startswith("COPILOT_")}
    env.update(
        # what Jupyter Server sets for a notebook's kernel: the notebook's path
        JPY_SESSION_NAME=NOTEBOOK,
        COPILOT_JUPYTER_HOME=str(home),
        COPILOT_JUPYTER_FALLBACK_MODEL="echo",
        COPILOT_JUPYTER_MODEL="echo",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    manager = KernelManager(
        kernel_name="copilot-test",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(base / "kernels")]),
    )
    manager.start_kernel(env=env, cwd=str(base))
    try:
        yield Kernel(manager)
    finally:
        manager.shutdown_kernel(now=True)


@pytest.fixture
def k(kernel: Kernel) -> Kernel:
    """The module's kernel with the extension loaded (again after a restart)."""
    kernel.run("%load_ext copilot_jupyter")
    return kernel


def user_messages(k: Kernel, name: str) -> list[dict[str, Any]]:
    return k.json(
        "[{'id': e.id, **e.data} for e in __import__('copilot_jupyter').get_state()"
        f".open_session({name!r}, create=False).get_messages() if e.type == '{EventType.USER_MESSAGE}']"
    )


def reply_display(execution: Execution) -> tuple[str, list[str]]:
    """The display id of the reply's placeholder and the Markdown of each live update.

    The placeholder starts empty, shows the reply while it streams, and is emptied again
    when the finished reply is shown as a display of its own (:func:`final_reply`).
    """
    first = next(m for m in execution.of_type("display_data") if m["content"]["transient"])
    assert first["content"]["data"] == {"text/plain": ""}
    display_id = first["content"]["transient"]["display_id"]
    updates = [
        m["content"]["data"]
        for m in execution.of_type("update_display_data")
        if m["content"]["transient"]["display_id"] == display_id
    ]
    if updates:
        assert updates[-1] == {"text/plain": ""}  # emptied at the end
    return display_id, [u["text/markdown"] for u in updates[:-1]]


def final_reply(execution: Execution) -> dict[str, Any]:
    """The finished reply: the first display without a display id after the placeholder."""
    displays = execution.of_type("display_data")
    start = next(i for i, m in enumerate(displays) if m["content"]["transient"])
    return next(
        m["content"]["data"] for m in displays[start + 1 :] if not m["content"]["transient"]
    )


def test_sessions_survive_a_kernel_restart(k: Kernel) -> None:
    k.run("topic = 'tides'\nn = 3")
    first = k.run("%%copilot chat\nTell me about {topic}.", cell_id="t1")
    assert final_reply(first)["text/markdown"] == "echo: Tell me about tides."
    second = k.run("%%copilot chat\nGive {n} more facts.", cell_id="t2")
    assert final_reply(second)["text/markdown"] == "echo: Give 3 more facts."

    k.restart()
    assert k.json("'topic' in globals()") is False  # a fresh process
    k.run("%load_ext copilot_jupyter")
    listing = k.run("%copilot list")
    rows = [line.split() for line in listing.text.splitlines()]
    # the notebook's current session is remembered across the restart: marked with *
    assert next(r for r in rows if "chat" in r[:2])[:4] == ["*", "chat", "echo", "2"]

    third = k.run("%%copilot chat\nAnd the third?", cell_id="t3")
    assert final_reply(third)["text/markdown"] == "echo: And the third?"
    context = k.json(
        "[m.content for m in __import__('copilot_jupyter').get_state().client"
        ".get_provider('echo').requests[-1].messages]"
    )
    assert context == [
        "Tell me about tides.",
        "echo: Tell me about tides.",
        "Give 3 more facts.",
        "echo: Give 3 more facts.",
        "And the third?",
    ]
    history = k.run("%copilot history chat").text
    for reply in ("echo: Tell me about tides.", "echo: Give 3 more facts.", "echo: And the third?"):
        assert reply in history


def test_reply_streams_as_updates_of_one_display(k: Kernel) -> None:
    words = " ".join(f"word{i}" for i in range(20))  # 21 deltas, 50 ms apart
    execution = k.run(f"%%copilot stream\n{words}")
    displays = [m for m in execution.of_type("display_data") if m["content"]["transient"]]
    assert len(displays) == 1  # one handle, updated in place
    display_id, updates = reply_display(execution)
    assert all(
        m["content"]["transient"]["display_id"] == display_id
        for m in execution.of_type("update_display_data")
    )
    assert 3 <= len(updates) < 21  # streamed, and throttled below one update per delta
    assert final_reply(execution)["text/markdown"] == f"echo: {words}"
    assert all(f"echo: {words}".startswith(u) for u in updates)
    assert "stream" in execution.text and "tokens" in execution.text  # the footer


def test_rerun_with_same_cell_id_replaces_the_exchange(k: Kernel) -> None:
    k.run("%%copilot rerun\nfirst version", cell_id="cell-x")
    k.run("%%copilot rerun\nin between", cell_id="cell-y")
    k.run("%%copilot rerun\nsecond version", cell_id="cell-x")
    prompts = user_messages(k, "rerun")
    assert [p.get("replaces") for p in prompts] == [None, None, prompts[0]["id"]]
    history = k.run("%copilot history rerun").text
    assert history.count("You:**") == 2
    assert "echo: in between" in history and "echo: second version" in history
    assert "first version" not in history


def test_rerun_after_a_kernel_restart_still_replaces(k: Kernel) -> None:
    """The cell id is stored with the prompt, so the map survives the kernel."""
    k.run("%%copilot rerun-restart\nbefore the restart", cell_id="cell-r")
    k.restart()
    k.run("%load_ext copilot_jupyter")
    k.run("%%copilot rerun-restart\nafter the restart", cell_id="cell-r")
    prompts = user_messages(k, "rerun-restart")
    assert [p["metadata"] for p in prompts] == [{"cellId": "cell-r"}] * 2
    assert prompts[1]["replaces"] == prompts[0]["id"]
    history = k.run("%copilot history rerun-restart").text
    assert "before the restart" not in history and "echo: after the restart" in history


def test_interrupt_aborts_the_turn_and_keeps_the_session_usable(k: Kernel) -> None:
    words = " ".join(f"w{i}" for i in range(200))  # 10 s unless interrupted
    msg_id = k.send(f"%%copilot long\n{words}", cell_id="slow")
    interrupted: list[float] = []

    def interrupt_once_streaming(message: dict[str, Any]) -> None:
        if message["msg_type"] == "update_display_data" and not interrupted:
            interrupted.append(time.monotonic())
            k.manager.interrupt_kernel()

    execution = k.collect(msg_id, interrupt_once_streaming)
    # No wall-time bound: the reply takes 10 s when not interrupted, and the checks below
    # (one abort, its partial shorter than the whole) show the interrupt cut it.
    assert interrupted
    assert execution.reply["status"] == "ok"  # no error, no traceback
    assert not execution.of_type("error")
    assert "aborted" in execution.text and "KeyboardInterrupt" not in execution.text
    aborts = k.json(
        "[e.data['partialContent'] for e in __import__('copilot_jupyter').get_state()"
        f".open_session('long', create=False).get_messages() if e.type == '{EventType.ABORT}']"
    )
    assert len(aborts) == 1 and aborts[0].startswith("echo: w0") and aborts[0] != f"echo: {words}"
    assert final_reply(execution)["text/markdown"] == aborts[0]  # the output keeps the partial

    after = k.run("%%copilot long\nstill there?")
    assert final_reply(after)["text/markdown"] == "echo: still there?"


def test_the_current_session_survives_a_kernel_restart(k: Kernel) -> None:
    """The current session is remembered for the notebook (JPY_SESSION_NAME), not the kernel."""
    k.run("%%copilot remembered\nbefore the restart")
    k.restart()
    k.run("%load_ext copilot_jupyter")
    rows = [line.split() for line in k.run("%copilot list").text.splitlines()]
    assert ["*", "remembered"] in [r[:2] for r in rows]
    bare = k.run("%%copilot\nafter the restart")
    assert "→ session 'remembered': this notebook's current session, remembered" in bare.text
    assert final_reply(bare)["text/markdown"] == "echo: after the restart"
    prompts = [p["content"] for p in user_messages(k, "remembered")]
    assert prompts == ["before the restart", "after the restart"]
    assert k.json("__import__('copilot_jupyter').get_state().notebook") == NOTEBOOK


def test_a_huge_reply_sends_bounded_display_messages(k: Kernel) -> None:
    """A 5 MB echo reply: every live update and the final output stay small."""
    words = " ".join("x" * 100_000 for _ in range(50))  # 5 MB in 50 deltas, 50 ms apart
    execution = k.run(f"%%copilot huge\n{words}")
    reply_size = len(words) + len("echo: ")
    displays = execution.of_type("display_data", "update_display_data")
    sizes = [len(json.dumps(m["content"])) for m in displays]
    updates = execution.of_type("update_display_data")
    # each live update: at most the 20,000-character tail and a one-line header
    assert max(len(json.dumps(m["content"])) for m in updates) < 21_000
    # the finished reply: the first 100,000 characters, and a note that says so
    final = final_reply(execution)
    assert final == {"text/plain": "echo: " + words[: 100_000 - len("echo: ")] + "\n…"}
    assert f"the reply has {reply_size:,} characters; the first 100,000 are shown" in (
        execution.text
    )
    # all display traffic of the cell together is a fraction of one copy of the reply
    assert sum(sizes) < reply_size / 3, (len(displays), sum(sizes))
    stored = k.json(
        "[len(e.data['content']) for e in __import__('copilot_jupyter').get_state()"
        ".open_session('huge', create=False).get_messages()"
        f" if e.type == '{EventType.ASSISTANT_MESSAGE}']"
    )
    assert stored == [reply_size]  # the session log keeps the whole reply
    print(f"5 MB reply: {len(displays)} display messages, {sum(sizes):,} bytes in all")


def test_fix_in_a_kernel_sends_the_traceback_and_fills_the_next_cell(k: Kernel) -> None:
    """A failing cell, then %copilot fix: the request holds the cell's code and traceback, and
    the execute reply carries a set_next_input payload with the reply's code (not run)."""
    from copilot.testing import Reply, ScriptedOpenAIServer, message_text

    fixed = "def mean(xs):\n    return sum(xs) / len(xs) if xs else 0.0\n\nmean([])"
    with ScriptedOpenAIServer() as server:
        server.enqueue(Reply(f"```python\n{fixed}\n```\n\nAn empty list has no mean."))
        k.run(
            "from copilot import CopilotClient\n"
            "from copilot_jupyter.state import CopilotState, reset_state\n"
            "_before = reset_state(CopilotState(CopilotClient(providers={'openai': "
            f"{{'base_url': {server.base_url!r}}}}})))"
        )
        try:
            code = "def mean(xs):\n    return sum(xs) / len(xs)\n\nmean([])"
            failed = k.collect(k.send(code))
            assert failed.reply["status"] == "error"
            assert failed.reply["ename"] == "ZeroDivisionError"
            n = failed.reply["execution_count"]
            fix = k.run("%copilot fix kernel-fix -m gpt-4.1")
            # {Err[n]} and a DataFrame summary in a %%copilot prompt, in the same kernel
            k.run("import pandas as pd\nframe = pd.DataFrame({'x': [1.0, 2.0, 4.0]})")
            k.run(f"%%copilot kernel-fix\nWhy {{Err[{n}]}} with\n{{@frame}}")
        finally:
            k.run("_now = reset_state(_before)\n_now.client.stop(timeout=5)")
    request, follow_up = [r.json for r in server.requests if r.path.endswith("/chat/completions")]
    sent = message_text([m for m in request["messages"] if m["role"] == "user"][-1])
    assert f"The cell:\n```python\n{code}\n```" in sent
    assert f'File "Cell In[{n}]", line 4, in <module>\n    mean([])' in sent
    assert f'File "Cell In[{n}]", line 2, in mean\n    return sum(xs) / len(xs)' in sent
    assert "ZeroDivisionError: division by zero\n```" in sent
    assert "\x1b" not in sent  # the kernel colours its tracebacks; the prompt has none
    assert "\x1b" in "\n".join(failed.reply["traceback"])  # ... and what the user saw is coloured
    payloads = [p for p in fix.reply["payload"] if p["source"] == "set_next_input"]
    assert payloads == [{"source": "set_next_input", "text": fixed, "replace": False}]
    assert "An empty list has no mean." in final_reply(fix)["text/markdown"]
    asked = message_text(follow_up["messages"][-1])
    assert asked.startswith("Why Traceback (most recent call last):\n")
    assert (
        "ZeroDivisionError: division by zero with\npandas.DataFrame: 3 rows x 1 columns\n" in asked
    )
    assert "describe():\n              x\ncount  3.000000\nmean   2.333333" in asked
