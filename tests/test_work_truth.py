"""A success is true (SPEC section 5): what Webex holds for a success row matches the row.

An entity found by a lookup after a create whose answer did not give it (a timeout, a 5xx, a
dropped connection, "400 but created", a 409 "already exists") is compared with the row through
its step's own decide and completed by an update, never taken on trust; and a row that comes
back through `ledger retry` looks the steps it recorded before up again.
"""

from __future__ import annotations

from typing import Any

import httpx

from ledger.simulator import FaultConfig, Simulator
from ledger.state_store import retry_rows
from tests.support.people import person, phone
from tests.support.scripted import Scripted, error, read_timeout
from tests.support.system_checks import person_differences
from tests.support.work import Jobs, Traffic, mark

PEOPLE_CREATE = r"^/v1/people\?callingData=true$"
PUT_PERSON = "PUT /v1/people/{personId}"


def api(sim: Simulator) -> httpx.Client:
    """A client of the simulator in-process: what an administrator changes by hand."""
    return httpx.Client(
        transport=sim.transport(),
        base_url="https://webex.test/v1",
        headers={"Authorization": "Bearer admin"},
    )


def take_calling_away(sim: Simulator, email: str) -> None:
    """Leave the person without its calling part (no location, number, extension or calling
    license), as Webex's "400 but created" can leave a new person."""
    found = sim.person_by_email(email)
    assert found is not None
    kept = ("emails", "displayName", "firstName", "lastName")
    body: dict[str, Any] = {key: found[key] for key in kept if key in found}
    with api(sim) as client:
        answer = client.put(f"/people/{found['id']}", json=body | {"licenses": []})
    assert answer.status_code == 200, answer.text
    assert "locationId" not in (sim.person_by_email(email) or {})


def test_a_person_created_without_its_calling_part_is_completed_by_an_update(
    jobs: Jobs,
) -> None:
    """Every create answers "400 but created" and leaves the person without location, license,
    extension or number: the lookup finds them, the comparison sees what is missing, an
    update completes them, and the settings are written to a calling user."""
    faults = FaultConfig(people_create_400_rate=1.0, people_create_400_without_calling_share=1.0)
    rows = [
        person(1, phone_number=phone(1), voicemail_rings="7", department="Sales"),
        person(2, title="Agent"),
    ]
    job = jobs.start(rows, faults=faults)

    report = job.work()

    assert (report.success, report.pending) == (2, 0), job.rows()
    for row in rows:
        assert person_differences(job.sim, row) == []
    assert job.sim.people_created_by_email() == {"user1@example.com": 1, "user2@example.com": 1}
    traffic = Traffic(job.sim.request_log)
    assert traffic.count("POST /v1/people") == 2
    assert traffic.count(PUT_PERSON) == 2
    user = job.steps(1)["user"]
    assert (user.status, user.http_status) == ("created", 200)
    assert user.message == (
        "created although Webex answered 400; found incomplete, completed by an update"
    )
    assert job.step_statuses(1)["settings"] == "updated"


def test_a_create_answered_409_after_a_lost_answer_finds_the_person(jobs: Jobs) -> None:
    """The first create is applied but answered 503, and the new person stays invisible to the
    lookup by email for longer than the settle: the second create is refused with 409. That
    person is looked up (settling again) and used, never left pending `conflict`."""
    sim = jobs.simulator(FaultConfig(lookup_delay_s=8))
    sim.add_location("HQ", calling=True)
    scripted = Scripted(sim)
    scripted.on("POST", PEOPLE_CREATE, error(503, "Service Unavailable"), after=True)
    job = jobs.start([person(1)], sim=sim, LOOKUP_SETTLE_S=5)

    report = job.work(scripted.transport())

    assert (report.success, report.pending) == (1, 0), job.rows()[1]
    assert scripted.count("POST", PEOPLE_CREATE) == 2
    assert sim.people_created_by_email() == {"user1@example.com": 1}
    user = job.steps(1)["user"]
    assert (user.status, user.http_status) == ("created", 409)
    assert user.message == "created; the answer was lost, then Webex answered 409"
    assert user.remote_id == (sim.person_by_email("user1@example.com") or {}).get("id")
    assert person_differences(sim, person(1)) == []


