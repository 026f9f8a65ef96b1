"""A batch's lookups answered from listings read once, and its numbers added in bulk (SPEC
section 4), through `work` against the simulator in-process: what it costs, and that a listing
that is stale or lags behind Webex never makes a second person.
"""

from __future__ import annotations

import json

import httpx

from tests.support.people import person, phone
from tests.support.scripted import (
    PEOPLE_LISTING,
    Scripted,
    error,
    looked_up_row_by_row,
)
from tests.support.system_checks import person_differences
from tests.support.work import Jobs, Traffic, mark

PEOPLE_CREATE = r"^/v1/people\?callingData=true$"
PEOPLE_LOOKUP = r"^/v1/people\?.*email="
NUMBERS_ADD = r"^/v1/telephony/config/locations/[^/]+/numbers$"


def numbers_sent(scripted: Scripted) -> list[list[str]]:
    """The numbers each add request carried, in order."""
    return [
        list(sent.body["phoneNumbers"])
        for sent in scripted.log
        if sent.method == "POST" and sent.path.endswith("/numbers")
    ]


# --- people -------------------------------------------------------------------------------------


def test_a_person_created_by_someone_else_after_the_listing_is_updated_not_duplicated(
    jobs: Jobs,
) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    scripted = Scripted(sim)

    def directory_sync(_request: httpx.Request) -> None:
        # Someone else makes user1 (without calling) right after the batch read the org.
        sim.add_person("user1@example.com", first_name="Synced", last_name="Elsewhere")

    scripted.on("GET", PEOPLE_LISTING, hook=directory_sync)
    rows = [person(1, phone_number=phone(1), call_waiting_enabled="false"), person(2)]
    job = jobs.start(rows, sim=sim)

    report = job.work(scripted.transport())

    assert (report.success, report.pending) == (2, 0)
    assert sim.users_by_email() == {"user1@example.com": 1, "user2@example.com": 1}
    # user1's create was refused ("already exists"), its own lookup found the person, and an
    # update made it the row's calling user.
    assert scripted.count("POST", PEOPLE_CREATE) == 2
    assert scripted.count("GET", r"^/v1/people\?.*email=user1@") >= 1
    assert scripted.count("GET", r"^/v1/people\?.*email=user2@") == 0
    assert scripted.count("PUT", r"^/v1/people/[^/?]+\?") == 1
    user = job.steps(1)["user"]
    assert user.status == "updated"
    assert "409" in (user.message or "")
    assert person_differences(sim, rows[0]) == []
    # Not a person this run created: its call waiting was read before it was written.
    assert scripted.count("GET", r"/features/callWaiting$") == 1


def test_people_in_the_org_without_calling_cost_an_update_found_by_the_listing(
    jobs: Jobs,
) -> None:
    sim = jobs.simulator()
    branch = sim.add_location("Branch", calling=True)
    sim.add_location("HQ", calling=True)
    sim.add_person("user1@example.com", first_name="Synced")  # directory sync, no calling
    sim.add_person("user2@example.com", location_id=branch, extension="7002")  # elsewhere
    scripted = Scripted(sim)
    rows = [person(1, phone_number=phone(1)), person(2), person(3)]
    job = jobs.start(rows, sim=sim)

    report = job.work(scripted.transport())

    assert (report.success, report.pending) == (2, 1)
    assert scripted.count("GET", PEOPLE_LOOKUP) == 0  # no lookup of their own
    assert scripted.count("POST", PEOPLE_CREATE) == 1  # user3 only: no create refused
    assert scripted.count("PUT", r"^/v1/people/[^/?]+\?") == 1  # user1
    assert job.step_statuses(1)["user"] == "updated"
    assert person_differences(sim, rows[0]) == []
    assert job.rows()[2].reason_code == "location_move_required"


def test_an_org_too_large_to_list_is_looked_up_row_by_row(jobs: Jobs) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    scripted = looked_up_row_by_row(Scripted(sim))
    rows = [person(n) for n in range(1, 4)]
    job = jobs.start(rows, sim=sim)

    report = job.work(scripted.transport())

    assert report.success == 3
    # The listing was given up after as many pages as the batch has rows.
    assert scripted.count("GET", PEOPLE_LISTING) == 3
    for n in range(1, 4):
        assert scripted.count("GET", rf"^/v1/people\?.*email=user{n}@") == 1
    assert sim.people_created_by_email() == {f"user{n}@example.com": 1 for n in range(1, 4)}


def test_a_listing_that_fails_leaves_each_row_to_its_own_lookup(jobs: Jobs) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    scripted = Scripted(sim)
    scripted.on("GET", PEOPLE_LISTING, error(503), repeat=True)
    job = jobs.start([person(1), person(2)], sim=sim)

    report = job.work(scripted.transport())

    assert report.success == 2
    assert scripted.count("GET", PEOPLE_LISTING) == 3  # retried, then given up (MAX_RETRIES=2)
    assert scripted.count("GET", PEOPLE_LOOKUP) == 2
    assert sim.people_created_by_email() == {"user1@example.com": 1, "user2@example.com": 1}


