"""The notebook's errors, recorded per cell, and the prompts of ``%copilot fix`` / ``explain``.

From the moment the extension loads, :class:`CellErrors` observes every cell through IPython's
``post_run_cell`` event (``shell.events.register``): it reads the cell's result and, if the
cell raised, records a :class:`CellError` under the cell's number. It only observes: no
``set_custom_exc``, no replaced ``showtraceback`` or ``sys.excepthook``; the traceback the
user sees is IPython's, unchanged.

The recorded traceback is formatted from the exception object itself
(``result.error_in_exec.__traceback__``, or ``error_before_exec`` for a cell that did not
compile) with the standard :mod:`traceback` module, not taken from ``shell.InteractiveTB``:

- it is plain text by construction (``InteractiveTB`` colours it with ANSI codes, and its
  colour API changed between IPython 8 and 9; changing its scheme would change what the
  user sees); ANSI codes in an exception's own message are removed too;
- ``sys.last_traceback`` is only set when IPython shows the traceback itself, and holds one
  error, not one per cell;
- IPython's own frames (``run_code``, the compiler) are left out, as IPython leaves them out
  of what it shows, and a cell's frame is labelled ``Cell In[n]`` as IPython labels it.

Caps: a message keeps its first :data:`MESSAGE_LIMIT` characters; a traceback keeps its last
:data:`TRACEBACK_LIMIT` characters (the innermost frames and the error line, what a fix
needs), with a line saying how much was left out; the :data:`KEPT_ERRORS` most recent errors
are kept. Errors of ``%copilot`` / ``%%copilot`` cells themselves are not recorded, so a
mistyped ``%copilot fix`` does not become the error to fix.

Registering it (``load_ipython_extension`` does)::

    errors = CellErrors(shell)
    shell.events.register("post_run_cell", errors.observe)
    errors.last.traceback  # after a cell raised
"""

from __future__ import annotations

import os
import re
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import IPython

__all__ = [
    "KEPT_ERRORS",
    "MESSAGE_LIMIT",
    "TRACEBACK_LIMIT",
    "CellError",
    "CellErrors",
    "explain_prompt",
    "fix_prompt",
    "plain",
]

#: a recorded error message keeps at most this many characters (its head)
MESSAGE_LIMIT = 2_000
#: a recorded traceback keeps at most this many characters (its tail: the innermost frames)
TRACEBACK_LIMIT = 8_000
#: the most errors kept (the oldest are dropped first)
KEPT_ERRORS = 100
#: the code of a cell sent by fix / explain keeps at most this many characters (its head)
CODE_LIMIT = 20_000

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
_IPYTHON_DIR = os.path.dirname(IPython.__file__) + os.sep
_COPILOT_CELL = re.compile(r"^\s*%{1,2}copilot\b")


def plain(text: str) -> str:
    """``text`` without ANSI escape sequences (colours, cursor moves, hyperlinks)."""
    return _ANSI.sub("", text)


def _cut_head(text: str, limit: int, what: str) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[… {what} cut: {len(text):,} characters, the first {limit:,} kept]"


