"""Checks on user input, done in the caller's thread so errors surface where the call was made."""

from __future__ import annotations

import json
import math
import numbers
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = [
    "MAX_SESSION_ID_LENGTH",
    "SEND_OPTIONS",
    "OptionSpec",
    "validate_limit",
    "validate_metadata",
    "validate_option",
    "validate_paging",
    "validate_prompt",
    "validate_send",
    "validate_session_id",
    "validate_session_options",
]

MAX_SESSION_ID_LENGTH = 128


def validate_session_id(session_id: Any) -> str:
    """Return ``session_id`` if it is a usable id, else raise naming what is wrong.

    An id is 1 to 128 characters with no control characters, no path separators, no ``..``
    and no leading or trailing white space: it must be safe as a file name, a key and a
    word on a magic's command line.
    """
    if not isinstance(session_id, str):
        raise InvalidArgumentTypeError(f"a session id is a string, not {type(session_id).__name__}")
    if not session_id:
        raise InvalidArgumentError("a session id cannot be empty; pass e.g. 'user-123-chat'")
    if len(session_id) > MAX_SESSION_ID_LENGTH:
        raise InvalidArgumentError(
            f"a session id has at most {MAX_SESSION_ID_LENGTH} characters; "
            f"this one has {len(session_id)}"
        )
    if session_id != session_id.strip():
        raise InvalidArgumentError(
            f"a session id cannot start or end with white space: {session_id!r}"
        )
    for char in session_id:
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            raise InvalidArgumentError(
                f"a session id cannot contain control or unassigned characters "
                f"(found {char!r} in {session_id!r})"
            )
    if "/" in session_id or "\\" in session_id:
        raise InvalidArgumentError(
            f"a session id cannot contain '/' or '\\': {session_id!r}; use '-' or '_'"
        )
    if ".." in session_id or session_id == ".":
        raise InvalidArgumentError(f"a session id cannot be '.' or contain '..': {session_id!r}")
    return session_id


def validate_prompt(prompt: Any) -> str:
    """Return ``prompt`` if it is a non-blank string, else raise."""
    if not isinstance(prompt, str):
        raise InvalidArgumentTypeError(f"a prompt is a string, not {type(prompt).__name__}")
    if not prompt.strip():
        raise InvalidArgumentError("a prompt cannot be empty or only white space")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(
            f"a prompt must be valid Unicode text; it has a lone surrogate at {exc.start}"
        ) from None
    return prompt


def validate_metadata(metadata: Any) -> dict[str, Any] | None:
    """Return ``metadata`` as a plain dict if it is a mapping of JSON values, else raise."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise InvalidArgumentTypeError("metadata is a mapping with string keys")
    try:
        return json.loads(json.dumps(dict(metadata), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"metadata must hold JSON values only: {exc}") from None


# -- options -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """What one option accepts. ``kind`` is ``"number"`` (int or float, finite),
    ``"integer"`` (int; a bool is not one), ``"stop"`` (a string or a list of 1 to 4
    non-empty strings), ``"text"`` (a non-empty string), ``"bool"`` or ``"effort"`` (a
    reasoning effort). ``low``/``high`` bound a
    number (``low_open``: the bound itself is refused). ``None`` always means "not given"."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def describe(self) -> str:
        """The accepted values in words, for error messages."""
        if self.kind == "stop":
            return "a string or a list of 1 to 4 non-empty strings"
        if self.kind == "text":
            return "a non-empty string"
        if self.kind == "bool":
            return "True or False"
        if self.kind == "effort":
            return " or ".join(repr(e) for e in REASONING_EFFORTS)
        noun = "an integer" if self.kind == "integer" else "a finite number"
        if self.low is not None and self.high is not None:
            return f"{noun} from {self.low:g} to {self.high:g}"
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '>='} {self.low:g}"
        return noun


#: every generation option ``send``/``send_and_wait`` accept (the union of what the providers
#: pass on; a provider ignores those its API lacks), with the values each accepts
SEND_OPTIONS: dict[str, OptionSpec] = {
    "temperature": OptionSpec("number", 0, 2),
    "top_p": OptionSpec("number", 0, 1),
    "min_p": OptionSpec("number", 0, 1),
    "top_k": OptionSpec("integer", 1),
    "max_tokens": OptionSpec("integer", 1),
    "max_completion_tokens": OptionSpec("integer", 1),
    "seed": OptionSpec("integer", -(2**63), 2**63 - 1),
    "presence_penalty": OptionSpec("number", -2, 2),
    "frequency_penalty": OptionSpec("number", -2, 2),
    "repeat_penalty": OptionSpec("number", 0, low_open=True),
    "timeout": OptionSpec("number", 0, low_open=True),
    "stop": OptionSpec("stop"),
    "reasoning_effort": OptionSpec("effort"),
}

#: the values ``reasoning_effort`` takes
REASONING_EFFORTS = ("low", "medium", "high")