def test_a_location_found_after_a_lost_answer_is_compared_and_completed(jobs: Jobs) -> None:
    """The location's create times out after Webex applied part of it (here: another time
    zone): the lookup finds it, the comparison with the file sees the difference, an update
    fixes it."""
    sim = jobs.simulator()
    scripted = Scripted(sim)

    def half_applied(request: httpx.Request) -> None:
        with api(sim) as client:
            found = client.get("/locations", params={"name": "HQ"}).json()["items"][0]
            changed = {key: found[key] for key in ("name", "preferredLanguage", "address")}
            answer = client.put(
                f"/locations/{found['id']}", json=changed | {"timeZone": "Europe/Madrid"}
            )
        assert answer.status_code == 204, answer.text

    scripted.on("POST", r"^/v1/locations$", read_timeout(), after=True, hook=half_applied)
    job = jobs.start([person(1)], sim=sim)

    report = job.work(scripted.transport())

    assert report.success == 1, job.rows()[1]
    location_id = job.steps(1)["location"].remote_id
    assert location_id is not None
    assert (sim.location(location_id) or {})["timeZone"] == "America/Chicago"
    assert sim.locations_created_by_name() == {"HQ": 1}
    assert job.step_statuses(1)["location"] == "created"
    traffic = Traffic(sim.request_log)
    assert traffic.count("POST /v1/locations") == 1
    assert traffic.count("PUT /v1/locations/{locationId}") == 2  # the hook's, then the fix


def test_a_number_added_although_every_answer_was_lost_is_found_in_the_inventory(
    jobs: Jobs,
) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    scripted = Scripted(sim)
    scripted.on("POST", r"/numbers$", error(502, "Bad Gateway"), after=True, repeat=True)
    job = jobs.start([person(1, phone_number=phone(1))], sim=sim)

    report = job.work(scripted.transport())

    assert report.success == 1, job.rows()[1]
    number = job.steps(1)["number"]
    assert number.status == "created"
    assert (number.message or "").startswith("added; the answer was lost")
    assert person_differences(sim, person(1, phone_number=phone(1))) == []


def test_a_retried_row_looks_its_recorded_user_up_again_and_completes_it(jobs: Jobs) -> None:
    """The user step is on record as created, then the settings failed (half_applied). By the
    time the operator retries, the person has lost its calling part: the retried row must not
    trust its record, whose settings reads would answer 404 again and again."""
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    scripted = Scripted(sim)
    scripted.on("GET", r"/features/voicemail$", error(503), repeat=True)
    row = person(1, phone_number=phone(1), voicemail_enabled="false")
    job = jobs.start([row], sim=sim)
    job.work(scripted.transport())
    assert job.rows()[1].reason_code == "half_applied"
    assert job.step_statuses(1)["user"] == "created"
    take_calling_away(sim, "user1@example.com")
    assert retry_rows(job.ledger, job.run.id) == 1  # `ledger retry`
    start = mark(sim)

    report = job.work(worker_id="worker-2")  # the voicemail endpoint answers again

    assert report.success == 1, job.rows()[1]
    assert person_differences(sim, row) == []
    assert job.step_statuses(1)["user"] == "updated"
    writes = [request.route for request in Traffic.since(sim, start).writes()]
    assert writes == [PUT_PERSON, "PUT /v1/people/{personId}/features/voicemail"]


def test_a_retried_row_whose_steps_still_hold_writes_only_what_failed(jobs: Jobs) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    scripted = Scripted(sim)
    scripted.on("PUT", r"/features/callWaiting$", error(500), repeat=True)
    row = person(1, phone_number=phone(1), call_waiting_enabled="false")
    job = jobs.start([row], sim=sim)
    job.work(scripted.transport())
    assert job.rows()[1].reason_code == "half_applied"
    assert retry_rows(job.ledger, job.run.id) == 1
    start = mark(sim)

    report = job.work(worker_id="worker-2")

    assert report.success == 1, job.rows()[1]
    writes = [request.route for request in Traffic.since(sim, start).writes()]
    assert writes == ["PUT /v1/people/{personId}/features/callWaiting"]
    assert job.step_statuses(1) == {
        "location": "unchanged",
        "calling": "unchanged",
        "number": "created",
        "user": "created",
        "settings": "updated",
    }
    assert person_differences(sim, row) == []
