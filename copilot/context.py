"""Building the model context of a turn from a session's events, incrementally.

A :class:`ConversationTail` folds events into exchanges (a prompt and its reply) and keeps the
newest of them in memory with the last sequence number it has seen. Before each turn the
session feeds it only the events stored since (by this process or another), so the store work
per turn does not grow with the session's length. :meth:`ConversationTail.build` picks the
newest exchanges that fit the model's budget, never dropping the system message or the new
prompt.

What counts as context: completed exchanges, and aborted ones with their partial reply.
A prompt whose turn failed (``session.error``) stays in the log but is not shown to the model:
it had no answer, and most chat APIs require user and assistant messages to alternate.
A ``user.message`` with ``data.replaces`` removes the exchange it replaces (a re-run cell).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .events import Event, EventType
from .providers.base import ChatMessage

__all__ = ["BuiltContext", "ConversationTail", "Exchange"]

#: tokens a chat format spends per message beyond its text (role markers, separators)
MESSAGE_OVERHEAD = 4


@dataclass(slots=True)
class Exchange:
    """A prompt and its reply (None until the reply arrives)."""

    message_id: str
    prompt: str
    reply: str | None = None
    tokens: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BuiltContext:
    """The messages of one turn and what was left out to fit."""

    messages: tuple[ChatMessage, ...]
    tokens: int
    budget: int
    omitted_turns: int
    omitted_tokens: int


class ConversationTail:
    """The newest exchanges of a session, kept up to date from its event log."""

    def __init__(self, system_message: str | None = None, earlier_turns: int = 0) -> None:
        self.system_message = system_message
        self.last_seq = 0
        #: completed turns that exist in the log before the loaded tail (not in memory)
        self.earlier_turns = earlier_turns
        self._exchanges: OrderedDict[str, Exchange] = OrderedDict()

    def __len__(self) -> int:
        return sum(1 for e in self._exchanges.values() if e.reply is not None)

    def fold(self, events: Iterable[Event]) -> None:
        """Apply events in log order; events at or below ``last_seq`` are ignored."""
        for event in events:
            if event.seq is not None:
                if event.seq <= self.last_seq:
                    continue
                self.last_seq = event.seq
            self._apply(event)

    def _apply(self, event: Event) -> None:
        data = event.data
        kind = event.type
        if kind == EventType.USER_MESSAGE:
            replaced = data.get("replaces")
            if replaced:
                self._exchanges.pop(replaced, None)
            self._exchanges[event.id] = Exchange(event.id, data.get("content", ""))
        elif kind == EventType.ASSISTANT_MESSAGE:
            exchange = self._exchanges.get(data.get("messageId", ""))
            if exchange is not None:
                exchange.reply = data.get("content", "")
        elif kind == EventType.ABORT:
            exchange = self._exchanges.get(data.get("messageId", ""))
            if exchange is not None and exchange.reply is None:
                if data.get("partialContent"):
                    exchange.reply = data["partialContent"]
                else:
                    del self._exchanges[exchange.message_id]
        elif kind == EventType.SESSION_ERROR:
            exchange = self._exchanges.get(data.get("messageId", ""))
            if exchange is not None and exchange.reply is None:
                del self._exchanges[exchange.message_id]
        elif kind == EventType.SESSION_START:
            self.system_message = data.get("systemMessage") or None

    def drop(self, message_id: str) -> None:
        """Forget the exchange of prompt ``message_id`` (a prompt about to replace it)."""
        self._exchanges.pop(message_id, None)

    def build(
        self,
        prompt: str,
        budget: int,
        count_tokens: Callable[[str], int],
        counter_key: str,
    ) -> BuiltContext:
        """The system message, the newest exchanges that fit ``budget`` tokens, and ``prompt``.

        Token counts are cached per exchange under ``counter_key`` (a tokenizer's name), so a
        turn counts only the exchanges it has not counted before.
        """
        used = count_tokens(prompt) + MESSAGE_OVERHEAD
        head: list[ChatMessage] = []
        if self.system_message:
            head.append(ChatMessage("system", self.system_message))
            used += count_tokens(self.system_message) + MESSAGE_OVERHEAD
        kept: list[Exchange] = []
        omitted_turns = omitted_tokens = 0
        complete = [e for e in self._exchanges.values() if e.reply is not None]
        for exchange in reversed(complete):
            cost = exchange.tokens.get(counter_key)
            if cost is None:
                cost = count_tokens(exchange.prompt) + count_tokens(exchange.reply or "")
                cost += 2 * MESSAGE_OVERHEAD
                exchange.tokens[counter_key] = cost
            if omitted_turns or used + cost > budget:
                omitted_turns += 1
                omitted_tokens += cost
                continue
            used += cost
            kept.append(exchange)
        messages = head
        for exchange in reversed(kept):
            messages.append(ChatMessage("user", exchange.prompt))
            messages.append(ChatMessage("assistant", exchange.reply or ""))
        messages.append(ChatMessage("user", prompt))
        return BuiltContext(
            messages=tuple(messages),
            tokens=used,
            budget=budget,
            omitted_turns=omitted_turns + self.earlier_turns,
            omitted_tokens=omitted_tokens,
        )

    def forget_before(self, budget_tokens: int, counter_key: str) -> None:
        """Drop exchanges older than what ``budget_tokens`` could ever include (bounds memory)."""
        total = 0
        complete = [e for e in self._exchanges.values() if e.reply is not None]
        for index in range(len(complete) - 1, -1, -1):
            total += complete[index].tokens.get(counter_key, 0)
            if total > budget_tokens:
                for old in complete[:index]:
                    del self._exchanges[old.message_id]
                self.earlier_turns += index
                return
