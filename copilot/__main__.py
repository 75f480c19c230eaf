"""Command line: ``python -m copilot demo`` and a few session commands.

python -m copilot demo                      # offline tour with the embedded model
python -m copilot list                      # stored sessions
python -m copilot send NAME "prompt" [-m MODEL]
python -m copilot history NAME
python -m copilot delete NAME
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from . import CopilotClient, CopilotError, Event, Session

DEMO_MODEL = "local:smollm2"


def _stream_to_stdout(session: Session) -> Callable[[], None]:
    def show(event: Event) -> None:
        if event.type == "assistant.message_delta":
            print(event.data.deltaContent, end="", flush=True)

    return session.on(show)


def _send(session: Session, prompt: str) -> None:
    print(f"\n[{session.session_id}] > {prompt}\n", flush=True)
    unsubscribe = _stream_to_stdout(session)
    try:
        reply = session.send_and_wait(prompt=prompt)
    finally:
        unsubscribe()
    usage = [
        e for e in session.get_messages(after=(reply.seq or 1) - 1) if e.type == "assistant.usage"
    ]
    tokens = usage[0].data.outputTokens if usage else "?"
    print(f"\n   ({reply.data.model}, {tokens} tokens)", flush=True)


def demo(client: CopilotClient, args: argparse.Namespace) -> None:
    """Two named sessions, a restart, a resume: the seed's story, offline."""
    model = args.model
    for name in ("demo-python", "demo-go"):
        if client.get_session_metadata(name) is not None:
            client.delete_session(name)
    python = client.create_session(session_id="demo-python", model=model)
    go = client.create_session(session_id="demo-go", model=model)
    _send(python, "You are helping with a Python project. Name one Python web framework.")
    _send(go, "You are helping with a Go project. Name one Go web framework.")
    client.stop()
    print("\n-- client stopped; a new client resumes the sessions from disk --")
    client = CopilotClient(default_model=model)
    resumed = client.resume_session("demo-python")
    _send(resumed, "Which language were we talking about?")
    print("\nStored sessions:")
    list_sessions(client, args)
    client.stop()


def list_sessions(client: CopilotClient, args: argparse.Namespace) -> None:
    for info in client.list_sessions():
        print(
            f"  {info['sessionId']:<24} {info['model']:<20} {info['messageCount']:>4} msgs  "
            f"{info['modifiedTime'][:19]}  {info['summary'][:40]}"
        )


def send(client: CopilotClient, args: argparse.Namespace) -> None:
    if client.get_session_metadata(args.name) is None:
        session = client.create_session(session_id=args.name, model=args.model)
    else:
        session = client.resume_session(args.name)
        if args.model and args.model != session.model:
            session.set_model(args.model)
    _send(session, args.prompt)


def history(client: CopilotClient, args: argparse.Namespace) -> None:
    for event in client.resume_session(args.name).get_messages():
        if event.type in ("user.message", "assistant.message"):
            who = "user" if event.type == "user.message" else event.data.get("model", "assistant")
            print(f"[{who}] {event.data.content}")


def delete(client: CopilotClient, args: argparse.Namespace) -> None:
    client.delete_session(args.name)
    print(f"deleted {args.name}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m copilot", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="an offline tour with the embedded model")
    p.add_argument("-m", "--model", default=DEMO_MODEL)
    p.set_defaults(run=demo)
    commands.add_parser("list", help="list stored sessions").set_defaults(run=list_sessions)
    p = commands.add_parser("send", help="send a prompt to a session (created if new)")
    p.add_argument("name")
    p.add_argument("prompt")
    p.add_argument("-m", "--model", default=None)
    p.set_defaults(run=send)
    p = commands.add_parser("history", help="print a session's transcript")
    p.add_argument("name")
    p.set_defaults(run=history)
    p = commands.add_parser("delete", help="delete a session and its data")
    p.add_argument("name")
    p.set_defaults(run=delete)
    args = parser.parse_args(argv)
    client = CopilotClient(default_model=getattr(args, "model", None) or None)
    try:
        args.run(client, args)
    except CopilotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
