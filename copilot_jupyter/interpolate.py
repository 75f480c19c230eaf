"""Prompt interpolation: ``{name}``, ``{In[3]}``, ``{Out[3]}``, ``{Err[3]}`` and ``{@name}``.

The rules, applied in one left-to-right pass over the prompt:

- ``{name}`` (a Python identifier, optionally with attributes: ``{df.shape}``) is replaced by
  ``str()`` of that value in the user namespace;
- ``{In[3]}`` is the source of input cell 3 as typed, ``{Out[3]}`` ``str()`` of its result;
- ``{Err}`` is the last error recorded since the extension loaded and ``{Err[3]}`` cell 3's
  error: its traceback as plain text, ending with ``Type: message``
  (:mod:`copilot_jupyter.context`, which states the caps);
- ``{@name}`` and ``{@Out[3]}`` insert a compact summary of the value instead of its
  ``str()``: a DataFrame's shape, dtypes, head and describe(), an array's shape, dtype and
  stats, a capped repr of anything else (:mod:`copilot_jupyter.summaries`, which states the
  caps). ``@`` cannot start a Python name, a conversion (``!r``) or a format spec (``:>5``),
  so ``{@df}`` was left as written before it meant anything, and ``{df}`` keeps its meaning;
- ``{{`` and ``}}`` are literal ``{`` and ``}`` (``{{@df}}`` is the text ``{@df}``);
- anything else in braces, an unknown name, an unknown cell number or a cell without a
  recorded error stays exactly as written, so a prompt that quotes code (``{"a": 1}``,
  ``{ x }``, ``{x!r}``, ``{x:>5}``) is not mangled.

Inserted values are never scanned again: a variable whose text contains ``{x}`` is inserted
as is. This is why it is a small tokenizer and not ``str.format`` (which fails on unknown
names and on a lone brace, and would evaluate arbitrary indexing).

>>> interpolate("Explain {name} {{literally}} {missing}", {"name": "x"})
'Explain x {literally} {missing}'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .summaries import summarize

__all__ = ["interpolate"]

# One token per match: an escaped brace, a field, or a lone brace. Text between matches is
# copied as is. Fields hold a dotted name, In[n] / Out[n] / Err[n] or Err; a summary field is
# @ then a dotted name or Out[n]; anything else is not a field.
_TOKEN = re.compile(
    r"""
    (?P<open>\{\{) | (?P<close>\}\})
    | \{(?P<history>In|Out|Err)\[(?P<index>\d+)\]\}
    | \{(?P<last_error>Err)\}
    | \{@(?:Out\[(?P<summary_index>\d+)\]|(?P<summary_name>[^\W\d]\w*(?:\.[^\W\d]\w*)*))\}
    | \{(?P<name>[^\W\d]\w*(?:\.[^\W\d]\w*)*)\}
    """,
    re.VERBOSE,
)

_MISSING = object()


def _lookup(dotted: str, namespace: Mapping[str, Any]) -> Any:
    first, *attributes = dotted.split(".")
    value = namespace.get(first, _MISSING)
    for attribute in attributes:
        if value is _MISSING or attribute.startswith("_"):
            return _MISSING  # no private attributes: a prompt is not a place to run code
        value = getattr(value, attribute, _MISSING)
    return value


def _history(
    kind: str,
    index: int,
    inputs: Sequence[str],
    outputs: Mapping[int, Any],
    errors: Mapping[int, str],
) -> Any:
    if kind == "In":
        # In[0] is an empty placeholder in IPython; only real cells count
        return inputs[index] if 0 < index < len(inputs) else _MISSING
    if kind == "Err":
        return errors.get(index, _MISSING)
    return outputs.get(index, _MISSING)


def interpolate(
    text: str,
    namespace: Mapping[str, Any],
    *,
    inputs: Sequence[str] = (),
    outputs: Mapping[int, Any] | None = None,
    errors: Mapping[int, str] | None = None,
    last_error: str | None = None,
    summary: Callable[[Any], str] = summarize,
) -> str:
    """Return ``text`` with its fields replaced, once, by the rules of this module.

    Parameters: ``namespace`` (the user namespace, for ``{name}``), ``inputs`` (the raw
    input history, ``In``, for ``{In[n]}``), ``outputs`` (the output history, ``Out``, for
    ``{Out[n]}``), ``errors`` (cell number -> error text, for ``{Err[n]}``), ``last_error``
    (for ``{Err}``) and ``summary`` (the summary of a value, for ``{@name}``).
    """
    outputs = outputs if outputs is not None else {}
    errors = errors if errors is not None else {}
    pieces: list[str] = []
    position = 0
    for match in _TOKEN.finditer(text):
        pieces.append(text[position : match.start()])
        position = match.end()
        if match["open"]:
            pieces.append("{")
        elif match["close"]:
            pieces.append("}")
        else:
            if match["history"]:
                kind, index = match["history"], int(match["index"])
                value = _history(kind, index, inputs, outputs, errors)
            elif match["last_error"]:
                value = _MISSING if last_error is None else last_error
            elif match["summary_index"]:
                value = outputs.get(int(match["summary_index"]), _MISSING)
            elif match["summary_name"]:
                value = _lookup(match["summary_name"], namespace)
            else:
                value = _lookup(match["name"], namespace)
            if value is _MISSING:
                pieces.append(match.group(0))
            elif match["summary_index"] or match["summary_name"]:
                pieces.append(summary(value))
            else:
                pieces.append(str(value))
    pieces.append(text[position:])
    return "".join(pieces)
