"""The client's keep-alive wire against a real socket: reuse, stale connections, failures.

A small HTTP/1.1 server on a free port stands in for Webex; each test checks what the client
made of its answers through `WebexClient.request`, the path every call takes.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from ledger.connection_client import WebexClient
from ledger.error_handling import RequestTimeoutError, RetryExhaustedError, TransportError
from ledger.keepalive import KeepAliveWire, proxied
from tests.support.client import TOKEN, make_settings


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections = 0
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up on a slow answer: expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, *_args: object) -> None:
        pass

    def _answer(self, status: int, body: Any, *, close: bool = False, **headers: str) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        if close:  # close without saying so: the client finds out when it next looks
            self.close_connection = True

    def _record(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        seen = {
            "method": self.command,
            "path": parts.path,
            "query": parse_qs(parts.query),
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": json.loads(body) if body else None,
        }
        with self.server.lock:
            self.server.requests.append(seen)
        return seen

    def do_GET(self) -> None:
        seen = self._record()
        path = seen["path"]
        if path == "/v1/stale":
            self._answer(200, {"ok": True}, close=True)
        elif path == "/v1/hang-up":
            self.close_connection = True  # read the request, answer nothing
        elif path == "/v1/slow":
            threading.Event().wait(1.0)
            self._answer(200, {"ok": True})
        elif path == "/v1/pages":
            start = int(seen["query"].get("start", ["0"])[0])
            link = {"Link": '</v1/pages?start=2>; rel="next"'} if start == 0 else {}
            self._answer(200, {"items": [{"n": start}, {"n": start + 1}]}, **link)
        else:
            self._answer(200, {"path": path, "query": seen["query"]})

    def do_POST(self) -> None:
        seen = self._record()
        if seen["path"] == "/v1/hang-up":
            self.close_connection = True
            return
        self._answer(200, {"id": "p1", "got": seen["body"]})


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _client(server: _Server, **overrides: Any) -> WebexClient:
    port = server.server_address[1]
    settings = make_settings(
        WEBEX_BASE_URL=f"http://127.0.0.1:{port}/v1", MAX_RETRIES=0, **overrides
    )
    return WebexClient(settings, adaptive_rate_limit=False)


def test_requests_share_one_connection_and_carry_what_httpx_would_send(server: _Server) -> None:
    with _client(server) as client:
        for n in range(5):
            answer = client.request(
                "GET",
                "/people",
                params={"email": f"a+{n}@example.com", "callingData": True, "max": 100},
            )
        created = client.request("POST", "/people", json={"displayName": "Zoë"}, ok=(200,))
    assert server.connections == 1
    first = server.requests[0]
    assert first["query"] == {"email": ["a+0@example.com"], "callingData": ["true"], "max": ["100"]}
    assert first["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert first["headers"]["accept"] == "application/json"
    assert first["headers"]["host"] == f"127.0.0.1:{server.server_address[1]}"
    assert answer.path == "/v1/people"
    assert created.body == {"id": "p1", "got": {"displayName": "Zoë"}}
    assert server.requests[-1]["headers"]["content-type"] == "application/json"


def test_a_connection_the_server_closed_is_not_reused(server: _Server) -> None:
    with _client(server) as client:
        client.request("GET", "/stale")
        threading.Event().wait(0.2)  # let the server's close reach this side
        again = client.request("POST", "/people", json={"n": 1})
    assert again.body is not None and again.body["id"] == "p1"
    assert server.connections == 2
    assert [r["method"] for r in server.requests].count("POST") == 1


def test_relative_next_pages_are_followed(server: _Server) -> None:
    with _client(server) as client:
        items = list(client.paginate("/pages", items_key="items"))
    assert [item["n"] for item in items] == [0, 1, 2, 3]
    assert server.connections == 1


def test_a_refused_connection_was_never_sent(server: _Server) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = make_settings(WEBEX_BASE_URL=f"http://127.0.0.1:{port}/v1", MAX_RETRIES=0)
    with WebexClient(settings, adaptive_rate_limit=False) as client:
        with pytest.raises(RetryExhaustedError) as caught:  # retried: nothing was sent
            client.request("POST", "/people", json={})
    assert caught.value.last.maybe_applied is False
    assert isinstance(caught.value.last.__cause__, httpx.ConnectError)


def test_a_post_answered_by_a_hang_up_may_have_been_applied(server: _Server) -> None:
    with _client(server) as client:
        with pytest.raises(TransportError) as caught:
            client.request("POST", "/hang-up", json={})
    assert caught.value.maybe_applied is True
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    assert [r["path"] for r in server.requests] == ["/v1/hang-up"]  # sent once, not resent


def test_a_slow_answer_is_a_read_timeout(server: _Server) -> None:
    with _client(server, REQUEST_TIMEOUT_S=0.2) as client:
        with pytest.raises(RetryExhaustedError) as caught:
            client.request("GET", "/slow")
    assert isinstance(caught.value.last, RequestTimeoutError)
    assert isinstance(caught.value.last.__cause__, httpx.ReadTimeout)


def test_a_proxy_in_the_environment_sends_through_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    url = httpx.URL("https://webexapis.com/v1/")
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert not proxied(url)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert proxied(url)
    monkeypatch.setenv("NO_PROXY", "webexapis.com")
    assert not proxied(url)


def test_the_wire_names_a_non_default_port_in_host_and_refuses_other_schemes() -> None:
    assert KeepAliveWire(httpx.URL("http://h:8080/"), timeout_s=1, max_idle=1).host_header == (
        "h:8080"
    )
    assert KeepAliveWire(httpx.URL("https://h/"), timeout_s=1, max_idle=1).host_header == "h"
    with pytest.raises(ValueError):
        KeepAliveWire(httpx.URL("ftp://h/"), timeout_s=1, max_idle=1)


def test_a_target_with_a_control_character_space_or_del_is_never_sent(server: _Server) -> None:
    origin = httpx.URL(f"http://127.0.0.1:{server.server_address[1]}")
    wire = KeepAliveWire(origin, timeout_s=5, max_idle=1)
    try:
        for char in [chr(code) for code in range(0x21)] + ["\x7f"]:
            with pytest.raises(httpx.WriteError, match="not a request target"):
                wire.send("GET", f"/v1/people?email=a{char}b", [], None)
        with pytest.raises(httpx.WriteError, match="not a request target"):
            wire.send("GET", "v1/people", [], None)  # not origin-form
        # What is left is sent as it is: every other printable character, and non-ASCII.
        target = "/v1/" + "".join(chr(code) for code in range(0x21, 0x7F)).replace("?", "")
        assert wire.send("GET", target + "\x80\xe9", [], None).status_code == 200
    finally:
        wire.close()
    assert len(server.requests) == 1


def test_a_header_with_cr_lf_or_nul_is_never_sent(server: _Server) -> None:
    origin = httpx.URL(f"http://127.0.0.1:{server.server_address[1]}")
    wire = KeepAliveWire(origin, timeout_s=5, max_idle=1)
    try:
        for char in ("\r", "\n", "\0"):
            with pytest.raises(ValueError, match="invalid header"):
                wire.send("GET", "/v1/people", [(f"X-A{char}b", "v")], None)
            with pytest.raises(ValueError, match="invalid header"):
                wire.send("GET", "/v1/people", [("X-A", f"v{char}Injected: 1")], None)
        # A tab or a space in a value is no line break: sent.
        assert wire.send("GET", "/v1/people", [("X-A", "v\t w")], None).status_code == 200
    finally:
        wire.close()
    assert len(server.requests) == 1
    assert server.requests[0]["headers"]["x-a"] == "v\t w"
