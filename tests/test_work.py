"""`ledger work` end to end (SPEC sections 4-6): the product's Worker and WebexClient against the
simulator in-process. Every test checks what the ledger holds and what the artifacts say.

Faults, retries and duplicates are in test_work_faults.py; the request contract is in
test_requests_contract.py.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from ledger.executor import WorkReport
from ledger.row_rules import COLUMNS
from ledger.simulator import FaultConfig, running_server
from ledger.state_store import retry_rows
from tests.support.cli import LedgerEnv, assert_exit, invoke
from tests.support.csvfiles import write_csv
from tests.support.people import HQ_VALUES, person, phone
from tests.support.revoked import RevokedAfterPreflight
from tests.support.scripted import Scripted, error
from tests.support.work import Jobs, Traffic, mark

LOCATION_ROUTES = ("POST /v1/locations", "POST /v1/telephony/config/locations")


# --- new users and the artifacts --------------------------------------------------------------


def test_new_users_are_created_with_every_step_recorded(jobs: Jobs) -> None:
    rows = [
        person(1, phone_number=phone(1), voicemail_rings="5"),
        person(2),
        person(3, phone_number=phone(3), extension=""),
    ]
    job = jobs.start(rows)

    report = job.work()

    assert (report.ended, report.success, report.pending) == ("finished", 3, 0)
    assert job.statuses() == {"success": 3}
    assert job.step_statuses(1) == {
        "location": "created",
        "calling": "created",
        "number": "created",
        "user": "created",
        "settings": "updated",
    }
    assert job.step_statuses(2) == {
        "location": "unchanged",
        "calling": "unchanged",
        "user": "created",
    }
    assert job.step_statuses(3) == {
        "location": "unchanged",
        "calling": "unchanged",
        "number": "created",
        "user": "created",
    }
    people = job.sim.users_by_email()
    assert people == {"user1@example.com": 1, "user2@example.com": 1, "user3@example.com": 1}
    created = job.sim.person_by_email("user1@example.com")
    assert created is not None
    assert created["extension"] == "1001"
    assert created["phoneNumbers"] == [{"type": "work", "value": phone(1), "primary": True}]
    assert job.steps(1)["user"].remote_id == created["id"]
    assert job.sim.person_by_email("user3@example.com") is not None
    assert job.sim.locations_created_by_name() == {"HQ": 1}

    results = job.results()
    assert len(results) == 5 + 3 + 4
    user_line = job.results_of(1)["user"]
    assert user_line["status"] == "created"
    assert user_line["entity_type"] == "user"
    assert user_line["entity_key"] == "user1@example.com"
    assert user_line["remote_id"] == created["id"]
    assert job.results_of(2)["location"]["message"] == "provisioned once for the run"
    assert job.pending() == {}
    assert job.checkpoint()["last_completed_batch_id"] == 1
    assert job.checkpoint()["last_completed_row_id"] == 3


def test_rerun_from_an_empty_ledger_makes_no_write(jobs: Jobs) -> None:
    rows = [
        person(1, phone_number=phone(1), voicemail_enabled="false", call_waiting_enabled="false"),
        person(2, caller_id="LOCATION_NUMBER", voicemail_rings="7"),
        person(3, location="Branch", phone_number=phone(3), department="Sales", title="Agent"),
        person(4, location="Branch", values=False, caller_id="DIRECT_LINE", phone_number=phone(4)),
    ]
    first = jobs.start(rows)
    assert first.work().success == 4
    writes = first.sim.write_count
    start = mark(first.sim)

    again = jobs.start(rows, sim=first.sim)  # a new ledger, the same org
    report = again.work()

    assert (report.success, report.pending) == (4, 0)
    assert first.sim.write_count == writes
    assert Traffic.since(first.sim, start).writes() == []
    assert again.statuses() == {"success": 4}
    for row_id in range(1, 5):
        assert set(again.step_statuses(row_id).values()) == {"unchanged"}, row_id
    assert {line["status"] for line in again.results()} == {"unchanged"}
    assert len(again.results()) == len(first.results())
    # Nothing was written, so each row's records wait for its finish: one ledger write a row.
    assert again.ledger.group.writes == 4


# --- what the org already holds -----------------------------------------------------------------


def test_an_existing_location_with_the_exact_name_is_reused(jobs: Jobs) -> None:
    sim = jobs.simulator()
    location_id = sim.add_location("HQ", calling=True)
    job = jobs.start([person(1), person(2)], sim=sim)

    assert job.work().success == 2

    traffic = Traffic(sim.request_log)
    assert [traffic.count(route) for route in LOCATION_ROUTES] == [0, 0]
    assert traffic.count("PUT /v1/locations/{locationId}") == 0
    assert job.step_statuses(1)["location"] == "unchanged"
    assert job.step_statuses(1)["calling"] == "unchanged"
    assert job.steps(1)["location"].remote_id == location_id
    assert sim.person_by_email("user1@example.com")["locationId"] == location_id  # type: ignore[index]


def test_an_existing_location_without_calling_is_enabled(jobs: Jobs) -> None:
    sim = jobs.simulator()
    location_id = sim.add_location("HQ", calling=False)
    job = jobs.start([person(1, values=False)], sim=sim)

    assert job.work().success == 1

    traffic = Traffic(sim.request_log)
    assert traffic.count("POST /v1/locations") == 0
    assert traffic.count("POST /v1/telephony/config/locations") == 1
    assert job.step_statuses(1)["location"] == "unchanged"
    assert job.step_statuses(1)["calling"] == "created"
    assert sim.location(location_id)["callingEnabled"] is True  # type: ignore[index]


def test_a_location_whose_name_only_contains_the_rows_name_is_not_taken(jobs: Jobs) -> None:
    sim = jobs.simulator()
    other_id = sim.add_location("HQ West", calling=True)
    sim.add_location("Old hq", calling=True)
    job = jobs.start([person(1)], sim=sim)

    assert job.work().success == 1

    assert sim.locations_by_name() == {"HQ West": 1, "Old hq": 1, "HQ": 1}
    assert sim.locations_created_by_name() == {"HQ": 1}
    assert job.step_statuses(1)["location"] == "created"
    new_id = job.steps(1)["location"].remote_id
    assert new_id not in (None, other_id)
    assert sim.person_by_email("user1@example.com")["locationId"] == new_id  # type: ignore[index]


def test_an_existing_location_with_other_values_is_updated(jobs: Jobs) -> None:
    sim = jobs.simulator()
    location_id = sim.add_location("HQ", calling=True, time_zone="America/Denver")
    job = jobs.start([person(1, location_city="Round Rock")], sim=sim)

    assert job.work().success == 1

    assert Traffic(sim.request_log).count("PUT /v1/locations/{locationId}") == 1
    assert job.step_statuses(1)["location"] == "updated"
    location = sim.location(location_id)
    assert location is not None
    assert location["timeZone"] == "America/Chicago"
    assert location["address"]["city"] == "Round Rock"  # type: ignore[index]
    assert location["address"]["address1"] == HQ_VALUES["location_address1"]  # type: ignore[index]
    assert job.results_of(1)["location"]["status"] == "updated"


def test_an_existing_user_with_other_values_is_updated(jobs: Jobs) -> None:
    sim = jobs.simulator()
    location_id = sim.add_location("HQ", calling=True)
    person_id = sim.add_person(
        "user1@example.com", first_name="Old", last_name="Name", location_id=location_id,
        extension="1001",
    )  # fmt: skip
    job = jobs.start([person(1, title="Engineer")], sim=sim)

    assert job.work().success == 1

    assert job.step_statuses(1)["user"] == "updated"
    assert job.steps(1)["user"].remote_id == person_id
    updated = sim.person(person_id)
    assert updated is not None
    assert (updated["firstName"], updated["lastName"], updated["title"]) == (
        "User",
        "Number1",
        "Engineer",
    )
    assert updated["extension"] == "1001"
    assert Traffic(sim.request_log).count("POST /v1/people") == 0
    assert job.results_of(1)["user"]["status"] == "updated"


def test_a_calling_user_in_another_location_is_pending_location_move_required(jobs: Jobs) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    elsewhere = sim.add_location("Branch", calling=True)
    sim.add_person("user1@example.com", location_id=elsewhere, extension="1001")
    job = jobs.start([person(1), person(2)], sim=sim)

    report = job.work()

    assert (report.success, report.pending) == (1, 1)
    row = job.rows()[1]
    assert (row.status, row.reason_code, row.reason_step) == (
        "pending",
        "location_move_required",
        "user",
    )
    assert sim.person_by_email("user1@example.com")["locationId"] == elsewhere  # type: ignore[index]
    assert Traffic(sim.request_log).count("PUT /v1/people/{personId}") == 0
    line = job.pending()[1]
    assert (line["reason_code"], line["step"], line["entity_key"]) == (
        "location_move_required",
        "user",
        "user1@example.com",
    )
    assert job.rows()[2].status == "success"


def test_an_extension_taken_by_someone_else_is_pending_extension_in_use(jobs: Jobs) -> None:
    sim = jobs.simulator()
    location_id = sim.add_location("HQ", calling=True)
    sim.add_person("someone@example.com", location_id=location_id, extension="1001")
    job = jobs.start([person(1), person(2)], sim=sim)

    job.work()

    row = job.rows()[1]
    assert (row.status, row.reason_code, row.reason_step, row.http_status) == (
        "pending",
        "extension_in_use",
        "user",
        400,
    )
    assert "user1@example.com" not in sim.users_by_email()
    assert job.pending()[1]["reason_code"] == "extension_in_use"
    assert job.rows()[2].status == "success"


def extension_taken_meanwhile(request: httpx.Request) -> httpx.Response:
    """Webex's answer to a create whose extension someone else holds (errorCode 4202)."""
    message = "[Error 4202] The extension is not available."
    body = {"errorCode": 4202, "message": message, "errors": [{"errorCode": 4202}]}
    return httpx.Response(400, json=body, headers={"Trackingid": "SCRIPT"})


