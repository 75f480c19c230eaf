"""Testing helpers for copilot-jupyter, usable by your own tests too.

:class:`ScriptedOpenAIServer` is a standard-library-only, OpenAI-compatible HTTP server whose
``/v1/chat/completions`` answers follow a script of :class:`Reply` and :class:`Fault` items.
"""

from copilot.testing.openai_server import (
    DEFAULT_MODEL,
    Fault,
    RecordedRequest,
    Reply,
    ScriptedOpenAIServer,
    count_tokens,
    default_reply_content,
    message_text,
    prompt_token_count,
    split_chunks,
    unused_port,
)

__all__ = [
    "DEFAULT_MODEL",
    "Fault",
    "RecordedRequest",
    "Reply",
    "ScriptedOpenAIServer",
    "count_tokens",
    "default_reply_content",
    "message_text",
    "prompt_token_count",
    "split_chunks",
    "unused_port",
]
