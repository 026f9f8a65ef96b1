"""A pending row names the cause the operator can fix (SPEC section 5), through the CLI.

* A row whose location could not be provisioned carries the location's own reason code, so
  `ledger retry --reason CODE` after fixing that cause brings back every row it stopped.
* A row that cannot complete for a reason a lookup can see is found blocked before its first
  write: it changes nothing on Webex, and is not `half_applied`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from ledger.row_rules import COLUMNS
from ledger.simulator import FaultConfig, Simulator, running_server
from tests.support.cli import LedgerEnv, assert_exit, invoke
from tests.support.csvfiles import read_csv, write_csv
from tests.support.people import person, phone
from tests.support.revoked import RevokedAfterPreflight
from tests.support.system_checks import person_differences
from tests.support.work import Jobs

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
    # The token passes `work`'s preflight read, then is revoked: every location is refused.
    sim = RevokedAfterPreflight(token=RIGHT_TOKEN)
    with running_server(sim) as base_url:
        work(ledger_env, base_url)

        stopped = pending(ledger_env.out_dir)
        assert set(stopped) == {1, 2, 3, 4}
        for row_id, line in stopped.items():
            location = rows[row_id - 1]["location_name"]
            assert (line["reason_code"], line["step"]) == ("auth_invalid", "location"), line
            assert f"location {location!r}" in line["reason_message"], line
            assert (line["entity_type"], line["entity_key"]) == ("location", location)
        assert sim.write_request_count == 0

        # The operator fixes the token and follows the README.
        sim.set_faults(FaultConfig())
        retry(ledger_env, "auth_invalid", expected=4)
        work(ledger_env, base_url)

    assert succeeded(ledger_env.out_dir) == {1, 2, 3, 4}
    assert pending(ledger_env.out_dir) == {}
    assert sim.locations_created_by_name() == {"HQ": 1, "Branch": 1}


def take_out_of_calling(sim: Simulator, person_id: str) -> None:
    """What the operator does to free a calling user from another location (Webex's move-users
    job would also place them in the new one; the simulator has no such job, so the person is
    left without calling and `ledger` places them)."""
    found = sim.person(person_id)
    assert found is not None
    kept = ("emails", "displayName", "firstName", "lastName")
    body: dict[str, Any] = {key: found[key] for key in kept if key in found} | {"licenses": []}
    with httpx.Client(transport=sim.transport(), base_url="https://webex.test/v1") as client:
        answer = client.put(
            f"/people/{person_id}", json=body, headers={"Authorization": f"Bearer {RIGHT_TOKEN}"}
        )
    assert answer.status_code == 200, answer.text


def test_a_user_in_another_location_is_blocked_before_their_number_is_added(
    ledger_env: LedgerEnv,
) -> None:
    """The row needs its number added to HQ's inventory, then its user moved: the move is seen
    by the lookup, so nothing is written (the number used to be added first, and the row was
    then `half_applied`, not the cause the operator can act on)."""
    sim = Simulator(token=RIGHT_TOKEN)
    sim.add_location("HQ", calling=True)
    branch = sim.add_location("Branch", calling=True)
    moving = sim.add_person("user1@example.com", location_id=branch, extension="2001")
    row = person(1, phone_number=phone(1))
    ingest(ledger_env, [row])
    with running_server(sim) as base_url:
        work(ledger_env, base_url)

        line = pending(ledger_env.out_dir)[1]
        assert (line["reason_code"], line["step"]) == ("location_move_required", "user"), line
        assert sim.state_snapshot()["write_requests"] == 0
        assert sim.state_snapshot()["counts"]["numbers"] == 0  # phone(1) was not added

        take_out_of_calling(sim, moving)
        retry(ledger_env, "location_move_required", expected=1)
        work(ledger_env, base_url)

    assert succeeded(ledger_env.out_dir) == {1}
    assert person_differences(sim, row) == []
    assert (sim.person(moving) or {}).get("id") == moving  # the same person, moved


def test_an_extension_held_by_someone_else_is_found_before_the_number_is_added(
    jobs: Jobs,
) -> None:
    sim = jobs.simulator()
    hq = sim.add_location("HQ", calling=True)
    sim.add_person("someone@example.com", location_id=hq, extension="1001")
    job = jobs.start([person(1, phone_number=phone(1))], sim=sim)

    job.work()

    row = job.rows()[1]
    assert (row.reason_code, row.reason_step) == ("extension_in_use", "user"), row
    assert "1001" in (row.reason_message or "")
    assert sim.write_request_count == 0
    asked = [
        dict(request.query)
        for request in sim.request_log
        if request.route == "GET /v1/telephony/config/numbers"
    ]
    assert {"locationId": hq, "extension": "1001"} in asked
