"""Infinite sessions: compaction by summary, so a long session keeps how it began.

A turn's context is the system message, the latest summary, and the exchanges after the
ones it covers. When a reply leaves the context past ``background_compaction_threshold``
of the input budget (the model's window minus the reply's reserve), a summary of the oldest
exchanges is written in the background by the session's model (or ``summary_model``) and
stored as ``session.compaction_start`` / ``session.compaction_complete`` (the summary, the
range of the log it covers, tokens before and after). A turn that starts past
``buffer_exhaustion_threshold`` waits for the running compaction (or runs one) instead of
dropping old turns. A summary that fails is recorded (``success: False``, ``fallback:
"truncation"``) and the context falls back to leaving old turns out (``session.truncation``),
as without compaction. The log keeps every event: ``get_events()`` still returns them all.

Each summary folds in the one before it, so the summary stays one message however long the
session grows. A turn that used tools is summarized with its calls and results (each result
cut to :data:`TOOL_RESULT_CHARS` characters in the summary's transcript: what a tool found is
often the fact the rest of the conversation needs), and its tool steps count toward the
context it holds, as the turn's context counts them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgumentError, InvalidArgumentTypeError
from .providers.base import ChatMessage
from .tool_loop import replay_steps, steps_tokens

__all__ = [
    "SUMMARY_HEADING",
    "CompactionPlan",
    "CompactionSettings",
    "compaction_settings",
    "plan_compaction",
    "summary_messages",
    "with_summary",
]

#: how the summary is introduced in the system message of later turns
SUMMARY_HEADING = "Summary of the earlier conversation (older turns were compacted):"

#: the share of the input budget the newest exchanges keep, unsummarized
KEEP_RECENT = 0.40
#: the exchanges an explicit ``session.compact()`` keeps unsummarized (at most)
KEEP_TURNS_NOW = 2
#: the share of the input budget a summary may take (longer summaries are cut)
SUMMARY_SHARE = 0.20
#: characters of one tool result a summary's transcript holds (the context kept whole)
TOOL_RESULT_CHARS = 1_000

SUMMARIZER_INSTRUCTIONS = (
    "You compact a conversation between a user and an assistant so that it can continue "
    "with less context. Write a concise summary that keeps every fact, decision, name, "
    "number, open question and instruction the rest of the conversation may need. Write it "
    "as notes, in the conversation's language, without preamble."
)
SUMMARY_REQUEST = "Summarize the conversation above now, following the instructions."


@dataclass(frozen=True, slots=True)
class CompactionSettings:
    """The Copilot SDK's ``InfiniteSessionConfig``, checked, with ``summary_model`` (ours)."""

    enabled: bool = True
    background_compaction_threshold: float = 0.80
    buffer_exhaustion_threshold: float = 0.95
    summary_model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The settings as stored in the session's metadata (``infiniteSessions``)."""
        return {
            "enabled": self.enabled,
            "background_compaction_threshold": self.background_compaction_threshold,
            "buffer_exhaustion_threshold": self.buffer_exhaustion_threshold,
            "summary_model": self.summary_model,
        }


_KEYS = ("enabled", "background_compaction_threshold", "buffer_exhaustion_threshold")


def compaction_settings(value: Mapping[str, Any] | None) -> CompactionSettings:
    """Check an ``infiniteSessions`` / ``infinite_sessions`` mapping (None: the defaults).

    Raises :class:`InvalidArgumentTypeError` / :class:`InvalidArgumentError` naming the key.
    """
    if value is None:
        return CompactionSettings()
    if not isinstance(value, Mapping):
        raise InvalidArgumentTypeError(
            "infinite_sessions is a dict like {'enabled': True, "
            "'background_compaction_threshold': 0.8, 'buffer_exhaustion_threshold': 0.95}, "
            f"not {type(value).__name__}"
        )
    unknown = sorted(set(value) - {*_KEYS, "summary_model"})
    if unknown:
        raise InvalidArgumentError(
            f"infinite_sessions has no key {unknown[0]!r}; it takes {', '.join(_KEYS)} and "
            "summary_model"
        )
    default = CompactionSettings()
    enabled = value.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidArgumentTypeError(
            f"infinite_sessions['enabled'] is True or False, not {enabled!r}"
        )
    thresholds = []
    for key in _KEYS[1:]:
        number = value.get(key, getattr(default, key))
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise InvalidArgumentTypeError(
                f"infinite_sessions[{key!r}] is a number from 0 to 1, not {number!r}"
            )
        if not (math.isfinite(number) and 0 < number <= 1):
            raise InvalidArgumentError(
                f"infinite_sessions[{key!r}] is a share of the context window, above 0 and at "
                f"most 1, not {number!r}"
            )
        thresholds.append(float(number))
    if thresholds[0] > thresholds[1]:
        raise InvalidArgumentError(
            "infinite_sessions: background_compaction_threshold must not exceed "
            f"buffer_exhaustion_threshold ({thresholds[0]} > {thresholds[1]})"
        )
    model = value.get("summary_model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise InvalidArgumentTypeError(
            f"infinite_sessions['summary_model'] is a model id, not {model!r}"
        )
    return CompactionSettings(enabled, thresholds[0], thresholds[1], model)


