"""Full-text search (issue 15): the query language, ranking, filters, and an index that stays
in step with the log through deletes, rebuilds, old stores and a ``kill -9`` mid-append."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from copilot import (
    AsyncCopilotClient,
    CopilotClient,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    SessionNotFoundError,
)
from copilot import search as search_module
from copilot.events import Event, EventType
from copilot.search import format_hits, parse_query
from copilot.store import EventStore

REPO = Path(__file__).resolve().parent.parent

# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path):
    """The diskcache store; tests marked ``@both_stores`` run on PostgreSQL too (the contract)."""
    if getattr(request, "param", "diskcache") == "postgres":
        from copilot.store_postgres import PostgresStore

        s = PostgresStore(request.getfixturevalue("postgres_server").new_database(), owner="t")
    else:
        s = EventStore(tmp_path / "store")
    yield s
    s.close()


#: the search contract, on both stores: the same queries find the same hits
both_stores = pytest.mark.parametrize("store", ["diskcache", "postgres"], indirect=True)


def new_session(store: EventStore, session_id: str, model: str = "gpt-4.1") -> None:
    store.create_session({"sessionId": session_id, "model": model})
    store.append(session_id, [Event(EventType.SESSION_START, {"model": model})])


def turn(
    store: EventStore,
    session_id: str,
    prompt: str,
    reply: str | None = None,
    *,
    model: str = "openai:gpt-4.1",
    when: str | None = None,
    replaces: str | None = None,
) -> str:
    """Append a turn as a session writes it (two appends); return the prompt's id."""
    data = {"content": prompt, **({"replaces": replaces} if replaces else {})}
    user = Event(EventType.USER_MESSAGE, data, timestamp=when)
    start = {"messageId": user.id, "model": model}
    store.append(session_id, [user, Event(EventType.ASSISTANT_TURN_START, start, timestamp=when)])
    if reply is not None:
        message = {"messageId": user.id, "content": reply, "model": model}
        end = {"messageId": user.id}
        store.append(
            session_id,
            [
                Event(EventType.ASSISTANT_MESSAGE, message, timestamp=when),
                Event(EventType.ASSISTANT_TURN_END, end, timestamp=when),
            ],
        )
    return user.id


def found(store: EventStore, query: str, **filters) -> list[tuple[str, str]]:
    """(session, snippet) of each hit, best first."""
    return [(h["sessionId"], h["snippet"]) for h in store.search(query, **filters)]


def texts(store: EventStore, query: str, **filters) -> set[str]:
    """The snippets' text without marks: which documents matched."""
    return {s.replace("«", "").replace("»", "") for _, s in found(store, query, **filters)}


def drop_index(directory: Path) -> None:
    """Leave the store as a version without search wrote it: no index tables."""
    con = sqlite3.connect(directory / "cache.db")
    con.executescript(
        "DROP TABLE copilot_search_docs; DROP TABLE copilot_search; DROP TABLE copilot_search_meta;"
    )
    con.close()


# -- the query language (pure) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("pivot", '"pivot"'),
        ("pivot table", '("pivot" AND "table")'),
        ('"pivot table"', '"pivot table"'),
        ("piv*", '"piv" *'),
        ('"pivot tab"*', '"pivot tab" *'),
        ("a OR b c", '("a" OR ("b" AND "c"))'),
        ("a b NOT c", '("a" AND ("b" NOT "c"))'),
        ("(a OR b) NOT c", '(("a" OR "b") NOT "c")'),
        ("a AND b", '("a" AND "b")'),
        ("df.pivot_table", '"df.pivot_table"'),
        ('say "hi"', '("say" AND "hi")'),
        ("col:umn ^start NEAR", '(("col:umn" AND "^start") AND "NEAR")'),
        ("and or not", '(("and" AND "or") AND "not")'),  # lower case: words, not operators
        ("pandas - numpy", '("pandas" AND "numpy")'),  # punctuation alone is skipped
        ("  spaced\twords\n", '("spaced" AND "words")'),
    ],
)
def test_parse_query_builds_a_quoted_fts5_expression(query, expected):
    assert parse_query(query) == expected


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("", "at least one word"),
        ("   ", "at least one word"),
        ("- ...", "at least one word"),
        ('"pivot table', "never closed"),
        ("NOT numpy", "NOT needs a word before it"),
        ("pandas NOT", "NOT needs a word after it"),
        ("pandas AND", "AND needs a word after it"),
        ("OR pandas", "OR needs a word before it"),
        ("a OR OR b", "OR needs a word after it"),
        ("a AND NOT b", "AND needs a word after it"),
        ("(a OR b", "'(' is never closed"),
        ("a OR b)", "')' has no matching '('"),
        ("a () b", "'()' holds nothing"),
        ("*", "'*' follows the start of a word"),
        ("pi*vot", "'*' marks a prefix"),
        ('"..."', "has no words"),
        ("x " * 1001, "at most 2000"),
        (" ".join(["w"] * 65), "more than 64 words"),
    ],
)
def test_bad_syntax_is_a_clear_invalid_argument_error(query, words):
    with pytest.raises(InvalidArgumentError, match="search") as info:
        parse_query(query)
    assert words in str(info.value)