def test_a_failure_after_an_earlier_step_changed_webex_is_half_applied(jobs: Jobs) -> None:
    """SPEC section 5: `half_applied` when an earlier step of the row changed Webex; the message
    names the step that failed and why. (An extension already taken is found before the first
    write, test_pending_causes.py: here someone takes it between the lookups and the create.)"""
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    scripted = Scripted(sim)
    scripted.on("POST", r"^/v1/people", extension_taken_meanwhile)
    job = jobs.start([person(1, phone_number=phone(1))], sim=sim)

    job.work(scripted.transport())

    row = job.rows()[1]
    assert (row.status, row.reason_code, row.reason_step) == ("pending", "half_applied", "user")
    assert row.reason_message is not None
    assert row.reason_message.startswith("user failed after number changed Webex")
    assert "extension_in_use" in row.reason_message
    assert job.step_statuses(1)["number"] == "created"
    line = job.pending()[1]
    assert (line["reason_code"], line["step"]) == ("half_applied", "user")


def test_a_number_owned_by_someone_else_is_pending_number_in_use(jobs: Jobs) -> None:
    sim = jobs.simulator()
    location_id = sim.add_location("HQ", calling=True, numbers=(phone(1),))
    owner = sim.add_person("owner@example.com", location_id=location_id, phone_number=phone(1))
    job = jobs.start([person(1, phone_number=phone(1))], sim=sim)

    job.work()

    row = job.rows()[1]
    assert (row.status, row.reason_code, row.reason_step) == ("pending", "number_in_use", "number")
    assert Traffic(sim.request_log).count("POST /v1/people") == 0
    assert sim.person(owner)["phoneNumbers"][0]["value"] == phone(1)  # type: ignore[index]
    line = job.pending()[1]
    assert (line["reason_code"], line["step"], line["entity_type"]) == (
        "number_in_use",
        "number",
        "number",
    )


