"""A long unattended run outlives its access token (SPEC section 2): with a service app's
credentials, `ledger work` renews the token on the first 401 and finishes, and none of the
secrets reaches the terminal, the log, the ledger or the artifacts.

`ledger` runs as a subprocess against the simulator on a socket, whose tokens expire after one
second; the run takes several seconds, so it meets expiry more than once.
"""

from __future__ import annotations

from pathlib import Path

from ledger.simulator.faults import FaultConfig
from ledger.simulator.sample import write_sample_csv
from ledger.simulator.tokens import OAuthClient
from tests.support.system import (
    EXIT_OK,
    TOKEN,
    Workspace,
    expect_exit,
    ingest,
    ledger_env,
    run_ledger,
    running_simulator,
)
from tests.support.system_checks import read_ledger, status_counts

ROWS = 60
CREDENTIALS = OAuthClient()


def everything_written(ws: Workspace) -> bytes:
    """Every byte `ledger` left in its workspace: ledger (and WAL), log, artifacts."""
    return b"".join(path.read_bytes() for path in sorted(ws.root.rglob("*")) if path.is_file())


def test_work_renews_an_expired_token_and_keeps_every_secret(tmp_path: Path) -> None:
    csv_path = tmp_path / "users.csv"
    sample = write_sample_csv(csv_path, ROWS, locations=2, invalid_rows=0, seed=3)
    assert sample.invalid_rows == 0
    # About 100 requests, two at a time, 60 ms each: three seconds of requests at least, on
    # any machine, so the run meets expiry more than once.
    faults = FaultConfig(latency_ms=60, token_ttl_s=1.0)
    with running_simulator(faults) as sim:
        ws = Workspace(tmp_path / "w")
        env = ledger_env(
            ws,
            sim.base_url,
            LEDGER_CONCURRENCY=2,
            WEBEX_CLIENT_ID=CREDENTIALS.client_id,
            WEBEX_CLIENT_SECRET=CREDENTIALS.client_secret,
            WEBEX_REFRESH_TOKEN=CREDENTIALS.refresh_token,
        )
        ingest(ws, env, csv_path)
        result = run_ledger(ws, env, "work", "--quiet", timeout=300)
        expect_exit(result, EXIT_OK)
        tokens = sim.state()["tokens"]

    assert status_counts(read_ledger(ws)) == {"success": ROWS}
    # The run outlived its first token and every token after it that it held long enough.
    assert tokens["refreshes"] >= 2, tokens
    secrets = [TOKEN, CREDENTIALS.client_secret, CREDENTIALS.refresh_token]
    written = everything_written(ws)
    for secret in secrets:
        assert secret not in result.stdout and secret not in result.stderr
        assert secret.encode() not in written, "a secret was written out"
    assert b"token_refreshed" in ws.log_file.read_bytes()


def test_without_refresh_credentials_an_expired_token_trips_the_breaker(tmp_path: Path) -> None:
    csv_path = tmp_path / "users.csv"
    write_sample_csv(csv_path, ROWS, locations=2, invalid_rows=0, seed=3)
    with running_simulator(FaultConfig(latency_ms=30, token_ttl_s=1.0)) as sim:
        ws = Workspace(tmp_path / "w")
        env = ledger_env(ws, sim.base_url, LEDGER_CONCURRENCY=2, BATCH_SIZE=20)
        ingest(ws, env, csv_path)
        result = run_ledger(ws, env, "work", "--quiet", timeout=300)
        assert sim.state()["tokens"]["refreshes"] == 0
    # Without a way to renew it, the expired token is what stops the run, and rows that did
    # not start stay ready for a `work` with a fresh token.
    expect_exit(result, 3)
    counts = status_counts(read_ledger(ws))
    assert counts["ready"] > 0, counts
