"""Every error the ``copilot`` package raises on purpose.

The hierarchy::

    CopilotError
    ├── InvalidArgumentError (also ValueError)      a malformed session id, an empty prompt, a bad option
    │   └── AttachmentError                         an attachment that cannot be sent (names why)
    │       ├── AttachmentNotFoundError (also FileNotFoundError) a file attachment's path is missing
    │       └── AttachmentTooLargeError             over the per-attachment cap; nothing was stored
    ├── InvalidArgumentTypeError (also TypeError)   a prompt or id that is not a string
    ├── ClientStateError                            the client is stopped, or used from its own event thread
    ├── ConfigError                                 the config file or a routing entry is malformed
    ├── SessionError
    │   ├── SessionNotFoundError (also LookupError) resume/delete of an id the store does not hold
    │   ├── SessionExistsError                      create_session with an id that is taken
    │   └── SessionClosedError                      use of a session after destroy()
    ├── ModelNotAvailableError                      no provider can serve the model (names the fix)
    │   ├── ToolsNotSupportedError (also ValueError) a session with tools on a model that cannot call them
    │   └── VisionNotSupportedError (also ValueError) an image attached for a model that cannot see
    ├── TurnError
    │   ├── TurnAbortedError                        the turn was aborted (abort(), destroy, kernel interrupt)
    │   ├── TurnTimeoutError (also TimeoutError)    send_and_wait() gave up waiting; the turn goes on
    │   └── ToolRoundLimitError                     the model kept calling tools past max_tool_rounds
    ├── ProviderError                               a model call failed (after any retries)
    │   ├── ProviderConnectionError                 connection refused, reset, DNS
    │   │   └── ProviderTimeoutError                no answer in time
    │   ├── ProviderStatusError                     the endpoint answered with an HTTP error status
    │   │   ├── AuthenticationError                 401/403: a missing or wrong API key
    │   │   └── RateLimitError                      429; ``retry_after`` holds the server's hint
    │   └── ProviderResponseError                   a malformed or cut-off stream
    └── StoreError                                  the event store cannot be read or written
        ├── StoreFullError                          the disk is full or a file-size limit was hit
        ├── StorePermissionError (also PermissionError) the store's directory is not writable
        ├── StoreCorruptedError                     a stored record is not what this package writes
        ├── StoreConnectionError                    the database cannot be reached or dropped us
        │   └── StoreTimeoutError                   no pooled connection came free in time
        └── StoreSchemaError                        the database's schema is newer than the package

Every ``sqlite3`` or ``OSError`` failure of the store is translated into a ``StoreError``
subclass at the store's boundary, once; its message names the store's directory and the fix.

Third-party exceptions (openai, anthropic, httpx, llama.cpp) are translated into these at the
provider boundary, once; nothing above catches them again.
"""

from __future__ import annotations

__all__ = [
    "AttachmentError",
    "AttachmentNotFoundError",
    "AttachmentTooLargeError",
    "AuthenticationError",
    "ClientStateError",
    "ConfigError",
    "CopilotError",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "ModelNotAvailableError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderResponseError",
    "ProviderStatusError",
    "ProviderTimeoutError",
    "RateLimitError",
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
    "ToolRoundLimitError",
    "ToolsNotSupportedError",
    "TurnAbortedError",
    "TurnError",
    "TurnTimeoutError",
    "VisionNotSupportedError",
]


class CopilotError(Exception):
    """Base class of every error raised on purpose by ``copilot``."""


class InvalidArgumentError(CopilotError, ValueError):
    """An argument has the right type but a value the API cannot accept."""


class AttachmentError(InvalidArgumentError):
    """An attachment cannot be sent: an unknown ``type``, bad base64, an unsupported kind of
    file. Raised before the turn is queued; nothing is stored."""


class AttachmentNotFoundError(AttachmentError, FileNotFoundError):
    """A ``{"type": "file"}`` attachment names a path that is not a readable file."""


class AttachmentTooLargeError(AttachmentError):
    """An attachment is over the per-attachment cap (``max_attachment_bytes``); nothing was
    stored. :meth:`describe` words it for a surface that has no way to raise the cap."""

    def __init__(self, message: str, *, size: int, limit: int, name: str = "") -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit
        self.name = name

    def describe(self) -> str:
        """The message without the API's way to raise the cap."""
        return (
            f"attachment {self.name!r} is {self.size:,} bytes, over the cap of {self.limit:,} "
            "bytes per attachment; nothing was stored. Attach a smaller file"
        )


class InvalidArgumentTypeError(CopilotError, TypeError):
    """An argument has the wrong type."""


class ClientStateError(CopilotError):
    """The client cannot do this in its current state (stopped, or called from its own thread)."""


class ConfigError(CopilotError):
    """The configuration file or a routing entry is malformed."""


class SessionError(CopilotError):
    """A problem with a session as a whole."""

    def __init__(self, message: str, session_id: str | None = None) -> None:
        super().__init__(message)
        self.session_id = session_id


