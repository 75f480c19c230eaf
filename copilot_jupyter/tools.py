"""The notebook toolset: tools that let a session's model see (and, if allowed, run in) the kernel.

:func:`notebook_tools` builds them over an IPython shell:

* ``list_variables``: the user's variables with their type and shape or length, never values;
* ``describe_variable``: one variable: a DataFrame's shape, dtypes, head and ``describe()``; an
  array's shape and dtype; other objects a short repr; always capped;
* ``read_cell``: cell ``n``'s input, its ``Out[n]`` and the error it raised (if any);
* ``run_code`` (only with ``allow_run_code=True``): runs code in the user's namespace and
  returns its printed output and last value, capped. It never has ``skip_permission``: every
  call goes through the session's ``on_permission_request``, where the notebook shows the code
  and asks the user (the magics and the panel wire that handler).

No tool sees API keys: names that look like secrets (``*KEY*``, ``*TOKEN*``, ``*SECRET*``,
``*PASSWORD*``) are listed but never described, and every text a tool returns has the values
of such environment variables replaced by ``[redacted]``. Every result is capped at
``max_chars`` (default 4,000) before it reaches the model or the log.

Threading: tool handlers run on a worker thread while the cell that sent the prompt waits.
Reading the namespace from there is safe; ``run_code`` redirects ``sys.stdout`` and
``sys.stderr`` while it runs, so output printed by other threads in that moment is captured
too.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import reprlib
import traceback
import types
from collections.abc import Mapping
from typing import Any

from copilot.tools import Tool, define_tool

__all__ = ["DEFAULT_MAX_CHARS", "CellRecorder", "notebook_tools"]

DEFAULT_MAX_CHARS = 4000
_SECRET_NAME = re.compile(r"key|token|secret|passw", re.IGNORECASE)
#: names IPython puts in the namespace
_IPYTHON_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython", "open"})


class CellRecorder:
    """Remembers, per execution count, the error a cell raised (IPython keeps only the last).

    Registered once per shell on ``post_run_cell``.
    """

    def __init__(self) -> None:
        self.errors: dict[int, str] = {}

    def __call__(self, result: Any) -> None:
        error = result.error_in_exec or result.error_before_exec
        count = result.execution_count
        if error is not None and count is not None:
            self.errors[count] = f"{type(error).__name__}: {error}"

    @classmethod
    def of(cls, shell: Any) -> CellRecorder:
        """The shell's recorder, registered on first use."""
        recorder = getattr(shell, "_copilot_cell_recorder", None)
        if recorder is None:
            recorder = cls()
            shell.events.register("post_run_cell", recorder)
            shell._copilot_cell_recorder = recorder
        return recorder


def _secret_values() -> list[str]:
    return [
        value
        for name, value in os.environ.items()
        if _SECRET_NAME.search(name) and len(value.strip()) >= 6
    ]


def _clean(text: str, max_chars: int) -> str:
    """Redact secret values, then cap ``text`` at ``max_chars`` (saying so)."""
    for secret in _secret_values():
        text = text.replace(secret, "[redacted]")
    if len(text) > max_chars:
        text = f"{text[:max_chars]}\n[... cut: {len(text)} characters, {max_chars} shown]"
    return text


def _user_variables(shell: Any) -> dict[str, Any]:
    hidden = getattr(shell, "user_ns_hidden", {}) or {}
    namespace = dict(shell.user_ns)  # a snapshot: the kernel may change it meanwhile
    return {
        name: value
        for name, value in namespace.items()
        if not name.startswith("_")
        and name not in _IPYTHON_NAMES
        and (name not in hidden or hidden[name] is not value)
        and not isinstance(value, types.ModuleType)
    }


def _size(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple):
        return "shape " + "x".join(map(str, shape))
    if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
        return f"length {len(value)}"
    return ""


def _short_repr(value: Any, max_chars: int) -> str:
    short = reprlib.Repr()
    short.maxstring = short.maxother = min(max_chars, 400)
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 20
    try:
        return short.repr(value)
    except Exception as exc:  # a broken __repr__ must not break the tool
        return f"<repr failed: {type(exc).__name__}>"


