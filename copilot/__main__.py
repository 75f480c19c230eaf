"""Command line: ``python -m copilot demo`` and a few session commands.

    python -m copilot demo                        an offline tour (a throw-away store)
    python -m copilot list                        the stored sessions
    python -m copilot send NAME "prompt" [-m MODEL] [-a FILE]...
    python -m copilot history NAME [-n N]
    python -m copilot delete NAME
    python -m copilot rename NAME NEW_NAME
    python -m copilot search QUERY... [-s NAME] [-n N]

Reading commands (``list``, ``history``, ``search``) never write to the store. ``send`` checks the name,
the prompt and the model before it creates anything. Errors print one line on stderr with a
hint in this command line's terms (exit status 1); usage errors print the subcommand's usage
(exit status 2).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

from . import (
    CopilotClient,
    CopilotError,
    Event,
    EventType,
    InvalidArgumentError,
    Session,
    SessionExistsError,
    SessionNotFoundError,
)
from ._argtypes import exchange_count
from .attachments import resolve_attachments
from .errors import AttachmentError, AttachmentTooLargeError, VisionNotSupportedError
from .history import ExchangeStatus, exchanges_of
from .routing import UnroutableModelError
from .search import MAX_LIMIT, format_hits
from .validation import validate_prompt, validate_session_id

__all__ = ["main"]

DEMO_MODEL = "local:smollm2"
PROG = "python -m copilot"


def unrecognized_hint(
    parser: argparse.ArgumentParser, parsed: argparse.Namespace, extras: Sequence[str]
) -> str:
    """What to do about words a (sub)command did not expect.

    An unknown option: its help lists the options. Loose words: most likely a name or prompt
    with spaces left unquoted, so the hint shows the quoted form.
    """
    if any(word.startswith("-") for word in extras):
        return f"`{parser.prog} --help` lists its options"
    positionals = [a for a in parser._actions if not a.option_strings and a.dest != "help"]
    last = getattr(parsed, positionals[-1].dest, None) if positionals else None
    words = " ".join([last, *extras] if isinstance(last, str) else extras)
    return f'a name or prompt with spaces must be quoted: "{words}"'


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors show the failing (sub)command's own usage, with a hint."""

    # typeshed types parse_known_args as overloads; this override keeps the Namespace one
    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self._subparsers is None:
            # a subcommand reports its own extra words (the top level would show its usage)
            self.error(
                f"unrecognized arguments: {' '.join(extras)}; {unrecognized_hint(self, parsed, extras)}"
            )
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _hits(text: str) -> int:
    """``search -n``: how many hits to show, 1 to :data:`copilot.search.MAX_LIMIT`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(
            f"N is the number of hits to show, 1 to {MAX_LIMIT} (got {value}); "
            "leave out -n for the best 20"
        )
    return value


# -- hints in this surface's terms ---------------------------------------------------------------


def explain(error: CopilotError) -> str:
    """The one-line message for ``error``, with the hint a command-line user can follow."""
    if isinstance(error, SessionNotFoundError):
        return (
            f"no session {error.session_id!r}: `{PROG} list` shows the stored sessions; "
            f'`{PROG} send {error.session_id} "prompt"` creates it'
        )
    if isinstance(error, SessionExistsError):
        return (
            f"a session {error.session_id!r} already exists: choose another name "
            f"(`{PROG} list` shows the stored sessions)"
        )
    if isinstance(error, AttachmentTooLargeError):
        return f"--attach: {error.describe()}"
    if isinstance(error, VisionNotSupportedError):
        return f"--attach: {error.describe('send it again with -m MODEL')}"
    if isinstance(error, AttachmentError):
        return f"--attach: {error}"
    if isinstance(error, UnroutableModelError):
        return (
            f"{error.detail}. Or set a fallback model for every command: "
            f"COPILOT_JUPYTER_FALLBACK_MODEL=echo {PROG} ..., or fallback_model in config.toml"
        )
    return str(error)


# -- output ------------------------------------------------------------------------------------


def _stream_to_stdout(session: Session) -> Callable[[], None]:
    def show(event: Event) -> None:
        if event.type == EventType.ASSISTANT_MESSAGE_DELTA:
            print(event.data.deltaContent, end="", flush=True)

    return session.on(show)


def _send(session: Session, prompt: str, attachments: list[dict[str, str]] | None = None) -> None:
    print(f"\n[{session.session_id}] > {prompt}\n", flush=True)
    unsubscribe = _stream_to_stdout(session)
    try:
        reply = session.send_and_wait(prompt=prompt, attachments=attachments)
    finally:
        unsubscribe()
    usage = [
        e
        for e in session.get_messages(after=(reply.seq or 1) - 1)
        if e.type == EventType.ASSISTANT_USAGE
    ]
    tokens = usage[0].data.outputTokens if usage else "?"
    print(f"\n   ({reply.data.model}, {tokens} tokens)", flush=True)


# -- the commands --------------------------------------------------------------------------------


def demo(args: argparse.Namespace) -> None:
    """Two named sessions, a restart, a resume: the seed's story, offline, in a throw-away store."""
    if args.store:
        home, temporary = args.store, None
    else:
        temporary = tempfile.mkdtemp(prefix="copilot-demo-")
        home = temporary
    print(f"The demo stores its sessions in {home}", flush=True)
    try:
        _demo_in(home, args.model)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
            print(f"\nRemoved the demo's throw-away store {temporary}.")
        else:
            print(f"\nThe demo's sessions stay in {home}: delete that folder to remove them.")


