"""3. Resume and read: a long session's log, and the sessions index.

* ``resume_session`` + ``get_messages`` of a session of 10,000 turns (about 60,000 events, as
  real echo turns write them with compaction off: a ``session.truncation`` in most turns; with
  compaction, on by default, the same turns write about 50,000), each time in a fresh client
  (its start not timed); then the newest 20 events of it (``get_messages(last=20)``), and the
  time to read every event's type and data after ``get_messages()`` (rows are parsed when
  their events are first used: row 3k shows what a reader of every event pays in all).
* The peak memory (``tracemalloc``) of ``get_messages()`` of that session and of iterating it
  with ``iter_messages()``, each in a fresh client.
* ``list_sessions`` with 1,000 and then 10,000 stored sessions (made with ``create_session``),
  in a fresh client, and the newest 50 (``list_sessions(limit=50)``); then with 100,000 (the
  90,000 more written by ``EventStore.create_session``, 1,000 per transaction: the same rows).

Baseline: the floor for the same work, in the same run: the same rows read from the store's
SQLite file with the ``sqlite3`` module and parsed with ``json.loads`` (sorted by
``modifiedTime`` for the index), no library in between. Targets: under 100 ms each (absolute).
"""

from __future__ import annotations

import json
import sqlite3
import time
import tracemalloc
from pathlib import Path

from copilot import CopilotClient
from copilot.events import utc_now
from copilot.store import EventStore

from ._util import (
    Row,
    median,
    prompt_text,
    ratio,
    sample,
    scratch,
    settle,
    summary_ms,
    verdict,
)

SESSION = "bench-long"
TARGET_MS = 100.0
#: list_sessions() of 100,000 sessions
HUGE_INDEX_MS = 200.0
#: peak memory of reading a whole 10,000-turn session
READ_MB = 50.0
#: the newest 20 events of a session, the newest 50 sessions: at any length or count
NEWEST_MS = 5.0


def build_long_session(home: Path, turns: int) -> int:
    """Run ``turns`` real echo turns in one session; return the events it then holds."""
    client = CopilotClient(base_directory=home, default_model="echo")
    try:
        # compaction off: a session.truncation event in most turns, ~60,000 events in all (the
        # issue's workload); with it on, the turns write ~50,000
        session = client.create_session(
            session_id=SESSION, model="echo", infinite_sessions={"enabled": False}
        )
        for i in range(turns - 1):
            session.send(prompt_text(i))
        session.send_and_wait(prompt_text(turns - 1), timeout=3600)
        return len(session.get_messages())
    finally:
        client.stop()


def _floor_events(home: Path, session_id: str) -> int:
    """The session's events read straight from SQLite and parsed: the floor."""
    with sqlite3.connect(home / "sessions" / "cache.db") as db:
        rows = db.execute(
            "SELECT value FROM Cache WHERE key >= ? AND key < ? ORDER BY key",
            (f"e/{session_id}/", f"e/{session_id}/:"),
        ).fetchall()
    return len([json.loads(value) for (value,) in rows])


def _floor_index(home: Path) -> int:
    with sqlite3.connect(home / "sessions" / "cache.db") as db:
        rows = db.execute(
            "SELECT value FROM Cache WHERE key >= 's/' AND key < 's0' ORDER BY key"
        ).fetchall()
    sessions = [json.loads(value) for (value,) in rows]
    sessions.sort(key=lambda s: s.get("modifiedTime", ""), reverse=True)
    return len(sessions)