def notebook_tools(
    shell: Any, *, allow_run_code: bool = False, max_chars: int = DEFAULT_MAX_CHARS
) -> list[Tool]:
    """The notebook toolset over ``shell`` (an IPython ``InteractiveShell``).

    Example (what ``%%copilot NAME --tools notebook`` does)::

        from copilot_jupyter.tools import notebook_tools
        session = client.create_session(
            session_id="nb", tools=notebook_tools(get_ipython()),
            on_permission_request=ask_in_the_notebook,
        )

    Parameters:
        shell: the kernel's shell.
        allow_run_code: add ``run_code`` (off by default; each call still needs permission).
        max_chars: the cap on each result's text.
    """
    recorder = CellRecorder.of(shell)

    @define_tool(
        description=(
            "List the notebook's variables: name, type and shape or length (never values)."
        ),
        skip_permission=True,
    )
    def list_variables() -> str:
        lines = []
        for name, value in sorted(_user_variables(shell).items()):
            kind = type(value).__name__
            size = _size(value)
            lines.append(f"{name}: {kind}" + (f", {size}" if size else ""))
        return _clean("\n".join(lines) or "(no variables)", max_chars)

    @define_tool(
        description=(
            "Describe one notebook variable: a DataFrame's shape, dtypes, head and summary "
            "statistics; an array's shape and dtype; otherwise a short repr."
        ),
        skip_permission=True,
    )
    def describe_variable(name: str) -> str:
        variables = _user_variables(shell)
        if name not in variables:
            known = ", ".join(sorted(variables)) or "none"
            return f"There is no variable {name!r}. Variables: {known}."
        if _SECRET_NAME.search(name):
            return f"{name!r} looks like a secret: it is not shown."
        value = variables[name]
        return _clean(_describe(name, value, max_chars), max_chars)

    @define_tool(
        description="Read notebook cell n (its execution count): input, output and error.",
        skip_permission=True,
    )
    def read_cell(n: int) -> str:
        inputs = shell.user_ns.get("In") or []
        if not 0 < n < len(inputs):
            return f"There is no cell {n}; cells run so far: 1 to {len(inputs) - 1}."
        parts = [f"In [{n}]:\n{inputs[n]}"]
        outputs: Mapping[int, Any] = shell.user_ns.get("Out") or {}
        if n in outputs:
            parts.append(f"Out [{n}]:\n{_short_repr(outputs[n], max_chars)}")
        if n in recorder.errors:
            parts.append(f"Error:\n{recorder.errors[n]}")
        return _clean("\n\n".join(parts), max_chars)

    tools = [list_variables, describe_variable, read_cell]
    if allow_run_code:

        @define_tool(
            description=(
                "Run Python code in the notebook's kernel (the user approves each run); "
                "returns what it printed and the value of its last expression."
            ),
        )
        def run_code(code: str) -> str:
            return _clean(_run(shell, code), max_chars)

        tools.append(run_code)
    return tools


def _describe(name: str, value: Any, max_chars: int) -> str:
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    head = getattr(value, "head", None)
    dtypes = getattr(value, "dtypes", None)
    if callable(head) and dtypes is not None and hasattr(value, "describe"):  # a DataFrame
        parts = [
            f"{name}: {kind}, shape {value.shape}",
            f"dtypes:\n{dtypes.to_string() if hasattr(dtypes, 'to_string') else dtypes}",
            f"head:\n{value.head(5).to_string()}",
        ]
        try:
            parts.append(f"describe:\n{value.describe().to_string()}")
        except Exception as exc:
            parts.append(f"describe failed: {type(exc).__name__}")
        return "\n\n".join(parts)
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple):
        dtype = getattr(value, "dtype", "")
        return f"{name}: {kind}, shape {shape}, dtype {dtype}\n{_short_repr(value, max_chars)}"
    size = _size(value)
    return f"{name}: {kind}" + (f", {size}" if size else "") + f"\n{_short_repr(value, max_chars)}"


def _run(shell: Any, code: str) -> str:
    """Run ``code`` in the user namespace; its output, last value or error as text."""
    try:
        tree = ast.parse(code, mode="exec")
    except SyntaxError as exc:
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    out = io.StringIO()
    namespace = shell.user_ns
    value = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            exec(compile(tree, "<copilot run_code>", "exec"), namespace)
            if last is not None:
                value = eval(compile(last, "<copilot run_code>", "eval"), namespace)
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        where = next((f"line {f.lineno}" for f in frames if f.filename == "<copilot run_code>"), "")
        printed = out.getvalue()
        return (
            (printed + "\n" if printed else "")
            + f"{type(exc).__name__}: {exc}"
            + (f" ({where})" if where else "")
        )
    text = out.getvalue()
    if value is not None:
        text += ("\n" if text and not text.endswith("\n") else "") + repr(value)
    return text or "(no output)"
