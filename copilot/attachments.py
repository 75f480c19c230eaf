"""Attachments of a prompt: validation, reading files, hashing and kinds (issue 14).

``send(prompt, attachments=[...])`` takes the GitHub Copilot SDK's shapes (its
``FileAttachment`` and ``BlobAttachment`` TypedDicts)::

    {"type": "file", "path": "data.csv", "displayName": "optional"}
    {"type": "blob", "data": "<base64>", "mimeType": "image/png", "displayName": "optional"}

:func:`resolve_attachments` checks every item before the turn is queued and returns
:class:`Attachment` values holding the bytes and their sha256. Two kinds are accepted:
images (png, jpeg, gif, webp: recognised by their first bytes, whatever the name says) go to
models that can see as image parts; UTF-8 text goes inline, under a header naming the file.
Anything else is refused with a typed error naming the kinds that work. Each attachment is
capped (``max_bytes``, default :data:`DEFAULT_MAX_BYTES`); a larger one is refused from its
size (a file's ``stat``, a blob's base64 length) before it is read or decoded.

The store keeps the bytes once per content, under their sha256; the ``user.message`` event
holds only :meth:`Attachment.reference` (type, sha256, mimeType, displayName, size).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import (
    AttachmentError,
    AttachmentNotFoundError,
    AttachmentTooLargeError,
    InvalidArgumentTypeError,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "IMAGE_TYPES",
    "Attachment",
    "attachment_from_reference",
    "check_max_bytes",
    "resolve_attachments",
    "text_block",
]

#: the default per-attachment cap: 20 MiB
DEFAULT_MAX_BYTES = 20 * 2**20

#: the image types models accept, by their first bytes
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})

_KINDS = "images (png, jpeg, gif, webp) and UTF-8 text files"


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attachment's bytes, their sha256 (hex), kind and the name shown for it."""

    data: bytes
    mime_type: str
    display_name: str
    sha256: str

    @property
    def size(self) -> int:
        """The length of the bytes."""
        return len(self.data)

    @property
    def is_image(self) -> bool:
        """True for an image a model with vision reads as an image part."""
        return self.mime_type in IMAGE_TYPES

    def reference(self) -> dict[str, Any]:
        """What the ``user.message`` event stores for it: never the bytes."""
        return {
            "type": "image" if self.is_image else "text",
            "sha256": self.sha256,
            "mimeType": self.mime_type,
            "displayName": self.display_name,
            "size": self.size,
        }


def attachment_from_reference(reference: Mapping[str, Any], data: bytes) -> Attachment:
    """The attachment a stored reference names, with its bytes read back from the store."""
    return Attachment(
        data=data,
        mime_type=str(reference.get("mimeType", "application/octet-stream")),
        display_name=str(reference.get("displayName", "")),
        sha256=str(reference.get("sha256", "")),
    )


def text_block(attachment: Attachment) -> str:
    """A text attachment as the model reads it: a header naming the file, then its text."""
    text = attachment.data.decode("utf-8", errors="replace")
    return f"[attached file: {attachment.display_name}]\n{text}\n[end of {attachment.display_name}]"


