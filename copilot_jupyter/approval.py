"""Approve or deny a tool call in the notebook: the permission handler of notebook sessions.

A tool that needs permission (``run_code`` of :func:`copilot_jupyter.tools.notebook_tools`)
reaches the session's ``on_permission_request`` on a worker thread of the client. The handler
is :meth:`ApprovalBroker.handler`: it makes an :class:`Approval` (an ipywidgets box showing the
tool, its code and Approve / Deny buttons), hands it to whoever shows it, and blocks that worker
thread until a button is clicked or ``timeout`` seconds pass; nobody answering in time is a
denial (``"user-not-available"``), which the model is told, and the turn goes on.

Who shows it: a ``%%copilot`` cell waiting for its reply takes the new approvals on its own
thread (:meth:`ApprovalBroker.take_new`, called by :func:`copilot_jupyter.display.stream_turn`
between two looks at the event queue), so the widget lands in that cell's output; while one is
open, the cell lets the kernel handle the click (:func:`poll_ui`: the kernel otherwise runs no
comm message until the cell ends). A panel registers a listener (:meth:`ApprovalBroker.listen`)
and shows the approvals of the turns it sent.
"""

from __future__ import annotations

import contextlib
import html
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import ipywidgets as widgets

from copilot.tools import PermissionRequest, PermissionRequestResult

__all__ = ["DEFAULT_APPROVAL_TIMEOUT", "Approval", "ApprovalBroker", "poll_ui"]

#: seconds an approval waits for a click before the call is denied
DEFAULT_APPROVAL_TIMEOUT = 120.0
#: the most characters of the code (or arguments) the approval widget shows
SHOWN_CODE = 20_000

APPROVED = "approved"
DENIED = "denied-interactively-by-user"
TIMED_OUT = "user-not-available"


def _code_of(request: PermissionRequest) -> str:
    args = request.args
    if isinstance(args, Mapping) and isinstance(args.get("code"), str):
        return args["code"]
    try:
        return json.dumps(args, indent=1, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(args)


class Approval:
    """One tool call waiting for the user's decision, with its widget.

    ``decide`` (the buttons, or a timeout) settles it once; later decisions are ignored.
    """

    def __init__(self, request: PermissionRequest, session_id: str | None = None) -> None:
        self.request = request
        self.session_id = session_id
        self.code = _code_of(request)
        self.result: PermissionRequestResult | None = None
        #: set once a cell or a panel shows the widget
        self.shown = threading.Event()
        self._on_settled: list[Callable[[Approval], None]] = []
        self._settled = threading.Event()
        self._lock = threading.Lock()
        shown = self.code
        if len(shown) > SHOWN_CODE:
            shown = shown[:SHOWN_CODE] + f"\n… ({len(self.code):,} characters in all)"
        title = (
            f"<b>{html.escape(request.tool_name)}</b> wants to run this"
            + (f" (session {html.escape(session_id)})" if session_id else "")
            + ":"
        )
        self.approve_button = widgets.Button(
            description="Approve", button_style="success", icon="check"
        )
        self.deny_button = widgets.Button(description="Deny", button_style="danger", icon="times")
        self.status = widgets.HTML("")
        self.approve_button.on_click(lambda _: self.decide(APPROVED))
        self.deny_button.on_click(lambda _: self.decide(DENIED))
        self.widget = widgets.VBox(
            [
                widgets.HTML(title),
                widgets.HTML(
                    f"<pre style='max-height: 20em; overflow: auto'>{html.escape(shown)}</pre>"
                ),
                widgets.HBox([self.approve_button, self.deny_button, self.status]),
            ]
        )
        self.widget.add_class("cj-approval")

    @property
    def settled(self) -> bool:
        """A decision was taken (a click or the timeout)."""
        return self._settled.is_set()

    def decide(self, kind: str, feedback: str | None = None) -> bool:
        """Settle with ``kind`` (approved, or a denial); False if it was settled already."""
        with self._lock:
            if self._settled.is_set():
                return False
            self.result = PermissionRequestResult(kind, feedback)
            self._settled.set()
        self.approve_button.disabled = self.deny_button.disabled = True
        words = {APPROVED: "✔ approved", DENIED: "✘ denied"}
        self.status.value = html.escape(words.get(kind, f"✘ denied: {feedback or kind}"))
        for callback in self._on_settled:
            try:
                callback(self)
            except Exception:  # a broken listener must not undo the decision
                pass
        return True

    def on_settled(self, callback: Callable[[Approval], None]) -> None:
        """Call ``callback(approval)`` once it is decided (on the deciding thread)."""
        self._on_settled.append(callback)

    def wait(self, timeout: float | None) -> PermissionRequestResult:
        """Block until decided; after ``timeout`` seconds, deny (nobody answered)."""
        if not self._settled.wait(timeout):
            self.decide(TIMED_OUT, f"nobody approved the call within {timeout:g} s")
        assert self.result is not None
        return self.result


class ApprovalBroker:
    """The permission handler of notebook sessions and the queue of approvals to show."""

    def __init__(self, timeout: float = DEFAULT_APPROVAL_TIMEOUT) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._new: list[Approval] = []
        self._open: list[Approval] = []
        self._listeners: tuple[Callable[[Approval], bool], ...] = ()
        #: session id -> the number of cells waiting for a turn of it
        self._cells: dict[str, int] = {}

    def handler(
        self, request: PermissionRequest, invocation: Mapping[str, Any]
    ) -> PermissionRequestResult:
        """``on_permission_request``: ask in the notebook and wait (on a worker thread)."""
        approval = Approval(request, invocation.get("session_id"))
        with self._lock:
            self._open.append(approval)
            # a cell waiting for this session's turn shows it; else a panel may
            listeners = () if self._cells.get(approval.session_id or "") else self._listeners
        shown = False
        for listener in listeners:
            try:
                if listener(approval):
                    shown = True
                    approval.shown.set()
            except Exception:  # a broken panel must not leave the call hanging
                pass
        if not shown:
            with self._lock:
                self._new.append(approval)
        try:
            return approval.wait(self.timeout)
        finally:
            with self._lock:
                self._open = [a for a in self._open if a is not approval]
                self._new = [a for a in self._new if a is not approval]

    @contextlib.contextmanager
    def cell_waiting(self, session_id: str) -> Iterator[None]:
        """While this runs, the approvals of ``session_id`` are the waiting cell's to show."""
        with self._lock:
            self._cells[session_id] = self._cells.get(session_id, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._cells[session_id] - 1
                if left:
                    self._cells[session_id] = left
                else:
                    del self._cells[session_id]

    def take_new(self) -> list[Approval]:
        """The approvals nobody has shown yet (the caller shows them)."""
        with self._lock:
            new, self._new = self._new, []
        return new

    def pending(self) -> list[Approval]:
        """The approvals still waiting for a decision."""
        with self._lock:
            return [a for a in self._open if not a.settled]

    def listen(self, listener: Callable[[Approval], bool]) -> Callable[[], None]:
        """Call ``listener(approval)`` for each new approval (on the worker thread); it
        returns True if it showed it. Returns the function that stops listening."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def stop() -> None:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not listener)

        return stop


def poll_ui(count: int = 10) -> None:
    """Let the kernel handle up to ``count`` pending widget messages (a click) while a cell
    runs; nothing outside a Jupyter kernel (a terminal IPython has no front end to click)."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return
    from jupyter_ui_poll import ui_events

    with ui_events() as poll:
        poll(count)
