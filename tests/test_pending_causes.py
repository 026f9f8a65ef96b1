"""A pending row names the cause the operator can fix (SPEC section 5), through the CLI.

* A row whose location could not be provisioned carries the location's own reason code, so
  `ledger retry --reason CODE` after fixing that cause brings back every row it stopped.
* A row that cannot complete for a reason a lookup can see is found blocked before its first
  write: it changes nothing on Webex, and is not `half_applied`.
"""

from __future__ import annotations

from pathlib import Path

from ledger.row_rules import COLUMNS
from ledger.simulator import Simulator, running_server
from tests.support.cli import LedgerEnv, assert_exit, invoke
from tests.support.csvfiles import read_csv, write_csv
from tests.support.people import person

RIGHT_TOKEN = "the-token-the-org-accepts"


def ingest(ledger_env: LedgerEnv, rows: list[dict[str, str]]) -> None:
    source = write_csv(ledger_env.root / "users.csv", COLUMNS, rows)
    assert_exit(invoke("ingest", str(source), "--db", ledger_env.db_url), 0)


def work(ledger_env: LedgerEnv, base_url: str, token: str = RIGHT_TOKEN) -> None:
    env = {"WEBEX_BASE_URL": base_url, "WEBEX_ACCESS_TOKEN": token, "RETRY_BACKOFF_S": "0.01"}
    assert_exit(invoke("work", "--db", ledger_env.db_url, "--quiet", env=env), 0)


def retry(ledger_env: LedgerEnv, reason: str, expected: int) -> None:
    result = invoke("retry", "--db", ledger_env.db_url, "--reason", reason)
    assert_exit(result, 0)
    assert f"{expected} pending row(s) are ready again" in result.stdout


def pending(out_dir: Path) -> dict[int, dict[str, str]]:
    return {int(line["row_id"]): line for line in read_csv(out_dir / "pending_rows.csv")}


def succeeded(out_dir: Path) -> set[int]:
    return {int(line["row_id"]) for line in read_csv(out_dir / "results.csv")}


def test_rows_of_locations_a_refused_token_stopped_come_back_with_their_reason(
    ledger_env: LedgerEnv,
) -> None:
    rows = [person(1), person(2), person(3, "Branch"), person(4, "Branch")]
    ingest(ledger_env, rows)
    sim = Simulator(token=RIGHT_TOKEN)
    with running_server(sim) as base_url:
        work(ledger_env, base_url, token="a-revoked-token")

        stopped = pending(ledger_env.out_dir)
        assert set(stopped) == {1, 2, 3, 4}
        for row_id, line in stopped.items():
            location = rows[row_id - 1]["location_name"]
            assert (line["reason_code"], line["step"]) == ("auth_invalid", "location"), line
            assert f"location {location!r}" in line["reason_message"], line
            assert (line["entity_type"], line["entity_key"]) == ("location", location)
        assert sim.write_request_count == 0

        # The operator fixes the token and follows the README.
        retry(ledger_env, "auth_invalid", expected=4)
        work(ledger_env, base_url)

    assert succeeded(ledger_env.out_dir) == {1, 2, 3, 4}
    assert pending(ledger_env.out_dir) == {}
    assert sim.locations_created_by_name() == {"HQ": 1, "Branch": 1}
