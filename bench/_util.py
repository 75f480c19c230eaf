"""What every benchmark shares: result rows, timing, statistics and scratch directories.

A benchmark module exposes ``run(quick: bool) -> list[Row]``. Each :class:`Row` carries the
absolute median of what was measured, the median of a baseline measured in the same run, their
ratio, the target and an honest status:

``PASS`` / ``MISS``   the row has a target and met it / did not
``INFO``              a figure reported for reference, with no target of its own
``SKIP``              could not run here (a package is not installed); the note says why
``PENDING``           the code it measures does not exist yet
``ERROR``             the benchmark itself failed (a bug in the bench or the library)
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PASS, MISS, INFO, SKIP, PENDING, ERROR = "PASS", "MISS", "INFO", "SKIP", "PENDING", "ERROR"


@dataclass
class Row:
    """One line of the results table."""

    id: str  # "1c": benchmark number and letter
    name: str  # what is measured
    value: float | None  # the subject's median (in ``unit``)
    baseline: float | None  # the baseline's median (in ``unit``), measured in the same run
    baseline_name: str  # what the baseline is
    ratio: float | None  # value / baseline (see ``ratio_note`` for the direction)
    target: str  # the target in words, or "-"
    status: str  # PASS, MISS, INFO, SKIP, PENDING or ERROR
    unit: str = "ms"
    baseline_unit: str | None = None  # when it differs from ``unit``
    ratio_of: str = "value / baseline"  # what ``ratio`` divides, when not that
    samples: int | None = None  # samples behind the subject's median
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def ratio(value: float | None, baseline: float | None) -> float | None:
    """``value / baseline``, or None when either is missing or the baseline is zero."""
    if value is None or baseline is None or baseline == 0:
        return None
    return value / baseline


def verdict(ok: bool) -> str:
    return PASS if ok else MISS


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(samples_s: list[float]) -> dict[str, Any]:
    """p50/p90/min/max in milliseconds of samples taken in seconds."""
    ms = [s * 1000 for s in samples_s]
    return {
        "n": len(ms),
        "p50_ms": round(median(ms), 4),
        "p90_ms": round(percentile(ms, 90), 4),
        "min_ms": round(min(ms), 4),
        "max_ms": round(max(ms), 4),
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Call ``fn`` once; return (seconds, result)."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def sample(
    fn: Callable[[int], Any],
    count: int,
    *,
    budget_s: float | None = None,
    min_count: int = 5,
) -> list[float]:
    """Time ``fn(i)`` for i in range(count); stop early after ``budget_s`` seconds once at
    least ``min_count`` samples are in. Returns the samples in seconds."""
    out: list[float] = []
    started = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
        over = budget_s is not None and time.perf_counter() - started > budget_s
        if over and len(out) >= min_count:
            break
    return out


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A fresh temporary directory, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"copilot-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def server_process(latency: float) -> Iterator[str]:
    """A ScriptedOpenAIServer in its own process on 127.0.0.1 (a model server is another
    process: in this one its threads would compete with the client for the GIL); yields its
    base URL."""
    repo = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "copilot.testing.openai_server", "--port=0", f"--latency={latency}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the scripted server did not start (printed {url!r})")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def settle() -> None:
    """Collect garbage between measurements, so one benchmark's garbage is not the next's."""
    gc.collect()


def prompt_text(i: int) -> str:
    """A short, realistic prompt (about 12 tokens), different every turn."""
    return f"Question {i}: what is {i} squared, and how would you explain it to a child?"


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        if value >= 100:
            return f"{value:,.0f} ms"
        if value >= 10:
            return f"{value:.1f} ms"
        return f"{value:.2f} ms"
    if unit == "%":
        return f"{value:.1f} %"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:,.1f} {unit}"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if value < 100 else f"{value:,.0f}x"