class SessionNotFoundError(SessionError, LookupError):
    """No session with this id is stored."""

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"no session {session_id!r} in the store; client.list_sessions() lists the stored "
            "sessions, and client.get_session_metadata(id) returns None for a missing one",
            session_id,
        )

    def __str__(self) -> str:  # LookupError's KeyError-like repr quoting is not wanted here
        return self.args[0]


class SessionExistsError(SessionError):
    """A session with this id already exists."""

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"a session {session_id!r} already exists; resume it with "
            f"client.resume_session({session_id!r}) or choose another id",
            session_id,
        )


class SessionClosedError(SessionError):
    """The session object was destroyed; its data is still on disk."""

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"session {session_id!r} was destroyed in this client; its data is kept: "
            f"client.resume_session({session_id!r}) opens it again",
            session_id,
        )


class ModelNotAvailableError(CopilotError):
    """No provider can serve the requested model; the message names what would fix it."""

    def __init__(self, message: str, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model


class ToolsNotSupportedError(ModelNotAvailableError, ValueError):
    """The session has tools but its model cannot call them; the message names models that can."""


class VisionNotSupportedError(ModelNotAvailableError, ValueError):
    """An image is attached but the session's model cannot read images; the message names
    models that can. Raised before anything is stored or sent.

    ``images`` names the images, ``seeing`` the usable models that can see;
    :meth:`describe` words the message with another surface's way to switch models (the
    magics', the command line's, the panel's)."""

    def __init__(
        self,
        message: str | None = None,
        model: str | None = None,
        *,
        images: tuple[str, ...] = (),
        seeing: tuple[str, ...] = (),
    ) -> None:
        self.images, self.seeing = images, seeing
        super().__init__(message or self._words(model, "session.set_model(...)"), model)

    def describe(self, switch: str) -> str:
        """The message, with ``switch`` as the way to pick another model."""
        return self._words(self.model, switch)

    def _words(self, model: str | None, switch: str) -> str:
        images = self.images
        what = "is an image" if len(images) == 1 else "are images"
        seeing = ", ".join(self.seeing[:8]) or "none is usable now"
        return (
            f"{model} cannot read images, and {', '.join(map(repr, images))} {what}; nothing "
            f"was sent. Use a model that can see ({seeing}): {switch}, or attach text instead"
        )


class TurnError(CopilotError):
    """A turn did not produce a complete answer."""

    def __init__(self, message: str, message_id: str | None = None) -> None:
        super().__init__(message)
        self.message_id = message_id


class TurnAbortedError(TurnError):
    """The turn was aborted; any partial reply is stored in an ``abort`` event."""


class TurnTimeoutError(TurnError, TimeoutError):
    """``send_and_wait`` stopped waiting; the turn itself continues in the background."""


class ToolRoundLimitError(TurnError):
    """The model still asked for tools after ``max_tool_rounds`` rounds in one turn.

    Its last calls are recorded as rejected (so the history stays consistent) and the turn ends
    with this error; the session stays usable.
    """


class ProviderError(CopilotError):
    """A model call failed. ``retryable`` says whether trying again may help."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        if retryable is not None:
            self.retryable = retryable


class ProviderConnectionError(ProviderError):
    """The endpoint could not be reached (refused, reset, name resolution)."""

    retryable = True


class ProviderTimeoutError(ProviderConnectionError):
    """The endpoint did not answer in time."""


class ProviderStatusError(ProviderError):
    """The endpoint answered with an HTTP error status."""

    def __init__(self, message: str, *, status_code: int, **kwargs) -> None:
        kwargs.setdefault("retryable", status_code >= 500 or status_code in (408, 409))
        super().__init__(message, **kwargs)
        self.status_code = status_code


class AuthenticationError(ProviderStatusError):
    """The endpoint refused the credentials (HTTP 401 or 403)."""


class RateLimitError(ProviderStatusError):
    """HTTP 429. ``retry_after`` is the server's hint in seconds, when it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs) -> None:
        kwargs.setdefault("status_code", 429)
        kwargs.setdefault("retryable", True)
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ProviderResponseError(ProviderError):
    """The endpoint's answer was malformed or cut off."""

    retryable = True


class StoreError(CopilotError):
    """The event store cannot be read or written."""


class StoreCorruptedError(StoreError):
    """A stored record is not what this package writes (never unpickled, never trusted)."""


class StoreFullError(StoreError):
    """The disk holding the store is full, or a file-size limit stopped a write.

    Nothing half-written is kept; free space and the next write (or resume) goes on.
    """


class StorePermissionError(StoreError, PermissionError):
    """The store's directory or database cannot be written by this process."""


class StoreConnectionError(StoreError):
    """The store's database could not be reached or the connection broke.

    The operation in progress was rolled back (nothing half-written); the store reconnects by
    itself on the next call.
    """


class StoreTimeoutError(StoreConnectionError):
    """Every pooled connection stayed busy (or the server stayed away) for the pool's timeout.

    Not a ``TimeoutError``: ``send_and_wait`` reads a TimeoutError as its own wait running out.
    """


class StoreSchemaError(StoreError):
    """The database's schema is not one this package can use (newer, or not ours)."""
