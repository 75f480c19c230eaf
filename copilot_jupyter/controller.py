"""The session panel's logic, without widgets: a traitlets object tests drive directly.

:class:`PanelController` holds what the panel shows (the stored sessions, the selected one, the
models, the transcript, busy, the status line, the compare columns) as traits; the widget view
(:mod:`copilot_jupyter.panel`) observes them and only renders.

Threads. Nothing here blocks the kernel while a reply streams: prompts go out with
``session.send()``, which returns at once; the session's events arrive on the client's event
thread and update the traits from there (ipykernel sends widget changes made on any thread).
Streaming deltas are coalesced: ``live`` (the reply being written, its tail only) changes at
most every ``throttle`` seconds, and ``transcript_html`` only when a stored event changes it.
A daemon thread reads what other processes wrote (new sessions, new turns in the shown
session) and stops on :meth:`close`: every ``poll_interval`` seconds on the diskcache store;
on a store that announces commits (:class:`~copilot.store_base.ChangeFeed`: PostgreSQL's
LISTEN/NOTIFY) as soon as a notification arrives, with a poll every
:data:`NOTIFIED_POLL_INTERVAL` seconds only as a safety net (a listener reconnecting after a
lost connection misses what was committed meanwhile).

Locks, always taken in this order: the action lock (one user action at a time), then the
controller's render lock, then a feed's lock. Client calls that wait on the event thread
(``set_model``, ``open_session``) are never made under the render or feed locks, because the
event thread takes those to deliver events.

Example (no widgets)::

    controller = PanelController(CopilotState(CopilotClient(routes={"echo-b": "echo"})))
    controller.new_session("demo")
    controller.send("Hello")        # returns at once; the reply streams into ``live``
    controller.transcript_html      # the finished turns, as HTML
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

from traitlets import Bool, Dict, Enum, HasTraits, Instance, List, Tuple, Unicode

from copilot import ClientState, CopilotClient, CopilotError, Session
from copilot.attachments import resolve_attachments
from copilot.errors import (
    AttachmentTooLargeError,
    InvalidArgumentError,
    SessionError,
    VisionNotSupportedError,
)
from copilot.store_base import ChangeFeed
from copilot.validation import validate_session_id

from .feed import SessionFeed
from .formatting import format_count
from .state import CopilotState, get_state
from .throttle import Throttle

__all__ = [
    "LARGE_PROMPT",
    "PanelController",
    "compare_session_id",
    "parse_model_ids",
    "plain_error",
]

log = logging.getLogger("copilot_jupyter.panel")

_NO_SESSION = "No session selected. Pick one on the left, or type a prompt and press Send."
_MAX_COMPARE = 3

#: seconds between the safety-net polls of a panel whose store announces writes (PostgreSQL)
NOTIFIED_POLL_INTERVAL = 60.0

#: the search box shows at most this many hits
SEARCH_LIMIT = 20

#: prompts longer than this (characters) are sent only when Send is pressed a second time
LARGE_PROMPT = 1_000_000


def compare_session_id(base: str, model: str) -> str:
    """The session that keeps ``model``'s side of a comparison: ``<base>--<model>``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-") or "model"
    slug = slug.replace("..", ".")
    return validate_session_id(f"{base[: 126 - len(slug)]}--{slug}")


def parse_model_ids(text: str) -> list[str]:
    """Model ids typed in one box, separated by commas and/or spaces, without repeats.

    >>> parse_model_ids("echo, local:smollm2  echo")
    ['echo', 'local:smollm2']
    """
    return list(dict.fromkeys(part for part in re.split(r"[\s,;]+", text) if part))


def plain_error(error: BaseException) -> str:
    """An exception as one sentence for the status line (capitalised, no type name), with the
    panel's way to fix it where the API's would not do."""
    if isinstance(error, VisionNotSupportedError):
        text = error.describe("pick it in the model list")
    elif isinstance(error, AttachmentTooLargeError):
        text = error.describe()
    else:
        text = str(error) or type(error).__name__
    return text[0].upper() + text[1:] if text else text


def _search_summary(query: str, count: int) -> str:
    if not count:
        return f"No matches for {query}"
    shown = " (the best shown)" if count == SEARCH_LIMIT else ""
    return f"{count} match{'es' if count != 1 else ''}{shown}"


