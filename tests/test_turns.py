"""A turn's context: re-runs replace, and the context is exactly the log before the prompt,
however other writers interleave."""

from __future__ import annotations

import threading

from copilot import EventType
from copilot.providers.echo import EchoProvider


def _sent(request) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in request.json["messages"]]


def test_repeated_re_runs_of_a_cell_leave_one_exchange(make_client, openai_server, monkeypatch):
    # The context the model server receives, over the real OpenAI provider: a cell re-run
    # four times (each run replacing the one before) is in it once, its newest run.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-reruns")
    server = openai_server
    client = make_client(providers={"openai": {"base_url": server.base_url}})
    session = client.create_session(model="openai:gpt-4o")
    cell = session.send_and_wait(prompt="cell run 1").data.messageId
    session.send_and_wait(prompt="other cell")
    for run in (2, 3, 4):
        cell = session.send_and_wait(prompt=f"cell run {run}", replaces=cell).data.messageId
        assert _sent(server.chat_requests[-1]) == [
            ("user", "other cell"),
            ("assistant", "echo: other cell"),
            ("user", f"cell run {run}"),
        ]
    session.send_and_wait(prompt="next")
    assert _sent(server.chat_requests[-1]) == [
        ("user", "other cell"),
        ("assistant", "echo: other cell"),
        ("user", "cell run 4"),
        ("assistant", "echo: cell run 4"),
        ("user", "next"),
    ]


class _Interleaving(EchoProvider):
    """An echo model that, while the first turn's context is being built (inside the turn's
    store transaction), makes another client send a prompt to the same session."""

    def __init__(self, other_send) -> None:
        super().__init__()
        self._other_send = other_send
        self.landed = threading.Event()
        self._fired = False

    def count_tokens(self, model: str, text: str) -> int:
        if text == "from a" and not self._fired:
            self._fired = True
            self._other_send()
            # A correct turn holds the store's write lock here, so the other append waits:
            # this wait times out. An append outside the transaction would land meanwhile.
            self.landed.wait(0.5)
        return super().count_tokens(model, text)


def test_another_writer_cannot_slip_between_context_and_prompt(make_client):
    b_client = make_client()
    a_client = make_client()
    a_session = a_client.create_session(session_id="shared", model="echo")
    a_session.send_and_wait(prompt="first")
    b_session = b_client.resume_session("shared")
    provider = _Interleaving(lambda: b_session.send(prompt="from b"))
    b_session.on(lambda e: provider.landed.set() if e.type == EventType.USER_MESSAGE else None)
    a_client.register_provider("echo", provider)
    a_session.send_and_wait(prompt="from a", timeout=30)
    assert provider._fired  # the other client did send while A's context was being built
    b_session.wait(b_session.send(prompt="after"), timeout=30)
    events = a_client.get_messages("shared")
    prompts = [e.data.content for e in events if e.type == EventType.USER_MESSAGE]
    assert prompts == ["first", "from a", "from b", "after"]
    # what A's model saw is exactly the log before A's prompt
    assert [m.content for m in provider.requests[0].messages] == ["first", "echo: first", "from a"]
