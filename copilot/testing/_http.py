"""The HTTP plumbing the scripted test servers share: threads, connections, recording, SSE.

:class:`ScriptedServer` runs a stdlib ``ThreadingHTTPServer`` on a daemon thread, keeps the FIFO
script and the list of :class:`~copilot.testing.script.RecordedRequest`; :class:`BaseHandler`
reads bodies, records every request before answering it, writes JSON and SSE (one HTTP chunk
per event), and can drop a connection mid-response. A concrete server names its handler class
and implements :meth:`BaseHandler.route`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar

from .script import Fault, RecordedRequest, Reply

if TYPE_CHECKING:
    from typing import Self

__all__ = ["BaseHandler", "ScriptedServer"]


class _Abort(Exception):
    """Raised inside the handler to drop the connection silently."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self, addr: tuple[str, int], owner: ScriptedServer, handler: type[BaseHandler]
    ) -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(addr, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Swallow per-connection errors (client went away, ...): never print tracebacks."""


class BaseHandler(BaseHTTPRequestHandler):
    """Request handler base: lifecycle, recording, body reading, JSON and SSE writing."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    sys_version = ""
    server: _HTTPServer
    _request_id = ""

    # -- lifecycle --------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, *args: Any) -> None:
        """Silenced: request lines and headers (API keys) must never reach stdout/stderr."""

    def log_error(self, *args: Any) -> None:
        """Silenced as well."""

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except _Abort:
            self.close_connection = True
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True

    # -- dispatch ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        owner = self.server.owner
        received = time.monotonic()
        body = self._read_body()
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        owner._record(
            RecordedRequest(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                json=parsed,
                body=body,
                time=received,
                client=(str(self.client_address[0]), int(self.client_address[1])),
            )
        )
        path = self.path.split("?", 1)[0]
        if path.endswith("/") and len(path) > 1:
            path = path.rstrip("/")
        self.route(path, parsed)

    def route(self, path: str, body: Any) -> None:
        """Answer one request (``path`` without the query and trailing slash)."""
        raise NotImplementedError

    def _read_body(self) -> bytes:
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            parts = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise _Abort
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until blank line
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    # -- response helpers -------------------------------------------------------------------

    def _send_json(
        self,
        code: int,
        obj: Any,
        headers: Mapping[str, str] | None = None,
        raw: bytes | None = None,
    ) -> None:
        data = raw if raw is not None else json.dumps(obj, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        # headers + body in one write (one TCP segment for small answers)
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(data)
        self.flush_headers()

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header(self.request_id_header, self._request_id)
        # not flushed: the headers go out together with the first event
        self._headers_buffer.append(b"\r\n")

    #: the response header carrying the request id
    request_id_header: ClassVar[str] = "x-request-id"

    def _write(self, data: bytes) -> None:
        if getattr(self, "_headers_buffer", None):
            self._headers_buffer.append(data)
            self.flush_headers()
        else:
            self.wfile.write(data)

    def _send_event(self, data: str, *, end: bool = False, event: str | None = None) -> None:
        """Send one SSE event as one HTTP chunk (one write); ``end`` appends the terminator."""
        payload = b"data: " + data.encode() + b"\n\n"
        if event is not None:
            payload = b"event: " + event.encode() + b"\n" + payload
        tail = b"0\r\n\r\n" if end else b""
        self._write(b"%x\r\n%s\r\n%s" % (len(payload), payload, tail))

    def _end_stream(self) -> None:
        self._write(b"0\r\n\r\n")

    def _drop(self) -> None:
        """Close the TCP connection now (FIN), mid-response, and stop serving it."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        raise _Abort

    def _wait(self, seconds: float) -> None:
        if seconds > 0 and self.server.owner._stopping.wait(seconds):
            self._drop()


class ScriptedServer:
    """A scripted HTTP server on a daemon thread: lifecycle, script and recorded requests.

    * ``latency``: seconds before the first byte of every scripted answer.
    * ``chunk_delay``: seconds between consecutive SSE events of a stream.

    ``port=0`` picks a free port; read the actual one from :attr:`port` / :attr:`base_url` after
    :meth:`start`. Also a context manager. Every request, on any path, is appended to
    :attr:`requests` (thread-safe) before it is answered.
    """

    handler_class: ClassVar[type[BaseHandler]]
    #: the path of the API's main endpoint (``/v1/chat/completions``, ``/v1/messages``)
    endpoint: ClassVar[str]
    #: the prefix of :attr:`base_url` after ``http://host:port``
    url_suffix: ClassVar[str] = ""
    #: the prefix of request ids
    id_prefix: ClassVar[str] = "req_"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        chunk_delay: float = 0.0,
    ) -> None:
        self.host = host
        self.port = port
        self.latency = latency
        self.chunk_delay = chunk_delay
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._script: deque[Reply | Fault] = deque()
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Where the SDK's ``base_url`` should point."""
        return f"http://{self.host}:{self.port}{self.url_suffix}"

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._httpd is not None

    def start(self) -> Self:
        """Bind and start serving on a daemon thread; returns ``self``. Idempotent."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer((self.host, self.port), self, self.handler_class)
        self.port = int(httpd.server_address[1])
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open (keep-alive, hanging or streaming) connections. Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with httpd.connections_lock:
            conns = list(httpd.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_forever(self) -> None:
        """Start (if needed) and block until :meth:`stop` is called or KeyboardInterrupt."""
        self.start()
        try:
            while self._httpd is not None and not self._stopping.wait(0.5):
                pass
        finally:
            self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.base_url} {state}, {len(self._script)} scripted>"

    # -- scripting --------------------------------------------------------------------------

    def enqueue(self, *responses: Reply | Fault) -> None:
        """Append replies/faults to the FIFO script; each valid request pops one item (when
        the script is empty the server answers ``"echo: " + <last user message>``)."""
        for r in responses:
            if not isinstance(r, (Reply, Fault)):
                raise TypeError(f"expected Reply or Fault, got {type(r).__name__}")
        with self._lock:
            self._script.extend(responses)

    @property
    def pending(self) -> int:
        """Number of script items not consumed yet."""
        with self._lock:
            return len(self._script)

    def reset(self) -> None:
        """Forget recorded requests and pending script items."""
        with self._lock:
            self._script.clear()
            self.requests.clear()

    @property
    def last_request(self) -> RecordedRequest | None:
        """The most recent recorded request, or ``None``."""
        with self._lock:
            return self.requests[-1] if self.requests else None

    def _endpoint_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r.method == "POST" and r.path.split("?")[0].rstrip("/") == self.endpoint
            ]

    # -- internals used by the handler ------------------------------------------------------

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)

    def _next_script_item(self) -> Reply | Fault | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    def _next_id(self) -> str:
        return f"{self.id_prefix}{next(self._ids):08d}"
