"""Renewing an expired access token mid-run with a service app's refresh token (SPEC section 2).

The client talks to a fake Webex (an `httpx.MockTransport`) that accepts one access token and
answers 401 to any other, and grants new tokens at `POST /v1/access_token`. No test sleeps.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from itertools import combinations
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from ledger.config import REFRESH_VARIABLES, load_settings
from ledger.connection_client import WebexClient
from ledger.error_handling import ConfigError, HTTPStatusError, ReasonCode
from ledger.logs import configure_logging, shutdown_logging
from tests.support.cli import LedgerEnv, assert_exit, invoke
from tests.support.client import BASE, TOKEN, make_settings, mock_client
from tests.support.clock import FakeTime

CLIENT_ID = "C0ffee-client-id-0001"
CLIENT_SECRET = "Sec-client-secret-7f3a9b"
REFRESH_TOKEN = "Ref-refresh-token-old-4c2d"
NEW_TOKEN = "New-access-token-8e1f6a"
NEW_REFRESH_TOKEN = "Ref-refresh-token-new-5b7c"
THIRD_TOKEN = "Third-access-token-2a9d"
SECRETS = (CLIENT_SECRET, REFRESH_TOKEN, TOKEN, NEW_TOKEN, NEW_REFRESH_TOKEN, THIRD_TOKEN)

CREDENTIALS = {
    "WEBEX_CLIENT_ID": CLIENT_ID,
    "WEBEX_CLIENT_SECRET": CLIENT_SECRET,
    "WEBEX_REFRESH_TOKEN": REFRESH_TOKEN,
}
GRANT_PATH = "/v1/access_token"

Handler = Callable[[httpx.Request], httpx.Response]


def granting(token: str, refresh_token: str | None = None) -> Handler:
    """The refresh grant's answer, as Webex gives it."""
    body: dict[str, Any] = {"access_token": token, "expires_in": 1_209_599}
    if refresh_token is not None:
        body |= {"refresh_token": refresh_token, "refresh_token_expires_in": 7_775_999}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body, headers={"Trackingid": "GRANT_OK"})

    return answer


def refusing(status: int, message: str = "invalid refresh token") -> Handler:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"message": message}, headers={"Trackingid": "NOPE"})

    return answer


def unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


class FakeWebex:
    """Accepts only `valid_token`; grants tokens at /v1/access_token; records every request."""

    def __init__(self, valid_token: str, grant: Handler = unreachable) -> None:
        self.valid_token = valid_token
        self.grant = grant
        self.api_requests: list[httpx.Request] = []
        self.grant_requests: list[httpx.Request] = []
        self.scripted: list[httpx.Response] = []  # answered first, in order, to API requests
        # Called with each refused request before its 401 is answered.
        self.before_401: Callable[[], object] = lambda: None
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == GRANT_PATH:
            with self._lock:
                self.grant_requests.append(request)
            return self.grant(request)
        with self._lock:
            self.api_requests.append(request)
            scripted = self.scripted.pop(0) if self.scripted else None
        if scripted is not None:
            return scripted
        if request.headers.get("authorization") == f"Bearer {self.valid_token}":
            return httpx.Response(200, json={"id": "p1"}, headers={"Trackingid": "API_OK"})
        self.before_401()
        return httpx.Response(
            401,
            json={"message": "The request requires a valid access token to be set."},
            headers={"Trackingid": "API_401"},
        )

    def bearers(self) -> list[str]:
        return [request.headers["authorization"] for request in self.api_requests]

    def grant_forms(self) -> list[dict[str, list[str]]]:
        return [parse_qs(request.content.decode()) for request in self.grant_requests]


def make_client(
    fake_time: FakeTime, webex: FakeWebex, *, credentials: bool = True, **overrides: Any
) -> WebexClient:
    settings = make_settings(**(CREDENTIALS if credentials else {}), **overrides)
    return mock_client(settings, fake_time, webex)


# --- the client -------------------------------------------------------------------------------


