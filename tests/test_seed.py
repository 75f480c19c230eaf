"""The seed document, run verbatim: every code block, in order, as a reader runs them.

The blocks come from tests/seed/session-management.md, a copy of the project's seed
(../shared/seed/session-management.md); tests/seed/test_seed_copy.py checks the copy is
current, and is collected only where the original is (the development setup). Model names the seed uses (gpt-4.1, claude-sonnet-4.5) have no provider here (no
API keys), so the echo model serves them as the configured fallback, which is what a user
without keys sees too.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from copilot import CopilotClient, EventType

SEED = Path(__file__).parent / "seed" / "session-management.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def seed_blocks() -> list[str]:
    return BLOCK.findall(SEED.read_text(encoding="utf-8"))


def test_seed_has_the_blocks_these_tests_expect():
    blocks = seed_blocks()
    assert len(blocks) == 8
    assert "session1 = client.create_session" in blocks[0]
    assert "resume_session" in blocks[5]


def run_block(block: str, namespace: dict) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "<seed>", "exec"), namespace)  # running the seed is the test
    return out.getvalue()


def user_prompts(client: CopilotClient, session_id: str) -> list[str]:
    session = client.resume_session(session_id)
    return [e.data.content for e in session.get_messages() if e.type == EventType.USER_MESSAGE]


def test_every_seed_block_runs_verbatim_in_order(monkeypatch, tmp_path):
    monkeypatch.setenv("COPILOT_JUPYTER_HOME", str(tmp_path))
    monkeypatch.setenv("COPILOT_JUPYTER_FALLBACK_MODEL", "echo")
    blocks = seed_blocks()
    ns: dict = {}

    # Multiple Sessions: three independent conversations, each follow-up in its own context.
    run_block(blocks[0], ns)
    client = ns["client"]
    echo = client._core.provider("echo")  # the stopped client's provider kept its history
    contexts = {}
    for request in echo.requests:
        contexts[request.messages[-1].content] = [m.content for m in request.messages]
    assert contexts["How do I create a virtual environment?"] == [
        "You are helping with a Python project",
        "echo: You are helping with a Python project",
        "How do I create a virtual environment?",
    ]
    assert contexts["How do I set up tsconfig?"][0] == "You are helping with a TypeScript project"
    assert contexts["How do I initialize a module?"][0] == "You are helping with a Go project"
    assert all(len(c) == 3 for k, c in contexts.items() if k.startswith("How"))
    # send, send, destroy: destroy let the queued turns finish, so every prompt has its reply.
    checker = CopilotClient()
    sessions = checker.list_sessions()
    assert len(sessions) == 3
    assert sorted(s["model"] for s in sessions) == ["claude-sonnet-4.5", "gpt-4.1", "gpt-4.1"]
    for info in sessions:
        events = checker.resume_session(info["sessionId"]).get_messages()
        replies = [e for e in events if e.type == EventType.ASSISTANT_MESSAGE]
        assert len(replies) == 2 and all(r.data.model == "echo" for r in replies)
        assert info["messageCount"] == 4

    # Custom Session IDs: the block reuses the client that block 1 stopped.
    assert run_block(blocks[1], ns) == "user-123-chat\n"

    # Listing Sessions
    listed = run_block(blocks[2], ns).splitlines()
    assert len(listed) == 4 and "Session: user-123-chat" in listed

    # Deleting Sessions
    run_block(blocks[3], ns)
    assert checker.get_session_metadata("user-123-chat") is None
    assert "user-123-chat" not in [s["sessionId"] for s in checker.list_sessions()]

    # Creating a Persistent Session
    assert run_block(blocks[4], ns) == "user-123-conversation\n"
    assert user_prompts(checker, "user-123-conversation") == ["Let's discuss TypeScript generics"]

    # Resuming a Session: a new client, previous context restored.
    run_block(blocks[5], ns)
    last = ns["client"]._core.provider("echo").requests[-1]
    assert [m.content for m in last.messages] == [
        "Let's discuss TypeScript generics",
        "echo: Let's discuss TypeScript generics",
        "What were we discussing?",
    ]

    # Getting Session History: works on the destroyed session object; its data is on disk.
    history = run_block(blocks[6], ns).splitlines()
    assert history[0].startswith("[session.start] {")
    assert "[user.message] {'content': 'What were we discussing?'}" in history
    assert any(line.startswith("[assistant.message] {") for line in history)

    # Deleting Permanently
    run_block(blocks[7], ns)
    assert checker.get_session_metadata("user-123-conversation") is None
    checker.stop()


RESUME_CHILD = textwrap.dedent(
    """
    import json, re, sys
    from copilot import CopilotClient
    blocks = re.findall(r"```python\\n(.*?)```", open(sys.argv[1]).read(), re.S)
    ns = {"CopilotClient": CopilotClient}  # imported by the page's earlier block
    exec(blocks[int(sys.argv[2])], ns)
    if sys.argv[2] == "5":
        request = ns["client"]._core.provider("echo").requests[-1]
        print(json.dumps([m.content for m in request.messages]))
    """
)


def test_persistence_blocks_across_process_restarts(tmp_path):
    """Create in one process, resume in another: the context comes back from disk."""
    env = {
        **os.environ,
        "COPILOT_JUPYTER_HOME": str(tmp_path),
        "COPILOT_JUPYTER_FALLBACK_MODEL": "echo",
    }

    def run(index: int) -> str:
        done = subprocess.run(
            [sys.executable, "-c", RESUME_CHILD, str(SEED), str(index)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert run(4) == "user-123-conversation\n"
    context = json.loads(run(5))
    assert context == [
        "Let's discuss TypeScript generics",
        "echo: Let's discuss TypeScript generics",
        "What were we discussing?",
    ]
    client = CopilotClient(base_directory=tmp_path)
    assert client.get_session_metadata("user-123-conversation")["messageCount"] == 4
    client.stop()