def test_a_query_that_is_not_a_string_is_a_type_error():
    with pytest.raises(InvalidArgumentTypeError, match="is a string, not bytes"):
        parse_query(b"pivot")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='ab é_.*"()-: ANDORT\t', max_size=30))
def test_any_input_is_refused_cleanly_or_valid_fts5(query):
    con = sqlite3.connect(":memory:")
    con.execute("CREATE VIRTUAL TABLE t USING fts5(b, tokenize='unicode61 remove_diacritics 2')")
    con.execute("INSERT INTO t VALUES ('a b é_x . and or not')")
    try:
        match = parse_query(query)
    except InvalidArgumentError:
        return
    con.execute("SELECT count(*) FROM t WHERE t MATCH ?", (match,)).fetchone()  # no SQL error


@pytest.fixture(scope="module")
def pg_connection(postgres_server):
    """One connection to a fresh database, for the property test below."""
    import psycopg

    with psycopg.connect(postgres_server.new_database(), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (doc tsvector)")
        conn.execute("INSERT INTO t VALUES (%s::tsvector)", ("'a':1 'b':2 'e':3 'x':4 'and':5",))
        yield conn


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(alphabet="ab é_.*\"()-:'\\!&|<>ANDORT\t", max_size=30))
def test_any_input_is_refused_cleanly_or_a_valid_tsquery(pg_connection, query):
    from copilot._pg_search import to_tsquery

    try:
        tsquery, _ = to_tsquery(query)
    except InvalidArgumentError:
        return
    pg_connection.execute("SELECT count(*) FROM t WHERE doc @@ %s::tsquery", (tsquery,))


# -- matching and ranking --------------------------------------------------------------------


@both_stores
def test_closer_and_repeated_words_rank_first(store):
    new_session(store, "s")
    filler = " ".join(f"word{i}" for i in range(40))
    turn(store, "s", f"pivot {filler} table")  # far apart, once
    turn(store, "s", "pivot table, then the pivot table again")  # close together, twice
    turn(store, "s", "nothing relevant here")
    hits = store.search("pivot table")
    assert [h["snippet"].startswith("«pivot» «table»") for h in hits] == [True, False]
    assert hits[0]["rank"] < hits[1]["rank"]  # bm25: lower is better


@both_stores
def test_phrases_prefixes_and_boolean_operators(store):
    new_session(store, "s")
    for text in ("pivot table", "table pivot", "pivoting the table", "pandas merge", "pivot"):
        turn(store, "s", text)
    assert texts(store, '"pivot table"') == {"pivot table"}
    assert texts(store, "piv*") == {"pivot table", "table pivot", "pivoting the table", "pivot"}
    assert texts(store, '"pivot tab"*') == {"pivot table"}
    assert texts(store, "pivot AND table") == {"pivot table", "table pivot"}
    assert texts(store, "pivot table") == {"pivot table", "table pivot"}
    assert texts(store, "pivot OR pandas") == {
        "pivot table",
        "table pivot",
        "pandas merge",
        "pivot",
    }
    assert texts(store, "pivot NOT table") == {"pivot"}
    assert texts(store, "(pivot OR pandas) NOT table") == {"pandas merge", "pivot"}
    assert texts(store, "table NOT pivot*") == set()


@both_stores
def test_case_and_accents_do_not_matter(store):
    new_session(store, "s")
    turn(store, "s", "Un café crème à Zürich")
    turn(store, "s", "NAIVE cafe")
    turn(store, "s", "decomposed cafe\u0301")  # é as e + combining acute accent
    assert texts(store, "cafe") == {"Un café crème à Zürich", "NAIVE cafe", "decomposed cafe\u0301"}
    assert texts(store, "CAFÉ") == texts(store, "cafe")
    assert texts(store, "zurich creme") == {"Un café crème à Zürich"}
    assert texts(store, "naïve") == {"NAIVE cafe"}
    assert found(store, "zurich")[0][1] == "Un café crème à «Zürich»"


