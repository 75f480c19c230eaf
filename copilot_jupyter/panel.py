"""The session panel: the point-and-click face of the sessions the magics use.

Example::

    from copilot_jupyter.panel import SessionPanel
    SessionPanel()                     # the kernel's shared sessions (what %%copilot uses)
    SessionPanel(client=CopilotClient("~/other-store"))   # a client of your own

:class:`SessionPanel` is a view: every decision is made by its
:class:`~copilot_jupyter.controller.PanelController`, whose traits the view observes and renders.
Children tuples are replaced, never mutated; a button that starts an action is disabled until
the action returns (re-enabled in ``finally``).

Keys: in the prompt box Enter sends and Shift+Enter adds a line (an anywidget view, see
:mod:`copilot_jupyter.chatview`; the keys stay in the box, so Shift+Enter does not re-run the
cell). The Send button sends too.

Compare mode offers the usable models as checkboxes; other model ids can be typed in the box
beside them, separated by commas or spaces (Enter or leaving the box applies them). Nothing
typed there is added to the Model selector.

Stable CSS classes for tests and custom styles: ``copilot-panel``, ``copilot-picker``,
``copilot-name``, ``copilot-new``, ``copilot-fork``, ``copilot-rename``, ``copilot-delete``,
``copilot-confirm``, ``copilot-confirm-delete``, ``copilot-cancel-delete``, ``copilot-model``,
``copilot-transcript``, ``copilot-history``, ``copilot-live``, ``copilot-compare-toggle``,
``copilot-compare-models``, ``copilot-compare-choice``, ``copilot-compare-other``,
``copilot-compare``, ``copilot-compare-column``, ``copilot-prompt``, ``copilot-send``,
``copilot-stop``, ``copilot-status``, ``copilot-search``, ``copilot-search-summary``,
``copilot-search-results``, ``copilot-search-hit``.

The search box (above the session list) searches every session's prompts and replies when
Enter is pressed or the box is left (``continuous_update=False``: one search per query, not
per keystroke); each hit is a button that opens its session. Emptying the box clears the hits.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import ipywidgets as w

from copilot import CopilotClient
from copilot.events import EventType

from .chatview import ChatLog, PromptBox, SessionList
from .controller import PanelController, parse_model_ids
from .formatting import describe_session
from .state import CopilotState

__all__ = ["SessionPanel"]

_WHO = {EventType.USER_MESSAGE: "you", EventType.ASSISTANT_MESSAGE: "assistant"}

_CSS = """
<style>
.copilot-panel, .copilot-panel * { box-sizing: border-box; }
.copilot-panel { font-family: var(--jp-ui-font-family, sans-serif); font-size: 13px;
  border: 1px solid var(--jp-border-color2, #ddd); border-radius: 6px; padding: 8px;
  max-width: 100%; overflow: hidden; }
.copilot-panel .cj-title { font-size: 14px; font-weight: 600; }
.copilot-panel .cj-title small { font-weight: 400; color: var(--jp-ui-font-color2, #666); }
.copilot-panel .widget-html-content { line-height: 1.45; }
.copilot-panel .cj-status { font-size: 12px; color: var(--jp-ui-font-color2, #555); }
.copilot-panel .cj-status-busy { color: var(--jp-brand-color1, #1565c0); }
.copilot-panel .cj-status-warning { color: var(--jp-warn-color1, #b26a00); }
.copilot-panel .cj-status-error { color: var(--jp-error-color1, #c62828); font-weight: 600; }
.copilot-panel .cj-column-head { font-weight: 600; font-size: 12px; }
.copilot-panel .cj-column-head small { font-weight: 400; color: var(--jp-ui-font-color2, #666); }
.copilot-panel .copilot-confirm { background: var(--jp-error-color3, #fdecea);
  border-radius: 4px; padding: 2px 6px; }
.copilot-panel .copilot-model select { min-width: 0; }
.copilot-panel .copilot-compare-models .widget-checkbox { width: auto; margin-right: 10px; }
.copilot-panel .widget-label-basic { white-space: nowrap; }
.copilot-panel .copilot-search-hit { text-align: left; overflow: hidden;
  text-overflow: ellipsis; white-space: nowrap; font-size: 12px; }
.copilot-panel .cj-search-summary { font-size: 12px; color: var(--jp-ui-font-color2, #555); }
</style>
"""


def _button(
    description: str, css: str, *, tooltip: str, style: str = "", icon: str = ""
) -> w.Button:
    button = w.Button(
        description=description,
        tooltip=tooltip,
        button_style=style,
        icon=icon,
        layout=w.Layout(width="auto", min_width="0", flex="0 0 auto"),
    )
    button.add_class(css)
    return button


class _Column:
    """One model's column in compare mode: its name, its session's transcript, its status."""

    def __init__(self, session: str) -> None:
        self.session = session
        self.head = w.HTML()
        self.chat = ChatLog(height="340px", layout=w.Layout(width="auto"))
        self.status = w.HTML()
        self.box = w.VBox(
            (self.head, self.chat, self.status),
            layout=w.Layout(flex="1 1 0", min_width="0", margin="0 4px"),
        )
        self.box.add_class("copilot-compare-column")

    def show(self, data: dict[str, Any]) -> None:
        self.head.value = (
            f'<div class="cj-column-head">{html.escape(data["model"])} '
            f"<small>· {html.escape(data['session'])}</small></div>"
        )
        self.chat.value = data["html"]
        self.chat.show_live(data["live"])
        self.status.value = (
            f'<span class="cj-status cj-status-{data["level"]}">'
            f"{html.escape(data['status'])}</span>"
        )

    def close(self) -> None:
        for widget in (self.head, self.chat, self.status, self.box):
            widget.close()


class SessionPanel(w.VBox):
    """Named sessions in a panel: pick, create, fork, rename, delete; chat; compare models.

    Parameters: ``client`` (default: the client of the kernel's shared state, so the panel and
    ``%%copilot`` see the same open sessions; a client given here gets a state of its own),
    ``state`` (a :class:`CopilotState` to share instead), ``poll_interval`` (seconds between
    reads of the store for other processes' writes) and ``throttle`` (seconds between updates
    of a streaming reply).
    """

    def __init__(
        self,
        client: CopilotClient | None = None,
        *,
        state: CopilotState | None = None,
        poll_interval: float | None = 1.0,
        throttle: float = 0.1,
        **kwargs: Any,
    ) -> None:
        if state is None and client is not None:
            state = CopilotState(client)
        self.controller = PanelController(state, poll_interval=poll_interval, throttle=throttle)
        # Set while the view itself changes a widget, so the widget's own observer ignores the
        # change. Per thread: the poller may render while the user picks in the kernel thread.
        self._local = threading.local()
        self.css = w.HTML(_CSS, layout=w.Layout(height="0px", margin="0"))
        self.title = w.HTML('<div class="cj-title">Copilot sessions</div>')
        self.sidebar = self._build_sidebar()
        self.main = w.VBox(
            (
                self._build_toolbar(),
                self._build_compare_picker(),
                self._build_chat(),
                self._build_prompt(),
            ),
            layout=w.Layout(flex="1 1 0%", min_width="0"),
        )
        body = w.HBox((self.sidebar, self.main), layout=w.Layout(width="auto"))
        super().__init__(children=(self.css, self.title, body), **kwargs)
        self.add_class("copilot-panel")
        self.layout.width = "auto"
        c = self.controller
        c.observe(self._show_sessions, ["sessions", "selected"])
        c.observe(self._show_models, ["models", "model", "compare_models"])
        c.observe(self._show_transcript, ["transcript_html"])
        c.observe(self._show_live, ["live"])
        c.observe(self._show_status, ["status", "status_level"])
        c.observe(self._show_buttons, ["busy", "selected", "pending_delete", "compare_mode"])
        c.observe(self._show_confirm, ["pending_delete"])
        c.observe(self._show_compare, ["compare_mode", "columns"])
        c.observe(self._show_search, ["search_hits", "search_summary"])
        c.observe(self._show_tools, ["notebook_tools", "selected"])
        c.observe(self._show_approvals, ["approvals"])
        self._show_tools()
        self._show_all()
        # Count the browser's views of the panel (an ipywidgets feature): with none left (the
        # cell was re-run or cleared) the controller pauses its polling and rendering.
        self._view_count = 0
        self.observe(self._on_view_count, "_view_count")

    # -- building, by area -------------------------------------------------------------------

    def _build_sidebar(self) -> w.VBox:
        """The session list, the name box, New / Fork / Rename / Delete and the confirmation."""
        self.picker = SessionList(height="340px", layout=w.Layout(width="auto"))
        self.picker.add_class("copilot-picker")
        self.picker.observe(self._on_pick, "value")
        self.name = w.Text(
            placeholder="name for New / Fork / Rename", layout=w.Layout(width="auto")
        )
        self.name.add_class("copilot-name")
        self.new_button = _button("New", "copilot-new", tooltip="Create a session", icon="plus")
        self.fork_button = _button(
            "Fork", "copilot-fork", tooltip="Copy this session and its history", icon="code-fork"
        )
        self.rename_button = _button("Rename", "copilot-rename", tooltip="Rename this session")
        self.delete_button = _button(
            "Delete", "copilot-delete", tooltip="Delete this session", icon="trash"
        )
        self.new_button.on_click(self._on_new)
        self.fork_button.on_click(self._on_fork)
        self.rename_button.on_click(self._on_rename)
        self.delete_button.on_click(self._on_delete)
        self.confirm_text = w.HTML(layout=w.Layout(width="auto"))
        self.confirm_delete_button = _button(
            "Delete", "copilot-confirm-delete", tooltip="Delete it for good", style="danger"
        )
        self.cancel_delete_button = _button("Cancel", "copilot-cancel-delete", tooltip="Keep it")
        self.confirm_delete_button.on_click(self._on_confirm_delete)
        self.cancel_delete_button.on_click(lambda _b: self.controller.cancel_delete())
        self.confirm = w.HBox(
            (self.confirm_text, self.confirm_delete_button, self.cancel_delete_button),
            layout=w.Layout(display="none", flex_flow="row wrap", align_items="center"),
        )
        self.confirm.add_class("copilot-confirm")
        buttons = w.GridBox(
            (self.new_button, self.fork_button, self.rename_button, self.delete_button),
            layout=w.Layout(grid_template_columns="1fr 1fr", width="auto"),
        )
        return w.VBox(
            (self._build_search(), self.picker, self.name, buttons, self.confirm),
            layout=w.Layout(width="30%", min_width="210px", margin="0 10px 0 0"),
        )

    def _build_search(self) -> w.VBox:
        """The search box, the summary line and the hits (one button each)."""
        self.search_box = w.Text(
            placeholder='search all sessions: "a phrase", word*, OR, NOT',
            continuous_update=False,
            layout=w.Layout(width="auto"),
        )
        self.search_box.add_class("copilot-search")
        self.search_box.observe(self._on_search, "value")
        self.search_summary = w.HTML(layout=w.Layout(width="auto"))
        self.search_summary.add_class("copilot-search-summary")
        self.search_results = w.VBox(layout=w.Layout(width="auto", max_height="220px"))
        self.search_results.add_class("copilot-search-results")
        self.search_buttons: list[w.Button] = []
        return w.VBox(
            (self.search_box, self.search_summary, self.search_results),
            layout=w.Layout(width="auto", margin="0 0 6px"),
        )

    def _build_toolbar(self) -> w.HBox:
        """The model selector, Refresh and the Compare toggle."""
        self.model = w.Dropdown(
            description="Model", layout=w.Layout(width="auto", flex="1 1 0%", min_width="0")
        )
        self.model.style.description_width = "48px"
        self.model.add_class("copilot-model")
        self.model.observe(self._on_model, "value")
        self.refresh_button = _button(
            "", "copilot-refresh", tooltip="Reload the models and sessions", icon="refresh"
        )
        self.refresh_button.layout.min_width = "36px"
        self.refresh_button.on_click(self._on_refresh)
        self.compare_toggle = w.ToggleButton(
            description="Compare",
            icon="columns",
            tooltip="Send the prompt to 2-3 models",
            layout=w.Layout(width="auto", flex="0 0 auto"),
        )
        self.compare_toggle.add_class("copilot-compare-toggle")
        self.compare_toggle.observe(self._on_compare_toggle, "value")
        return w.HBox(
            (self.model, self.refresh_button, self.compare_toggle, self._build_tools_toggle()),
            layout=w.Layout(align_items="center", width="auto"),
        )

    def _build_tools_toggle(self) -> w.ToggleButton:
        """The "Notebook tools" toggle of the shown session (and the approvals box)."""
        self.tools_toggle = w.ToggleButton(
            description="Notebook tools",
            icon="wrench",
            tooltip="Let the model look at this kernel's variables and cells (this kernel only)",
            layout=w.Layout(width="auto", flex="0 0 auto"),
        )
        self.tools_toggle.add_class("copilot-tools-toggle")
        self.tools_toggle.observe(self._on_tools_toggle, "value")
        self.approvals = w.VBox(layout=w.Layout(width="auto"))
        self.approvals.add_class("copilot-approvals")
        return self.tools_toggle

    def _show_tools(self, _change: Any = None) -> None:
        c = self.controller
        with self._quiet():
            self.tools_toggle.value = c.notebook_tools
        self.tools_toggle.disabled = c.selected is None

    def _show_approvals(self, _change: Any = None) -> None:
        self.approvals.children = tuple(a.widget for a in self.controller.approvals)

    def _on_tools_toggle(self, change: Any) -> None:
        if self._syncing:
            return
        self.controller.try_action(self.controller.set_notebook_tools, bool(change["new"]))
        self._show_tools()

    def _build_compare_picker(self) -> w.Box:
        """Compare mode's models: a checkbox per usable model, and a box for other ids."""
        self.compare_label = w.HTML("<b>Compare</b>&nbsp;", layout=w.Layout(flex="0 0 auto"))
        self.compare_choices = w.HBox(layout=w.Layout(flex_flow="row wrap", width="auto"))
        self.compare_checkboxes: dict[str, w.Checkbox] = {}
        self.compare_other = w.Text(
            placeholder="other model ids, comma-separated",
            continuous_update=False,
            layout=w.Layout(flex="1 1 12em", min_width="10em", width="auto"),
        )
        self.compare_other.add_class("copilot-compare-other")
        self.compare_other.observe(self._on_compare_other, "value")
        self.compare_models = w.HBox(
            (self.compare_label, self.compare_choices, self.compare_other),
            layout=w.Layout(
                display="none", flex_flow="row wrap", align_items="center", width="auto"
            ),
        )
        self.compare_models.add_class("copilot-compare-models")
        return self.compare_models

    def _build_chat(self) -> w.Box:
        """The transcript of the shown session, or the compare columns."""
        self.chat = ChatLog(height="380px", layout=w.Layout(width="auto"))
        self.chat.add_class("copilot-transcript")
        self.compare = w.HBox(layout=w.Layout(display="none", width="auto"))
        self.compare.add_class("copilot-compare")
        self._columns: list[_Column] = []
        return w.VBox((self.chat, self.compare, self.approvals), layout=w.Layout(width="auto"))

    def _build_prompt(self) -> w.VBox:
        """The prompt box (Enter sends), Send, Stop and the status line."""
        self.prompt = PromptBox(
            placeholder="Ask something; Enter sends, Shift+Enter adds a line",
            layout=w.Layout(width="auto", margin="6px 0 4px"),
        )
        self.prompt.add_class("copilot-prompt")
        self.prompt.on_submit(self._on_submit)
        self.send_button = _button(
            "Send", "copilot-send", tooltip="Send the prompt", style="primary", icon="paper-plane"
        )
        self.stop_button = _button(
            "Stop", "copilot-stop", tooltip="Stop the reply", style="warning", icon="stop"
        )
        self.send_button.on_click(self._on_send)
        self.stop_button.on_click(self._on_stop)
        # attach files to the next prompt (images for models that see, text inline)
        self.upload = w.FileUpload(
            multiple=True,
            description="Attach",
            # never shrunk below its text (icon, label and count): the row shrinks the status
            layout=w.Layout(width="auto", flex="0 0 auto"),
        )
        self.upload.add_class("copilot-attach")
        self.upload.observe(self._on_upload, "value")
        self.status = w.HTML(layout=w.Layout(flex="1 1 auto", margin="0 0 0 8px", min_width="0"))
        self.status.add_class("copilot-status")
        actions = w.HBox(
            (self.send_button, self.stop_button, self.upload, self.status),
            layout=w.Layout(align_items="center", width="auto"),
        )
        return w.VBox((self.prompt, actions), layout=w.Layout(width="auto"))

    # -- rendering (may run on any thread: only sets widget values) --------------------------

    @property
    def _syncing(self) -> bool:
        return getattr(self._local, "syncing", False)

    @contextmanager
    def _quiet(self) -> Iterator[None]:
        self._local.syncing = True
        try:
            yield
        finally:
            self._local.syncing = False

    def _show_all(self) -> None:
        self._show_sessions()
        self._show_models()
        self._show_transcript()
        self._show_live()
        self._show_status()
        self._show_buttons()
        self._show_confirm()
        self._show_compare()
        self._show_search()

    def _show_sessions(self, _change: Any = None) -> None:
        c = self.controller
        items = [{"id": meta["sessionId"], **describe_session(meta)} for meta in c.sessions]
        with self._quiet():
            if items != list(self.picker.items):
                self.picker.items = items
            known = {item["id"] for item in items}
            self.picker.value = c.selected if c.selected in known else None
        self.title.value = (
            f'<div class="cj-title">Copilot sessions <small>· {len(items)} stored'
            + (f" · showing <b>{html.escape(c.selected)}</b>" if c.selected else "")
            + "</small></div>"
        )

    def _show_models(self, _change: Any = None) -> None:
        c = self.controller
        with self._quiet():
            options = c.model_options()
            if tuple(options) != tuple(self.model.options):
                self.model.options = options
            if c.model in {value for _label, value in options}:
                self.model.value = c.model
            choices = c.compare_choices()
            if list(self.compare_checkboxes) != choices:
                self._rebuild_choices(choices)
            for model, box in self.compare_checkboxes.items():
                box.value = model in c.compare_models
            self.compare_other.value = ", ".join(m for m in c.compare_models if m not in choices)

    def _rebuild_choices(self, choices: list[str]) -> None:
        old = list(self.compare_checkboxes.values())
        self.compare_checkboxes = {}
        for model in choices:
            box = w.Checkbox(
                description=model, indent=False, layout=w.Layout(width="auto", flex="0 0 auto")
            )
            box.add_class("copilot-compare-choice")
            box.observe(self._on_compare_choice(model), "value")
            self.compare_checkboxes[model] = box
        self.compare_choices.children = tuple(self.compare_checkboxes.values())
        for box in old:
            box.close()

    def _show_transcript(self, _change: Any = None) -> None:
        self.chat.value = self.controller.transcript_html

    def _show_live(self, _change: Any = None) -> None:
        self.chat.show_live(self.controller.live)

    def _show_status(self, _change: Any = None) -> None:
        c = self.controller
        text = html.escape(c.status)
        self.status.value = f'<span class="cj-status cj-status-{c.status_level}">{text}</span>'

    def _show_buttons(self, _change: Any = None) -> None:
        c = self.controller
        has_session = c.selected is not None
        self.send_button.disabled = c.busy
        self.stop_button.disabled = not c.busy
        self.model.disabled = c.busy
        self.delete_button.disabled = not has_session or c.pending_delete is not None
        self.fork_button.disabled = not has_session
        self.rename_button.disabled = not has_session or c.busy
        self.new_button.disabled = False

    def _show_confirm(self, _change: Any = None) -> None:
        target = self.controller.pending_delete
        if target is None:
            self.confirm.layout.display = "none"
            return
        self.confirm_text.value = f"Delete <b>{html.escape(target)}</b> and all its history?&nbsp;"
        self.confirm.layout.display = "flex"

    def _show_compare(self, _change: Any = None) -> None:
        c = self.controller
        with self._quiet():
            self.compare_toggle.value = c.compare_mode
        self.compare_models.layout.display = "flex" if c.compare_mode else "none"
        self.chat.layout.display = "none" if c.compare_mode else ""
        self.compare.layout.display = "flex" if c.compare_mode else "none"
        columns = c.columns
        if [col["session"] for col in columns] != [col.session for col in self._columns]:
            old, self._columns = self._columns, [_Column(col["session"]) for col in columns]
            self.compare.children = tuple(col.box for col in self._columns)
            for column in old:
                column.close()
        for column, data in zip(self._columns, columns, strict=True):
            column.show(data)

    def _show_search(self, _change: Any = None) -> None:
        c = self.controller
        summary = html.escape(c.search_summary)
        self.search_summary.value = f'<span class="cj-search-summary">{summary}</span>'
        old, self.search_buttons = self.search_buttons, []
        for index, hit in enumerate(c.search_hits):
            who = _WHO.get(hit["type"], "aborted")
            text = f"{hit['sessionId']} · {who}: {hit['snippet']}"
            if hit.get("replaced"):
                text += " (replaced)"
            button = w.Button(
                description=text,
                tooltip=f"Open {hit['sessionId']} ({hit['timestamp'][:16].replace('T', ' ')})",
                layout=w.Layout(width="auto", min_height="26px"),
            )
            button.add_class("copilot-search-hit")
            button.on_click(self._on_hit(index))
            self.search_buttons.append(button)
        self.search_results.children = tuple(self.search_buttons)
        for button in old:
            button.close()

    # -- callbacks (the kernel's thread) -----------------------------------------------------

    def _on_view_count(self, change: Any) -> None:
        self.controller.set_visible(bool(change["new"]))

    def _act(self, button: w.Button | None, action: Callable[..., Any], *args: Any) -> Any:
        """Run a controller action for a button: disabled meanwhile, errors to the status."""
        if button is not None:
            button.disabled = True
        try:
            return self.controller.try_action(action, *args)
        finally:
            if button is not None:
                button.disabled = False
            self._show_buttons()

    def _on_pick(self, change: Any) -> None:
        if not self._syncing and change["new"] is not None:
            self._act(None, self.controller.select, change["new"])

    def _on_search(self, change: Any) -> None:
        self._act(None, self.controller.search, change["new"])

    def _on_hit(self, index: int) -> Callable[[w.Button], None]:
        def opened(button: w.Button) -> None:
            self._act(button, self.controller.open_hit, index)

        return opened

    def _on_model(self, change: Any) -> None:
        if not self._syncing and change["new"]:
            self._act(None, self.controller.set_model, change["new"])
            self._show_models()  # back to the session's model if the switch failed

    def _on_new(self, button: w.Button) -> None:
        if self._act(button, self.controller.new_session, self.name.value) is not None:
            self.name.value = ""

    def _named(self, button: w.Button, action: Callable[[str], Any], verb: str) -> None:
        if not self.name.value.strip():
            self.controller.say("error", f"Type a new name in the name box, then press {verb}.")
            return
        self._act(button, action, self.name.value)
        if self.controller.status_level != "error":
            self.name.value = ""

    def _on_fork(self, button: w.Button) -> None:
        self._named(button, self.controller.fork, "Fork")

    def _on_rename(self, button: w.Button) -> None:
        self._named(button, self.controller.rename, "Rename")

    def _on_delete(self, button: w.Button) -> None:
        self._act(button, self.controller.request_delete)

    def _on_confirm_delete(self, button: w.Button) -> None:
        self._act(button, self.controller.confirm_delete)

    def _on_refresh(self, button: w.Button) -> None:
        def refresh() -> None:
            self.controller.refresh_models()
            self.controller.refresh_sessions()

        self._act(button, refresh)

    def _on_compare_toggle(self, change: Any) -> None:
        if not self._syncing:
            self._act(None, self.controller.set_compare_mode, change["new"])

    def _on_compare_choice(self, model: str) -> Callable[[Any], None]:
        def toggled(change: Any) -> None:
            if not self._syncing:
                self.controller.toggle_compare_model(model, bool(change["new"]))

        return toggled

    def _on_compare_other(self, change: Any) -> None:
        if self._syncing:
            return
        ticked = [m for m, box in self.compare_checkboxes.items() if box.value]
        typed = parse_model_ids(change["new"])
        self._act(None, self.controller.set_compare_models, [*ticked, *typed])

    def _send_prompt(self, button: w.Button | None) -> None:
        sent = self._act(button, self.controller.send, self.prompt.value)
        if sent:  # sent: the box is ready for the next prompt
            self.prompt.clear()

    def _on_send(self, button: w.Button) -> None:
        self._send_prompt(button)

    def _on_submit(self, _box: PromptBox) -> None:
        if self.controller.busy:  # what the disabled Send button says
            self.controller.say(
                "warning", "A reply is still coming: wait for it (or press Stop), then Enter."
            )
            return
        self._send_prompt(None)

    def _on_upload(self, change: Any) -> None:
        """Files chosen in Attach: each is checked and attached to the next prompt; the
        widget is emptied so the same file can be chosen again."""
        files = change["new"]
        if not files:
            return
        for file in files:
            self._act(
                None,
                self.controller.attach,
                file["name"],
                bytes(file["content"]),
                file.get("type", ""),
            )
        self.upload.value = ()

    def _on_stop(self, button: w.Button) -> None:
        self._act(button, self.controller.stop)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the panel's polling and event handlers, then close its widgets."""
        self.controller.close()
        for widget in self._descendants():
            widget.close()
        super().close()

    def _descendants(self) -> list[w.Widget]:
        found: list[w.Widget] = []
        stack = list(self.children)
        while stack:
            widget = stack.pop()
            found.append(widget)
            stack.extend(getattr(widget, "children", ()))
        return found
