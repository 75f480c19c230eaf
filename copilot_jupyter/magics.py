"""The ``%%copilot`` and ``%copilot`` magics.

``%load_ext copilot_jupyter`` registers them. A ``%%copilot`` cell is a prompt::

    %%copilot chat -m gpt-4.1
    Explain {df.shape} and what {In[3]} does.

``NAME`` picks the session: created on first use, resumed from the store after a kernel
restart, with its model and history; it becomes the current session. Without ``NAME`` the
current session answers (``%copilot use NAME``, the panel's picker, or the last session a cell
talked to); with none, the session named by ``CopilotMagics.default_session`` ("default")
is used, created if need be. The current session is remembered per notebook across kernel
restarts (:mod:`copilot_jupyter.state`); when a bare ``%%copilot`` goes to a session no cell
of this kernel chose (the remembered one, or the default), a note under the reply says which.

Options: ``-m MODEL`` (the model of a new session, or a switch for an existing one, keeping
its context), ``-f FORMAT`` (markdown, text, code, html, json, math; ``code`` puts the reply's
code in a new cell below), ``-s SYSTEM`` (a new session's system message), ``--new`` (fail if
the session exists), and the generation options ``--temperature``, ``--max-tokens``,
``--seed``, ``--top-p`` and ``--stop`` (repeatable), passed to ``send``.

The cell body is the prompt, interpolated once (:mod:`copilot_jupyter.interpolate`); a line
that is only an nbval marker (``# NBVAL_IGNORE_OUTPUT``, ``# NBVAL_SKIP``) is left out of it,
so a tested notebook can mark a ``%%copilot`` cell where readers see it.
Re-running a cell (same cell id) replaces that cell's previous exchange in the session instead
of adding a duplicate, also after a kernel restart: the cell id is stored with the prompt
(``metadata.cellId``), and the map from cell to exchange is rebuilt from the log when a
session is first used in a kernel. A reply of any size keeps the browser responsive: live
updates show a bounded tail, and the notebook keeps a bounded output
(:mod:`copilot_jupyter.display`); the session log keeps everything.

``%copilot SUBCOMMAND`` manages sessions: ``list``, ``history``, ``use``, ``new``, ``delete``,
``fork``, ``model``, ``export``, ``prune``, ``models``, ``panel``, ``tools``, ``help``.

Notebook tools: ``%%copilot NAME --tools notebook`` lets the session's model list the kernel's
variables, describe one and read a cell (:mod:`copilot_jupyter.tools`); ``--allow-run-code``
adds ``run_code``, each run shown in the cell with Approve / Deny and denied when nobody answers
within ``approval_timeout`` seconds. ``%copilot tools NAME on|off`` does the same without a
prompt. The setting is remembered for the session in this kernel (tools are code, never stored);
``--tools none`` turns them off. The calls show under the reply as collapsible blocks.

Notebook context (:mod:`copilot_jupyter.context`): from the moment the extension loads, a
``post_run_cell`` observer records each cell's error (it replaces nothing: tracebacks show as
before). ``{Err}`` / ``{Err[n]}`` put an error in a prompt and ``{@name}`` a summary of a
variable (:mod:`copilot_jupyter.interpolate`); ``%copilot fix [NAME]`` sends the last failed
cell's code and traceback and puts the reply's code in a new cell below, not run;
``%copilot explain [N] [NAME]`` explains cell N (default: the last). Both choose the session
as ``%%copilot`` does and stream the same way.

``%copilot search QUERY [-s NAME] [-n N]`` searches every session's prompts and replies (the
query keeps its double quotes: ``%copilot search "pivot table" NOT excel`` is a phrase).

Expected failures (an unknown session, a model without its API key, a provider that is down)
print one line saying what to do, in the magics' terms (``%copilot list``, not the API's
``client.list_sessions()``); argument errors raise IPython's ``UsageError`` with the
subcommand's own usage. Neither shows a traceback.

Settings: ``%config CopilotMagics.default_model = "gpt-4.1"`` and ``default_format``,
``update_interval``, ``timeout``, ``show_footer``, ``default_session``, ``default_tools``
(``none`` or ``notebook``), ``approval_timeout``, ``tool_output_limit``.
"""

from __future__ import annotations

import argparse
import html
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.display import display
from traitlets import Bool, Enum, Float, Int, Unicode

from copilot import (
    CopilotError,
    Event,
    Session,
    SessionExistsError,
    SessionNotFoundError,
)
from copilot._argtypes import exchange_count
from copilot.errors import AttachmentTooLargeError, VisionNotSupportedError
from copilot.events import EventType
from copilot.history import History, exchanges_of
from copilot.routing import UnroutableModelError
from copilot.search import MAX_LIMIT as SEARCH_MAX_LIMIT

from .approval import DEFAULT_APPROVAL_TIMEOUT
from .context import CellErrors, explain_prompt, fix_prompt
from .display import (
    FORMATS,
    LARGE_PROMPT,
    LIVE_LIMIT,
    OUTPUT_LIMIT,
    TurnOutcome,
    extract_code,
    show_error,
    show_note,
    stream_turn,
)
from .export import EXPORT_FORMATS, export_session, to_markdown
from .figures import FigureLog, attachment_for
from .formatting import time_ago
from .interpolate import interpolate
from .state import CopilotState, ToolSetting, get_state, reset_state
from .summaries import summarize
from .tools import DEFAULT_MAX_CHARS
from .usage import has_matplotlib, usage_png, usage_rows

__all__ = ["CopilotMagics", "load_ipython_extension", "unload_ipython_extension"]


class _Failure(Exception):
    """An expected failure of a subcommand: its message says what to do."""