@both_stores
def test_code_identifiers_are_found_whole_and_by_their_parts(store):
    new_session(store, "s")
    turn(store, "s", "call df.pivot_table(values='x')")
    turn(store, "s", "use snake_case names")
    turn(store, "s", "pivot and table, separately")
    assert texts(store, "df.pivot_table") == {"call df.pivot_table(values='x')"}
    assert found(store, "df.pivot_table")[0][1] == "call «df.pivot_table»(values='x')"
    assert texts(store, "pivot_table") == {"call df.pivot_table(values='x')"}
    assert texts(store, "pivot") == {
        "call df.pivot_table(values='x')",
        "pivot and table, separately",
    }
    assert texts(store, "snake_case") == {"use snake_case names"}
    assert texts(store, "snake") == {"use snake_case names"}
    assert texts(store, "case") == {"use snake_case names"}
    assert texts(store, "snake_ca*") == {"use snake_case names"}


@both_stores
def test_prompts_replies_and_partial_replies_are_indexed_and_nothing_else(store):
    new_session(store, "s")
    prompt_id = turn(store, "s", "a question about alpha", "an answer about alpha")
    aborted = Event(EventType.USER_MESSAGE, {"content": "tell me about beta"})
    store.append("s", [aborted, Event(EventType.ASSISTANT_TURN_START, {"messageId": aborted.id})])
    partial = {"messageId": aborted.id, "reason": "aborted", "partialContent": "beta is a"}
    store.append("s", [Event(EventType.ABORT, partial)])
    store.append("s", [Event(EventType.SESSION_WARNING, {"message": "alpha beta warning"})])
    store.append("s", [Event(EventType.ABORT, {"messageId": "m", "partialContent": ""})])
    hits = store.search("alpha OR beta")
    kinds = sorted((h["type"], h["messageId"] == prompt_id) for h in hits)
    assert kinds == [
        ("abort", False),
        ("assistant.message", True),
        ("user.message", False),
        ("user.message", True),
    ]
    # the partial reply has its prompt's model (stored an append earlier: looked up)
    assert [h["model"] for h in hits if h["type"] == EventType.ABORT] == ["gpt-4.1"]
    keys = {"sessionId", "eventId", "messageId", "seq", "type", "timestamp", "model"}
    assert keys | {"replaced", "snippet", "rank"} == set(hits[0])
    events = {e.id: e for e in store.read_events("s")}
    for hit in hits:  # each hit points at its event in the log
        assert events[hit["eventId"]].seq == hit["seq"]
        assert events[hit["eventId"]].type == hit["type"]


@both_stores
def test_a_replaced_exchange_stays_findable_and_says_so(store):
    new_session(store, "s")
    old = turn(store, "s", "plot the sales", "here is a plot of sales")
    turn(store, "s", "plot the sales by month", "monthly sales", replaces=old)
    hits = store.search("sales")
    assert {(h["snippet"], h["replaced"]) for h in hits} == {
        ("plot the «sales»", True),
        ("here is a plot of «sales»", True),
        ("plot the «sales» by month", False),
        ("monthly «sales»", False),
    }


# -- filters ---------------------------------------------------------------------------------


def test_filter_by_session_and_unknown_session_in_the_client(make_client):
    client = make_client(fallback_model="echo")
    for name in ("one", "two"):
        client.create_session(session_id=name, model="echo").send_and_wait(f"topic {name}")
    assert {h["sessionId"] for h in client.search("topic")} == {"one", "two"}
    assert {h["sessionId"] for h in client.search("topic", session_id="two")} == {"two"}
    with pytest.raises(SessionNotFoundError):
        client.search("topic", session_id="three")
    with pytest.raises(InvalidArgumentError):
        client.search("topic", session_id="a/b")


@both_stores
def test_filter_by_model_full_id_or_name(store):
    new_session(store, "s")
    turn(store, "s", "hello from gpt", "reply from gpt", model="openai:gpt-4.1")
    turn(store, "s", "hello from claude", model="anthropic:claude-sonnet-4")
    assert texts(store, "hello", model="gpt-4.1") == {"hello from gpt"}
    assert texts(store, "hello OR reply", model="openai:gpt-4.1") == {
        "hello from gpt",
        "reply from gpt",
    }
    assert texts(store, "hello", model="claude-sonnet-4") == {"hello from claude"}
    assert texts(store, "hello", model="gpt-4") == set()
    with pytest.raises(InvalidArgumentTypeError):
        store.search("hello", model=4)
    with pytest.raises(InvalidArgumentError):
        store.search("hello", model=" ")


