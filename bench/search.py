"""8. Full-text search: query time over a big store, the index's cost per append, its size.

The store is built with direct ``EventStore.append`` calls, one session at a time (the events
of 20 turns per append), 5 events a turn as a real turn writes them (``user.message``,
``assistant.turn_start``, ``assistant.message``, ``assistant.usage``, ``assistant.turn_end``):
2 of the 5 are indexed. Texts are drawn from a Zipf-distributed vocabulary of 20,000 words
plus code identifiers, prompts ~15 words, replies ~60.

* **query**: two-word queries of content words (drawn evenly from the frequency ranks 20 to
  2,000: the words people search for, not "the"), through ``EventStore.search(limit=20)``.
  Target: p50 < 20 ms. The note adds words drawn with their frequency in the texts (mostly
  the commonest) and the two commonest words: bm25 ranks every match, so a query matching
  most messages costs in proportion to them.
* **append**: a turn's two appends (prompt + turn start; reply + usage + turn end) on the big
  store, alternating turn by turn between sessions whose appends are indexed and sessions
  whose appends skip the index (the index swapped for a no-op): the baseline is measured
  in the same run, on the same file. Target: median ratio <= 1.2.
* **size**: the index's tables (dbstat) beside the rest of the file (the log).
"""

from __future__ import annotations

import itertools
import random
import time
from pathlib import Path
from typing import Any

from copilot.events import Event, EventType
from copilot.store import EventStore

from ._util import INFO, Row, median, percentile, ratio, scratch, settle, summary_ms, verdict

QUERY_TARGET_MS = 20.0
APPEND_TARGET = 1.2
TURNS_PER_APPEND = 20
EVENTS_PER_TURN = 5


class _NoIndex:
    """Stands in for the search index on the baseline's appends."""

    def add(self, *args: Any) -> None:
        pass

    def remove_session(self, *args: Any) -> None:
        pass


def _vocabulary(rng: random.Random, size: int) -> tuple[list[str], list[float]]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 10))))
    ordered = sorted(words)
    rng.shuffle(ordered)
    # words a user would search for, at the frequency of content words (ranks 300-307)
    ordered[300:308] = ["pandas", "pivot", "table", "dataframe", "café", "merge", "plot", "index"]
    weights = [1.0 / (rank + 1) for rank in range(len(ordered))]  # Zipf, s = 1
    return ordered, weights


class _Texts:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.words, weights = _vocabulary(self.rng, 20_000)
        self.cum_weights = list(itertools.accumulate(weights))
        self.idents = ["df.pivot_table", "snake_case", "np.zeros_like", "read_csv", "groupby"]

    def text(self, n: int) -> str:
        words = self.rng.choices(self.words, cum_weights=self.cum_weights, k=n)
        if self.rng.random() < 0.2:
            words[self.rng.randrange(n)] = self.rng.choice(self.idents)
        return " ".join(words)

    def query(self) -> str:
        """Two content words: drawn evenly from the frequency ranks 20 to 2,000."""
        return " ".join(self.rng.choice(self.words[20:2000]) for _ in range(2))

    def zipf_query(self) -> str:
        """Two words drawn with their frequency in the texts: mostly the commonest ones."""
        return " ".join(self.rng.choices(self.words, cum_weights=self.cum_weights, k=2))


def _turn(texts: _Texts, model: str) -> tuple[list[Event], list[Event]]:
    prompt = Event(EventType.USER_MESSAGE, {"content": texts.text(15)})
    start = {"messageId": prompt.id, "model": model, "pid": 1, "host": "bench", "writer": "w"}
    reply = {"messageId": prompt.id, "content": texts.text(60), "model": model}
    usage = {"messageId": prompt.id, "model": model, "inputTokens": 100, "outputTokens": 80}
    return (
        [prompt, Event(EventType.ASSISTANT_TURN_START, start)],
        [
            Event(EventType.ASSISTANT_MESSAGE, reply),
            Event(EventType.ASSISTANT_USAGE, usage),
            Event(EventType.ASSISTANT_TURN_END, {"messageId": prompt.id}),
        ],
    )


