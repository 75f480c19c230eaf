"""What the providers built on the Stainless-generated SDKs (``openai``, ``anthropic``) share.

:class:`_SDKProvider` holds the client life cycle (built lazily on the event loop that uses
it, ``max_retries=0``), timeouts (inactivity and a whole-call deadline), key handling (read
from the environment, scrubbed from every message), the translation of SDK exceptions into
:mod:`copilot.errors`, and the one streaming loop (check usable, deadline, client, call,
iterate, close, complete or cut off). A provider only builds the call's arguments
(``_request_kwargs``), opens the stream (``_open_stream``) and maps its SDK's events with a
:class:`StreamReader`. The decisions are documented in :mod:`copilot.providers.openai`.
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib
import importlib.util
import logging
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from ..errors import (
    AuthenticationError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderStatusError,
    ProviderTimeoutError,
    RateLimitError,
)
from .base import (
    Availability,
    Completion,
    ModelRequest,
    Provider,
    StreamItem,
)

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "PLACEHOLDER_KEY",
    "StreamReader",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: sent as the API key to servers that need none (the SDK insists on some key)
PLACEHOLDER_KEY = "not-needed"

DEFAULT_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 5.0


def parse_retry_after(headers: Any, now: float | None = None) -> float | None:
    """The server's retry hint in seconds from response headers, or None.

    ``retry-after-ms`` (milliseconds, sent by OpenAI) wins over ``Retry-After``, which holds
    seconds or an HTTP date. Negative or unparsable values give None; a date in the past gives 0.
    """
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            ms = float(value)
        except ValueError:
            ms = -1.0
        if ms >= 0:
            return ms / 1000.0
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        current = time.time() if now is None else now
        return max(0.0, when.timestamp() - current)
    return seconds if seconds >= 0 else None


def _lookup_window(table: dict[str, int], model: str) -> int | None:
    """``table[model]``, else the entry whose name is the longest ``-``-bounded prefix."""
    name = model.rsplit("/", 1)[-1].lower()  # "openai/gpt-4.1" (GitHub) -> "gpt-4.1"
    if name in table:
        return table[name]
    best = None
    for known in table:
        if name.startswith(known + "-") and (best is None or len(known) > len(best)):
            best = known
    return table[best] if best is not None else None


class StreamReader(ABC):
    """Maps one SDK stream's events to stream items; a new reader serves each call."""

    @abstractmethod
    def feed(self, event: Any) -> Iterable[StreamItem]:
        """Read one SDK event; return the text deltas it carries (often none)."""

    @abstractmethod
    def cut_off(self) -> str | None:
        """Why the stream that just ended is incomplete, or None when it is complete."""

    @abstractmethod
    def completion(self, request: ModelRequest) -> Completion:
        """The reply's end: its text, tool calls, model, usage and finish reason."""


