"""History editing: what a rewind (``session.truncate``) removes and where a fork cuts.

A rewind never deletes: ``session.snapshot_rewind`` names the events after the point
(``eventIds``) and the turns they belong to (``messageIds``); the fold
(:class:`copilot.history.History`) drops those turns, so the context and the display skip them,
while ``get_events()`` still returns every event. They stay recoverable as long as the session
exists (there is no pruning): a fork at an event before the rewind point holds them again.
A fork copies the visible history: rewound events and the rewind records are left out.
"""

from __future__ import annotations

from .errors import InvalidArgumentError
from .events import Event, EventType

__all__ = ["cut_at", "rest_of_turn", "rewound_turns", "without_rewound"]

#: events at or after a turn's outcome: a point there keeps the turn whole
_AFTER_OUTCOME = frozenset(
    {
        EventType.ASSISTANT_MESSAGE,
        EventType.ASSISTANT_USAGE,
        EventType.SESSION_ERROR,
        EventType.ABORT,
        EventType.ASSISTANT_TURN_END,
    }
)


def rest_of_turn(point: Event, after: list[Event]) -> int:
    """How many of ``after`` (the events following ``point``, oldest first) still belong to
    the turn of ``point`` when the point is at or after that turn's outcome (its reply, error
    or abort): a cut there keeps the turn whole, through its ``assistant.turn_end``. 0 for
    a point before a turn's outcome (the cut goes through the turn, which then leaves)."""
    message_id = point.data.get("messageId")
    if point.type not in _AFTER_OUTCOME or point.type == EventType.ASSISTANT_TURN_END:
        return 0
    for index, event in enumerate(after):
        if event.type == EventType.ASSISTANT_TURN_END and event.data.get("messageId") == message_id:
            return index + 1
    return 0


def rewound_turns(removed: list[Event]) -> list[str]:
    """The prompt ids of the turns ``removed`` events belong to (a turn cut through by the
    rewind point goes too: its prompt stays in the log, but it has no reply any more)."""
    ids: dict[str, None] = {}
    for event in removed:
        if event.type == EventType.USER_MESSAGE:
            ids[event.id] = None
        elif isinstance(event.data.get("messageId"), str):
            ids[event.data["messageId"]] = None
    return list(ids)


def without_rewound(events: list[Event]) -> list[Event]:
    """``events`` without the ones a later ``session.snapshot_rewind`` removed, nor the
    rewind records themselves."""
    gone: set[str] = set()
    for event in events:
        if event.type == EventType.SESSION_SNAPSHOT_REWIND:
            gone.add(event.id)
            gone.update(event.data.get("eventIds") or ())
    if not gone:
        return events
    return [e for e in events if e.id not in gone]


def cut_at(events: list[Event], event_id: str, session_id: str) -> list[Event]:
    """The events up to and including ``event_id`` (through the end of its turn when it is
    the turn's reply or later), without the turns the cut goes through (a prompt whose reply
    comes after the cut would be a turn left open in the fork).

    Raises :class:`InvalidArgumentError` if ``event_id`` is not among ``events``.
    """
    for index, event in enumerate(events):
        if event.id == event_id:
            end = index + 1
            kept = events[: end + rest_of_turn(event, events[end:])]
            break
    else:
        raise InvalidArgumentError(
            f"fork_session: session {session_id!r} has no completed-turn event {event_id!r} "
            "(pick an id from get_events(); events of a turn still running cannot be a fork point)"
        )
    started = {e.data.get("messageId") for e in kept if e.type == EventType.ASSISTANT_TURN_START}
    ended = {e.data.get("messageId") for e in kept if e.type == EventType.ASSISTANT_TURN_END}
    cut = started - ended
    return [e for e in kept if e.id not in cut and e.data.get("messageId") not in cut]
