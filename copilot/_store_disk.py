"""The store's boundary with diskcache and the file system: what a row may be, and how a
``sqlite3`` or ``OSError`` failure becomes a typed :class:`~copilot.errors.StoreError`.

- :class:`JSONTextDisk` reads and writes JSON text only. A value over 1 MiB lives in a file
  that diskcache names ``xx/yy/<28 hex>.val`` inside the store's directory; any other file
  name (``../../victim.txt``, an absolute path, a symlink) or mode is refused with
  :class:`StoreCorruptedError` before anything is read or deleted.
- :func:`translate` maps one failure to its ``StoreError`` subclass, naming the directory and
  the fix. :class:`EventStore` calls it once, at its public methods.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import stat
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_RAW, MODE_TEXT

from .errors import (
    StoreCorruptedError,
    StoreError,
    StoreFullError,
    StorePermissionError,
)

__all__ = ["JSONTextDisk", "check_row", "translate", "value_files"]

#: the only file names diskcache's ``Disk.filename`` makes: two hex levels, 28 hex, ``.val``
VALUE_FILE = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{28}\.val")

REPAIR_HINT = "client.check() lists the damage and client.repair() fixes what it can"

_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_PERMISSION_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}


def safe_value_path(directory: str | os.PathLike[str], filename: Any) -> str:
    """The full path of value file ``filename``; StoreCorruptedError unless it is a name this
    package writes, inside ``directory``, and (if it exists) a plain file, not a link."""
    if not (isinstance(filename, str) and VALUE_FILE.fullmatch(filename)):
        raise StoreCorruptedError(
            f"a row of the store at {directory} names the file {filename!r}, which this "
            f"package never writes; it was neither read nor deleted. {REPAIR_HINT}"
        )
    full = os.path.join(directory, filename)
    try:
        info = os.lstat(full)
    except FileNotFoundError:
        return full
    real = os.path.realpath(full)
    if not stat.S_ISREG(info.st_mode) or real != os.path.join(
        os.path.realpath(directory), filename
    ):
        raise StoreCorruptedError(
            f"the value file {filename!r} of the store at {directory} is not a plain file "
            f"inside the store; it was neither read nor deleted. {REPAIR_HINT}"
        )
    return full


def check_row(directory: str | os.PathLike[str], key: str, mode: int, filename: Any, value: Any):
    """Raise StoreCorruptedError unless a row is one of the two kinds the store writes:
    JSON text inline (``MODE_RAW``), or JSON text in a value file (``MODE_TEXT``, no value)."""
    if mode == MODE_RAW and type(value) is str and filename is None:
        return
    if mode == MODE_TEXT and value is None:
        safe_value_path(directory, filename)
        return
    raise StoreCorruptedError(
        f"the record {key!r} in the store at {directory} is not JSON text this package "
        f"wrote (mode {mode}); it was not read. {REPAIR_HINT}"
    )


class JSONTextDisk(diskcache.Disk):
    """A diskcache ``Disk`` that stores only strings, never unpickles, and never touches a
    file outside the store.

    Keys must be ``str``; values must be ``str`` (the store writes JSON text). Reading a row
    in any other mode (pickle, bytes), or a value file with a name this package does not
    write, raises :class:`StoreCorruptedError` instead of loading it; removing such a file
    raises too, and nothing is deleted.
    """

    def put(self, key: Any) -> tuple[Any, bool]:
        if type(key) is not str:
            raise StoreError(f"store keys are strings, not {type(key).__name__}")
        return key, True

    def get(self, key: Any, raw: bool) -> Any:
        if not raw or type(key) is not str:
            raise StoreCorruptedError(
                f"the store at {self._directory} holds a key this package did not write. "
                f"{REPAIR_HINT}"
            )
        return key

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> tuple:
        if read or type(value) is not str:
            raise StoreError(f"store values are JSON text, not {type(value).__name__}")
        return super().store(value, read, key=key)

    def _write(self, full_path: str, iterator: Any, mode: str, encoding: str | None = None):
        # A write cut short (a full disk, a file-size limit) must not leave a partial file.
        try:
            return super()._write(full_path, iterator, mode, encoding)
        except BaseException:
            for remove, path in (
                (os.remove, full_path),
                (os.rmdir, os.path.dirname(full_path)),  # the value directories, if now empty
                (os.rmdir, os.path.dirname(os.path.dirname(full_path))),
            ):
                try:
                    remove(path)
                except OSError:
                    break
            raise

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == MODE_RAW and type(value) is str:
            return value
        if mode == MODE_TEXT and not read and value is None:
            safe_value_path(self._directory, filename)
            return super().fetch(mode, filename, value, read)
        raise StoreCorruptedError(
            f"the store at {self._directory} holds a record this package did not write. "
            f"{REPAIR_HINT}"
        )

    def remove(self, file_path: str) -> None:
        safe_value_path(self._directory, file_path)
        super().remove(file_path)


def value_files(directory: Path) -> list[str]:
    """The value files under ``directory`` (names relative to it, as rows hold them), and
    any other file in a value-file directory (a partial write)."""
    found = []
    for first in directory.iterdir():
        if not (len(first.name) == 2 and first.is_dir() and not first.is_symlink()):
            continue
        for second in first.iterdir():
            if len(second.name) != 2 or not second.is_dir() or second.is_symlink():
                continue
            for file in second.iterdir():
                found.append(f"{first.name}/{second.name}/{file.name}")
    return found


def translate(exc: BaseException, directory: Path, doing: str) -> StoreError:
    """The :class:`StoreError` for a ``sqlite3`` or ``OSError`` failure while ``doing``."""
    text = str(exc)
    lowered = text.lower()
    number = getattr(exc, "errno", None)
    where = f"the event store at {directory}"
    damaged = "malformed" in lowered or "not a database" in lowered or "corrupt" in lowered
    if isinstance(exc, sqlite3.DatabaseError) and damaged:
        return StoreCorruptedError(
            f"{where} is damaged ({text}) while {doing}. {REPAIR_HINT}; copy the directory "
            f"first to keep every event whatever happens"
        )
    if number in _FULL_ERRNOS or "full" in lowered or "disk i/o error" in lowered:
        # SQLite reports a write that a file-size limit cut short as "disk I/O error".
        return StoreFullError(
            f"{where} could not be written while {doing}: {text}. The disk is full or a "
            f"file-size limit was reached: free space (or raise the limit) and try again; "
            f"nothing half-written was kept"
        )
    if (
        isinstance(exc, PermissionError)
        or number in _PERMISSION_ERRNOS
        or "readonly" in lowered
        or "unable to open" in lowered
    ):
        return StorePermissionError(
            f"{where} cannot be used while {doing}: {text}. Give this user write permission "
            f"on that directory, or choose another one with "
            f"CopilotClient(base_directory=...) or $COPILOT_JUPYTER_HOME"
        )
    return StoreError(f"{where} failed while {doing}: {type(exc).__name__}: {text}")