def test_a_number_in_another_location_is_pending_number_in_use(jobs: Jobs) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    sim.add_location("Branch", calling=True, numbers=(phone(1),))
    job = jobs.start([person(1, phone_number=phone(1))], sim=sim)

    job.work()

    assert job.rows()[1].reason_code == "number_in_use"
    assert "another location" in (job.rows()[1].reason_message or "")
    assert sim.users_by_email() == {}


def test_a_location_absent_and_without_values_is_location_undefined(jobs: Jobs) -> None:
    rows = [
        person(1, location="Nowhere", values=False),
        person(2, location="Nowhere", values=False),
    ]
    job = jobs.start([*rows, person(3)])

    report = job.work()

    assert (report.success, report.pending) == (1, 2)
    for row_id in (1, 2):
        row = job.rows()[row_id]
        assert (row.reason_code, row.reason_step) == ("location_undefined", "location")
        assert "time_zone" in (row.reason_message or "")
        line = job.pending()[row_id]
        assert (line["entity_type"], line["entity_key"]) == ("location", "Nowhere")
    assert job.sim.locations_created_by_name() == {"HQ": 1}


def test_every_row_of_a_location_that_failed_carries_its_reason(jobs: Jobs) -> None:
    sim = jobs.simulator()
    scripted = Scripted(sim)
    scripted.on("POST", r"^/v1/locations$", error(403, "not a full admin"), repeat=True)
    job = jobs.start([person(1), person(2), person(3, location="Branch")], sim=sim)

    report = job.work(scripted.transport())

    assert (report.success, report.pending) == (0, 3)
    first, second = job.rows()[1], job.rows()[2]
    assert (first.reason_code, first.reason_step, first.http_status) == (
        "forbidden",
        "location",
        403,
    )
    assert "HQ" in (first.reason_message or "")
    assert (second.reason_code, second.reason_step) == ("forbidden", "location")
    assert "HQ" in (second.reason_message or "")
    assert "not a full admin" in (second.reason_message or "")
    assert scripted.count("POST", r"^/v1/locations$") == 2  # HQ once, Branch once
    assert job.pending()[2]["reason_code"] == "forbidden"
    assert job.rows()[3].reason_code == "forbidden"  # Branch's own POST was refused too


