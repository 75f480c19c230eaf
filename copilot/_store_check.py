"""Finding and repairing damage in an event store, without losing an event.

:func:`check_store` reads every row once, in key order, and reports:

==================  =====================================================  ==================
kind                what                                                   repair
==================  =====================================================  ==================
corrupt-record      a row that is not JSON text this package wrote         index/head: rebuilt
                    (bad JSON, wrong shape, a foreign mode or file name)   from the log; an
                                                                           event: kept, reported
sequence-gap        event numbers missing from a session's log (after a    none (reported)
                    corrupt row, which may have held several, none is
                    reported up to the next row)
head-behind         the head says fewer events than the log holds          head rebuilt
head-missing        events and metadata but no head                        head rebuilt
open-index          the head's open turns differ from the log's            head rebuilt
orphan-events       events with no index entry                             index entry rebuilt
orphan-file         a value file no row refers to                          file removed
recency-index       the ``m/`` index differs from the index records        index rebuilt
==================  =====================================================  ==================

Every damage is a dict ``{"kind", "sessionId", "key", "detail", "repairable"}`` (JSON values,
printable by any face); :func:`repair_store` adds ``"repaired": bool``. Repairs never delete
an event row: a corrupt event stays where it is, for a person to look at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from diskcache.core import MODE_TEXT

from ._store_disk import check_row, value_files
from .errors import StoreCorruptedError
from .events import Event, EventType
from .store import (
    _events_of,
    _layout_count,
    _loads,
    _metadata,
    _recent_key,
    _track_open,
    _valid_head,
    copied_counts,
)

if TYPE_CHECKING:
    from .store import EventStore

#: key prefixes of attachment bytes and their references (copilot.store's blob methods)
BLOB_KINDS = ("blob", "blobref", "sblob")

__all__ = ["check_store", "repair_store"]


@dataclass
class _Log:
    """What one pass saw of a session's rows."""

    meta: dict[str, Any] | None = None
    meta_bad: bool = False
    head: dict[str, Any] | None = None
    head_bad: bool = False
    count: int = 0
    last_seq: int = 0
    last_id: str | None = None
    missing: list[int] = field(default_factory=list)
    open: dict[str, int] = field(default_factory=dict)
    #: the last row could not be read: how many events it held is unknown
    unknown_end: bool = False


def _damage(kind: str, session_id: str | None, key: str | None, detail: str, repairable: bool):
    return {
        "kind": kind,
        "sessionId": session_id,
        "key": key,
        "detail": detail,
        "repairable": repairable,
    }


def _scan(
    store: EventStore,
) -> tuple[dict[str, _Log], list[dict[str, Any]], set[str], set[str]]:
    logs: dict[str, _Log] = {}
    recent: set[str] = set()
    damage: list[dict[str, Any]] = []
    used_files: set[str] = set()
    query = "SELECT key, mode, filename, value FROM Cache WHERE raw = 1 ORDER BY key"
    for key, mode, filename, value in store._cache._sql(query).fetchall():
        if filename is not None:
            used_files.add(filename)
        kind, _, rest = key.partition("/")
        if kind == "m":
            recent.add(key)
            continue
        if key == "v/format" or kind in BLOB_KINDS:  # attachments: EventStore.put_blobs
            continue
        if kind == "e":
            session_id, _, seq_text = rest.rpartition("/")
        else:
            session_id, seq_text = rest, ""
        if kind not in ("e", "h", "s") or not session_id:
            damage.append(
                _damage("corrupt-record", None, key, "a key this package never writes", False)
            )
            continue
        log = logs.setdefault(session_id, _Log())
        try:
            check_row(store.directory, key, mode, filename, value)
            if mode == MODE_TEXT:
                value = store._cache.get(key)
            parsed = _loads(value, key)
            if kind == "s":
                log.meta = _metadata(key, parsed)
            elif kind == "h":
                if not _valid_head(parsed):
                    raise StoreCorruptedError(f"the record {key!r} is not a log head")
                log.head = parsed
            else:
                events = _events_of(key, parsed)
                if _layout_count(value) not in (None, len(events)):
                    raise StoreCorruptedError(
                        f"the record {key!r} holds {len(events)} events but its layout says "
                        f"{_layout_count(value)} (changed outside copilot?)"
                    )
        except (StoreCorruptedError, ValueError) as exc:
            if kind == "s":
                log.meta_bad = True
            elif kind == "h":
                log.head_bad = True
            repairable = kind != "e"
            damage.append(_damage("corrupt-record", session_id, key, str(exc), repairable))
            if kind != "e" or not seq_text.isdigit():
                continue
            events = None
        if kind != "e":
            continue
        seq = int(seq_text)
        if seq > log.last_seq + 1 and not log.unknown_end:
            log.missing.extend(range(log.last_seq + 1, min(seq, log.last_seq + 1001)))
        log.unknown_end = events is None
        if events is None:  # counted as one event: a row of several hides no gap report
            log.count += 1
            log.last_seq = max(log.last_seq, seq)
            continue
        log.count += len(events)
        log.last_seq = max(log.last_seq, events[-1].seq)
        log.last_id = events[-1].id
        for event in events:
            _track_open(log.open, event)
    return logs, damage, used_files, recent


