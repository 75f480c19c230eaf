"""State shared by the magics and the panel in one kernel: one client, the current session.

The magics and the panel are two faces of the same sessions: ``%copilot use NAME`` and the
panel's picker both set :attr:`CopilotState.current_session`, and each observes it. Session
objects are opened once per kernel and shared, so an event handler the panel attached sees
turns sent by a ``%%copilot`` cell.

The current session is remembered per notebook across kernel restarts. The notebook is known
by the ``JPY_SESSION_NAME`` environment variable (Jupyter Server sets it to the notebook's path
in the kernels it starts for a notebook; VS Code sets ``__vsc_ipynb_file__`` instead), and the
map from notebook to session is a small JSON file, ``jupyter/current-sessions.json`` in the
store's home (``COPILOT_JUPYTER_HOME``). A kernel that knows no notebook (a terminal IPython, a
plain ``jupyter_client`` kernel) keeps the current session in memory only.

Notebook tools (:mod:`copilot_jupyter.tools`) are turned on per session by ``%%copilot NAME
--tools notebook``, ``%copilot tools NAME on`` or the panel's toggle, all through
:meth:`CopilotState.set_notebook_tools`. The setting lives in this kernel only: tools are code,
never stored, so each time the state opens a session it passes ``tools=notebook_tools(shell,
...)`` and the notebook's permission handler (:class:`copilot_jupyter.approval.ApprovalBroker`)
again, and a change to an open session re-opens it with the new tools.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from traitlets import Dict, HasTraits, Instance, Int, Unicode, observe

from copilot import CopilotClient, Event, EventType, Session, SessionNotFoundError

from .approval import ApprovalBroker
from .tools import DEFAULT_MAX_CHARS, notebook_tools

__all__ = [
    "CopilotState",
    "CurrentSessions",
    "ToolSetting",
    "get_state",
    "notebook_key",
    "reset_state",
]


@dataclass(frozen=True, slots=True)
class ToolSetting:
    """A session's notebook tools in this kernel: on or off, and whether ``run_code`` is."""

    enabled: bool = False
    allow_run_code: bool = False


def notebook_key(user_ns: dict[str, Any] | None = None) -> str | None:
    """The notebook this kernel runs for (its path), or None if the kernel does not know it."""
    key = os.environ.get("JPY_SESSION_NAME") or (user_ns or {}).get("__vsc_ipynb_file__")
    return str(key) if key else None