#: the options of ``create_session`` checked here (the id and system message have their own)
SESSION_OPTIONS: dict[str, OptionSpec] = {
    "model": OptionSpec("text"),
    "streaming": OptionSpec("bool"),
}


def validate_option(name: str, value: Any, spec: OptionSpec | None = None) -> Any:
    """Return ``value`` as a plain Python value if option ``name`` accepts it, else raise
    :class:`InvalidArgumentTypeError` (wrong type) or :class:`InvalidArgumentError` (out of
    range, nan, inf), naming the option and what it accepts."""
    spec = spec or SEND_OPTIONS[name]
    if value is None:
        return None
    accepts = f"{name} is {spec.describe()} (or None)"
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise InvalidArgumentTypeError(f"{accepts}, not {type(value).__name__} {value!r}")
        return value
    if spec.kind == "effort":
        if not isinstance(value, str):
            raise InvalidArgumentTypeError(f"{accepts}, not {type(value).__name__} {value!r}")
        if value not in REASONING_EFFORTS:
            raise InvalidArgumentError(f"{accepts}, not {value!r}")
        return value
    if spec.kind == "text":
        if not isinstance(value, str):
            raise InvalidArgumentTypeError(f"{accepts}, not {type(value).__name__} {value!r}")
        if not value.strip():
            raise InvalidArgumentError(f"{accepts}, not an empty string")
        return value
    if spec.kind == "stop":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise InvalidArgumentTypeError(f"{accepts}, not {type(value).__name__} {value!r}")
        if not 1 <= len(items) <= 4 or not all(items):
            raise InvalidArgumentError(f"{accepts}, not {value!r}")
        return value if isinstance(value, str) else list(items)
    wanted = numbers.Integral if spec.kind == "integer" else numbers.Real
    if isinstance(value, bool) or not isinstance(value, wanted):
        raise InvalidArgumentTypeError(f"{accepts}, not {type(value).__name__} {value!r}")
    number = int(value) if spec.kind == "integer" else float(value)
    if not math.isfinite(number):
        raise InvalidArgumentError(f"{accepts}, not {value!r}")
    too_low = spec.low is not None and (number <= spec.low if spec.low_open else number < spec.low)
    if too_low or (spec.high is not None and number > spec.high):
        raise InvalidArgumentError(f"{accepts}, not {value!r}")
    return number


def validate_send(
    replaces: Any, metadata: Any, options: Mapping[str, Any]
) -> tuple[str | None, Any, dict[str, Any]]:
    """Check ``send``/``send_and_wait`` arguments before the turn is queued; return
    ``replaces``, ``metadata`` and the generation options as plain values.

    ``replaces`` and ``metadata`` may also come inside ``options`` (the SDK's dict form,
    ``send({"prompt": ..., "replaces": ...})``). An unknown option is refused: a typo would
    otherwise be dropped silently.
    """
    options = dict(options)
    replaces = options.pop("replaces", None) if replaces is None else replaces
    metadata = options.pop("metadata", None) if metadata is None else metadata
    if replaces is not None:
        if not isinstance(replaces, str):
            raise InvalidArgumentTypeError(
                f"replaces is the message id (a string) of an earlier turn, not "
                f"{type(replaces).__name__} {replaces!r}"
            )
        if not replaces.strip():
            raise InvalidArgumentError("replaces is an earlier turn's message id, not ''")
    unknown = sorted(set(options) - SEND_OPTIONS.keys())
    if unknown:
        raise InvalidArgumentError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; send() "
            f"accepts replaces, metadata and {', '.join(SEND_OPTIONS)}"
        )
    return replaces, metadata, {name: validate_option(name, v) for name, v in options.items()}


def validate_session_options(**options: Any) -> dict[str, Any]:
    """Check ``create_session`` options (``model``, ``streaming``) before anything is stored."""
    return {name: validate_option(name, v, SESSION_OPTIONS[name]) for name, v in options.items()}


def _count(name: str, value: Any, low: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentTypeError(
            f"{name} is an integer >= {low} (or None), not {type(value).__name__} {value!r}"
        )
    if value < low:
        raise InvalidArgumentError(f"{name} is an integer >= {low} (or None), not {value!r}")
    return int(value)


def validate_paging(after: Any, limit: Any, last: Any = None) -> tuple[int, int | None, int | None]:
    """Check ``get_messages(after=, limit=, last=)``: ``after`` a sequence number >= 0,
    ``limit`` and ``last`` counts >= 1; ``last`` (the newest N) cannot be combined."""
    after = _count("after", after, 0) or 0
    limit = _count("limit", limit, 1)
    last = _count("last", last, 1)
    if last is not None and (after or limit is not None):
        raise InvalidArgumentError(
            "last=N reads the newest N events; it cannot be combined with after= or limit="
        )
    return after, limit, last


def validate_limit(limit: Any) -> int | None:
    """Check ``list_sessions(limit=)``: a count >= 1, or None for every session."""
    return _count("limit", limit, 1)