def run(quick: bool) -> list[Row]:
    n_turns = 300 if quick else 10_000
    index_sizes = (1_000,) if quick else (1_000, 10_000)
    reps = 3 if quick else 9
    rows: list[Row] = []

    with scratch("resume") as home:
        stored = build_long_session(home, n_turns)
        resume_s: list[float] = []
        read_s: list[float] = []
        newest_s: list[float] = []
        decode_s: list[float] = []
        for _ in range(reps):
            settle()
            client = CopilotClient(base_directory=home, default_model="echo")
            client.start()
            try:
                t0 = time.perf_counter()
                session = client.resume_session(SESSION)
                t1 = time.perf_counter()
                events = session.get_messages()
                t2 = time.perf_counter()
                newest = session.get_messages(last=20)
                t3 = time.perf_counter()
                newest_s.append(t3 - t2)
                kinds = [(event.type, event.data) for event in events]
                decode_s.append(time.perf_counter() - t3)
            finally:
                client.stop()
            if len(events) < stored:
                raise RuntimeError(f"get_messages returned {len(events)} of {stored} events")
            if newest != events[-20:]:
                raise RuntimeError("get_messages(last=20) is not the newest 20 events")
            if len(kinds) != len(events):
                raise RuntimeError("an event could not be read")
            resume_s.append(t1 - t0)
            read_s.append(t2 - t1)
        total = [a + b for a, b in zip(resume_s, read_s, strict=True)]
        settle()
        floor = sample(lambda _: _floor_events(home, SESSION), reps)
        peaks = [_peak_mb(home, iterate) for iterate in (False, True)]
    value, base = median(total) * 1000, median(floor) * 1000
    rows.append(
        Row(
            id="3a",
            name=f"resume_session + get_messages, {n_turns:,}-turn session ({stored:,} events)",
            value=value,
            baseline=base,
            baseline_name="sqlite3 + json.loads of the same rows",
            ratio=ratio(value, base),
            target=f"< {TARGET_MS:g} ms",
            status=verdict(value < TARGET_MS),
            samples=len(total),
            note=f"resume_session p50 {median(resume_s) * 1000:.2f} ms, get_messages p50 "
            f"{median(read_s) * 1000:.1f} ms",
            extra={
                "total": summary_ms(total),
                "resume_session": summary_ms(resume_s),
                "get_messages": summary_ms(read_s),
                "floor": summary_ms(floor),
            },
        )
    )
    whole = [t + d for t, d in zip(total, decode_s, strict=True)]
    rows.append(
        Row(
            id="3k",
            name=f"3a + reading every event's type and data ({stored:,} events)",
            value=median(whole) * 1000,
            baseline=value,
            baseline_name="3a: resume_session + get_messages",
            ratio=ratio(median(whole) * 1000, value),
            target="-",
            status="INFO",
            samples=len(whole),
            note=f"the reading after get_messages p50 {median(decode_s) * 1000:.1f} ms",
            extra={"whole": summary_ms(whole), "decode": summary_ms(decode_s)},
        )
    )
    value = median(newest_s) * 1000
    rows.append(
        Row(
            id="3d",
            name=f"get_messages(last=20) of the {n_turns:,}-turn session",
            value=value,
            baseline=median(read_s) * 1000,
            baseline_name="get_messages() of the whole session",
            ratio=ratio(value, median(read_s) * 1000),
            target=f"< {NEWEST_MS:g} ms",
            status=verdict(value < NEWEST_MS),
            samples=len(newest_s),
            extra={"newest": summary_ms(newest_s)},
        )
    )

    rows.append(
        Row(
            id="3g",
            name=f"peak memory of get_messages(), {n_turns:,}-turn session",
            value=peaks[0][0],
            baseline=None,
            baseline_name="-",
            ratio=None,
            target=f"<= {READ_MB:g} MB",
            status=verdict(peaks[0][0] <= READ_MB),
            unit="MB",
            samples=1,
            note=f"tracemalloc peak, fresh client, {peaks[0][1]:,} events",
        )
    )
    rows.append(
        Row(
            id="3h",
            name=f"peak memory of iter_messages(), {n_turns:,}-turn session",
            value=peaks[1][0],
            baseline=peaks[0][0],
            baseline_name="get_messages() of the whole session",
            ratio=ratio(peaks[1][0], peaks[0][0]),
            target="-",
            status="INFO",
            unit="MB",
            samples=1,
            note=f"tracemalloc peak, fresh client, {peaks[1][1]:,} events; it holds 1,000 "
            "events at a time, whatever the length",
        )
    )

    with scratch("index") as home:
        builder = CopilotClient(base_directory=home, default_model="echo")
        made = 0
        try:
            for letter, size in zip("bc", index_sizes, strict=False):
                t0 = time.perf_counter()
                while made < size:
                    builder.create_session(model="echo").destroy()
                    made += 1
                build_s = time.perf_counter() - t0
                settle()
                client = CopilotClient(base_directory=home, default_model="echo")
                client.start()
                try:
                    listed: list[int] = []

                    def list_all(
                        _: int, client: CopilotClient = client, out: list = listed
                    ) -> None:
                        out.append(len(client.list_sessions()))

                    times = sample(list_all, reps)
                    whole = client.list_sessions()
                    newest = sample(lambda _, c=client: c.list_sessions(limit=50), reps)
                    if client.list_sessions(limit=50) != whole[:50]:
                        raise RuntimeError("list_sessions(limit=50) is not the newest 50")
                finally:
                    client.stop()
                if set(listed) != {size}:
                    raise RuntimeError(f"list_sessions returned {listed}, expected {size}")
                floor = sample(lambda _: _floor_index(home), reps)
                value, base = median(times) * 1000, median(floor) * 1000
                rows.append(
                    Row(
                        id=f"3{letter}",
                        name=f"list_sessions, {size:,} sessions",
                        value=value,
                        baseline=base,
                        baseline_name="sqlite3 + json.loads + sort",
                        ratio=ratio(value, base),
                        target=f"< {TARGET_MS:g} ms",
                        status=verdict(value < TARGET_MS),
                        samples=len(times),
                        note=f"index built with create_session in {build_s:.1f} s",
                        extra={"list_sessions": summary_ms(times), "floor": summary_ms(floor)},
                    )
                )
                newest_ms = median(newest) * 1000
                rows.append(
                    Row(
                        id=f"3{'e' if letter == 'b' else 'f'}",
                        name=f"list_sessions(limit=50), {size:,} sessions",
                        value=newest_ms,
                        baseline=value,
                        baseline_name="list_sessions() of every session",
                        ratio=ratio(newest_ms, value),
                        target=f"< {NEWEST_MS:g} ms",
                        status=verdict(newest_ms < NEWEST_MS),
                        samples=len(newest),
                        extra={"newest": summary_ms(newest)},
                    )
                )
            if not quick:
                rows.extend(_huge_index(home, made, reps))
        finally:
            builder.stop()
    return rows


