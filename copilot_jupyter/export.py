"""A session's transcript: its exchanges folded from the event log, as Markdown, JSON or a notebook.

:func:`copilot.history.exchanges_of` (the one fold of events every reader uses) reads a
session's stored events into :class:`~copilot.history.Exchange` records, one per prompt, in
log order. An exchange replaced by a re-run cell (``user.message.data.replaces``)
is left out, as it is from the model's context; the event log itself keeps it. Failed and
aborted exchanges are kept and marked, so the transcript shows what the user saw.

Attachments (issue 14) show under their prompt: with ``load_blob`` (e.g.
``client.get_attachment``) an .ipynb export carries each image as a markdown cell attachment
(``![name](attachment:name)``, the notebook stays one file) and a .md export writes each image
once into ``<stem>_files/<sha256[:16]>.<ext>`` beside it, linked relatively; text attachments,
and images without ``load_blob`` or no longer stored, are one line naming them.

>>> exchanges = exchanges_of(session.get_messages())
>>> text = to_markdown("chat", exchanges)
>>> export_session("chat", client.get_messages("chat"), "chat.ipynb", client.get_session_metadata("chat"))
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from copilot import Event, InvalidArgumentError
from copilot.history import Exchange, ExchangeStatus, exchanges_of

from .toolblocks import tool_blocks_html

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


#: reads an attachment's bytes by sha256 (``client.get_attachment``); None: not stored
BlobLoader = Callable[[str], "bytes | None"]
#: the Markdown that shows one stored image reference, or None to name it in a line
ImageLink = Callable[[Mapping[str, Any]], "str | None"]

#: characters kept in a notebook cell attachment's name (it is part of a Markdown link)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _alt(label: str) -> str:
    """``label`` as a Markdown image's alt text (brackets escaped)."""
    return label.replace("[", "\\[").replace("]", "\\]")


_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}


def _attachment_note(reference: Mapping[str, Any]) -> str:
    name = reference.get("displayName", "attachment")
    size = reference.get("size")
    what = f"{reference.get('mimeType', '?')}, {size:,} bytes" if isinstance(size, int) else "?"
    return f"*📎 {name} ({what})*"


def _attachments_markdown(exchange: Exchange, image_link: ImageLink | None) -> list[str]:
    """The lines showing an exchange's attachments (nothing when it has none)."""
    lines: list[str] = []
    for reference in exchange.attachments:
        shown = None
        if image_link is not None and reference.get("type") == "image":
            shown = image_link(reference)
        lines += [shown or _attachment_note(reference), ""]
    return lines


def _tools_markdown(exchange: Exchange) -> list[str]:
    """The exchange's tool calls as collapsed ``<details>`` blocks, each call with its
    arguments, outcome and result (cut: :data:`copilot_jupyter.toolblocks.SHOWN_TOOL_CHARS`),
    as the cell and the panel show them; Markdown viewers and notebooks render the HTML."""
    blocks = tool_blocks_html(exchange.tool_calls) if exchange.tool_calls else ""
    return [blocks, ""] if blocks else []


def to_markdown(
    name: str,
    exchanges: list[Exchange],
    *,
    omitted: int = 0,
    image_link: ImageLink | None = None,
) -> str:
    """The exchanges as a Markdown transcript titled with the session's name; attachments
    are named under their prompt (images shown through ``image_link``, if given)."""
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
            *_attachments_markdown(exchange, image_link),
            *_tools_markdown(exchange),
            f"**[{number}] {exchange.model or 'assistant'}:**",
            "",
            _reply_markdown(exchange),
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def _to_md(
    name: str,
    metadata: Mapping[str, Any],
    exchanges: list[Exchange],
    events: list[Event],
    path: Path,
    load_blob: BlobLoader | None,
) -> str:
    folder = path.with_name(f"{path.stem}_files")

    def link(reference: Mapping[str, Any]) -> str | None:
        sha = str(reference.get("sha256", ""))
        data = load_blob(sha) if load_blob is not None else None
        if data is None:
            return None
        file = folder / f"{sha[:16]}.{_EXTENSIONS.get(str(reference.get('mimeType')), 'bin')}"
        if not file.exists():
            folder.mkdir(exist_ok=True)
            file.write_bytes(data)
        label = _alt(str(reference.get("displayName", "image")))
        return f"![{label}]({quote(folder.name)}/{file.name})"

    return to_markdown(name, exchanges, image_link=link)


def _to_json(
    name: str,
    metadata: Mapping[str, Any],
    exchanges: list[Exchange],
    events: list[Event],
    path: Path,
    load_blob: BlobLoader | None,
) -> str:
    document = {
        "session": dict(metadata),
        "exchanges": [e.to_dict() for e in exchanges],
        # the whole log, replaced exchanges included: an export is also an audit record
        "events": [e.to_dict() for e in events],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _to_ipynb(
    name: str,
    metadata: Mapping[str, Any],
    exchanges: list[Exchange],
    events: list[Event],
    path: Path,
    load_blob: BlobLoader | None,
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
        files: dict[str, dict[str, str]] = {}

        def attach(
            reference: Mapping[str, Any], files: dict[str, dict[str, str]] = files
        ) -> str | None:
            data = load_blob(str(reference.get("sha256", ""))) if load_blob is not None else None
            if data is None:
                return None
            label = str(reference.get("displayName", "image"))
            key = f"{len(files) + 1}-{_UNSAFE.sub('_', label)}"
            files[key] = {str(reference.get("mimeType")): base64.b64encode(data).decode("ascii")}
            return f"![{_alt(label)}](attachment:{key})"

        shown = "\n".join(_attachments_markdown(exchange, attach)).strip()
        prompt = f"**You:**\n\n{exchange.prompt}" + (f"\n\n{shown}" if shown else "")
        cell = new_markdown_cell(prompt)
        if files:
            cell["attachments"] = files
        cells.append(cell)
        label = exchange.model or "assistant"
        tools = "\n".join(_tools_markdown(exchange))
        reply = f"**{label}:**\n\n{_reply_markdown(exchange)}"
        cells.append(new_markdown_cell(f"{tools}\n{reply}" if tools else reply))
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
    load_blob: BlobLoader | None = None,
) -> Path:
    """Write a session's transcript to ``path``; its suffix (.md, .json, .ipynb) picks the format.

    ``load_blob`` (``client.get_attachment``) reads attached images back, so the export shows
    them (see the module docstring); without it they are named only.

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
    text = writer(session_id, metadata, exchanges_of(events), events, path, load_blob)
    path.write_text(text, encoding="utf-8")
    return path
