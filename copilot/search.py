"""Full-text search over every session's prompts and replies, on SQLite FTS5.

The index lives in the event store's own SQLite file, beside diskcache's ``Cache`` table, and
is written on the store's own connection: an append records its prompts and replies in the
append's transaction, a delete removes the session's entries in the delete's transaction, so
a crash leaves log and index both written or both not.

Layout::

    copilot_search_docs   one row per indexed event: session, seq, ids, type, timestamp
                          (UTC, normalised), model, replaced flag, and the text
    copilot_search        FTS5 over copilot_search_docs.body (external content: the text is
                          stored once, in the docs table)
    copilot_search_meta   ``state``: ``ready``, or ``pending`` (a store written before the
                          index existed, or a rebuild cut short); ``fts_upto``: FTS5 holds
                          exactly the docs with ids up to this mark

FTS5 takes the docs above the mark in one batch before each search (and inside an append
once :data:`_MAX_PENDING` wait): one FTS5 segment flush per append cost more than the rest
of the append (docs/architecture.md has the measurements). A delete trigger takes a doc out
of FTS5 when FTS5 holds it.

What is indexed: the ``content`` of ``user.message`` (prompts) and ``assistant.message``
(replies), and the ``partialContent`` of ``abort`` (the part of a reply streamed before an
abort). The tokenizer is ``unicode61 remove_diacritics 2``: case- and accent-insensitive
(``cafe`` finds ``Café``). Code identifiers are split into their parts (``_`` and ``.`` are
separators), and a query word like ``df.pivot_table`` becomes the phrase ``df pivot table``:
the identifier is found whole, and ``pivot`` or ``pivot_table`` find it by its parts.

A re-run cell's replaced exchange stays findable (the log keeps it); its hits carry
``replaced: True``.

Queries use a small, safe syntax (:func:`parse_query`), never raw FTS5: words, ``"phrases"``,
``prefix*``, ``AND``, ``OR``, ``NOT`` (upper case; precedence NOT > AND > OR, as in FTS5) and
parentheses. Every word reaches FTS5 as a quoted string, so no user input is FTS5 syntax.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from .errors import InvalidArgumentError, InvalidArgumentTypeError, StoreError
from .events import Event, EventType

__all__ = [
    "MARK_END",
    "MARK_START",
    "MAX_LIMIT",
    "QueryOp",
    "QueryTerm",
    "SearchIndex",
    "format_hits",
    "parse_query",
    "parse_query_tree",
    "timestamp_bound",
]

#: the snippet marks around each matched word: «pivot» «table»
MARK_START, MARK_END = "«", "»"
_ELLIPSIS = "…"
#: words in a snippet
_SNIPPET_TOKENS = 16
MAX_LIMIT = 1000
_MAX_QUERY_LENGTH = 2000
_MAX_TERMS = 64

_DOCS = "copilot_search_docs"
_FTS = "copilot_search"
_META = "copilot_search_meta"
_SCHEMA_VERSION = "1"

_SCHEMA = (
    f"""CREATE TABLE {_DOCS} (
        id INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        event_id TEXT NOT NULL,
        message_id TEXT,
        type TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        model TEXT,
        replaced INTEGER NOT NULL DEFAULT 0,
        body TEXT NOT NULL
    )""",
    f"CREATE INDEX {_DOCS}_session ON {_DOCS} (session_id, message_id)",
    f"""CREATE VIRTUAL TABLE {_FTS} USING fts5 (
        body, content='{_DOCS}', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2'
    )""",
    f"CREATE TABLE {_META} (key TEXT PRIMARY KEY, value NOT NULL)",
    f"INSERT INTO {_META} VALUES ('fts_upto', 0)",
    # A deleted doc leaves FTS5 too, with the exact text it indexed, if FTS5 had it.
    f"""CREATE TRIGGER {_DOCS}_ad AFTER DELETE ON {_DOCS}
        WHEN old.id <= (SELECT value FROM {_META} WHERE key = 'fts_upto') BEGIN
        INSERT INTO {_FTS} ({_FTS}, rowid, body) VALUES ('delete', old.id, old.body);
    END""",
)

_INSERT_DOC = (
    f"INSERT INTO {_DOCS} (session_id, seq, event_id, message_id, type, timestamp, model, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)

#: FTS5 catches up inside an append once this many docs wait (bounds a search's catch-up)
_MAX_PENDING = 2000

#: the index's tables and indexes, for measuring its size
_SIZE_OBJECTS = (
    _DOCS,
    f"{_DOCS}_session",
    f"{_FTS}_data",
    f"{_FTS}_idx",
    f"{_FTS}_docsize",
    f"{_FTS}_config",
    _META,
    f"sqlite_autoindex_{_META}_1",
)


Progress = Callable[[int, int], None]


# -- the query language ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Term:
    text: str
    prefix: bool

    def fts(self) -> str:
        quoted = '"' + self.text.replace('"', '""') + '"'
        return quoted + " *" if self.prefix else quoted


@dataclass(frozen=True, slots=True)
class _Op:
    op: str  # AND, OR, NOT
    left: _Term | _Op
    right: _Term | _Op

    def fts(self) -> str:
        return f"({self.left.fts()} {self.op} {self.right.fts()})"


_OPERATORS = ("AND", "OR", "NOT")
_SYNTAX_HELP = (
    'search syntax: words, "a phrase", prefix*, AND, OR, NOT (upper case), parentheses; '
    'e.g. pivot_table OR "pivot table" NOT excel'
)


def _error(problem: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"bad search query: {problem} ({_SYNTAX_HELP})")


def _has_word(text: str) -> bool:
    return any(char.isalnum() for char in text)


def _lex(query: str) -> list[str | _Term]:
    """Split a query into terms, operators and parentheses."""
    tokens: list[str | _Term] = []
    i, n = 0, len(query)
    while i < n:
        char = query[i]
        if char.isspace():
            i += 1
        elif char in "()":
            tokens.append(char)
            i += 1
        elif char == '"':
            end = query.find('"', i + 1)
            if end < 0:
                raise _error(f"the quote at position {i} is never closed; close the phrase")
            text = query[i + 1 : end]
            i = end + 1
            prefix = i < n and query[i] == "*"
            i += prefix
            if not _has_word(text):
                raise _error(f"the phrase {query[i - 2 - len(text) - prefix : i]!r} has no words")
            tokens.append(_Term(" ".join(text.split()), prefix))
        else:
            start = i
            while i < n and not query[i].isspace() and query[i] not in '()"':
                i += 1
            word = query[start:i]
            if word in _OPERATORS:
                tokens.append(word)
                continue
            core = word.rstrip("*")
            if "*" in core:
                raise _error(f"{word!r}: '*' marks a prefix and goes at the end, as in pivot*")
            if not _has_word(core):
                if word.endswith("*"):
                    raise _error(f"{word!r}: '*' follows the start of a word, as in pivot*")
                continue  # punctuation alone ("-", "...") matches nothing: skip it
            tokens.append(_Term(core, word.endswith("*")))
    return tokens


class _Parser:
    """Recursive descent: or := and (OR and)*; and := not (AND? not)*; not := atom (NOT atom)*."""

    def __init__(self, tokens: list[str | _Term]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.terms = 0

    def peek(self) -> str | _Term | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def parse(self) -> _Term | _Op:
        node = self.or_()
        token = self.peek()
        if token == ")":
            raise _error("a ')' has no matching '('")
        assert token is None, token
        return node

    def or_(self) -> _Term | _Op:
        node = self.and_()
        while self.peek() == "OR":
            self.pos += 1
            node = _Op("OR", node, self.and_("OR"))
        return node

    def and_(self, after: str | None = None) -> _Term | _Op:
        node = self.not_(after)
        while True:
            token = self.peek()
            if token == "AND":
                self.pos += 1
                node = _Op("AND", node, self.not_("AND"))
            elif isinstance(token, _Term) or token == "(":
                node = _Op("AND", node, self.not_())
            else:
                return node

    def not_(self, after: str | None = None) -> _Term | _Op:
        node = self.atom(after)
        while self.peek() == "NOT":
            self.pos += 1
            node = _Op("NOT", node, self.atom("NOT"))
        return node

    def atom(self, after: str | None) -> _Term | _Op:
        token = self.peek()
        if isinstance(token, _Term):
            self.pos += 1
            self.terms += 1
            if self.terms > _MAX_TERMS:
                raise _error(f"more than {_MAX_TERMS} words; search with fewer")
            return token
        if token == "(":
            self.pos += 1
            if self.peek() == ")":
                raise _error("'()' holds nothing; put words between the parentheses")
            node = self.or_()
            if self.peek() != ")":
                raise _error("a '(' is never closed; add the ')'")
            self.pos += 1
            return node
        if after is not None:
            where = "at the end" if token is None else f"before {token!r}"
            raise _error(f"{after} needs a word after it, not {where}")
        if token == "NOT":
            raise _error("NOT needs a word before it: write pandas NOT numpy, not NOT numpy")
        if token in _OPERATORS:
            raise _error(f"{token} needs a word before it")
        if token == ")":
            raise _error("a ')' has no matching '('")
        raise _error("there is nothing to search for")


#: the parse tree's nodes, for stores that compile it to their own syntax (PostgreSQL)
QueryTerm = _Term
QueryOp = _Op


def parse_query_tree(query: Any) -> _Term | _Op:
    """The parse tree of the user's search syntax: :data:`QueryTerm` leaves (``text``, the
    word or phrase as typed; ``prefix``) under :data:`QueryOp` nodes (``op``: AND, OR, NOT;
    ``left``, ``right``). Malformed input raises :class:`InvalidArgumentError`, as
    :func:`parse_query` does.

    >>> parse_query_tree("pivot*")
    _Term(text='pivot', prefix=True)
    """
    if not isinstance(query, str):
        raise InvalidArgumentTypeError(f"a search query is a string, not {type(query).__name__}")
    if len(query) > _MAX_QUERY_LENGTH:
        raise _error(f"{len(query)} characters; a query has at most {_MAX_QUERY_LENGTH}")
    tokens = _lex(query)
    if not any(isinstance(token, _Term) for token in tokens):
        raise InvalidArgumentError(
            "a search query needs at least one word (letters or digits); "
            "e.g. client.search('pivot table')"
        )
    return _Parser(tokens).parse()


def parse_query(query: Any) -> str:
    """Turn the user's search syntax into a safe FTS5 MATCH expression.

    >>> parse_query('df.pivot_table OR "pivot table" NOT excel')
    '("df.pivot_table" OR ("pivot table" NOT "excel"))'
    >>> parse_query("pivot*  tables")
    '("pivot" * AND "tables")'

    Every word becomes a quoted FTS5 string (so ``:``, ``^``, ``NEAR``, ``-`` are just text),
    operators are rebuilt from a parse tree, and anything malformed raises
    :class:`InvalidArgumentError` naming the problem and the syntax.
    """
    return parse_query_tree(query).fts()


# -- filters -----------------------------------------------------------------------------------


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def timestamp_bound(value: Any, name: str) -> str | None:
    """``since`` / ``until`` as the stored timestamps' text (ISO 8601, UTC, microseconds).

    Takes a ``datetime`` (naive means local time, as ``datetime.timestamp()`` assumes), a
    ``date`` (its local midnight), a ``timedelta`` (that long before now) or an ISO 8601 string.
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        return _utc_text(datetime.now(UTC) - value)
    if isinstance(value, datetime):
        return _utc_text(value)
    if isinstance(value, date):
        return _utc_text(datetime(value.year, value.month, value.day))
    if isinstance(value, str):
        try:
            return _utc_text(datetime.fromisoformat(value.strip()))
        except ValueError:
            raise InvalidArgumentError(
                f"{name}={value!r} is not an ISO 8601 date or time; "
                f"write e.g. {name}='2026-11-01' or {name}='2026-11-01T09:30:00+01:00'"
            ) from None
    raise InvalidArgumentTypeError(
        f"{name} is a datetime, date, timedelta or ISO 8601 string, not {type(value).__name__}"
    )


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidArgumentTypeError(f"limit is an int, not {type(limit).__name__}")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgumentError(f"limit is between 1 and {MAX_LIMIT}, not {limit}")
    return limit


