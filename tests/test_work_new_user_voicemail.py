"""Voicemail of users `work` creates (SPEC section 4): the first user created in a location is
read, and what Webex gave it answers for the next users created there, so their voicemail write
needs no read of its own; any other person is read first. Through `work` against the
simulator in-process.
"""

from __future__ import annotations

from typing import Any

import pytest

from ledger.simulator import Simulator
from ledger.simulator import people as sim_people
from ledger.simulator.state import PersonRecord, default_voicemail
from tests.support.people import person, phone
from tests.support.work import Jobs, Traffic, iter_bodies

VOICEMAIL_GET = "GET /v1/people/{personId}/features/voicemail"
VOICEMAIL_PUT = "PUT /v1/people/{personId}/features/voicemail"


def voicemail_of(sim: Simulator, email: str) -> dict[str, Any]:
    found = sim.person_by_email(email)
    assert found is not None
    settings = sim.person_settings(str(found["id"]))
    voicemail = settings["voicemail"]
    assert isinstance(voicemail, dict)
    return voicemail


def test_users_created_in_a_location_read_voicemail_once_and_each_gets_its_own_values(
    jobs: Jobs,
) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    sim.add_location("Annex", calling=True)
    rows = [
        person(1, voicemail_rings="7"),
        person(2, voicemail_rings="4", voicemail_enabled="true"),
        person(3, voicemail_enabled="false"),
        person(4, voicemail_enabled="true"),  # what a new user has already: no write
        person(5, "Annex", values=False, phone_number=phone(5), voicemail_rings="9"),
        person(6, "Annex", values=False, voicemail_enabled="false"),
    ]
    job = jobs.start(rows, sim=sim, LEDGER_CONCURRENCY=1)

    report = job.work()

    assert (report.success, report.pending) == (6, 0)
    traffic = Traffic(sim.request_log)
    assert traffic.count(VOICEMAIL_GET) == 2  # the first user created in each location
    assert traffic.count(VOICEMAIL_PUT) == 5  # user 4 already had what the row names
    for body in iter_bodies(traffic.requests, VOICEMAIL_PUT):
        # Webex requires these two in every voicemail write: sent back as a new user has them.
        assert body["notifications"] == {"enabled": False}
        assert body["transferToNumber"] == {"enabled": False}
    rings = {n: voicemail_of(sim, f"user{n}@example.com") for n in range(1, 7)}
    assert [rings[n]["sendUnansweredCalls"]["numberOfRings"] for n in (1, 2, 5)] == [7, 4, 9]
    assert [rings[n]["enabled"] for n in range(1, 7)] == [True, True, False, True, True, False]
    # What the rows did not name is as Webex gave it to a new user.
    defaults = default_voicemail()
    for n in range(1, 7):
        assert rings[n]["sendBusyCalls"] == defaults["sendBusyCalls"]
        assert rings[n]["messageStorage"] == defaults["messageStorage"]


def test_a_person_that_existed_before_is_read_even_after_a_user_was_created_there(
    jobs: Jobs,
) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    existing = person(2, voicemail_rings="6")
    job = jobs.start([person(1, voicemail_rings="5")], sim=sim, LEDGER_CONCURRENCY=1)
    job.work()
    # user2 exists without calling: work makes it a calling user by an update, not a create.
    sim.add_person("user2@example.com", first_name="User", last_name="Number2")
    second = jobs.start([person(1, voicemail_rings="5"), existing], sim=sim)
    start = len(sim.request_log)

    report = second.work()

    assert report.success == 2
    traffic = Traffic(sim.request_log[start:])
    assert traffic.count(VOICEMAIL_GET) == 2  # user1 (found, not created) and user2 (updated)
    assert voicemail_of(sim, "user2@example.com")["sendUnansweredCalls"]["numberOfRings"] == 6


def test_a_default_that_names_an_address_makes_every_new_user_read_first(
    jobs: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    def with_destination() -> dict[str, object]:
        voicemail = default_voicemail()
        voicemail["notifications"] = {"enabled": True, "destination": "desk@example.com"}
        return voicemail

    made_by_webex = sim_people.PersonRecord

    def new_person(**fields: Any) -> PersonRecord:
        record = made_by_webex(**fields)
        record.voicemail = with_destination()
        return record

    monkeypatch.setattr(sim_people, "PersonRecord", new_person)
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    job = jobs.start([person(n, voicemail_rings=str(n + 4)) for n in range(1, 4)], sim=sim)

    report = job.work()

    assert report.success == 3
    traffic = Traffic(sim.request_log)
    assert traffic.count(VOICEMAIL_GET) == 3
    assert traffic.count(VOICEMAIL_PUT) == 3
    for body in iter_bodies(traffic.requests, VOICEMAIL_PUT):
        assert body["notifications"] == {"enabled": True, "destination": "desk@example.com"}