def test_an_exhausted_license_is_pending_license_unavailable(jobs: Jobs) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    sim.add_license("Webex Calling - Pilot", total_units=5, consumed_units=5)
    job = jobs.start([person(1), person(2)], sim=sim, WEBEX_CALLING_LICENSE="Webex Calling - Pilot")

    report = job.work()

    assert (report.success, report.pending) == (0, 2)
    for row_id in (1, 2):
        row = job.rows()[row_id]
        assert (row.reason_code, row.reason_step) == ("license_unavailable", "user")
        assert "5/5" in (row.reason_message or "")
    assert Traffic(sim.request_log).count("POST /v1/people") == 0
    assert job.pending()[1]["reason_code"] == "license_unavailable"


def test_an_exhausted_license_does_not_stop_users_who_already_hold_it(jobs: Jobs) -> None:
    """A run that used the last unit is re-run (or resumed): its users hold the license already
    and need no new unit, so they are success, not license_unavailable."""
    sim = jobs.simulator()
    sim.add_license("Webex Calling - Pilot", total_units=2)
    rows = [person(1), person(2)]
    first = jobs.start(rows, sim=sim, WEBEX_CALLING_LICENSE="Webex Calling - Pilot")
    assert first.work().success == 2  # the two units are now consumed

    again = jobs.start(rows, sim=sim, WEBEX_CALLING_LICENSE="Webex Calling - Pilot")
    report = again.work()

    assert (report.success, report.pending) == (2, 0)
    assert again.step_statuses(1)["user"] == "unchanged"


