"""The last hop of every request to Webex: persistent HTTP/1.1 connections, kept lean.

Why it exists: at the default concurrency httpx's `Client` and its connection pool cost about
2 ms of CPU per request (URL parsing and merging, header objects, a scan of every pooled
connection per request), four times the whole budget of a request. Webex calls are all of one
shape: one origin, HTTP/1.1 keep-alive, small JSON bodies, no redirects followed, no cookies.
So `KeepAliveWire` sends them over a stack of standard-library connections and hands back the
`httpx.Response` everything above it already reads; statuses, errors and retries are decided
exactly as before (`ledger.connection_client`).

* **Failures keep their meaning.** Errors are raised as the httpx exceptions httpx itself would
  raise, because "could the request have been applied?" hangs on their type: `ConnectError` and
  `ConnectTimeout` before a byte of the request left; `WriteError`, `WriteTimeout`,
  `ReadTimeout`, `ReadError` and `RemoteProtocolError` after.
* **A connection is reused only when it is idle and still open.** An idle connection the server
  closed (or wrote to) reads as readable; it is dropped, not reused. One whose answer says it
  will close is not kept either.
* **Same trust as httpx.** TLS uses `httpx.create_ssl_context()` (certifi, or SSL_CERT_FILE /
  SSL_CERT_DIR from the environment). `proxied()` says when the environment routes the origin
  through a proxy: then the client sends through httpx, which speaks to proxies.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import urllib.request
from collections.abc import Sequence
from typing import Final

import httpx

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def proxied(url: httpx.URL) -> bool:
    """Whether the environment's proxy settings (HTTPS_PROXY, ALL_PROXY, NO_PROXY, …) apply."""
    proxies = urllib.request.getproxies()
    if not (proxies.get(url.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(url.host)


def _still_open(connection: http.client.HTTPConnection) -> bool:
    """An idle connection is fit to reuse when it has a socket with nothing to read on it.

    Anything readable on an idle HTTP/1.1 connection is the server's close (EOF) or bytes no
    request asked for: either way the connection cannot carry the next exchange.
    """
    sock = connection.sock
    if sock is None:
        return False
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
        self._timeout_s = timeout_s
        self._max_idle = max(1, max_idle)
        self._ssl_context = (ssl_context or httpx.create_ssl_context()) if self._https else None
        self._idle: list[http.client.HTTPConnection] = []
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
    ) -> httpx.Response:
        """One exchange: `target` is origin-form (`/v1/people?email=…`); `headers` must not
        include Host (the wire adds it). Raises httpx's transport exceptions."""
        connection = self._checkout()
        try:
            self._write(connection, method, target, headers, body)
            answer, content = self._read(connection)
        except BaseException:
            connection.close()
            raise
        if answer.will_close:
            connection.close()
        else:
            self._checkin(connection)
        return httpx.Response(
            answer.status,
            headers=answer.getheaders(),
            content=content,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": answer.reason.encode("ascii", "replace"),
            },
        )

    # --- connections ---------------------------------------------------------------------------

    def _checkout(self) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                if self._closed:
                    raise httpx.ConnectError("the client is closed")
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._connect()
            if _still_open(connection):
                return connection
            connection.close()

    def _checkin(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(connection)
                return
        connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection
        if self._https:
            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout_s, context=self._ssl_context
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
        try:
            connection.connect()
        except TimeoutError as exc:
            connection.close()
            raise httpx.ConnectTimeout(str(exc) or "connect timed out") from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake (ssl.SSLError)
            connection.close()
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        if connection.sock is not None:
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    # --- one exchange ----------------------------------------------------------------------------

    def _write(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
    ) -> None:
        try:
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", self.host_header)
            for name, value in headers:
                connection.putheader(name, value)
            if body is not None or method in ("POST", "PUT", "PATCH"):
                connection.putheader("Content-Length", str(len(body or b"")))
            connection.endheaders(body)
        except TimeoutError as exc:
            raise httpx.WriteTimeout(str(exc) or "write timed out") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc

    def _read(
        self, connection: http.client.HTTPConnection
    ) -> tuple[http.client.HTTPResponse, bytes]:
        try:
            answer = connection.getresponse()
            return answer, answer.read()
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "read timed out") from exc
        except http.client.RemoteDisconnected as exc:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response."
            ) from exc
        except http.client.HTTPException as exc:  # a malformed status line, a short body, …
            raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__) from exc
        except OSError as exc:  # reset by peer, …
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
