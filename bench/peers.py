"""5. Peers on the same work: appending one turn to a conversation of 10, 1,000 and 10,000 turns.

One turn = the user's message and the model's reply, appended the way each library does it:

``ours``
    :class:`copilot.store.EventStore`: the two ``append`` transactions a real turn makes, with
    the events it writes (``user.message`` + ``assistant.turn_start``, then
    ``assistant.message`` + ``assistant.usage`` + ``assistant.turn_end``) and the metadata
    updates (message and turn counts). The baseline of every ratio in this benchmark.
LangChain ``FileChatMessageHistory``
    ``add_messages([HumanMessage, AIMessage])``: the JSON file is read, parsed and rewritten
    for each message.
LangChain ``SQLChatMessageHistory`` (SQLite through SQLAlchemy)
    ``add_messages([HumanMessage, AIMessage])``: one insert per message, one commit. As it
    ships, SQLite's defaults: a rollback journal and ``synchronous=FULL``, so every commit
    waits for the disk (fsync). Ours runs SQLite in WAL mode with ``synchronous=NORMAL``
    (diskcache's settings: no fsync per commit, no corruption on a crash, the last commits
    may be lost on power failure), so the same class is also measured with those settings.
``llm`` (Simon Willison's), offline, as it ships (rollback journal, ``synchronous=FULL``)
    A plugin-free echo model (a ``llm.Model`` subclass) in a ``Conversation``; each turn is
    ``conversation.prompt(...)``, ``response.text()`` and ``response.log_to_db(db)`` into its
    SQLite log (``llm.migrations``). Only the logging is timed. ``llm`` stores a conversation
    as a content-addressed chain, and ``log_to_db`` walks the whole chain each turn.

Each history is built the fastest way that leaves the same rows a real run would: ours by the
same ``append`` calls, LangChain's by one ``add_messages`` of the whole history (SQL) or by
writing the file ``add_messages`` would have written (File), ``llm``'s by logging a first turn
whose conversation was given the history (``Conversation.loaded_messages``), which stores the
same chain of messages; it records one ``turns`` row where real turns would have recorded one
per turn (the per-turn cost walks the messages, not the turns).

Ratios are peer / ours: above 1, the peer is slower. All of them append in rounds, one turn each
per round, so that machine noise hits them alike. Samples per figure: up to 200 turns, fewer
for the slow ones, which stop after 6 s (the count is in the JSON).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from copilot.events import Event, EventType, new_id, utc_now
from copilot.store import EventStore

from ._util import INFO, SKIP, Row, median, prompt_text, ratio, scratch, settle, summary_ms

SESSION = "bench-peer"


def _reply(i: int) -> str:
    return "echo: " + prompt_text(i)


# -- ours ------------------------------------------------------------------------------------


def _count_prompt(prompt: str) -> Callable[[dict[str, Any]], None]:
    def update(meta: dict[str, Any]) -> None:  # as copilot.session does for a prompt
        meta["messageCount"] = meta.get("messageCount", 0) + 1
        meta["turnCount"] = meta.get("turnCount", 0) + 1
        if not meta.get("summary"):
            meta["summary"] = " ".join(prompt.split())[:100]

    return update


def _count_reply(meta: dict[str, Any]) -> None:  # as copilot.session does for a reply
    meta["messageCount"] = meta.get("messageCount", 0) + 1
    meta["lastModel"] = "echo"


class Ours:
    name = "ours, EventStore.append x2 (5 events)"

    def __init__(self, home: Path) -> None:
        self.store = EventStore(home / "sessions")
        now = utc_now()
        self.store.create_session(
            {
                "sessionId": SESSION,
                "startTime": now,
                "modifiedTime": now,
                "model": "echo",
                "summary": "",
                "messageCount": 0,
                "turnCount": 0,
                "systemMessage": None,
                "streaming": True,
            }
        )
        start = {"model": "echo", "resolvedModel": "echo", "systemMessage": None}
        self.store.append(SESSION, [Event(EventType.SESSION_START, start)])
        self.writer = new_id()

    def build(self, turns: int) -> None:
        for i in range(turns):
            self.turn(i)

    def turn(self, i: int) -> None:
        prompt = prompt_text(i)
        user = Event(EventType.USER_MESSAGE, {"content": prompt})
        start = {
            "messageId": user.id,
            "model": "echo",
            "pid": os.getpid(),
            "host": "bench",
            "writer": self.writer,
        }
        self.store.append(
            SESSION,
            [user, Event(EventType.ASSISTANT_TURN_START, start)],
            update=_count_prompt(prompt),
        )
        message = {
            "messageId": user.id,
            "content": _reply(i),
            "model": "echo",
            "responseModel": "echo",
            "finishReason": "stop",
        }
        usage = {
            "messageId": user.id,
            "model": "echo",
            "inputTokens": 1000,
            "outputTokens": 20,
            "duration": 0.08,
            "timeToFirstToken": 0.006,
            "attempts": 1,
        }
        self.store.append(
            SESSION,
            [
                Event(EventType.ASSISTANT_MESSAGE, message),
                Event(EventType.ASSISTANT_USAGE, usage),
                Event(EventType.ASSISTANT_TURN_END, {"messageId": user.id}),
            ],
            update=_count_reply,
        )

    def close(self) -> None:
        self.store.close()


# -- LangChain -------------------------------------------------------------------------------


def _lc_turn(i: int) -> list[Any]:
    from langchain_core.messages import AIMessage, HumanMessage

    return [HumanMessage(content=prompt_text(i)), AIMessage(content=_reply(i))]


class LangChainFile:
    name = "LangChain FileChatMessageHistory"

    def __init__(self, home: Path) -> None:
        from langchain_community.chat_message_histories import FileChatMessageHistory

        self.history = FileChatMessageHistory(str(home / "history.json"))

    def build(self, turns: int) -> None:
        from langchain_core.messages import messages_to_dict

        messages = [m for i in range(turns) for m in _lc_turn(i)]
        # exactly the file add_messages() writes (it rewrites the whole list each time)
        self.history.file_path.write_text(
            json.dumps(messages_to_dict(messages), ensure_ascii=self.history.ensure_ascii),
            encoding=self.history.encoding,
        )

    def turn(self, i: int) -> None:
        self.history.add_messages(_lc_turn(i))

    def close(self) -> None:
        pass


class LangChainSQL:
    name = "LangChain SQLChatMessageHistory, SQLite defaults"

    def __init__(self, home: Path) -> None:
        from langchain_community.chat_message_histories import SQLChatMessageHistory

        self.history = SQLChatMessageHistory(
            session_id=SESSION, connection=f"sqlite:///{home / 'history.sqlite'}"
        )

    def build(self, turns: int) -> None:
        self.history.add_messages([m for i in range(turns) for m in _lc_turn(i)])

    def turn(self, i: int) -> None:
        self.history.add_messages(_lc_turn(i))

    def close(self) -> None:
        self.history.engine.dispose()


class LangChainSQLWal(LangChainSQL):
    name = "LangChain SQLChatMessageHistory, WAL+NORMAL like ours"

    def __init__(self, home: Path) -> None:
        import sqlalchemy
        from langchain_community.chat_message_histories import SQLChatMessageHistory

        engine = sqlalchemy.create_engine(f"sqlite:///{home / 'history.sqlite'}")

        @sqlalchemy.event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        self.history = SQLChatMessageHistory(session_id=SESSION, connection=engine)


# -- llm -------------------------------------------------------------------------------------


class LLMLog:
    name = "llm Response.log_to_db (conversation)"

    def __init__(self, home: Path) -> None:
        os.environ["LLM_LOAD_PLUGINS"] = ""  # no plugins: nothing but this file's model
        import llm
        import sqlite_utils
        from llm.migrations import migrate

        class BenchEcho(llm.Model):
            model_id = "bench-echo"
            can_stream = True

            def execute(self, prompt, stream, response, conversation):  # type: ignore[override]
                yield "echo: " + (prompt.prompt or "")

        self.db = sqlite_utils.Database(str(home / "logs.db"))
        migrate(self.db)
        self.conversation = BenchEcho().conversation()

    def build(self, turns: int) -> None:
        from llm.parts import Message, TextPart

        if turns <= 1:
            for i in range(turns):
                self.turn(i)
            return
        history = []
        for i in range(turns - 1):
            history.append(Message(role="user", parts=[TextPart(text=prompt_text(i))]))
            history.append(Message(role="assistant", parts=[TextPart(text=_reply(i))]))
        self.conversation.loaded_messages = history
        self.turn(turns - 1)  # logs the whole chain once
        chain = self.db.execute("select count(*) from messages").fetchone()[0]
        if chain != 2 * turns:
            raise RuntimeError(f"llm history has {chain} messages, expected {2 * turns}")

    def turn(self, i: int) -> None:
        response = self.conversation.prompt(prompt_text(i))
        response.text()
        response.log_to_db(self.db)

    def timed_turn(self, i: int) -> float:
        response = self.conversation.prompt(prompt_text(i))
        response.text()
        t0 = time.perf_counter()
        response.log_to_db(self.db)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.db.close()


#: (implementation, the module it needs)
PEERS: tuple[tuple[type, str], ...] = (
    (LangChainFile, "langchain_community"),
    (LangChainSQL, "langchain_community"),
    (LangChainSQLWal, "langchain_community"),
    (LLMLog, "llm"),
)


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _measure_length(
    classes: list[type], length: int, count: int, budget_s: float
) -> dict[type, tuple[list[float], float]]:
    """Per implementation: (seconds per appended turn, seconds to build the history).

    Every implementation gets its own fresh directory and history; then they append turns in
    rounds, one turn each per round, so that machine noise hits all of them alike. One that
    has ``count`` samples, or has spent ``budget_s`` seconds (with 5 samples at least), stops.
    """
    with scratch("peers") as root:
        subjects: dict[type, Any] = {}
        built: dict[type, float] = {}
        times: dict[type, list[float]] = {cls: [] for cls in classes}
        spent: dict[type, float] = dict.fromkeys(classes, 0.0)
        try:
            for index, cls in enumerate(classes):
                home = root / str(index)
                home.mkdir()
                subjects[cls] = cls(home)
                t0 = time.perf_counter()
                subjects[cls].build(length)
                built[cls] = time.perf_counter() - t0
            settle()
            active = list(classes)
            step = length
            while active:
                for cls in list(active):
                    subject = subjects[cls]
                    t0 = time.perf_counter()
                    if hasattr(subject, "timed_turn"):
                        elapsed = subject.timed_turn(step)
                    else:
                        subject.turn(step)
                        elapsed = time.perf_counter() - t0
                    spent[cls] += time.perf_counter() - t0
                    times[cls].append(elapsed)
                    n = len(times[cls])
                    if n >= count or (n >= 5 and spent[cls] > budget_s):
                        active.remove(cls)
                step += 1
        finally:
            for subject in subjects.values():
                subject.close()
    return {cls: (times[cls], built[cls]) for cls in classes}


def run(quick: bool) -> list[Row]:
    lengths = (10, 1_000) if quick else (10, 1_000, 10_000)
    count = 30 if quick else 200
    budget_s = 1.5 if quick else 6.0
    rows: list[Row] = []
    ours: dict[int, float] = {}
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    for length in lengths:
        installed = [cls for cls, module in PEERS if _installed(module)]
        results = _measure_length([Ours, *installed], length, count, budget_s)
        times, build_s = results[Ours]
        ours[length] = median(times) * 1000
        rows.append(
            Row(
                id=f"5{next(letters)}",
                name=f"append a turn at {length:,} turns: {Ours.name}",
                value=ours[length],
                baseline=ours[lengths[0]],
                baseline_name=f"ours at {lengths[0]} turns",
                ratio=ratio(ours[length], ours[lengths[0]]),
                target="-",
                status=INFO,
                samples=len(times),
                extra={"append": summary_ms(times), "build_s": round(build_s, 2)},
            )
        )
        for cls, module in PEERS:
            letter = next(letters)
            name = f"append a turn at {length:,} turns: {cls.name}"
            if cls not in results:
                rows.append(
                    Row(
                        id=f"5{letter}",
                        name=name,
                        value=None,
                        baseline=ours[length],
                        baseline_name="ours",
                        ratio=None,
                        target="-",
                        status=SKIP,
                        note=f"{module} is not installed (pip install 'copilot-jupyter[bench]')",
                    )
                )
                continue
            times, build_s = results[cls]
            value = median(times) * 1000
            rows.append(
                Row(
                    id=f"5{letter}",
                    name=name,
                    value=value,
                    baseline=ours[length],
                    baseline_name="ours, same length",
                    ratio=ratio(value, ours[length]),
                    target="-",
                    status=INFO,
                    samples=len(times),
                    extra={"append": summary_ms(times), "build_s": round(build_s, 2)},
                )
            )
    return rows