# --- locations once per run ---------------------------------------------------------------------


def test_a_location_is_provisioned_once_for_many_rows_and_batches(jobs: Jobs) -> None:
    job = jobs.start([person(n) for n in range(1, 13)], BATCH_SIZE=4)

    report = job.work()

    assert (report.batches, report.success) == (3, 12)
    traffic = Traffic(job.sim.request_log)
    assert [traffic.count(route) for route in LOCATION_ROUTES] == [1, 1]
    assert traffic.count("GET /v1/locations") == 1
    created = [
        row_id for row_id in range(1, 13) if job.step_statuses(row_id)["location"] == "created"
    ]
    assert created == [1]
    ids = {job.steps(row_id)["location"].remote_id for row_id in range(1, 13)}
    assert len(ids) == 1


def test_a_restart_reuses_the_recorded_location_id(jobs: Jobs) -> None:
    job = jobs.start([person(n) for n in range(1, 7)], BATCH_SIZE=3)
    first = job.work(MAX_BATCHES=1)
    assert (first.ended, first.success) == ("max_batches", 3)
    start = mark(job.sim)

    second = job.work(worker_id="worker-2")

    assert (second.ended, second.success) == ("finished", 3)
    traffic = Traffic.since(job.sim, start)
    assert traffic.count("GET /v1/locations") == 0
    assert traffic.count("GET /v1/telephony/config/locations/{locationId}") == 0
    assert [traffic.count(route) for route in LOCATION_ROUTES] == [0, 0]
    location_id = job.steps(1)["location"].remote_id
    assert job.steps(6)["location"].remote_id == location_id
    assert job.sim.person_by_email("user6@example.com")["locationId"] == location_id  # type: ignore[index]


def test_a_retry_after_calling_failed_reuses_the_created_location(jobs: Jobs) -> None:
    sim = jobs.simulator()
    scripted = Scripted(sim)
    refused = error(400, "Invalid announcement language")
    scripted.on("POST", r"^/v1/telephony/config/locations$", refused)
    job = jobs.start([person(1), person(2)], sim=sim)

    job.work(scripted.transport())

    first, second = job.rows()[1], job.rows()[2]
    assert (first.reason_code, first.reason_step, first.http_status) == (
        "bad_request",
        "calling",
        400,
    )
    assert (second.reason_code, second.reason_step) == ("bad_request", "calling")
    assert job.pending()[1]["step"] == "calling"
    assert sim.locations_created_by_name() == {"HQ": 1}

    assert retry_rows(job.ledger, job.run.id) == 2  # what `ledger retry` does
    start = mark(sim)
    report = job.work(scripted.transport(), worker_id="worker-2")

    assert (report.success, report.pending) == (2, 0)
    traffic = Traffic.since(sim, start)
    assert traffic.count("GET /v1/locations") == 0  # the recorded id is used
    assert traffic.count("POST /v1/locations") == 0
    assert traffic.count("POST /v1/telephony/config/locations") == 1
    assert sim.locations_created_by_name() == {"HQ": 1}
    assert job.step_statuses(1)["calling"] == "created"
    assert job.steps(2)["location"].remote_id == job.steps(1)["location"].remote_id