def check_max_bytes(value: Any) -> int:
    """``max_attachment_bytes`` checked: a positive int."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentTypeError(
            f"max_attachment_bytes must be an int (bytes), not {type(value).__name__}"
        )
    if value <= 0:
        raise AttachmentError(f"max_attachment_bytes must be positive, not {value}")
    return value


def _sniff(data: bytes) -> str | None:
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _kind(data: bytes, declared: str | None, name: str) -> str:
    """The mime type ``data`` is sent as; AttachmentError if it is neither image nor text."""
    image = _sniff(data)
    if image is not None:
        return image
    if declared in IMAGE_TYPES:
        raise AttachmentError(
            f"attachment {name!r} says it is {declared}, but its bytes are not a "
            f"{declared.split('/')[1]} image; attach the image file itself"
        )
    if b"\x00" not in data:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            if declared and declared.startswith("text/"):
                return declared
            return "text/plain"
    raise AttachmentError(
        f"attachment {name!r} is neither an image nor UTF-8 text"
        f"{f' ({declared})' if declared else ''}; attachments can be {_KINDS}"
    )


def _too_large(name: str, size: int, limit: int) -> AttachmentTooLargeError:
    return AttachmentTooLargeError(
        f"attachment {name!r} is {size:,} bytes, over the cap of {limit:,} bytes per "
        f"attachment; nothing was stored. Attach a smaller file, or raise the cap with "
        f"CopilotClient(max_attachment_bytes=...)",
        size=size,
        limit=limit,
        name=name,
    )


def _display_name(item: Mapping[str, Any], default: str) -> str:
    name = item.get("displayName")
    if name is None:
        return default
    if not isinstance(name, str) or not name.strip():
        raise AttachmentError(
            f"an attachment's displayName must be a non-empty string, not {name!r}"
        )
    return name


def _file(item: Mapping[str, Any], max_bytes: int) -> Attachment:
    path = item.get("path")
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise AttachmentError(
            f'a {{"type": "file"}} attachment needs "path": a file\'s path, not {path!r}'
        )
    file = Path(path).expanduser()
    name = _display_name(item, file.name)
    try:
        info = file.stat()
    except OSError:
        raise AttachmentNotFoundError(
            f"attachment file {str(path)!r} does not exist (or cannot be read); "
            f"check the path (relative paths start at {os.getcwd()})"
        ) from None
    if not file.is_file():
        raise AttachmentNotFoundError(f"attachment {str(path)!r} is not a file")
    if info.st_size > max_bytes:
        raise _too_large(name, info.st_size, max_bytes)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise AttachmentNotFoundError(
            f"attachment file {str(path)!r} cannot be read: {exc}"
        ) from None
    if len(data) > max_bytes:  # grew since the stat
        raise _too_large(name, len(data), max_bytes)
    return Attachment(data, _kind(data, None, name), name, hashlib.sha256(data).hexdigest())


def _blob(item: Mapping[str, Any], max_bytes: int) -> Attachment:
    encoded = item.get("data")
    mime = item.get("mimeType")
    name = _display_name(item, "attachment")
    if not isinstance(encoded, str):
        raise AttachmentError(
            f'a {{"type": "blob"}} attachment needs "data": base64 text, not '
            f"{type(encoded).__name__}"
        )
    if not isinstance(mime, str) or "/" not in mime:
        raise AttachmentError(
            f'a {{"type": "blob"}} attachment needs "mimeType" (e.g. "image/png"), not {mime!r}'
        )
    # refuse from the encoded length, before decoding 30 MB: 4 characters carry 3 bytes
    estimate = len(encoded) * 3 // 4 - encoded[-2:].count("=")
    if estimate > max_bytes:
        raise _too_large(name, estimate, max_bytes)
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AttachmentError(
            f'attachment {name!r}: "data" is not valid base64 ({exc}); encode the bytes with '
            f"base64.b64encode(data).decode()"
        ) from None
    if not data:
        raise AttachmentError(f"attachment {name!r} is empty")
    return Attachment(data, _kind(data, mime.lower(), name), name, hashlib.sha256(data).hexdigest())


def resolve_attachments(items: Any, max_bytes: int = DEFAULT_MAX_BYTES) -> list[Attachment]:
    """Check and read ``send(attachments=...)``; raise a typed error naming the first problem.

    ``None`` or an empty list gives ``[]``. The same content attached twice is kept once.
    """
    if items is None:
        return []
    if isinstance(items, (str, bytes, Mapping)) or not hasattr(items, "__iter__"):
        raise InvalidArgumentTypeError(
            "attachments must be a list of dicts such as "
            '[{"type": "file", "path": "plot.png"}], not ' + type(items).__name__
        )
    found: dict[str, Attachment] = {}
    for item in items:
        if not isinstance(item, Mapping):
            raise InvalidArgumentTypeError(
                f'each attachment must be a dict with a "type", not {type(item).__name__}'
            )
        kind = item.get("type")
        if kind == "file":
            attachment = _file(item, max_bytes)
        elif kind == "blob":
            attachment = _blob(item, max_bytes)
        else:
            raise AttachmentError(
                f'unknown attachment type {kind!r}: use "file" (with "path") or "blob" '
                f'(with base64 "data" and "mimeType")'
            )
        found.setdefault(attachment.sha256, attachment)
    return list(found.values())
