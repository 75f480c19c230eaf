"""Building the model context of a turn from a session's events, incrementally.

A :class:`ConversationTail` keeps the newest exchanges of a session in memory (folded by
:class:`copilot.history.History`, the one fold every reader uses) with the last sequence
number it has seen. Before each turn the session feeds it only the events stored since (by
this process or another), so the store work per turn does not grow with the session's length.
:meth:`ConversationTail.build` picks the newest exchanges that fit the model's budget, never
dropping the system message or the new prompt.

What counts as context is :attr:`copilot.history.Exchange.in_context`: completed exchanges,
and aborted ones with their partial reply. A prompt whose turn failed stays in the log but is
not shown to the model. A ``user.message`` with ``data.replaces`` removes the exchange it
replaces (a re-run cell).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .attachments import Attachment, attachment_from_reference, text_block
from .compaction import with_summary
from .events import Event
from .history import Exchange, ExchangeStatus, History
from .providers.base import MESSAGE_OVERHEAD, ChatMessage
from .tool_loop import replay_steps, steps_tokens

__all__ = ["BlobLoader", "BuiltContext", "ConversationTail", "user_message"]

#: reads an attachment's bytes back from the store by sha256 (None: not stored)
BlobLoader = Callable[[str], "bytes | None"]


@dataclass(frozen=True, slots=True)
class BuiltContext:
    """The messages of one turn and what was left out to fit."""

    messages: tuple[ChatMessage, ...]
    tokens: int
    budget: int
    omitted_turns: int
    omitted_tokens: int


def user_message(prompt: str, attachments: Sequence[Attachment], images: bool) -> ChatMessage:
    """A prompt with its attachments: text files inline after it (a header naming each),
    images as the message's attachments, or, for a model that cannot see (``images``
    False: the model changed since), a line saying the image was left out."""
    text = [prompt]
    seen: list[Attachment] = []
    for attachment in attachments:
        if not attachment.is_image:
            text.append(text_block(attachment))
        elif images:
            seen.append(attachment)
        else:
            text.append(f"[image {attachment.display_name} left out: this model cannot see images]")
    return ChatMessage("user", "\n\n".join(text), attachments=tuple(seen))


def _loaded(references: Sequence[Mapping[str, Any]], load: BlobLoader | None) -> list[Attachment]:
    """The stored attachments ``references`` name, read back; one no longer stored is
    named in the text instead (a store repaired by hand)."""
    found = []
    for reference in references:
        data = load(str(reference.get("sha256"))) if load is not None else None
        if data is None:
            name = reference.get("displayName", "attachment")
            data = f"(the attachment {name} is no longer stored)".encode()
            reference = {**reference, "mimeType": "text/plain"}
        found.append(attachment_from_reference(reference, data))
    return found


_OK, _ABORTED = ExchangeStatus.OK, ExchangeStatus.ABORTED


def _in_context(exchange: Exchange) -> bool:
    """``exchange.in_context``, inlined for the per-turn walks over a full window."""
    status = exchange.status
    return status is _OK or (status is _ABORTED and bool(exchange.reply))


class ConversationTail:
    """The newest exchanges of a session, kept up to date from its event log."""

    def __init__(self, system_message: str | None = None, earlier_turns: int = 0) -> None:
        self._history = History(notes=False)
        self._history.system_message = system_message
        #: completed turns that exist in the log before the loaded tail (not in memory)
        self.earlier_turns = earlier_turns
        #: message id -> the model messages of an ended exchange's tool steps (built once)
        self._steps: dict[str, tuple[ChatMessage, ...]] = {}
        #: the latest compaction's summary, and the log position it covers (copilot.compaction)
        self.summary: str | None = None
        self.compacted_through = 0
        #: message id -> its attachments read back from the store (read once)
        self._attached: dict[str, list[Attachment]] = {}

    @property
    def last_seq(self) -> int:
        """The newest sequence number folded in."""
        return self._history.last_seq

    @property
    def system_message(self) -> str | None:
        """The session's system message."""
        return self._history.system_message

    def __len__(self) -> int:
        return sum(1 for e in self._history if e.in_context)

    def fold(self, events: Iterable[Event]) -> None:
        """Apply events in log order; events at or below ``last_seq`` are ignored."""
        self._history.fold(events)

    def drop(self, message_id: str) -> None:
        """Forget the exchange of prompt ``message_id`` (a prompt about to replace it)."""
        self._history.drop(message_id)
        self._steps.pop(message_id, None)
        self._attached.pop(message_id, None)

    def _tool_steps(self, exchange: Exchange) -> tuple[ChatMessage, ...]:
        """The calls and results of ``exchange`` as model messages (cached once it ended:
        a long session would otherwise rebuild every kept exchange's steps each turn)."""
        if not exchange.tool_calls:
            return ()
        steps = self._steps.get(exchange.message_id)
        if steps is None:
            steps = tuple(replay_steps(exchange.tool_calls))
            if exchange.ended:
                self._steps[exchange.message_id] = steps
        return steps

    def _user(self, exchange: Exchange, load: BlobLoader | None, images: bool) -> ChatMessage:
        """An exchange's prompt as a model message, with its stored attachments."""
        if not exchange.attachments:
            return ChatMessage("user", exchange.prompt)
        attached = self._attached.get(exchange.message_id)
        if attached is None:
            attached = self._attached[exchange.message_id] = _loaded(exchange.attachments, load)
        return user_message(exchange.prompt, attached, images)

    def build(
        self,
        prompt: str,
        budget: int,
        count_tokens: Callable[[str], int],
        counter_key: str,
        attachments: Sequence[Attachment] = (),
        load: BlobLoader | None = None,
        images: bool = True,
    ) -> BuiltContext:
        """The system message, the newest exchanges that fit ``budget`` tokens, and ``prompt``.

        Token counts are cached per exchange under ``counter_key`` (a tokenizer's name), so a
        turn counts only the exchanges it has not counted before; so are the exchange's two
        chat messages (``Exchange.chat``), so a turn at a full window builds one new message
        pair, not one per exchange sent. ``attachments`` are the new
        prompt's; earlier prompts' stored references are read back with ``load`` (images go
        again as image parts while ``images``; text counts towards the budget, images not).
        """
        last = user_message(prompt, attachments, images)
        used = count_tokens(last.content) + MESSAGE_OVERHEAD
        head: list[ChatMessage] = []
        system = with_summary(self.system_message, self.summary)
        if system:
            head.append(ChatMessage("system", system))
            used += count_tokens(system) + MESSAGE_OVERHEAD
        kept: list[Exchange] = []
        omitted_turns = omitted_tokens = 0
        through = self.compacted_through
        for exchange in self._history.newest_first():
            if not _in_context(exchange):
                continue
            if exchange.seq is not None and exchange.seq <= through:
                break  # this one and every older one are in the summary
            cost = exchange.tokens.get(counter_key)
            if cost is None:
                cost = count_tokens(self._user(exchange, load, images).content)
                cost += count_tokens(exchange.reply)
                cost += 2 * MESSAGE_OVERHEAD
                cost += steps_tokens(self._tool_steps(exchange), count_tokens)
                exchange.tokens[counter_key] = cost
            if omitted_turns or used + cost > budget:
                omitted_turns += 1
                omitted_tokens += cost
                continue
            used += cost
            kept.append(exchange)
        messages = head
        for exchange in reversed(kept):
            steps = self._tool_steps(exchange)
            if steps or exchange.attachments:
                # it acted (its calls and results go between prompt and reply) or it carries
                # attachments (read back from the store once, see _user)
                messages.append(self._user(exchange, load, images))
                messages.extend(steps)
                messages.append(ChatMessage("assistant", exchange.reply))
                continue
            chat = exchange.chat  # built once per exchange, not once per turn
            if (
                chat is None
                or chat[0].content is not exchange.prompt
                or (chat[1].content is not exchange.reply)
            ):
                chat = exchange.chat = (
                    ChatMessage("user", exchange.prompt),
                    ChatMessage("assistant", exchange.reply),
                )
            messages.extend(chat)
        messages.append(last)
        return BuiltContext(
            messages=tuple(messages),
            tokens=used,
            budget=budget,
            # turns before the loaded tail are in the summary once there is one
            omitted_turns=omitted_turns + (0 if self.summary else self.earlier_turns),
            omitted_tokens=omitted_tokens,
        )

    def exchanges(self) -> list[Exchange]:
        """The exchanges a context may show: in context, after the latest summary."""
        through = self.compacted_through
        return [e for e in self._history if _in_context(e) and (e.seq or through + 1) > through]

    def forget_before(self, budget_tokens: int, counter_key: str) -> None:
        """Drop exchanges older than what ``budget_tokens`` could ever include (bounds memory)."""
        total = 0
        newest_first = self._history.newest_first()
        for exchange in newest_first:
            if not _in_context(exchange):
                continue
            total += exchange.tokens.get(counter_key, 0)
            if total > budget_tokens:
                # everything before the oldest exchange that could still fit goes, whatever
                # its status (failed prompts too: they never reach a model); the iterator
                # goes on with exactly those
                older = list(newest_first)
                self._history.forget([old.message_id for old in older])
                for old in older:
                    self._steps.pop(old.message_id, None)
                    self._attached.pop(old.message_id, None)
                self.earlier_turns += sum(1 for old in older if _in_context(old))
                return
