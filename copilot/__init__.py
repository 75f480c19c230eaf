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
    TurnAbortedError,
    TurnError,
    TurnTimeoutError,
)
from .events import Event, EventType
from .session import AsyncSession, Session

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
    "SessionNotFoundError",
    "StoreConnectionError",
    "StoreCorruptedError",
    "StoreError",
    "StoreFullError",
    "StorePermissionError",
    "StoreSchemaError",
    "StoreTimeoutError",
    "TurnAbortedError",
    "TurnError",
    "TurnTimeoutError",
    "__version__",
]
