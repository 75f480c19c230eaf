"""The one fold of events into exchanges (copilot.history) and the context builder on top of it."""

from __future__ import annotations

import pytest

from copilot.context import MESSAGE_OVERHEAD, ConversationTail
from copilot.events import Event, EventType
from copilot.history import Exchange, ExchangeStatus, History, Note, exchanges_of


def user(mid: str, text: str, seq: int | None = None, **data) -> Event:
    return Event(EventType.USER_MESSAGE, {"content": text, **data}, id=mid, seq=seq)


def ev(kind: EventType, mid: str | None, seq: int | None = None, **data) -> Event:
    if mid is not None:
        data["messageId"] = mid
    return Event(kind, data, seq=seq)


def turn(mid: str, prompt: str, reply: str, model: str = "echo") -> list[Event]:
    """The stored events of one complete turn."""
    return [
        user(mid, prompt),
        ev(EventType.ASSISTANT_TURN_START, mid, model=model),
        ev(EventType.ASSISTANT_MESSAGE, mid, content=reply, model=model),
        ev(EventType.ASSISTANT_USAGE, mid, inputTokens=3, outputTokens=5, duration=1.5),
        ev(EventType.ASSISTANT_TURN_END, mid),
    ]


def numbered(events: list[Event]) -> list[Event]:
    for seq, event in enumerate(events, start=1):
        event.seq = seq
    return events