@both_stores
def test_a_prompt_whose_turn_never_started_has_the_sessions_model(store):
    new_session(store, "s", model="gpt-4.1")
    store.append("s", [Event(EventType.USER_MESSAGE, {"content": "unrouted prompt"})])
    assert store.search("unrouted")[0]["model"] == "gpt-4.1"


@both_stores
def test_filter_by_time_with_datetimes_dates_deltas_and_iso_strings(store):
    new_session(store, "s")
    turn(store, "s", "note january", when="2026-01-15T10:00:00.000000+00:00")
    turn(store, "s", "note march", when="2026-03-15T10:00:00.000000+00:00")
    turn(store, "s", "note today")
    assert texts(store, "note", since="2026-02-01") == {"note march", "note today"}
    assert texts(store, "note", until="2026-02-01T00:00:00Z") == {"note january"}
    assert texts(
        store,
        "note",
        since=datetime(2026, 3, 15, 10, tzinfo=UTC),  # bounds are inclusive
        until=datetime(2026, 3, 15, 11, 0, tzinfo=UTC),
    ) == {"note march"}
    # the same instant written in another zone
    assert texts(store, "note", until="2026-01-15T11:00:00+01:00") == {"note january"}
    assert texts(store, "note", since=timedelta(days=1)) == {"note today"}
    assert texts(store, "note", since=date(2026, 3, 16)) == {"note today"}
    with pytest.raises(InvalidArgumentError, match="since='last week' is not an ISO 8601"):
        store.search("note", since="last week")
    with pytest.raises(InvalidArgumentTypeError, match="until is a datetime"):
        store.search("note", until=1700000000)
    with pytest.raises(InvalidArgumentError, match="is after until"):
        store.search("note", since="2026-03-01", until="2026-02-01")


