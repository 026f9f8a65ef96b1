"""The last hop of every request to Webex: persistent HTTP/1.1 connections, kept lean.

Why it exists: at the default concurrency httpx's `Client` and its connection pool cost about
2 ms of CPU per request (URL parsing and merging, header objects, a scan of every pooled
connection per request), four times the whole budget of a request. Webex calls are all of one
shape: one origin, HTTP/1.1 keep-alive, small JSON bodies, no redirects followed, no cookies.
So `KeepAliveWire` sends them over a stack of plain sockets, writes each request in one send
and reads its answer with a parser of that one shape (`_Connection`): the standard library's
`http.client` reads headers through the e-mail parser, which cost more than the rest of the
exchange. It hands back an `HttpAnswer` (`ledger.responses`); statuses, errors and retries are
decided exactly as before (`ledger.connection_client`).

* **Failures keep their meaning.** Errors are raised as the httpx exceptions httpx itself would
  raise, because "could the request have been applied?" hangs on their type: `ConnectError` and
  `ConnectTimeout` before a byte of the request left; `WriteError`, `WriteTimeout`,
  `ReadTimeout`, `ReadError` and `RemoteProtocolError` after.
* **A connection is reused only when it is idle and still open.** An idle connection the server
  closed (or wrote to) reads as readable; it is dropped, not reused. One whose answer says it
  will close, or ends at the close, or left bytes nobody asked for, is not kept either.
* **Answers are read as HTTP/1.1 says.** A body by `Content-Length`, by chunks, or up to the
  close; none for HEAD, 1xx, 204 and 304; interim 1xx answers skipped. Anything else (a
  malformed status line or header, a short body, a head past `MAX_HEAD`) is the
  `RemoteProtocolError` httpx would raise. A body in a `Content-Encoding` is decoded by httpx,
  as before.
* **Same trust as httpx.** TLS uses `httpx.create_ssl_context()` (certifi, or SSL_CERT_FILE /
  SSL_CERT_DIR from the environment). `proxied()` says when the environment routes the origin
  through a proxy: then the client sends through httpx, which speaks to proxies.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import threading
import urllib.request
from collections.abc import Sequence
from typing import Final

import httpx

from ledger.responses import HttpAnswer

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_READ_SIZE: Final = 65_536
# The most bytes of status line and headers an answer may have, and lines of a chunk's trailer.
MAX_HEAD: Final = 65_536
MAX_TRAILER_LINES: Final = 100
_NO_BODY_STATUSES: Final = frozenset({204, 304})
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
# What a request target (any control character, space or DEL) or a header must not hold.
_NOT_IN_TARGET: Final = re.compile(r"[\x00-\x20\x7f]")
_NOT_IN_HEADER: Final = re.compile(r"[\r\n\x00]")


def proxied(url: httpx.URL) -> bool:
    """Whether the environment's proxy settings (HTTPS_PROXY, ALL_PROXY, NO_PROXY, …) apply."""
    proxies = urllib.request.getproxies()
    if not (proxies.get(url.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(url.host)


def _still_open(sock: socket.socket) -> bool:
    """An idle connection is fit to reuse when it has nothing to read on it.

    Anything readable on an idle HTTP/1.1 connection is the server's close (EOF) or bytes no
    request asked for: either way the connection cannot carry the next exchange.
    """
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


class KeepAliveWire:
    """Sends requests to one origin over persistent connections, one per request in flight.

    Thread-safe: a request takes the most recently used idle connection (or opens one) and
    gives it back when its answer has been read whole. At most `max_idle` are kept idle.
    """

    def __init__(
        self,
        origin: httpx.URL,
        *,
        timeout_s: float,
        max_idle: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if origin.scheme not in _DEFAULT_PORTS or not origin.host:
            raise ValueError("an http(s) origin is needed")
        self._https = origin.scheme == "https"
        self._host = origin.host
        self._port = origin.port or _DEFAULT_PORTS[origin.scheme]
        default_port = origin.port is None or origin.port == _DEFAULT_PORTS[origin.scheme]
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.host_header: Final = host if default_port else f"{host}:{self._port}"
        self._origin = f"{origin.scheme}://{self.host_header}"
        self._timeout_s = timeout_s
        self._max_idle = max(1, max_idle)
        self._ssl_context = (ssl_context or httpx.create_ssl_context()) if self._https else None
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def send(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
    ) -> HttpAnswer:
        """One exchange: `target` is origin-form (`/v1/people?email=…`); `headers` must not
        include Host (the wire adds it). Raises httpx's transport exceptions."""
        request = self._request_bytes(method, target, headers, body)
        connection = self._checkout()
        try:
            connection.write(request)
            status, reason, answer_headers, content, reusable = connection.read_answer(method)
        except BaseException:
            connection.close()
            raise
        if reusable:
            self._checkin(connection)
        else:
            connection.close()
        if answer_headers.get("content-encoding", "identity").lower() != "identity":
            content = httpx.Response(status, headers=answer_headers, content=content).content
        return HttpAnswer(status, reason, answer_headers, content, self._origin + target)

    def _request_bytes(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes | None
    ) -> bytes:
        if not target.startswith("/") or _NOT_IN_TARGET.search(target):
            raise httpx.WriteError(f"not a request target: {target[:200]!r}")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        for name, value in headers:
            if _NOT_IN_HEADER.search(name) or _NOT_IN_HEADER.search(value):
                raise ValueError(f"invalid header {name!r}")
            lines.append(f"{name}: {value}")
        if body is not None or method in _BODY_METHODS:
            lines.append(f"Content-Length: {len(body or b'')}")
        lines.append("\r\n")
        head = "\r\n".join(lines).encode("latin-1")
        return head + body if body else head

    # --- connections ---------------------------------------------------------------------------

    def _checkout(self) -> _Connection:
        while True:
            with self._lock:
                if self._closed:
                    raise httpx.ConnectError("the client is closed")
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._connect()
            if _still_open(connection.sock):
                return connection
            connection.close()

    def _checkin(self, connection: _Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(connection)
                return
        connection.close()

    def _connect(self) -> _Connection:
        sock: socket.socket | None = None
        try:
            sock = socket.create_connection((self._host, self._port), timeout=self._timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl_context is not None:
                sock = self._ssl_context.wrap_socket(sock, server_hostname=self._host)
        except TimeoutError as exc:
            if sock is not None:
                sock.close()
            raise httpx.ConnectTimeout(str(exc) or "connect timed out") from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake (ssl.SSLError)
            if sock is not None:
                sock.close()
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return _Connection(sock)


class _Connection:
    """One socket, and what it has read that no answer has taken yet."""

    __slots__ = ("_buffer", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    def close(self) -> None:
        self.sock.close()

    def write(self, request: bytes) -> None:
        try:
            self.sock.sendall(request)
        except TimeoutError as exc:
            raise httpx.WriteTimeout(str(exc) or "write timed out") from exc
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc

    def read_answer(self, method: str) -> tuple[int, str, dict[str, str], bytes, bool]:
        """Status, reason, headers, body, and whether the connection can carry another."""
        try:
            return self._read_answer(method)
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "read timed out") from exc
        except OSError as exc:  # reset by peer, …
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc

    def _read_answer(self, method: str) -> tuple[int, str, dict[str, str], bytes, bool]:
        while True:
            version, status, reason, headers = self._read_head()
            if not 100 <= status < 200:
                break  # an interim answer (100 Continue, …) precedes the real one
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep = "close" not in tokens and (version == "HTTP/1.1" or "keep-alive" in tokens)
        if method == "HEAD" or status in _NO_BODY_STATUSES:
            content = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            content = self._read_chunked()
        elif "content-length" in headers:
            length = headers["content-length"].split(",")[0].strip()
            if not length.isdigit():
                raise httpx.RemoteProtocolError(f"bad Content-Length: {length[:40]!r}")
            content = self._take(int(length))
        else:
            content, keep = self._read_to_close(), False
        return status, reason, headers, content, keep and not self._buffer

    def _read_head(self) -> tuple[str, int, str, dict[str, str]]:
        end = self._find(b"\r\n\r\n", MAX_HEAD, first=True)
        raw = bytes(self._buffer[:end])
        del self._buffer[: end + 4]
        status_line, _, header_block = raw.partition(b"\r\n")
        parts = status_line.decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise httpx.RemoteProtocolError(f"bad status line: {status_line[:100]!r}")
        status = int(parts[1])
        if not 100 <= status <= 999:
            raise httpx.RemoteProtocolError(f"bad status: {status}")
        reason = parts[2].strip() if len(parts) > 2 else ""
        return (
            parts[0],
            status,
            reason.encode("ascii", "replace").decode("ascii"),
            (_headers(header_block)),
        )

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            end = self._find(b"\r\n", MAX_HEAD)
            size_text = bytes(self._buffer[:end]).split(b";")[0].strip()
            del self._buffer[: end + 2]
            try:
                size = int(size_text, 16)
            except ValueError:
                raise httpx.RemoteProtocolError(f"bad chunk size: {size_text[:40]!r}") from None
            if size == 0:
                break
            chunks.append(self._take(size))
            if self._take(2) != b"\r\n":
                raise httpx.RemoteProtocolError("a chunk not followed by CRLF")
        for _ in range(MAX_TRAILER_LINES):  # the trailer, up to its empty line
            end = self._find(b"\r\n", MAX_HEAD)
            del self._buffer[: end + 2]
            if end == 0:
                return b"".join(chunks)
        raise httpx.RemoteProtocolError("a chunked body's trailer does not end")

    def _read_to_close(self) -> bytes:
        while self._fill():
            pass
        content = bytes(self._buffer)
        self._buffer.clear()
        return content

    def _find(self, mark: bytes, limit: int, *, first: bool = False) -> int:
        """Where `mark` starts in what was read, reading until it shows (within `limit`)."""
        start = 0
        while (found := self._buffer.find(mark, start)) < 0:
            if len(self._buffer) > limit:
                raise httpx.RemoteProtocolError("an answer's head or chunk line is too long")
            start = max(0, len(self._buffer) - len(mark) + 1)
            if not self._fill():
                if first and not self._buffer:
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response."
                    )
                raise httpx.RemoteProtocolError("the server closed mid-answer")
        if found > limit:
            raise httpx.RemoteProtocolError("an answer's head or chunk line is too long")
        return found

    def _take(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not self._fill():
                raise httpx.RemoteProtocolError("the server closed mid-body")
        taken = bytes(self._buffer[:size])
        del self._buffer[:size]
        return taken

    def _fill(self) -> bool:
        """Read what the socket has (waiting for it); False at the server's close."""
        data = self.sock.recv(_READ_SIZE)
        self._buffer += data
        return bool(data)


def _headers(block: bytes) -> dict[str, str]:
    """Header lines as httpx's `headers.items()` gives them: lower-case names, a repeated
    name's values joined by ", ", decoded as ASCII, else UTF-8, else Latin-1."""
    for encoding in ("ascii", "utf-8", "latin-1"):
        try:
            text = block.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    headers: dict[str, str] = {}
    last = ""
    for line in text.split("\r\n") if block else ():
        if line[:1] in (" ", "\t") and last:  # an obsolete folded continuation
            headers[last] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name or " " in name:
            raise httpx.RemoteProtocolError(f"bad header line: {line[:100]!r}")
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
        last = name
    return headers