def _check_model(model: Any) -> str | None:
    if model is None:
        return None
    if not isinstance(model, str):
        raise InvalidArgumentTypeError(f"model is a string, not {type(model).__name__}")
    if not model.strip():
        raise InvalidArgumentError("model cannot be empty; pass e.g. model='gpt-4.1' or None")
    return model


def _stored_timestamp(text: str) -> str:
    # utc_now() writes exactly this form; anything else is normalised so ranges compare as text
    if len(text) == 32 and text.endswith("+00:00"):
        return text
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _utc_text(moment)


# -- the index ---------------------------------------------------------------------------------


class _Log(Protocol):
    """What a rebuild reads: the event store's public face."""

    def list_sessions(self) -> list[dict[str, Any]]: ...

    def last_seq(self, session_id: str) -> int: ...

    def read_events(self, session_id: str, after: int = 0) -> list[Event]: ...

    def transaction(self) -> AbstractContextManager[Any]: ...


#: sessions are rebuilt in transactions of about this many events (short write locks)
_REBUILD_CHUNK = 5000


def indexed_texts(
    events: Iterable[Event],
    metadata: Mapping[str, Any],
    prompt_model: Callable[[str], str | None] = lambda message_id: None,
) -> tuple[list[tuple[Event, Any, str, Any]], list[str]]:
    """What a search index holds of ``events`` (numbered, just appended), for every store:
    ``(event, message id, text, model)`` per prompt, reply and non-empty partial reply, and
    the message ids the prompts replace (earlier rows to flag ``replaced``).

    A prompt's model is its turn's (from ``assistant.turn_start`` in ``events``), else the
    session's (``metadata``, or a model change or resume among ``events``); a reply's is its
    own; an abort's is its prompt's, from ``events`` or else ``prompt_model(message id)``.
    """
    events = list(events)
    turn_models = {
        e.data.get("messageId"): e.data.get("model")
        for e in events
        if e.type == EventType.ASSISTANT_TURN_START
    }
    current_model = metadata.get("model")
    prompt_models: dict[str, Any] = {}
    texts: list[tuple[Event, Any, str, Any]] = []
    replaced: list[str] = []
    for event in events:
        kind, data = event.type, event.data
        if kind in (EventType.SESSION_START, EventType.SESSION_RESUME):
            current_model = data.get("model", current_model)
            continue
        if kind == EventType.SESSION_MODEL_CHANGE:
            current_model = data.get("newModel", current_model)
            continue
        if kind == EventType.USER_MESSAGE:
            body, message_id = data.get("content"), event.id
            # the model that served the turn; the session's model if the turn never started
            model = turn_models.get(message_id) or current_model
            prompt_models[message_id] = model
            if isinstance(data.get("replaces"), str):
                replaced.append(data["replaces"])
        elif kind == EventType.ASSISTANT_MESSAGE:
            body, message_id = data.get("content"), data.get("messageId")
            model = data.get("model")
        elif kind == EventType.ABORT:
            body, message_id = data.get("partialContent"), data.get("messageId")
            if not (isinstance(body, str) and body.strip()):
                continue
            model = prompt_models.get(message_id) or (
                prompt_model(message_id) if isinstance(message_id, str) else None
            )
        else:
            continue
        if isinstance(body, str) and body.strip():
            texts.append((event, message_id, body, model))
    return texts, replaced