def build(store: EventStore, texts: _Texts, sessions: int, events_per_session: int) -> float:
    """Fill the store; return the seconds it took."""
    started = time.perf_counter()
    turns = max(1, -(-(events_per_session - 1) // EVENTS_PER_TURN))  # at least the events asked
    for s in range(sessions):
        session_id = f"bench-{s:05d}"
        model = ("openai:gpt-4.1", "anthropic:claude-sonnet-4", "local:smollm2")[s % 3]
        store.create_session({"sessionId": session_id, "model": model})
        batch = [Event(EventType.SESSION_START, {"model": model})]
        for t in range(turns):
            first, second = _turn(texts, model)
            batch += first + second
            if (t + 1) % TURNS_PER_APPEND == 0 or t == turns - 1:
                store.append(session_id, batch)
                batch = []
    return time.perf_counter() - started


def _sizes(store: EventStore) -> tuple[int, int]:
    """(index bytes, log bytes): the index's tables, and the rest of the file's used pages."""
    index = store._search.size_bytes()
    sql = store._cache._sql
    page_size = sql("PRAGMA page_size").fetchone()[0]
    used = sql("PRAGMA page_count").fetchone()[0] - sql("PRAGMA freelist_count").fetchone()[0]
    return index, used * page_size - index


def _append_ratio(store: EventStore, texts: _Texts, turns: int) -> tuple[list[float], list[float]]:
    index = store._search
    for session_id in ("bench-append-indexed", "bench-append-plain"):
        store.create_session({"sessionId": session_id, "model": "echo"})
    indexed: list[float] = []
    plain: list[float] = []
    for i in range(turns):
        pair = [
            ("bench-append-indexed", indexed, index),
            ("bench-append-plain", plain, _NoIndex()),
        ]
        if i % 2:  # alternate which goes first, so neither always follows the other
            pair.reverse()
        for session_id, samples, target in pair:
            first, second = _turn(texts, "echo")
            # swap the store's index for a stand-in that indexes nothing: the same append,
            # timed with and without the index in one loop
            store._search = target  # type: ignore[assignment]
            try:
                t0 = time.perf_counter()
                store.append(session_id, first)
                store.append(session_id, second)
                samples.append(time.perf_counter() - t0)
            finally:
                store._search = index
    return indexed, plain


def run(quick: bool) -> list[Row]:
    sessions, per_session = (200, 100) if quick else (10_000, 100)
    queries, turns = (100, 200) if quick else (500, 2000)
    texts = _Texts(seed=8)
    rows: list[Row] = []
    with scratch("search") as home:
        store = EventStore(Path(home) / "sessions")
        try:
            build_s = build(store, texts, sessions, per_session)
            total_events = sum(store.last_seq(s["sessionId"]) for s in store.list_sessions())
            indexed_docs = store._search.count()
            settle()
            query_texts = [texts.query() for _ in range(queries)]
            store.search(query_texts[0])  # warm the page cache once
            query_s: list[float] = []
            hits = []
            for query in query_texts:
                t0 = time.perf_counter()
                found = store.search(query, limit=20)
                query_s.append(time.perf_counter() - t0)
                hits.append(len(found))
            q = summary_ms(query_s)
            zipf_s = []
            for _ in range(min(queries, 100)):
                query = texts.zipf_query()
                t0 = time.perf_counter()
                store.search(query, limit=20)
                zipf_s.append(time.perf_counter() - t0)
            common_s = []
            for _ in range(20):  # the two most common words: the worst case
                t0 = time.perf_counter()
                store.search(f"{texts.words[0]} {texts.words[1]}", limit=20)
                common_s.append(time.perf_counter() - t0)
            settle()
            indexed, plain = _append_ratio(store, texts, turns)
            index_bytes, log_bytes = _sizes(store)
        finally:
            store.close()
    scale = f"{total_events:,} events in {sessions:,} sessions ({indexed_docs:,} indexed)"
    rows.append(
        Row(
            id="8a",
            name="search: two-word query p50",
            value=q["p50_ms"],
            baseline=None,
            baseline_name="-",
            ratio=None,
            target=f"p50 < {QUERY_TARGET_MS:.0f} ms",
            status=verdict(q["p50_ms"] < QUERY_TARGET_MS),
            samples=len(query_s),
            note=(
                f"{scale}, built in {build_s:.0f} s; p90 {q['p90_ms']:.1f} ms, "
                f"median hits {median(hits):.0f}; words drawn with their text frequency: "
                f"p50 {median(zipf_s) * 1000:.1f} ms, p90 {percentile(zipf_s, 90) * 1000:.0f} ms; "
                f"the two commonest words (matching most messages): "
                f"p50 {median(common_s) * 1000:.0f} ms"
            ),
            extra={
                "query": q,
                "zipf_words": summary_ms(zipf_s),
                "common_words": summary_ms(common_s),
                "events": total_events,
                "indexed": indexed_docs,
                "build_s": round(build_s, 1),
            },
        )
    )
    append_ms, plain_ms = median(indexed) * 1000, median(plain) * 1000
    mean_ratio = ratio(sum(indexed), sum(plain))
    rows.append(
        Row(
            id="8b",
            name="search: a turn's appends, indexed",
            value=append_ms,
            baseline=plain_ms,
            baseline_name="not indexed",
            ratio=ratio(append_ms, plain_ms),
            target=f"ratio <= {APPEND_TARGET}",
            status=verdict((ratio(append_ms, plain_ms) or 99) <= APPEND_TARGET),
            samples=len(indexed),
            note=(
                f"on the {scale} store; mean ratio {mean_ratio:.2f} (with the appends that "
                "hand 2,000 waiting messages to FTS5: no search ran meanwhile), "
                f"p90 {percentile(indexed, 90) * 1000:.2f} vs {percentile(plain, 90) * 1000:.2f} ms"
            ),
            extra={"indexed": summary_ms(indexed), "plain": summary_ms(plain)},
        )
    )
    rows.append(
        Row(
            id="8c",
            name="search: index size beside the log",
            value=index_bytes / 2**20,
            baseline=log_bytes / 2**20,
            baseline_name="log",
            ratio=ratio(index_bytes, log_bytes),
            target="-",
            status=INFO,
            unit="MiB",
            note=f"{scale}; the index holds the indexed text once (external-content FTS5)",
        )
    )
    return rows
