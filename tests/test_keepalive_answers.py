"""The wire reads answers of every HTTP/1.1 shape as httpx would, and knows when a connection
can carry the next request: answers written byte for byte by a scripted socket server.
"""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from ledger.keepalive import MAX_HEAD, KeepAliveWire

HEADERS = [("Accept", "application/json")]


class _ByteServer:
    """Answers each request read on a connection with the next scripted bytes; counts the
    connections, and closes one after an answer marked so (`close_after`)."""

    def __init__(self, answers: list[bytes], close_after: frozenset[int] = frozenset()) -> None:
        self.answers = answers
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        served = 0
        while served < len(self.answers):
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            with connection:
                while served < len(self.answers):
                    request = self._read_request(connection)
                    if request is None:
                        break
                    self.requests.append(request)
                    connection.sendall(self.answers[served])
                    served += 1
                    if served - 1 in self.close_after:
                        break

    @staticmethod
    def _read_request(connection: socket.socket) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
                while len(body) < length:
                    body += connection.recv(65536)
        return data

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def serve() -> Iterator[list[_ByteServer]]:
    started: list[_ByteServer] = []
    yield started
    for server in started:
        server.close()


def wire_for(
    servers: list[_ByteServer], *answers: bytes, close_after: int = -1
) -> tuple[KeepAliveWire, _ByteServer]:
    server = _ByteServer(list(answers), frozenset({close_after}))
    servers.append(server)
    return KeepAliveWire(
        httpx.URL(f"http://127.0.0.1:{server.port}/"), timeout_s=5, max_idle=2
    ), server


def test_bodies_by_length_by_chunks_and_none_keep_the_connection(
    serve: list[_ByteServer],
) -> None:
    wire, server = wire_for(
        serve,
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
        b'{"a": true}',
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4;ext=1\r\n{"b"\r\n6\r\n: 1.5}\r\n0\r\nX-Trailer: t\r\n\r\n',
        b"HTTP/1.1 204 No Content\r\nTrackingid: T1\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}",
    )
    with_length = wire.send("GET", "/v1/a", HEADERS, None)
    chunked = wire.send("GET", "/v1/b", HEADERS, None)
    empty = wire.send("DELETE", "/v1/c", HEADERS, None)
    after_interim = wire.send("POST", "/v1/d", HEADERS, b"{}")
    wire.close()

    assert (with_length.status_code, with_length.content) == (200, b'{"a": true}')
    assert with_length.headers["content-type"] == "application/json"
    assert with_length.url == f"http://127.0.0.1:{server.port}/v1/a"
    assert chunked.content == b'{"b": 1.5}'
    assert (empty.status_code, empty.reason_phrase, empty.content) == (204, "No Content", b"")
    assert empty.headers == {"trackingid": "T1"}
    assert (after_interim.status_code, after_interim.content) == (201, b"{}")
    assert server.connections == 1  # every answer left the connection fit for the next
    assert server.requests[0].startswith(
        f"GET /v1/a HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode()
    )
    assert b"Content-Length: 2\r\n\r\n{}" in server.requests[3]


def test_headers_read_as_httpx_reads_them(serve: list[_ByteServer]) -> None:
    body = gzip.compress(b'{"zipped": 1}')
    wire, _ = wire_for(
        serve,
        b"HTTP/1.1 429 Too Many\r\nRetry-After: 3\r\nX-Many: a\r\nx-many: b\r\n"
        b"X-Folded: one\r\n two\r\nContent-Encoding: gzip\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body,
    )
    answer = wire.send("GET", "/v1/z", HEADERS, None)
    wire.close()

    reference = httpx.Response(
        429,
        headers=[("Retry-After", "3"), ("X-Many", "a"), ("x-many", "b")],
        content=b"",
    )
    assert answer.headers["retry-after"] == reference.headers.get("retry-after") == "3"
    assert answer.headers["x-many"] == dict(reference.headers.items())["x-many"] == "a, b"
    assert answer.headers["x-folded"] == "one two"
    assert answer.reason_phrase == "Too Many"
    assert answer.content == b'{"zipped": 1}'  # decoded, as httpx decodes it


def test_an_answer_up_to_the_close_or_that_says_close_ends_the_connection(
    serve: list[_ByteServer],
) -> None:
    wire, server = wire_for(
        serve,
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
        b'HTTP/1.0 200 OK\r\n\r\n{"to": "close"}',
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        close_after=1,
    )
    first = wire.send("GET", "/v1/a", HEADERS, None)
    second = wire.send("GET", "/v1/b", HEADERS, None)
    third = wire.send("GET", "/v1/c", HEADERS, None)
    wire.close()

    assert [first.content, second.content, third.content] == [b"{}", b'{"to": "close"}', b"{}"]
    assert server.connections == 3


def test_bytes_nobody_asked_for_end_the_connection(serve: list[_ByteServer]) -> None:
    wire, server = wire_for(
        serve,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}EXTRA",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    )
    assert wire.send("GET", "/v1/a", HEADERS, None).content == b"{}"
    assert wire.send("GET", "/v1/b", HEADERS, None).content == b"{}"
    wire.close()
    assert server.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",  # short body, then the close
        b"NOT-HTTP 200 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"a" * MAX_HEAD + b"\r\n\r\n",
        b"",  # a hang-up before any answer
    ],
)
def test_a_malformed_or_cut_answer_is_a_protocol_error(
    serve: list[_ByteServer], answer: bytes
) -> None:
    wire, _ = wire_for(serve, answer, close_after=0)
    with pytest.raises(httpx.RemoteProtocolError):
        wire.send("GET", "/v1/a", HEADERS, None)
    wire.close()


def test_a_target_or_header_that_would_split_the_request_is_refused(
    serve: list[_ByteServer],
) -> None:
    wire, server = wire_for(serve, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(httpx.WriteError):
        wire.send("GET", "/v1/a b", HEADERS, None)
    with pytest.raises(ValueError):
        wire.send("GET", "/v1/a", [("X-Evil", "a\r\nInjected: 1")], None)
    wire.close()
    assert server.requests == []
