"""1. Turn cost against history length.

For each history length (10, 1,000, 10,000 turns) a session is built in its own fresh store by
sending real turns to the ``echo`` model (about 1 ms each), so its log holds exactly what real
turns write, ``session.truncation`` events included once the history outgrows the model's
window. Then, in fresh clients:

* ``resume_session`` and the first ``send_and_wait`` after it, repeated with a new client each
  time (median reported);
* the steady turn cost: ``send_and_wait`` p50 over 200 turns per length, the lengths
  interleaved turn by turn (10, 1,000, 10,000, 10, ...) so that machine noise hits all alike.
  The 10-turn figure uses 20 sessions of 10 turns in turn, so its history stays 10-20 turns
  long while measured (1,000 and 10,000 grow by 2 % at most).

Baseline: the same figure at 10 turns. Targets (issue 12): the 10-turn p50 at most 1.0 ms, the
10,000-turn p50 within 1.2x of it.
"""

from __future__ import annotations

import time
from pathlib import Path

from copilot import CopilotClient

from ._util import (
    INFO,
    Row,
    median,
    prompt_text,
    ratio,
    scratch,
    settle,
    summary_ms,
    verdict,
)

SESSION = "bench-history"
TARGET_RATIO = 1.2
#: the 10-turn p50 (issue 12)
TARGET_BASE_MS = 1.0


def session_name(copy: int) -> str:
    return f"{SESSION}-{copy}"


def build_history(home: Path, turns: int, copies: int = 1) -> int:
    """Store ``copies`` sessions of ``turns`` real echo turns; return the events of one."""
    client = CopilotClient(base_directory=home, default_model="echo")
    try:
        for copy in range(copies):
            name = session_name(copy)
            session = client.create_session(session_id=name, model="echo")
            for i in range(turns - 1):
                session.send(prompt_text(i))
            session.send_and_wait(prompt_text(turns - 1), timeout=600)
            meta = client.get_session_metadata(name) or {}
            if meta.get("turnCount") != turns or meta.get("messageCount") != 2 * turns:
                raise RuntimeError(f"history build incomplete: {meta}")
        return len(session.get_messages())
    finally:
        client.stop()


def first_turn_after_resume(home: Path, i: int) -> tuple[float, float]:
    """(resume_session seconds, first send_and_wait seconds) in a fresh client."""
    client = CopilotClient(base_directory=home, default_model="echo")
    client.start()
    try:
        t0 = time.perf_counter()
        session = client.resume_session(session_name(0))
        t1 = time.perf_counter()
        session.send_and_wait(prompt_text(100_000 + i), timeout=600)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1
    finally:
        client.stop()


def run(quick: bool) -> list[Row]:
    lengths = (10, 1_000) if quick else (10, 1_000, 10_000)
    samples = 40 if quick else 200
    warmup = 5 if quick else 20
    resume_reps = 2 if quick else 5
    rows: list[Row] = []
    with scratch("turns") as root:
        homes = {n: root / f"h{n}" for n in lengths}
        events = {}
        build_s = {}
        # The shortest history gets one session per 10 measured turns, used in turn, so that
        # it stays 10-20 turns long while measured (one session would grow to 200+ turns).
        copies = {n: max(1, samples // 10) if n == lengths[0] else 1 for n in lengths}
        for n in lengths:
            settle()
            t0 = time.perf_counter()
            events[n] = build_history(homes[n], n, copies[n])
            build_s[n] = time.perf_counter() - t0

        resume: dict[int, list[float]] = {n: [] for n in lengths}
        first: dict[int, list[float]] = {n: [] for n in lengths}
        for rep in range(resume_reps):
            for n in lengths:
                settle()
                r, f = first_turn_after_resume(homes[n], rep)
                resume[n].append(r)
                first[n].append(f)

        clients = {n: CopilotClient(base_directory=homes[n], default_model="echo") for n in lengths}
        try:
            sessions = {
                n: [clients[n].resume_session(session_name(k)) for k in range(copies[n])]
                for n in lengths
            }
            for i in range(warmup):
                for n in lengths:
                    sessions[n][i % copies[n]].send_and_wait(prompt_text(200_000 + i))
            settle()
            steady: dict[int, list[float]] = {n: [] for n in lengths}
            for i in range(samples):
                for n in lengths:
                    session = sessions[n][i % copies[n]]
                    t0 = time.perf_counter()
                    session.send_and_wait(prompt_text(300_000 + i))
                    steady[n].append(time.perf_counter() - t0)
        finally:
            for client in clients.values():
                client.stop()

    base = lengths[0]
    base_p50 = median(steady[base]) * 1000
    for letter, n in zip("abc", lengths, strict=False):
        p50 = median(steady[n]) * 1000
        r = ratio(p50, base_p50)
        is_target = n == lengths[-1]  # 10,000 (1,000 in a quick run)
        target, status = "-", INFO
        if is_target:
            target = f"<= {TARGET_RATIO}x"
            status = verdict(r is not None and r <= TARGET_RATIO)
        elif n == base:
            target, status = f"<= {TARGET_BASE_MS:g} ms", verdict(p50 <= TARGET_BASE_MS)
        rows.append(
            Row(
                id=f"1{letter}",
                name=f"turn cost: send_and_wait p50, echo, {n:,} turns of history",
                value=p50,
                baseline=base_p50,
                baseline_name=f"same at {base} turns",
                ratio=r,
                target=target,
                status=status,
                samples=len(steady[n]),
                note=f"{events[n]:,} events stored; built with real turns in {build_s[n]:.1f} s"
                + (f"; {copies[n]} such sessions used in turn" if copies[n] > 1 else ""),
                extra={"steady": summary_ms(steady[n])},
            )
        )
    base_resume = median(resume[base]) * 1000
    base_first = median(first[base]) * 1000
    for letter, n in zip("def", lengths, strict=False):
        value = median(resume[n]) * 1000
        rows.append(
            Row(
                id=f"1{letter}",
                name=f"resume_session, fresh client, {n:,} turns of history",
                value=value,
                baseline=base_resume,
                baseline_name=f"same at {base} turns",
                ratio=ratio(value, base_resume),
                target="-",
                status=INFO,
                samples=len(resume[n]),
                extra={"resume": summary_ms(resume[n])},
            )
        )
    for letter, n in zip("ghi", lengths, strict=False):
        value = median(first[n]) * 1000
        rows.append(
            Row(
                id=f"1{letter}",
                name=f"first send_and_wait after resume, {n:,} turns of history",
                value=value,
                baseline=base_first,
                baseline_name=f"same at {base} turns",
                ratio=ratio(value, base_first),
                target="-",
                status=INFO,
                samples=len(first[n]),
                note="reads the conversation tail that fits the model's window from the log",
                extra={"first_turn": summary_ms(first[n])},
            )
        )
    return rows
