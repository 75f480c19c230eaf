"""The command line, run as users run it: ``python -m copilot ...`` in a subprocess.

Each test has its own store (``COPILOT_JUPYTER_HOME``, set by the autouse fixture in
conftest.py and inherited by the subprocess); the echo model answers.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from copilot import CopilotClient, EventType
from copilot.__main__ import build_parser

pytestmark = pytest.mark.timeout(120)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m copilot ARGS`` and return the finished process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "copilot", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def home() -> str:
    return os.environ["COPILOT_JUPYTER_HOME"]


def stored(name: str) -> list[str]:
    """The event types stored for session ``name`` (read without opening it)."""
    client = CopilotClient(base_directory=home())
    try:
        return [e.type for e in client.get_messages(name)]
    finally:
        client.stop()


def session_names() -> list[str]:
    client = CopilotClient(base_directory=home())
    try:
        return [s["sessionId"] for s in client.list_sessions()]
    finally:
        client.stop()


# -- help -------------------------------------------------------------------------------------


def test_help_is_plain_text_and_every_argument_has_help() -> None:
    wide = {"COLUMNS": "200"}  # one line per argument, so each line holds its help
    top = cli("--help", env=wide)
    assert top.returncode == 0
    for command in ("demo", "list", "send", "history", "delete", "rename", "search"):
        assert re.search(rf"^\s+{command}\s+\S", top.stdout, re.M), command  # with its help
    texts = [top.stdout]
    for command in ("demo", "list", "send", "history", "delete", "search"):
        shown = cli(command, "--help", env=wide)
        assert shown.returncode == 0 and f"usage: python -m copilot {command}" in shown.stdout
        texts.append(shown.stdout)
    assert not any("``" in text or ":func:" in text for text in texts)  # no reST markup
    send_help = texts[3]
    for argument, help_text in [
        ("name", "the session's name"),
        ("prompt", "the prompt (quote it:"),
        ("-m MODEL, --model MODEL", "the model, e.g. gpt-4.1,"),
    ]:
        after = send_help.split(f"\n  {argument}", 1)[1]
        assert after.split(maxsplit=len(help_text.split()))[: len(help_text.split())] == (
            help_text.split()
        ), argument  # the argument's own help text follows it
    assert "-n N" in texts[4] and "last N exchanges" in texts[4]
    # and in the parser itself: no argument of any subcommand is without help
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        for action in sub._actions:
            assert action.help, (name, action.dest)


# -- send, list, history, delete --------------------------------------------------------------


def test_send_list_history_delete_round_trip() -> None:
    sent = cli("send", "notes", "Hello there", "-m", "echo")
    assert sent.returncode == 0, sent.stderr
    assert "echo: Hello there" in sent.stdout
    assert cli("send", "notes", "Second", "-m", "echo").returncode == 0
    listing = cli("list")
    assert listing.returncode == 0
    row = next(line.split() for line in listing.stdout.splitlines() if "notes" in line)
    assert row[:3] == ["notes", "echo", "4"]  # 2 prompts + 2 replies
    shown = cli("history", "notes")
    assert shown.stdout.splitlines() == [
        "[user] Hello there",
        "[echo] echo: Hello there",
        "[user] Second",
        "[echo] echo: Second",
    ]
    deleted = cli("delete", "notes")
    assert deleted.returncode == 0 and deleted.stdout.strip() == "deleted notes"
    assert session_names() == []


def test_rename_keeps_the_history_and_names_its_refusals_in_command_line_terms() -> None:
    assert cli("send", "notes", "Hello there", "-m", "echo").returncode == 0
    assert cli("send", "other", "Hi", "-m", "echo").returncode == 0
    renamed = cli("rename", "notes", "journal")
    assert renamed.returncode == 0 and renamed.stdout.strip() == "renamed notes to journal"
    assert sorted(session_names()) == ["journal", "other"]
    assert cli("history", "journal").stdout.splitlines() == [
        "[user] Hello there",
        "[echo] echo: Hello there",
    ]
    taken = cli("rename", "journal", "other")
    assert taken.returncode == 1
    assert taken.stderr.strip().endswith(
        "a session 'other' already exists: choose another name "
        "(`python -m copilot list` shows the stored sessions)"
    )
    missing = cli("rename", "notes", "x")
    assert missing.returncode == 1 and "no session 'notes'" in missing.stderr
    assert sorted(session_names()) == ["journal", "other"]


def test_send_attaches_files_and_refuses_bad_ones_before_making_anything(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("the marker is 42", encoding="utf-8")
    plot = tmp_path / "plot.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    sent = cli(
        "send",
        "files",
        "What is the marker?",
        "-m",
        "echo",
        "-a",
        str(notes),
        "--attach",
        str(plot),
    )
    assert sent.returncode == 0, sent.stderr
    client = CopilotClient(base_directory=home())
    try:
        prompt = next(e for e in client.get_messages("files") if e.type == EventType.USER_MESSAGE)
    finally:
        client.stop()
    assert [(a["displayName"], a["mimeType"]) for a in prompt.data["attachments"]] == [
        ("notes.txt", "text/plain"),
        ("plot.png", "image/png"),
    ]
    assert "the marker is 42" in sent.stdout  # echo repeats the text attachment it was sent
    missing = cli("send", "fresh", "hi", "-m", "echo", "-a", str(tmp_path / "nope.png"))
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("error: --attach: attachment file ")
    assert "does not exist" in missing.stderr
    binary = tmp_path / "data.bin"
    binary.write_bytes(b"\xff\xfe\x00\x01" * 8)
    refused = cli("send", "fresh", "hi", "-m", "echo", "-a", str(binary))
    assert refused.returncode == 1 and "--attach: " in refused.stderr
    # an image for a model that cannot see: refused, and the new session is not left behind
    blind = cli(
        "send",
        "fresh",
        "hi",
        "-m",
        "openai:gpt-3.5-turbo",
        "-a",
        str(plot),
        env={"OPENAI_API_KEY": "sk-test"},
    )
    assert blind.returncode == 1 and "--attach: " in blind.stderr, blind.stderr
    assert "cannot read images" in blind.stderr and "with -m MODEL" in blind.stderr
    assert "session.set_model" not in blind.stderr
    assert session_names() == ["files"]


def test_history_writes_nothing() -> None:
    assert cli("send", "quiet", "hi", "-m", "echo").returncode == 0
    before = stored("quiet")
    assert cli("history", "quiet").returncode == 0
    assert cli("history", "quiet", "-n", "1").returncode == 0
    assert cli("list").returncode == 0
    assert stored("quiet") == before
    assert EventType.SESSION_RESUME not in stored("quiet")
    metadata = CopilotClient(base_directory=home())
    try:
        assert metadata.get_session_metadata("quiet")["messageCount"] == 2
    finally:
        metadata.stop()


def test_history_n_shows_the_last_exchanges_and_refuses_zero_or_negative() -> None:
    for prompt in ("one", "two", "three"):
        assert cli("send", "count", prompt, "-m", "echo").returncode == 0
    last_two = cli("history", "count", "-n", "2")
    assert last_two.returncode == 0
    assert last_two.stdout.splitlines() == [
        "(1 earlier exchange(s) not shown)",
        "[user] two",
        "[echo] echo: two",
        "[user] three",
        "[echo] echo: three",
    ]
    assert cli("history", "count", "-n", "3").stdout.count("[user]") == 3
    assert cli("history", "count", "-n", "99").stdout.count("[user]") == 3
    for bad in ("0", "-1"):
        refused = cli("history", "count", "-n", bad)
        assert refused.returncode == 2
        assert refused.stdout == ""
        assert "usage: python -m copilot history" in refused.stderr
        assert "1 or more" in refused.stderr


# -- validation before anything is created ----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("send", "y", ""), "a prompt cannot be empty"),
        (("send", "y", "   "), "a prompt cannot be empty"),
        (("send", "a/b", "hi"), "cannot contain '/'"),
        (("send", "y", "hi", "-m", "gpt4.1"), "did you mean 'gpt-4.1'?"),
    ],
)
def test_send_checks_everything_before_creating_the_session(
    args: tuple[str, ...], message: str
) -> None:
    failed = cli(*args, env={"COPILOT_JUPYTER_FALLBACK_MODEL": ""})
    assert failed.returncode == 1
    assert message in failed.stderr and "Traceback" not in failed.stderr
    assert session_names() == []


# -- errors in this surface's terms -----------------------------------------------------------


def test_errors_give_hints_in_command_line_terms() -> None:
    missing = cli("history", "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "error: no session 'nope': `python -m copilot list` shows the stored sessions; "
        '`python -m copilot send nope "prompt"` creates it'
    )
    assert cli("delete", "nope").stderr == missing.stderr
    model = cli("send", "x", "hi", "-m", "gpt4.1", env={"COPILOT_JUPYTER_FALLBACK_MODEL": ""})
    assert "did you mean 'gpt-4.1'?" in model.stderr
    assert "COPILOT_JUPYTER_FALLBACK_MODEL=echo python -m copilot" in model.stderr
    assert "CopilotClient(" not in model.stderr and "client." not in missing.stderr


def test_usage_errors_show_the_subcommands_usage_and_a_quoting_hint() -> None:
    extra = cli("list", "--all")
    assert extra.returncode == 2
    assert extra.stderr.splitlines()[0] == "usage: python -m copilot list [-h]"
    assert "`python -m copilot list --help` lists its options" in extra.stderr
    spaced = cli("history", "my", "session")
    assert spaced.returncode == 2
    assert spaced.stderr.startswith("usage: python -m copilot history")
    assert 'must be quoted: "my session"' in spaced.stderr
    assert cli("send", "a").stderr.startswith("usage: python -m copilot send")


# -- the demo ---------------------------------------------------------------------------------


def test_demo_uses_a_throw_away_store_and_says_so(tmp_path: Path) -> None:
    ran = cli("demo", "-m", "echo")
    assert ran.returncode == 0, ran.stderr
    first = ran.stdout.splitlines()[0]
    assert first.startswith("The demo stores its sessions in ")
    store = Path(first.removeprefix("The demo stores its sessions in "))
    assert f"Removed the demo's throw-away store {store}." in ran.stdout
    assert not store.exists()
    assert "echo: Which language were we talking about?" in ran.stdout
    assert session_names() == []  # the user's own store is untouched

    kept = cli("demo", "-m", "echo", "--store", str(tmp_path / "demo"))
    assert kept.returncode == 0, kept.stderr
    assert f"stay in {tmp_path / 'demo'}: delete that folder" in kept.stdout
    client = CopilotClient(base_directory=tmp_path / "demo")
    try:
        assert sorted(s["sessionId"] for s in client.list_sessions()) == ["demo-go", "demo-python"]
    finally:
        client.stop()


# -- search -----------------------------------------------------------------------------------


def test_search_prints_a_table_of_hits_with_phrases_filters_and_limits() -> None:
    assert cli("send", "tables", "the pivot table is great", "-m", "echo").returncode == 0
    assert cli("send", "other", "a pivot of tables", "-m", "echo").returncode == 0
    phrase = cli("search", '"pivot table"')  # the shell hands the quotes on
    assert phrase.returncode == 0, phrase.stderr
    lines = phrase.stdout.splitlines()
    assert lines[0].split() == ["session", "when", "(UTC)", "who", "snippet"]
    rows = [line.split(None, 4) for line in lines[2:]]
    assert sorted((r[0], r[3], r[4]) for r in rows) == [
        ("tables", "assistant", "echo: the «pivot table» is great"),
        ("tables", "you", "the «pivot table» is great"),
    ]
    words = cli("search", "pivot", "table")  # loose words: every one must match
    assert {line.split()[0] for line in words.stdout.splitlines()[2:]} == {"tables"}
    either = cli("search", "pivot", "-s", "other")
    assert [line.split()[0] for line in either.stdout.splitlines()[2:]] == ["other", "other"]
    one = cli("search", "pivot", "-n", "1")
    assert len(one.stdout.splitlines()) == 3
    none = cli("search", "excel")
    assert none.returncode == 0 and none.stdout == "no matches\n"
    before = stored("tables")
    assert cli("search", "pivot").returncode == 0
    assert stored("tables") == before  # search reads only


def test_search_errors_are_one_line_in_command_line_terms() -> None:
    assert cli("send", "s", "hello", "-m", "echo").returncode == 0
    missing = cli("search", "hello", "-s", "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "error: no session 'nope': `python -m copilot list` shows the stored sessions; "
        '`python -m copilot send nope "prompt"` creates it'
    )
    unclosed = cli("search", '"pivot')
    assert unclosed.returncode == 1 and len(unclosed.stderr.splitlines()) == 1
    assert unclosed.stderr.startswith("error: bad search query: the quote at position 0")
    assert "python -m copilot search '\"pivot table\"'" in unclosed.stderr
    bad = cli("search", "NOT", "numpy")
    assert bad.returncode == 1 and "NOT needs a word before it" in bad.stderr
    assert "Traceback" not in bad.stderr + unclosed.stderr
    for args, message in [
        (("search", "--", "-"), "QUERY needs at least one word"),
        (("search", "x", "-n", "0"), "1 to 1000 (got 0)"),
        (("search", "x", "-n", "1001"), "1 to 1000 (got 1001)"),
        (("search",), "the following arguments are required: QUERY"),
    ]:
        refused = cli(*args)
        assert refused.returncode == 2, args
        assert refused.stderr.startswith("usage: python -m copilot search"), args
        assert message in refused.stderr, args


def test_search_help_explains_shell_quoting_for_phrases() -> None:
    shown = cli("search", "--help", env={"COLUMNS": "200"})
    assert shown.returncode == 0
    assert "python -m copilot search '\"pivot table\"' NOT excel" in shown.stdout
    assert "-s NAME, --session NAME" in shown.stdout and "best N hits" in shown.stdout


def test_search_on_a_postgresql_store(postgres_server: object) -> None:
    pg = {"COPILOT_JUPYTER_STORE": postgres_server.new_database(), "JUPYTERHUB_USER": "ann"}
    sent = cli("send", "pg", "a café on postgres", "-m", "echo", env=pg)
    assert sent.returncode == 0, sent.stderr
    shown = cli("search", "CAFE", env=pg)
    assert shown.returncode == 0, shown.stderr
    rows = sorted(line.split(None, 4) for line in shown.stdout.splitlines()[2:])
    assert [(r[0], r[3], r[4]) for r in rows] == [
        ("pg", "assistant", "echo: a «café» on postgres"),
        ("pg", "you", "a «café» on postgres"),
    ]
    assert cli("search", "cafe", env={**pg, "JUPYTERHUB_USER": "bob"}).stdout == "no matches\n"
    assert cli("search", "cafe").stdout == "no matches\n"  # the diskcache store: untouched
