"""Testing helpers for copilot-jupyter, usable by your own tests too.

Two wire-level test servers on 127.0.0.1 share one script vocabulary (:class:`Reply`,
:class:`Fault`, :class:`ToolCall`) and record every request they receive
(:class:`RecordedRequest`):

* :class:`ScriptedOpenAIServer`: ``/v1/chat/completions`` (and ``/v1/models``), for the
  ``openai`` SDK and every OpenAI-compatible client;
* :class:`ScriptedAnthropicServer`: ``/v1/messages``, for the ``anthropic`` SDK.
"""

from copilot.testing.anthropic_server import ScriptedAnthropicServer
from copilot.testing.openai_server import DEFAULT_MODEL, ScriptedOpenAIServer
from copilot.testing.script import (
    Fault,
    RecordedRequest,
    Reply,
    ToolCall,
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
    "ScriptedAnthropicServer",
    "ScriptedOpenAIServer",
    "ToolCall",
    "count_tokens",
    "default_reply_content",
    "message_text",
    "prompt_token_count",
    "split_chunks",
    "unused_port",
]