def test_two_workers_at_once_provision_a_shared_location_once(jobs: Jobs) -> None:
    sim = jobs.simulator()
    scripted = Scripted(sim)
    # Hold the creating worker inside its POST so that the other one finds the location claimed.
    scripted.on("POST", r"^/v1/locations$", hook=lambda _request: time.sleep(0.6))
    job = jobs.start([person(n) for n in range(1, 9)], sim=sim, BATCH_SIZE=4)
    reports: dict[str, WorkReport] = {}

    def work(worker_id: str) -> None:
        reports[worker_id] = job.work(scripted.transport(), worker_id=worker_id)

    threads = [threading.Thread(target=work, args=(f"worker-{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sum(report.success for report in reports.values()) == 8
    assert all(report.batches == 1 for report in reports.values()), reports
    assert job.statuses() == {"success": 8}
    assert scripted.count("POST", r"^/v1/locations$") == 1
    assert scripted.count("POST", r"^/v1/telephony/config/locations$") == 1
    assert sim.locations_created_by_name() == {"HQ": 1}
    created = [n for n in range(1, 9) if job.step_statuses(n)["location"] == "created"]
    assert len(created) == 1


def test_requests_per_row_new_users_then_a_rerun(jobs: Jobs) -> None:
    """The request budget of a row (SPEC section 4's lookups and writes, nothing more)."""
    rows = [
        *(person(n) for n in range(1, 11)),  # extension only, no settings: lookup + create
        *(person(n, phone_number=phone(n), call_waiting_enabled="false") for n in range(11, 21)),
    ]
    first = jobs.start(rows)
    assert first.work().success == 20
    new = Traffic(first.sim.request_log).routes()

    start = mark(first.sim)
    again = jobs.start(rows, sim=first.sim)
    assert again.work().success == 20
    rerun = Traffic.since(first.sim, start).routes()

    assert new == {
        "GET /v1/licenses": 1,
        "GET /v1/locations": 1,
        "POST /v1/locations": 1,
        "POST /v1/telephony/config/locations": 1,
        # Read once for the batch: the location's number inventory (which also tells whether
        # someone else holds a row's extension) and the org's people; the numbers the
        # inventory lacks are added in one request.
        "GET /v1/telephony/config/numbers": 1,
        "POST /v1/telephony/config/locations/{locationId}/numbers": 1,
        "GET /v1/people": 1,
        "POST /v1/people": 20,
        # A user created a moment ago: call waiting is written without a read.
        "PUT /v1/people/{personId}/features/callWaiting": 10,
    }
    assert rerun == {
        "GET /v1/licenses": 1,
        "GET /v1/locations": 1,
        "GET /v1/telephony/config/locations/{locationId}": 1,
        # The org's people, listed once: a person who has the number proves it is in the
        # inventory, which is then not read.
        "GET /v1/people": 1,
        "GET /v1/people/{personId}/features/callWaiting": 10,
    }


# --- fencing ------------------------------------------------------------------------------------


def test_a_worker_whose_claim_was_taken_over_cannot_record_over_the_new_owner(jobs: Jobs) -> None:
    sim = jobs.simulator()
    job = jobs.start([person(1)], sim=sim)
    reports = {}

    def take_over(_request: object) -> None:
        # Worker 1's POST /people was applied; its lease "expires" and worker 2 takes the row.
        assert job.expire_leases() == 1
        reports["worker-2"] = job.work(worker_id="worker-2")

    scripted = Scripted(sim)
    scripted.on("POST", r"^/v1/people\?", hook=take_over)
    # One batch for worker 1: its pipeline would otherwise claim ahead while the row is in
    # flight and could take the expired row back itself, before worker 2 looks.
    reports["worker-1"] = job.work(
        scripted.transport(), worker_id="worker-1", LEDGER_CONCURRENCY=1, MAX_BATCHES=1
    )

    assert reports["worker-2"].success == 1
    assert reports["worker-1"].success == 0
    assert reports["worker-1"].pending == 0
    row = job.rows()[1]
    assert (row.status, row.claimed_by) == ("success", None)
    # Worker 2 met the `started` record, looked up with settle, found the user: no second POST.
    assert job.step_statuses(1)["user"] == "unchanged"
    assert sim.people_created_by_email() == {"user1@example.com": 1}
    assert Traffic(sim.request_log).count("POST /v1/people") == 1
    assert job.results_of(1)["user"]["status"] == "unchanged"


# --- circuit breaker ----------------------------------------------------------------------------


# A token refused from the start stops `work` before any row (test_work_preflight.py): the
# breaker is for a token revoked mid-run, which RevokedAfterPreflight plays.


def test_the_circuit_breaker_stops_work_and_leaves_unworked_rows_ready(jobs: Jobs) -> None:
    job = jobs.start(
        [person(n) for n in range(1, 61)],
        sim=RevokedAfterPreflight(clock=jobs.time.monotonic),
        BATCH_SIZE=30,
        LEDGER_CONCURRENCY=4,
    )

    report = job.work()

    assert report.ended == "breaker"
    assert report.batches == 1
    statuses = job.statuses()
    assert 10 <= statuses["pending"] <= 10 + 4
    assert statuses["ready"] == 60 - statuses["pending"]
    assert set(statuses) == {"pending", "ready"}
    assert report.released == 30 - statuses["pending"]
    assert all(job.rows()[n].status == "ready" for n in range(31, 61))
    pending = job.pending()
    assert len(pending) == statuses["pending"]
    assert {line["http_status"] for line in pending.values()} == {"401"}
    assert job.results() == []
    assert job.checkpoint()["last_completed_batch_id"] == 0


def test_after_the_breaker_and_a_fixed_token_the_ready_rows_succeed(jobs: Jobs) -> None:
    job = jobs.start(
        [person(n) for n in range(1, 31)],
        sim=RevokedAfterPreflight(clock=jobs.time.monotonic),
        BATCH_SIZE=30,
        LEDGER_CONCURRENCY=1,
    )
    assert job.work().ended == "breaker"
    job.sim.set_faults(FaultConfig())

    report = job.work(worker_id="worker-2")

    assert report.ended == "finished"
    assert report.success == 20


def test_the_circuit_breaker_exits_3_through_the_cli(
    tmp_path: Path, ledger_env: LedgerEnv, jobs: Jobs
) -> None:
    csv_path = write_csv(tmp_path / "people.csv", COLUMNS, [person(n) for n in range(1, 61)])
    sim = RevokedAfterPreflight(clock=jobs.time.monotonic)
    env = {"BATCH_SIZE": "30", "LEDGER_CONCURRENCY": "2", "RETRY_BACKOFF_S": "0.01"}
    assert_exit(invoke("ingest", str(csv_path), "--db", ledger_env.db_url, env=env), 0)

    with running_server(sim) as base_url:
        env |= {"WEBEX_BASE_URL": base_url, "WEBEX_ACCESS_TOKEN": "expired-token"}
        result = invoke("work", "--db", ledger_env.db_url, "--quiet", env=env)

    assert_exit(result, 3)
    assert "circuit breaker" in result.stderr
    assert "expired-token" not in result.stdout + result.stderr
    with closing(sqlite3.connect(ledger_env.db_url.removeprefix("sqlite:///"))) as db:
        counts = dict(db.execute("select status, count(*) from rows group by status").fetchall())
    assert 10 <= counts["pending"] <= 12
    assert counts["ready"] == 60 - counts["pending"]
    pending_csv = (ledger_env.out_dir / "pending_rows.csv").read_text().splitlines()
    assert len(pending_csv) == 1 + counts["pending"]


# --- compensation -------------------------------------------------------------------------------


@pytest.mark.parametrize("compensate", [True, False])
def test_safe_compensation_deletes_the_user_a_failed_row_created(
    jobs: Jobs, compensate: bool
) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    scripted = Scripted(sim)
    scripted.on("PUT", r"/features/voicemail$", error(400, "Invalid voicemail settings"))
    job = jobs.start([person(1, voicemail_rings="6")], sim=sim, ENABLE_SAFE_COMPENSATION=compensate)

    job.work(scripted.transport())

    row = job.rows()[1]
    assert (row.status, row.reason_code, row.reason_step) == ("pending", "half_applied", "settings")
    message = row.reason_message or ""
    assert message.startswith("settings failed after user changed Webex: bad_request")
    assert sim.people_created_by_email() == {"user1@example.com": 1}
    if compensate:
        assert sim.users_by_email() == {}
        assert scripted.count("DELETE", r"^/v1/people/") == 1
        assert "the user created in this run was deleted (compensation)" in message
        assert job.step_statuses(1)["user"] == "failed"
        assert "deleted by compensation" in (job.steps(1)["user"].message or "")
    else:
        assert sim.users_by_email() == {"user1@example.com": 1}
        assert scripted.count("DELETE", "") == 0
        assert "compensation" not in message
        assert job.step_statuses(1)["user"] == "created"
    assert job.pending()[1]["reason_message"] == message


# --- settings -----------------------------------------------------------------------------------


def test_only_the_settings_a_row_names_are_read_and_written(jobs: Jobs) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    job = jobs.start(
        [
            person(1, call_waiting_enabled="false"),
            person(2, phone_number=phone(2), voicemail_enabled="no", voicemail_rings="8",
                   caller_id="LOCATION_NUMBER"),
            person(3),
        ],
        sim=sim,
    )  # fmt: skip

    assert job.work().success == 3

    first = sim.person_by_email("user1@example.com")
    second = sim.person_by_email("user2@example.com")
    assert first is not None and second is not None
    paths = [(r.method, r.path) for r in sim.request_log if "/features/" in r.path]
    first_paths = sorted(p for p in paths if first["id"] in p[1])  # type: ignore[operator]
    # Users created a moment ago: call waiting and caller ID are written without a read;
    # voicemail is read first (its PUT needs the current notifications and transfer number).
    assert first_paths == [
        ("PUT", f"/v1/people/{first['id']}/features/callWaiting"),
    ]
    assert not any("user3" in p for _, p in paths)
    assert len(paths) == 1 + 3  # row 2: voicemail read then written, callerId written

    settings_one = sim.person_settings(str(first["id"]))
    assert settings_one["callWaiting"] is False
    assert settings_one["voicemail"]["enabled"] is True  # type: ignore[index]
    settings_two = sim.person_settings(str(second["id"]))
    voicemail = settings_two["voicemail"]
    assert isinstance(voicemail, dict)
    assert voicemail["enabled"] is False
    assert voicemail["sendUnansweredCalls"]["numberOfRings"] == 8
    assert voicemail["sendBusyCalls"] == {
        "enabled": True,
        "greeting": "DEFAULT",
        "greetingUploaded": False,
    }
    assert settings_two["callerId"]["selected"] == "LOCATION_NUMBER"  # type: ignore[index]
    assert settings_two["callWaiting"] is True
    put_bodies = [r.body for r in sim.request_log if r.method == "PUT" and "callWaiting" in r.path]
    assert put_bodies == [{"enabled": False}]
    assert job.step_statuses(1)["settings"] == "updated"
    assert "settings" not in job.step_statuses(3)
    assert "settings" not in job.results_of(3)


def test_settings_that_already_match_make_no_put(jobs: Jobs) -> None:
    sim = jobs.simulator()
    hq = sim.add_location("HQ", calling=True)
    # A calling user who already exists, as the row has them (a user this run creates has
    # its settings written without a read): voicemail on with 3 rings, call waiting on.
    sim.add_person(
        "user1@example.com", first_name="User", last_name="Number1", location_id=hq,
        extension="1001",
    )  # fmt: skip
    job = jobs.start(
        [person(1, voicemail_enabled="true", voicemail_rings="3", call_waiting_enabled="yes")],
        sim=sim,
    )

    assert job.work().success == 1

    traffic = Traffic(sim.request_log)
    assert traffic.count("GET /v1/people/{personId}/features/voicemail") == 1
    assert traffic.count("GET /v1/people/{personId}/features/callWaiting") == 1
    assert [r for r in traffic.writes() if "/features/" in r.path] == []
    assert job.step_statuses(1)["settings"] == "unchanged"
    assert job.results_of(1)["settings"]["status"] == "unchanged"