def _peak_mb(home: Path, iterate: bool) -> tuple[float, int]:
    """Peak traced memory (MB) of reading the long session whole or with the iterator."""
    settle()
    client = CopilotClient(base_directory=home, default_model="echo")
    client.start()
    try:
        session = client.resume_session(SESSION)
        tracemalloc.start()
        try:
            if iterate:
                count = sum(1 for _ in session.iter_messages())
            else:
                count = len(session.get_messages())
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        client.stop()
    return peak / 2**20, count


def _huge_index(home: Path, made: int, reps: int) -> list[Row]:
    """``list_sessions()`` and ``list_sessions(limit=50)`` at 100,000 sessions."""
    size = 100_000
    store = EventStore(home / "sessions")
    t0 = time.perf_counter()
    try:
        while made < size:
            with store.transaction():
                for _ in range(min(1000, size - made)):
                    now = utc_now()
                    store.create_session(
                        {
                            "sessionId": f"bulk-{made:06d}",
                            "model": "echo",
                            "startTime": now,
                            "modifiedTime": now,
                            "messageCount": 0,
                            "turnCount": 0,
                            "summary": "",
                            "systemMessage": None,
                            "streaming": True,
                        }
                    )
                    made += 1
    finally:
        store.close()
    build_s = time.perf_counter() - t0
    settle()
    client = CopilotClient(base_directory=home, default_model="echo")
    client.start()
    try:
        counts: list[int] = []
        times = sample(lambda _: counts.append(len(client.list_sessions())), reps)
        newest = sample(lambda _: client.list_sessions(limit=50), reps)
        if client.list_sessions(limit=50) != client.list_sessions()[:50]:
            raise RuntimeError("list_sessions(limit=50) is not the newest 50")
    finally:
        client.stop()
    if set(counts) != {size}:
        raise RuntimeError(f"list_sessions returned {counts}, expected {size}")
    value, newest_ms = median(times) * 1000, median(newest) * 1000
    return [
        Row(
            id="3i",
            name=f"list_sessions, {size:,} sessions",
            value=value,
            baseline=None,
            baseline_name="-",
            ratio=None,
            target=f"< {HUGE_INDEX_MS:g} ms",
            status=verdict(value < HUGE_INDEX_MS),
            samples=len(times),
            note=f"90,000 sessions added with EventStore.create_session in {build_s:.1f} s",
            extra={"list_sessions": summary_ms(times)},
        ),
        Row(
            id="3j",
            name=f"list_sessions(limit=50), {size:,} sessions",
            value=newest_ms,
            baseline=value,
            baseline_name="list_sessions() of every session",
            ratio=ratio(newest_ms, value),
            target=f"< {NEWEST_MS:g} ms",
            status=verdict(newest_ms < NEWEST_MS),
            samples=len(newest),
            extra={"newest": summary_ms(newest)},
        ),
    ]
