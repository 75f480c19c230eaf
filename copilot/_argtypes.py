"""Argument types shared by the command line (``python -m copilot``) and the ``%copilot``
magic, so both surfaces check ``-n`` alike and say the same thing when it is wrong."""

from __future__ import annotations

import argparse

__all__ = ["exchange_count"]


def exchange_count(text: str) -> int:
    """``history -n``: a whole number of exchanges, 1 or more (0 and negatives are refused)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"N is the number of latest exchanges to show, 1 or more (got {value}); "
            "leave out -n for the whole history"
        )
    return value