class SearchIndex:
    """The FTS5 index of one event store, on its diskcache ``Cache``'s SQLite connection.

    Every write runs on ``cache._sql``, the calling thread's connection to the store's file,
    so it joins whatever transaction the store has open (``cache.transact()``).
    """

    def __init__(self, cache: Any) -> None:
        self._cache = cache
        exists = self._sql(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_META,)
        ).fetchone()
        if exists is None:
            with cache.transact(retry=True):
                self._create(rebuilt=False)

    def _sql(self, statement: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._cache._sql(statement, params)

    def _create(self, *, rebuilt: bool) -> None:
        """Create the tables (in the caller's transaction) unless another process just did.

        A store that already holds sessions was written before the index existed: it is
        marked ``pending`` and indexed on first search.
        """
        if self._sql("SELECT 1 FROM sqlite_master WHERE name = ?", (_META,)).fetchone():
            return
        for statement in _SCHEMA:
            self._sql(statement)
        has_sessions = self._sql(
            "SELECT 1 FROM Cache WHERE key >= 's/' AND key < 's0' LIMIT 1"
        ).fetchone()
        state = "pending" if (has_sessions or rebuilt) else "ready"
        self._sql(
            f"INSERT INTO {_META} VALUES ('version', ?), ('state', ?)", (_SCHEMA_VERSION, state)
        )

    @property
    def state(self) -> str:
        """``ready``, or ``pending`` until the store's existing events have been indexed."""
        row = self._sql(f"SELECT value FROM {_META} WHERE key = 'state'").fetchone()
        return "pending" if row is None else row[0]

    # -- writes (inside the store's transactions) ------------------------------------------

    def add(self, session_id: str, events: Iterable[Event], metadata: Mapping[str, Any]) -> None:
        """Index the prompts and replies among ``events``, just appended to ``session_id``.

        Call it inside the append's transaction. ``metadata`` gives the session's model for a
        prompt whose turn never started.
        """
        rows = []
        texts, replaced_ids = indexed_texts(
            events, metadata, lambda message_id: self._prompt_model(session_id, message_id)
        )
        for event, message_id, body, model in texts:
            rows.append(
                (
                    session_id,
                    event.seq,
                    event.id,
                    message_id,
                    event.type,
                    _stored_timestamp(event.timestamp),
                    model,
                    body,
                )
            )
        replaced = [(session_id, message_id) for message_id in replaced_ids]
        con = self._cache._con
        if rows:
            if len(rows) == 1:  # a turn's usual append: one prompt or one reply
                last = con.execute(_INSERT_DOC, rows[0]).lastrowid
            else:
                con.executemany(_INSERT_DOC, rows)
                last = con.execute("SELECT last_insert_rowid()").fetchone()[0]
            # how many docs wait for FTS5 is checked once per 256 inserted, not per append
            if last // 256 != (last - len(rows)) // 256 and last - self._upto() >= _MAX_PENDING:
                self._catch_up()
        if replaced:  # after the inserts: a rebuild adds the replaced prompt in the same call
            con.executemany(
                f"UPDATE {_DOCS} SET replaced = 1 WHERE session_id = ? AND message_id = ?",
                replaced,
            )

    def _prompt_model(self, session_id: str, message_id: Any) -> str | None:
        row = self._sql(
            f"SELECT model FROM {_DOCS} WHERE session_id = ? AND message_id = ? "
            "AND type = 'user.message'",
            (session_id, message_id),
        ).fetchone()
        return None if row is None else row[0]

    def _upto(self) -> int:
        return self._sql(f"SELECT value FROM {_META} WHERE key = 'fts_upto'").fetchone()[0]

    def _catch_up(self) -> None:
        """Give FTS5 the docs it lacks (in the caller's transaction)."""
        upto = self._upto()
        last = self._sql(f"SELECT max(id) FROM {_DOCS}").fetchone()[0]
        if last is None or last <= upto:
            return
        self._sql(
            f"INSERT INTO {_FTS} (rowid, body) SELECT id, body FROM {_DOCS} WHERE id > ?"
            " ORDER BY id",
            (upto,),
        )
        self._sql(f"UPDATE {_META} SET value = ? WHERE key = 'fts_upto'", (last,))

    def sync(self) -> None:
        """Bring FTS5 up to date with the docs table (its own short write transaction).

        Appends write only the docs table (one row per prompt or reply, in the append's
        transaction); FTS5 takes the waiting docs in one batch before each search, which
        costs a fraction of flushing an FTS5 segment per append (see docs/architecture.md).
        """
        last = self._sql(f"SELECT max(id) FROM {_DOCS}").fetchone()[0]
        if last is not None and last > self._upto():
            with self._cache.transact(retry=True):
                self._catch_up()

    def remove_session(self, session_id: str) -> None:
        """Remove a session's entries; call it inside the delete's transaction."""
        self._sql(f"DELETE FROM {_DOCS} WHERE session_id = ?", (session_id,))
        # A new doc's id is the largest id + 1. If the delete took the largest ids, lower the
        # mark with them: ids at or below it must be docs FTS5 already holds.
        self._sql(
            f"UPDATE {_META} SET value = (SELECT coalesce(max(id), 0) FROM {_DOCS})"
            f" WHERE key = 'fts_upto' AND value > (SELECT coalesce(max(id), 0) FROM {_DOCS})"
        )

    # -- rebuilding ------------------------------------------------------------------------

    def reindex(self, log: _Log, progress: Progress | None = None) -> int:
        """Drop the index and build it again from the log; return the entries indexed.

        ``progress(done, total)`` is called with events read so far and the total. Other
        writers go on meanwhile: sessions are rebuilt a few thousand events per transaction,
        and appends to a session already rebuilt are indexed as usual.
        """
        with log.transaction():
            for name in (_DOCS, _META):  # the FTS table and triggers go with their tables
                self._sql(f"DROP TABLE IF EXISTS {name}")
            self._sql(f"DROP TABLE IF EXISTS {_FTS}")
            self._create(rebuilt=True)
        return self.build(log, progress)

    def ensure_built(self, log: _Log, progress: Progress | None = None) -> None:
        """Index a store written before the index existed (or a rebuild cut short)."""
        if self.state != "ready":
            self.build(log, progress)

    def build(self, log: _Log, progress: Progress | None = None) -> int:
        """Index every session's events afresh, then mark the index ready."""
        sessions = [(s["sessionId"], log.last_seq(s["sessionId"])) for s in log.list_sessions()]
        total = sum(count for _, count in sessions)
        done = 0
        if progress is not None:
            progress(0, total)
        for chunk in _chunks(sessions, _REBUILD_CHUNK):
            with log.transaction():
                for session_id, _ in chunk:
                    self.remove_session(session_id)
                    events = log.read_events(session_id)
                    # the log's session.start names the model: no metadata needed
                    self.add(session_id, events, {})
                    done += len(events)
                self._catch_up()
            if progress is not None:
                progress(min(done, total), total)
        with log.transaction():
            self._sql(f"UPDATE {_META} SET value = 'ready' WHERE key = 'state'")
            return self.count()

    def count(self) -> int:
        """The number of indexed events."""
        return self._sql(f"SELECT count(*) FROM {_DOCS}").fetchone()[0]

    def size_bytes(self) -> int:
        """The index's size on disk: its tables and indexes, in bytes."""
        marks = ",".join("?" * len(_SIZE_OBJECTS))
        row = self._sql(
            f"SELECT sum(pgsize) FROM dbstat WHERE aggregate = TRUE AND name IN ({marks})",
            _SIZE_OBJECTS,
        ).fetchone()
        return int(row[0] or 0)

    # -- queries -----------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        session_id: str | None = None,
        model: str | None = None,
        since: Any = None,
        until: Any = None,
        limit: int = 20,
    ) -> list[dict[str, Any]]:
        """The best ``limit`` hits for ``query``, best first (see :func:`parse_query`).

        ``model`` matches the model that served the turn, either the full id
        (``openai:gpt-4.1``) or the name after the provider (``gpt-4.1``). Each hit is a dict:
        ``sessionId``, ``eventId``, ``messageId``, ``seq``, ``type``, ``timestamp``, ``model``,
        ``replaced``, ``snippet`` (matches in «»), ``rank`` (FTS5's bm25: lower is better).
        """
        match = parse_query(query)
        limit = _check_limit(limit)
        self.sync()
        model = _check_model(model)
        low, high = timestamp_bound(since, "since"), timestamp_bound(until, "until")
        if low is not None and high is not None and low > high:
            raise InvalidArgumentError(f"since ({low}) is after until ({high}): nothing can match")
        where, params = [f"{_FTS} MATCH ?"], [match]
        if session_id is not None:
            where.append("d.session_id = ?")
            params.append(session_id)
        if model is not None:
            where.append("(d.model = ? OR substr(d.model, instr(d.model, ':') + 1) = ?)")
            params += [model, model]
        if low is not None:
            where.append("d.timestamp >= ?")
            params.append(low)
        if high is not None:
            where.append("d.timestamp <= ?")
            params.append(high)
        # Ties (equal bm25) go newest first, then in log order: the same hits in the same
        # order whatever order the index was written in.
        rows = self._query(
            f"SELECT d.id, d.session_id, d.event_id, d.message_id, d.seq, d.type, d.timestamp,"
            f" d.model, d.replaced, f.rank FROM {_FTS} f JOIN {_DOCS} d ON d.id = f.rowid"
            f" WHERE {' AND '.join(where)}"
            " ORDER BY f.rank, d.timestamp DESC, d.session_id, d.seq LIMIT ?",
            [*params, limit],
        )
        snippets = self._snippets(match, [row[0] for row in rows])
        hits = []
        for doc_id, sid, event_id, message_id, seq, kind, stamp, hit_model, replaced, rank in rows:
            if doc_id not in snippets:
                continue  # deleted between the two queries
            hits.append(
                {
                    "sessionId": sid,
                    "eventId": event_id,
                    "messageId": message_id,
                    "seq": seq,
                    "type": kind,
                    "timestamp": stamp,
                    "model": hit_model,
                    "replaced": bool(replaced),
                    "snippet": snippets[doc_id],
                    "rank": rank,
                }
            )
        return hits

    def _query(self, statement: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            return self._sql(statement, params).fetchall()
        except sqlite3.OperationalError as exc:
            # parse_query only emits valid FTS5; this is the last line of defence
            if str(exc).startswith("fts5:"):
                raise _error(str(exc)) from None
            raise StoreError(f"the search index cannot be read: {exc}") from exc

    def _snippets(self, match: str, doc_ids: list[int]) -> dict[int, str]:
        if not doc_ids:
            return {}
        rows = self._query(
            f"SELECT rowid, snippet({_FTS}, 0, ?, ?, ?, ?) FROM {_FTS}"
            f" WHERE {_FTS} MATCH ? AND rowid IN (SELECT value FROM json_each(?))",
            [MARK_START, MARK_END, _ELLIPSIS, _SNIPPET_TOKENS, match, json.dumps(doc_ids)],
        )
        return {doc_id: " ".join(text.split()) for doc_id, text in rows}


def _chunks(sessions: list[tuple[str, int]], size: int) -> Iterator[list[tuple[str, int]]]:
    chunk: list[tuple[str, int]] = []
    events = 0
    for item in sessions:
        chunk.append(item)
        events += item[1]
        if events >= size:
            yield chunk
            chunk, events = [], 0
    if chunk:
        yield chunk


# -- output ------------------------------------------------------------------------------------


def format_hits(hits: Sequence[Mapping[str, Any]], *, width: int = 100) -> str:
    """Hits as a plain-text table (session, when, who, snippet) for the CLI and the magic."""
    if not hits:
        return "no matches"
    lines = []
    session_width = min(32, max(len("session"), *(len(h["sessionId"]) for h in hits)))
    header = f"{'session':<{session_width}}  {'when (UTC)':<16}  {'who':<9}  snippet"
    lines.append(header)
    lines.append("-" * min(width, max(len(header), 40)))
    for hit in hits:
        session = hit["sessionId"]
        if len(session) > session_width:
            session = session[: session_width - 1] + _ELLIPSIS
        when = str(hit["timestamp"])[:16].replace("T", " ")
        who = {"user.message": "you", "assistant.message": "assistant"}.get(hit["type"], "aborted")
        snippet = hit["snippet"] + (" (replaced)" if hit.get("replaced") else "")
        lines.append(f"{session:<{session_width}}  {when:<16}  {who:<9}  {snippet}")
    return "\n".join(lines)