def _demo_in(home: str, model: str) -> None:
    client = CopilotClient(base_directory=home, default_model=model)
    try:
        for name in ("demo-python", "demo-go"):
            if client.get_session_metadata(name) is not None:
                client.delete_session(name)
        python = client.create_session(session_id="demo-python", model=model)
        go = client.create_session(session_id="demo-go", model=model)
        _send(python, "You are helping with a Python project. Name one Python web framework.")
        _send(go, "You are helping with a Go project. Name one Go web framework.")
    finally:
        client.stop()
    print("\n-- client stopped; a new client resumes the sessions from disk --")
    client = CopilotClient(base_directory=home, default_model=model)
    try:
        resumed = client.resume_session("demo-python")
        _send(resumed, "Which language were we talking about?")
        print("\nStored sessions:")
        _print_sessions(client)
    finally:
        client.stop()


def _print_sessions(client: CopilotClient) -> None:
    sessions = client.list_sessions()
    if not sessions:
        print(f'no sessions yet: `{PROG} send NAME "prompt"` starts one')
    for info in sessions:
        print(
            f"  {info['sessionId']:<24} {info['model']:<20} {info['messageCount']:>4} msgs  "
            f"{info['modifiedTime'][:19]}  {info['summary'][:40]}"
        )


def list_sessions(args: argparse.Namespace) -> None:
    """Print the stored sessions, newest first."""
    with _client(None) as client:
        _print_sessions(client)


def send(args: argparse.Namespace) -> None:
    """Send a prompt; the session is created (after every check passed) if it is new."""
    validate_session_id(args.name)
    validate_prompt(args.prompt)
    attachments = [{"type": "file", "path": path} for path in args.attach or ()] or None
    resolve_attachments(attachments)  # a missing or unsupported file, before anything is made
    with _client(args.model) as client:
        created = client.get_session_metadata(args.name) is None
        if created:
            session = client.create_session(session_id=args.name, model=args.model)
        else:
            session = client.resume_session(args.name)
            if args.model and args.model != session.model:
                session.set_model(args.model)
        try:
            _send(session, args.prompt, attachments)
        except VisionNotSupportedError:
            # refused before the prompt was stored: a session made for it goes again
            if created:
                client.delete_session(args.name)
            raise


def history(args: argparse.Namespace) -> None:
    """Print a session's transcript (read from the log; nothing is written)."""
    with _client(None) as client:
        exchanges = exchanges_of(client.get_messages(args.name))
    shown = exchanges[-args.n :] if args.n else exchanges
    if len(shown) < len(exchanges):
        print(f"({len(exchanges) - len(shown)} earlier exchange(s) not shown)")
    if not exchanges:
        print(f"session {args.name!r} has no exchanges yet")
    for exchange in shown:
        print(f"[user] {exchange.prompt}")
        who = exchange.model or "assistant"
        if exchange.status is ExchangeStatus.OK:
            print(f"[{who}] {exchange.reply}")
        elif exchange.status is ExchangeStatus.ABORTED:
            print(f"[{who}] {exchange.reply} (aborted)" if exchange.reply else "(aborted)")
        elif exchange.status is ExchangeStatus.ERROR:
            print(f"(error: {exchange.error})")
        else:
            print("(no reply)")