def test_a_rerun_from_an_empty_ledger_makes_no_write_and_reads_only_settings(
    jobs: Jobs,
) -> None:
    rows = [
        person(1, phone_number=phone(1), voicemail_rings="5", caller_id="DIRECT_LINE"),
        person(2, phone_number=phone(2), call_waiting_enabled="false"),
        person(3, department="Sales", title="Agent"),
        person(4, "Branch", phone_number=phone(4), voicemail_enabled="false"),
    ]
    first = jobs.start(rows)
    assert first.work().success == 4
    start = mark(first.sim)

    again = jobs.start(rows, sim=first.sim)
    report = again.work()

    assert report.success == 4
    traffic = Traffic.since(first.sim, start)
    assert traffic.writes() == []
    assert traffic.routes() == {
        "GET /v1/licenses": 1,
        "GET /v1/locations": 2,  # each location by name
        "GET /v1/telephony/config/locations/{locationId}": 2,  # each one's calling
        "GET /v1/people": 1,  # the org, one page: no lookup per row, no number lookup
        "GET /v1/people/{personId}/features/voicemail": 2,
        "GET /v1/people/{personId}/features/callerId": 1,
        "GET /v1/people/{personId}/features/callWaiting": 1,
    }
    assert {again.step_statuses(n)["user"] for n in range(1, 5)} == {"unchanged"}


# --- numbers ------------------------------------------------------------------------------------


def test_a_location_s_missing_numbers_are_added_in_one_request(jobs: Jobs) -> None:
    sim = jobs.simulator()
    hq = sim.add_location("HQ", calling=True, numbers=(phone(2),))
    scripted = Scripted(sim)
    rows = [person(n, phone_number=phone(n)) for n in range(1, 6)]
    job = jobs.start(rows, sim=sim)

    report = job.work(scripted.transport())

    assert report.success == 5
    assert numbers_sent(scripted) == [[phone(1), phone(3), phone(4), phone(5)]]
    asked = [dict(s.query) for s in scripted.log if s.path.endswith("/config/numbers")]
    assert asked == [{"locationId": hq, "start": "0", "max": "2000"}]  # read once, per location
    for n in (1, 3, 4, 5):
        assert job.step_statuses(n)["number"] == "created"
        assert job.steps(n)["number"].attempts == 1  # recorded `started`, once, before the add
    assert job.step_statuses(2)["number"] == "unchanged"  # in the inventory already
    assert scripted.count("GET", r"^/v1/telephony/config/numbers\?.*phoneNumber=") == 0


def test_an_extension_freed_since_the_inventory_was_read_does_not_block_a_row(
    jobs: Jobs,
) -> None:
    """The inventory is kept for the session: row 1 (batch 1) moves someone off extension 1001,
    which row 2 (batch 2) then wants. The kept inventory still shows 1001 held; before the row
    is blocked, Webex is asked again, and it is free."""
    sim = jobs.simulator()
    hq = sim.add_location("HQ", calling=True)
    sim.add_person(
        "user1@example.com", first_name="User", last_name="Number1", location_id=hq,
        extension="1001",
    )  # fmt: skip
    rows = [
        person(1, extension="1009", phone_number=phone(1)),
        person(2, extension="1001", phone_number=phone(2)),
    ]
    job = jobs.start(rows, sim=sim, BATCH_SIZE=1)

    report = job.work()

    assert (report.success, report.pending) == (2, 0)
    inventory_reads = [r for r in sim.request_log if r.route == "GET /v1/telephony/config/numbers"]
    assert [dict(r.query) for r in inventory_reads] == [
        {"locationId": hq, "start": "0", "max": "2000"},  # batch 1: read and kept
        {"locationId": hq, "extension": "1001"},  # batch 2: the kept one says held: asked
    ]
    for row in rows:
        assert person_differences(sim, row) == []


def test_rows_whose_number_was_added_are_finished_when_work_is_asked_to_stop(
    jobs: Jobs,
) -> None:
    """SIGINT/SIGTERM finish the rows in flight: a row whose number the batch's preparation
    added has started. The others go back to ready, untouched."""
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    scripted = Scripted(sim)
    rows = [person(n, phone_number=phone(n)) if n % 2 == 0 else person(n) for n in range(1, 5)]
    job = jobs.start(rows, sim=sim)
    worker = job.worker(scripted.transport(), LEDGER_CONCURRENCY=1)
    # The stop arrives while the first row creates its user.
    scripted.on("POST", PEOPLE_CREATE, hook=lambda _request: worker.stop.set())

    report = worker.run()

    assert report.ended == "stopped"
    statuses = {n: view.status for n, view in job.rows().items()}
    assert statuses == {1: "success", 2: "success", 3: "ready", 4: "success"}
    assert job.steps(3) == {}