class CurrentSessions:
    """The current session of each notebook, in a JSON file that outlives kernels.

    Each write reads the file again and replaces it atomically (a temporary file renamed over
    it), so two kernels never leave it half-written; when they write at the same moment, the
    later write wins for the notebooks both changed.
    """

    def __init__(self, home: Path) -> None:
        self.path = Path(home) / "jupyter" / "current-sessions.json"

    def read(self) -> dict[str, str]:
        """Notebook -> session id (empty if the file is missing or unreadable)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): v for k, v in data.items() if isinstance(v, str)}

    def get(self, notebook: str) -> str | None:
        """The session remembered for ``notebook``."""
        return self.read().get(notebook)

    def set(self, notebook: str, session_id: str | None) -> None:
        """Remember ``session_id`` for ``notebook`` (None forgets it)."""
        data = self.read()
        if session_id is None:
            if data.pop(notebook, None) is None:
                return
        elif data.get(notebook) == session_id:
            return
        else:
            data[notebook] = session_id
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".current-", text=True)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(data, file, indent=1, sort_keys=True)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


class CopilotState(HasTraits):
    """The extension's shared state in this kernel."""

    #: the session a bare ``%%copilot`` talks to; the panel's picker shows it
    current_session = Unicode(None, allow_none=True)
    #: bumped whenever sessions are created, deleted, renamed or get new turns
    revision = Int(0)
    client = Instance(CopilotClient)
    #: open session objects by id
    sessions = Dict()

    #: the notebook this kernel runs for (see :func:`notebook_key`), or None
    notebook = Unicode(None, allow_none=True)
    #: the current session was restored from the notebook's memory, and no cell has used it
    #: yet (a bare ``%%copilot`` then says where it went)
    restored = Unicode(None, allow_none=True)

    #: session id -> :class:`ToolSetting` (this kernel only; tools are never stored)
    tool_settings = Dict()
    #: the cap on each notebook tool result (characters)
    tool_max_chars = Int(DEFAULT_MAX_CHARS, min=100)

    def __init__(
        self, client: CopilotClient | None = None, notebook: str | None = None, **kwargs: Any
    ) -> None:
        client = client or CopilotClient()
        #: the permission handler of notebook tools, and the approvals waiting to be shown
        self.approvals = ApprovalBroker()
        #: the shell the notebook tools read (None: the running IPython's, found on first use)
        self.shell: Any = kwargs.pop("shell", None)
        self._lock = threading.RLock()
        self._memory = CurrentSessions(client.home)
        super().__init__(client=client, notebook=notebook, **kwargs)
        if notebook:
            remembered = self._memory.get(notebook)
            if remembered and client.get_session_metadata(remembered) is not None:
                self.current_session = remembered
                self.restored = remembered

    @observe("current_session")
    def _remember(self, change: Any) -> None:
        if change["new"] != self.restored:
            self.restored = None
        if self.notebook:
            self._memory.set(self.notebook, change["new"])

    def open_session(
        self,
        session_id: str,
        *,
        model: str | None = None,
        create: bool = True,
        system_message: str | None = None,
    ) -> Session:
        """The open session ``session_id``: resumed from the store, or created if ``create``."""
        with self._lock:
            session = self.sessions.get(session_id)
            if session is not None and not session.closed:
                return session
            tool_args = self.tool_arguments(session_id)
            try:
                session = self.client.resume_session(session_id, **tool_args)
            except SessionNotFoundError:
                if not create:
                    raise
                session = self.client.create_session(
                    session_id=session_id, model=model, system_message=system_message, **tool_args
                )
            self.sessions = {**self.sessions, session_id: session}
            session.on(self._on_event)
            self.touch()
            return session

    def tool_setting(self, session_id: str) -> ToolSetting:
        """The notebook tools of ``session_id`` in this kernel (off unless turned on)."""
        return self.tool_settings.get(session_id, ToolSetting())

    def tool_arguments(self, session_id: str) -> dict[str, Any]:
        """The tool arguments of ``create_session`` / ``resume_session`` for ``session_id``:
        fresh notebook tools and the notebook's permission handler, or none."""
        setting = self.tool_setting(session_id)
        if not setting.enabled:
            return {}
        shell = self.shell
        if shell is None:
            from IPython import get_ipython

            shell = get_ipython()
        if shell is None:
            return {}  # no kernel to look at (a plain Python process)
        tools = notebook_tools(
            shell, allow_run_code=setting.allow_run_code, max_chars=self.tool_max_chars
        )
        return {"tools": tools, "on_permission_request": self.approvals.handler}

    def set_notebook_tools(
        self, session_id: str, enabled: bool, *, allow_run_code: bool = False
    ) -> ToolSetting:
        """Turn the notebook tools of ``session_id`` on or off (``run_code`` only with
        ``allow_run_code``); an open session is re-opened with them at once. Returns the
        setting."""
        setting = ToolSetting(bool(enabled), bool(enabled and allow_run_code))
        with self._lock:
            if self.tool_setting(session_id) == setting:
                return setting
            self.tool_settings = {**self.tool_settings, session_id: setting}
            session = self.sessions.get(session_id)
            if session is not None and not session.closed:
                # the same open session, given its new tools (tools are replaced in place)
                self.client.resume_session(session_id, **self.tool_arguments(session_id))
            self.touch()
        return setting

    def forget(self, session_id: str) -> None:
        """Drop an open session object (after delete or rename)."""
        with self._lock:
            if session_id in self.sessions:
                self.sessions = {k: v for k, v in self.sessions.items() if k != session_id}
            if self.current_session == session_id:
                self.current_session = None
            self.touch()

    def renamed(self, old_id: str, new_id: str) -> None:
        """Follow a session's rename (``client.rename_session``): its tool setting moves to the
        new name, its open session object is dropped (the client closed it), and the current
        session follows."""
        with self._lock:
            if old_id in self.tool_settings:
                settings = dict(self.tool_settings)
                settings[new_id] = settings.pop(old_id)
                self.tool_settings = settings
            self.sessions = {k: v for k, v in self.sessions.items() if k != old_id}
            if self.current_session == old_id:
                self.current_session = new_id
            self.touch()

    def touch(self) -> None:
        """Tell observers that the list of sessions or their contents changed."""
        self.revision += 1

    def _on_event(self, event: Event) -> None:
        if event.type in (EventType.ASSISTANT_TURN_END, EventType.SESSION_MODEL_CHANGE):
            self.touch()


_state: CopilotState | None = None
_state_lock = threading.Lock()


def get_state() -> CopilotState:
    """The kernel's shared state, created on first use (for this kernel's notebook, if known)."""
    global _state
    with _state_lock:
        if _state is None:
            _state = CopilotState(notebook=notebook_key(_user_namespace()))
        return _state


def _user_namespace() -> dict[str, Any] | None:
    from IPython import get_ipython

    shell = get_ipython()
    return shell.user_ns if shell is not None else None


def reset_state(state: CopilotState | None = None) -> CopilotState | None:
    """Replace the shared state (tests; ``%unload_ext``). Returns the previous one."""
    global _state
    with _state_lock:
        previous, _state = _state, state
        return previous