def test_a_401_renews_the_token_and_resends(fake_time: FakeTime) -> None:
    webex = FakeWebex(NEW_TOKEN, granting(NEW_TOKEN))
    with make_client(fake_time, webex) as client:
        response = client.request("GET", "/people/p1")
        stats = client.stats()
    assert response.body == {"id": "p1"}
    assert webex.bearers() == [f"Bearer {TOKEN}", f"Bearer {NEW_TOKEN}"]
    (grant,) = webex.grant_requests
    assert grant.method == "POST"
    assert str(grant.url) == f"{BASE}/access_token"
    assert grant.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "authorization" not in grant.headers  # the grant authenticates with its own fields
    assert webex.grant_forms() == [
        {
            "grant_type": ["refresh_token"],
            "client_id": [CLIENT_ID],
            "client_secret": [CLIENT_SECRET],
            "refresh_token": [REFRESH_TOKEN],
        }
    ]
    assert stats.token_refreshes == 1
    assert stats.requests_sent == 3
    assert fake_time.sleeps == []


def test_the_new_token_is_kept_for_later_requests(fake_time: FakeTime) -> None:
    webex = FakeWebex(NEW_TOKEN, granting(NEW_TOKEN))
    with make_client(fake_time, webex) as client:
        client.request("GET", "/people/p1")
        client.request("GET", "/people/p2")
    assert webex.bearers() == [f"Bearer {TOKEN}"] + [f"Bearer {NEW_TOKEN}"] * 2
    assert len(webex.grant_requests) == 1


def test_threads_refused_together_refresh_once(fake_time: FakeTime) -> None:
    threads = 16
    webex = FakeWebex(NEW_TOKEN, granting(NEW_TOKEN))
    # No 401 is answered before every thread has been refused with the old token.
    everyone_refused = threading.Barrier(threads, timeout=60)
    webex.before_401 = everyone_refused.wait
    outcomes: list[object] = []
    lock = threading.Lock()
    with make_client(fake_time, webex, LEDGER_CONCURRENCY=threads) as client:

        def work() -> None:
            try:
                outcome: object = client.request("GET", "/people/p1").body
            except Exception as exc:
                outcome = exc
            with lock:
                outcomes.append(outcome)

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        stats = client.stats()
    assert outcomes == [{"id": "p1"}] * threads
    assert len(webex.grant_requests) == 1
    assert stats.token_refreshes == 1
    assert sorted(webex.bearers()) == sorted(
        [f"Bearer {TOKEN}"] * threads + [f"Bearer {NEW_TOKEN}"] * threads
    )


@pytest.mark.parametrize(
    ("grant", "grant_calls"),
    [
        (refusing(400), 1),
        (refusing(401, "client authentication failed"), 1),
        (granting(""), 1),  # a 200 without a usable access_token
        (unreachable, 4),  # the first try and MAX_RETRIES=3 retries
    ],
    ids=["400", "401", "no-access-token", "network"],
)
def test_a_failed_refresh_leaves_the_401(
    fake_time: FakeTime, grant: Handler, grant_calls: int
) -> None:
    webex = FakeWebex(NEW_TOKEN, grant)
    with make_client(fake_time, webex) as client:
        with pytest.raises(HTTPStatusError) as caught:
            client.request("GET", "/people/p1")
        assert caught.value.http_status == 401
        assert caught.value.reason_code == ReasonCode.AUTH_INVALID
        assert caught.value.path == "/v1/people/p1"  # the refused request's, not the grant's
        assert caught.value.tracking_id == "API_401"
        assert webex.bearers() == [f"Bearer {TOKEN}"]  # not resent
        assert len(webex.grant_requests) == grant_calls
        # The same token is not refreshed twice: a later 401 is raised without a new grant.
        with pytest.raises(HTTPStatusError):
            client.request("POST", "/people", json={})
        assert len(webex.grant_requests) == grant_calls
        assert client.stats().token_refreshes == 0


