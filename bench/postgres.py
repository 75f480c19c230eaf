"""9. The shared store on PostgreSQL, beside diskcache and LangChain's Postgres history.

A PostgreSQL server is started for the run (Debian's binaries through ``tests/pg.py``, fsync
on, ``synchronous_commit = off``: a commit survives the process and the server crashing, and
the last few hundred milliseconds may be lost if the machine itself fails, the same promise as
diskcache's SQLite in WAL mode with ``synchronous=NORMAL``), or ``$COPILOT_BENCH_POSTGRES_URL``
names one. Row 8g repeats the append with ``synchronous_commit = on`` (every commit waits for
its fsync). Rows, all measured in one run on the same server:

* **append** at 10 / 1,000 / 10,000 turns of history: one ``store.append`` of a turn's two
  events (``user.message`` + ``assistant.turn_start``, what the turn-start transaction writes),
  p50 over 200 appends, each turn finished by an untimed append of its end (one open turn at
  most, as in a real session). Our two stores and LangChain's two connections are sampled in
  turns (one call of each, then the next round), so a slowdown of the machine hits them
  alike. Baselines: our diskcache store at the same length (target <= 2x) and LangChain's ``PostgresChatMessageHistory.add_messages`` of two messages (target: not slower),
  on a connection made as langchain-postgres' README makes it (``psycopg.connect(url)``: the
  call commits its transaction, two round trips); the note gives it with ``autocommit=True``
  too (one round trip; not how its README connects, and faster than ours: docs/architecture.md
  says why).
  This p50 is also how long one store call blocks the client's event loop. What each side
  writes differs: LangChain's call inserts a human + AI message pair (a whole exchange, one
  ``INSERT`` each, one transaction) into one table; ours is the first of a turn's two appends
  (the prompt and the turn-start marker, so a crash mid-turn leaves a marked turn), which also
  moves the session's head and metadata, writes the prompt's search row and notifies
  listeners; the turn's second append (reply, usage, end) is not timed.
* **resume + read** a 10,000-turn session (five events a turn, as a real turn stores): a fresh
  ``CopilotClient(store=url)``, ``resume_session`` + ``get_messages``. Baseline: LangChain
  loading 10,000 turns' messages (``.messages``). Target <= 150 ms. Both our stores return
  events parsed when first used (``copilot.events.StoredEvent``), so this row parses none of
  them; row 9i then reads every event's fields (all parsed), beside diskcache doing the same.
* **list** 10,000 sessions: ``list_sessions`` of a fresh store. Baseline: diskcache. Target
  < 100 ms.
* **an echo turn**: ``send_and_wait`` on a session of a ``CopilotClient(store=url)``, beside
  the same on the diskcache store: what the store costs a whole turn (the turn's start is a
  transaction that locks the session's row). INFO.
* **16 sessions from 4 processes**: each process appends turns to its own 4 sessions, all at
  once; appends per second over all. Baseline: the same on our diskcache store (one SQLite
  writer lock for the whole store, where PostgreSQL locks one session's row). INFO.

Run alone: ``python -m bench.postgres [--quick]``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from copilot import CopilotClient
from copilot.events import Event, EventType, utc_now
from copilot.store import EventStore

from ._util import INFO, SKIP, Row, median, ratio, sample, scratch, settle, summary_ms, verdict

URL_ENV = "COPILOT_BENCH_POSTGRES_URL"
OWNER = "bench"


@contextlib.contextmanager
def postgres_url() -> Iterator[str | None]:
    """A database URL: ``$COPILOT_BENCH_POSTGRES_URL``, or a server started for this run."""
    if os.environ.get(URL_ENV):
        yield os.environ[URL_ENV]
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    try:
        from pg import PostgresServer, unavailable_reason
    finally:
        sys.path.pop(0)
    if unavailable_reason() is not None:
        yield None
        return
    server = PostgresServer(fsync=True, synchronous_commit=False)
    try:
        server.start()
        yield server.new_database()
    finally:
        server.cleanup()


def _turn(i: int) -> list[Event]:
    """The five events a real echo turn stores."""
    message_id = uuid.uuid4().hex
    return [
        Event(EventType.USER_MESSAGE, {"content": f"Question {i}: what is {i} squared?"}),
        Event(EventType.ASSISTANT_TURN_START, {"messageId": message_id, "model": "echo"}),
        Event(
            EventType.ASSISTANT_MESSAGE,
            {"messageId": message_id, "content": f"echo: Question {i}", "model": "echo"},
        ),
        Event(EventType.ASSISTANT_USAGE, {"messageId": message_id, "inputTokens": 12}),
        Event(EventType.ASSISTANT_TURN_END, {"messageId": message_id}),
    ]


def _metadata(session_id: str) -> dict[str, Any]:
    now = utc_now()
    return {
        "sessionId": session_id,
        "startTime": now,
        "modifiedTime": now,
        "model": "echo",
        "summary": "",
        "messageCount": 0,
        "turnCount": 0,
        "systemMessage": None,
        "streaming": True,
    }


def _fill(store: Any, session_id: str, turns: int, start: int = 0) -> None:
    """Add ``turns`` turns to a session, 200 turns per append (building, not measured)."""
    for first in range(start, start + turns, 200):
        batch = [e for i in range(first, min(first + 200, start + turns)) for e in _turn(i)]
        store.append(session_id, batch)


def _turn_starts(store: Any, session_id: str) -> Callable[[int], float]:
    """A side of :func:`_interleaved_appends`: append turn ``i``'s start (prompt + turn start),
    timed, then its end (reply, usage, end), not timed, so the head holds one open turn at
    most, as in a real session. (Without the ends, each sample added an open turn to the
    head, which PostgreSQL rewrites on every append: 200 open turns took the head row past the
    TOAST threshold and the p50 from 0.35 to 0.7 ms, a cost no real session pays.)"""

    def start(i: int) -> float:
        turn = _turn(i)
        started = time.perf_counter()
        store.append(session_id, turn[:2])
        elapsed = time.perf_counter() - started
        store.append(session_id, turn[2:])
        return elapsed

    return start


def _append_samples(store: Any, session_id: str, count: int) -> list[float]:
    """The times of ``count`` turn-start appends (see :func:`_turn_starts`), one store alone."""
    return _interleaved_appends({"store": _turn_starts(store, session_id)}, count)["store"]


def _concurrent_worker(spec: tuple[str, str], worker: int, sessions: int, turns: int) -> None:
    """One process of the concurrency row: ``turns`` appends to each of its own sessions."""
    kind, where = spec
    if kind == "postgres":
        from copilot.store_postgres import PostgresStore

        store: Any = PostgresStore(where, owner=OWNER)
    else:
        store = EventStore(where)
    try:
        ids = [f"conc-{worker}-{s}" for s in range(sessions)]
        for i in range(turns):
            for session_id in ids:
                store.append(session_id, _turn(i)[:2])
    finally:
        store.close()


def _concurrent_rate(spec: tuple[str, str], store: Any, procs: int, turns: int) -> float:
    """Appends per second of ``procs`` processes with 4 sessions each, started together."""
    import multiprocessing

    for worker in range(procs):
        for s in range(4):
            store.create_session(_metadata(f"conc-{worker}-{s}"))
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_concurrent_worker, args=(spec, w, 4, turns)) for w in range(procs)
    ]
    started = time.perf_counter()
    for process in processes:
        process.start()
    for process in processes:
        process.join(600)
    elapsed = time.perf_counter() - started
    if any(process.exitcode != 0 for process in processes):
        raise RuntimeError("a concurrency worker failed")
    # process start-up is inside the wall time for both stores alike
    return procs * 4 * turns / elapsed


def _langchain(url: str) -> Any | None:
    """``(history_of, pair)``: ``history_of(documented)`` opens a LangChain history on a fresh
    session. ``documented=True`` connects as langchain-postgres' README shows,
    ``psycopg.connect(url)``: ``add_messages`` then runs in a transaction it commits, two round
    trips. ``documented=False`` connects with ``autocommit=True`` (not what its README shows):
    the two ``INSERT``s go in one pipeline and the commit is a no-op, one round trip."""
    try:
        import psycopg
        from langchain_core.messages import AIMessage, HumanMessage
        from langchain_postgres import PostgresChatMessageHistory
    except ImportError:
        return None
    connections = {True: psycopg.connect(url), False: psycopg.connect(url, autocommit=True)}
    PostgresChatMessageHistory.create_tables(connections[True], "lc_history")

    def history(documented: bool = False) -> Any:
        connection = connections[documented]
        return PostgresChatMessageHistory(
            "lc_history", str(uuid.uuid4()), sync_connection=connection
        )

    def pair(i: int) -> list[Any]:
        return [HumanMessage(f"Question {i}: what is {i} squared?"), AIMessage(f"echo: {i}")]

    return history, pair


def _langchain_history(langchain: Any, turns: int, documented: bool) -> Any:
    """A LangChain history holding ``turns`` human + AI pairs (built in bulk, not measured)."""
    history_of, pair = langchain
    history = history_of(documented)
    for first in range(0, turns, 500):
        history.add_messages([m for i in range(first, min(first + 500, turns)) for m in pair(i)])
    return history


def _timed(call: Callable[[int], Any]) -> Callable[[int], float]:
    """``call`` as a side of :func:`_interleaved_appends`: it returns how long it took."""

    def timed(i: int) -> float:
        started = time.perf_counter()
        call(i)
        return time.perf_counter() - started

    return timed


def _interleaved_appends(
    sides: dict[str, Callable[[int], float]], count: int
) -> dict[str, list[float]]:
    """``count`` samples of each side (a call that returns its own duration), taken in turns:
    side A's i-th, then side B's i-th, ...: a slowdown of the machine while they run hits every
    side alike, so the ratios hold. (Measured one side after the other, a transient slowdown
    right after the server started moved row 9a's p50 from 0.20 to 0.29-0.33 ms in some runs,
    while the diskcache baseline, measured later, stayed at 0.11 ms.)"""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(count):
        for name, side in sides.items():
            times[name].append(side(i))
    return times


def run(quick: bool) -> list[Row]:
    with postgres_url() as url:
        if url is None:
            note = "PostgreSQL is not installed here (apt-get install postgresql)"
            return [Row("9", "PostgreSQL store", None, None, "-", None, "-", SKIP, note=note)]
        with scratch("pg") as tmp:
            return _run(url, tmp, quick)


def _run(url: str, tmp: Path, quick: bool) -> list[Row]:
    from copilot.store_postgres import PostgresStore

    rows: list[Row] = []
    lengths = (10, 100, 500) if quick else (10, 1_000, 10_000)
    appends = 30 if quick else 200
    pg = PostgresStore(url, owner=OWNER)
    disk = EventStore(tmp / "disk" / "sessions")
    langchain = _langchain(url)
    try:
        for letter, turns in zip("abc", lengths, strict=True):
            session_id = f"append-{turns}"
            for store in (pg, disk):
                store.create_session(_metadata(session_id))
                _fill(store, session_id, turns)
            sides = {"pg": _turn_starts(pg, session_id), "disk": _turn_starts(disk, session_id)}
            if langchain is not None:
                pair = langchain[1]
                for documented, name in ((True, "lc"), (False, "lc_fast")):
                    history = _langchain_history(langchain, turns, documented)
                    sides[name] = _timed(lambda i, h=history, p=pair: h.add_messages(p(i)))
            settle()
            times = _interleaved_appends(sides, appends)
            pg_s, disk_s = times["pg"], times["disk"]
            extra: dict[str, Any] = {"postgres": summary_ms(pg_s), "diskcache": summary_ms(disk_s)}
            lc_p50 = lc_fast_p50 = None
            if langchain is not None:
                lc_s, lc_fast_s = times["lc"], times["lc_fast"]
                extra["langchain_postgres"] = summary_ms(lc_s)
                extra["langchain_postgres_autocommit"] = summary_ms(lc_fast_s)
                lc_p50, lc_fast_p50 = median(lc_s) * 1000, median(lc_fast_s) * 1000
            pg_p50, disk_p50 = median(pg_s) * 1000, median(disk_s) * 1000
            ok = pg_p50 <= 2 * disk_p50 and (lc_p50 is None or pg_p50 <= lc_p50)
            rows.append(
                Row(
                    f"9{letter}",
                    f"append one turn's start at {turns:,} turns (PostgreSQL store)",
                    pg_p50,
                    disk_p50,
                    "our diskcache store, same length",
                    ratio(pg_p50, disk_p50),
                    "<= 2x diskcache and <= LangChain PostgresChatMessageHistory",
                    verdict(ok),
                    samples=len(pg_s),
                    note=(
                        f"LangChain add_messages p50 {lc_p50:.2f} ms as its README connects; "
                        f"{lc_fast_p50:.2f} ms with autocommit=True ({pg_p50 / lc_fast_p50:.2f}x)"
                        if lc_p50 is not None and lc_fast_p50 is not None
                        else "langchain-postgres not installed: no LangChain row"
                    ),
                    extra=extra,
                )
            )

        # a whole turn through the client: the turn's start (a transaction that locks the
        # session, reads its metadata and tail, appends the prompt) and its end (the reply)
        def turn_samples(disk_store: bool) -> list[float]:
            if disk_store:
                client = CopilotClient(tmp / "turns-disk", fallback_model="echo")
            else:
                client = CopilotClient(
                    tmp / "turns-pg", store=url, owner=OWNER, fallback_model="echo"
                )
            client.start()
            try:
                session = client.create_session(session_id="turns", model="echo")
                for i in range(20):  # warm: connections, prepared statements, the tail
                    session.send_and_wait(prompt=f"warm {i}", timeout=60)
                settle()
                return sample(
                    lambda i: session.send_and_wait(prompt=f"Question {i}?", timeout=60), appends
                )
            finally:
                client.stop(timeout=10)

        turn_s, disk_turn_s = turn_samples(False), turn_samples(True)
        turn_p50, disk_turn_p50 = median(turn_s) * 1000, median(disk_turn_s) * 1000
        rows.append(
            Row(
                "9j",
                "an echo turn, send_and_wait (PostgreSQL store)",
                turn_p50,
                disk_turn_p50,
                "our diskcache store, the same turns",
                ratio(turn_p50, disk_turn_p50),
                "-",
                INFO,
                samples=len(turn_s),
                note="store work per turn: a transaction (BEGIN with the lock, the prompt's "
                "append, COMMIT) and the reply's append",
                extra={"postgres": summary_ms(turn_s), "diskcache": summary_ms(disk_turn_s)},
            )
        )

        # resume + read a long session in a fresh client
        turns = lengths[-1]
        session_id = "long"
        for store in (pg, disk):
            store.create_session(_metadata(session_id))
            _fill(store, session_id, turns)
        reads = 3 if quick else 7

        def resume_and_read(i: int, disk_store: bool = False, use: bool = False) -> None:
            if disk_store:
                client = CopilotClient(tmp / "disk", fallback_model="echo")
            else:
                client = CopilotClient(tmp / f"c{i}", store=url, owner=OWNER, fallback_model="echo")
            client.start()
            try:
                session = client.resume_session(session_id)
                messages = session.get_messages()
                assert len(messages) >= turns * 5
                if use:  # every event's fields read: each stored event decoded (row 9i)
                    assert sum(1 for e in messages if e.type) == len(messages)
            finally:
                client.stop(timeout=10)

        # the client's start (pool, migrations check) is part of each sample; see the note
        read_s = sample(resume_and_read, reads)
        disk_read_s = sample(lambda i: resume_and_read(i, disk_store=True), reads)
        lc_load = None
        if langchain is not None:
            history_of, pair = langchain
            history = history_of(documented=False)  # reads: no transaction left open
            for first in range(0, turns, 500):
                history.add_messages(
                    [m for i in range(first, min(first + 500, turns)) for m in pair(i)]
                )
            lc_s = sample(lambda i: len(history.messages), reads)
            lc_load = median(lc_s) * 1000
        read_p50 = median(read_s) * 1000
        rows.append(
            Row(
                "9d",
                f"start a client, resume + read a {turns:,}-turn session ({turns * 5:,} events)",
                read_p50,
                lc_load,
                f"LangChain PostgresChatMessageHistory.messages, {turns:,} turns",
                ratio(read_p50, lc_load),
                "<= 150 ms",
                verdict(read_p50 <= 150),
                samples=len(read_s),
                note=(
                    f"our diskcache store, same session: {median(disk_read_s) * 1000:.0f} ms; "
                    "both hand out events parsed when first used (row 9i uses them all)"
                ),
                extra={"postgres": summary_ms(read_s), "diskcache": summary_ms(disk_read_s)},
            )
        )
        used_s = sample(lambda i: resume_and_read(100 + i, use=True), 3)
        disk_used_s = sample(lambda i: resume_and_read(i, disk_store=True, use=True), 3)
        used_p50, disk_used_p50 = median(used_s) * 1000, median(disk_used_s) * 1000
        rows.append(
            Row(
                "9i",
                f"row 9d, then every one of the {turns * 5:,} events used (all decoded)",
                used_p50,
                disk_used_p50,
                "our diskcache store, the same",
                ratio(used_p50, disk_used_p50),
                "-",
                INFO,
                samples=len(used_s),
                extra={"postgres": summary_ms(used_s), "diskcache": summary_ms(disk_used_s)},
            )
        )

        # list sessions
        count = 1_000 if quick else 10_000
        for store in (pg, disk):
            for i in range(count):
                store.create_session(_metadata(f"list-{i:05d}"))
        fresh = PostgresStore(url, owner=OWNER)
        try:
            list_s = sample(lambda i: fresh.list_sessions(), 7)
        finally:
            fresh.close()
        disk_list = sample(lambda i: disk.list_sessions(), 7)
        list_p50, disk_list_p50 = median(list_s) * 1000, median(disk_list) * 1000
        rows.append(
            Row(
                "9e",
                f"list {count:,} sessions (PostgreSQL store)",
                list_p50,
                disk_list_p50,
                "our diskcache store",
                ratio(list_p50, disk_list_p50),
                "< 100 ms",
                verdict(list_p50 < 100),
                samples=len(list_s),
            )
        )
        turns_each = 50 if quick else 250
        pg_rate = _concurrent_rate(("postgres", url), pg, 4, turns_each)
        disk_rate = _concurrent_rate(
            ("diskcache", str(tmp / "disk" / "sessions")), disk, 4, turns_each
        )
        rows.append(
            Row(
                "9h",
                "16 sessions appending from 4 processes at once (PostgreSQL store)",
                pg_rate,
                disk_rate,
                "our diskcache store, the same 16 sessions and processes",
                ratio(pg_rate, disk_rate),
                "-",
                INFO,
                unit="appends/s",
                note=f"{turns_each} appends per session; wall time includes process start-up",
            )
        )
        durable = PostgresStore(url + "?options=-csynchronous_commit%3Don", owner=OWNER)
        try:
            sync_s = _append_samples(durable, f"append-{lengths[1]}", appends)
        finally:
            durable.close()
        rows.append(
            Row(
                "9g",
                f"append at {lengths[1]:,} turns, synchronous_commit = on (waits for fsync)",
                median(sync_s) * 1000,
                rows[1].value,
                "the same with synchronous_commit = off (row 9b)",
                ratio(median(sync_s) * 1000, rows[1].value),
                "-",
                INFO,
                samples=len(sync_s),
                note="the fsync of this machine's disk dominates",
            )
        )
        rows.append(
            Row(
                "9f",
                "one PostgreSQL append blocks the client's loop thread for (p50)",
                rows[1].value,
                None,
                "-",
                None,
                "-",
                INFO,
                note="the store is called synchronously on the loop thread (row 9b's p50)",
            )
        )
    finally:
        pg.close()
        disk.close()
    return rows


if __name__ == "__main__":
    import json

    for row in run("--quick" in sys.argv):
        print(json.dumps(row.to_json()))