class _HelpShown(Exception):
    """argparse printed the help (``-h``); nothing else to do."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting the kernel.

    A subcommand reports its own unexpected words with its own usage (argparse would leave
    them to the top-level parser, which shows the top-level usage).
    """

    # typeshed types parse_known_args as overloads; this override keeps the Namespace one
    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self._subparsers is None:
            self.error(f"unrecognized arguments: {' '.join(extras)}; {self._hint(parsed, extras)}")
        return parsed, extras

    def _hint(self, parsed: argparse.Namespace, extras: Sequence[str]) -> str:
        if any(word.startswith("-") for word in extras):
            return f"{self.prog} -h lists its options"
        positionals = [a for a in self._actions if not a.option_strings]
        last = getattr(parsed, positionals[-1].dest, None) if positionals else None
        words = " ".join([last, *extras] if isinstance(last, str) else extras)
        return f'a name with spaces must be quoted: {self.prog} "{words}"'

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n{self.format_usage().rstrip()}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if status:
            raise UsageError(message or self.format_usage())
        raise _HelpShown


# -- arguments --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Arg:
    flags: tuple[str, ...]
    options: dict[str, Any]


def _arg(*flags: str, **options: Any) -> _Arg:
    return _Arg(flags, options)


_MODEL = _arg("-m", "--model", help="the model, e.g. gpt-4.1, claude-sonnet-4, echo")
_SYSTEM = _arg("-s", "--system", help="the system message of a new session")


