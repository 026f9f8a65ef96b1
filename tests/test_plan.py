"""`ledger plan`: what `work` would do to each ready row, through the CLI against the simulator
on a socket. A plan writes nothing to Webex (the simulator's write counter stays where it was),
says per step create / update (before → after) / unchanged / blocked with `work`'s reason code,
and `work` on an org that did not change in between does exactly that."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.cells import restore
from ledger.error_handling import InvariantError
from ledger.plan_client import ReadOnlyClient
from ledger.simulator import FaultConfig, Simulator, running_server
from tests.support.cli import LedgerEnv, assert_exit, invoke
from tests.support.people import person, phone
from tests.support.plans import TOKEN, PlanOrg
from tests.support.revoked import RevokedAfterPreflight
from tests.support.work import Traffic, make_settings

AFTER_APPLY = "(known after apply)"
SETTINGS = {"voicemail_rings": "5", "call_waiting_enabled": "false"}


@pytest.fixture
def org(ledger_env: LedgerEnv) -> Iterator[PlanOrg]:
    sim = Simulator(token=TOKEN)
    with running_server(sim) as base_url:
        yield PlanOrg(ledger_env, sim, base_url)


def fresh_rows() -> list[dict[str, str]]:
    return [person(n, phone_number=phone(n), **SETTINGS) for n in range(1, 5)]


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


# --- a fresh CSV, a finished one -------------------------------------------------------------


def test_a_fresh_csv_plans_every_create_and_work_does_just_that(org: PlanOrg) -> None:
    org.ingest(fresh_rows())

    result = org.plan()

    assert_exit(result, 5)  # changes pending
    assert last_line(result.stdout) == (
        "Plan: 4 users to create, 0 to update, 0 unchanged, 0 blocked; 1 location to create, "
        "1 to enable for calling; 4 numbers to add"
    )
    assert org.sim.write_request_count == 0
    location = org.lines_of(1, "location")
    assert location["name"]["action"] == "create" and location["name"]["after"] == "HQ"
    assert location["id"]["after"] == AFTER_APPLY
    user = org.lines_of(1, "user")
    assert {field: line["after"] for field, line in user.items()}.items() >= {
        "displayName": "User Number1",
        "extension": "1001",
        "locationId": AFTER_APPLY,
        "id": AFTER_APPLY,
    }.items()
    assert all(line["before"] == "" for line in user.values())
    assert org.lines_of(2, "location")[""]["action"] == "unchanged"
    assert org.lines_of(3, "number")["phoneNumber"]["after"] == phone(3)
    settings = org.lines_of(4, "settings")
    assert settings["callWaiting.enabled"]["after"] == "false"
    assert settings["callWaiting.enabled"]["before"] == AFTER_APPLY
    planned = org.planned_actions()
    assert planned[("user", "create")] == 4

    org.work()

    assert org.worked_actions() == planned


def test_a_finished_csv_plans_nothing_with_no_more_requests_than_a_rerun(org: PlanOrg) -> None:
    org.ingest(fresh_rows())
    org.work()
    rerun = PlanOrg(org.env, org.sim, org.base_url, db="rerun.db")
    rerun.ingest(fresh_rows())  # the same file, an empty ledger: a re-run
    writes, requests = org.sim.write_request_count, org.sim.total_requests

    result = rerun.plan()

    assert_exit(result, 0)  # nothing to do
    assert last_line(result.stdout) == (
        "Plan: 0 users to create, 0 to update, 4 unchanged, 0 blocked; 0 locations to create"
    )
    assert org.sim.write_request_count == writes
    assert {line["action"] for line in rerun.plan_lines()} == {"unchanged"}
    plan_requests = org.sim.total_requests - requests

    requests = org.sim.total_requests
    rerun.work()

    assert org.sim.write_request_count == writes
    assert plan_requests <= org.sim.total_requests - requests
    assert rerun.worked_actions() == rerun.planned_actions()


def test_a_run_without_ready_rows_needs_no_request(org: PlanOrg) -> None:
    org.ingest(fresh_rows())
    org.work()
    requests = org.sim.total_requests

    result = org.plan()

    assert_exit(result, 0)
    assert last_line(result.stdout) == "Plan: no ready rows in run 1: nothing to do"
    assert org.sim.total_requests == requests
    assert org.plan_lines() == []


# --- a mixed org -----------------------------------------------------------------------------


def mixed_org(org: PlanOrg) -> str:
    """An org where the CSV's rows meet every case (see the comments per row); HQ's id."""
    sim = org.sim
    hq = sim.add_location("HQ", calling=True, numbers=(phone(4), phone(9)))
    other = sim.add_location("Other", calling=True)
    sim.add_location("Branch", calling=False)
    # 1: a calling user of HQ with another last name and extension: an update.
    sim.add_person("user1@example.com", last_name="Old", location_id=hq, extension="1901")
    # 2: a person without calling (directory sync): an update that makes a calling user.
    sim.add_person("user2@example.com", first_name="User", last_name="Number2")
    # 3: already as the row says, but call waiting is on: only the settings change.
    sim.add_person(
        "user3@example.com",
        first_name="User",
        last_name="Number3",
        location_id=hq,
        extension="1003",
    )
    # 4: the row's number belongs to someone else.
    sim.add_person("owner@example.com", location_id=hq, extension="1904", phone_number=phone(4))
    # 5: the row's extension belongs to someone else in HQ (and the row has no number).
    sim.add_person("holder@example.com", location_id=hq, extension="1005")
    # 6: a calling user of another location.
    sim.add_person("user6@example.com", location_id=other, extension="1006")
    org.ingest(
        [
            person(1),
            person(2),
            person(3, call_waiting_enabled="false"),
            person(4, phone_number=phone(4)),
            person(5),
            person(6),
            person(7, "Nowhere", values=False),  # 7: a new location no row describes
            person(8, "Branch", values=False),  # 8: a location without calling yet
            person(9, phone_number=phone(9)),  # 9: a new user, the number in the inventory
            person(10, phone_number=phone(10)),  # 10: a new user, a number to add
        ]
    )
    return hq


def test_a_mixed_org_plans_updates_field_by_field_and_every_blocker(org: PlanOrg) -> None:
    hq = mixed_org(org)

    result = org.plan()

    assert_exit(result, 6)  # rows blocked
    assert org.sim.write_request_count == 0
    assert last_line(result.stdout) == (
        "Plan: 3 users to create, 2 to update, 1 unchanged, 4 blocked; 0 locations to create, "
        "1 to enable for calling; 1 number to add"
    )
    assert "1 undefined (no row gives its values)" in result.stdout
    user1 = org.lines_of(1, "user")
    assert {field: (line["before"], line["after"]) for field, line in user1.items()} == {
        "lastName": ("Old", "Number1"),
        "displayName": ("Test Old", "User Number1"),
        "firstName": ("Test", "User"),
        "extension": ("1901", "1001"),
    }
    user2 = org.lines_of(2, "user")
    assert (user2["extension"]["before"], user2["extension"]["after"]) == ("", "1002")
    assert user2["locationId"]["after"] == hq
    assert user2["licenses"]["before"] == "[]"
    assert org.lines_of(3, "user")[""]["action"] == "unchanged"
    waiting = org.lines_of(3, "settings")["callWaiting.enabled"]
    assert (waiting["action"], waiting["before"], waiting["after"]) == ("update", "true", "false")
    assert org.planned_blocks() == {
        4: ("number", "number_in_use"),
        5: ("user", "extension_in_use"),
        6: ("user", "location_move_required"),
        7: ("location", "location_undefined"),
    }
    calling = org.lines_of(8, "calling")["callingEnabled"]
    assert (calling["action"], calling["before"], calling["after"]) == ("create", "false", "true")
    assert org.lines_of(9, "number")[""]["action"] == "unchanged"
    assert org.lines_of(10, "number")["phoneNumber"]["action"] == "create"


def test_work_does_what_the_plan_of_a_mixed_org_said(org: PlanOrg) -> None:
    mixed_org(org)
    assert_exit(org.plan(), 6)
    planned, blocks = org.planned_actions(), org.planned_blocks()

    org.work()

    assert org.worked_actions() == planned
    assert org.worked_blocks() == blocks


def test_a_plan_after_retry_covers_the_rows_put_back_only(org: PlanOrg) -> None:
    mixed_org(org)
    org.work()
    assert_exit(invoke("retry", "--db", org.db_url, "--reason", "number_in_use"), 0)
    writes = org.sim.write_request_count

    result = org.plan()

    assert_exit(result, 6)
    assert org.sim.write_request_count == writes
    assert last_line(result.stdout).startswith(
        "Plan: 0 users to create, 0 to update, 0 unchanged, 1 blocked"
    )
    assert org.planned_blocks() == {4: ("number", "number_in_use")}
    location = org.lines_of(4, "location")[""]
    assert (location["action"], location["message"]) == ("unchanged", "done in an earlier session")


def test_rows_the_ledger_answers_by_sql_which_would_change_their_extension(
    org: PlanOrg,
) -> None:
    mixed_org(org)
    org.plan()

    result = invoke(
        "sql",
        "SELECT row_id, email, before, after FROM v_plan WHERE field = 'extension' "
        "AND action = 'update' ORDER BY row_id",
        "--csv",
        "--db",
        org.db_url,
    )

    assert_exit(result, 0)
    assert result.stdout.splitlines() == [
        "row_id,email,before,after",
        "1,user1@example.com,1901,1001",
        "2,user2@example.com,,1002",
    ]


@pytest.mark.postgres
def test_a_plan_on_a_postgresql_ledger_is_recorded_and_replaced(
    ledger_env: LedgerEnv, postgres_ledger_url: str
) -> None:
    sim = Simulator(token=TOKEN)
    with running_server(sim) as base_url:
        org = PlanOrg(ledger_env, sim, base_url, url=postgres_ledger_url)
        mixed_org(org)
        assert_exit(org.plan(), 6)
        first = org.plan_lines()
        assert_exit(org.plan(), 6)  # the run's plan replaced, not added to

    result = invoke(
        "sql",
        "SELECT row_id, before, after FROM v_plan WHERE field = 'extension' "
        "AND action = 'update' ORDER BY row_id",
        "--csv",
        "--db",
        postgres_ledger_url,
    )
    assert_exit(result, 0)
    assert result.stdout.splitlines() == ["row_id,before,after", "1,1901,1001", "2,,1002"]
    assert org.plan_lines() == first
    assert sim.write_request_count == 0


# --- the license -----------------------------------------------------------------------------


def test_a_license_with_no_unit_left_blocks_the_users_it_would_license(
    ledger_env: LedgerEnv,
) -> None:
    sim = Simulator(token=TOKEN)
    sim.add_license("Webex Calling - Small", total_units=1, consumed_units=0)
    hq = sim.add_location("HQ", calling=True)
    sim.add_person(
        "user1@example.com",
        first_name="User",
        last_name="Number1",
        location_id=hq,
        extension="1001",
        license_name="Webex Calling - Small",
    )
    with running_server(sim) as base_url:
        org = PlanOrg(
            ledger_env, sim, base_url, extra={"WEBEX_CALLING_LICENSE": "Webex Calling - Small"}
        )
        org.ingest([person(1), person(2), person(3)])

        result = org.plan()

        assert_exit(result, 6)
        assert sim.write_request_count == 0
        assert "2 user(s) to license, units 0 left: 2 short" in result.stdout
        assert org.planned_blocks() == {
            2: ("user", "license_unavailable"),
            3: ("user", "license_unavailable"),
        }
        planned = org.planned_actions()
        org.work()
        assert org.worked_actions() == planned
        assert org.worked_blocks() == org.planned_blocks()


def test_a_license_that_runs_out_part_way_blocks_the_rows_after_the_units_left(
    ledger_env: LedgerEnv,
) -> None:
    sim = Simulator(token=TOKEN)
    sim.add_license("Webex Calling - Small", total_units=3, consumed_units=1)
    sim.add_location("HQ", calling=True)
    with running_server(sim) as base_url:
        org = PlanOrg(
            ledger_env, sim, base_url, extra={"WEBEX_CALLING_LICENSE": "Webex Calling - Small"}
        )
        org.ingest([person(n) for n in range(1, 6)])

        result = org.plan()

        assert_exit(result, 6)
        assert "5 user(s) to license, units 2 left: 3 short" in result.stdout
        assert org.planned_blocks() == {n: ("user", "license_unavailable") for n in (3, 4, 5)}
        assert org.sim.write_request_count == 0
        # `work` gives the units left to the same rows, and asks Webex for no user it cannot
        # license: no refused create, the same reason as the plan.
        planned = org.planned_actions()
        org.work()
        assert org.worked_actions() == planned
        assert org.worked_blocks() == org.planned_blocks()
        assert Traffic(sim.request_log).count("POST /v1/people") == 2


# --- the outputs -----------------------------------------------------------------------------


def test_json_has_the_content_of_plan_csv(org: PlanOrg, tmp_path: Path) -> None:
    mixed_org(org)
    folder = tmp_path / "elsewhere"

    result = org.plan("--json", "--out", str(folder))

    assert_exit(result, 6)
    document = json.loads(result.stdout)
    assert document["outcome"] == "blocked"
    assert document["users"] == {"create": 3, "update": 2, "unchanged": 1, "blocked": 4}
    assert document["blocked"]["number_in_use"]["rows"] == 1
    assert document["locations"]["to_enable_calling"] == 1
    assert document["plan_file"] == str(folder / "plan.csv")
    # The same cells, but as they are: the CSV guards those a spreadsheet would run.
    assert [{k: str(v or "") for k, v in line.items()} for line in document["lines"]] == [
        {k: restore(v) for k, v in line.items()} for line in org.plan_lines(folder)
    ]
    assert not (org.env.out_dir / "plan.csv").exists()


def test_cells_a_spreadsheet_would_run_are_guarded(org: PlanOrg) -> None:
    org.ingest([person(1, department="=HYPERLINK(1)", title="@SUM(A1)")])

    assert_exit(org.plan(), 5)

    user = org.lines_of(1, "user")
    assert user["department"]["after"] == "'=HYPERLINK(1)"
    assert user["title"]["after"] == "'@SUM(A1)"


def test_run_picks_the_run_to_plan(org: PlanOrg) -> None:
    org.ingest([person(1)], name="first.csv")
    org.ingest([person(2), person(3)], name="second.csv")

    result = org.plan("--run", "1")

    assert_exit(result, 5)
    assert {line["row_id"] for line in org.plan_lines()} == {"1"}
    assert "Plan: 1 user to create" in result.stdout


# --- when Webex refuses ----------------------------------------------------------------------


@pytest.mark.parametrize(("status", "cause"), [(401, "invalid or expired"), (403, "lacks admin")])
def test_a_plan_refused_by_webex_stops_with_exit_3_and_says_why(
    ledger_env: LedgerEnv, status: int, cause: str
) -> None:
    sim = Simulator(faults=FaultConfig(auth_failure=status), token=TOKEN)
    with running_server(sim) as base_url:
        org = PlanOrg(ledger_env, sim, base_url)
        org.ingest(fresh_rows())

        result = org.plan()

    assert_exit(result, 3)
    assert cause in result.stderr and "nothing was planned" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (ledger_env.out_dir / "plan.csv").exists()
    assert sim.write_request_count == 0


def test_a_token_revoked_mid_plan_trips_the_circuit_breaker(ledger_env: LedgerEnv) -> None:
    sim = RevokedAfterPreflight(token=TOKEN)  # 401 for everything after the license read
    with running_server(sim) as base_url:
        org = PlanOrg(ledger_env, sim, base_url)
        org.ingest([person(n) for n in range(1, 13)])

        result = org.plan()

    assert_exit(result, 3)
    assert "circuit breaker" in result.stderr and "WEBEX_ACCESS_TOKEN" in result.stderr
    assert sim.write_request_count == 0


def test_the_plan_client_sends_no_write_and_asks_nothing_of_a_location_not_made(
    tmp_path: Path,
) -> None:
    sim = Simulator(token=TOKEN)
    settings = make_settings(tmp_path, WEBEX_ACCESS_TOKEN=TOKEN)
    with ReadOnlyClient(settings, transport=sim.transport()) as client:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            with pytest.raises(InvariantError, match="a plan sends no write"):
                client.request(method, "/people", json={"emails": ["a@example.com"]})
        numbers = client.request(
            "GET", "/telephony/config/numbers", params={"locationId": AFTER_APPLY}
        )
        assert numbers.require_list("phoneNumbers") == []
        branch = sim.add_location("Branch", calling=False)  # its calling to be enabled first
        client.treat_as_empty([branch])
        numbers = client.request(
            "GET", "/telephony/config/numbers", params={"locationId": branch, "extension": "10"}
        )
        assert numbers.require_list("phoneNumbers") == []
        assert sim.total_requests == 0
        client.request("GET", "/licenses")
        client.request("GET", "/people", params={"locationId": branch})  # asked of Webex
        assert sim.total_requests == 2
        assert "Webex Calling - Professional" in {i["name"] for i in client.licenses_read()}