def _cut_tail(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return (
        f"[… the first {len(text) - limit:,} of {len(text):,} characters of the traceback "
        f"left out …]\n{text[-limit:]}"
    )


@dataclass(frozen=True, slots=True)
class CellError:
    """One cell's error: ``type`` (the exception's class name), ``message``, ``traceback``.

    ``traceback`` is the whole formatted traceback (it ends with ``Type: message``), plain
    text, capped; ``cell`` is the cell's number (None for a cell run without history) and
    ``code`` its source as typed.
    """

    cell: int | None
    type: str
    message: str
    traceback: str
    code: str

    @property
    def text(self) -> str:
        """What ``{Err}`` / ``{Err[n]}`` insert: the traceback (type and message at its end)."""
        return self.traceback


class CellErrors:
    """Records the error of every cell that raises, observing ``post_run_cell``.

    ``last`` is the most recent error; ``get(n)`` cell n's. Register :meth:`observe` with
    ``shell.events.register("post_run_cell", errors.observe)``.
    """

    def __init__(self, shell: Any = None) -> None:
        self.shell = shell
        self._by_cell: OrderedDict[int, CellError] = OrderedDict()
        self.last: CellError | None = None

    def observe(self, result: Any) -> None:
        """The ``post_run_cell`` callback: record the cell's error, if it raised one."""
        error = getattr(result, "error_before_exec", None) or getattr(result, "error_in_exec", None)
        if error is None:
            return
        info = getattr(result, "info", None)
        code = getattr(info, "raw_cell", None) or ""
        if _COPILOT_CELL.match(code):
            return
        # a cell run without history (nbval, run_cell(store_history=False)) has no number of
        # its own (IPython gives it the next stored cell's): it is only the last error
        stored = getattr(info, "store_history", True)
        self.record(error, code, getattr(result, "execution_count", None) if stored else None)

    def record(self, error: BaseException, code: str, cell: int | None) -> CellError:
        """Record ``error``, raised by cell number ``cell`` whose source is ``code``."""
        message = plain(str(error))
        entry = CellError(
            cell=cell,
            type=type(error).__name__,
            message=_cut_head(message, MESSAGE_LIMIT, "message"),
            traceback=_cut_tail(self._format(error), TRACEBACK_LIMIT),
            code=code,
        )
        if cell is not None:
            self._by_cell.pop(cell, None)
            self._by_cell[cell] = entry
            while len(self._by_cell) > KEPT_ERRORS:
                self._by_cell.popitem(last=False)
        self.last = entry
        return entry

    def get(self, cell: int) -> CellError | None:
        """Cell ``cell``'s error, or None (it did not raise, or it is no longer kept)."""
        return self._by_cell.get(cell)

    def texts(self) -> dict[int, str]:
        """Cell number -> error text, for :func:`copilot_jupyter.interpolate.interpolate`."""
        return {cell: entry.text for cell, entry in self._by_cell.items()}

    def _format(self, error: BaseException) -> str:
        summary = traceback.TracebackException.from_exception(error)
        frames = list(summary.stack)
        # IPython's own frames come first (run_code, the compiler): IPython hides them too
        while frames and frames[0].filename.startswith(_IPYTHON_DIR):
            frames.pop(0)
        name_of = getattr(getattr(self.shell, "compile", None), "format_code_name", None)
        for frame in frames:
            label = name_of(frame.filename) if name_of is not None else None
            if label:
                frame.filename = " ".join(label)  # "Cell In[3]", as IPython shows it
        summary.stack = traceback.StackSummary.from_list(frames)
        if isinstance(error, SyntaxError) and error.filename and name_of is not None:
            label = name_of(error.filename)
            if label:
                summary.filename = " ".join(label)
        return plain("".join(summary.format())).rstrip("\n")


# -- the prompts of %copilot fix and %copilot explain -----------------------------------------


def _fence(text: str, language: str = "") -> str:
    """``text`` in a Markdown fence longer than any run of backticks inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{language}\n{text}\n{ticks}"


def fix_prompt(error: CellError) -> str:
    """The prompt of ``%copilot fix``: the failed cell's code, its traceback, the instruction."""
    code = _cut_head(error.code, CODE_LIMIT, "code")
    return (
        f"This notebook cell raised {error.type}. Fix it. Reply with the whole corrected "
        "cell in a single ```python block, then say in one or two sentences what was wrong.\n\n"
        f"The cell:\n{_fence(code, 'python')}\n\n"
        f"The error:\n{_fence(error.traceback)}"
    )


def explain_prompt(cell: int, code: str, result: str | None, error: CellError | None) -> str:
    """The prompt of ``%copilot explain``: cell ``cell``'s code and what it produced."""
    parts = [
        f"Explain what notebook cell In[{cell}] does and what its output shows.",
        f"The cell:\n{_fence(_cut_head(code, CODE_LIMIT, 'code'), 'python')}",
    ]
    if result is not None:
        parts.append(f"Its result (Out[{cell}]):\n{_fence(result)}")
    if error is not None:
        parts.append(f"It raised an error:\n{_fence(error.traceback)}")
    if result is None and error is None:
        parts.append("It had no result value (printed output and plots are not recorded).")
    return "\n\n".join(parts)