def search(args: argparse.Namespace) -> None:
    """Print the hits for a full-text search, best first (reads only)."""
    query = " ".join(args.query)
    if not any(char.isalnum() for char in query):
        args.parser.error(
            f"QUERY needs at least one word (letters or digits), not {query!r}; "
            f"e.g. {PROG} search pivot table"
        )
    with _client(None) as client:
        try:
            hits = client.search(query, session_id=args.session, limit=args.n)
        except InvalidArgumentError as exc:
            if "quote" not in str(exc):
                raise
            raise InvalidArgumentError(
                f"{exc}. In a shell, a phrase keeps its double quotes inside single ones: "
                f"{PROG} search '\"pivot table\"'"
            ) from None
    print(format_hits(hits, width=shutil.get_terminal_size().columns))


def delete(args: argparse.Namespace) -> None:
    """Delete a session and its history."""
    with _client(None) as client:
        client.delete_session(args.name)
    print(f"deleted {args.name}")


def rename(args: argparse.Namespace) -> None:
    """Give a session a new name (its history, totals and start time stay)."""
    with _client(None) as client:
        client.rename_session(args.name, args.new_name)
    print(f"renamed {args.name} to {args.new_name}")


@contextlib.contextmanager
def _client(model: str | None) -> Iterator[CopilotClient]:
    """A client for one command, stopped when the command ends."""
    client = CopilotClient(default_model=model or None)
    try:
        yield client
    finally:
        client.stop()


# -- the parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: one subcommand per command, every argument with its help."""
    parser = _Parser(
        prog=PROG,
        description="Named, persistent chat sessions from a shell.",
        epilog=f"`{PROG} COMMAND --help` shows a command's options.",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(name: str, help: str, run: Callable[[argparse.Namespace], None]) -> _Parser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(run=run)
        return sub

    p = command("demo", "an offline tour with the embedded model, in a throw-away store", demo)
    p.add_argument(
        "-m", "--model", default=DEMO_MODEL, help=f"the model to use (default: {DEMO_MODEL})"
    )
    p.add_argument(
        "--store",
        metavar="DIR",
        help="keep the demo's sessions in DIR (default: a temporary folder, removed at the end)",
    )
    command("list", "list the stored sessions", list_sessions)
    p = command("send", "send a prompt to a session (created if new) and print the reply", send)
    p.add_argument("name", help="the session's name (quote it if it has spaces)")
    p.add_argument("prompt", help="the prompt (quote it: one argument)")
    p.add_argument(
        "-m",
        "--model",
        help="the model, e.g. gpt-4.1, claude-sonnet-4, local:smollm2, echo "
        "(a new session's model, or a switch for an existing one)",
    )
    p.add_argument(
        "-a",
        "--attach",
        action="append",
        metavar="FILE",
        help="attach a file (an image for models that see, or a UTF-8 text file); repeatable",
    )
    p = command("history", "print a session's transcript (reads only)", history)
    p.add_argument("name", help="the session's name")
    p.add_argument(
        "-n",
        type=exchange_count,
        metavar="N",
        help="only the last N exchanges (1 or more; default: all)",
    )
    p = command("delete", "delete a session and its history", delete)
    p.add_argument("name", help="the session's name")
    p = command("rename", "give a session a new name (history, totals, start time stay)", rename)
    p.add_argument("name", help="the session's name")
    p.add_argument("new_name", help="its new name")
    p = command("search", "search every session's prompts and replies (reads only)", search)
    p.epilog = (
        "The shell removes quotes, so a phrase keeps its double quotes inside single ones: "
        f"{PROG} search '\"pivot table\"' NOT excel. Unquoted words must all match."
    )
    p.add_argument(
        "query",
        nargs="+",
        metavar="QUERY",
        help='words, "a phrase", prefix*, AND, OR, NOT (upper case), parentheses; '
        "case- and accent-insensitive",
    )
    p.add_argument("-s", "--session", metavar="NAME", help="only this session's messages")
    p.add_argument(
        "-n",
        type=_hits,
        default=20,
        metavar="N",
        help=f"show the best N hits (1 to {MAX_LIMIT}; default: 20)",
    )
    p.set_defaults(parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except CopilotError as exc:
        print(f"error: {explain(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
