"""10. The cost of one tool round, beyond the model's own time.

Pairs of sessions on the ``echo`` model, in one client, take turns in alternation (a new
pair every 20 turns, as in row 2, so the figure is the round's cost and not the growing
context's):

* the tool session has one instant tool (``ping``, answered by ``PermissionHandler.approve_all``)
  and is sent ``call ping``: echo calls the tool, the round runs (permission, handler on a
  worker thread, five events recorded), echo answers with the result: two model steps;
* the plain session is sent a prompt of the same length: one model step.

Each turn's ``send_and_wait`` time minus the model's own time (the ``duration`` its
``assistant.usage`` reports: the model calls, summed over the steps) is the library's time for
the turn. The row is the median of (tool turn's library time - plain turn's library time),
paired turn by turn: what a tool round adds, the second model call's own time excluded.
Target: under 2 ms.
"""

from __future__ import annotations

import time

from copilot import CopilotClient
from copilot.events import EventType
from copilot.tools import PermissionHandler, define_tool

from ._util import Row, median, scratch, settle, summary_ms, verdict

TARGET_MS = 2.0


@define_tool(description="Answer pong at once")
def ping() -> str:
    return "pong"


def _model_seconds(session, message_id: str) -> float:
    """The model time of one turn, from its ``assistant.usage`` (milliseconds -> seconds)."""
    for event in reversed(session.get_messages()):
        if event.type == EventType.ASSISTANT_USAGE and event.data.get("messageId") == message_id:
            return float(event.data["duration"]) / 1000
    raise RuntimeError(f"no usage recorded for {message_id}")


#: turns per session pair
SESSION_TURNS = 20


def measure(turns: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per turn (wall and library-only) for the tool and the plain session."""
    times: dict[str, list[float]] = {"tool": [], "plain": [], "tool_lib": [], "plain_lib": []}
    with scratch("tools") as home:
        client = CopilotClient(base_directory=home, max_retries=0)
        try:
            client.start()
            for i in range(warmup + turns):
                if i % SESSION_TURNS == 0:
                    tool_session = client.create_session(
                        model="echo",
                        tools=[ping],
                        on_permission_request=PermissionHandler.approve_all,
                    )
                    plain = client.create_session(model="echo")
                pairs = [("tool", tool_session, "call ping"), ("plain", plain, "call pong")]
                if i % 2:
                    pairs.reverse()  # alternate which goes first, so order effects cancel
                for kind, session, prompt in pairs:
                    t0 = time.perf_counter()
                    reply = session.send_and_wait(prompt, timeout=60)
                    wall = time.perf_counter() - t0
                    expected = "pong" if kind == "tool" else "echo: call pong"
                    assert reply.data.content == expected, reply
                    if i >= warmup:
                        times[kind].append(wall)
                        model = _model_seconds(session, reply.data.messageId)
                        times[f"{kind}_lib"].append(wall - model)
            settle()
        finally:
            client.stop()
    return times


def run(quick: bool) -> list[Row]:
    turns, warmup = (40, 10) if quick else (300, 30)
    times = measure(turns, warmup)
    paired = [a - b for a, b in zip(times["tool_lib"], times["plain_lib"], strict=True)]
    value = median(paired) * 1000
    plain_p50 = median(times["plain"]) * 1000
    return [
        Row(
            id="10a",
            name="one tool round (instant tool, approve_all) beyond the model's time, echo",
            value=value,
            baseline=plain_p50,
            baseline_name="plain echo turn p50 (one model step)",
            ratio=None,
            target=f"< {TARGET_MS:g} ms",
            status=verdict(value < TARGET_MS),
            samples=len(paired),
            note=f"tool turn p50 {median(times['tool']) * 1000:.2f} ms, plain turn p50 "
            f"{plain_p50:.2f} ms (wall, model time included)",
            extra={
                "tool_turn": summary_ms(times["tool"]),
                "plain_turn": summary_ms(times["plain"]),
                "tool_turn_library": summary_ms(times["tool_lib"]),
                "plain_turn_library": summary_ms(times["plain_lib"]),
            },
        )
    ]