def test_a_number_in_another_location_is_set_aside_and_the_others_are_added(
    jobs: Jobs,
) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    sim.add_location("Branch", calling=True, numbers=(phone(3),))
    scripted = Scripted(sim)
    rows = [person(n, phone_number=phone(n)) for n in range(1, 6)]
    job = jobs.start(rows, sim=sim)

    report = job.work(scripted.transport())

    assert (report.success, report.pending) == (4, 1)
    # Webex refused the whole request naming phone(3): sent again without it.
    everyone = [phone(n) for n in range(1, 6)]
    assert numbers_sent(scripted) == [everyone, [p for p in everyone if p != phone(3)]]
    row = job.rows()[3]
    assert (row.status, row.reason_code, row.reason_step) == ("pending", "number_in_use", "number")
    assert "another location" in (row.reason_message or "")
    assert "user3@example.com" not in sim.users_by_email()
    assert {n for n, view in job.rows().items() if view.status == "pending"} == {3}


def test_a_refusal_that_names_no_number_is_narrowed_down_to_that_number(jobs: Jobs) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    scripted = Scripted(sim)
    inner = sim.transport()

    def refuse_phone_6(request: httpx.Request) -> httpx.Response:
        carried = json.loads(request.content)["phoneNumbers"]
        if phone(6) in carried:
            body = {"message": "One of the numbers cannot be added.", "trackingId": "SCRIPT"}
            return httpx.Response(400, json=body, headers={"Trackingid": "SCRIPT"})
        return inner.handle_request(request)

    scripted.on("POST", NUMBERS_ADD, refuse_phone_6, repeat=True)
    rows = [person(n, phone_number=phone(n)) for n in range(1, 9)]
    job = jobs.start(rows, sim=sim)

    report = job.work(scripted.transport())

    assert (report.success, report.pending) == (7, 1)
    row = job.rows()[6]
    assert (row.reason_code, row.reason_step, row.http_status) == ("bad_request", "number", 400)
    assert "cannot be added" in (row.reason_message or "")
    sent = numbers_sent(scripted)
    assert [phone(6)] in sent  # split until the refusal stood alone
    assert len(sent) <= 2 * len(rows)
    added = {number for carried in sent for number in carried if phone(6) not in carried}
    assert added == {phone(n) for n in range(1, 9) if n != 6}
    assert set(sim.users_by_email()) == {f"user{n}@example.com" for n in range(1, 9) if n != 6}


def test_a_bulk_add_whose_answer_was_lost_is_decided_by_the_inventory(jobs: Jobs) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    scripted = Scripted(sim)
    # Applied, then answered 502 every time: the client's retries are lost too.
    scripted.on("POST", NUMBERS_ADD, error(502, "Bad Gateway"), after=True, repeat=True)
    rows = [person(n, phone_number=phone(n)) for n in range(1, 4)]
    job = jobs.start(rows, sim=sim)

    report = job.work(scripted.transport())

    assert report.success == 3
    assert scripted.count("GET", r"^/v1/telephony/config/numbers\?locationId=") == 2  # re-read
    number = job.steps(1)["number"]
    assert number.status == "created"
    assert "the answer was lost" in (number.message or "")


def test_a_bulk_add_that_never_reached_webex_leaves_only_its_rows_pending(jobs: Jobs) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    scripted = Scripted(sim)
    scripted.on("POST", NUMBERS_ADD, error(503, "Service Unavailable"), repeat=True)
    rows = [person(1, phone_number=phone(1)), person(2), person(3, phone_number=phone(3))]
    job = jobs.start(rows, sim=sim)

    report = job.work(scripted.transport())

    assert (report.success, report.pending) == (1, 2)
    for n in (1, 3):
        row = job.rows()[n]
        assert (row.reason_code, row.reason_step, row.http_status) == (
            "retry_exhausted",
            "number",
            503,
        )
    assert set(sim.users_by_email()) == {"user2@example.com"}


# --- settings -----------------------------------------------------------------------------------


def test_a_user_created_now_gets_the_settings_that_need_no_current_value_without_a_read(
    jobs: Jobs,
) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    rows = [
        person(1, phone_number=phone(1), call_waiting_enabled="false", caller_id="DIRECT_LINE"),
        person(2, caller_id="DIRECT_LINE"),  # no number: Webex does not offer it, read first
        person(3, voicemail_rings="7"),  # voicemail's PUT needs current values: read first
    ]
    job = jobs.start(rows, sim=sim)

    job.work()

    traffic = Traffic(sim.request_log)
    assert traffic.count("GET /v1/people/{personId}/features/callWaiting") == 0
    assert traffic.count("PUT /v1/people/{personId}/features/callWaiting") == 1
    assert traffic.count("GET /v1/people/{personId}/features/callerId") == 1  # row 2 only
    assert traffic.count("PUT /v1/people/{personId}/features/callerId") == 1  # row 1
    assert traffic.count("GET /v1/people/{personId}/features/voicemail") == 1
    assert traffic.count("PUT /v1/people/{personId}/features/voicemail") == 1
    assert job.rows()[1].status == job.rows()[3].status == "success"
    assert job.rows()[2].reason_code == "half_applied"  # as before: DIRECT_LINE refused
    first = sim.person_by_email("user1@example.com")
    assert first is not None
    settings = sim.person_settings(str(first["id"]))
    assert settings["callWaiting"] is False
    assert settings["callerId"]["selected"] == "DIRECT_LINE"  # type: ignore[index]