def test_naive_times_are_local_time(store, monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+05:30, no daylight saving
    time.tzset()
    try:
        new_session(store, "s")
        turn(store, "s", "note march", when="2026-03-15T10:00:00.000000+00:00")
        assert texts(store, "note", since=datetime(2026, 3, 15, 15, 30)) == {"note march"}
        assert texts(store, "note", since=datetime(2026, 3, 15, 15, 31)) == set()
        assert texts(store, "note", since="2026-03-15T15:30:00") == {"note march"}
        assert texts(store, "note", until=date(2026, 3, 15)) == set()  # local midnight
    finally:
        monkeypatch.undo()
        time.tzset()


@both_stores
def test_limit_is_validated_and_applied(store):
    new_session(store, "s")
    for i in range(30):
        turn(store, "s", f"repeat {i}")
    assert len(store.search("repeat")) == 20
    assert len(store.search("repeat", limit=5)) == 5
    assert len(store.search("repeat", limit=1000)) == 30
    for bad, error in ((0, InvalidArgumentError), (1001, InvalidArgumentError)):
        with pytest.raises(error, match="limit is between 1 and 1000"):
            store.search("repeat", limit=bad)
    for bad in (True, "5", 2.0):
        with pytest.raises(InvalidArgumentTypeError, match="limit is an int"):
            store.search("repeat", limit=bad)


# -- in step with the log --------------------------------------------------------------------


def test_deleted_and_pruned_sessions_are_gone(make_client):
    client = make_client(fallback_model="echo")
    for name in ("keep", "drop", "old1", "old2"):
        client.create_session(session_id=name, model="echo").send_and_wait(f"secret {name}")
    client.delete_session("drop")
    assert {h["sessionId"] for h in client.search("secret")} == {"keep", "old1", "old2"}
    time.sleep(0.05)
    client.resume_session("keep").send_and_wait("secret keep again")
    cutoff = datetime.now(UTC) - datetime.fromisoformat(
        client.get_session_metadata("keep")["modifiedTime"]
    )
    pruned = client.delete_sessions(older_than=cutoff + timedelta(milliseconds=20))
    assert {s["sessionId"] for s in pruned} == {"old1", "old2"}
    assert {h["sessionId"] for h in client.search("secret")} == {"keep"}
    # a new session under a deleted name inherits nothing
    client.create_session(session_id="drop", model="echo").send_and_wait("fresh start")
    assert [h["sessionId"] for h in client.search("secret", session_id="drop")] == []


def test_docs_deleted_before_and_after_fts5_caught_up(store):
    new_session(store, "a")
    turn(store, "a", "shared word alpha")
    new_session(store, "b")
    turn(store, "b", "shared word beta")
    store.search("shared")  # FTS5 now holds both
    store.delete_session("b")  # the newest id goes, after FTS5 had it
    new_session(store, "c")
    turn(store, "c", "shared word gamma")  # SQLite gives it b's id again: it must be indexed
    assert texts(store, "shared") == {"shared word alpha", "shared word gamma"}
    new_session(store, "d")
    turn(store, "d", "shared word delta")
    store.delete_session("d")  # deleted while still waiting for FTS5
    store.delete_session("a")
    new_session(store, "e")
    turn(store, "e", "shared word epsilon")
    assert texts(store, "shared") == {"shared word gamma", "shared word epsilon"}
    store._cache._sql("INSERT INTO copilot_search(copilot_search) VALUES ('integrity-check')")
    assert store._cache._sql("SELECT count(*) FROM copilot_search_docsize").fetchone()[0] == 2


def test_appends_catch_fts5_up_when_many_docs_wait(store, monkeypatch):
    monkeypatch.setattr(search_module, "_MAX_PENDING", 300)
    new_session(store, "s")
    for i in range(600):
        turn(store, "s", f"filler {i}")
    # checked as the ids pass 256 (256 waiting: fewer than 300) and 512 (512 waiting: caught
    # up during that append, without any search)
    assert store._search._upto() == 512
    assert len(store.search("filler", limit=1000)) == 600
    assert store._search._upto() == 600


def _snapshot(store: EventStore, queries: list[str]) -> list[list[dict]]:
    return [store.search(q, limit=100) for q in queries]


def _mixed_store(store: EventStore) -> None:
    for s in range(6):
        new_session(store, f"s{s}", model=("gpt-4.1", "claude")[s % 2])
        for i in range(8):
            model = ("openai:gpt-4.1", "anthropic:claude")[s % 2]
            turn(
                store,
                f"s{s}",
                f"question {i} about pivot tables {s}",
                f"answer {i} café",
                model=model,
            )
    old = turn(store, "s1", "redo pivot", "first pivot answer")
    turn(store, "s1", "redo pivot better", "second pivot answer", replaces=old)
    store.delete_session("s3")
    prompt = Event(EventType.USER_MESSAGE, {"content": "aborted pivot question"})
    store.append("s2", [prompt, Event(EventType.ASSISTANT_TURN_START, {"messageId": prompt.id})])
    abort = {"messageId": prompt.id, "partialContent": "partial pivot"}
    store.append("s2", [Event(EventType.ABORT, abort)])


QUERIES = ["pivot", "pivot tables", "cafe OR redo", "answer NOT café", "quest*", '"pivot answer"']


def test_reindex_gives_the_same_results_as_the_incremental_index(store):
    _mixed_store(store)
    before = _snapshot(store, QUERIES)
    assert sum(map(len, before)) > 100
    calls: list[tuple[int, int]] = []
    indexed = store.reindex(progress=lambda done, total: calls.append((done, total)))
    assert indexed == store._search.count() == 5 * 16 + 4 + 2
    total = sum(store.last_seq(s["sessionId"]) for s in store.list_sessions())
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert _snapshot(store, QUERIES) == before


def _unranked(hits: list[dict]) -> list[dict]:
    return sorted(({k: v for k, v in h.items() if k != "rank"} for h in hits), key=str)


def test_a_store_without_an_index_is_indexed_on_first_use(tmp_path):
    directory = tmp_path / "store"
    store = EventStore(directory)
    _mixed_store(store)
    expected = _snapshot(store, QUERIES)
    store.close()
    drop_index(directory)  # what a version without search leaves behind

    store = EventStore(directory)
    try:
        assert store._search.state == "pending"
        new_session(store, "late")  # written after the upgrade, before the first search
        turn(store, "late", "late pivot")
        calls: list[tuple[int, int]] = []
        hits = store.search("pivot", limit=100, progress=lambda d, t: calls.append((d, t)))
        assert store._search.state == "ready"
        assert calls and calls[-1][0] == calls[-1][1] > 0
        # the late docs change bm25's corpus statistics: compare all but the rank
        assert _unranked([h for h in hits if h["sessionId"] != "late"]) == _unranked(expected[0])
        assert [h["snippet"] for h in hits if h["sessionId"] == "late"] == ["late «pivot»"]
        for query, before in zip(QUERIES[1:], expected[1:], strict=True):
            assert _unranked(store.search(query, limit=100)) == _unranked(before)
        calls.clear()
        store.search("pivot", progress=lambda d, t: calls.append((d, t)))
        assert calls == []  # indexed once
    finally:
        store.close()


def test_a_fresh_store_is_ready_at_once(store):
    assert store._search.state == "ready"


_APPEND_LOOP = textwrap.dedent(
    """
    import sys
    from copilot.events import Event, EventType
    from copilot.store import EventStore

    store = EventStore(sys.argv[1])
    prefix = sys.argv[2]
    for s in range(3):
        store.create_session({"sessionId": f"{prefix}{s}", "model": "m"})
    i = 0
    while True:
        sid = f"{prefix}{i % 3}"
        user = Event(EventType.USER_MESSAGE, {"content": f"prompt {prefix}marker{i}x"})
        start = Event(EventType.ASSISTANT_TURN_START, {"messageId": user.id, "model": "m"})
        store.append(sid, [user, start])
        reply = Event(EventType.ASSISTANT_MESSAGE, {"messageId": user.id, "content": f"reply {prefix}marker{i}y"})
        store.append(sid, [reply])
        if i % 40 == 0:
            store.search(f"{prefix}marker{i}x")  # FTS5 catches up in its own transactions too
        if i % 150 == 149:
            store.delete_session(sid)
            store.create_session({"sessionId": sid, "model": "m"})
        if i == 300:
            print("RUNNING", flush=True)
        i += 1
    """
)


def _indexable(store: EventStore) -> set[tuple[str, int, str]]:
    out = set()
    for info in store.list_sessions():
        for event in store.read_events(info["sessionId"]):
            text = event.data.get("content") or event.data.get("partialContent")
            if event.type in (EventType.USER_MESSAGE, EventType.ASSISTANT_MESSAGE) and text:
                out.add((info["sessionId"], event.seq, text))
    return out


def test_an_append_and_a_delete_write_the_index_in_their_own_transaction(store):
    new_session(store, "s")
    seen: list[str] = []
    con = store._cache._con
    con.set_trace_callback(seen.append)
    try:
        turn(store, "s", "traced prompt")
        store.delete_session("s")
    finally:
        con.set_trace_callback(None)
    begins = [i for i, q in enumerate(seen) if q.startswith("BEGIN")]
    commits = [i for i, q in enumerate(seen) if q.startswith("COMMIT")]
    assert len(begins) == len(commits) == 2  # the append, the delete: nothing else
    insert = next(i for i, q in enumerate(seen) if q.startswith("INSERT INTO copilot_search_docs"))
    delete = next(i for i, q in enumerate(seen) if q.startswith("DELETE FROM copilot_search_docs"))
    assert begins[0] < insert < commits[0]
    assert begins[1] < delete < commits[1]


def test_a_failed_append_leaves_no_index_entry(store):
    new_session(store, "s")

    def fail(metadata: dict) -> None:
        raise RuntimeError("update failed")

    with pytest.raises(RuntimeError):
        store.append("s", [Event(EventType.USER_MESSAGE, {"content": "rolled back"})], update=fail)
    assert store.search("rolled") == []
    assert store._search.count() == 0


@both_stores
def test_an_append_rolled_back_with_its_transaction_leaves_no_index_entry(store):
    new_session(store, "s")
    with pytest.raises(RuntimeError), store.transaction():
        turn(store, "s", "rolled back prompt", "rolled back reply")
        raise RuntimeError("the turn failed")
    assert store.search("rolled") == [] and store.last_seq("s") == 1
    turn(store, "s", "kept prompt")
    assert texts(store, "kept OR rolled") == {"kept prompt"}


@both_stores
def test_deleted_sessions_are_gone_and_a_new_one_inherits_nothing(store):
    from copilot.store_base import SearchableStore

    assert isinstance(store, SearchableStore)
    for name in ("keep", "drop"):
        new_session(store, name)
        turn(store, name, f"secret {name}", f"secret reply {name}")
    assert {h["sessionId"] for h in store.search("secret")} == {"keep", "drop"}
    assert {h["sessionId"] for h in store.search("secret", session_id="drop")} == {"drop"}
    store.delete_session("drop")
    assert {h["sessionId"] for h in store.search("secret")} == {"keep"}
    assert store.search("secret", session_id="drop") == []
    new_session(store, "drop")
    turn(store, "drop", "fresh start")
    assert texts(store, "secret OR fresh", session_id="drop") == {"fresh start"}


@both_stores
@pytest.mark.parametrize(
    ("query", "words"),
    [
        ('"pivot table', "never closed"),
        ("NOT numpy", "NOT needs a word before it"),
        ("a () b", "'()' holds nothing"),
        ("- ...", "at least one word"),
    ],
)
def test_bad_syntax_is_typed_on_the_store_too(store, query, words):
    new_session(store, "s")
    turn(store, "s", "numpy pivot table")
    with pytest.raises(InvalidArgumentError, match="search") as info:
        store.search(query)
    assert words in str(info.value)
    with pytest.raises(InvalidArgumentTypeError):
        store.search(b"pivot")
    assert texts(store, "numpy") == {"numpy pivot table"}  # nothing stored was touched


def _writers(directory: Path, prefixes: str, delay: float) -> None:
    """Run the append loop in one process per prefix; SIGKILL them all ``delay`` s in."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _APPEND_LOOP, str(directory), prefix],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for prefix in prefixes
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "RUNNING"
        time.sleep(delay)
    finally:
        for proc in procs:
            os.kill(proc.pid, signal.SIGKILL)
        for proc in procs:
            proc.wait(30)
            proc.stdout.close()
    assert [proc.returncode for proc in procs] == [-signal.SIGKILL] * len(procs)


def _check_agreement(directory: Path) -> None:
    store = EventStore(directory)
    try:
        log = _indexable(store)
        assert len(log) > 300
        docs = set(store._cache._sql("SELECT session_id, seq, body FROM copilot_search_docs"))
        assert docs == log
        store.search("prompt")  # FTS5 catches up with the docs
        store._cache._sql("INSERT INTO copilot_search(copilot_search) VALUES ('integrity-check')")
        for session_id, seq, text in log:  # every logged text is found, at its event
            marker = text.split()[1]
            hits = store.search(marker)
            assert [(h["sessionId"], h["seq"]) for h in hits] == [(session_id, seq)]
        fts_rows = store._cache._sql("SELECT count(*) FROM copilot_search_docsize").fetchone()[0]
        assert fts_rows == len(log)
    finally:
        store.close()


@pytest.mark.parametrize("delay", [0.0, 0.137, 0.411])
def test_kill_9_during_appends_leaves_index_and_log_in_agreement(tmp_path, delay):
    _writers(tmp_path / "store", "a", delay)
    _check_agreement(tmp_path / "store")


def test_kill_9_of_two_writers_appending_deleting_and_searching_at_once(tmp_path):
    _writers(tmp_path / "store", "ab", 0.5)
    _check_agreement(tmp_path / "store")


# -- faces -----------------------------------------------------------------------------------

_PG_APPEND_LOOP = textwrap.dedent(
    """
    import sys
    from copilot.events import Event, EventType
    from copilot.store_postgres import PostgresStore

    store = PostgresStore(sys.argv[1], owner="k")
    prefix = sys.argv[2]
    for s in range(3):
        store.create_session({"sessionId": f"{prefix}{s}", "model": "m"})
    i = 0
    while True:
        sid = f"{prefix}{i % 3}"
        user = Event(EventType.USER_MESSAGE, {"content": f"prompt {prefix}marker{i}x"})
        start = Event(EventType.ASSISTANT_TURN_START, {"messageId": user.id, "model": "m"})
        store.append(sid, [user, start])
        reply = {"messageId": user.id, "content": f"reply {prefix}marker{i}y", "model": "m"}
        store.append(sid, [Event(EventType.ASSISTANT_MESSAGE, reply)])
        if i % 150 == 149:
            store.delete_session(sid)
            store.create_session({"sessionId": sid, "model": "m"})
        if i == 200:
            print("RUNNING", flush=True)
        i += 1
    """
)


def test_kill_9_of_two_postgresql_writers_leaves_index_and_log_in_agreement(postgres_server):
    import psycopg

    url = postgres_server.new_database()
    from copilot.store_postgres import PostgresStore

    PostgresStore(url, owner="k").close()  # the schema, before two writers race to create it
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _PG_APPEND_LOOP, url, prefix],
            stdout=subprocess.PIPE,
            text=True,
        )
        for prefix in ("a", "b")
    ]
    try:
        for writer in writers:
            assert writer.stdout.readline().strip() == "RUNNING"
        time.sleep(0.3)
        for writer in writers:
            os.kill(writer.pid, signal.SIGKILL)
    finally:
        for writer in writers:
            writer.kill()
            writer.wait()
    with psycopg.connect(url, autocommit=True) as conn:
        logged = set(
            conn.execute(
                "SELECT session_id, seq, event -> 'data' ->> 'content' FROM copilot_events "
                "WHERE event ->> 'type' IN (%s, %s)",
                (EventType.USER_MESSAGE.value, EventType.ASSISTANT_MESSAGE.value),
            ).fetchall()
        )
        indexed = set(conn.execute("SELECT session_id, seq, body FROM copilot_search").fetchall())
        orphans = conn.execute(
            "SELECT count(*) FROM copilot_search s WHERE NOT EXISTS (SELECT 1 FROM "
            "copilot_sessions h WHERE h.owner = s.owner AND h.session_id = s.session_id)"
        ).fetchone()[0]
    assert len(logged) > 400
    assert indexed == logged and orphans == 0
    store = PostgresStore(url, owner="k")
    try:
        session, seq, text = max(logged, key=lambda row: (row[0], row[1]))
        marker = text.split()[1]
        assert [(h["sessionId"], h["seq"]) for h in store.search(marker)] == [(session, seq)]
    finally:
        store.close()


def test_async_search_and_reindex_match_the_sync_ones(tmp_path):
    sync = CopilotClient(base_directory=tmp_path, fallback_model="echo")
    try:
        sync.create_session(session_id="s", model="echo").send_and_wait("async parity words")
        expected = sync.search("parity")
    finally:
        sync.stop()

    def slow_progress(done: int, total: int) -> None:
        time.sleep(0.1)  # blocks whichever thread runs the rebuild

    async def main():
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        async with AsyncCopilotClient(base_directory=tmp_path, fallback_model="echo") as client:
            hits = await client.search("parity")
            ticker = asyncio.create_task(tick())
            await asyncio.sleep(0)
            count = await client.reindex(progress=slow_progress)
            ticker.cancel()
            return hits, count, await client.search("parity"), ticks

    hits, count, again, ticks = asyncio.run(main())
    assert hits == expected == again and len(hits) == 2  # the prompt and echo's reply
    assert count == 2
    assert ticks >= 5  # the caller's loop ran during the 0.2 s rebuild


def test_format_hits_makes_a_table():
    assert format_hits([]) == "no matches"
    hits = [
        {
            "sessionId": "notebook-analysis",
            "timestamp": "2026-11-30T09:15:02.123456+00:00",
            "type": "user.message",
            "snippet": "how do I «pivot» this",
            "replaced": False,
        },
        {
            "sessionId": "s",
            "timestamp": "2026-11-30T09:15:03.000000+00:00",
            "type": "assistant.message",
            "snippet": "use «pivot»_table",
            "replaced": True,
        },
    ]
    assert format_hits(hits).splitlines() == [
        "session            when (UTC)        who        snippet",
        "-" * 55,
        "notebook-analysis  2026-11-30 09:15  you        how do I «pivot» this",
        "s                  2026-11-30 09:15  assistant  use «pivot»_table (replaced)",
    ]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("pivot", "'pivot'"),
        ("Pivot TABLE", "('pivot' & 'table')"),
        ('"pivot table"', "('pivot' <-> 'table')"),
        ('"pivot tab"*', "('pivot' <-> 'tab':*)"),
        ("a OR b NOT c", "('a' | ('b' & !'c'))"),
        ("df.pivot_table", "('df' <-> 'pivot' <-> 'table')"),
        ("Zürich crème", "('zurich' & 'creme')"),
        ("col:umn & !x", "(('col' <-> 'umn') & 'x')"),
    ],
)
def test_the_postgresql_tsquery_of_a_query(query, expected):
    from copilot._pg_search import to_tsquery

    assert to_tsquery(query)[0] == expected


def test_the_postgresql_tsvector_of_a_text_keeps_postgresqls_limits():
    from copilot._pg_search import to_tsvector

    assert to_tsvector("Café au lait, CAFE! df.pivot_table x_1") == (
        "'cafe':1,4 'au':2 'lait':3 'df':5 'pivot':6 'table':7 'x':8 '1':9"
    )
    assert to_tsvector("") == ""
    # at most 256 positions a word; positions past 16,383 all count as 16,383, once
    assert to_tsvector("w " * 300) == "'w':" + ",".join(map(str, range(1, 257)))
    late = "x " * 16_390 + "w"
    assert to_tsvector(late) == "'x':" + ",".join(map(str, range(1, 257))) + " 'w':16383"
    spread = "w " + "x " * 16_380 + "w " * 5
    assert to_tsvector(spread).split(" ")[0] == "'w':1,16382,16383"
    # a word over 2,000 UTF-8 bytes is left out (its position still counts)
    assert to_tsvector("a " + "語" * 667 + " b") == "'a':1 'b':3"
    assert to_tsvector("a " + "語" * 666) == "'a':1 '" + "語" * 666 + "':2"
    assert to_tsvector("a " + "x" * 2001 + " b") == "'a':1 'b':3"


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(alphabet="ab é_.Ü'\\\"語 1:,-", max_size=40))
def test_any_text_gives_the_tsvector_postgresql_reads_back(pg_connection, text):
    from copilot._pg_search import to_tsvector, words

    literal = to_tsvector(text)
    lexemes = pg_connection.execute("SELECT tsvector_to_array(%s::tsvector)", (literal,))
    assert sorted(lexemes.fetchone()[0]) == sorted(set(words(text)))
