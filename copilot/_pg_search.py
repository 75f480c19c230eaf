"""Full-text search on the PostgreSQL store: the same query syntax, hits and filters as
:mod:`copilot.search` (SQLite FTS5), on a ``tsvector`` column with a GIN index.

Table ``copilot_search`` (schema migration 2 in :mod:`copilot._pg_schema`), keyed like the
events it indexes, ``(owner, session_id, seq)``: one row per prompt, reply or aborted partial
reply, with its ids, type, timestamp, model, ``replaced`` flag, the text and ``doc``, the
text's ``tsvector``. Rows are written by the append's own statement and removed by the
delete's transaction (:mod:`copilot.store_postgres`), so log and index never disagree.

Words are made here, in Python, not by PostgreSQL's parser and dictionaries: a word is a run of
letters and digits (``_``, ``.`` and every other character separate words, as FTS5's
``unicode61``), lower-cased, with accents removed (NFKD, combining marks dropped, as
``remove_diacritics 2``). ``doc`` is built as a ``tsvector`` literal and a query as a
``tsquery`` literal (``'pivot' <-> 'table' & !'excel'``), so the server's locale,
``default_text_search_config`` and the ``unaccent`` extension (absent on many managed
services) change nothing, and ``cafe`` finds ``Café`` on every server. No stemming, as on
SQLite (``table`` does not find ``tables``; ``table*`` does).

Limits (PostgreSQL's ``tsvector``): a text is indexed by its first :data:`INDEXED_CHARS`
characters (a ``tsvector`` holds at most 1 MB); word positions stop at 16,383, so a phrase
further into a text can match loosely; a word over 2,000 characters is not indexed.

Ranking: ``rank`` is ``-ts_rank_cd`` (cover density: repeated and close-together words rank
first); lower is better, as FTS5's bm25, though the two scales differ.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from .errors import InvalidArgumentError
from .events import Event
from .search import (
    _ELLIPSIS,
    _SNIPPET_TOKENS,
    MARK_END,
    MARK_START,
    QueryOp,
    QueryTerm,
    _check_limit,
    _check_model,
    _stored_timestamp,
    indexed_texts,
    parse_query_tree,
    timestamp_bound,
)

__all__ = [
    "INDEXED_CHARS",
    "SearchQuery",
    "SearchRow",
    "index_rows",
    "snippet",
    "to_tsquery",
    "to_tsvector",
]

#: characters of a prompt or reply that are indexed (a tsvector holds at most 1 MB)
INDEXED_CHARS = 250_000
_MAX_POSITION = 16383
_MAX_POSITIONS = 256
_MAX_WORD_BYTES = 2000
_WORD = re.compile(r"[^\W_]+")


def _fold(text: str) -> str:
    """Lower case without accents: ``Café`` -> ``cafe`` (NFKD, combining marks dropped)."""
    if text.isascii():  # nothing to decompose: the common case, ~4x faster
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def words(text: str) -> list[str]:
    """The indexed words of ``text``, in order: letters-and-digits runs, folded."""
    return _WORD.findall(_fold(text))


def _quote(word: str) -> str:
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"


def to_tsvector(text: str) -> str:
    """``text``'s words as a ``tsvector`` literal, positions from 1 (capped as PostgreSQL's).

    Each word once, in order of first use, with its positions ascending: at most
    :data:`_MAX_POSITIONS`, every position past :data:`_MAX_POSITION` counted as that one (so
    it appears once); a word over :data:`_MAX_WORD_BYTES` UTF-8 bytes is left out. Words are
    letters and digits only (:data:`_WORD`), so none needs quoting inside its quotes. Written
    for the append's path (a prompt's vector in 2.4 us instead of 6.1, issue 16).
    """
    positions: dict[str, list[int]] = {}
    long_word = _MAX_WORD_BYTES // 4  # a character is at most 4 bytes: shorter words fit
    for index, word in enumerate(words(text[:INDEXED_CHARS]), 1):
        found = positions.get(word)
        if index > _MAX_POSITION:
            index = _MAX_POSITION
        if found is None:
            if len(word) > long_word and len(word.encode()) > _MAX_WORD_BYTES:
                continue
            positions[word] = [index]
        elif len(found) < _MAX_POSITIONS and found[-1] != index:
            found.append(index)
    return " ".join(f"'{word}':{','.join(map(str, spots))}" for word, spots in positions.items())


def _term_tsquery(term: QueryTerm) -> str:
    parts = [_quote(word) for word in words(term.text)]
    if term.prefix:
        parts[-1] += ":*"
    return parts[0] if len(parts) == 1 else "(" + " <-> ".join(parts) + ")"


def _node_tsquery(node: QueryTerm | QueryOp) -> str:
    if isinstance(node, QueryTerm):
        return _term_tsquery(node)
    left, right = _node_tsquery(node.left), _node_tsquery(node.right)
    if node.op == "NOT":  # FTS5's "a NOT b": a and not b
        return f"({left} & !{right})"
    return f"({left} {'&' if node.op == 'AND' else '|'} {right})"


def to_tsquery(query: Any) -> tuple[str, list[tuple[list[str], bool]]]:
    """The ``tsquery`` literal for the user's search syntax, and the terms (words, prefix) the
    snippets mark. Malformed input raises :class:`InvalidArgumentError` (see
    :func:`copilot.search.parse_query`).

    >>> to_tsquery('df.pivot_table OR "Café au"* NOT excel')[0]
    "(('df' <-> 'pivot' <-> 'table') | (('cafe' <-> 'au':*) & !'excel'))"
    """
    tree = parse_query_tree(query)
    terms: list[tuple[list[str], bool]] = []
    stack: list[QueryTerm | QueryOp] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, QueryTerm):
            terms.append((words(node.text), node.prefix))
        else:
            stack += [node.left, node.right]
    return _node_tsquery(tree), terms


# -- the search statement ---------------------------------------------------------------------


class SearchQuery:
    """One search, checked (in :meth:`copilot.search.SearchIndex.search`'s order) and compiled:
    ``statement`` and ``params`` for the cursor, :meth:`hits` for the rows it returns."""

    def __init__(
        self,
        owner: str,
        query: Any,
        session_id: str | None,
        model: Any,
        since: Any,
        until: Any,
        limit: Any,
    ) -> None:
        tsquery, self.terms = to_tsquery(query)
        limit = _check_limit(limit)
        model = _check_model(model)
        low, high = timestamp_bound(since, "since"), timestamp_bound(until, "until")
        if low is not None and high is not None and low > high:
            raise InvalidArgumentError(f"since ({low}) is after until ({high}): nothing can match")
        where, params = ["owner = %s", "doc @@ %s::tsquery"], [owner, tsquery]
        if session_id is not None:
            where.append("session_id = %s")
            params.append(session_id)
        if model is not None:  # the full id, or the name after the provider
            where.append("(model = %s OR substr(model, strpos(model, ':') + 1) = %s)")
            params += [model, model]
        if low is not None:
            where.append("ts >= %s")
            params.append(low)
        if high is not None:
            where.append("ts <= %s")
            params.append(high)
        # ties go newest first, then in log order, as on SQLite
        self.statement = (
            "SELECT session_id, event_id, message_id, seq, type, ts, model, replaced, body, "
            "-ts_rank_cd(doc, %s::tsquery) AS rank FROM copilot_search "
            f"WHERE {' AND '.join(where)} ORDER BY rank, ts DESC, session_id, seq LIMIT %s"
        )
        self.params = [tsquery, *params, limit]

    def hits(self, rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
        """The statement's rows as hit dicts (the SQLite index's shape)."""
        return [
            {
                "sessionId": sid,
                "eventId": event_id,
                "messageId": message_id,
                "seq": seq,
                "type": kind,
                "timestamp": stamp,
                "model": model,
                "replaced": replaced,
                "snippet": snippet(body, self.terms),
                "rank": rank,
            }
            for sid, event_id, message_id, seq, kind, stamp, model, replaced, body, rank in rows
        ]


# -- rows ---------------------------------------------------------------------------------------


class SearchRow(NamedTuple):
    """One indexed event, as ``copilot_search`` stores it (``model`` None: look it up)."""

    seq: int
    event_id: str
    message_id: str | None
    type: str
    timestamp: str
    model: str | None
    replaced: bool
    body: str
    doc: str


def index_rows(
    events: Iterable[Event], metadata: Mapping[str, Any]
) -> tuple[list[SearchRow], list[str]]:
    """The rows to index for ``events`` (numbered, just appended) and the message ids their
    prompts replace (rows of earlier appends to flag ``replaced``).

    The same choices as :meth:`copilot.search.SearchIndex.add`: prompts, replies, non-empty
    partial replies; a prompt's model is its turn's, else the session's. An abort's model is
    its prompt's when the prompt is in ``events``; else None, which the insert fills from the
    prompt's row.
    """
    texts, replaced = indexed_texts(events, metadata)
    # text cannot hold U+0000; the event's jsonb refuses it with a typed error anyway
    drafts = [(event, mid, body.replace("\x00", " "), model) for event, mid, body, model in texts]
    gone = set(replaced)
    rows = [
        SearchRow(
            event.seq,
            event.id,
            message_id if isinstance(message_id, str) else None,
            str(event.type),
            _stored_timestamp(event.timestamp),
            model if isinstance(model, str) else None,
            message_id in gone,
            body,
            to_tsvector(body),
        )
        for event, message_id, body, model in drafts
    ]
    return rows, replaced


# -- snippets -----------------------------------------------------------------------------------


def snippet(body: str, terms: Sequence[tuple[list[str], bool]]) -> str:
    """About :data:`~copilot.search._SNIPPET_TOKENS` words of ``body`` around its matches,
    each phrase or word found marked ``«...»`` (as FTS5's ``snippet()``)."""
    spans = [(m.start(), m.end(), _fold(m.group())) for m in re.finditer(r"[^\W_]+", body)]
    tokens = [folded for _, _, folded in spans]
    marked = [False] * len(tokens)
    starts: set[int] = set()
    ends: set[int] = set()
    for phrase, prefix in terms:
        if not phrase:
            continue
        size = len(phrase)
        for i in range(len(tokens) - size + 1):
            if all(
                tokens[i + k] == phrase[k]
                or (prefix and k == size - 1 and tokens[i + k].startswith(phrase[k]))
                for k in range(size)
            ):
                starts.add(i)
                ends.add(i + size - 1)
                for k in range(i, i + size):
                    marked[k] = True
    if not tokens:
        return " ".join(body.split())
    # the window of _SNIPPET_TOKENS words holding the most marked words (the earliest of ties)
    width = min(_SNIPPET_TOKENS, len(tokens))
    best, best_count = 0, -1
    count = sum(marked[:width])
    for first in range(len(tokens) - width + 1):
        if first:
            count += marked[first + width - 1] - marked[first - 1]
        if count > best_count:
            best, best_count = first, count
    last = best + width - 1
    pieces = [_ELLIPSIS] if best else [body[: spans[0][0]]]
    open_mark = False
    for i in range(best, last + 1):
        start, end, _ = spans[i]
        if marked[i] and not open_mark:
            pieces.append(MARK_START)
            open_mark = True
        pieces.append(body[start:end])
        closes = open_mark and (i == last or not marked[i + 1] or (i in ends and (i + 1) in starts))
        if closes:
            pieces.append(MARK_END)
            open_mark = False
        if i < last:
            pieces.append(body[end : spans[i + 1][0]])
    pieces.append(_ELLIPSIS if last < len(tokens) - 1 else body[spans[-1][1] :])
    return " ".join("".join(pieces).split())
