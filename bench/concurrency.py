"""4. Concurrency: N sessions sending at once to a model with 200 ms latency.

``AsyncCopilotClient``: N sessions (1, 4, 16), one turn each started together with
``asyncio.gather(*(s.send_and_wait(...)))``; the wall time of the whole round, median over
rounds. Two models: ``echo`` with ``latency=0.2`` (in-process), and ``openai:test-model`` on a
:class:`~copilot.testing.ScriptedOpenAIServer` with ``latency=0.2``, in its own process (real
HTTP on 127.0.0.1).

Baseline: the same round with one session. Target: 16 sessions within 1.5x of one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from copilot import AsyncCopilotClient

from ._util import (
    INFO,
    Row,
    median,
    prompt_text,
    ratio,
    scratch,
    server_process,
    settle,
    summary_ms,
    verdict,
)

LATENCY = 0.2
TARGET_RATIO = 1.5


async def _rounds(
    home: str, model: str, providers: dict[str, Any], sizes: tuple[int, ...], rounds: int
) -> dict[int, list[float]]:
    walls: dict[int, list[float]] = {n: [] for n in sizes}
    async with AsyncCopilotClient(base_directory=home, providers=providers) as client:
        sessions = {n: [await client.create_session(model=model) for _ in range(n)] for n in sizes}
        for s in sessions[sizes[0]]:  # warm-up: provider built, connections opened
            await s.send_and_wait("warm up", timeout=60)
        step = 0
        for _ in range(rounds):
            for n in sizes:  # interleaved, so that noise hits every size alike
                step += 1
                t0 = time.perf_counter()
                replies = await asyncio.gather(
                    *(s.send_and_wait(prompt_text(step), timeout=60) for s in sessions[n])
                )
                walls[n].append(time.perf_counter() - t0)
                assert len(replies) == n and all(r.data.content for r in replies)
    return walls


def run(quick: bool) -> list[Row]:
    sizes = (1, 4, 16)
    rounds = 3 if quick else 10
    rows: list[Row] = []
    backends: tuple[tuple[str, str, Callable[[], AbstractContextManager[Any]]], ...] = (
        ("echo", "echo (latency 0.2 s)", nullcontext),
        ("openai", "openai on local server (latency 0.2 s)", lambda: server_process(LATENCY)),
    )
    letters = iter("abcdefgh")
    for kind, label, context in backends:
        settle()
        with context() as url, scratch("concurrency") as home:
            if kind == "echo":
                model, providers = "echo", {"echo": {"latency": LATENCY}}
            else:
                model, providers = "openai:test-model", {"openai": {"base_url": url}}
            walls = asyncio.run(_rounds(str(home), model, providers, sizes, rounds))
        base = median(walls[1]) * 1000
        for n in sizes[1:]:
            value = median(walls[n]) * 1000
            r = ratio(value, base)
            is_target = n == sizes[-1]
            rows.append(
                Row(
                    id=f"4{next(letters)}",
                    name=f"concurrency: wall time of {n} sessions at once, {label}",
                    value=value,
                    baseline=base,
                    baseline_name="1 session",
                    ratio=r,
                    target=f"<= {TARGET_RATIO}x" if is_target else "-",
                    status=verdict(r is not None and r <= TARGET_RATIO) if is_target else INFO,
                    samples=len(walls[n]),
                    extra={"wall": summary_ms(walls[n]), "baseline_wall": summary_ms(walls[1])},
                )
            )
    return rows
