"""A session's transcript: its exchanges folded from the event log, as Markdown, JSON or a notebook.

:func:`copilot.history.exchanges_of` (the one fold of events every reader uses) reads a
session's stored events into :class:`~copilot.history.Exchange` records, one per prompt, in
log order. An exchange replaced by a re-run cell (``user.message.data.replaces``)
is left out, as it is from the model's context; the event log itself keeps it. Failed and
aborted exchanges are kept and marked, so the transcript shows what the user saw.

>>> exchanges = exchanges_of(session.get_messages())
>>> text = to_markdown("chat", exchanges)
>>> export_session("chat", client.get_messages("chat"), "chat.ipynb", client.get_session_metadata("chat"))
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from copilot import Event, InvalidArgumentError
from copilot.history import Exchange, ExchangeStatus, exchanges_of

__all__ = ["EXPORT_FORMATS", "export_session", "to_markdown"]


def _reply_markdown(exchange: Exchange) -> str:
    if exchange.status is ExchangeStatus.ERROR:
        return f"*error: {exchange.error}*"
    if exchange.status is ExchangeStatus.PENDING:
        return "*(no reply yet)*"
    reply = exchange.reply
    if exchange.status is ExchangeStatus.ABORTED:
        reply = f"{reply}\n\n*(aborted)*" if reply else "*(aborted before any reply)*"
    return reply


def to_markdown(name: str, exchanges: list[Exchange], *, omitted: int = 0) -> str:
    """The exchanges as a Markdown transcript titled with the session's name."""
    lines = [f"## Session `{name}`", ""]
    if omitted:
        lines += [f"*{omitted} earlier exchange(s) not shown*", ""]
    if not exchanges:
        lines.append("*no exchanges yet*")
    for number, exchange in enumerate(exchanges, start=omitted + 1):
        lines += [
            f"**[{number}] You:**",
            "",
            exchange.prompt,
            "",
            f"**[{number}] {exchange.model or 'assistant'}:**",
            "",
            _reply_markdown(exchange),
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def _to_md(
    name: str, metadata: Mapping[str, Any], exchanges: list[Exchange], events: list[Event]
) -> str:
    return to_markdown(name, exchanges)


def _to_json(
    name: str, metadata: Mapping[str, Any], exchanges: list[Exchange], events: list[Event]
) -> str:
    document = {
        "session": dict(metadata),
        "exchanges": [e.to_dict() for e in exchanges],
        # the whole log, replaced exchanges included: an export is also an audit record
        "events": [e.to_dict() for e in events],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _to_ipynb(
    name: str, metadata: Mapping[str, Any], exchanges: list[Exchange], events: list[Event]
) -> str:
    try:
        import nbformat
        from nbformat.v4 import new_markdown_cell, new_notebook
    except ImportError:  # pragma: no cover - nbformat comes with Jupyter
        raise InvalidArgumentError(
            "exporting to .ipynb needs the nbformat package: pip install nbformat"
        ) from None
    cells = [new_markdown_cell(f"# Session `{name}`\n\nmodel: `{metadata.get('model')}`")]
    for exchange in exchanges:
        cells.append(new_markdown_cell(f"**You:**\n\n{exchange.prompt}"))
        label = exchange.model or "assistant"
        cells.append(new_markdown_cell(f"**{label}:**\n\n{_reply_markdown(exchange)}"))
    notebook = new_notebook(cells=cells, metadata={"copilot": {"session": dict(metadata)}})
    nbformat.validate(notebook)
    return nbformat.writes(notebook)


_WRITERS = {".md": _to_md, ".json": _to_json, ".ipynb": _to_ipynb}
#: the file suffixes ``%copilot export`` understands
EXPORT_FORMATS = tuple(_WRITERS)


def export_session(
    session_id: str,
    events: list[Event],
    path: str | Path,
    metadata: Mapping[str, Any],
    *,
    create_folders: bool = False,
) -> Path:
    """Write a session's transcript to ``path``; its suffix (.md, .json, .ipynb) picks the format.

    The file's folder must exist, unless ``create_folders`` (a typo in a path should not
    silently make a tree of folders). Returns the path written. Raises
    :class:`copilot.InvalidArgumentError` for another suffix, a missing folder, or a folder
    where the file should be.
    """
    path = Path(path).expanduser()
    writer = _WRITERS.get(path.suffix.lower())
    if writer is None:
        raise InvalidArgumentError(
            f"cannot export to {path.name!r}: the file name must end in "
            + ", ".join(EXPORT_FORMATS)
        )
    folder = path.parent
    if not folder.is_dir():
        if folder.exists() or not create_folders:
            what = "is not a folder" if folder.exists() else "does not exist"
            raise InvalidArgumentError(
                f"cannot export to {str(path)!r}: {str(folder)!r} {what}; create the folder "
                "first, or add --mkdir to create it"
            )
        folder.mkdir(parents=True)
    if path.is_dir():
        raise InvalidArgumentError(f"cannot export to {str(path)!r}: it is a folder")
    text = writer(session_id, metadata, exchanges_of(events), events)
    path.write_text(text, encoding="utf-8")
    return path
