"""Figures and image outputs a cell showed, for ``%%copilot -a fig`` and ``-a Out[n]``.

ipykernel keeps ``display_data`` outputs only in the front end, so :class:`FigureLog`
observes them as they leave: a hook on ``shell.display_pub`` (ipykernel's
``ZMQDisplayPublisher.register_hook``) sees each message, keeps its ``image/png`` payload
(already base64), and returns the message unchanged; at ``post_run_cell`` the PNGs the cell
showed are filed under its number (``ExecutionResult.execution_count``: IPython 9 has
already counted the cell at ``pre_run_cell``, IPython 8 had not, so the count is read only
from the result). matplotlib's inline backend publishes a cell's figures in ``post_execute``,
before ``post_run_cell``. A shell
without that hook (a terminal IPython) records nothing; ``Out[n]`` then still works for a
result that renders as PNG (``_repr_png_``, a matplotlib ``Figure``).

:func:`attachment_for` turns a ``-a`` SPEC into the dict ``session.send(attachments=...)``
takes: a path, ``Out[n]`` or ``fig``.
"""

from __future__ import annotations

import base64
import io
import re
from collections import OrderedDict
from typing import Any

from copilot.errors import AttachmentError

__all__ = ["KEPT_CELLS", "FigureLog", "attachment_for"]

#: how many cells' images are kept (the newest); older ones are forgotten
KEPT_CELLS = 50

_OUT = re.compile(r"Out\[(\d+)\]")


class FigureLog:
    """The ``image/png`` outputs of the newest cells, observed from the display publisher."""

    def __init__(self, shell: Any = None) -> None:
        self.shell = shell
        #: cell number -> the base64 PNGs it displayed, in order
        self._by_cell: OrderedDict[int, list[str]] = OrderedDict()
        #: the PNGs the running cell showed so far
        self._pending: list[str] = []
        #: the newest PNG displayed (base64) and its cell
        self.last: tuple[int | None, str] | None = None
        self.hooked = False

    def attach(self) -> bool:
        """Observe ``shell``: its cells' numbers and its display publisher's messages.
        Returns False when the publisher has no hooks (nothing is recorded then)."""
        if self.shell is None:
            return False
        self.shell.events.register("pre_run_cell", self.pre_run_cell)
        self.shell.events.register("post_run_cell", self.post_run_cell)
        register = getattr(getattr(self.shell, "display_pub", None), "register_hook", None)
        if register is None:
            return False
        register(self.hook)
        self.hooked = True
        return True

    def detach(self) -> None:
        """Stop observing (the extension is unloaded)."""
        if self.shell is None:
            return
        for event, callback in (
            ("pre_run_cell", self.pre_run_cell),
            ("post_run_cell", self.post_run_cell),
        ):
            if callback in self.shell.events.callbacks[event]:
                self.shell.events.unregister(event, callback)
        unregister = getattr(getattr(self.shell, "display_pub", None), "unregister_hook", None)
        if self.hooked and unregister is not None:
            unregister(self.hook)
        self.hooked = False

    def pre_run_cell(self, info: Any = None) -> None:
        """A cell starts: what it shows is pending until it ends."""
        self._pending = []

    def post_run_cell(self, result: Any = None) -> None:
        """A cell ended: file what it showed under its number (a cell run without history
        has none of its own: its images are only the last figure)."""
        pending, self._pending = self._pending, []
        info = getattr(result, "info", None)
        stored = getattr(info, "store_history", True)
        cell = getattr(result, "execution_count", None) if stored else None
        for png in pending:
            self.record(png, cell)

    def hook(self, msg: Any) -> Any:
        """The display publisher's hook: note a PNG, return the message unchanged."""
        try:
            png = msg["content"]["data"].get("image/png")
        except (KeyError, TypeError, AttributeError):
            return msg
        if isinstance(png, str) and png:
            self._pending.append(png)
            self.last = (None, png)  # numbered when the cell ends
        return msg

    def record(self, png_base64: str, cell: int | None) -> None:
        """Keep one displayed PNG (base64) of cell ``cell``."""
        self.last = (cell, png_base64)
        if cell is None:
            return
        self._by_cell.setdefault(cell, []).append(png_base64)
        self._by_cell.move_to_end(cell)
        while len(self._by_cell) > KEPT_CELLS:
            self._by_cell.popitem(last=False)

    def of_cell(self, cell: int) -> list[str]:
        """The PNGs (base64) cell ``cell`` displayed, in order (empty: none kept)."""
        return list(self._by_cell.get(cell, ()))


def _png_of(value: Any) -> bytes | None:
    """A result's PNG: its ``_repr_png_``, or a matplotlib figure saved as PNG."""
    if hasattr(value, "savefig"):
        buffer = io.BytesIO()
        value.savefig(buffer, format="png")
        return buffer.getvalue()
    render = getattr(value, "_repr_png_", None)
    if callable(render):
        data = render()
        if isinstance(data, tuple):  # (data, metadata)
            data = data[0]
        if isinstance(data, str):
            return base64.b64decode(data)
        if isinstance(data, bytes):
            return data
    return None


def _blob(png_base64: str, name: str) -> dict[str, Any]:
    text = "".join(png_base64.split())  # the front-end encoding may wrap lines
    return {"type": "blob", "data": text, "mimeType": "image/png", "displayName": name}


def attachment_for(spec: str, figures: FigureLog, outputs: Any) -> dict[str, Any]:
    """The ``send(attachments=...)`` item for one ``-a SPEC`` of ``%%copilot``.

    ``fig``: the last figure shown; ``Out[n]``: the image cell n displayed (its last one) or
    its result's PNG; anything else: a file path. Raises :class:`AttachmentError` naming
    what to do when there is no such image.
    """
    if spec == "fig":
        if figures.last is None:
            raise AttachmentError(
                "%%copilot -a fig: no figure has been shown since %load_ext copilot_jupyter; "
                "draw one in a cell (e.g. plt.plot(...)) and run this cell again, or attach a "
                "file with -a PATH"
            )
        cell, png = figures.last
        return _blob(png, f"Out[{cell}].png" if cell is not None else "figure.png")
    match = _OUT.fullmatch(spec)
    if match is None:
        return {"type": "file", "path": spec}
    cell = int(match.group(1))
    shown = figures.of_cell(cell)
    if shown:
        return _blob(shown[-1], f"Out[{cell}].png")
    value = (outputs or {}).get(cell)
    png = _png_of(value) if value is not None else None
    if png is None:
        raise AttachmentError(
            f"%%copilot -a Out[{cell}]: cell {cell} showed no image (image/png) since "
            "%load_ext copilot_jupyter, and its result is not one; run the cell that draws "
            "it again, or use -a fig for the last figure"
        )
    return _blob(base64.b64encode(png).decode("ascii"), f"Out[{cell}].png")