def _number(kind: type, low: float | None = None, high: float | None = None) -> Callable:
    """An argparse type: a number of ``kind`` within [low, high]."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"from {low:g}" + (f" to {high:g}" if high is not None else " up")
            raise argparse.ArgumentTypeError(f"{text} is out of range ({bounds})")
        return value

    return parse


#: the generation options of %%copilot: (flag, send() keyword, argparse options)
_GENERATION = (
    ("--temperature", "temperature", {"type": _number(float, 0.0, 2.0), "metavar": "T"}),
    ("--max-tokens", "max_tokens", {"type": _number(int, 1), "metavar": "N"}),
    ("--seed", "seed", {"type": _number(int), "metavar": "N"}),
    ("--top-p", "top_p", {"type": _number(float, 0.0, 1.0), "metavar": "P"}),
    ("--stop", "stop", {"action": "append", "metavar": "TEXT"}),
)
_GENERATION_HELP = {
    "temperature": "sampling temperature, 0 to 2 (the model's default without it)",
    "max_tokens": "the most tokens the reply may have",
    "seed": "a seed for reproducible sampling (where the model supports it)",
    "top_p": "nucleus sampling: the probability mass to sample from, 0 to 1",
    "stop": "stop the reply at this text (repeat for several)",
}


def _cell_parser() -> _Parser:
    parser = _Parser(
        prog="%%copilot",
        description="Send the cell to a chat session; the cell body is the prompt, and the "
        "reply streams below.",
    )
    parser.add_argument("name", nargs="?", help="the session (default: the current one)")
    for arg in (_MODEL, _SYSTEM):
        parser.add_argument(*arg.flags, **arg.options)
    parser.add_argument("-f", "--format", choices=FORMATS, help="how to show the reply")
    parser.add_argument("--new", action="store_true", help="fail if the session exists")
    parser.add_argument(
        "-a",
        "--attach",
        action="append",
        metavar="SPEC",
        help="attach a file (a path), cell n's image (Out[n]) or the last figure (fig); repeatable",
    )
    for flag, keyword, options in _GENERATION:
        parser.add_argument(flag, dest=keyword, help=_GENERATION_HELP[keyword], **options)
    _add_tool_options(parser)
    return parser


def _add_tool_options(parser: _Parser) -> None:
    """``--tools notebook|none`` and ``--allow-run-code`` on the %%copilot line."""
    parser.add_argument(
        "--tools",
        choices=_TOOLSETS,
        help="notebook: the session may look at the kernel's variables and cells (remembered "
        "for this kernel); none: turn them off",
    )
    parser.add_argument(
        "--allow-run-code",
        action="store_true",
        help="with the notebook tools, the model may also run code, each run only after you "
        "approve it in the notebook",
    )


#: the toolsets of ``--tools`` and ``CopilotMagics.default_tools``
_TOOLSETS = ("notebook", "none")


def _generation_options(args: argparse.Namespace) -> dict[str, Any]:
    """The generation options given on the %%copilot line (only those given)."""
    values = {keyword: getattr(args, keyword, None) for _, keyword, _ in _GENERATION}
    return {keyword: value for keyword, value in values.items() if value is not None}


#: subcommand -> (handler, help, arguments); filled by @_command, read by _command_parser
_COMMANDS: dict[str, tuple[Callable[..., None], str, Sequence[_Arg]]] = {}


def _command(name: str, help: str, *arguments: _Arg) -> Callable[[Callable], Callable]:
    def register(handler: Callable[..., None]) -> Callable[..., None]:
        _COMMANDS[name] = (handler, help, arguments)
        return handler

    return register


def _command_parser() -> _Parser:
    parser = _Parser(prog="%copilot", description="Manage chat sessions.")
    subparsers = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", parser_class=_Parser)
    for name, (_, help_text, arguments) in _COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        for arg in arguments:
            sub.add_argument(*arg.flags, **arg.options)
    return parser


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if days < 0:
        raise argparse.ArgumentTypeError("the number of days cannot be negative")
    return days


#: one word of a magic line as the user typed it: quoted parts (even unclosed) stay whole
_RAW_WORD = re.compile(r"""(?:[^\s"']+|"[^"]*"?|'[^']*'?)+""")
_SEARCH_OPTIONS = ("-s", "--session", "-n")


def _raw_search_query(line: str) -> str:
    """The query of a ``search`` line as typed, quotes kept (``shlex`` would strip them).

    The line's words minus the subcommand and the ``-s``/``-n`` options (with their values);
    after ``--`` every word belongs to the query.
    """
    words = [m.group() for m in _RAW_WORD.finditer(line)][1:]  # [0] is "search"
    query: list[str] = []
    skip = options = False
    for word in words:
        if skip:
            skip = False
        elif options:
            query.append(word)
        elif word == "--":
            options = True
        elif word in _SEARCH_OPTIONS:
            skip = True
        elif not word.startswith(("--session=", "-s", "-n")):
            query.append(word)
    return " ".join(query)


def _search_limit(text: str) -> int:
    """``search -n``: how many hits to show, 1 to :data:`copilot.search.MAX_LIMIT`."""
    value = _number(int)(text)
    if not 1 <= value <= SEARCH_MAX_LIMIT:
        raise argparse.ArgumentTypeError(
            f"N is the number of hits to show, 1 to {SEARCH_MAX_LIMIT} (got {value}); "
            "leave out -n for the best 20"
        )
    return value


# -- small output helpers ---------------------------------------------------------------------


def _show_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """An HTML table, with an aligned text table as the text/plain fallback."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in [list(headers), *cells]) for i in range(len(headers))]
    text = "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [list(headers), ["-" * w for w in widths], *cells]
    )
    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in row)
        + "</tr>"
        for row in cells
    )
    markup = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    display({"text/html": markup, "text/plain": text}, raw=True)


# -- the magics -------------------------------------------------------------------------------


@magics_class
class CopilotMagics(Magics):
    """``%%copilot [NAME] [options]`` sends a prompt; ``%copilot SUBCOMMAND`` manages sessions."""

    default_model = Unicode(
        "",
        config=True,
        help="Model of sessions created without -m. Empty: the client's default "
        "(COPILOT_JUPYTER_MODEL, config.toml's default_model, or the embedded local model).",
    )
    default_format = Enum(
        FORMATS, default_value="markdown", config=True, help="Output format without -f."
    )
    default_session = Unicode(
        "default",
        config=True,
        help="Session a bare %%copilot uses when there is no current session (created if "
        "need be). Empty: a bare %%copilot without a current session is refused.",
    )
    update_interval = Float(
        0.1,
        min=0.0,
        config=True,
        help="Seconds between updates of a streaming reply's output (at most 1/interval "
        "updates per second; the final update always happens).",
    )
    timeout = Float(
        0.0,
        min=0.0,
        config=True,
        help="Seconds a cell waits for its reply before aborting the turn (the partial reply "
        "is kept). 0: no limit (the provider's request timeout still applies).",
    )
    show_footer = Bool(True, config=True, help="Show model, tokens and time under each reply.")
    live_limit = Int(
        LIVE_LIMIT,
        min=100,
        config=True,
        help="Most characters one live update of a streaming reply shows (the tail of a "
        "longer reply): bounds what each update sends to the browser.",
    )
    output_limit = Int(
        OUTPUT_LIMIT,
        min=100,
        config=True,
        help="Most characters of a finished reply kept in the notebook's output (the head, "
        "with a note); the session log keeps the whole reply.",
    )
    default_tools = Enum(
        _TOOLSETS,
        default_value="none",
        config=True,
        help="Tools of a session used without --tools and not set by %copilot tools in this "
        "kernel: none, or notebook (variables and cells; run-code stays off).",
    )
    approval_timeout = Float(
        DEFAULT_APPROVAL_TIMEOUT,
        min=0.0,
        config=True,
        help="Seconds a tool call waits for Approve / Deny in the notebook before it is denied.",
    )
    tool_output_limit = Int(
        DEFAULT_MAX_CHARS,
        min=100,
        config=True,
        help="Most characters of one notebook tool's result (what the model and the log see).",
    )
    large_prompt = Int(
        LARGE_PROMPT,
        min=0,
        config=True,
        help="Prompts longer than this many characters are sent with a warning.",
    )

    def __init__(self, shell: InteractiveShell | None = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        #: session id -> cell id -> message id of that cell's latest prompt (this kernel only)
        self.cell_messages: dict[str, dict[str, str]] = {}
        #: the errors of this kernel's cells, recorded by a post_run_cell observer (see
        #: load_ipython_extension) for {Err}, {Err[n]}, %copilot fix and %copilot explain
        self.errors = CellErrors(shell)
        #: the images this kernel's cells displayed, for -a fig / -a Out[n] (see figures.py)
        self.figures = FigureLog(shell)
        self._cell_parser = _cell_parser()
        self._parser = _command_parser()

    @property
    def state(self) -> CopilotState:
        """The kernel's shared state (client, current session), shared with the panel."""
        return get_state()

    # -- entry point --------------------------------------------------------------------------

    @no_var_expand
    @line_cell_magic
    def copilot(self, line: str, cell: str | None = None) -> None:
        """Chat with a persistent session (cell magic) or manage sessions (line magic).

        ``%%copilot [NAME] [-m MODEL] [-f FORMAT] [-s SYSTEM] [--new]`` sends the cell;
        ``%copilot help`` lists the subcommands.
        """
        self._raw_line = line  # the search subcommand reads its query unsplit
        try:
            words = shlex.split(line)
        except ValueError as error:
            raise UsageError(f"cannot parse the arguments: {error}") from None
        try:
            if cell is None:
                self._run_command(words)
            else:
                self._run_prompt(words, cell)
        except _HelpShown:
            pass
        except _Failure as error:
            show_error(str(error))
        except CopilotError as error:
            show_error(explain(error))

    def _run_command(self, words: list[str]) -> None:
        if not words:
            words = ["help"]
        args = self._parser.parse_args(words)
        handler = _COMMANDS[args.command][0]
        handler(self, args)

    # -- %%copilot ----------------------------------------------------------------------------

    def _run_prompt(self, words: list[str], cell: str) -> None:
        args = self._cell_parser.parse_args(words)
        if not cell.strip():
            raise UsageError(_EMPTY_BODY)
        name = self._prompt_target(args.name, "%%copilot")
        cell = _NBVAL_MARKER.sub("", cell)
        if not cell.strip():
            raise UsageError(_EMPTY_BODY)
        session = self._pick_session(name, args)
        # surrounding blank lines are not part of the prompt; indentation of its first line is
        prompt = self._interpolate(cell.lstrip("\n").rstrip())
        self._send_from_cell(session, prompt, args.format or self.default_format, args)

    def _prompt_target(self, name: str | None, magic: str) -> str:
        """The session a prompt goes to: ``name``, else the current one, else the default."""
        name = name or self.state.current_session or self.default_session
        if not name:
            raise UsageError(
                f"{magic}: no current session; name one ({magic} NAME) or pick one with "
                "%copilot use NAME"
            )
        return name

    def _pick_session(self, name: str, args: argparse.Namespace) -> Session:
        """Open (or create) session ``name`` for a prompt, make it current, say which it is."""
        state = self.state
        where = None
        if not args.name and state.restored == name:
            where = (
                f"→ session {name!r}: this notebook's current session, remembered from before "
                "the kernel restarted (%%copilot NAME picks another)"
            )
        elif not args.name and not state.current_session:
            where = (
                f"→ session {name!r}: the default, as no session is current in this kernel "
                "(%%copilot NAME or %copilot use NAME picks one)"
            )
        self._apply_tools(name, args)
        session = self._session_for_prompt(name, args)
        state.current_session = name
        state.restored = None
        if where:
            show_note([where])
        return session

    def _send_from_cell(
        self, session: Session, prompt: str, fmt: str, args: argparse.Namespace
    ) -> TurnOutcome:
        """Stream ``prompt``'s reply into this cell; a re-run cell replaces its exchange."""
        name = session.session_id
        cell_id = self._cell_id()
        cells = self._cell_map(name)

        def remember(message_id: str) -> None:
            if cell_id:
                cells[cell_id] = message_id

        outcome = stream_turn(
            session,
            prompt,
            replaces=cells.get(cell_id) if cell_id else None,
            metadata={"cellId": cell_id} if cell_id else None,
            fmt=fmt,
            update_interval=self.update_interval,
            timeout=self.timeout or None,
            show_footer=self.show_footer,
            on_sent=remember,
            options={**_generation_options(args), **self._attachments(args)},
            live_limit=self.live_limit,
            output_limit=self.output_limit,
            large_prompt=self.large_prompt,
            approvals=self.state.approvals,
        )
        if outcome.status == "ok" and fmt == "code":
            self.shell.set_next_input(extract_code(outcome.content), replace=False)
        return outcome

    # -- notebook tools (the --tools flags and %copilot tools) ---------------------------------

    def _sync_tool_settings(self) -> None:
        """Pass the tool settings of these magics to the shared state."""
        state = self.state
        state.approvals.timeout = self.approval_timeout
        state.tool_max_chars = self.tool_output_limit
        if state.shell is None:
            state.shell = self.shell

    def _apply_tools(self, name: str, args: argparse.Namespace) -> None:
        """Turn the session's notebook tools on or off as the %%copilot line says: --tools,
        --allow-run-code, else this kernel's setting, else ``default_tools``."""
        self._sync_tool_settings()
        state = self.state
        if args.new and state.client.get_session_metadata(name) is not None:
            return  # --new refuses the session: its setting stays as it was
        if args.allow_run_code and args.tools == "none":
            raise UsageError(
                "%%copilot: --allow-run-code needs the notebook tools; drop --tools none"
            )
        if args.tools or args.allow_run_code:
            state.set_notebook_tools(name, args.tools != "none", allow_run_code=args.allow_run_code)
        elif name not in state.tool_settings and self.default_tools == "notebook":
            state.set_notebook_tools(name, True)

    @_command(
        "tools",
        "turn a session's notebook tools on or off (this kernel; shows them without on/off)",
        _arg("name", nargs="?", help="the session (default: the current one)"),
        _arg("switch", nargs="?", choices=("on", "off"), help="on or off"),
        _arg(
            "--allow-run-code",
            action="store_true",
            help="with on: the model may also run code, after you approve each run",
        ),
    )
    def _cmd_tools(self, args: argparse.Namespace) -> None:
        if args.name in ("on", "off") and args.switch is None:
            args.name, args.switch = None, args.name  # %copilot tools on: the current session
        name = self._name_or_current(args.name)
        self._sync_tool_settings()
        state = self.state
        if args.switch is None:
            if args.allow_run_code:
                raise UsageError(f"--allow-run-code goes with on: %copilot tools {name} on ...")
            print(_describe_tools(name, state.tool_setting(name)))
            return
        if args.allow_run_code and args.switch == "off":
            raise UsageError(f"--allow-run-code goes with on: %copilot tools {name} on ...")
        if self.state.client.get_session_metadata(name) is None and name not in state.sessions:
            raise SessionNotFoundError(name)
        setting = state.set_notebook_tools(
            name, args.switch == "on", allow_run_code=args.allow_run_code
        )
        print(_describe_tools(name, setting))

    def _attachments(self, args: argparse.Namespace) -> dict[str, Any]:
        """``attachments=`` for send() from the ``-a`` specs (none: no keyword at all)."""
        specs = getattr(args, "attach", None)
        if not specs:
            return {}
        history = self.shell.history_manager
        outputs = history.output_hist if history else {}
        return {"attachments": [attachment_for(spec, self.figures, outputs) for spec in specs]}

    def _session_for_prompt(self, name: str, args: argparse.Namespace) -> Session:
        client = self.state.client
        metadata = client.get_session_metadata(name)
        if metadata is None:
            return self.state.open_session(
                name, model=args.model or self.default_model or None, system_message=args.system
            )
        if args.new:
            raise _Failure(
                f"session {name!r} already exists (--new refuses to reuse it); drop --new, "
                f"pick another name, or %copilot delete {name}"
            )
        session = self.state.open_session(name, create=False)
        if args.model and args.model != session.model:
            session.set_model(args.model)
        if args.system and args.system != metadata.get("systemMessage"):
            show_error(
                f"session {name!r} keeps its system message (it cannot change); "
                f"%copilot fork {name} NEW or %copilot new NEW -s ... for another one"
            )
        return session

    def _cell_map(self, name: str) -> dict[str, str]:
        """Cell id -> message id of its latest prompt in session ``name``.

        Built from the log on first use (prompts carry ``metadata.cellId``), so a re-run
        cell replaces its exchange after a kernel restart too.
        """
        cells = self.cell_messages.get(name)
        if cells is None:
            cells = {}
            if self.state.client.get_session_metadata(name) is not None:
                cells = History.from_events(self.state.client.get_messages(name)).by_cell()
            self.cell_messages[name] = cells
        return cells

    def _interpolate(self, cell: str) -> str:
        history = self.shell.history_manager
        last = self.errors.last
        return interpolate(
            cell,
            self.shell.user_ns,
            inputs=history.input_hist_raw if history else (),
            outputs=history.output_hist if history else {},
            errors=self.errors.texts(),
            last_error=last.text if last is not None else None,
        )

    def _cell_id(self) -> str | None:
        """The id of the running cell, or None (a terminal, an old front end).

        ipykernel passes the front end's ``metadata.cellId`` to ``run_cell(cell_id=...)``,
        and IPython keeps it in the running cell's ``ExecutionInfo``; the display hook holds
        that cell's result while it runs.
        """
        result = getattr(self.shell.displayhook, "exec_result", None)
        cell_id = getattr(getattr(result, "info", None), "cell_id", None)
        return str(cell_id) if cell_id else None

    # -- helpers for the subcommands ---------------------------------------------------------

    def _existing(self, name: str) -> Session:
        if self.state.client.get_session_metadata(name) is None:
            raise SessionNotFoundError(name)
        return self.state.open_session(name, create=False)

    def _stored_events(self, name: str) -> list[Event]:
        """A session's log, read without opening the session (nothing is written)."""
        return self.state.client.get_messages(name)

    def _absent(self, name: str) -> None:
        if self.state.client.get_session_metadata(name) is not None:
            raise _Failure(f"session {name!r} already exists: choose another name")

    def _name_or_current(self, name: str | None) -> str:
        name = name or self.state.current_session
        if not name:
            raise UsageError("no current session: name one, or pick one with %copilot use NAME")
        return name

    def _session_table(self, sessions: Sequence[dict[str, Any]]) -> None:
        current = self.state.current_session
        rows = [
            (
                ("* " if s["sessionId"] == current else "") + s["sessionId"],
                s.get("model", ""),
                s.get("turnCount", 0),
                time_ago(s.get("modifiedTime")),
                s.get("summary", ""),
            )
            for s in sessions
        ]
        _show_table(("name", "model", "turns", "last used", "summary"), rows)

    # -- the subcommands: one handler each, found by name in _COMMANDS ------------------------

    @_command("list", "list the stored sessions (* marks the current one)")
    def _cmd_list(self, args: argparse.Namespace) -> None:
        sessions = self.state.client.list_sessions()
        if not sessions:
            print("no sessions yet: %%copilot NAME starts one")
            return
        self._session_table(sessions)

    @_command(
        "history",
        "show a session's transcript",
        _arg("name", nargs="?", help="the session (default: the current one)"),
        _arg(
            "-n",
            type=exchange_count,
            metavar="N",
            help="only the last N exchanges (1 or more; default: all)",
        ),
    )
    def _cmd_history(self, args: argparse.Namespace) -> None:
        name = self._name_or_current(args.name)
        exchanges = exchanges_of(self._stored_events(name))
        shown = exchanges[-args.n :] if args.n else exchanges
        text = to_markdown(name, shown, omitted=len(exchanges) - len(shown))
        if len(text) > self.output_limit:
            # a transcript with a huge reply: the notebook keeps a bounded output
            text = (
                f"{text[: self.output_limit]}\n\n…\n\n*(the transcript has {len(text):,} "
                f"characters; the first {self.output_limit:,} are shown: -n N shows fewer "
                f"exchanges, %copilot export {name} FILE.md writes all of it)*\n"
            )
        display({"text/markdown": text, "text/plain": text}, raw=True)

    @_command(
        "search",
        "search every session's prompts and replies, best hits first",
        _arg(
            "query",
            nargs="+",
            metavar="QUERY",
            help='words, "a phrase", prefix*, AND, OR, NOT (upper case), parentheses',
        ),
        _arg("-s", "--session", metavar="NAME", help="only this session's messages"),
        _arg(
            "-n",
            type=_search_limit,
            default=20,
            metavar="N",
            help=f"show the best N hits (1 to {SEARCH_MAX_LIMIT}; default: 20)",
        ),
    )
    def _cmd_search(self, args: argparse.Namespace) -> None:
        query = _raw_search_query(self._raw_line)
        if not any(char.isalnum() for char in query):
            raise _Failure(
                f"a search needs at least one word (letters or digits), not {query!r}; "
                'e.g. %copilot search "pivot table" NOT excel'
            )
        hits = self.state.client.search(query, session_id=args.session, limit=args.n)
        if not hits:
            print(f"no matches for {query}")
            return
        who = {EventType.USER_MESSAGE: "you", EventType.ASSISTANT_MESSAGE: "assistant"}
        rows = [
            (
                hit["sessionId"],
                time_ago(hit["timestamp"]),
                who.get(hit["type"], "aborted"),
                hit["snippet"] + (" (replaced)" if hit["replaced"] else ""),
            )
            for hit in hits
        ]
        _show_table(("session", "when", "who", "snippet"), rows)

    @_command("use", "make a session the current one", _arg("name", help="the session"))
    def _cmd_use(self, args: argparse.Namespace) -> None:
        session = self._existing(args.name)
        self.state.current_session = args.name
        print(f"current session: {args.name} (model {session.model})")

    @_command(
        "new",
        "create a session and make it current",
        _arg("name", help="the new session's name"),
        _MODEL,
        _SYSTEM,
    )
    def _cmd_new(self, args: argparse.Namespace) -> None:
        self._absent(args.name)
        model = args.model or self.default_model or None
        session = self.state.open_session(args.name, model=model, system_message=args.system)
        self.state.current_session = args.name
        print(f"created session {args.name} (model {session.model}); it is the current session")

    @_command("delete", "delete a session and its history", _arg("name", help="the session"))
    def _cmd_delete(self, args: argparse.Namespace) -> None:
        self._existing(args.name)
        self.state.client.delete_session(args.name)
        self.state.forget(args.name)
        self.cell_messages.pop(args.name, None)
        print(f"deleted session {args.name}")

    @_command(
        "rename",
        "give a session a new name, keeping its history, totals and start time",
        _arg("name", help="the session"),
        _arg("new_name", help="its new name"),
    )
    def _cmd_rename(self, args: argparse.Namespace) -> None:
        if self.state.client.get_session_metadata(args.name) is None:  # checked, not opened
            raise SessionNotFoundError(args.name)
        self._absent(args.new_name)
        self.state.client.rename_session(args.name, args.new_name)
        self.state.renamed(args.name, args.new_name)
        cells = self.cell_messages.pop(args.name, None)
        if cells is not None:  # re-running a cell of it still replaces its exchange
            self.cell_messages[args.new_name] = cells
        print(f"renamed session {args.name} to {args.new_name}")

    @_command(
        "fork",
        "copy a session (model, system message, exchanges) to a new name and make it current",
        _arg("source", help="the session to copy"),
        _arg("target", help="the new session's name"),
        _arg("-m", "--model", help="the copy's model (default: the source's)"),
    )
    def _cmd_fork(self, args: argparse.Namespace) -> None:
        self._existing(args.source)
        self._absent(args.target)
        session = self.state.client.fork_session(args.source, args.target, model=args.model)
        self.state.current_session = args.target
        self.state.touch()
        print(f"forked {args.source} into {args.target} (model {session.model}); it is current")

    @_command(
        "model",
        "switch a session's model, keeping its context",
        _arg("name", help="the session"),
        _arg("model", help="the model to use from the next turn on"),
    )
    def _cmd_model(self, args: argparse.Namespace) -> None:
        session = self._existing(args.name)
        session.set_model(args.model)
        print(f"session {args.name} now uses {args.model}; its context is kept")

    @_command(
        "compact",
        "summarize a session's oldest turns now (infinite sessions)",
        _arg("name", nargs="?", help="the session (default: the current one)"),
    )
    def _cmd_compact(self, args: argparse.Namespace) -> None:
        name = self._name_or_current(args.name)
        done = self._existing(name).compact()
        if done is None:
            print(f"session {name}: nothing old enough to summarize yet")
        elif not done.data.get("success"):
            raise _Failure(
                f"session {name}: the summary failed ({done.data.get('error')}); old turns "
                "fall out of the context as before. Try again, or set a summary_model"
            )
        else:
            data = done.data
            print(
                f"session {name}: {len(data['messageIds'])} turns summarized; context "
                f"{data['preCompactionTokens']:,} -> {data['postCompactionTokens']:,} tokens"
            )

    @_command(
        "usage",
        "tokens, context fill and cost per turn (a chart too if matplotlib is installed)",
        _arg("name", nargs="?", help="the session (default: the current one)"),
    )
    def _cmd_usage(self, args: argparse.Namespace) -> None:
        name = self._name_or_current(args.name)
        meta = self.state.client.get_session_metadata(name)
        if meta is None:
            raise SessionNotFoundError(name)
        rows = usage_rows(self._stored_events(name))
        if not rows:
            print(f"session {name}: no turns yet")
            return
        _show_table(
            ("turn", "model", "in", "out", "context", "fill", "cost $"),
            [
                (
                    f"{r.turn} (summary)" if r.compaction else r.turn,
                    r.model,
                    r.input_tokens,
                    r.output_tokens,
                    "" if r.context_tokens is None else r.context_tokens,
                    "" if r.fill is None else f"{r.fill:.0%}",
                    "" if r.cost is None else f"{r.cost:.6f}",
                )
                for r in rows
            ],
        )
        totals = meta.get("usage") or {}
        print(
            f"session {name}: {totals.get('turns', 0)} turns, {totals.get('inputTokens', 0):,} "
            f"tokens in, {totals.get('outputTokens', 0):,} out, "
            f"${totals.get('cost', 0.0):.6f}"
            + (
                f" ({totals['unpricedTurns']} turns without a price)"
                if totals.get("unpricedTurns")
                else ""
            )
            + (f", {totals['compactions']} compactions" if totals.get("compactions") else "")
        )
        if has_matplotlib():  # a PNG: shows in any frontend, no inline backend needed
            png = usage_png(rows, f"session {name}")
            display({"image/png": png, "text/plain": f"<usage chart of {name}>"}, raw=True)

    @_command(
        "export",
        "write a session's transcript to a file",
        _arg("name", help="the session"),
        _arg("path", help="the file: " + ", ".join(EXPORT_FORMATS) + " picks the format"),
        _arg("--mkdir", action="store_true", help="create the file's folder if it is missing"),
    )
    def _cmd_export(self, args: argparse.Namespace) -> None:
        events = self._stored_events(args.name)
        metadata = self.state.client.get_session_metadata(args.name) or {}
        path = export_session(
            args.name,
            events,
            args.path,
            metadata,
            create_folders=args.mkdir,
            load_blob=self.state.client.get_attachment,
        )
        print(f"exported session {args.name} to {path}")

    @_command(
        "prune",
        "delete sessions unused for a number of days (lists them; --yes deletes)",
        _arg("--older-than", type=_days, required=True, metavar="DAYS"),
        _arg("--yes", action="store_true", help="delete them (without it, only list them)"),
    )
    def _cmd_prune(self, args: argparse.Namespace) -> None:
        client = self.state.client
        age = timedelta(days=args.older_than)
        old = client.delete_sessions(age, dry_run=not args.yes)
        if not old:
            print(f"no session unused for more than {args.older_than:g} days")
            return
        self._session_table(old)
        if not args.yes:
            print(f"{len(old)} session(s) would be deleted: add --yes to delete them")
            return
        for info in old:
            self.state.forget(info["sessionId"])
            self.cell_messages.pop(info["sessionId"], None)
        print(f"deleted {len(old)} session(s)")

    @_command("models", "list the models: the usable ones first, then the rest by provider")
    def _cmd_models(self, args: argparse.Namespace) -> None:
        models = self.state.client.list_models()
        usable = [m for m in models if m["usable"]]
        rows = [(m["id"], m["provider"], "yes", "") for m in usable]
        groups: dict[str, list[dict[str, Any]]] = {}
        for model in models:
            if not model["usable"]:
                groups.setdefault(model["provider"], []).append(model)
        for provider, group in groups.items():
            # the reason is the provider's: said once, on the group's first row
            reason = group[0].get("reason") or ""
            rows += [
                (m["id"], provider, "no", reason if i == 0 else "") for i, m in enumerate(group)
            ]
        _show_table(("model", "provider", "usable", "why not"), rows)

    @_command("panel", "show the session panel (a widget)")
    def _cmd_panel(self, args: argparse.Namespace) -> None:
        try:
            from .panel import SessionPanel
        except ModuleNotFoundError as error:
            if error.name != f"{__package__}.panel":
                raise
            raise _Failure(
                "the session panel is not part of this version of copilot-jupyter"
            ) from None
        display(SessionPanel())

    @_command("help", "show this help")
    def _cmd_help(self, args: argparse.Namespace) -> None:
        print(self._cell_parser.format_help())
        print(self._parser.format_help())


# -- notebook context: %copilot fix and %copilot explain ----------------------------------------


def _explain_target(first: str | None, second: str | None) -> tuple[int | None, str | None]:
    """``explain [N] [NAME]``: a first word of digits is the cell number, else the session."""
    if first is None or not re.fullmatch(r"[+-]?\d+", first):
        if second is not None:
            raise UsageError(
                f"%copilot explain: not a cell number: {first!r}; the cell number comes "
                "first: %copilot explain [N] [NAME]"
            )
        return None, first
    cell = int(first)
    if cell < 1:
        raise UsageError(f"%copilot explain: cell numbers start at 1 (got {cell})")
    return cell, second


def _context_args(name: str | None, model: str | None) -> argparse.Namespace:
    """The arguments %%copilot would have for ``%%copilot NAME -m MODEL``."""
    return argparse.Namespace(
        name=name,
        model=model,
        system=None,
        new=False,
        format=None,
        tools=None,
        allow_run_code=False,
    )


@_command(
    "fix",
    "send the last failed cell's code and traceback for a fix; the fixed code goes into a "
    "new cell below (not run)",
    _arg("name", nargs="?", help="the session (default: the current one, as for %%copilot)"),
    _MODEL,
)
def _cmd_fix(magics: CopilotMagics, args: argparse.Namespace) -> None:
    """``%copilot fix``: the last failed cell's code and traceback, the reply's code below."""
    error = magics.errors.last
    if error is None:
        raise _Failure(
            "no failed cell to fix: no cell has raised an error since %load_ext copilot_jupyter "
            "(%copilot fix works on the last cell that did)"
        )
    name = magics._prompt_target(args.name, "%copilot fix")
    session = magics._pick_session(name, _context_args(args.name, args.model))
    outcome = magics._send_from_cell(session, fix_prompt(error), "markdown", args)
    if outcome.status == "ok":
        magics.shell.set_next_input(extract_code(outcome.content), replace=False)


@_command(
    "explain",
    "explain a cell's code and its result or error (default: the last cell)",
    _arg("cell", nargs="?", metavar="N", help="the cell number, as in In[N] (default: the last)"),
    _arg("name", nargs="?", help="the session (default: the current one, as for %%copilot)"),
    _MODEL,
)
def _cmd_explain(magics: CopilotMagics, args: argparse.Namespace) -> None:
    """``%copilot explain``: cell N's code with its result and error, explained."""
    shell = magics.shell
    history = shell.history_manager
    inputs = history.input_hist_raw if history else []
    outputs = history.output_hist if history else {}
    # the number of the cell running %copilot explain (IPython 9 counts up before a cell
    # runs, IPython 8 after: the running cell's result knows); without history, none
    running = getattr(shell.displayhook, "exec_result", None)
    current = getattr(running, "execution_count", None) or len(inputs)
    cell, given = _explain_target(args.cell, args.name)
    cell = cell if cell is not None else current - 1
    if not 0 < cell < min(current, len(inputs)):
        last = min(current, len(inputs)) - 1
        raise _Failure(
            f"no cell In[{cell}] to explain: "
            + (f"the cells run so far are In[1] to In[{last}]" if last > 0 else "no cell ran yet")
        )
    result = summarize(outputs[cell]) if cell in outputs else None
    prompt = explain_prompt(cell, inputs[cell], result, magics.errors.get(cell))
    name = magics._prompt_target(given, "%copilot explain")
    session = magics._pick_session(name, _context_args(given, args.model))
    magics._send_from_cell(session, prompt, "markdown", args)


def _describe_tools(name: str, setting: ToolSetting) -> str:
    """One line saying which notebook tools session ``name`` has in this kernel."""
    if not setting.enabled:
        return f"session {name}: notebook tools off (%copilot tools {name} on turns them on)"
    run = (
        "run_code on (each run waits for your approval)"
        if setting.allow_run_code
        else "run_code off (--allow-run-code turns it on)"
    )
    return (
        f"session {name}: notebook tools on in this kernel (list_variables, describe_variable, "
        f"read_cell); {run}"
    )


# -- hints in the magics' terms ----------------------------------------------------------------


def explain(error: CopilotError) -> str:
    """The one-line message for ``error``, with a hint a notebook user can follow."""
    if isinstance(error, SessionNotFoundError):
        name = error.session_id
        return (
            f"no session {name!r}: %copilot list shows the sessions; "
            f"%copilot new {name} (or %%copilot {name}) creates it"
        )
    if isinstance(error, SessionExistsError):
        name = error.session_id
        return f"session {name!r} already exists: %copilot use {name} makes it current"
    if isinstance(error, VisionNotSupportedError):
        return error.describe("%copilot model NAME MODEL switches a session's model")
    if isinstance(error, AttachmentTooLargeError):
        return error.describe()
    if isinstance(error, UnroutableModelError):
        return (
            f"{error.detail}. %copilot models lists the usable models; or set a fallback "
            "model (fallback_model in config.toml, or COPILOT_JUPYTER_FALLBACK_MODEL) and "
            "restart the kernel"
        )
    return str(error)


_EMPTY_BODY = (
    "%%copilot: the cell body is the prompt, and it is empty; write the prompt on the lines "
    "below the %%copilot line (%copilot help lists the commands of the one-% line magic)"
)
_CELL_MAGIC = re.compile(r"^%%copilot\b")
#: a line that is only an nbval marker comment (``# NBVAL_IGNORE_OUTPUT``, ``# NBVAL_SKIP``):
#: a tested notebook marks a %%copilot cell with it visibly, and it is not part of the prompt
_NBVAL_MARKER = re.compile(r"^[ \t]*#[ \t]*NBVAL_[A-Z_]+[ \t]*(?:\n|$)", re.MULTILINE)


def _keep_empty_body(lines: list[str]) -> list[str]:
    """An input transformer: a ``%%copilot`` cell with no body gets an empty line as its body.

    IPython refuses a cell magic with an empty body before the magic runs, suggesting the
    line magic (``%copilot NAME`` is not a command); with a body of one empty line the magic
    itself says that the body is the prompt.
    """
    if len(lines) == 1 and _CELL_MAGIC.match(lines[0]):
        return [lines[0] if lines[0].endswith("\n") else lines[0] + "\n", "\n"]
    return lines


# -- the extension ------------------------------------------------------------------------------


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """Register the magics (``%load_ext copilot_jupyter``). The client starts on first use."""
    magics = CopilotMagics(shell=ipython)
    ipython.register_magics(magics)
    if _keep_empty_body not in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.append(_keep_empty_body)
    # observe (never replace) how cells end: {Err}, {Err[n]}, %copilot fix and explain
    ipython.events.register("post_run_cell", magics.errors.observe)
    # observe (never replace) what cells display: -a fig and -a Out[n]
    magics.figures.attach()


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    """Remove the magics and stop the client (``%unload_ext copilot_jupyter``)."""
    manager = ipython.magics_manager
    if _keep_empty_body in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.remove(_keep_empty_body)
    instance = manager.registry.pop(CopilotMagics.__name__, None)
    if instance is not None:
        observe = instance.errors.observe
        if observe in ipython.events.callbacks["post_run_cell"]:
            ipython.events.unregister("post_run_cell", observe)
        instance.figures.detach()
    for kind in ("line", "cell"):
        manager.magics[kind].pop("copilot", None)
    if instance is not None and instance in ipython.configurables:
        ipython.configurables.remove(instance)
    previous = reset_state(None)
    if previous is not None:
        previous.client.stop(timeout=5)