class TestFold:
    def test_complete_turn(self) -> None:
        (x,) = exchanges_of(turn("m1", "Hi", "Hello", model="openai:gpt-4.1"))
        assert (x.message_id, x.prompt, x.reply, x.status) == ("m1", "Hi", "Hello", "ok")
        assert x.model == "openai:gpt-4.1"
        assert (x.input_tokens, x.output_tokens) == (3, 5)
        assert x.started and x.ended and x.in_context

    def test_pending_until_an_outcome(self) -> None:
        h = History()
        h.fold([user("m1", "Hi"), ev(EventType.ASSISTANT_TURN_START, "m1", model="echo")])
        (x,) = h.exchanges()
        assert x.status is ExchangeStatus.PENDING and x.started and not x.ended
        assert not x.in_context
        assert h.open_exchanges() == [x]

    def test_abort_with_partial_reply_is_context(self) -> None:
        h = History.from_events(
            [
                user("m1", "Hi"),
                ev(EventType.ASSISTANT_TURN_START, "m1"),
                ev(EventType.ABORT, "m1", reason="aborted", partialContent="Hel"),
                ev(EventType.ASSISTANT_TURN_END, "m1"),
            ]
        )
        (x,) = h.exchanges()
        assert (x.status, x.reply, x.error) == ("aborted", "Hel", "aborted")
        assert x.in_context and x.ended

    def test_abort_without_text_is_not_context(self) -> None:
        (x,) = exchanges_of([user("m1", "Hi"), ev(EventType.ABORT, "m1", partialContent="")])
        assert x.status is ExchangeStatus.ABORTED and not x.in_context

    def test_abort_before_start_ends_the_exchange(self) -> None:
        # a turn aborted while queued has no assistant.turn_end
        (x,) = exchanges_of([user("m1", "Hi"), ev(EventType.ABORT, "m1", reason="closed")])
        assert x.ended and not x.started

    def test_abort_after_start_waits_for_turn_end(self) -> None:
        h = History.from_events(
            [user("m1", "Hi"), ev(EventType.ASSISTANT_TURN_START, "m1"), ev(EventType.ABORT, "m1")]
        )
        assert not h.get("m1").ended

    def test_error(self) -> None:
        (x,) = exchanges_of(
            [
                user("m1", "Hi"),
                ev(EventType.SESSION_ERROR, "m1", message="boom", errorType="RateLimitError"),
                ev(EventType.ASSISTANT_TURN_END, "m1"),
            ]
        )
        assert (x.status, x.error, x.error_type) == ("error", "boom", "RateLimitError")
        assert not x.in_context and x.ended

    def test_abort_after_a_reply_keeps_the_reply(self) -> None:
        events = turn("m1", "Hi", "Hello")
        events.append(ev(EventType.ABORT, "m1", partialContent=""))
        (x,) = exchanges_of(events)
        assert (x.status, x.reply) == ("ok", "Hello")

    @pytest.mark.parametrize("reruns", [1, 2, 3, 5])
    def test_each_rerun_replaces_the_previous_one(self, reruns: int) -> None:
        events = turn("m0", "v0", "r0")
        for n in range(1, reruns + 1):
            events += turn(f"m{n}", f"v{n}", f"r{n}")
            events[-5].data["replaces"] = f"m{n - 1}"
        xs = exchanges_of(events)
        assert [(x.prompt, x.replaces) for x in xs] == [(f"v{reruns}", f"m{reruns - 1}")]

    def test_replacing_keeps_other_exchanges_in_order(self) -> None:
        events = turn("a", "A", "1") + turn("b", "B", "2") + turn("a2", "A2", "3")
        events[10].data["replaces"] = "a"
        assert [x.prompt for x in exchanges_of(events)] == ["B", "A2"]

    def test_late_events_of_a_replaced_exchange_are_ignored(self) -> None:
        h = History.from_events(
            [user("a", "A"), user("b", "B", replaces="a"), ev(EventType.ASSISTANT_MESSAGE, "a")]
        )
        assert [x.message_id for x in h.exchanges()] == ["b"]
        assert [type(e) for e in h.entries()] == [Exchange]

    def test_by_cell_maps_each_cell_to_its_latest_exchange(self) -> None:
        h = History.from_events(
            [
                user("a", "A", metadata={"cellId": "c1"}),
                user("b", "B", metadata={"cellId": "c2"}),
                user("c", "C", metadata={"cellId": "c1"}, replaces="a"),
                user("d", "D"),
            ]
        )
        assert h.by_cell() == {"c1": "c", "c2": "b"}

    def test_deltas_grow_live_text_and_a_retry_restarts_it(self) -> None:
        h = History()
        h.apply(user("m1", "Hi"))
        for text, attempt in [("a", 1), ("b", 1), ("X", 2), ("Y", 2)]:
            h.apply(
                Event(
                    EventType.ASSISTANT_MESSAGE_DELTA,
                    {"messageId": "m1", "deltaContent": text, "attempt": attempt},
                )
            )
        assert h.get("m1").live == "XY"
        h.apply(ev(EventType.ASSISTANT_MESSAGE, "m1", content="XYZ"))
        assert h.get("m1").live == "" and h.get("m1").reply == "XYZ"

    def test_stored_events_apply_once_in_seq_order(self) -> None:
        events = numbered(turn("m1", "Hi", "Hello"))
        h = History()
        assert h.fold(events[:3]) == [h.get("m1")]
        assert h.fold(events) == [h.get("m1")]  # overlapping read: the first 3 are skipped
        assert h.last_seq == 5
        assert h.fold(events) == []

    def test_notes_in_log_order(self) -> None:
        h = History.from_events(
            [
                Event(EventType.SESSION_START, {"systemMessage": "be brief"}),
                *turn("m1", "Hi", "Hello"),
                Event(EventType.SESSION_MODEL_CHANGE, {"previousModel": "a", "newModel": "b"}),
                Event(EventType.SESSION_WARNING, {"warningType": "fallback", "message": "x"}),
                Event(EventType.SESSION_RESUME, {"model": "b"}),
            ]
        )
        assert h.system_message == "be brief"
        kinds = [e.type if isinstance(e, Note) else "exchange" for e in h.entries()]
        assert kinds == ["exchange", "session.model_change", "session.warning"]

    def test_notes_can_be_left_out(self) -> None:
        events = [Event(EventType.SESSION_MODEL_CHANGE, {"newModel": "b"}), *turn("m", "p", "r")]
        assert [type(e) for e in History.from_events(events, notes=False).entries()] == [Exchange]

    def test_tool_and_permission_events_attach_to_their_exchange(self) -> None:
        h = History.from_events(
            [
                user("m1", "Hi"),
                Event("tool.execution_start", {"messageId": "m1", "toolName": "t"}),
                Event("permission.requested", {"messageId": "m1"}),
            ]
        )
        assert [c["type"] for c in h.get("m1").tool_calls] == [
            "tool.execution_start",
            "permission.requested",
        ]

    def test_to_dict_is_json_ready(self) -> None:
        (x,) = exchanges_of(turn("m1", "Hi", "Hello"))
        assert x.to_dict() == {
            "message_id": "m1",
            "prompt": "Hi",
            "timestamp": x.timestamp,
            "reply": "Hello",
            "status": "ok",
            "model": "echo",
            "error": None,
            "input_tokens": 3,
            "output_tokens": 5,
            "replaces": None,
            "cell_id": None,
            "tool_calls": [],
            "attachments": [],
        }


def words(text: str) -> int:
    """A fake token counter: one token per word."""
    return len(text.split())


def tail_of(*exchanges: tuple[str, str]) -> ConversationTail:
    tail = ConversationTail()
    events: list[Event] = []
    for n, (prompt, reply) in enumerate(exchanges):
        events += turn(f"m{n}", prompt, reply)
    tail.fold(numbered(events))
    return tail