@dataclass(frozen=True, slots=True)
class CompactionPlan:
    """What one compaction summarizes: the exchanges' prompt/reply text, oldest first."""

    transcript: str
    message_ids: tuple[str, ...]
    from_seq: int
    through_seq: int
    #: conversation tokens (summary + exchanges in context) before the compaction
    tokens_before: int
    #: tokens of the exchanges that stay after it
    tokens_kept: int


def plan_compaction(
    exchanges: list[Any],
    previous_summary: str | None,
    budget: int,
    count_tokens: Any,
    summary_budget: int,
    keep_turns: int | None = None,
) -> CompactionPlan | None:
    """Pick the oldest exchanges to summarize, keeping the newest ones that fit in
    :data:`KEEP_RECENT` of ``budget``; the transcript fits ``summary_budget`` tokens (older
    first: what does not fit waits for the next compaction). ``keep_turns`` also caps the
    exchanges kept (``session.compact()`` keeps :data:`KEEP_TURNS_NOW`). None: nothing to
    summarize.

    ``exchanges`` are the in-context exchanges after the current summary, oldest first,
    each with ``message_id``, ``prompt``, ``reply`` and ``seq``.
    """
    costs = [
        count_tokens(e.prompt) + count_tokens(e.reply) + 8 + _tool_tokens(e, count_tokens)
        for e in exchanges
    ]
    summary_tokens = count_tokens(previous_summary) if previous_summary else 0
    tokens_before = summary_tokens + sum(costs)
    kept = 0
    split = len(exchanges)
    while split > 0 and kept + costs[split - 1] <= KEEP_RECENT * budget:
        if keep_turns is not None and len(exchanges) - split >= keep_turns:
            break
        split -= 1
        kept += costs[split]
    older = exchanges[:split]
    if not older:
        return None
    lines = []
    used = summary_tokens
    chosen = []
    for exchange in older:
        text = _transcript(exchange)
        cost = count_tokens(text) + 8
        if chosen and used + cost > summary_budget:
            break
        chosen.append(exchange)
        used += cost
        lines.append(text)
    kept = sum(costs[len(chosen) :])
    if previous_summary:
        lines.insert(0, f"(Summary of what came before: {previous_summary})")
    return CompactionPlan(
        transcript="\n\n".join(lines),
        message_ids=tuple(e.message_id for e in chosen),
        from_seq=chosen[0].seq or 0,
        through_seq=chosen[-1].seq or 0,
        tokens_before=tokens_before,
        tokens_kept=kept,
    )


def _tool_tokens(exchange: Any, count_tokens: Any) -> int:
    """The tokens an exchange's tool steps take in a turn's context, counted as it counts them."""
    return steps_tokens(replay_steps(getattr(exchange, "tool_calls", None) or ()), count_tokens)


def _transcript(exchange: Any) -> str:
    """One exchange as the summary's transcript shows it: the prompt, each tool call with its
    arguments and its result (cut to :data:`TOOL_RESULT_CHARS`), the reply."""
    lines = [f"User: {exchange.prompt}"]
    for message in replay_steps(getattr(exchange, "tool_calls", None) or ()):
        if message.role == "assistant":
            lines += [f"Assistant called {c.name}({c.arguments})" for c in message.tool_calls]
        elif message.role == "tool":
            result = message.content
            if len(result) > TOOL_RESULT_CHARS:
                left = len(result) - TOOL_RESULT_CHARS
                result = f"{result[:TOOL_RESULT_CHARS]} … ({left:,} characters left out)"
            lines.append(f"Tool result: {result}")
    lines.append(f"Assistant: {exchange.reply}")
    return "\n".join(lines)


def summary_messages(plan: CompactionPlan) -> tuple[ChatMessage, ...]:
    """The messages of the summary request: instructions, the transcript, the request."""
    return (
        ChatMessage("system", SUMMARIZER_INSTRUCTIONS),
        ChatMessage("user", f"<conversation>\n{plan.transcript}\n</conversation>"),
        ChatMessage("user", SUMMARY_REQUEST),
    )


def with_summary(system_message: str | None, summary: str | None) -> str | None:
    """The system message of a turn after compaction: the session's own, then the summary."""
    if not summary:
        return system_message
    block = f"{SUMMARY_HEADING}\n{summary}"
    return f"{system_message}\n\n{block}" if system_message else block
