"""copilot: named, persistent AI chat sessions with a diskcache event log.

>>> from copilot import CopilotClient
>>> client = CopilotClient()
>>> client.start()
>>> session = client.create_session(session_id="user-123-chat", model="gpt-4.1")
"""

from .client import AsyncCopilotClient, ClientState, CopilotClient
from .errors import (
    AuthenticationError,
    ClientStateError,
    ConfigError,
    CopilotError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    ModelNotAvailableError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderStatusError,
    ProviderTimeoutError,
    RateLimitError,
    SessionClosedError,
    SessionError,
    SessionExistsError,
    SessionNotFoundError,
    StoreConnectionError,
    StoreCorruptedError,
    StoreError,
    StoreFullError,
    StorePermissionError,
    StoreSchemaError,
    StoreTimeoutError,
    ToolRoundLimitError,
    ToolsNotSupportedError,
    TurnAbortedError,
    TurnError,
    TurnTimeoutError,
)
from .events import Event, EventType
from .session import AsyncSession, Session
from .tools import (
    PermissionHandler,
    PermissionRequest,
    PermissionRequestResult,
    SessionHooks,
    Tool,
    ToolInvocation,
    ToolResult,
    define_tool,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncCopilotClient",
    "AsyncSession",
    "AuthenticationError",
    "ClientState",
    "ClientStateError",
    "ConfigError",
    "CopilotClient",
    "CopilotError",
    "Event",
    "EventType",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "ModelNotAvailableError",
    "PermissionHandler",
    "PermissionRequest",
    "PermissionRequestResult",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderResponseError",
    "ProviderStatusError",
    "ProviderTimeoutError",
    "RateLimitError",
    "Session",
    "SessionClosedError",
    "SessionError",
    "SessionExistsError",
    "SessionHooks",
    "SessionNotFoundError",
    "StoreConnectionError",
    "StoreCorruptedError",
    "StoreError",
    "StoreFullError",
    "StorePermissionError",
    "StoreSchemaError",
    "StoreTimeoutError",
    "Tool",
    "ToolInvocation",
    "ToolResult",
    "ToolRoundLimitError",
    "ToolsNotSupportedError",
    "TurnAbortedError",
    "TurnError",
    "TurnTimeoutError",
    "__version__",
    "define_tool",
]