class PanelController(HasTraits):
    """Everything the session panel shows and does, with no widgets.

    Parameters: ``state`` (the :class:`CopilotState` shared with the magics; default the
    kernel's), ``poll_interval`` (seconds between reads of the store for other processes'
    writes; on PostgreSQL notifications wake the reads and this is at least
    :data:`NOTIFIED_POLL_INTERVAL`; 0 or None: no polling thread, call :meth:`poll`
    yourself), ``throttle`` (seconds
    between re-renders of a streaming reply).
    """

    #: every stored session's metadata, most recently used first
    sessions = List(Dict())
    #: the session shown (and ``state.current_session``), or None
    selected = Unicode(None, allow_none=True)
    #: ``client.list_models()``: dicts with ``id``, ``provider``, ``usable``, ``reason``
    models = List(Dict())
    #: the selected session's model (or the model New will use when none is selected)
    model = Unicode("")
    #: a turn of the shown session (or of a compare column) is running
    busy = Bool(False)
    #: the stored events of the shown session, oldest first
    events = Tuple()
    #: the shown session's finished turns as HTML
    transcript_html = Unicode("")
    #: the reply streaming now (``{}`` when idle): ``id`` (changes when a new reply starts),
    #: ``model``, ``text`` (its last ``LIVE_CHARS`` characters), ``total`` (its length so far)
    live = Dict()
    #: the status line, in plain words, and its kind
    status = Unicode("")
    status_level = Enum(("info", "busy", "warning", "error"), default_value="info")
    #: a session waiting for the user to confirm its deletion
    pending_delete = Unicode(None, allow_none=True)
    #: compare mode: the prompt goes to every model of ``compare_models``, side by side
    compare_mode = Bool(False)
    compare_models = List(Unicode())
    #: one dict per compared model: model, session, html, live (as ``live``), busy, status, level
    columns = List(Dict())
    #: the search box: the last query searched, its hits (``client.search``'s dicts, best
    #: first) and a one-line summary ("3 matches", "No matches for ...")
    search_query = Unicode("")
    search_hits = List(Dict())
    search_summary = Unicode("")
    #: files attached for the next prompt (``send(attachments=...)`` dicts, checked when
    #: attached); sent with it, then cleared
    attachments = List(Dict())

    #: the shown session has the notebook tools on in this kernel (the "Notebook tools" toggle)
    notebook_tools = Bool(False)
    #: tool calls of the panel's turns waiting for Approve / Deny (:class:`Approval` objects)
    approvals = List()

    state = Instance(CopilotState)

    def __init__(
        self,
        state: CopilotState | None = None,
        *,
        poll_interval: float | None = 1.0,
        throttle: float = 0.1,
    ) -> None:
        super().__init__(state=state or get_state())
        self._lock = threading.RLock()  # renders: trait updates from any thread
        self._actions = threading.RLock()  # one user action at a time
        self._feed: SessionFeed | None = None
        self._feed_status: tuple[Any, ...] | None = None  # the feed status last shown
        self._compare: list[SessionFeed] = []
        self._render_live_throttled = Throttle(throttle, self._render_live)
        self._render_columns_throttled = Throttle(throttle, self._render_columns)
        self._closed = False
        self._paused = False
        self._wake = threading.Event()
        self.model = self.client.default_model
        self._large_prompt: str | None = None  # a large prompt waiting for a second Send
        self.refresh_models()
        self.refresh_sessions()
        self.state.observe(self._on_current_session, "current_session")
        self.state.observe(self._on_revision, "revision")
        self._watch_tools()
        current = self.state.current_session
        if current and self.client.get_session_metadata(current) is not None:
            self.try_action(self.select, current)
        else:
            self._render_main()
        self._poller: threading.Thread | None = None
        self._subscription: Any = None
        if poll_interval:
            self._poll_interval = float(poll_interval)
            store = getattr(self.client._core, "store", None)
            if isinstance(store, ChangeFeed):
                # PostgreSQL announces every commit (LISTEN/NOTIFY): wake on that, and poll
                # only as a safety net for what a reconnecting listener may miss.
                self._subscription = store.subscribe(self._on_store_change)
                self._poll_interval = max(self._poll_interval, NOTIFIED_POLL_INTERVAL)
            self._poller = threading.Thread(
                target=self._poll_loop, name="copilot-panel-poll", daemon=True
            )
            self._poller.start()

    @property
    def client(self) -> CopilotClient:
        """The client of the shared state."""
        return self.state.client

    @property
    def session(self) -> Session | None:
        """The open session object shown, or None."""
        feed = self._feed
        return None if feed is None else feed.session

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop polling, unsubscribe from every session; the sessions stay open in the state."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._subscription is not None:
            self._subscription.close()
        self.state.unobserve(self._on_current_session, "current_session")
        self.state.unobserve(self._on_revision, "revision")
        self._unwatch_tools()
        self._render_live_throttled.close()
        self._render_columns_throttled.close()
        for feed in [self._feed, *self._compare]:
            if feed is not None:
                feed.close()
        if self._poller is not None and self._poller is not threading.current_thread():
            self._poller.join(timeout=5)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def set_visible(self, visible: bool) -> None:
        """Pause (False) or resume (True) polling and rendering.

        The view calls this when its last view in the browser goes away (the cell was re-run
        or cleared) and when one comes back: a panel nobody sees costs no reads and sends no
        widget updates, yet shows the current state as soon as it is displayed again. Events
        still reach it meanwhile (folding them costs nothing).
        """
        if self._paused == (not visible) or self._closed:
            return
        self._paused = not visible
        if visible:
            self._render_main()
            self._render_columns()
            self._wake.set()  # poll now

    def _poll_loop(self) -> None:
        while not self._closed:
            self._wake.wait(self._poll_interval)
            self._wake.clear()
            if self._closed:
                return
            if self._paused:
                continue
            try:
                self.poll()
            except Exception:  # keep polling; the next round may succeed (a locked store)
                log.exception("copilot panel: polling the store failed")

    def poll(self) -> None:
        """Read what changed in the store: the sessions list and new events of shown sessions."""
        if self.client.state is not ClientState.STARTED:
            return  # a stopped client: reading would start it again
        self.refresh_sessions()
        shown = self.selected
        listed = shown is None or any(s.get("sessionId") == shown for s in self.sessions)
        if not listed and self.client.get_session_metadata(shown) is None:
            self.try_action(self._drop_shown, shown)  # deleted by another process
        for feed in [self._feed, *self._compare]:
            if feed is not None:
                feed.poll()

    def _drop_shown(self, session_id: str) -> None:
        """Stop showing ``session_id``, gone from the store, if it is still the one shown (a
        rename or delete in this panel may have moved the selection on since the poll read
        it)."""
        with self._actions:
            if self.selected != session_id:
                return
            self._show(None)
            self.say("warning", f"Session {session_id!r} was deleted elsewhere.")

    def _on_store_change(self, session_id: str, last_seq: int) -> None:
        # Another process or machine committed to this owner's sessions (a NOTIFY): poll now.
        # This runs on the store's listener thread, so it only wakes the poller.
        self._wake.set()

    def _on_revision(self, change: Any) -> None:
        # The state says sessions changed (a turn ended, a session was opened): poll now.
        # This may run on the client's event thread, so it only wakes the poller.
        self._wake.set()

    def _on_current_session(self, change: Any) -> None:
        # %copilot use NAME (or another panel) chose a session.
        if change["new"] != self.selected:
            self.try_action(self.select, change["new"])

    # -- reading -----------------------------------------------------------------------------

    def refresh_sessions(self) -> None:
        """Reload the list of stored sessions."""
        sessions = self.client.list_sessions()
        with self._lock:
            self.sessions = sessions

    def refresh_models(self) -> None:
        """Reload the list of models and whether each is usable now."""
        models = self.client.list_models()
        by_id = {m["id"]: m for m in models}
        for name, target in self.client.routes.items():
            if name not in by_id:  # a route name ("gpt" -> "openai:gpt-4.1") is a model too
                served = by_id.get(target, {})
                models.append(
                    {
                        "id": name,
                        "route": target,
                        "provider": served.get("provider", ""),
                        "usable": bool(served.get("usable", False)),
                        "reason": served.get("reason", "") if served else f"routes to {target}",
                    }
                )
        with self._lock:
            self.models = models

    def model_options(self) -> list[tuple[str, str]]:
        """(label, model id) pairs for a selector: usable models first, marked ✓ / ✗."""
        usable = [m for m in self.models if m.get("usable")]
        other = [m for m in self.models if not m.get("usable")]

        def name(model: dict[str, Any]) -> str:
            route = model.get("route")
            return f"{model['id']} → {route}" if route else str(model["id"])

        options = [(f"✓ {name(m)}", m["id"]) for m in usable]
        options += [(f"✗ {name(m)} — {m.get('reason') or 'unavailable'}", m["id"]) for m in other]
        known = {value for _label, value in options}
        if self.model and self.model not in known:  # a session's model no longer listed
            options.insert(0, (f"• {self.model}", self.model))
        return options

    def compare_choices(self) -> list[str]:
        """The model ids compare mode offers as toggles: the usable ones."""
        return [str(m["id"]) for m in self.models if m.get("usable")]

    # -- selecting ---------------------------------------------------------------------------

    def select(self, session_id: str | None) -> None:
        """Show ``session_id`` (opening it in the shared state) and make it the current one."""
        with self._actions:
            self._show(session_id)
            if not self._closed and self.state.current_session != session_id:
                self.state.current_session = session_id

    def _show(self, session_id: str | None) -> None:
        """Show ``session_id`` without changing the state's current session."""
        with self._actions:
            if self._closed:
                return
            if session_id == self.selected and (session_id is None or self._feed is not None):
                return
            feed = None
            if session_id is not None:
                session = self.state.open_session(session_id, create=False)
                feed = SessionFeed(session, self._feed_changed, self.state.client.get_attachment)
            with self._lock:
                old, self._feed = self._feed, feed
                self.pending_delete = None
                self.selected = session_id
                if feed is not None:
                    self.model = feed.session.model
                self._render_main()
            if old is not None:
                old.close()

    def _fresh_name(self) -> str:
        taken = {s.get("sessionId") for s in self.sessions}
        number = len(taken) + 1
        while f"chat-{number}" in taken or self.client.get_session_metadata(f"chat-{number}"):
            number += 1
        return f"chat-{number}"

    def new_session(self, name: str | None = None) -> str:
        """Create a session (named ``name``, or ``chat-N``) with the selected model; show it."""
        with self._actions:
            session_id = validate_session_id((name or "").strip() or self._fresh_name())
            if self.client.get_session_metadata(session_id) is not None:
                raise SessionError(
                    f"a session named {session_id!r} exists; pick another name", session_id
                )
            self.state.open_session(session_id, model=self.model or None, create=True)
            self.refresh_sessions()
            self.select(session_id)
            self.say("info", f"Created session {session_id!r} with model {self.model}.")
            return session_id

    # -- deleting, forking, renaming ---------------------------------------------------------

    def request_delete(self, session_id: str | None = None) -> None:
        """Ask to delete ``session_id`` (default: the shown one); :meth:`confirm_delete` does it."""
        target = session_id or self.selected
        if target is None:
            raise InvalidArgumentError("select a session to delete first")
        self.pending_delete = target

    def cancel_delete(self) -> None:
        """Forget a delete request."""
        self.pending_delete = None

    def confirm_delete(self) -> None:
        """Delete the session of the pending request, with all its history."""
        with self._actions:
            target = self.pending_delete
            self.pending_delete = None
            if target is None:
                return
            self._drop(target)
            self.say("info", f"Deleted session {target!r}.")

    def _drop(self, session_id: str) -> None:
        """Delete ``session_id`` from the store and the state; show the next session."""
        if self.selected == session_id:
            self.select(None)
        self.client.delete_session(session_id)
        self.state.forget(session_id)
        self.refresh_sessions()
        self._search_again_without(session_id)
        if self.selected is None and self.sessions:
            self.select(self.sessions[0]["sessionId"])

    def _fork(self, source: str, new_id: str) -> None:
        self.client.fork_session(source, new_id)

    def fork(self, new_id: str) -> None:
        """Copy the shown session, history included, to ``new_id``, and show the copy."""
        with self._actions:
            source = self._require_selected()
            new_id = validate_session_id(new_id.strip())
            self._fork(source, new_id)
            self.refresh_sessions()
            self.select(new_id)
            self.say("info", f"Forked {source!r} to {new_id!r}.")

    def rename(self, new_id: str) -> None:
        """Rename the shown session to ``new_id``: one store transaction
        (``client.rename_session``), so its history, totals, attachments and start time stay
        whole, and a failure changes nothing."""
        with self._actions:
            source = self._require_selected()
            if self.busy:
                raise SessionError("wait for the reply to finish (or Stop it) before renaming")
            new_id = validate_session_id(new_id.strip())
            self.client.rename_session(source, new_id)
            self.state.renamed(source, new_id)
            self.refresh_sessions()
            self.select(new_id)
            self._search_again_without(source)
            self.say("info", f"Renamed {source!r} to {new_id!r}.")

    def _require_selected(self) -> str:
        if self.selected is None:
            raise InvalidArgumentError("select a session first")
        return self.selected

    # -- the model ---------------------------------------------------------------------------

    def set_model(self, model: str) -> None:
        """Switch the shown session to ``model`` from its next turn on, keeping its context.

        With no session shown, ``model`` is the one New (and the first Send) will use.
        """
        with self._actions:
            session = self.session
            if session is None:
                self.model = model
                return
            if model == session.model:
                self.model = model
                return
            try:
                if self.busy:
                    raise SessionError(
                        "wait for the reply to finish (or Stop it) before switching models"
                    )
                session.set_model(model)  # waits for the session's queue: it is idle
            except CopilotError:
                self.model = session.model  # the selector goes back to what is in use
                raise
            self.model = model
            self.refresh_sessions()

    # -- notebook tools ----------------------------------------------------------------------

    def _watch_tools(self) -> None:
        """Follow the shown session's notebook tools, and show the approvals of its turns."""
        self.observe(self._sync_notebook_tools, "selected")
        self.state.observe(self._sync_notebook_tools, "tool_settings")
        self._stop_approvals = self.state.approvals.listen(self._on_approval)

    def _unwatch_tools(self) -> None:
        self.unobserve(self._sync_notebook_tools, "selected")
        self.state.unobserve(self._sync_notebook_tools, "tool_settings")
        self._stop_approvals()

    def _sync_notebook_tools(self, _change: Any = None) -> None:
        selected = self.selected
        self.notebook_tools = bool(selected and self.state.tool_setting(selected).enabled)

    def set_notebook_tools(self, enabled: bool) -> None:
        """Turn the shown session's notebook tools on or off (as ``%copilot tools NAME on``;
        ``run_code`` stays as the magics set it)."""
        with self._actions:
            session_id = self._require_selected()
            run_code = self.state.tool_setting(session_id).allow_run_code
            self.state.set_notebook_tools(session_id, enabled, allow_run_code=run_code)
            self._sync_notebook_tools()
            self.say(
                "info",
                f"Notebook tools {'on' if enabled else 'off'} for {session_id} in this kernel.",
            )

    def _on_approval(self, approval: Any) -> bool:
        """Show an approval of the shown session's turn (no cell waits for it); True if shown."""
        if self._closed or approval.session_id is None or approval.session_id != self.selected:
            return False
        with self._lock:
            self.approvals = [*self.approvals, approval]
        approval.on_settled(self._drop_approval)
        return True

    def _drop_approval(self, approval: Any) -> None:
        with self._lock:
            self.approvals = [a for a in self.approvals if a is not approval]

    # -- prompts -----------------------------------------------------------------------------

    def attach(self, name: str, data: bytes, mime_type: str = "") -> None:
        """Attach a file (an upload's name, bytes and browser type) to the next prompt.

        Checked at once (kind, size cap): a typed :class:`~copilot.errors.AttachmentError`
        names the problem and nothing is attached."""
        item = {
            "type": "blob",
            "data": base64.b64encode(bytes(data)).decode("ascii"),
            "mimeType": mime_type or "application/octet-stream",
            "displayName": name,
        }
        resolve_attachments([item], self.client.max_attachment_bytes)
        with self._lock:
            self.attachments = [*self.attachments, item]
            names = ", ".join(a["displayName"] for a in self.attachments)
            self.say("info", f"📎 attached for the next prompt: {names}")

    def clear_attachments(self) -> None:
        """Drop the files attached for the next prompt."""
        with self._lock:
            self.attachments = []

    def send(self, prompt: str) -> str | list[str]:
        """Send ``prompt`` to the shown session (creating one if none), or compare it.

        Returns at once with the message id (in compare mode, the compare sessions' ids); the
        reply streams into ``live`` and lands in ``transcript_html``. A prompt longer than
        :data:`LARGE_PROMPT` characters is sent only when the same prompt is sent twice in a
        row (the first call warns in the status line and returns "").
        """
        with self._actions:
            if not prompt or not prompt.strip():
                raise InvalidArgumentError("type a prompt first")
            if len(prompt) > LARGE_PROMPT and self._large_prompt != prompt:
                self._large_prompt = prompt
                self.say(
                    "warning",
                    f"This prompt has {format_count(len(prompt), 'character')}: sending it"
                    " costs many tokens, and the panel shows only the end of a long reply"
                    " while it streams. Press Send again to send it.",
                )
                return ""
            self._large_prompt = None
            if self.compare_mode:
                return self.compare(prompt)
            if self._feed is None:
                self.new_session()
            feed = self._feed
            assert feed is not None
            message_id = feed.session.send(prompt, attachments=list(self.attachments) or None)
            self.attachments = []
            feed.expect(message_id)  # busy now, unless the reply has already come
            self._render_main()
            return message_id

    def stop(self) -> bool:
        """Abort the running turn(s) of the shown session and the compare columns."""
        stopped = False
        for feed in [self._feed, *self._compare]:
            if feed is not None and feed.busy:
                feed.session.abort()
                stopped = True
        if not stopped:
            self.say("info", "Nothing to stop.")
        return stopped

    def compare(self, prompt: str, models: Iterable[str] | None = None) -> list[str]:
        """Send ``prompt`` to two or three models, each in its own session ``<name>--<model>``.

        The answers stream side by side in ``columns``; returns the compare sessions' ids.
        """
        with self._actions:
            wanted = list(dict.fromkeys(m.strip() for m in (models or self.compare_models)))
            wanted = [m for m in wanted if m]
            if not 2 <= len(wanted) <= _MAX_COMPARE:
                raise InvalidArgumentError(
                    f"compare needs 2 or 3 different models; got {len(wanted)} "
                    f"({', '.join(wanted) or 'none'}). Tick the models to compare, or type "
                    "their ids separated by commas or spaces"
                )
            if not prompt or not prompt.strip():
                raise InvalidArgumentError("type a prompt first")
            base = self.selected or "compare"
            by_id = {feed.session_id: feed for feed in self._compare}
            feeds = []
            for model in wanted:
                session_id = compare_session_id(base, model)
                feed = by_id.pop(session_id, None)
                if feed is None:
                    session = self.state.open_session(session_id, model=model, create=True)
                    feed = SessionFeed(
                        session, self._feed_changed, self.state.client.get_attachment
                    )
                if feed.session.model != model and not feed.busy:
                    feed.session.set_model(model)
                feeds.append(feed)
            with self._lock:
                self._compare = feeds
                self.compare_models = wanted
            for feed in by_id.values():
                feed.close()
            with self._lock:
                self.say("busy", f"Comparing {', '.join(wanted)}…")
            attached = list(self.attachments) or None
            for feed in feeds:
                feed.expect(feed.session.send(prompt, attachments=attached))
            self.attachments = []
            self._render_columns()
            self.refresh_sessions()
            return [feed.session_id for feed in feeds]

    def set_compare_models(self, models: str | Iterable[str]) -> None:
        """Choose the models to compare: a list of ids, or ids typed in one string
        (separated by commas or spaces, see :func:`parse_model_ids`)."""
        wanted = parse_model_ids(models) if isinstance(models, str) else list(models)
        self.compare_models = list(dict.fromkeys(m.strip() for m in wanted if m.strip()))

    def toggle_compare_model(self, model: str, on: bool) -> None:
        """Add ``model`` to the models to compare (``on``) or take it out."""
        models = [m for m in self.compare_models if m != model]
        self.compare_models = [*models, model] if on else models

    def set_compare_mode(self, enabled: bool) -> None:
        """Turn compare mode on or off (off forgets the columns; their sessions stay stored)."""
        with self._actions:
            self.compare_mode = bool(enabled)
            if not enabled:
                feeds, self._compare = self._compare, []
                for feed in feeds:
                    feed.close()
                with self._lock:
                    self.columns = []
                    self._update_busy()

    # -- searching ---------------------------------------------------------------------------

    def search(self, query: str) -> list[dict[str, Any]]:
        """Search every session's prompts and replies; the hits go to ``search_hits``.

        A blank query clears the results. Bad syntax raises :class:`InvalidArgumentError`
        (the view puts it in the status line) and clears the results.
        """
        query = query.strip()
        hits: list[dict[str, Any]] = []
        summary = ""
        try:
            if query and not any(char.isalnum() for char in query):
                raise InvalidArgumentError(
                    f"type at least one word (letters or digits) to search, not {query!r}; "
                    'e.g. "pivot table" NOT excel'
                )
            if query:
                hits = self.client.search(query, limit=SEARCH_LIMIT)
                summary = _search_summary(query, len(hits))
        finally:  # a failed search leaves no stale hits listed
            with self._lock:
                self.search_query = query
                self.search_hits = hits
                self.search_summary = summary
        return hits

    def _search_again_without(self, session_id: str) -> None:
        """Search again if a hit is in ``session_id``, just deleted (or renamed: its hits
        come back under the new name)."""
        if any(hit["sessionId"] == session_id for hit in self.search_hits):
            self.search(self.search_query)

    def open_hit(self, index: int) -> None:
        """Show the session of ``search_hits[index]`` (the hits stay listed)."""
        hits = self.search_hits
        if not 0 <= index < len(hits):
            raise InvalidArgumentError(f"there is no search hit {index}; search again")
        self.select(hits[index]["sessionId"])

    # -- rendering (any thread) --------------------------------------------------------------

    def say(self, level: str, text: str) -> None:
        """Show ``text`` in the status line with ``level`` (info, busy, warning, error)."""
        with self._lock:
            self.status_level = level
            self.status = text

    def try_action(self, action: Callable[..., Any], *args: Any) -> Any:
        """Run an action for a callback; a failure goes to the status line in plain words."""
        try:
            return action(*args)
        except CopilotError as error:
            self.say("error", f"Error: {plain_error(error)}")
        except Exception as error:  # a bug: say so where the user looks, and log it
            log.exception("copilot panel: %s failed", getattr(action, "__name__", action))
            self.say("error", f"Unexpected error: {type(error).__name__}: {error}")
        return None

    def _feed_changed(self, feed: SessionFeed, live_only: bool) -> None:
        if self._closed or self._paused:
            return
        if feed is self._feed:
            if live_only:
                self._render_live_throttled()
            else:
                self._render_main()
        elif feed in self._compare:
            if live_only:
                self._render_columns_throttled()
            else:
                self._render_columns()
            if not live_only:
                self._wake.set()  # the sessions list shows the new turn counts

    def _render_live(self) -> None:
        with self._lock:
            feed = self._feed
            self.live = {} if feed is None else feed.live()

    def _render_main(self) -> None:
        with self._lock:
            feed = self._feed
            if feed is None:
                self.events = ()
                self.transcript_html = f'<div class="cj-empty">{_NO_SESSION}</div>'
                self.live = {}
                self._update_busy()
                if self._feed_status is not None or not self.status:
                    self._feed_status = None
                    self.say("info", f"Ready · new sessions use {self.model}")
                return
            view = feed.snapshot()
            self.events = view["events"]
            self.transcript_html = view["html"]
            self.live = view["live"]
            self.model = view["model"]
            self._update_busy()
            # Only a change of the session's own status replaces the line, so a re-render
            # (a late throttled one, a poll) never hides what an action just reported.
            status = (feed, view["level"], view["status"])
            if status != self._feed_status:
                self._feed_status = status
                self.status_level, self.status = view["level"], view["status"]

    def _render_columns(self) -> None:
        with self._lock:
            columns = []
            for feed in self._compare:
                view = feed.snapshot(empty="No answers yet.")
                view.pop("events")
                columns.append(view)
            self.columns = columns
            self._update_busy()
            if columns and not self.busy and self.status_level == "busy":
                models = ", ".join(c["model"] for c in columns)
                self.say("info", f"Compared {models}: each column shows its model's answer.")

    def _update_busy(self) -> None:
        feeds = [self._feed, *self._compare]
        self.busy = any(feed is not None and feed.busy for feed in feeds)