def test_a_401_after_the_refresh_is_raised(fake_time: FakeTime) -> None:
    webex = FakeWebex("a-token-nobody-has-0000", granting(NEW_TOKEN))
    with make_client(fake_time, webex) as client:
        with pytest.raises(HTTPStatusError) as caught:
            client.request("GET", "/people/p1")
        stats = client.stats()
    assert caught.value.reason_code == ReasonCode.AUTH_INVALID
    assert webex.bearers() == [f"Bearer {TOKEN}", f"Bearer {NEW_TOKEN}"]
    assert len(webex.grant_requests) == 1
    assert stats.token_refreshes == 1


def test_one_request_never_refreshes_twice(fake_time: FakeTime) -> None:
    webex = FakeWebex(NEW_TOKEN, granting(NEW_TOKEN))
    webex.scripted = [httpx.Response(401), httpx.Response(503), httpx.Response(401)]
    with make_client(fake_time, webex) as client:
        with pytest.raises(HTTPStatusError) as caught:
            client.request("GET", "/people/p1")
        stats = client.stats()
    assert caught.value.http_status == 401
    # Refused, renewed and resent; the resend's 503 retried; that retry refused again: raised.
    assert webex.bearers() == [f"Bearer {TOKEN}"] + [f"Bearer {NEW_TOKEN}"] * 2
    assert len(webex.grant_requests) == 1
    assert stats.token_refreshes == 1


def test_a_post_refused_with_401_is_resent_once(fake_time: FakeTime) -> None:
    webex = FakeWebex(NEW_TOKEN, granting(NEW_TOKEN))
    body = {"emails": ["a@example.com"], "displayName": "A"}
    with make_client(fake_time, webex) as client:
        response = client.request("POST", "/people", json=body, ok=(200,))
    assert response.body == {"id": "p1"}
    posts = [request for request in webex.api_requests if request.method == "POST"]
    assert len(posts) == 2
    assert [json.loads(post.content) for post in posts] == [body, body]
    assert webex.bearers() == [f"Bearer {TOKEN}", f"Bearer {NEW_TOKEN}"]


def test_a_returned_refresh_token_is_used_next_time(fake_time: FakeTime) -> None:
    webex = FakeWebex(NEW_TOKEN, granting(NEW_TOKEN, NEW_REFRESH_TOKEN))
    with make_client(fake_time, webex) as client:
        client.request("GET", "/people/p1")
        # Weeks later the renewed token expires too.
        webex.valid_token, webex.grant = THIRD_TOKEN, granting(THIRD_TOKEN)
        client.request("GET", "/people/p1")
        stats = client.stats()
    refresh_tokens = [form["refresh_token"] for form in webex.grant_forms()]
    assert refresh_tokens == [[REFRESH_TOKEN], [NEW_REFRESH_TOKEN]]
    assert webex.bearers()[-1] == f"Bearer {THIRD_TOKEN}"
    assert stats.token_refreshes == 2


def test_without_credentials_a_401_is_raised_at_once(fake_time: FakeTime) -> None:
    webex = FakeWebex(NEW_TOKEN, granting(NEW_TOKEN))
    with make_client(fake_time, webex, credentials=False) as client:
        with pytest.raises(HTTPStatusError) as caught:
            client.request("POST", "/people", json={})
        stats = client.stats()
    assert caught.value.reason_code == ReasonCode.AUTH_INVALID
    assert webex.bearers() == [f"Bearer {TOKEN}"]
    assert webex.grant_requests == []
    assert stats.token_refreshes == 0


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "ledger.log"
    configure_logging(path, console_level=None)
    yield path
    shutdown_logging()


