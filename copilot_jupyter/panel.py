"""The session panel: the point-and-click face of the sessions the magics use.

Example::

    from copilot_jupyter.panel import SessionPanel
    SessionPanel()                     # the kernel's shared sessions (what %%copilot uses)
    SessionPanel(client=CopilotClient("~/other-store"))   # a client of your own

:class:`SessionPanel` is a view: every decision is made by its
:class:`~copilot_jupyter.controller.PanelController`, whose traits the view observes and renders.
Children tuples are replaced, never mutated; a button that starts an action is disabled until
the action returns (re-enabled in ``finally``).

Keys: ipywidgets gives Python no key events, so the panel cannot bind Shift+Enter. In the
prompt box Enter and Shift+Enter add a new line (the text area keeps its keys from the notebook,
so Shift+Enter does not re-run the cell); the Send button sends.

Stable CSS classes for tests and custom styles: ``copilot-panel``, ``copilot-picker``,
``copilot-name``, ``copilot-new``, ``copilot-fork``, ``copilot-rename``, ``copilot-delete``,
``copilot-confirm``, ``copilot-confirm-delete``, ``copilot-cancel-delete``, ``copilot-model``,
``copilot-transcript``, ``copilot-history``, ``copilot-live``, ``copilot-compare-toggle``,
``copilot-compare-models``, ``copilot-compare``, ``copilot-compare-column``, ``copilot-prompt``,
``copilot-send``, ``copilot-stop``, ``copilot-status``.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import ipywidgets as w

from copilot import CopilotClient

from .controller import PanelController, describe_session
from .state import CopilotState

__all__ = ["SessionPanel"]

_CSS = """
<style>
.copilot-panel { font-family: var(--jp-ui-font-family, sans-serif); font-size: 13px;
  border: 1px solid var(--jp-border-color2, #ddd); border-radius: 6px; padding: 8px;
  box-sizing: border-box; }
.copilot-panel .cj-title { font-size: 14px; font-weight: 600; }
.copilot-panel .cj-title small { font-weight: 400; color: var(--jp-ui-font-color2, #666); }
.copilot-panel .widget-html-content { line-height: 1.45; }
.copilot-panel .copilot-picker select { font-size: 12px; }
.copilot-panel .copilot-transcript, .copilot-panel .copilot-column-body {
  border: 1px solid var(--jp-border-color2, #ddd); border-radius: 6px;
  background: var(--jp-layout-color0, #fff); }
.copilot-panel .cj-msg { margin: 6px 4px; padding: 6px 10px; border-radius: 8px;
  width: fit-content; max-width: 88%; box-sizing: border-box; overflow-wrap: anywhere; }
.copilot-panel .cj-user { margin-left: auto; background: var(--jp-brand-color3, #dbeafe); }
.copilot-panel .cj-assistant { background: var(--jp-layout-color2, #f1f3f5); }
.copilot-panel .cj-role { font-size: 11px; font-weight: 600; color: var(--jp-ui-font-color2, #555); }
.copilot-panel .cj-typing { font-weight: 400; font-style: italic; }
.copilot-panel .cj-body p { margin: 2px 0 6px; }
.copilot-panel .cj-body p:last-child { margin-bottom: 0; }
.copilot-panel .cj-body pre { background: var(--jp-cell-editor-background, #f7f7f7);
  border: 1px solid var(--jp-border-color2, #ddd); padding: 6px 8px;
  border-radius: 4px; overflow-x: auto; font-size: 12px; line-height: 1.35; margin: 4px 0; }
.copilot-panel .cj-body code { font-family: var(--jp-code-font-family, monospace); }
.copilot-panel .cj-body ul, .copilot-panel .cj-body ol { margin: 2px 0 6px; padding-left: 20px; }
.copilot-panel .cj-meta { font-size: 11px; color: var(--jp-ui-font-color3, #888); margin-top: 2px; }
.copilot-panel .cj-note { text-align: center; font-size: 11px; color: var(--jp-ui-font-color2, #666);
  margin: 6px 0; }
.copilot-panel .cj-error { color: var(--jp-error-color1, #c62828); }
.copilot-panel .cj-empty { color: var(--jp-ui-font-color3, #888); font-style: italic;
  padding: 24px 8px; text-align: center; }
.copilot-panel .cj-cursor { animation: cj-blink 1s steps(2, start) infinite; }
@keyframes cj-blink { to { visibility: hidden; } }
.copilot-panel .cj-status { font-size: 12px; color: var(--jp-ui-font-color2, #555); }
.copilot-panel .cj-status-busy { color: var(--jp-brand-color1, #1565c0); }
.copilot-panel .cj-status-warning { color: var(--jp-warn-color1, #b26a00); }
.copilot-panel .cj-status-error { color: var(--jp-error-color1, #c62828); font-weight: 600; }
.copilot-panel .cj-column-head { font-weight: 600; font-size: 12px; }
.copilot-panel .cj-column-head small { font-weight: 400; color: var(--jp-ui-font-color2, #666); }
.copilot-panel .copilot-confirm { background: var(--jp-error-color3, #fdecea);
  border-radius: 4px; padding: 2px 6px; }
.copilot-panel .copilot-model select { min-width: 0; }
.copilot-panel .copilot-prompt textarea { font-family: var(--jp-ui-font-family, sans-serif); }
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


def _scroll_box(content: tuple[w.Widget, ...], height: str, css: str) -> w.Box:
    """A box that starts scrolled to its newest (lowest) content and stays there as it grows.

    ``column-reverse`` makes the browser anchor the scroll position at the bottom, with no
    JavaScript; the children are given newest first, and a growing spacer keeps short content
    at the top.
    """
    spacer = w.Box(layout=w.Layout(flex="1 1 auto"))
    box = w.Box(
        (spacer, *content),
        layout=w.Layout(
            display="flex",
            flex_flow="column-reverse",
            overflow="hidden auto",
            height=height,
            padding="4px 6px",
            width="100%",
        ),
    )
    box.add_class(css)
    return box


class _Column:
    """One model's column in compare mode: its name, its session's transcript, its status."""

    def __init__(self, session: str) -> None:
        self.session = session
        self.head = w.HTML()
        self.body = w.HTML(layout=w.Layout(width="100%"))
        self.live = w.HTML(layout=w.Layout(width="100%"))
        self.status = w.HTML()
        self.scroll = _scroll_box((self.live, self.body), "340px", "copilot-column-body")
        self.box = w.VBox(
            (self.head, self.scroll, self.status),
            layout=w.Layout(flex="1 1 0", min_width="0", margin="0 4px"),
        )
        self.box.add_class("copilot-compare-column")

    def show(self, data: dict[str, Any]) -> None:
        self.head.value = (
            f'<div class="cj-column-head">{html.escape(data["model"])} '
            f"<small>· {html.escape(data['session'])}</small></div>"
        )
        self.body.value = data["html"]
        self.live.value = data["live"]
        self.status.value = (
            f'<span class="cj-status cj-status-{data["level"]}">'
            f"{html.escape(data['status'])}</span>"
        )

    def close(self) -> None:
        for widget in (*self.scroll.children, self.scroll, self.head, self.status, self.box):
            widget.close()


class SessionPanel(w.VBox):
    """Named sessions in a panel: pick, create, fork, rename, delete; chat; compare models.

    Parameters: ``client`` (default: the client of the kernel's shared state, so the panel and
    ``%%copilot`` see the same open sessions; a client given here gets a state of its own),
    ``state`` (a :class:`CopilotState` to share instead), ``poll_interval`` (seconds between
    reads of the store for other processes' writes) and ``throttle`` (seconds between renders
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
        self._build()
        super().__init__(children=self._layout_children(), **kwargs)
        self.add_class("copilot-panel")
        self.layout.width = "100%"
        c = self.controller
        c.observe(self._show_sessions, ["sessions", "selected"])
        c.observe(self._show_models, ["models", "model", "compare_models"])
        c.observe(self._show_transcript, ["transcript_html", "live_html"])
        c.observe(self._show_status, ["status", "status_level"])
        c.observe(self._show_buttons, ["busy", "selected", "pending_delete", "compare_mode"])
        c.observe(self._show_confirm, ["pending_delete"])
        c.observe(self._show_compare, ["compare_mode", "columns"])
        self._show_all()
        # Count the browser's views of the panel (an ipywidgets feature): with none left (the
        # cell was re-run or cleared) the controller pauses its polling and rendering.
        self._view_count = 0
        self.observe(self._on_view_count, "_view_count")

    # -- building ----------------------------------------------------------------------------

    def _build(self) -> None:
        self.css = w.HTML(_CSS, layout=w.Layout(height="0px", margin="0"))
        self.title = w.HTML('<div class="cj-title">Copilot sessions</div>')

        self.picker = w.Select(options=[], rows=12, layout=w.Layout(width="100%"))
        self.picker.add_class("copilot-picker")
        self.picker.observe(self._on_pick, "value")
        self.name = w.Text(
            placeholder="name for New / Fork / Rename", layout=w.Layout(width="100%")
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
        self.confirm_text = w.HTML(layout=w.Layout(width="100%"))
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
            layout=w.Layout(grid_template_columns="1fr 1fr", width="100%"),
        )
        self.sidebar = w.VBox(
            (self.picker, self.name, buttons, self.confirm),
            layout=w.Layout(
                width="32%", min_width="220px", margin="0 6px 0 0", padding="0 4px 0 0"
            ),
        )

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
            layout=w.Layout(width="auto"),
        )
        self.compare_toggle.add_class("copilot-compare-toggle")
        self.compare_toggle.observe(self._on_compare_toggle, "value")
        self.compare_models = w.TagsInput(
            value=[],
            allow_duplicates=False,
            placeholder="model ids to compare",
            layout=w.Layout(display="none", width="100%"),
        )
        self.compare_models.add_class("copilot-compare-models")
        self.compare_models.observe(self._on_compare_models, "value")
        toolbar = w.HBox(
            (self.model, self.refresh_button, self.compare_toggle),
            layout=w.Layout(align_items="center", width="100%"),
        )

        self.history = w.HTML(layout=w.Layout(width="100%"))
        self.history.add_class("copilot-history")
        self.live = w.HTML(layout=w.Layout(width="100%"))
        self.live.add_class("copilot-live")
        # newest first: the live reply sits below the history
        self.transcript = _scroll_box((self.live, self.history), "380px", "copilot-transcript")
        self.compare = w.HBox(layout=w.Layout(display="none", width="100%"))
        self.compare.add_class("copilot-compare")
        self._columns: list[_Column] = []

        self.prompt = w.Textarea(
            placeholder="Ask something, then press Send (Enter adds a new line)",
            rows=3,
            layout=w.Layout(width="100%"),
        )
        self.prompt.add_class("copilot-prompt")
        self.send_button = _button(
            "Send", "copilot-send", tooltip="Send the prompt", style="primary", icon="paper-plane"
        )
        self.stop_button = _button(
            "Stop", "copilot-stop", tooltip="Stop the reply", style="warning", icon="stop"
        )
        self.send_button.on_click(self._on_send)
        self.stop_button.on_click(self._on_stop)
        self.status = w.HTML(layout=w.Layout(flex="1 1 auto", margin="0 0 0 8px"))
        self.status.add_class("copilot-status")
        actions = w.HBox(
            (self.send_button, self.stop_button, self.status),
            layout=w.Layout(align_items="center"),
        )
        self.main = w.VBox(
            (toolbar, self.compare_models, self.transcript, self.compare, self.prompt, actions),
            layout=w.Layout(flex="1 1 0%", min_width="0", padding="0 6px 0 0"),
        )

    def _layout_children(self) -> tuple[w.Widget, ...]:
        body = w.HBox((self.sidebar, self.main), layout=w.Layout(width="100%"))
        return (self.css, self.title, body)

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
        self._show_status()
        self._show_buttons()
        self._show_confirm()
        self._show_compare()

    def _show_sessions(self, _change: Any = None) -> None:
        c = self.controller
        options = [(describe_session(meta), meta["sessionId"]) for meta in c.sessions]
        with self._quiet():
            if tuple(options) != tuple(self.picker.options):
                self.picker.options = options
            known = {value for _label, value in options}
            self.picker.value = c.selected if c.selected in known else None
        count = len(options)
        self.title.value = (
            f'<div class="cj-title">Copilot sessions <small>· {count} stored'
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
            if list(self.compare_models.value) != list(c.compare_models):
                self.compare_models.value = list(c.compare_models)
            usable = ", ".join(m["id"] for m in c.models if m.get("usable")) or "none"
            self.compare_models.placeholder = f"model ids to compare (usable now: {usable})"

    def _show_transcript(self, _change: Any = None) -> None:
        c = self.controller
        self.history.value = c.transcript_html
        self.live.value = c.live_html

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
        self.transcript.layout.display = "none" if c.compare_mode else "flex"
        self.compare.layout.display = "flex" if c.compare_mode else "none"
        columns = c.columns
        if [col["session"] for col in columns] != [col.session for col in self._columns]:
            old, self._columns = self._columns, [_Column(col["session"]) for col in columns]
            self.compare.children = tuple(col.box for col in self._columns)
            for column in old:
                column.close()
        for column, data in zip(self._columns, columns, strict=True):
            column.show(data)

    # -- callbacks (the kernel's thread) -----------------------------------------------------

    def _on_view_count(self, change: Any) -> None:
        self.controller.set_visible(bool(change["new"]))

    def _act(self, button: w.Button | None, action: Callable[..., Any], *args: Any) -> Any:
        """Run a controller action for a button: disabled meanwhile, errors to the status."""
        if button is not None:
            button.disabled = True
        try:
            return self.controller._try(action, *args)
        finally:
            if button is not None:
                button.disabled = False
            self._show_buttons()

    def _on_pick(self, change: Any) -> None:
        if not self._syncing and change["new"] is not None:
            self._act(None, self.controller.select, change["new"])

    def _on_model(self, change: Any) -> None:
        if not self._syncing and change["new"]:
            self._act(None, self.controller.set_model, change["new"])
            self._show_models()  # back to the session's model if the switch failed

    def _on_new(self, button: w.Button) -> None:
        if self._act(button, self.controller.new_session, self.name.value) is not None:
            self.name.value = ""

    def _named(self, button: w.Button, action: Callable[[str], Any], verb: str) -> None:
        if not self.name.value.strip():
            self.controller._say("error", f"Type a new name in the name box, then press {verb}.")
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

    def _on_compare_models(self, change: Any) -> None:
        if not self._syncing:
            self.controller.compare_models = list(change["new"])

    def _on_send(self, button: w.Button) -> None:
        if self._act(button, self.controller.send, self.prompt.value) is not None:
            self.prompt.value = ""  # sent: the box is ready for the next prompt

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
