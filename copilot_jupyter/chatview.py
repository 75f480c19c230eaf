"""The panel's chat views as anywidget widgets: what ipywidgets cannot do, in plain ES modules.

Why anywidget: ipywidgets gives Python no key events (a ``Textarea`` cannot send on Enter) and
updates an ``HTML`` widget by resending its whole value, so a streaming reply cost the browser
the whole transcript on every update. anywidget (a well-kept library for custom widgets as
plain ES modules, no build step; it runs in JupyterLab, Notebook 7, VS Code and Colab) lets
three small views do what a chat needs, while every decision stays in Python:

- :class:`ChatLog`: the transcript (HTML made and escaped in Python, resent only when a stored
  event changes it) and the reply streaming now, sent as custom messages that carry only the
  text added since the last update (bounded: a view keeps the last ``live_chars``).
- :class:`PromptBox`: a text box where Enter sends and Shift+Enter adds a line. The key events
  stay in the browser; Python gets a ``submit`` message with the text.
- :class:`SessionList`: the session picker, one card per session with its name, model, turns,
  last use and summary (wrapped, not cut off at the right).

Tests drive them without a browser through the same messages the browser sends
(:meth:`PromptBox.submit`, the ``value`` traits).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
from traitlets import Bool, Dict, Int, List, Unicode

from .feed import LIVE_CHARS

__all__ = ["ChatLog", "PromptBox", "SessionList", "chat_css"]

_HERE = Path(__file__).parent
_ESM = _HERE / "chatview.js"
_CSS = _HERE / "chatview.css"


def chat_css() -> str:
    """The chat views' style sheet (to show a transcript's HTML outside the panel: wrap it in
    ``<div class="cj-chat">``)."""
    return _CSS.read_text(encoding="utf-8")


class ChatLog(anywidget.AnyWidget):
    """A transcript (``value``, HTML) and the reply streaming now (:meth:`show_live`)."""

    _esm = _ESM
    _css = _CSS
    kind = Unicode("log").tag(sync=True)
    #: the finished turns as HTML (already escaped)
    value = Unicode("").tag(sync=True)
    #: the height of the scrolling area (CSS)
    height = Unicode("380px").tag(sync=True)
    #: the most of a streaming reply a view keeps (its tail)
    live_chars = Int(LIVE_CHARS).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._live_lock = threading.Lock()
        self._live: dict[str, Any] = {}
        self._sent_id: str | None = None
        self._sent_total = 0
        #: characters of live text sent to the browser so far (for tests and measurements)
        self.live_chars_sent = 0
        self.on_msg(self._on_message)

    @property
    def live(self) -> dict[str, Any]:
        """The live reply last shown (``{}`` when none)."""
        return self._live

    def show_live(self, live: dict[str, Any]) -> None:
        """Show the reply streaming now (``{}``: none): send the browser only what is new.

        ``live`` is :meth:`copilot_jupyter.feed.SessionFeed.live`'s dict. The text added since
        the last call is appended in the browser; a new reply, a retry, or more new text than
        the live dict holds (its tail) replaces the shown text instead.
        """
        with self._live_lock:
            self._live = live
            if not live:
                if self._sent_id is not None:
                    self._sent_id, self._sent_total = None, 0
                    self.send({"op": "live", "clear": True})
                return
            text, total = str(live.get("text", "")), int(live.get("total", 0))
            new = total - self._sent_total
            if live.get("id") == self._sent_id and 0 <= new <= len(text):
                if new == 0:
                    return
                message = {"append": True, "text": text[len(text) - new :]}
            else:
                message = {"append": False, "text": text}
            message.update(op="live", id=live.get("id"), model=live.get("model", ""), total=total)
            self._sent_id, self._sent_total = live.get("id"), total
            self.live_chars_sent += len(message["text"])
            self.send(message)

    def _on_message(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        if content.get("event") == "ready":  # a new view: it has no live text yet
            with self._live_lock:
                self._sent_id, self._sent_total = None, 0
            self.show_live(self._live)


class PromptBox(anywidget.AnyWidget):
    """A prompt box where Enter sends (calls the ``on_submit`` callbacks) and Shift+Enter adds
    a line."""

    _esm = _ESM
    _css = _CSS
    kind = Unicode("prompt").tag(sync=True)
    value = Unicode("").tag(sync=True)
    placeholder = Unicode("").tag(sync=True)
    disabled = Bool(False).tag(sync=True)
    rows = Int(3).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._submit_handlers: list[Callable[[PromptBox], None]] = []
        self.on_msg(self._on_message)

    def on_submit(self, handler: Callable[[PromptBox], None]) -> None:
        """Call ``handler(box)`` when the user presses Enter in the box."""
        self._submit_handlers.append(handler)

    def submit(self, text: str | None = None) -> None:
        """What Enter does: take ``text`` (default: the current value) and call the handlers.

        A handler that sends the text calls :meth:`clear`; text left in ``value`` stays in the
        box.
        """
        if text is not None:
            self.value = text
        for handler in list(self._submit_handlers):
            handler(self)

    def clear(self) -> None:
        """Empty the box (a prompt was sent), in Python and in every view.

        A view is told with a message as well as through ``value``: the browser may still have
        a queued ``value`` update from the last key presses, which would otherwise win.
        """
        self.value = ""
        self.send({"op": "clear"})

    def _on_message(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        if content.get("event") == "submit":
            # The view emptied itself on Enter; give the text back unless it was sent.
            self.submit(str(content.get("text", "")))
            if self.value:
                self.send({"op": "restore", "text": self.value})


class SessionList(anywidget.AnyWidget):
    """The session picker: ``items`` (dicts with ``id``, ``title``, ``detail``, ``summary``)
    and ``value``, the id picked (None: none)."""

    _esm = _ESM
    _css = _CSS
    kind = Unicode("sessions").tag(sync=True)
    items = List(Dict()).tag(sync=True)
    value = Unicode(None, allow_none=True).tag(sync=True)
    height = Unicode("340px").tag(sync=True)

    @property
    def ids(self) -> list[str]:
        """The session ids listed, in order."""
        return [str(item["id"]) for item in self.items]
