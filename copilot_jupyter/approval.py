"""Approve or deny a tool call in the notebook: the permission handler of notebook sessions.

A tool that needs permission (``run_code`` of :func:`copilot_jupyter.tools.notebook_tools`)
reaches the session's ``on_permission_request`` on a worker thread of the client. The handler
is :meth:`ApprovalBroker.handler`: it makes an :class:`Approval` (an ipywidgets box showing the
tool, its code and Approve / Deny buttons), hands it to whoever shows it, and blocks that worker
thread until a button is clicked or ``timeout`` seconds pass; nobody answering in time is a
denial (``"user-not-available"``), which the model is told, and the turn goes on.

Who shows it: a ``%%copilot`` cell waiting for its reply takes the new approvals on its own
thread (:meth:`ApprovalBroker.take_new`, called by :func:`copilot_jupyter.display.stream_turn`
between two looks at the event queue), so the widget lands in that cell's output, and its clicks
are routed to a kernel subshell (:func:`route_clicks`): the kernel's main thread is busy with
the cell until the turn ends. A panel registers a listener (:meth:`ApprovalBroker.listen`)
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

__all__ = ["DEFAULT_APPROVAL_TIMEOUT", "Approval", "ApprovalBroker", "route_clicks"]

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
        self._widget: widgets.VBox | None = None

    @property
    def widget(self) -> widgets.VBox:
        """The box showing the call with Approve / Deny, built on first use.

        Built by the thread that shows it (the cell's, so the widget's messages go out with
        that cell's request, or the panel's), not by the worker thread that waits.
        """
        with self._lock:
            if self._widget is None:
                self._widget = self._build()
            return self._widget

    @property
    def approve_button(self) -> widgets.Button:
        """The Approve button."""
        return self.widget.children[2].children[0]

    @property
    def deny_button(self) -> widgets.Button:
        """The Deny button."""
        return self.widget.children[2].children[1]

    @property
    def status(self) -> widgets.HTML:
        """What was decided, after the buttons."""
        return self.widget.children[2].children[2]

    def _build(self) -> widgets.VBox:
        shown = self.code
        if len(shown) > SHOWN_CODE:
            shown = shown[:SHOWN_CODE] + f"\n… ({len(self.code):,} characters in all)"
        title = (
            f"<b>{html.escape(self.request.tool_name)}</b> wants to run this"
            + (f" (session {html.escape(self.session_id)})" if self.session_id else "")
            + ":"
        )
        approve = widgets.Button(description="Approve", button_style="success", icon="check")
        deny = widgets.Button(description="Deny", button_style="danger", icon="times")
        approve.on_click(lambda _: self.decide(APPROVED))
        deny.on_click(lambda _: self.decide(DENIED))
        box = widgets.VBox(
            [
                widgets.HTML(title),
                widgets.HTML(
                    f"<pre style='max-height: 20em; overflow: auto'>{html.escape(shown)}</pre>"
                ),
                widgets.HBox([approve, deny, widgets.HTML("")]),
            ]
        )
        box.add_class("cj-approval")
        if self.result is not None:
            self._show_decision(box)
        return box

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
            built = self._widget is not None
        if built:
            self._show_decision(self.widget)
        for callback in self._on_settled:
            try:
                callback(self)
            except Exception:  # a broken listener must not undo the decision
                pass
        return True

    def _show_decision(self, box: widgets.VBox) -> None:
        result = self.result
        assert result is not None
        approve, deny, status = box.children[2].children
        approve.disabled = deny.disabled = True
        words = {APPROVED: "✔ approved", DENIED: "✘ denied"}
        status.value = html.escape(
            words.get(result.kind, f"✘ denied: {result.feedback or result.kind}")
        )

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


def route_clicks(approval: Approval) -> bool:
    """Have the kernel handle ``approval``'s clicks while the cell that shows it still runs.

    A Jupyter kernel runs one shell message at a time on its main thread, and a ``%%copilot``
    cell holds that thread until the turn ends, so a click would wait for the cell, and the
    cell for the click. ipykernel 7 has kernel subshells (JEP 91): a subshell is a thread of
    its own with its own message loop, and a comm's replies go to the subshell named by the
    comm's ``_reply_subshell_id``. The buttons' comms are pointed at one subshell per kernel,
    created on first use, so the click runs there. False (nothing done) outside such a kernel:
    a terminal IPython, or an ipykernel without subshells.
    """
    subshell = _click_subshell()
    if subshell is None:
        return False
    for button in (approval.approve_button, approval.deny_button):
        comm = getattr(button, "comm", None)
        if comm is None or not hasattr(comm, "_reply_subshell_lock"):
            return False
        with comm._reply_subshell_lock:
            comm._reply_subshell_id = subshell
    return True


_subshell_lock = threading.Lock()


def _click_subshell() -> str | None:
    """The id of this kernel's subshell for approval clicks (created once), or None."""
    from IPython import get_ipython

    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    channel = getattr(kernel, "shell_channel_thread", None)
    manager = getattr(channel, "manager", None)
    if kernel is None or manager is None or not hasattr(manager, "_create_subshell"):
        return None
    with _subshell_lock:
        subshell = getattr(kernel, "_copilot_click_subshell", None)
        if subshell is not None:
            return subshell
        created: list[str] = []
        done = threading.Event()

        def create() -> None:  # on the shell channel thread, as ipykernel requires
            try:
                created.append(manager._create_subshell())
            finally:
                done.set()

        channel.io_loop.add_callback(create)
        if not done.wait(10) or not created:
            return None
        kernel._copilot_click_subshell = created[0]
        return created[0]
