"""State shared by the magics and the panel in one kernel: one client, the current session.

The magics and the panel are two faces of the same sessions: ``%copilot use NAME`` and the
panel's picker both set :attr:`CopilotState.current_session`, and each observes it. Session
objects are opened once per kernel and shared, so an event handler the panel attached sees
turns sent by a ``%%copilot`` cell.
"""

from __future__ import annotations

import threading
from typing import Any

from traitlets import Dict, HasTraits, Instance, Int, Unicode

from copilot import CopilotClient, Session, SessionNotFoundError

__all__ = ["CopilotState", "get_state", "reset_state"]


class CopilotState(HasTraits):
    """The extension's shared state in this kernel."""

    #: the session a bare ``%%copilot`` talks to; the panel's picker shows it
    current_session = Unicode(None, allow_none=True)
    #: bumped whenever sessions are created, deleted, renamed or get new turns
    revision = Int(0)
    client = Instance(CopilotClient)
    #: open session objects by id
    sessions = Dict()

    def __init__(self, client: CopilotClient | None = None, **kwargs: Any) -> None:
        super().__init__(client=client or CopilotClient(), **kwargs)
        self._lock = threading.RLock()

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
            try:
                session = self.client.resume_session(session_id)
            except SessionNotFoundError:
                if not create:
                    raise
                session = self.client.create_session(
                    session_id=session_id, model=model, system_message=system_message
                )
            self.sessions = {**self.sessions, session_id: session}
            session.on(self._on_event)
            self.touch()
            return session

    def forget(self, session_id: str) -> None:
        """Drop an open session object (after delete or rename)."""
        with self._lock:
            if session_id in self.sessions:
                self.sessions = {k: v for k, v in self.sessions.items() if k != session_id}
            if self.current_session == session_id:
                self.current_session = None
            self.touch()

    def touch(self) -> None:
        """Tell observers that the list of sessions or their contents changed."""
        self.revision += 1

    def _on_event(self, event: Any) -> None:
        if event.type in ("assistant.turn_end", "session.model_change"):
            self.touch()


_state: CopilotState | None = None
_state_lock = threading.Lock()


def get_state() -> CopilotState:
    """The kernel's shared state, created on first use."""
    global _state
    with _state_lock:
        if _state is None:
            _state = CopilotState()
        return _state


def reset_state(state: CopilotState | None = None) -> CopilotState | None:
    """Replace the shared state (tests; ``%unload_ext``). Returns the previous one."""
    global _state
    with _state_lock:
        previous, _state = _state, state
        return previous