class TestContextBudget:
    # every exchange below costs 2 words + 2 * overhead
    COST = 2 + 2 * MESSAGE_OVERHEAD

    def test_exact_boundary_fits(self) -> None:
        tail = tail_of(("a", "b"), ("c", "d"))
        prompt_cost = 1 + MESSAGE_OVERHEAD
        built = tail.build("q", prompt_cost + 2 * self.COST, words, "w")
        assert [m.content for m in built.messages] == ["a", "b", "c", "d", "q"]
        assert built.tokens == prompt_cost + 2 * self.COST and built.omitted_turns == 0

    def test_chat_messages_are_built_once_per_exchange(self) -> None:
        tail = tail_of(("a", "b"), ("c", "d"))
        first = tail.build("q", 1000, words, "w")
        second = tail.build("r", 1000, words, "w")
        assert [m.content for m in second.messages] == ["a", "b", "c", "d", "r"]
        assert all(x is y for x, y in zip(first.messages[:4], second.messages[:4], strict=True))
        # an exchange whose reply changes (an abort's partial text, then none kept) is rebuilt
        exchange = next(iter(tail._history))
        exchange.reply = "b, longer"
        third = tail.build("s", 1000, words, "w")
        assert [m.content for m in third.messages] == ["a", "b, longer", "c", "d", "s"]

    def test_one_token_short_drops_the_oldest(self) -> None:
        tail = tail_of(("a", "b"), ("c", "d"))
        budget = 1 + MESSAGE_OVERHEAD + 2 * self.COST - 1
        built = tail.build("q", budget, words, "w")
        assert [m.content for m in built.messages] == ["c", "d", "q"]
        assert (built.omitted_turns, built.omitted_tokens) == (1, self.COST)

    def test_the_prompts_own_overhead_counts(self) -> None:
        tail = tail_of(("a", "b"))
        built = tail.build("q", 1 + self.COST, words, "w")  # no room for the prompt's overhead
        assert [m.content for m in built.messages] == ["q"]

    def test_kept_exchanges_are_the_newest_unbroken_run(self) -> None:
        # the middle exchange is too big; the small oldest one must not come back after the gap
        tail = tail_of(("a", "b"), ("big " * 50, "x"), ("c", "d"))
        built = tail.build("q", 1 + MESSAGE_OVERHEAD + 2 * self.COST + 5, words, "w")
        assert [m.content for m in built.messages] == ["c", "d", "q"]
        assert built.omitted_turns == 2

    def test_system_message_is_always_sent_and_counted(self) -> None:
        tail = ConversationTail(system_message="be very brief")
        tail.fold(numbered(turn("m0", "a", "b")))
        budget = 1 + MESSAGE_OVERHEAD + 3 + MESSAGE_OVERHEAD + self.COST
        built = tail.build("q", budget, words, "w")
        assert [m.role for m in built.messages] == ["system", "user", "assistant", "user"]
        built = tail.build("q", budget - 1, words, "w")
        assert [m.role for m in built.messages] == ["system", "user"]

    def test_failed_and_pending_prompts_are_not_sent(self) -> None:
        tail = ConversationTail()
        tail.fold(
            numbered(
                [
                    *turn("m0", "a", "b"),
                    user("m1", "failed"),
                    ev(EventType.SESSION_ERROR, "m1", message="x"),
                    user("m2", "running"),
                ]
            )
        )
        built = tail.build("q", 1000, words, "w")
        assert [m.content for m in built.messages] == ["a", "b", "q"]
        assert len(tail) == 1

    def test_forget_before_bounds_memory_and_counts_earlier_turns(self) -> None:
        tail = tail_of(*[(f"p{n}", f"r{n}") for n in range(10)])
        tail.build("q", 1000, words, "w")  # caches each exchange's cost
        # the newest 3 fill the budget exactly; the 4th newest (the one that passes it) is kept
        # too, everything older goes
        tail.forget_before(3 * self.COST, "w")
        assert len(tail) == 4 and tail.earlier_turns == 6
        built = tail.build("q", 1000, words, "w")
        assert [m.content for m in built.messages][:2] == ["p6", "r6"]
        assert built.omitted_turns == 6


def test_a_long_stream_of_deltas_costs_linear_time() -> None:
    """Appending deltas must not copy the whole reply each time (a 5 MB reply took 70 s)."""
    import time

    def stream(n: int) -> float:
        h = History()
        h.apply(user("m", "x"))
        delta = {"messageId": "m", "deltaContent": "x" * 50, "attempt": 1}
        started = time.perf_counter()
        for _ in range(n):
            h.apply(Event(EventType.ASSISTANT_MESSAGE_DELTA, delta))
        assert len(h.get("m").live) == 50 * n
        return time.perf_counter() - started

    small, large = stream(2_000), stream(40_000)
    # 20x the deltas: linear costs ~20x; a copy per delta (quadratic) costs ~400x. The bound
    # is generous for a loaded machine and still far below quadratic.
    assert large < 80 * small + 0.05
