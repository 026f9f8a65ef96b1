"""The simulator on a real socket: HTTP/1.1 with keep-alive, one daemon thread per connection.

Socket mode is where the faults are real: a hang holds the connection open without answering
(until the client's timeout fires), a drop closes it without a byte of answer. Requests are read
and answered by this module's own loop rather than through `do_<METHOD>` attribute lookups, and
each answer goes out in one write with TCP_NODELAY, which keeps a keep-alive client from
stalling on delayed ACKs.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

from ledger.simulator.core import Simulator
from ledger.simulator.messages import Fault, SimRequest, SimResponse

MAX_REQUEST_LINE = 65_536
MAX_BODY = 10 * 1024 * 1024
IDLE_TIMEOUT_S = 120.0


class SimServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer bound to one Simulator; `stop()` ends it and its connections."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = sim
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _SimRequestHandler)

    @property
    def origin(self) -> str:
        """`http://host:port` of the listening socket."""
        host, port = self.server_address[0], self.server_address[1]
        shown = host if isinstance(host, str) else host.decode()
        return f"http://{shown}:{port}"

    @property
    def base_url(self) -> str:
        """What to use as WEBEX_BASE_URL: the origin plus `/v1`."""
        return self.origin + "/v1"

    def start(self) -> None:
        """Serve in a background daemon thread."""
        # A short poll interval makes `stop()` take milliseconds rather than half a second.
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="webex-simulator",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, wake hanging handlers, close every open connection, free the port."""
        self.stopping.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
        with self._connections_lock:
            open_connections = list(self._connections)
        for connection in open_connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.server_close()

    def track(self, connection: socket.socket, *, add: bool) -> None:
        """Remember open connections so that `stop()` can close idle keep-alive ones."""
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


class _SimRequestHandler(BaseHTTPRequestHandler):
    """Reads requests off one connection and answers them from the Simulator."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S
    server: SimServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        self.server.track(self.connection, add=False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: object) -> None:
        """Silent: a benchmark run would otherwise print a line per request."""

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
            if len(self.raw_requestline) > MAX_REQUEST_LINE:
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                self.close_connection = True
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            self._answer()
        except (TimeoutError, OSError, ValueError):
            self.close_connection = True

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            raise ValueError("bad Content-Length")
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise ValueError("chunked body too large")
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _answer(self) -> None:
        body = self._read_body()
        split = urlsplit(self.path)
        host = self.headers.get("Host")
        request = SimRequest(
            method=self.command.upper(),
            path=unquote(split.path),
            query=tuple(parse_qsl(split.query, keep_blank_values=True)),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            origin=f"http://{host}" if host else self.server.origin,
        )
        outcome = self.server.sim.handle(request)
        if outcome.delay_s > 0 and self.server.stopping.wait(outcome.delay_s):
            self.close_connection = True
            return
        if isinstance(outcome, Fault):
            self._fail(outcome)
            return
        self._write(outcome)

    def _fail(self, fault: Fault) -> None:
        """No answer: hold the connection for `hang_s` if hanging, then close it unanswered."""
        if fault.kind == "hang":
            self.server.stopping.wait(fault.hang_s)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _write(self, response: SimResponse) -> None:
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = ""
        lines = [f"HTTP/1.1 {response.status} {reason}"]
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        lines.append(f"Content-Length: {len(response.body)}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + response.body)


def serve(sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> SimServer:
    """Start serving `sim` in a background thread; call `.stop()` on the result to end it."""
    server = SimServer(sim, host, port)
    server.start()
    return server


@contextlib.contextmanager
def running_server(sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `sim` for the duration of a `with` block; yields the base URL (ending in /v1)."""
    server = serve(sim, host, port)
    try:
        yield server.base_url
    finally:
        server.stop()
