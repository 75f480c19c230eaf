"""The session panel without a browser: the controller's traits and the widgets' buttons.

Buttons are pressed with ``.click()``; waits are bounded polls on the traits, since replies
stream in on the client's event thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until

from copilot import CopilotClient, Event, Session
from copilot.events import EventType
from copilot_jupyter import controller as controller_module
from copilot_jupyter.chatview import ChatLog
from copilot_jupyter.controller import PanelController, compare_session_id, parse_model_ids
from copilot_jupyter.feed import LIVE_CHARS, SessionFeed
from copilot_jupyter.formatting import describe_session
from copilot_jupyter.markdown import render_markdown
from copilot_jupyter.panel import SessionPanel
from copilot_jupyter.state import CopilotState, get_state, reset_state
from copilot_jupyter.throttle import Throttle
from copilot_jupyter.transcript import SHOWN_CHARS, Transcript

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("COPILOT_JUPYTER_HOME", str(tmp_path / "home"))
    previous = reset_state(None)
    yield
    state = reset_state(previous)
    if state is not None:
        state.client.stop(timeout=5)


def make_client(home: Path, chunk_delay: float = 0.0) -> CopilotClient:
    return CopilotClient(
        home,
        default_model="echo",
        routes={"echo-b": "echo"},
        providers={"echo": {"chunk_delay": chunk_delay}},
    )


@pytest.fixture
def client(tmp_path: Path) -> Iterator[CopilotClient]:
    c = make_client(tmp_path / "store")
    yield c
    c.stop(timeout=5)


@pytest.fixture
def slow_client(tmp_path: Path) -> Iterator[CopilotClient]:
    c = make_client(tmp_path / "store", chunk_delay=0.05)
    yield c
    c.stop(timeout=5)


def open_panel(client: CopilotClient, **kwargs: Any) -> SessionPanel:
    kwargs.setdefault("poll_interval", 0.1)
    return SessionPanel(client=client, **kwargs)


@pytest.fixture
def panel(client: CopilotClient) -> Iterator[SessionPanel]:
    p = open_panel(client)
    yield p
    p.close()


def send(panel: SessionPanel, prompt: str) -> None:
    panel.prompt.value = prompt
    panel.send_button.click()


def wait_idle(controller: PanelController, timeout: float = 10.0) -> None:
    wait_until(lambda: not controller.busy, timeout, "the panel to be idle")


def new_chat(panel: SessionPanel, name: str, prompt: str | None = None) -> None:
    """Create session ``name`` with the New button; with ``prompt``, send it and wait for the
    reply."""
    panel.name.value = name
    panel.new_button.click()
    if prompt is not None:
        send(panel, prompt)
        wait_idle(panel.controller)


def picker_ids(panel: SessionPanel) -> list[str]:
    return panel.picker.ids


def picker_item(panel: SessionPanel, session_id: str) -> dict[str, str]:
    return next(item for item in panel.picker.items if item["id"] == session_id)


# -- the picker ------------------------------------------------------------------------------


def test_picker_lists_every_stored_session(client: CopilotClient) -> None:
    client.create_session("alpha", model="echo").send_and_wait("What is alpha?")
    client.create_session("beta", model="echo-b")
    p = open_panel(client)
    try:
        assert picker_ids(p) == ["beta", "alpha"]  # most recently used first
        beta, alpha = picker_item(p, "beta"), picker_item(p, "alpha")
        assert beta == {
            "id": "beta",
            "title": "beta",
            "detail": "echo-b · 0 turns · just now",
            "summary": "",
        }
        assert alpha["detail"] == "echo · 1 turn · just now"
        assert alpha["summary"] == "What is alpha?"
        assert [s["sessionId"] for s in p.controller.sessions] == ["beta", "alpha"]
        assert p.controller.selected is None
        assert "No session selected" in p.controller.transcript_html
    finally:
        p.close()


def test_selecting_shows_history_and_sets_current_session(client: CopilotClient) -> None:
    client.create_session("alpha", model="echo").send_and_wait("first question")
    client.create_session("beta", model="echo")
    state = CopilotState(client)
    p = SessionPanel(state=state, poll_interval=None)
    try:
        p.picker.value = "alpha"
        assert p.controller.selected == "alpha"
        assert state.current_session == "alpha"
        assert "first question" in p.chat.value
        assert "echo: first question" in p.chat.value
        assert p.model.value == "echo"
        # %copilot use beta elsewhere in the kernel: the panel follows
        state.current_session = "beta"
        assert p.controller.selected == "beta"
        assert p.picker.value == "beta"
        assert "No messages yet" in p.chat.value
    finally:
        p.close()


def test_default_panel_uses_the_kernel_state(client: CopilotClient) -> None:
    reset_state(CopilotState(client))
    client.create_session("shared", model="echo")
    p = SessionPanel(poll_interval=None)
    try:
        assert p.controller.state is get_state()
        p.picker.value = "shared"
        assert get_state().current_session == "shared"
    finally:
        p.close()
        reset_state(None)


def test_new_creates_and_selects_with_the_chosen_model(panel: SessionPanel) -> None:
    c = panel.controller
    panel.model.value = "echo-b"  # nothing selected: the model New will use
    panel.name.value = "my-chat"
    panel.new_button.click()
    assert c.selected == "my-chat"
    assert picker_ids(panel) == ["my-chat"]
    assert c.client.get_session_metadata("my-chat")["model"] == "echo-b"
    assert panel.name.value == ""
    assert not panel.new_button.disabled  # re-enabled after the action
    # a taken name is refused in plain words, and nothing is created
    panel.name.value = "my-chat"
    panel.new_button.click()
    assert c.status_level == "error" and "exists" in c.status
    # no name: chat-N
    panel.name.value = ""
    panel.new_button.click()
    assert c.selected == "chat-2"
    assert sorted(picker_ids(panel)) == ["chat-2", "my-chat"]


def test_delete_asks_for_confirmation(panel: SessionPanel) -> None:
    c = panel.controller
    for name in ("keep", "doomed"):
        panel.name.value = name
        panel.new_button.click()
    assert c.selected == "doomed"
    panel.delete_button.click()
    assert c.pending_delete == "doomed"
    assert panel.confirm.layout.display == "flex"
    assert "doomed" in panel.confirm_text.value
    assert c.client.get_session_metadata("doomed") is not None  # not yet
    panel.cancel_delete_button.click()
    assert c.pending_delete is None and panel.confirm.layout.display == "none"
    assert c.client.get_session_metadata("doomed") is not None
    panel.delete_button.click()
    panel.confirm_delete_button.click()
    assert c.client.get_session_metadata("doomed") is None
    assert picker_ids(panel) == ["keep"]
    assert c.selected == "keep"  # the next session is shown
    assert c.state.current_session == "keep"
    assert "doomed" not in c.state.sessions
    assert "Deleted" in c.status


def test_fork_copies_history(panel: SessionPanel) -> None:
    c = panel.controller
    new_chat(panel, "origin", "remember me")
    panel.name.value = "copy"
    panel.fork_button.click()
    assert c.status_level != "error", c.status
    assert c.selected == "copy"
    assert sorted(picker_ids(panel)) == ["copy", "origin"]
    assert "remember me" in panel.chat.value
    echo = c.client.get_provider("echo")
    send(panel, "and now?")
    wait_idle(c)
    assert "remember me" in [m.content for m in echo.requests[-1].messages]


def test_rename_moves_the_session_whole_in_one_step(panel: SessionPanel) -> None:
    c = panel.controller
    new_chat(panel, "old-name", "keep this")
    before = c.client.get_session_metadata("old-name")
    panel.name.value = "new-name"
    panel.rename_button.click()
    assert c.status_level != "error", c.status
    assert picker_ids(panel) == ["new-name"]
    assert c.client.get_session_metadata("old-name") is None
    after = c.client.get_session_metadata("new-name")
    # the same session under a new id (a fork would have a new start time and no title)
    assert (after["startTime"], after["messageCount"]) == (before["startTime"], 2)
    assert c.selected == "new-name" and c.state.current_session == "new-name"
    assert "keep this" in panel.chat.value
    # a name that is taken: refused, nothing changes
    new_chat(panel, "taken", "other")
    c.select("new-name")
    panel.name.value = "taken"
    panel.rename_button.click()
    assert c.status_level == "error" and "already exists" in c.status
    assert sorted(picker_ids(panel)) == ["new-name", "taken"] and c.selected == "new-name"


# -- the model -------------------------------------------------------------------------------


def test_model_selector_marks_usable_models(panel: SessionPanel) -> None:
    labels = {value: label for label, value in panel.model.options}
    assert labels["echo"].startswith("✓")
    unusable = [m for m in panel.controller.models if not m["usable"]]
    if unusable:
        model = unusable[0]
        assert labels[model["id"]].startswith("✗")
        assert model["reason"] in labels[model["id"]]


def test_model_change_keeps_the_context(panel: SessionPanel) -> None:
    c = panel.controller
    new_chat(panel, "switch", "my name is Ada")
    panel.model.value = "echo-b"
    assert c.status_level != "error", c.status
    session = c.state.sessions["switch"]
    assert session.model == "echo-b"
    assert c.client.get_session_metadata("switch")["model"] == "echo-b"
    assert "Model changed: echo → echo-b" in panel.chat.value
    send(panel, "what is my name?")
    wait_idle(c)
    messages = [(m.role, m.content) for m in c.client.get_provider("echo").requests[-1].messages]
    assert ("user", "my name is Ada") in messages
    assert ("assistant", "echo: my name is Ada") in messages
    assert messages[-1] == ("user", "what is my name?")


def test_unavailable_model_is_an_error_in_plain_words(panel: SessionPanel) -> None:
    c = panel.controller
    new_chat(panel, "plain")
    unusable = next((m["id"] for m in c.models if not m["usable"]), None)
    if unusable is None:
        pytest.skip("every provider is usable here")
    panel.model.value = unusable
    assert c.status_level == "error"
    assert "not available" in c.status and "Traceback" not in c.status
    assert panel.model.value == "echo"  # the selector shows the model still in use
    assert c.state.sessions["plain"].model == "echo"


# -- sending, streaming, stopping ------------------------------------------------------------


def test_send_streams_without_blocking(slow_client: CopilotClient) -> None:
    p = open_panel(slow_client, throttle=0.2)
    c = p.controller
    lives: list[str] = []
    c.observe(lambda change: lives.append(change["new"].get("text", "")), "live")
    shown = ""  # what the browser's live view holds, rebuilt from the messages it is sent
    appends = 0
    original = ChatLog.send

    def follow(content: dict[str, Any], buffers: Any = None) -> None:
        nonlocal shown, appends
        if content.get("text") is not None:
            appends += bool(content["append"])
            shown = shown + content["text"] if content["append"] else content["text"]
            assert shown == c.live["text"]  # the view shows exactly the feed's live text
        original(p.chat, content, buffers)

    p.chat.send = follow  # type: ignore[method-assign]
    try:
        prompt = "one two three four five six seven eight nine ten " * 2 + "end"
        started = time.monotonic()
        send(p, prompt)
        returned = time.monotonic() - started
        assert returned < 0.5, "Send must return at once"  # the reply takes ~1 s
        assert c.busy and p.send_button.disabled and not p.stop_button.disabled
        assert c.selected == "chat-1"  # a first Send with no session creates one
        assert p.prompt.value == ""
        wait_idle(c)
        assert time.monotonic() - started > returned
        partial = [v for v in lives if "echo: one" in v and "end" not in v]
        assert partial, f"no partial reply was shown: {lives}"
        assert len(lives) < 15, f"22 deltas in ~1 s must be throttled to 0.2 s: {len(lives)}"
        assert f"echo: {prompt}" in p.chat.value
        assert appends >= 2, "a streaming reply must reach the view as appended deltas"
        assert p.chat.live == {} and c.live == {}
        assert not p.send_button.disabled and p.stop_button.disabled
        assert "out tokens" in c.status and " s" in c.status
        # how full the context was, from the turn's assistant.usage (issue 17)
        usage = [e for e in c.events if e.type == EventType.ASSISTANT_USAGE][-1].data
        fill = usage["contextTokens"] * 100 // usage["tokenLimit"]
        assert c.status.endswith(f"context {fill}% of {usage['tokenLimit']:,} tokens"), c.status
        assert [e.type for e in c.events][-4:] == [
            EventType.ASSISTANT_TURN_START,
            EventType.ASSISTANT_MESSAGE,
            EventType.ASSISTANT_USAGE,
            EventType.ASSISTANT_TURN_END,
        ]
    finally:
        p.close()


def test_stop_aborts_the_turn(slow_client: CopilotClient) -> None:
    p = open_panel(slow_client)
    c = p.controller
    try:
        words = " ".join(f"word{i}" for i in range(60))  # ~3 s of streaming
        send(p, words)
        wait_until(lambda: "word1" in c.live.get("text", ""), 5, "some streamed text")
        p.stop_button.click()
        wait_idle(c, timeout=5)
        # No wall-time bound: the reply would end by itself within the 5 s of wait_idle
        # (60 words at 50 ms), so an abort and no assistant.message show that Stop cut it.
        types = [e.type for e in c.events]
        assert EventType.ABORT in types and EventType.ASSISTANT_MESSAGE not in types
        assert "Stopped" in p.chat.value
        abort = next(e for e in c.events if e.type == EventType.ABORT)
        partial = abort.data["partialContent"]
        assert partial.startswith("echo: word0") and "word59" not in partial
        assert f"<p>{partial.strip()}" in p.chat.value  # the partial reply is shown
        assert "Stopped" in c.status
        assert p.stop_button.disabled and not p.send_button.disabled
    finally:
        p.close()


def test_a_failed_turn_shows_the_error(panel: SessionPanel) -> None:
    from copilot import ProviderError

    c = panel.controller
    new_chat(panel, "fails")
    echo = c.client.get_provider("echo")
    echo.enqueue(ProviderError("the model server is down", retryable=False))
    send(panel, "hello?")
    wait_idle(c)
    assert c.status_level == "error"
    assert "the model server is down" in c.status
    assert "the model server is down" in panel.chat.value


def test_compare_two_models_side_by_side(panel: SessionPanel) -> None:
    c = panel.controller
    new_chat(panel, "ab")
    panel.compare_toggle.value = True
    assert c.compare_mode
    assert panel.chat.layout.display == "none" and panel.compare.layout.display == "flex"
    panel.compare_checkboxes["echo"].value = True
    panel.compare_checkboxes["echo-b"].value = True
    assert c.compare_models == ["echo", "echo-b"]
    send(panel, "which is better?")
    assert c.status_level != "error", c.status
    wait_idle(c)
    assert [col["session"] for col in c.columns] == ["ab--echo", "ab--echo-b"]
    assert [col["model"] for col in c.columns] == ["echo", "echo-b"]
    for col in c.columns:
        assert "echo: which is better?" in col["html"]
    assert len(panel.compare.children) == 2
    assert "echo: which is better?" in panel._columns[1].chat.value
    ids = {s["sessionId"] for s in c.client.list_sessions()}
    assert {"ab", "ab--echo", "ab--echo-b"} <= ids
    assert c.client.get_session_metadata("ab--echo-b")["model"] == "echo-b"
    assert c.client.get_session_metadata("ab")["turnCount"] == 0  # the shown session untouched
    # a second comparison continues in the same sessions
    send(panel, "and now?")
    wait_idle(c)
    assert c.client.get_session_metadata("ab--echo")["turnCount"] == 2
    # one model is not a comparison
    c.compare_models = ["echo"]
    send(panel, "again")
    assert c.status_level == "error" and "2 or 3" in c.status
    panel.compare_toggle.value = False
    assert c.columns == [] and panel.chat.layout.display == ""


def test_compare_session_ids_are_valid() -> None:
    assert compare_session_id("chat", "openai:gpt-4.1") == "chat--openai-gpt-4.1"
    assert compare_session_id("chat", "github:openai/gpt-4o") == "chat--github-openai-gpt-4o"
    assert len(compare_session_id("x" * 128, "echo")) <= 128


# -- staying in step -------------------------------------------------------------------------


def test_turns_sent_in_the_same_kernel_show_live(client: CopilotClient) -> None:
    state = CopilotState(client)
    state.open_session("magic", model="echo")
    p = SessionPanel(state=state, poll_interval=None)  # no poller: the event handler does it
    try:
        p.picker.value = "magic"
        # what %%copilot magic does: the same session object from the state
        session = state.open_session("magic")
        session.send_and_wait("sent from a cell")
        wait_until(lambda: "echo: sent from a cell" in p.chat.value, 5, "the cell's turn")
        assert not p.controller.busy
    finally:
        p.close()


def test_another_process_appending_updates_the_panel(client: CopilotClient, tmp_path: Path) -> None:
    client.create_session("shared", model="echo")
    p = open_panel(client)
    c = p.controller
    other = make_client(tmp_path / "store")
    try:
        p.picker.value = "shared"
        elsewhere = other.resume_session("shared")
        elsewhere.send_and_wait("written by another client")
        wait_until(lambda: "echo: written by another client" in p.chat.value, 5, "the other turn")
        wait_until(lambda: c.sessions[0].get("turnCount") == 1, 5, "the new turn count")
        assert picker_item(p, "shared")["detail"].startswith("echo · 1 turn ·")
        other.create_session("brand-new", model="echo")
        wait_until(lambda: "brand-new" in picker_ids(p), 5, "the other client's new session")
        assert c.selected == "shared"
        assert p.picker.value == "shared"
        # each stored event is shown once, in order, whoever wrote it
        seqs = [e.seq for e in c.events]
        assert seqs == sorted(set(seqs)) == list(range(1, len(seqs) + 1))
    finally:
        other.stop(timeout=5)
        p.close()


def test_a_session_deleted_elsewhere_leaves_the_panel(
    client: CopilotClient, tmp_path: Path
) -> None:
    client.create_session("gone", model="echo")
    client.create_session("stays", model="echo")
    p = open_panel(client)
    other = make_client(tmp_path / "store")
    try:
        p.picker.value = "gone"
        other.delete_session("gone")
        wait_until(lambda: picker_ids(p) == ["stays"], 5, "the deletion")
        wait_until(lambda: p.controller.selected is None, 5, "the panel to let go")
        assert "deleted elsewhere" in p.controller.status
        assert "No session selected" in p.chat.value
    finally:
        other.stop(timeout=5)
        p.close()


def test_close_stops_polling_and_handlers(client: CopilotClient) -> None:
    client.create_session("s", model="echo")
    before = {t.name for t in threading.enumerate()}
    assert "copilot-panel-poll" not in before
    p = open_panel(client)
    p.picker.value = "s"
    assert any(t.name == "copilot-panel-poll" for t in threading.enumerate())
    session: Session = p.controller.session
    p.close()
    assert p.controller.closed
    wait_until(
        lambda: not any(t.name == "copilot-panel-poll" for t in threading.enumerate()),
        3,
        "the poller to stop",
    )
    html_before = p.chat.value
    session.send_and_wait("after close")
    assert p.chat.value == html_before  # the panel no longer listens


def test_a_panel_nobody_sees_pauses(client: CopilotClient, tmp_path: Path) -> None:
    client.create_session("shared", model="echo")
    p = open_panel(client)
    other = make_client(tmp_path / "store")
    try:
        p.picker.value = "shared"
        p._view_count = 1  # what the browser reports when it shows the panel
        p._view_count = 0  # ... and when the cell is re-run or cleared
        html_before = p.chat.value
        other.resume_session("shared").send_and_wait("while hidden")
        time.sleep(0.5)  # five poll intervals
        assert p.chat.value == html_before
        p._view_count = 1
        wait_until(lambda: "echo: while hidden" in p.chat.value, 5, "the catch-up")
    finally:
        other.stop(timeout=5)
        p.close()


# -- rendering -------------------------------------------------------------------------------


def test_transcript_escapes_everything_written(panel: SessionPanel) -> None:
    c = panel.controller
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    send(panel, evil)
    wait_idle(c)
    page = panel.chat.value
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "echo: &lt;script&gt;" in page
    # the session list and the status line escape too
    assert "<script" not in panel.title.value and "<script" not in panel.status.value


def test_markdown_rendering_is_safe() -> None:
    out = render_markdown(
        "# Title\n**bold** and `a<b`\n\n```python\nprint('<b>')\n```\n- one\n- two\n\n"
        "[ok](https://example.com) [bad](javascript:alert(1)) ![img](https://example.com/x.png)"
        "\n\n<script>alert(1)</script>"
    )
    assert "<h4>Title</h4>" in out
    assert "<strong>bold</strong>" in out and "<code>a&lt;b</code>" in out
    assert "<pre><code class=\"language-python\">print('&lt;b&gt;')\n</code></pre>" in out
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in out
    assert (
        '<a href="https://example.com" target="_blank" rel="noopener noreferrer nofollow">ok</a>'
        in out
    )
    assert 'href="javascript' not in out and "[bad](javascript:alert(1))" in out
    assert "<img" not in out  # a reply cannot make the browser fetch a URL
    assert "<script" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out


@pytest.mark.parametrize(
    "text",
    [
        "1. one\n2. two\n3. three",
        "1. one\n\n2. two\n\n3. three",  # loose: a blank line between items
        "1. **one**\n   more about one\n\n2. two\n   - a detail\n3. three",  # nested content
    ],
)
def test_numbered_lists_keep_counting(text: str) -> None:
    # issue 18 item 10: items showed as 1., 1., 1. (each item its own <ol>)
    out = render_markdown(text)
    assert out.count("<ol>") == 1 and out.count("</ol>") == 1
    assert out.count("<li>") == 3 + text.count("- a detail")


def test_a_numbered_list_resumes_after_a_code_block() -> None:
    out = render_markdown("1. install\n\n```sh\npip install x\n```\n\n2. run\n3. check")
    assert out.startswith("<ol>\n<li>install</li>\n</ol>\n<pre>")
    assert '<ol start="2">\n<li>run</li>\n<li>check</li>\n</ol>' in out


def test_numbered_lists_in_the_panel(panel: SessionPanel) -> None:
    send(panel, "Steps:\n\n1. first\n\n2. second\n\n3. third")
    wait_idle(panel.controller)
    user = panel.chat.value.split('<div class="cj-msg cj-assistant">')[0]
    assert user.count("<ol>") == 1 and user.count("<li>") == 3


def test_transcript_folds_events() -> None:
    t = Transcript()
    assert t.html("empty") == '<div class="cj-empty">empty</div>'
    changed = t.fold(
        [
            Event(EventType.USER_MESSAGE, {"content": "hi"}, id="m1", seq=1),
            Event(
                EventType.ASSISTANT_MESSAGE,
                {"messageId": "m1", "content": "*yo*", "model": "echo"},
                seq=2,
            ),
            Event(
                EventType.ASSISTANT_USAGE,
                {"messageId": "m1", "inputTokens": 3, "outputTokens": 2, "duration": 1500.0},
                seq=3,
            ),
            Event(EventType.USER_MESSAGE, {"content": "go on"}, id="m2", seq=4),
            Event(
                EventType.ABORT,
                {"messageId": "m2", "partialContent": "half", "reason": "aborted"},
                seq=5,
            ),
            Event(EventType.SESSION_MODEL_CHANGE, {"previousModel": "a", "newModel": "b"}, seq=6),
        ]
    )
    assert [type(e).__name__ for e in changed] == ["Exchange", "Exchange", "Note"]  # each once
    page = t.html()
    assert "<em>yo</em>" in page and "3 in · 2 out tokens · 1.50 s" in page
    assert page.index("half") < page.index("Stopped: aborted.") < page.index("Model changed: a → b")
    assert t.fold([Event(EventType.SESSION_IDLE, {}, seq=7)]) == []
    assert t.fold([Event(EventType.USER_MESSAGE, {"content": "old"}, id="m0", seq=3)]) == []


def test_a_rerun_cell_replaces_its_exchange_in_the_panel(panel: SessionPanel) -> None:
    # A re-run notebook cell sends with ``replaces``: the old exchange must not show twice.
    c = panel.controller
    send(panel, "first version")
    wait_idle(c)
    session = c.session
    first = next(e.id for e in c.events if e.type == EventType.USER_MESSAGE)
    session.send_and_wait("second version", replaces=first)
    wait_until(lambda: "echo: second version" in panel.chat.value, 5, "the re-run")
    assert "first version" not in panel.chat.value
    assert panel.chat.value.count('class="cj-msg cj-user"') == 1


def test_describe_session() -> None:
    summary = "A long first prompt about pantry storage " * 4
    item = describe_session(
        {
            "sessionId": "a",
            "model": "echo",
            "turnCount": 2,
            "modifiedTime": "2000-01-01T00:00:00+00:00",
            "summary": summary,
        }
    )
    assert item == {
        "title": "a",
        "detail": "echo · 2 turns · 2000-01-01",
        "summary": summary.strip(),
    }
    long = describe_session({"sessionId": "b", "turnCount": 1, "summary": "word " * 100})
    assert long["detail"] == "? · 1 turn · never"
    assert len(long["summary"]) == 200 and long["summary"].endswith("…")


def test_the_picker_shows_each_sessions_summary(client: CopilotClient) -> None:
    prompt = "Which three fruits keep best in a cool pantry, and for how long each?"
    client.create_session("pantry", model="echo").send_and_wait(prompt)
    p = open_panel(client)
    try:
        item = picker_item(p, "pantry")
        assert (item["title"], item["summary"]) == ("pantry", prompt)  # whole, not cut at 48
        p.picker.value = "pantry"  # what a click on the card does
        assert p.controller.selected == "pantry"
    finally:
        p.close()


# -- compare mode's models (issue 18 item 1) ---------------------------------------------------


def test_compare_offers_the_usable_models_as_checkboxes(panel: SessionPanel) -> None:
    c = panel.controller
    usable = [m["id"] for m in c.models if m["usable"]]
    assert list(panel.compare_checkboxes) == usable and {"echo", "echo-b"} <= set(usable)
    panel.compare_toggle.value = True
    assert panel.compare_models.layout.display == "flex"
    panel.compare_checkboxes["echo-b"].value = True
    panel.compare_checkboxes["echo"].value = True
    assert c.compare_models == ["echo-b", "echo"]
    panel.compare_checkboxes["echo-b"].value = False
    assert c.compare_models == ["echo"]


def test_compare_takes_ids_typed_with_commas_or_spaces(panel: SessionPanel) -> None:
    c = panel.controller
    options_before = list(panel.model.options)
    panel.compare_toggle.value = True
    # what the browser syncs when the user presses Enter in the box
    panel.compare_other.value = "echo, echo-b"
    assert c.compare_models == ["echo", "echo-b"]
    assert panel.compare_checkboxes["echo"].value and panel.compare_checkboxes["echo-b"].value
    assert panel.compare_other.value == ""  # both are ticked now
    panel.compare_other.value = "openai:not-a-model   echo"
    assert c.compare_models == ["echo", "echo-b", "openai:not-a-model"]
    assert panel.compare_other.value == "openai:not-a-model"
    # never a fake entry in the Model selector
    assert list(panel.model.options) == options_before
    assert not any(label.startswith("•") for label, _ in panel.model.options)
    send(panel, "who wins?")  # two usable models plus one that is not: a clear error
    assert c.status_level == "error" and "not-a-model" in c.status
    panel.compare_other.value = ""
    assert c.compare_models == ["echo", "echo-b"]
    send(panel, "who wins?")
    wait_idle(c)
    assert [col["model"] for col in c.columns] == ["echo", "echo-b"]


def test_parse_model_ids() -> None:
    assert parse_model_ids("echo, local:smollm2") == ["echo", "local:smollm2"]
    assert parse_model_ids(" a  b,c;a ,, ") == ["a", "b", "c"]
    assert parse_model_ids("") == []


# -- Enter sends (issue 18 item 19) ------------------------------------------------------------


def test_enter_in_the_prompt_box_sends(slow_client: CopilotClient) -> None:
    p = open_panel(slow_client)
    c = p.controller
    try:
        # the message the browser sends on Enter (Shift+Enter only adds a line there)
        p.prompt._handle_custom_msg({"event": "submit", "text": "line one\nline two"}, [])
        assert c.selected == "chat-1" and c.busy and p.prompt.value == ""
        # Enter while the reply streams is refused, like the disabled Send button, and the
        # draft is kept
        sent: list[dict[str, Any]] = []
        original = p.prompt.send
        p.prompt.send = lambda content, buffers=None: (sent.append(content), original(content))  # type: ignore[method-assign]
        p.prompt._handle_custom_msg({"event": "submit", "text": "next question"}, [])
        assert c.status_level == "warning" and "still coming" in c.status
        assert p.prompt.value == "next question"
        # the browser emptied its box on Enter: it is told to put the text back
        assert sent == [{"op": "restore", "text": "next question"}]
        wait_idle(c)
        assert "echo: line one" in p.chat.value and "<br />\nline two" in p.chat.value
        p.prompt.submit()
        wait_idle(c)
        assert "echo: next question" in p.chat.value and p.prompt.value == ""
        assert sent[-1] == {"op": "clear"}
        p.prompt.submit("   ")  # nothing typed: said in plain words, nothing sent
        assert c.status_level == "error" and "type a prompt" in c.status.lower()
    finally:
        p.close()


# -- huge replies (issue 18 item 2) ------------------------------------------------------------


def test_a_huge_reply_sends_only_new_text_and_a_bounded_tail(client: CopilotClient) -> None:
    p = open_panel(client, throttle=0.05)
    c = p.controller
    messages: list[dict[str, Any]] = []
    original = ChatLog.send

    def recording_send(content: dict[str, Any], buffers: Any = None) -> None:
        messages.append(content)
        original(p.chat, content, buffers)

    p.chat.send = recording_send  # type: ignore[method-assign]
    reply = "".join(f"w{i:06d} " for i in range(40_000))  # 320,000 characters
    try:
        c.client.get_provider("echo").enqueue(reply)
        send(p, "a long one")
        wait_idle(c, timeout=60)
        live = [m for m in messages if m.get("op") == "live" and not m.get("clear")]
        assert live, "no live update was sent"
        assert max(len(m["text"]) for m in live) <= LIVE_CHARS
        # the live text grows by appends: every live character is sent about once, not
        # once per update (the old view resent the whole reply each time)
        assert p.chat.live_chars_sent <= len(reply) + LIVE_CHARS
        assert len(live) < 400, "40,000 deltas must be coalesced by the throttle"
        assert messages[-1] == {"op": "live", "clear": True}
        # the finished reply is rendered once, cut to a size a browser handles
        page = p.chat.value
        assert "w000000" in page and "w039999" not in page
        assert len(page) < SHOWN_CHARS + 2_000
        assert f"… {len(reply) - SHOWN_CHARS:,} more characters not shown here" in page
        # the whole reply stays in the session
        stored = c.session.get_messages()
        replies = [e for e in stored if e.type == EventType.ASSISTANT_MESSAGE]
        assert replies[-1].data["content"] == reply
    finally:
        p.close()


def test_a_very_large_prompt_asks_for_a_second_send(
    panel: SessionPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(controller_module, "LARGE_PROMPT", 1_000)
    c = panel.controller
    big = "x" * 1_001
    send(panel, big)
    assert c.status_level == "warning" and "1,001 characters" in c.status
    assert "Send again" in c.status and c.selected is None  # nothing sent, nothing created
    assert panel.prompt.value == big  # the prompt is kept
    panel.send_button.click()
    wait_idle(c)
    assert c.selected == "chat-1" and panel.prompt.value == ""
    assert f"echo: {big}" in c.session.get_messages()[-3].data["content"]
    send(panel, "x" * 1_000)  # at the limit: sent at once
    wait_idle(c)
    assert c.client.get_session_metadata("chat-1")["turnCount"] == 2


def test_the_live_view_follows_the_feed() -> None:
    log = ChatLog()
    sent: list[dict[str, Any]] = []
    log.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
    log.show_live({"id": "m1/0", "model": "echo", "text": "Hel", "total": 3})
    log.show_live({"id": "m1/0", "model": "echo", "text": "Hello", "total": 5})
    log.show_live({"id": "m1/0", "model": "echo", "text": "Hello", "total": 5})  # no change
    log.show_live({"id": "m1/1", "model": "echo", "text": "Hi", "total": 2})  # a retry
    tail = "y" * 10
    log.show_live({"id": "m1/1", "model": "echo", "text": tail, "total": 30})  # 28 new > 10 held
    log._handle_custom_msg({"event": "ready"}, [])  # a new view: send all it needs
    log.show_live({})
    log.show_live({})
    assert [(m.get("append"), m.get("text"), m.get("total")) for m in sent] == [
        (False, "Hel", 3),
        (True, "lo", 5),
        (False, "Hi", 2),
        (False, tail, 30),
        (False, tail, 30),
        (None, None, None),
    ]
    assert sent[-1] == {"op": "live", "clear": True}


# -- the throttle ------------------------------------------------------------------------------


def test_throttle_coalesces_and_never_loses_the_last_call() -> None:
    calls: list[float] = []
    throttle = Throttle(0.3, lambda: calls.append(time.monotonic()))
    try:
        throttle()  # outside any window: at once
        assert len(calls) == 1
        for _ in range(50):  # a burst inside the window: one deferred call at its end
            throttle()
        assert len(calls) == 1
        wait_until(lambda: len(calls) == 2, 5, "the deferred call")
        # generous lower bound (the timer may fire late on a loaded machine, never early)
        assert calls[1] - calls[0] >= 0.29
        time.sleep(0.5)
        assert len(calls) == 2  # the burst cost one call
        throttle()  # the window has passed: at once again
        assert len(calls) == 3
        throttle()  # deferred ...
        throttle.close()  # ... and cancelled
        time.sleep(0.5)
        throttle()
        assert len(calls) == 3
    finally:
        throttle.close()


def test_the_feed_ignores_a_late_delta_of_a_finished_turn(client: CopilotClient) -> None:
    session = client.create_session("late", model="echo")
    changes: list[bool] = []
    feed = SessionFeed(session, lambda f, live_only: changes.append(live_only))
    try:
        message_id = session.send("hi")
        feed.expect(message_id)
        wait_until(lambda: not feed.busy, 5, "the turn to end")
        (exchange,) = feed.history.exchanges()
        assert exchange.status == "ok" and exchange.reply == "echo: hi"
        changes.clear()
        # a delta delivered after its turn's outcome (the event thread behind the store)
        feed._on_event(
            Event(
                EventType.ASSISTANT_MESSAGE_DELTA,
                {"messageId": message_id, "deltaContent": "stale", "attempt": exchange.attempt},
            )
        )
        assert exchange.live == "" and feed.live() == {} and changes == []
    finally:
        feed.close()


# -- search ------------------------------------------------------------------------------------


def seed_search(client: CopilotClient) -> None:
    client.create_session("tables", model="echo").send_and_wait("the pivot table is great")
    client.create_session("other", model="echo").send_and_wait("a pivot of tables")


def test_controller_search_lists_hits_and_opens_their_session(client: CopilotClient) -> None:
    from copilot.errors import InvalidArgumentError

    seed_search(client)
    controller = PanelController(CopilotState(client), poll_interval=None)
    try:
        hits = controller.search('  "pivot table"  ')
        assert controller.search_query == '"pivot table"'
        assert controller.search_hits == hits
        assert sorted((h["sessionId"], h["type"]) for h in hits) == [
            ("tables", EventType.ASSISTANT_MESSAGE),
            ("tables", EventType.USER_MESSAGE),
        ]
        assert controller.search_summary == "2 matches"
        assert controller.search("of") and controller.search_summary == "2 matches"
        assert [h["sessionId"] for h in controller.search("pivot NOT table")] == [
            "other",
            "other",
        ]
        assert controller.selected is None
        controller.open_hit(1)
        assert controller.selected == "other" and controller.state.current_session == "other"
        assert "a pivot of tables" in controller.transcript_html
        hits = controller.search("pivot")
        assert {h["sessionId"] for h in hits} == {"tables", "other"}
        for index, hit in enumerate(hits):  # each hit opens its own session
            controller.open_hit(index)
            assert controller.selected == hit["sessionId"]
        for index in (len(hits), -1):
            with pytest.raises(InvalidArgumentError, match=f"no search hit {index}"):
                controller.open_hit(index)
        assert controller.search("excel") == []
        assert controller.search_summary == "No matches for excel"
        with pytest.raises(InvalidArgumentError, match="the quote at position 0"):
            controller.search('"pivot')
        assert controller.search_hits == [] and controller.search_summary == ""
        with pytest.raises(InvalidArgumentError, match="at least one word"):
            controller.search(" -- ")
        controller.search("pivot")
        assert controller.search("   ") == [] and controller.search_hits == []
        assert controller.search_summary == ""
    finally:
        controller.close()


def test_controller_search_says_when_only_the_best_are_shown(client: CopilotClient) -> None:
    session = client.create_session("many", model="echo")
    for i in range(controller_module.SEARCH_LIMIT // 2):
        session.send_and_wait(f"needle {i}")  # a prompt and its echo: two hits each
    controller = PanelController(CopilotState(client), poll_interval=None)
    try:
        assert len(controller.search("needle")) == controller_module.SEARCH_LIMIT
        assert (
            controller.search_summary
            == f"{controller_module.SEARCH_LIMIT} matches (the best shown)"
        )
        assert len(controller.search("needle NOT 0")) == controller_module.SEARCH_LIMIT - 2
        assert controller.search_summary == f"{controller_module.SEARCH_LIMIT - 2} matches"
        assert len(controller.search("needle AND 3")) == 2
    finally:
        controller.close()


def test_the_search_box_lists_hits_and_a_click_opens_the_session(client: CopilotClient) -> None:
    seed_search(client)
    p = open_panel(client)
    try:
        assert p.search_box.continuous_update is False  # one search per query, not per key
        assert p.search_results.children == ()
        p.search_box.value = '"pivot table"'
        labels = sorted(b.description for b in p.search_results.children)
        assert labels == [
            "tables · assistant: echo: the «pivot table» is great",
            "tables · you: the «pivot table» is great",
        ]
        assert "2 matches" in p.search_summary.value
        p.search_box.value = "tables"
        first = p.search_results.children[0]
        assert first.description == "other · you: a pivot of «tables»"
        assert p.search_buttons == list(p.search_results.children)
        first.click()
        assert p.controller.selected == "other" and p.picker.value == "other"
        assert "a pivot of tables" in p.chat.value
        p.search_box.value = "excel"
        assert p.search_results.children == ()
        assert "No matches for excel" in p.search_summary.value
        p.search_box.value = "pivot OR"
        assert p.controller.status_level == "error"
        assert "OR needs a word after it" in p.controller.status
        assert p.search_results.children == () and p.search_summary.value.count(">") == 2
        p.search_box.value = ""
        assert p.search_results.children == ()
    finally:
        p.close()


def test_a_search_hit_of_a_deleted_session_says_so(client: CopilotClient) -> None:
    seed_search(client)
    p = open_panel(client, poll_interval=None)
    try:
        p.search_box.value = "great"
        button = p.search_results.children[0]
        other = make_client(client.home)  # another process's client, same store
        try:
            other.delete_session("tables")
        finally:
            other.stop(timeout=5)
        button.click()
        assert p.controller.status_level == "error" and "tables" in p.controller.status
        assert p.controller.selected is None
        assert button.disabled is False
    finally:
        p.close()


# -- live across machines (LISTEN/NOTIFY) ----------------------------------------------------


def test_a_write_by_another_process_reaches_the_panel_by_notify_not_by_polling(
    postgres_server: Any, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    url = postgres_server.new_database()
    client = CopilotClient(tmp_path / "home", store=url, owner="ann", default_model="echo")
    try:
        client.create_session("shared", model="echo").send_and_wait("hello here")
        # an hour between polls: only a notification can bring the other process's writes
        controller = PanelController(CopilotState(client), poll_interval=3600)
        try:
            assert controller._subscription is not None
            assert controller._poll_interval == 3600
            controller.select("shared")
            polls: list[float] = []
            real_poll = controller.poll
            controller.poll = lambda: (polls.append(time.monotonic()), real_poll())[1]  # type: ignore[method-assign]
            elsewhere = {**os.environ, "COPILOT_JUPYTER_STORE": url, "JUPYTERHUB_USER": "ann"}
            for args in (("send", "shared", "from elsewhere"), ("send", "born", "new one")):
                ran = subprocess.run(
                    [sys.executable, "-m", "copilot", *args, "-m", "echo"],
                    env=elsewhere,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert ran.returncode == 0, ran.stderr
            wait_until(
                lambda: "echo: from elsewhere" in controller.transcript_html,
                30,
                "the other process's turn in the shown session",
            )
            wait_until(
                lambda: "born" in {s["sessionId"] for s in controller.sessions},
                30,
                "the other process's new session in the list",
            )
            assert polls  # woken by the notifications (the timer would wait an hour)
            # another owner's writes are not announced on ann's channel
            count = len(polls)
            subprocess.run(
                [sys.executable, "-m", "copilot", "send", "x", "hi", "-m", "echo"],
                env={**elsewhere, "JUPYTERHUB_USER": "bob"},
                capture_output=True,
                timeout=60,
                check=True,
            )
            time.sleep(1.0)  # generous: a notification arrives in milliseconds
            assert len(polls) == count
        finally:
            controller.close()
        assert controller._subscription is not None
        assert client._core.store._listener._subscribers == []  # unsubscribed on close
    finally:
        client.stop(timeout=5)


def test_a_diskcache_panel_keeps_polling(client: CopilotClient) -> None:
    controller = PanelController(CopilotState(client), poll_interval=0.25)
    try:
        assert controller._subscription is None and controller._poll_interval == 0.25
    finally:
        controller.close()


def test_deleting_or_renaming_a_session_updates_the_search_hits(client: CopilotClient) -> None:
    seed_search(client)
    controller = PanelController(CopilotState(client), poll_interval=None)
    try:
        controller.search("pivot")
        assert {h["sessionId"] for h in controller.search_hits} == {"tables", "other"}
        controller.select("other")
        controller.rename("renamed")
        assert {h["sessionId"] for h in controller.search_hits} == {"tables", "renamed"}
        controller.request_delete("tables")
        controller.confirm_delete()
        assert {h["sessionId"] for h in controller.search_hits} == {"renamed"}
        assert controller.search_summary == "2 matches"
    finally:
        controller.close()


def test_formatting_doctests_run() -> None:
    import doctest

    import copilot_jupyter.formatting

    result = doctest.testmod(copilot_jupyter.formatting)
    assert result.attempted >= 2 and result.failed == 0
