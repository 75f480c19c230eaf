"""Markdown to safe HTML for the panel's transcript, with markdown-it-py (CommonMark).

CommonMark gets lists right where a hand-written renderer does not: a numbered list whose items
are separated by blank lines, hold a paragraph or a nested list, or resume after a code block
(``<ol start="4">``) keeps its numbers, as in a notebook's Markdown cell.

Safety: raw HTML is off (a ``<script>`` in a prompt or a reply shows as text), images are off
(a reply cannot make the browser fetch a URL), and links keep markdown-it's own URL check
(no ``javascript:``, ``vbscript:``, ``file:`` or non-image ``data:`` links) and open in a new
tab with ``rel="noopener noreferrer nofollow"``. Headings are shifted to ``<h4>``-``<h6>``:
a reply is not a page title.

>>> render_markdown("**hi** <script>")
'<p><strong>hi</strong> &lt;script&gt;</p>'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

__all__ = ["render_markdown"]


def _heading_open(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    level = min(int(tokens[idx].tag[1]) + 3, 6)
    return f"<h{level}>"


def _heading_close(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    level = min(int(tokens[idx].tag[1]) + 3, 6)
    return f"</h{level}>"


def _link_open(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    token.attrSet("target", "_blank")
    token.attrSet("rel", "noopener noreferrer nofollow")
    return self.renderToken(tokens, idx, options, env)


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "breaks": True})
    md.enable(["table", "strikethrough"])
    md.disable("image")
    md.add_render_rule("heading_open", _heading_open)
    md.add_render_rule("heading_close", _heading_close)
    md.add_render_rule("link_open", _link_open)
    return md


_MD = _parser()


def render_markdown(text: str) -> str:
    """Render Markdown (CommonMark plus tables) to HTML; every character of ``text`` is escaped.

    Newlines inside a paragraph become line breaks (chat replies break lines on purpose).
    """
    return _MD.render(text).rstrip("\n")
