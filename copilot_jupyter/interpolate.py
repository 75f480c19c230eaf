"""Prompt interpolation: ``{name}``, ``{In[3]}`` and ``{Out[3]}`` in a ``%%copilot`` cell.

The rules, applied in one left-to-right pass over the prompt:

- ``{name}`` (a Python identifier, optionally with attributes: ``{df.shape}``) is replaced by
  ``str()`` of that value in the user namespace;
- ``{In[3]}`` is the source of input cell 3 as typed, ``{Out[3]}`` ``str()`` of its result;
- ``{{`` and ``}}`` are literal ``{`` and ``}``;
- anything else in braces, an unknown name or an unknown cell number stays exactly as written,
  so a prompt that quotes code (``{"a": 1}``, ``{ x }``) is not mangled.

Inserted values are never scanned again: a variable whose text contains ``{x}`` is inserted
as is. This is why it is a small tokenizer and not ``str.format`` (which fails on unknown
names and on a lone brace, and would evaluate arbitrary indexing).

>>> interpolate("Explain {name} {{literally}} {missing}", {"name": "x"})
'Explain x {literally} {missing}'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["interpolate"]

# One token per match: an escaped brace, a field, or a lone brace. Text between matches is
# copied as is. Fields hold a dotted name or In[n] / Out[n]; anything else is not a field.
_TOKEN = re.compile(
    r"""
    (?P<open>\{\{) | (?P<close>\}\})
    | \{(?P<history>In|Out)\[(?P<index>\d+)\]\}
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


def _history(kind: str, index: int, inputs: Sequence[str], outputs: Mapping[int, Any]) -> Any:
    if kind == "In":
        # In[0] is an empty placeholder in IPython; only real cells count
        return inputs[index] if 0 < index < len(inputs) else _MISSING
    return outputs.get(index, _MISSING)


def interpolate(
    text: str,
    namespace: Mapping[str, Any],
    *,
    inputs: Sequence[str] = (),
    outputs: Mapping[int, Any] | None = None,
) -> str:
    """Return ``text`` with its fields replaced, once, by the rules of this module.

    Parameters: ``namespace`` (the user namespace, for ``{name}``), ``inputs`` (the raw
    input history, ``In``, for ``{In[n]}``) and ``outputs`` (the output history, ``Out``, for
    ``{Out[n]}``).
    """
    outputs = outputs if outputs is not None else {}
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
                value = _history(match["history"], int(match["index"]), inputs, outputs)
            else:
                value = _lookup(match["name"], namespace)
            pieces.append(match.group(0) if value is _MISSING else str(value))
    pieces.append(text[position:])
    return "".join(pieces)
