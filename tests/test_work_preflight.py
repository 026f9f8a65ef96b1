"""`ledger work` checks the token, its scopes, the org and the base URL with one read before it
claims a row: a setup that cannot work stops it with exit 3, every row still ready and no step
recorded, and one line on stderr naming the likely cause. (It used to spend every row on it: a
closed port left them all pending `retry_exhausted`, and `work` exited 0.)"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import Result

from ledger.simulator import FaultConfig, OAuthClient, Simulator, running_server
from tests.support.cli import LedgerEnv, assert_exit, ingest_people, invoke, query, row_statuses
from tests.support.work import TOKEN

ROWS = 12
FAST = {"MAX_RETRIES": "1", "RETRY_BACKOFF_S": "0.01", "REQUEST_TIMEOUT_S": "5"}


def ingested(env: LedgerEnv) -> None:
    ingest_people(env, ROWS, BATCH_SIZE="5")


def work(env: LedgerEnv, base_url: str, token: str = TOKEN) -> Result:
    variables = {**FAST, "WEBEX_BASE_URL": base_url, "WEBEX_ACCESS_TOKEN": token}
    return invoke("work", "--db", env.db_url, "--quiet", env=variables)


def assert_untouched(env: LedgerEnv) -> None:
    steps = query(env, "SELECT count(*) FROM steps")[0][0]
    claims = query(env, "SELECT count(*) FROM events WHERE kind = 'claimed'")[0][0]
    assert row_statuses(env) == {"ready": ROWS}
    assert (steps, claims) == (0, 0)


def the_line(result: Result, naming: str) -> str:
    """The one stderr line that names the setting to check."""
    assert_exit(result, 3)
    lines = [line for line in result.stderr.splitlines() if naming in line]
    assert len(lines) == 1, result.stderr
    assert "every row is still ready" in lines[0]
    return lines[0]


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        port: int = held.getsockname()[1]
    return port


class _NotWebex(BaseHTTPRequestHandler):
    status = 200
    content_type = "text/html"
    body = b"<html><body>Sign in to continue</body></html>"

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _SpringNotFound(_NotWebex):
    status = 404
    content_type = "application/json"
    body = (
        b'{"timestamp":"2026-01-01T00:00:00Z","status":404,"error":"Not Found",'
        b'"message":"No static resource licenses.","path":"/v1/licenses"}'
    )


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_base_url_nobody_listens_on_stops_work_before_any_row(ledger_env: LedgerEnv) -> None:
    ingested(ledger_env)
    base_url = f"http://127.0.0.1:{closed_port()}/v1"

    line = the_line(work(ledger_env, base_url), "WEBEX_BASE_URL")

    assert base_url in line and "cannot be reached" in line
    assert_untouched(ledger_env)


@pytest.mark.parametrize(
    ("status", "cause"), [(401, "invalid or expired"), (403, "lacks admin scopes")]
)
def test_a_token_refused_from_the_start_stops_work_before_any_row(
    ledger_env: LedgerEnv, status: int, cause: str
) -> None:
    ingested(ledger_env)
    sim = Simulator(faults=FaultConfig(auth_failure=status), token=TOKEN)

    with running_server(sim) as base_url:
        result = work(ledger_env, base_url, token="an-expired-token")

    line = the_line(result, "WEBEX_ACCESS_TOKEN")
    assert cause in line
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "an-expired-token" not in result.stdout + result.stderr
    assert_untouched(ledger_env)
    assert sim.total_requests == 1  # the one read


def test_a_token_refused_even_after_renewal_names_the_refresh_credentials(
    ledger_env: LedgerEnv,
) -> None:
    ingested(ledger_env)
    credentials = OAuthClient()
    sim = Simulator(faults=FaultConfig(auth_failure=401), token=TOKEN, oauth=credentials)
    renewal = {
        "WEBEX_CLIENT_ID": credentials.client_id,
        "WEBEX_CLIENT_SECRET": credentials.client_secret,
        "WEBEX_REFRESH_TOKEN": credentials.refresh_token,
    }

    with running_server(sim) as base_url:
        variables = {**FAST, **renewal, "WEBEX_BASE_URL": base_url, "WEBEX_ACCESS_TOKEN": TOKEN}
        result = invoke("work", "--db", ledger_env.db_url, "--quiet", env=variables)

    line = the_line(result, "WEBEX_REFRESH_TOKEN")
    assert "even after renewing it" in line
    assert credentials.client_secret not in result.stderr
    assert_untouched(ledger_env)


@pytest.mark.parametrize(
    ("handler", "answer"),
    [(_NotWebex, "not JSON"), (_SpringNotFound, "No static resource")],
    ids=["html-page", "spring-404"],
)
def test_a_base_url_that_is_not_webex_stops_work_before_any_row(
    ledger_env: LedgerEnv, handler: type[BaseHTTPRequestHandler], answer: str
) -> None:
    ingested(ledger_env)

    with serving(handler) as base_url:
        result = work(ledger_env, base_url)

    line = the_line(result, "WEBEX_BASE_URL")
    assert "does not answer like the Webex API" in line and answer in line
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert_untouched(ledger_env)


def test_after_the_preflight_work_goes_on_without_a_second_license_read(
    ledger_env: LedgerEnv,
) -> None:
    ingested(ledger_env)
    sim = Simulator(token=TOKEN)

    with running_server(sim) as base_url:
        result = work(ledger_env, base_url)
        again = work(ledger_env, base_url)

    assert_exit(result, 0)
    assert f"3 batch(es) · {ROWS} success" in result.stdout
    # One read per batch, the preflight's serving the first; none for a finished run.
    assert sim.requests_by_route()["GET /v1/licenses"] == {"200": 3}
    assert_exit(again, 0)


def test_the_demo_still_works(tmp_path: Path) -> None:
    result = invoke(
        "demo", "--dir", str(tmp_path / "demo"), "--rows", "20", "--profile", "none", "--quiet"
    )
    assert_exit(result, 0)
    assert "success" in result.stdout
