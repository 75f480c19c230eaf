"""Checks on user input, done in the caller's thread so errors surface where the call was made."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from typing import Any

from .errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = [
    "MAX_SESSION_ID_LENGTH",
    "validate_metadata",
    "validate_prompt",
    "validate_session_id",
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