class _Deadline:
    """A whole call's deadline over the awaits of one stream, with one timer for all of them.

    ``run(make)`` awaits ``make()`` and raises :class:`TimeoutError` if the deadline passes
    first, as ``asyncio.timeout_at`` around each await would, but the timer is scheduled once
    per call rather than once per chunk (issue 12: a timer per chunk cost about 5 us, a tenth
    of the library's share of a short turn). The timer cancels the task only while it is
    suspended inside ``run``: if it fires between two awaits (the consumer handling a chunk,
    or a stream abandoned before its end), the next ``run`` raises at once, and nothing else
    the task does is ever cancelled by it. An outside cancel (an abort) stays a cancel, as
    with ``asyncio.timeout``. ``close()`` drops the timer. ``when`` None: no deadline.
    """

    __slots__ = ("_cancelled", "_expired", "_handle", "_loop", "_task", "_waiting", "_when")

    def __init__(self, when: float | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._when = when
        self._waiting = False  # the task is suspended inside run()
        self._expired = False  # the timer has fired
        self._cancelled = False  # the timer cancelled the task (delivered inside run())
        self._handle = None if when is None else self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._expired = True
        if self._waiting and self._task is not None:
            self._cancelled = True
            self._task.cancel()

    async def run(self, make: Callable[[], Awaitable[_T]]) -> _T:
        """Await ``make()``; :class:`TimeoutError` if the deadline passes first."""
        if self._when is None:
            return await make()
        if self._expired or self._loop.time() >= self._when:
            raise TimeoutError
        task = self._task
        cancelling = task.cancelling() if task is not None else 0
        awaitable = make()
        self._waiting = True
        try:
            return await awaitable
        except asyncio.CancelledError:
            # ours when the timer fired here and nobody else cancelled too (asyncio.timeout's
            # rule); an abort at the same moment stays an abort
            if self._cancelled and task is not None and task.uncancel() <= cancelling:
                raise TimeoutError from None
            raise
        finally:
            self._waiting = False

    def close(self) -> None:
        """Drop the timer (the call ended); idempotent."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class _SDKProvider(Provider):
    """Shared base of providers built on a Stainless-generated SDK (``openai``, ``anthropic``).

    Both SDKs have the same client options (``api_key``, ``base_url``, ``timeout``,
    ``max_retries``, ``close()``) and the same exception classes (``APIStatusError``,
    ``APIConnectionError``, ``APITimeoutError`` ...), so the client life cycle, timeouts, the
    deadline and the error translation live here once.
    """

    #: the SDK package (import name)
    sdk_module: ClassVar[str]
    #: the SDK's async client class (``AsyncOpenAI``, ``AsyncAnthropic``)
    client_class: ClassVar[str]
    #: environment variable holding the key, unless the ``api_key_env`` setting names another
    default_api_key_env: ClassVar[str | None] = None
    #: environment variable holding the base URL (after the ``base_url`` setting)
    base_url_env: ClassVar[str | None] = None
    #: base URL when none is configured (None: the SDK's own default)
    default_base_url: ClassVar[str | None] = None
    #: what to tell the user when the provider is not configured
    setup_hint: ClassVar[str] = ""

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    # -- configuration ----------------------------------------------------------------------

    @classmethod
    def sdk_installed(cls) -> bool:
        """Whether the SDK package can be imported (checked without importing it)."""
        try:
            return importlib.util.find_spec(cls.sdk_module) is not None
        except (ImportError, ValueError):
            return False

    def _sdk(self) -> Any:
        return importlib.import_module(self.sdk_module)

    @property
    def api_key_env(self) -> str | None:
        """The name of the environment variable holding the key."""
        return self.settings.get("api_key_env") or self.default_api_key_env

    def _key_is_set(self) -> bool:
        env = self.api_key_env
        return bool(env and os.environ.get(env, "").strip())

    def _configured_base_url(self) -> str | None:
        """The base URL from the settings or the environment, None when neither gives one."""
        url = self.settings.get("base_url")
        if not url and self.base_url_env:
            url = os.environ.get(self.base_url_env, "").strip() or None
        return str(url).rstrip("/") if url else None

    @property
    def base_url(self) -> str | None:
        """Where requests go (None: the SDK's default endpoint)."""
        return self._configured_base_url() or self.default_base_url

    def _is_configured(self) -> bool:
        """Whether the key/base URL configuration lets this provider serve requests."""
        return self._key_is_set()

    def availability(self) -> Availability:
        if not self.sdk_installed():
            return Availability(
                False, f"the {self.sdk_module!r} package is missing: {self.install_hint}"
            )
        if not self._is_configured():
            return Availability(False, self.setup_hint)
        return Availability(True)

    def _setting_float(self, name: str, default: float) -> float:
        value = self.settings.get(name)
        return default if value is None else float(value)

    def _timeout(self, request: ModelRequest | None = None) -> Any:
        """The SDK ``Timeout``: inactivity ``timeout`` (capped by the request's) and connect."""
        read = self._setting_float("timeout", DEFAULT_TIMEOUT)
        if request is not None and request.timeout is not None:
            read = min(read, float(request.timeout))
        connect = min(self._setting_float("connect_timeout", DEFAULT_CONNECT_TIMEOUT), read)
        return self._sdk().Timeout(read, connect=connect)

    def context_window(self, model: str) -> int:
        per_model = self.settings.get("context_windows") or {}
        if model in per_model:
            return int(per_model[model])
        if self.settings.get("context_window") is not None:
            return int(self.settings["context_window"])
        known = _lookup_window(self.known_context_windows(), model)
        return known if known is not None else self.default_context_window

    def known_context_windows(self) -> dict[str, int]:
        """Context windows of the models this provider knows (model name -> tokens)."""
        return {}

    def models(self) -> list[str]:
        return list(self.known_context_windows())

    def supports_tools(self, model: str) -> bool:
        """Every model of these APIs can call tools, unless the ``tools`` setting is False
        (for an OpenAI-compatible server whose model cannot)."""
        return bool(self.settings.get("tools", True))

    def _check_usable(self, request: ModelRequest) -> None:
        """Raise a (non-retryable) ProviderError naming the fix when the provider is unusable."""
        state = self.availability()
        if not state.usable:
            raise ProviderError(
                f"{self.name} model {request.model!r}: provider not usable: {state.reason}",
                provider=self.name,
                model=request.model,
                retryable=False,
            )

    # -- the SDK client ---------------------------------------------------------------------

    def _build_client(self, api_key: str) -> Any:
        """Create the SDK client (called on the event loop that will use it)."""
        kwargs: dict[str, Any] = {
            "api_key": api_key,
            "timeout": self._timeout(),
            "max_retries": 0,
        }
        if self.base_url:
            kwargs["base_url"] = self.base_url
        return getattr(self._sdk(), self.client_class)(**kwargs)

    def _client_for_this_loop(self) -> Any:
        """The SDK client, created on first use on the running loop.

        An HTTP connection pool belongs to the loop it was opened on: if the provider is used
        from another loop (the old one being gone), a fresh client is built for it.
        """
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            env = self.api_key_env
            key = (os.environ.get(env, "").strip() if env else "") or PLACEHOLDER_KEY
            self._client = self._build_client(key)
            self._client_loop = loop
            log.debug("%s: client created for %s", self.name, self.base_url or "the default URL")
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        self._client_loop = None
        if client is not None:
            try:
                await client.close()
            except Exception:  # closing is best effort; nothing useful to report
                log.debug("%s: error while closing the client", self.name, exc_info=True)

    # -- the streaming loop -----------------------------------------------------------------

    @abstractmethod
    def _request_kwargs(self, request: ModelRequest) -> dict[str, Any]:
        """The SDK call's arguments for ``request``."""

    @abstractmethod
    def _open_stream(self, client: Any, kwargs: dict[str, Any]) -> Awaitable[Any]:
        """Start the SDK's streaming call (an awaitable giving an async-iterable response)."""

    @abstractmethod
    def _reader(self, request: ModelRequest) -> StreamReader:
        """A fresh reader for one call's events."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        self._check_usable(request)
        deadline = _Deadline(self._deadline(request))
        try:
            client = self._client_for_this_loop()
            kwargs = self._request_kwargs(request)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s: streaming %r from %s", self.name, request.model, self._where())
            response = await self._call(
                lambda: self._open_stream(client, kwargs), request, deadline, started=False
            )
            reader = self._reader(request)
            events = response.__aiter__()
            try:
                while True:
                    try:
                        event = await self._call(events.__anext__, request, deadline, started=True)
                    except StopAsyncIteration:
                        break
                    for item in reader.feed(event):
                        yield item
            finally:
                try:
                    await response.close()
                except Exception:  # closing a finished or broken stream is best effort
                    log.debug("%s: error while closing a stream", self.name, exc_info=True)
        finally:
            deadline.close()  # (its timer never cancels the close above: see _Deadline)
        why = reader.cut_off()
        if why is not None:
            raise self._cut_off(request, why)
        yield reader.completion(request)

    # -- calling and error translation ------------------------------------------------------

    @staticmethod
    def _deadline(request: ModelRequest) -> float | None:
        if request.timeout is None:
            return None
        return asyncio.get_running_loop().time() + float(request.timeout)

    async def _call(
        self,
        make: Callable[[], Awaitable[_T]],
        request: ModelRequest,
        deadline: _Deadline,
        *,
        started: bool,
    ) -> _T:
        """Await ``make()`` within the deadline, translating every failure to a ProviderError.

        ``started`` says whether the response had begun (errors then mean a cut-off reply).
        ``StopAsyncIteration`` passes through: it is the normal end of a stream.
        """
        try:
            return await deadline.run(make)
        except (StopAsyncIteration, ProviderError):
            raise
        except Exception as exc:
            error = self._translate(exc, request, started=started)
            # keep the cause for debugging unless its text could show the key
            if not self._leaks_key(exc):
                raise error from exc
        # Raised outside the handler: "from None" would still keep the SDK's exception (and
        # the key in its text) reachable as error.__context__.
        raise error

    def _secrets(self) -> list[str]:
        keys = []
        env = self.api_key_env
        if env and os.environ.get(env, "").strip():
            keys.append(os.environ[env].strip())
        client_key = getattr(self._client, "api_key", None)
        if isinstance(client_key, str) and client_key and client_key != PLACEHOLDER_KEY:
            keys.append(client_key)
        return [k for k in keys if len(k) >= 4]

    def _scrub(self, text: str) -> str:
        for key in self._secrets():
            text = text.replace(key, "[redacted]")
        return text

    def _leaks_key(self, exc: BaseException) -> bool:
        seen = 0
        secrets = self._secrets()
        while exc is not None and seen < 10:
            text = f"{exc!s} {exc!r} {getattr(exc, 'body', '')!s}"
            if any(key in text for key in secrets):
                return True
            exc = exc.__cause__ or exc.__context__
            seen += 1
        return False

    def _where(self) -> str:
        url = self.base_url
        if not url:
            return "the default endpoint"
        parts = urlsplit(url)
        host = parts.hostname or url
        return f"{parts.scheme}://{host}:{parts.port}" if parts.port else f"{parts.scheme}://{host}"

    @staticmethod
    def _server_message(exc: Any) -> str:
        """The human part of an SDK status error: the body's error message if there is one."""
        body = getattr(exc, "body", None)
        if isinstance(body, dict):
            inner = body.get("error", body)
            if isinstance(inner, dict) and isinstance(inner.get("message"), str):
                return inner["message"]
            if isinstance(inner, str):
                return inner
        return str(getattr(exc, "message", "") or exc)

    @staticmethod
    def _http_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
        """(timeout, transport) exception classes of the HTTP libraries that are loaded."""
        timeouts: list[type] = []
        transports: list[type] = []
        for name in ("httpx2", "httpx"):
            module = sys.modules.get(name)
            if module is not None:
                timeouts.append(module.TimeoutException)
                transports.append(module.TransportError)
        anyio = sys.modules.get("anyio")
        if anyio is not None:
            transports += [anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError]
        return tuple(timeouts), tuple(transports)

    def _translate(
        self, exc: BaseException, request: ModelRequest, *, started: bool
    ) -> ProviderError:
        """Map one SDK/HTTP exception to the copilot error it means (the message is scrubbed)."""
        sdk = self._sdk()
        model = request.model
        where = self._where()

        def make(cls: type[ProviderError], message: str, **kwargs: Any) -> ProviderError:
            text = self._scrub(f"{self.name} model {model!r}: {message}")
            return cls(text, provider=self.name, model=model, **kwargs)

        http_timeouts, http_transports = self._http_errors()
        if isinstance(exc, (sdk.APITimeoutError, TimeoutError, *http_timeouts)):
            timeout = self._timeout(request)
            cause = exc.__cause__ or exc
            if request.timeout is not None and isinstance(exc, TimeoutError):
                message = f"no complete reply from {where} within {float(request.timeout):g} s"
            elif type(cause).__name__ == "ConnectTimeout":
                message = f"could not connect to {where} within {timeout.connect:g} s"
            elif started:
                message = f"{where} sent nothing for {timeout.read:g} s in the middle of the reply"
            else:
                message = f"{where} did not answer within {timeout.read:g} s"
            return make(ProviderTimeoutError, message)
        if isinstance(exc, (sdk.APIConnectionError, OSError, *http_transports)):
            cause = exc.__cause__ if isinstance(exc, sdk.APIConnectionError) else exc
            detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
            if started:
                return make(
                    ProviderResponseError,
                    f"the reply was cut off: the connection to {where} was lost mid-stream "
                    f"({detail})",
                )
            return make(ProviderConnectionError, f"cannot connect to {where} ({detail})")
        if isinstance(exc, sdk.APIStatusError):
            status = int(exc.status_code)
            message = self._server_message(exc)
            if started and status < 400:
                # an error event inside a 200 stream (e.g. "overloaded" mid-reply)
                return make(ProviderResponseError, f"the reply was cut off by an error: {message}")
            if status == 429:
                retry_after = parse_retry_after(getattr(exc.response, "headers", None))
                hint = f" (retry after {retry_after:g} s)" if retry_after is not None else ""
                return make(
                    RateLimitError,
                    f"rate limited by {where}{hint}: {message}",
                    retry_after=retry_after,
                    status_code=429,
                )
            if status in (401, 403):
                env = self.api_key_env
                fix = f"set {env} to a valid key" if env else "check the server's credentials"
                return make(
                    AuthenticationError,
                    f"{where} refused the credentials (HTTP {status}): {message}; {fix}",
                    status_code=status,
                )
            return make(
                ProviderStatusError, f"HTTP {status} from {where}: {message}", status_code=status
            )
        if isinstance(exc, sdk.APIError):  # an error event in the stream, a validation error
            return make(
                ProviderResponseError,
                f"the reply was cut off by an error from {where}: {self._server_message(exc)}",
            )
        if started and isinstance(exc, (ValueError, KeyError, TypeError, AttributeError)):
            # a chunk that is not JSON or not the expected shape
            return make(
                ProviderResponseError,
                f"the reply was cut off: {where} sent a malformed stream "
                f"({type(exc).__name__}: {exc})",
            )
        return make(ProviderError, f"call failed ({type(exc).__name__}: {exc})", retryable=False)

    def _cut_off(self, request: ModelRequest, why: str) -> ProviderResponseError:
        message = self._scrub(f"{self.name} model {request.model!r}: the reply was cut off: {why}")
        return ProviderResponseError(message, provider=self.name, model=request.model)
