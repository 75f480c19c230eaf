"""6. Streaming display: showing a 2,000-token reply in a ``%%copilot`` cell.

A headless ``IPython.core.interactiveshell.InteractiveShell`` loads the extension and runs a
``%%copilot`` cell; the ``echo`` model streams a scripted 2,000-token reply (one word per
delta, like a model's token stream), paced at 1 ms per token (a fast model: about 2.5 s) and
also all at once. IPython's ``capture_output`` records every display message, as a notebook
front end would receive them.

Figures: the number of in-place updates of the reply's display (the magics promise at most one
per ``update_interval``, 0.1 s, plus the final one: that is the target), the bytes those
updates carry, and the process CPU time (``time.process_time``: the cell's thread and the
client's event thread) of the cell. Baseline: the CPU time of the same turn, same reply and
pacing, through ``session.send_and_wait`` without a display. Ratios: cell / bare turn.
"""

from __future__ import annotations

import importlib.util
import math
import time
from typing import Any

from ._util import INFO, PENDING, Row, median, ratio, scratch, settle, verdict

TOKENS = 2_000
CHUNK_DELAY = 0.001
INTERVAL = 0.1


def _reply(tokens: int) -> str:
    return "".join(f"tok{i} " if i % 12 else f"tok{i}\n" for i in range(tokens))


def _pending() -> list[Row]:
    return [
        Row(
            id="6",
            name="streaming display of a 2,000-token reply",
            value=None,
            baseline=None,
            baseline_name="-",
            ratio=None,
            target="-",
            status=PENDING,
            note="copilot_jupyter.display does not exist yet",
        )
    ]


def _updates(captured: Any) -> tuple[int, int, int]:
    """(in-place updates of the reply's display, bytes they carried, display messages)."""
    outputs = captured.outputs
    first = next(o for o in outputs if (o.transient or {}).get("display_id"))
    display_id = first.transient["display_id"]
    updates = [
        o for o in outputs if o.update and (o.transient or {}).get("display_id") == display_id
    ]
    size = sum(len(str(v)) for o in updates for v in o.data.values())
    return len(updates), size, len(outputs)


def run(quick: bool) -> list[Row]:
    if importlib.util.find_spec("copilot_jupyter.display") is None:
        return _pending()
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from copilot import CopilotClient
    from copilot_jupyter.state import CopilotState, reset_state

    tokens = 500 if quick else TOKENS
    reps = 1 if quick else 3
    text = _reply(tokens)
    rows: list[Row] = []
    shell = InteractiveShell.instance()
    results: dict[str, dict[str, list[float]]] = {}
    for pace in (CHUNK_DELAY, 0.0):
        with scratch("display") as home:
            client = CopilotClient(
                base_directory=home,
                default_model="echo",
                providers={"echo": {"chunk_delay": pace}},
            )
            previous = reset_state(CopilotState(client))
            try:
                shell.run_cell("%load_ext copilot_jupyter")
                shell.run_cell(f"%config CopilotMagics.update_interval = {INTERVAL}")
                echo = client.get_provider("echo")
                bare = client.create_session(session_id="bare", model="echo")
                stats: dict[str, list[float]] = {
                    k: [] for k in ("cpu", "wall", "updates", "bytes", "messages", "bare_cpu")
                }
                for rep in range(reps + 1):  # the first round is a warm-up
                    settle()
                    echo.enqueue(text)
                    c0, w0 = time.process_time(), time.perf_counter()
                    with capture_output() as captured:
                        shell.run_cell(f"%%copilot cell -m echo\nReply {rep}, please.")
                    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
                    updates, size, messages = _updates(captured)
                    final = captured.outputs[-2].data.get("text/plain", "")
                    if not any(
                        text.strip() in str(o.data.get("text/plain", "")) for o in captured.outputs
                    ):
                        raise RuntimeError(f"the cell did not show the whole reply: {final[:80]!r}")
                    settle()
                    echo.enqueue(text)
                    c0 = time.process_time()
                    bare.send_and_wait(f"Reply {rep}, please.", timeout=120)
                    bare_cpu = time.process_time() - c0
                    if rep:
                        for key, value in (
                            ("cpu", cpu),
                            ("wall", wall),
                            ("updates", updates),
                            ("bytes", size),
                            ("messages", messages),
                            ("bare_cpu", bare_cpu),
                        ):
                            stats[key].append(value)
                results["paced" if pace else "instant"] = stats
            finally:
                shell.run_cell("%unload_ext copilot_jupyter")
                reset_state(previous)
                client.stop(timeout=5)

    paced = results["paced"]
    wall = median(paced["wall"])
    updates = median(paced["updates"])
    bound = math.ceil(wall / INTERVAL) + 1
    rows.append(
        Row(
            id="6a",
            name=f"display updates for a {tokens:,}-token reply streamed at 1 ms/token",
            value=updates,
            unit="updates",
            baseline=None,
            baseline_name="-",
            ratio=None,
            target=f"<= 1 per {INTERVAL:g} s + final ({bound})",
            status=verdict(updates <= bound),
            samples=len(paced["updates"]),
            note=f"cell wall time {wall:.2f} s; updates carried "
            f"{median(paced['bytes']) / 1024:,.0f} KiB in all; "
            f"{median(paced['messages']):.0f} display messages",
            extra={k: v for k, v in paced.items()},
        )
    )
    for letter, key, label in (
        ("b", "paced", "streamed at 1 ms/token"),
        ("c", "instant", "all at once"),
    ):
        stats = results[key]
        cpu, base = median(stats["cpu"]) * 1000, median(stats["bare_cpu"]) * 1000
        rows.append(
            Row(
                id=f"6{letter}",
                name=f"CPU time of a %%copilot cell, {tokens:,}-token reply {label}",
                value=cpu,
                baseline=base,
                baseline_name="send_and_wait, no display",
                ratio=ratio(cpu, base),
                target="-",
                status=INFO,
                samples=len(stats["cpu"]),
                note=f"{median(stats['updates']):.0f} display updates" if key == "instant" else "",
                extra={k: v for k, v in stats.items()},
            )
        )
    return rows
