"""Compact summaries of values, for ``{@name}`` in a prompt.

- a pandas ``DataFrame``: its shape, dtypes, ``head(5)`` and ``describe()``; a ``Series``
  the same (name, length, dtype, head, describe);
- a numpy ``ndarray``: shape, dtype, and for numbers min, max, mean, std and the count of
  NaNs, then a short preview of the values;
- anything else: its type and a capped repr (:mod:`reprlib`, so a long list is not first
  rendered in full).

Caps: a DataFrame's parts show at most :data:`MAX_COLUMNS` columns (the first and last
ones) and cells of at most :data:`MAX_COLWIDTH` characters; a repr keeps
:data:`REPR_LIMIT` characters; a whole summary keeps :data:`SUMMARY_LIMIT` characters, with
a line saying it was cut.

pandas and numpy are never imported here: a value is a DataFrame only if pandas is already
loaded (``sys.modules``), which it is if the user holds one. Neither is a dependency.

>>> summarize([1, 2, 3])
'list (3 items): [1, 2, 3]'
"""

from __future__ import annotations

import reprlib
import sys
from typing import Any

__all__ = ["MAX_COLUMNS", "MAX_COLWIDTH", "REPR_LIMIT", "SUMMARY_LIMIT", "summarize"]

#: the most characters a summary keeps (its head)
SUMMARY_LIMIT = 6_000
#: the most characters the repr of a value that is not a DataFrame, Series or array keeps
REPR_LIMIT = 1_000
#: the most columns shown of a DataFrame's head and describe (and dtypes listed)
MAX_COLUMNS = 20
#: the widest a cell of a DataFrame's head is shown, in characters
MAX_COLWIDTH = 50

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = 20
_REPR.maxdict = 20
_REPR.maxstring = REPR_LIMIT
_REPR.maxother = REPR_LIMIT


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[… cut: {len(text):,} characters, the first {limit:,} kept]"


def _attempt(what: str, produce: Any) -> str:
    """``produce()``, or a line saying why it is not available (describe() of no columns)."""
    try:
        return str(produce())
    except Exception as error:  # a summary never fails: it says what it could not show
        return f"({what} not available: {type(error).__name__}: {error})"


def _frame(pandas: Any, value: Any) -> str:
    rows, columns = value.shape
    shown = value
    note = ""
    if columns > MAX_COLUMNS:
        half = MAX_COLUMNS // 2
        shown = pandas.concat([value.iloc[:, :half], value.iloc[:, -half:]], axis=1)
        note = f" (the first and last {half} of {columns:,} columns shown)"
    dtypes = "\n".join(f"  {name}: {dtype}" for name, dtype in shown.dtypes.items())
    text = {"max_cols": MAX_COLUMNS, "max_colwidth": MAX_COLWIDTH}
    return "\n".join(
        [
            f"pandas.DataFrame: {rows:,} rows x {columns:,} columns{note}",
            f"dtypes:\n{dtypes}",
            "head(5):\n" + _attempt("head", lambda: shown.head(5).to_string(**text)),
            "describe():\n" + _attempt("describe", lambda: shown.describe().to_string(**text)),
        ]
    )


def _series(value: Any) -> str:
    name = f" {value.name!r}" if value.name is not None else ""
    return "\n".join(
        [
            f"pandas.Series{name}: {len(value):,} values, dtype {value.dtype}",
            "head(5):\n" + _attempt("head", lambda: value.head(5).to_string(max_rows=5)),
            "describe():\n" + _attempt("describe", lambda: value.describe().to_string()),
        ]
    )


def _array(numpy: Any, value: Any) -> str:
    lines = [f"numpy.ndarray: shape {value.shape}, dtype {value.dtype}"]
    if value.size and (numpy.issubdtype(value.dtype, numpy.number) or value.dtype == numpy.bool_):
        numbers = value.astype(float) if value.dtype == numpy.bool_ else value

        def stats() -> str:
            nans = int(numpy.isnan(numbers).sum())
            return (
                f"min {numpy.nanmin(numbers):.6g}, max {numpy.nanmax(numbers):.6g}, "
                f"mean {numpy.nanmean(numbers):.6g}, std {numpy.nanstd(numbers):.6g}, "
                f"NaN {nans:,}"
            )

        lines.append(_attempt("stats", stats))
    lines.append(
        "values: "
        + _attempt(
            "values", lambda: numpy.array2string(value, threshold=20, edgeitems=3, precision=6)
        )
    )
    return "\n".join(lines)


def _other(value: Any) -> str:
    kind = type(value).__name__
    try:
        size = f" ({len(value):,} items)" if isinstance(value, list | tuple | dict | set) else ""
        return f"{kind}{size}: {_cut(_REPR.repr(value), REPR_LIMIT)}"
    except Exception as error:  # a broken __repr__ is the user's, not ours to raise
        return f"{kind}: (repr failed: {type(error).__name__}: {error})"


def summarize(value: Any) -> str:
    """A compact, capped summary of ``value`` (see the module docstring for what it holds)."""
    pandas = sys.modules.get("pandas")
    numpy = sys.modules.get("numpy")
    if pandas is not None and isinstance(value, pandas.DataFrame):
        text = _frame(pandas, value)
    elif pandas is not None and isinstance(value, pandas.Series):
        text = _series(value)
    elif numpy is not None and isinstance(value, numpy.ndarray):
        text = _array(numpy, value)
    else:
        text = _other(value)
    return _cut(text, SUMMARY_LIMIT)
