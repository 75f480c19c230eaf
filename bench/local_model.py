"""7. The embedded model: ``local:smollm2`` (SmolLM2-135M-Instruct, llama.cpp in-process).

Baseline: ``llama_cpp.Llama`` driven directly with the same weights file and settings
(``n_ctx``, threads, greedy decoding with ``repeat_penalty=1.1``, the same messages and
``max_tokens``), in the same run.

* load time: ``llama_cpp.Llama(...)`` for the baseline; for the library, the load it records
  (``copilot.providers.local.loaded_models()[0].load_seconds``) during its first turn, and
  that whole first turn in the note. A throwaway load first warms the OS file cache for both.
* time to first token (model loaded): from the call (``send_and_wait``, or
  ``create_chat_completion(stream=True)``) to the first text delta, median over prompts that
  differ, the two alternating.
* tokens per second: decoded tokens (the model's tokenizer on the reply) after the first, over
  the time from the first to the last delta. Ratio: ours / raw (below 1, ours is slower).
  Measured with the provider's default ``n_threads`` (``os.cpu_count()``), and again with
  ``n_threads=1`` on both sides (machines with more than one core): the library streams
  through a worker thread and its event-loop thread, which need a core too. A quick run
  measures ``n_threads=1`` only.

No targets: figures for reference. Skipped with a clear row when the model is not installed.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ._util import INFO, SKIP, Row, median, ratio, scratch, settle, summary_ms

PROMPT = "Write a short story about a robot who learns to paint. Story number {i}:"


def _skip(reason: str) -> list[Row]:
    return [
        Row(
            id="7",
            name="embedded model local:smollm2",
            value=None,
            baseline=None,
            baseline_name="-",
            ratio=None,
            target="-",
            status=SKIP,
            note=reason,
        )
    ]


class _Pass:
    """One client and one raw ``Llama`` with the same settings; loads, then alternates turns."""

    def __init__(self, path: str, n_ctx: int, n_threads: int, max_tokens: int) -> None:
        self.llama_kwargs: dict[str, Any] = {
            "model_path": path,
            "n_ctx": n_ctx,
            "n_threads": n_threads,
            "n_threads_batch": n_threads,
            "verbose": False,
        }
        self.n_threads = n_threads
        self.max_tokens = max_tokens
        self.gen = {"temperature": 0.0, "repeat_penalty": 1.1, "max_tokens": max_tokens}
        self.stamps: list[float] = []
        self.raw: Any = None

    def tokens(self, text: str) -> int:
        return len(self.raw.tokenize(text.encode("utf-8"), add_bos=False)) if text else 0

    def raw_turn(self, i: int) -> tuple[float, float, int]:
        messages = [{"role": "user", "content": PROMPT.format(i=i)}]
        t0 = time.perf_counter()
        first = last = None
        parts = []
        for chunk in self.raw.create_chat_completion(messages=messages, stream=True, **self.gen):
            text = (chunk["choices"][0].get("delta") or {}).get("content")
            if text:
                last = time.perf_counter()
                first = first or last
                parts.append(text)
        if first is None or last is None:
            raise RuntimeError("the raw model produced no text")
        return first - t0, last - first, self.tokens("".join(parts))

    def our_turn(self, session: Any, i: int) -> tuple[float, float, int, float]:
        self.stamps.clear()
        t0 = time.perf_counter()
        reply = session.send_and_wait(PROMPT.format(i=i), timeout=600)
        total = time.perf_counter() - t0
        if not self.stamps:
            raise RuntimeError("the local model streamed no text")
        first, last = self.stamps[0], self.stamps[-1]
        return first - t0, last - first, self.tokens(reply.data.content), total

    def on_event(self, event: Any) -> None:
        if event.type == "assistant.message_delta":
            self.stamps.append(time.perf_counter())

    def run(self, reps: int) -> dict[str, Any]:
        import llama_cpp

        from copilot import CopilotClient
        from copilot.providers import local

        out: dict[str, Any] = {k: [] for k in ("ours_ttft", "ours_tps", "raw_ttft", "raw_tps")}
        warm = llama_cpp.Llama(**self.llama_kwargs)  # warms the OS file cache for both loads
        warm.close()
        settle()
        t0 = time.perf_counter()
        self.raw = llama_cpp.Llama(**self.llama_kwargs)
        out["raw_load"] = time.perf_counter() - t0
        local.unload_models()
        settings = {"max_tokens": self.max_tokens, "n_threads": self.n_threads}
        with scratch("local") as home:
            client = CopilotClient(base_directory=home, providers={"local": settings})
            try:
                client.start()
                settle()
                cold = client.create_session(model="local:smollm2")
                cold.on(self.on_event)
                out["cold_turn"] = self.our_turn(cold, 0)[3]
                loaded = local.loaded_models()
                out["our_load"] = loaded[0].load_seconds if loaded else None
                self.raw_turn(0)  # warm-up, as ours had its first turn
                for rep in range(reps):
                    # a new session each time: no history, so both see the same input
                    session = client.create_session(model="local:smollm2")
                    session.on(self.on_event)
                    i = 1000 + rep
                    for who in ("ours", "raw") if rep % 2 else ("raw", "ours"):
                        if who == "ours":
                            ttft, span, n, _ = self.our_turn(session, i)
                        else:
                            ttft, span, n = self.raw_turn(i)
                        out[f"{who}_ttft"].append(ttft)
                        out[f"{who}_tps"].append((n - 1) / span if span > 0 else float("nan"))
                    session.destroy()
            finally:
                client.stop()
                local.unload_models()
                self.raw.close()
        return out


def run(quick: bool) -> list[Row]:
    from copilot.providers import local

    provider = local.LocalProvider({})
    availability = provider.availability()
    if not availability.usable or provider.model_path is None:
        return _skip(f"not installed: {availability.reason}")

    max_tokens = 24 if quick else 128
    reps = 2 if quick else 5
    path = str(provider.model_path)
    # A quick run uses n_threads=1 only: with the default (one thread per CPU) llama.cpp
    # slows down by 10x or more as soon as other work needs a core (see the README), and a
    # smoke run must finish in seconds on a busy machine.
    threads = 1 if quick else provider.n_threads
    main = _Pass(path, provider.n_ctx, threads, max_tokens).run(reps)
    single = None
    if not quick and provider.n_threads > 1:
        single = _Pass(path, provider.n_ctx, 1, max_tokens).run(reps)

    rows: list[Row] = []
    our_load, raw_load = main["our_load"], main["raw_load"]
    rows.append(
        Row(
            id="7a",
            name="embedded model: load time (SmolLM2-135M Q4_1, llama.cpp)",
            value=None if our_load is None else our_load * 1000,
            baseline=raw_load * 1000,
            baseline_name="llama_cpp.Llama(...) directly",
            ratio=ratio(our_load, raw_load),
            target="-",
            status=INFO,
            samples=1,
            note=f"whole first turn (load + {max_tokens}-token reply) {main['cold_turn']:.2f} s",
        )
    )
    value, base = median(main["ours_ttft"]) * 1000, median(main["raw_ttft"]) * 1000
    rows.append(
        Row(
            id="7b",
            name="embedded model: time to first token, model loaded",
            value=value,
            baseline=base,
            baseline_name="llama_cpp streaming directly",
            ratio=ratio(value, base),
            target="-",
            status=INFO,
            samples=len(main["ours_ttft"]),
            extra={"ours": summary_ms(main["ours_ttft"]), "raw": summary_ms(main["raw_ttft"])},
        )
    )
    passes = [("c", main, threads, "set, quick run" if quick else "default")]
    if single is not None:
        passes.append(("d", single, 1, "set"))
    for letter, result, threads, how in passes:
        value, base = median(result["ours_tps"]), median(result["raw_tps"])
        rows.append(
            Row(
                id=f"7{letter}",
                name=f"embedded model: decode speed, {max_tokens}-token replies, "
                f"n_threads={threads} ({how}; ratio ours/raw)",
                value=value,
                unit="tok/s",
                baseline=base,
                baseline_name="llama_cpp streaming directly, same n_threads",
                ratio=ratio(value, base),
                target="-",
                status=INFO,
                samples=len(result["ours_tps"]),
                note=f"{os.cpu_count()} CPUs" if letter == "c" else "",
                extra={"ours_tok_s": result["ours_tps"], "raw_tok_s": result["raw_tps"]},
            )
        )
    return rows