def check_store(store: EventStore) -> list[dict[str, Any]]:
    """Every damage in ``store`` (see the module's table); an empty list for a sound store."""
    logs, damage, used_files, recent = _scan(store)
    for session_id, log in logs.items():
        if log.meta is None and not log.meta_bad and log.count:
            damage.append(
                _damage(
                    "orphan-events",
                    session_id,
                    f"s/{session_id}",
                    f"{log.count} events but no index entry",
                    True,
                )
            )
        if log.missing:
            damage.append(
                _damage(
                    "sequence-gap",
                    session_id,
                    None,
                    f"events missing from the log: {_ranges(log.missing)}",
                    False,
                )
            )
        if log.head_bad:
            continue
        if log.head is None:
            if log.count or log.meta is not None:
                damage.append(
                    _damage(
                        "head-missing",
                        session_id,
                        f"h/{session_id}",
                        "the log has no head record",
                        True,
                    )
                )
            continue
        if log.head["seq"] < log.last_seq:
            damage.append(
                _damage(
                    "head-behind",
                    session_id,
                    f"h/{session_id}",
                    f"the head says {log.head['seq']} events, the log holds events up to "
                    f"{log.last_seq}: appends would stop (nothing is overwritten)",
                    True,
                )
            )
        elif log.head["seq"] > log.last_seq:
            if log.unknown_end:  # the unreadable last row may hold them: reported already
                continue
            damage.append(
                _damage(
                    "sequence-gap",
                    session_id,
                    None,
                    f"the head says {log.head['seq']} events, the log ends at "
                    f"{log.last_seq}: the last events are missing",
                    False,
                )
            )
        elif "open" in log.head and log.head["open"] != log.open:
            damage.append(
                _damage(
                    "open-index",
                    session_id,
                    f"h/{session_id}",
                    "the head's list of open turns differs from the log",
                    True,
                )
            )
    for name in value_files(store.directory):
        if name not in used_files:
            damage.append(_damage("orphan-file", None, name, "a value file no row refers to", True))
    expected = {
        _recent_key(log.meta.get("modifiedTime"), session_id)
        for session_id, log in logs.items()
        if log.meta is not None
    }
    if recent != expected:
        detail = (
            f"{len(recent - expected)} stale and {len(expected - recent)} missing entries: "
            f"list_sessions(limit=...) may skip sessions"
        )
        damage.append(_damage("recency-index", None, None, detail, True))
    return damage


def _ranges(numbers: list[int]) -> str:
    parts, start = [], None
    for index, number in enumerate(numbers):
        if start is None:
            start = number
        if index + 1 == len(numbers) or numbers[index + 1] != number + 1:
            parts.append(str(start) if start == number else f"{start}-{number}")
            start = None
    return ", ".join(parts)


def _rebuilt_metadata(session_id: str, events: list[Event]) -> dict[str, Any]:
    start = next((e for e in events if e.type == EventType.SESSION_START), None)
    model = start.data.get("model") if start is not None else None
    for event in events:
        if event.type == EventType.SESSION_MODEL_CHANGE:
            model = event.data.get("newModel", model)
    counts = copied_counts(events)
    return {
        "sessionId": session_id,
        "startTime": events[0].timestamp,
        "modifiedTime": events[-1].timestamp,
        "model": model or counts.get("lastModel") or "echo",
        "systemMessage": start.data.get("systemMessage") if start is not None else None,
        "streaming": True,
        "repaired": True,
        **counts,
    }


def repair_store(store: EventStore) -> list[dict[str, Any]]:
    """Fix what :func:`check_store` finds and can fix, in one transaction; never deletes an
    event. Returns the damage found, each with ``"repaired"`` saying whether it was fixed."""
    with store._cache.transact(retry=True):
        damage = check_store(store)
        logs, _, _, _ = _scan(store)
        for item in damage:
            item["repaired"] = False
            session_id, kind = item["sessionId"], item["kind"]
            if not item["repairable"]:
                continue
            if kind == "recency-index":
                item["repaired"] = True  # rebuilt at the end, after the index records
                continue
            if kind == "orphan-file":
                path = store.directory / item["key"]
                if path.is_file() and not path.is_symlink():
                    path.unlink()
                item["repaired"] = True
                continue
            log = logs[session_id]
            events = store._readable_events(session_id)
            if kind in ("orphan-events", "corrupt-record") and item["key"] == f"s/{session_id}":
                if events:
                    store._set(f"s/{session_id}", _rebuilt_metadata(session_id, events))
                else:
                    store._cache.delete(f"s/{session_id}")  # no event to lose
                item["repaired"] = True
            if item["key"] == f"h/{session_id}" or kind == "orphan-events":
                open_turns: dict[str, int] = {}
                for event in events:
                    _track_open(open_turns, event)
                seq = log.last_seq
                last = events[-1].id if events and events[-1].seq == seq else None
                head = {"seq": seq, "last": last, "open": open_turns}
                store._set(f"h/{session_id}", head)
                item["repaired"] = True
        if damage:
            store.rebuild_recency_index()
    return damage