def test_no_secret_reaches_the_log_errors_or_stats(fake_time: FakeTime, log_file: Path) -> None:
    raised: list[BaseException] = []
    flaky_then_granting = iter([refusing(503, "try later"), granting(NEW_TOKEN, NEW_REFRESH_TOKEN)])
    webex = FakeWebex(NEW_TOKEN, lambda request: next(flaky_then_granting)(request))
    with make_client(fake_time, webex) as client:
        client.request("GET", "/people/p1")  # renewed after one retried grant
        # The renewed token expires; this time the endpoint refuses, quoting what it was sent.
        webex.valid_token = THIRD_TOKEN
        webex.grant = refusing(400, f"refresh token {NEW_REFRESH_TOKEN} of {CLIENT_ID} expired")
        try:
            client.request("POST", "/people", json={})
        except HTTPStatusError as exc:
            raised.append(exc)
        logging.getLogger("ledger.test").warning(
            "probe %s %s", CLIENT_SECRET, NEW_TOKEN, extra={"event": "leak_probe"}
        )
        texts = [repr(client), repr(client.stats()), str(client.stats().as_dict())]
    shutdown_logging()
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    events = [line["event"] for line in lines]
    assert events.count("request_retry") == 1
    assert events.count("token_refreshed") == 1
    assert events.count("token_refresh_failed") == 1
    assert "leak_probe" in events
    (refreshed,) = (line for line in lines if line["event"] == "token_refreshed")
    assert refreshed["expires_in_s"] == 1_209_599
    assert refreshed["refresh_token_rotated"] is True
    assert len(raised) == 1
    for failure in raised:
        texts += [str(failure), repr(failure), repr(vars(failure))]
    texts.append(log_file.read_text())
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


# --- configuration ----------------------------------------------------------------------------

PARTIAL_SETS = [list(names) for size in (1, 2) for names in combinations(REFRESH_VARIABLES, size)]


@pytest.mark.parametrize("given", PARTIAL_SETS, ids="+".join)
def test_partial_credentials_stop_work_with_exit_2(ledger_env: LedgerEnv, given: list[str]) -> None:
    env = {"WEBEX_ACCESS_TOKEN": TOKEN} | {name: CREDENTIALS[name] for name in given}
    result = invoke("work", "--db", ledger_env.db_url, env=env)
    assert_exit(result, 2)
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("ledger: ")
    named_missing = line.split("missing:", 1)[1]
    for name in REFRESH_VARIABLES:
        assert (name in named_missing) is (name not in given), line
    logged = ledger_env.log_file.read_text() if ledger_env.log_file.exists() else ""
    for secret in (TOKEN, CLIENT_SECRET, REFRESH_TOKEN):
        assert secret not in result.output
        assert secret not in logged


@pytest.mark.parametrize("name", ["WEBEX_CLIENT_SECRET", "WEBEX_REFRESH_TOKEN"])
def test_whitespace_inside_a_secret_is_a_config_error(ledger_env: LedgerEnv, name: str) -> None:
    broken = CREDENTIALS[name][:6] + " " + CREDENTIALS[name][6:]
    env = {"WEBEX_ACCESS_TOKEN": TOKEN} | CREDENTIALS | {name: broken}
    result = invoke("work", "--db", ledger_env.db_url, env=env)
    assert_exit(result, 2)
    (line,) = result.stderr.splitlines()
    assert name in line
    assert "whitespace" in line
    for secret in (broken, CREDENTIALS[name][:6], CREDENTIALS[name][6:]):
        assert secret not in result.output


def test_credentials_are_read_trimmed_and_kept_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, f"  {value}\n")
    settings = load_settings()
    assert settings.WEBEX_CLIENT_ID == CLIENT_ID
    assert settings.WEBEX_CLIENT_SECRET is not None
    assert settings.WEBEX_CLIENT_SECRET.get_secret_value() == CLIENT_SECRET
    assert settings.WEBEX_REFRESH_TOKEN is not None
    assert settings.WEBEX_REFRESH_TOKEN.get_secret_value() == REFRESH_TOKEN
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert CLIENT_SECRET not in text
        assert REFRESH_TOKEN not in text


def test_blank_credentials_count_as_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "WEBEX_CLIENT_ID=\nWEBEX_CLIENT_SECRET=\nWEBEX_REFRESH_TOKEN=\n", encoding="utf-8"
    )
    settings = load_settings()
    assert settings.WEBEX_CLIENT_ID is None
    assert settings.WEBEX_CLIENT_SECRET is None
    assert settings.WEBEX_REFRESH_TOKEN is None
    monkeypatch.setenv("WEBEX_CLIENT_ID", CLIENT_ID)
    with pytest.raises(ConfigError, match="missing: WEBEX_CLIENT_SECRET, WEBEX_REFRESH_TOKEN"):
        load_settings()
