"""`ledger work` when Webex misbehaves (SPEC section 6): retries and their waits, what is pending
and why, and no duplicate after any write whose outcome was unknown.

The client's sleeps go through a fake clock that the simulator also reads, so a lookup delay
passes exactly as fast as the client waits for it, and no test sleeps for real. Exact sequences
come from `Scripted`, which answers chosen requests and counts every request the client sent.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from ledger.action_helpers import person_create_body
from ledger.records import StepOutcome
from ledger.simulator import FaultConfig
from ledger.state_store import claim_batch, record_step, retry_rows
from tests.support.clock import FakeTime
from tests.support.people import person, phone
from tests.support.scripted import (
    Answer,
    Scripted,
    dropped,
    error,
    looked_up_row_by_row,
    read_timeout,
)
from tests.support.work import Jobs, Traffic, mark

PEOPLE_LOOKUP = r"^/v1/people\?.*email=user{n}@"
PEOPLE_CREATE = r"^/v1/people\?callingData=true$"


def seeded(jobs: Jobs, faults: FaultConfig | None = None) -> Scripted:
    """An org where HQ exists and is calling-enabled: the rows' own steps are all that change.
    It is too large to list in a batch's pages, so each row looks its person up by email: the
    lookup whose faults these tests play (the listing's own: test_work_listings.py)."""
    sim = jobs.simulator(faults)
    sim.add_location("HQ", calling=True)
    return looked_up_row_by_row(Scripted(sim))


# --- retried, then success ----------------------------------------------------------------------


def _http_date(time: FakeTime, offset_s: float) -> str:
    return format_datetime(datetime.fromtimestamp(time.wall() + offset_s, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("retry_after", "expected_wait"),
    [
        (lambda time: "7", 7.0),
        (lambda time: _http_date(time, 30), 30.0),
        (lambda time: "rand(30),add(30)", 2.5),  # RETRY_AFTER_DEFAULT_S in support/work.py
    ],
    ids=["seconds", "http-date", "garbage"],
)
def test_a_429_is_retried_after_the_wait_webex_asked_for(
    jobs: Jobs, retry_after: Callable[[FakeTime], str], expected_wait: float
) -> None:
    scripted = seeded(jobs)

    def throttled(request: httpx.Request) -> httpx.Response:
        return error(429, "Too Many Requests", **{"Retry-After": retry_after(jobs.time)})(request)

    scripted.on("GET", PEOPLE_LOOKUP.format(n=1), throttled)
    scripted.on("POST", PEOPLE_CREATE, throttled)
    job = jobs.start([person(1)], sim=scripted.sim, LEDGER_CONCURRENCY=1)

    report = job.work(scripted.transport())

    assert (report.success, report.pending) == (1, 0)
    assert job.step_statuses(1)["user"] == "created"
    assert scripted.count("GET", PEOPLE_LOOKUP.format(n=1)) == 2
    assert scripted.count("POST", PEOPLE_CREATE) == 2  # a 429 was not applied: resent at once
    assert scripted.sim.people_created_by_email() == {"user1@example.com": 1}
    # An HTTP date has whole seconds: the wait it asks for can be up to a second shorter.
    waits = [s for s in job.time.sleeps if expected_wait - 1 < s <= expected_wait + 1e-3]
    assert len(waits) == 2, job.time.sleeps  # once per 429
    assert max(job.time.sleeps) <= expected_wait + 1e-3
    assert job.results_of(1)["user"]["status"] == "created"


@pytest.mark.parametrize(
    "failure",
    [
        error(503, "Service Unavailable"),
        error(500),
        error(423, "Locked", **{"Retry-After": "1"}),
        read_timeout(),
        dropped(),
    ],
    ids=["503", "500", "423", "timeout", "dropped"],
)
def test_a_lookup_that_fails_transiently_is_retried_then_succeeds(
    jobs: Jobs, failure: Answer
) -> None:
    scripted = seeded(jobs)
    scripted.on("GET", PEOPLE_LOOKUP.format(n=1), failure, failure)
    job = jobs.start([person(1)], sim=scripted.sim)

    report = job.work(scripted.transport())

    assert report.success == 1
    assert scripted.count("GET", PEOPLE_LOOKUP.format(n=1)) == 3  # MAX_RETRIES = 2
    assert job.step_statuses(1)["user"] == "created"
    assert job.sim.people_created_by_email() == {"user1@example.com": 1}


@pytest.mark.parametrize(
    "failure",
    [error(502, "Bad Gateway"), read_timeout(), dropped()],
    ids=["502", "timeout", "dropped"],
)
def test_a_create_that_failed_unapplied_is_looked_up_then_sent_again(
    jobs: Jobs, failure: Answer
) -> None:
    scripted = seeded(jobs)
    scripted.on("POST", PEOPLE_CREATE, failure)  # answered without reaching the simulator
    job = jobs.start([person(1)], sim=scripted.sim, LOOKUP_SETTLE_S=3)

    report = job.work(scripted.transport())

    assert report.success == 1
    assert scripted.count("POST", PEOPLE_CREATE) == 2
    # The first lookup, then the check after the unknown outcome, settled for LOOKUP_SETTLE_S.
    assert scripted.count("GET", PEOPLE_LOOKUP.format(n=1)) >= 3
    assert sum(job.time.sleeps) >= 3
    assert job.sim.people_created_by_email() == {"user1@example.com": 1}
    user = job.steps(1)["user"]
    assert (user.status, user.attempts) == ("created", 2)


# --- retries exhausted and non-retryable failures -----------------------------------------------


def test_a_lookup_failing_past_max_retries_is_pending_retry_exhausted(jobs: Jobs) -> None:
    scripted = seeded(jobs)
    scripted.on("GET", PEOPLE_LOOKUP.format(n=1), error(503), repeat=True)
    job = jobs.start([person(1)], sim=scripted.sim)

    report = job.work(scripted.transport())

    assert (report.success, report.pending) == (0, 1)
    row = job.rows()[1]
    assert (row.reason_code, row.reason_step, row.http_status) == ("retry_exhausted", "user", 503)
    assert "gave up after 3 attempts" in (row.reason_message or "")
    assert scripted.count("GET", PEOPLE_LOOKUP.format(n=1)) == 3
    assert scripted.count("POST", PEOPLE_CREATE) == 0
    line = job.pending()[1]
    assert (line["reason_code"], line["step"], line["http_status"]) == (
        "retry_exhausted",
        "user",
        "503",
    )


def test_a_create_failing_past_max_retries_is_pending_retry_exhausted(jobs: Jobs) -> None:
    scripted = seeded(jobs)
    scripted.on("POST", PEOPLE_CREATE, error(504, "Gateway Timeout"), repeat=True)
    job = jobs.start([person(1)], sim=scripted.sim, LOOKUP_SETTLE_S=1)

    job.work(scripted.transport())

    row = job.rows()[1]
    assert (row.status, row.reason_code, row.reason_step) == ("pending", "retry_exhausted", "user")
    assert scripted.count("POST", PEOPLE_CREATE) == 3  # MAX_RETRIES + 1 creates in all...
    assert scripted.count("GET", PEOPLE_LOOKUP.format(n=1)) >= 1 + 3  # ...each looked up after
    assert job.sim.users_by_email() == {}
    # The outcome of the last create is unknown: the next try must look up (and settle) first.
    assert job.step_statuses(1)["user"] == "started"


@pytest.mark.parametrize(
    ("status", "reason"),
    [(400, "bad_request"), (401, "auth_invalid"), (403, "forbidden"), (404, "not_found"),
     (409, "conflict")],
)  # fmt: skip
def test_a_non_retryable_4xx_is_pending_with_its_code_and_not_retried(
    jobs: Jobs, status: int, reason: str
) -> None:
    scripted = seeded(jobs)
    scripted.on("GET", PEOPLE_LOOKUP.format(n=2), error(status, "no"), repeat=True)
    job = jobs.start([person(1), person(2), person(3)], sim=scripted.sim)

    report = job.work(scripted.transport())

    assert (report.success, report.pending) == (2, 1)
    row = job.rows()[2]
    assert (row.reason_code, row.reason_step, row.http_status) == (reason, "user", status)
    assert scripted.count("GET", PEOPLE_LOOKUP.format(n=2)) == 1
    # No request was retried (the listing's pages that precede the lookups make the client
    # pace its first burst, so the fake clock's sleeps are not empty any more).
    assert sum(client.stats().retries for client in jobs.clients) == 0
    assert job.pending()[2]["reason_code"] == reason
    assert {line["row_id"] for line in job.results()} == {"1", "3"}


def test_a_create_refused_with_400_is_looked_up_once_and_not_sent_again(jobs: Jobs) -> None:
    scripted = seeded(jobs)
    scripted.on("POST", PEOPLE_CREATE, error(400, "Invalid display name"))
    job = jobs.start([person(1)], sim=scripted.sim, LOOKUP_SETTLE_S=2)

    job.work(scripted.transport())

    row = job.rows()[1]
    assert (row.reason_code, row.http_status) == ("bad_request", 400)
    assert "Invalid display name" in (row.reason_message or "")
    assert scripted.count("POST", PEOPLE_CREATE) == 1
    assert job.sim.users_by_email() == {}


def test_good_rows_succeed_while_others_fail(jobs: Jobs) -> None:
    scripted = seeded(jobs)
    scripted.on("GET", PEOPLE_LOOKUP.format(n=2), error(403), repeat=True)
    scripted.on("GET", PEOPLE_LOOKUP.format(n=5), error(503), repeat=True)
    scripted.on("POST", r"/numbers$", error(400, "not a local gateway location"), repeat=True)
    rows = [person(n) for n in range(1, 9)]
    rows[6] = person(7, phone_number=phone(7))
    job = jobs.start(rows, sim=scripted.sim)

    report = job.work(scripted.transport())

    assert report.ended == "finished"
    assert (report.success, report.pending) == (5, 3)
    reasons = {n: row.reason_code for n, row in job.rows().items() if row.status == "pending"}
    assert reasons == {2: "forbidden", 5: "retry_exhausted", 7: "bad_request"}
    assert job.rows()[7].reason_step == "number"
    assert set(job.pending()) == {2, 5, 7}
    assert {int(line["row_id"]) for line in job.results()} == {1, 3, 4, 6, 8}
    assert set(job.sim.users_by_email()) == {f"user{n}@example.com" for n in (1, 3, 4, 6, 8)}


# --- no duplicates ------------------------------------------------------------------------------


def test_a_create_answered_400_although_applied_makes_one_user(jobs: Jobs) -> None:
    sim = jobs.simulator(FaultConfig(people_create_400_rate=1.0))
    rows = [person(n, phone_number=phone(n)) for n in range(1, 6)]
    job = jobs.start(rows, sim=sim)

    report = job.work()

    assert (report.success, report.pending) == (5, 0)
    assert sim.people_created_by_email() == {f"user{n}@example.com": 1 for n in range(1, 6)}
    assert Traffic(sim.request_log).count("POST /v1/people") == 5
    user = job.steps(1)["user"]
    assert (user.status, user.http_status) == ("created", 400)
    assert user.message == "created although Webex answered 400"
    assert user.remote_id == sim.person_by_email("user1@example.com")["id"]  # type: ignore[index]
    assert job.results_of(1)["user"]["message"] == "created although Webex answered 400"


@pytest.mark.parametrize(
    "faults",
    [FaultConfig(write_error_rate=1.0), FaultConfig(write_drop_rate=1.0)],
    ids=["5xx-after-write", "dropped-after-write"],
)
def test_every_write_applied_then_failed_still_makes_one_of_everything(
    jobs: Jobs, faults: FaultConfig
) -> None:
    rows = [person(n, phone_number=phone(n), call_waiting_enabled="false") for n in range(1, 5)]
    job = jobs.start(rows, faults=faults)

    report = job.work()

    assert (report.success, report.pending) == (4, 0)
    sim = job.sim
    assert sim.people_created_by_email() == {f"user{n}@example.com": 1 for n in range(1, 5)}
    assert sim.locations_created_by_name() == {"HQ": 1}
    traffic = Traffic(sim.request_log)
    assert traffic.count("POST /v1/people") == 4
    assert traffic.count("POST /v1/locations") == 1
    assert traffic.count("POST /v1/telephony/config/locations") == 1
    assert job.step_statuses(1) == {
        "location": "created",
        "calling": "created",
        "number": "created",
        "user": "created",
        "settings": "updated",
    }
    assert "the answer was lost" in (job.steps(1)["user"].message or "")


def test_a_timeout_after_the_create_was_applied_makes_one_user(jobs: Jobs) -> None:
    scripted = seeded(jobs)
    scripted.on("POST", PEOPLE_CREATE, read_timeout(), read_timeout(), after=True)
    job = jobs.start([person(1), person(2)], sim=scripted.sim)

    report = job.work(scripted.transport())

    assert report.success == 2
    assert scripted.count("POST", PEOPLE_CREATE) == 2
    assert job.sim.people_created_by_email() == {"user1@example.com": 1, "user2@example.com": 1}
    for row_id in (1, 2):
        user = job.steps(row_id)["user"]
        assert user.status == "created"
        assert user.remote_id == job.sim.person_by_email(f"user{row_id}@example.com")["id"]  # type: ignore[index]


def test_lookup_delay_with_ambiguous_creates_makes_one_user(jobs: Jobs) -> None:
    """A new person is invisible to the lookup by email for 8 s; every create is applied and
    then answered badly (400, 5xx or a dropped connection): the lookup settles, finds it."""
    faults = FaultConfig(
        seed=3, lookup_delay_s=8, people_create_400_rate=0.4, write_error_rate=0.3,
        write_drop_rate=0.3,
    )  # fmt: skip
    rows = [person(n, phone_number=phone(n)) for n in range(1, 11)]
    job = jobs.start(rows, faults=faults, LOOKUP_SETTLE_S=20, MAX_RETRIES=5)

    report = job.work()

    assert (report.success, report.pending) == (10, 0)
    sim = job.sim
    assert sim.people_created_by_email() == {f"user{n}@example.com": 1 for n in range(1, 11)}
    assert Traffic(sim.request_log).count("POST /v1/people") == 10
    assert sum(job.time.sleeps) >= 8  # the lookups did wait for the delay to pass


def test_without_settling_the_lookup_delay_would_cause_a_second_create(jobs: Jobs) -> None:
    """The control for the test above: with LOOKUP_SETTLE_S=0 the lookup after a create that was
    applied but answered with a 5xx misses the new person, and the create is sent again (the
    simulator, like Webex, refuses a second person with that email: 409)."""
    scripted = seeded(jobs, FaultConfig(lookup_delay_s=8, write_error_rate=1.0))
    job = jobs.start([person(1)], sim=scripted.sim, LOOKUP_SETTLE_S=0)

    job.work(scripted.transport())

    assert scripted.count("POST", PEOPLE_CREATE) == 2
    assert job.sim.people_created_by_email() == {"user1@example.com": 1}
    assert (job.rows()[1].reason_code, job.rows()[1].http_status) == ("conflict", 409)


# --- a crash between "started" and the outcome --------------------------------------------------


def test_a_row_left_started_by_a_crashed_worker_is_looked_up_with_settle(jobs: Jobs) -> None:
    sim = jobs.simulator(FaultConfig(lookup_delay_s=5))
    hq = sim.add_location("HQ", calling=True)
    job = jobs.start([person(1)], sim=sim)
    # The crashed worker claimed the row, recorded `started`, sent the POST (applied) and died.
    crashed = claim_batch(job.ledger, job.run.id, "crashed", 10, lease_s=60)
    assert len(crashed) == 1
    started = StepOutcome(
        step="user", status="started", entity_type="user", entity_key="user1@example.com"
    )
    record_step(job.ledger, crashed[0], started)
    license_id = sim.license_id("Webex Calling - Professional")
    created = (
        job.client()
        .request(
            "POST",
            "/people",
            params={"callingData": "true"},
            json=person_create_body(crashed[0].user, hq, license_id),
        )
        .require_str("id")
    )
    assert job.expire_leases() == 1
    start = mark(sim)

    report = job.work(worker_id="worker-2")

    assert report.success == 1
    assert sim.people_created_by_email() == {"user1@example.com": 1}
    traffic = Traffic.since(sim, start)
    assert traffic.count("POST /v1/people") == 0
    assert traffic.count("GET /v1/people") >= 2  # missed at first, found after settling
    assert sum(job.time.sleeps) >= 5
    user = job.steps(1)["user"]
    assert (user.status, user.remote_id) == ("unchanged", created)
    assert job.rows()[1].status == "success"
    assert job.results_of(1)["user"]["remote_id"] == created


def test_a_resumed_row_uses_the_user_id_it_recorded_for_its_settings(jobs: Jobs) -> None:
    """The user step succeeded in an earlier session (its id is in the ledger) and the settings
    step failed; resumed while the new person is still invisible to the lookup by email, the
    settings step must use the recorded id rather than fail with not_found."""
    scripted = seeded(jobs, FaultConfig(lookup_delay_s=600))
    scripted.on("GET", r"/features/voicemail$", error(503), repeat=True)
    job = jobs.start([person(1, voicemail_rings="9")], sim=scripted.sim)
    job.work(scripted.transport())
    assert job.rows()[1].reason_code == "half_applied"
    assert job.step_statuses(1)["user"] == "created"
    assert retry_rows(job.ledger, job.run.id) == 1  # `ledger retry`

    report = job.work(worker_id="worker-2")  # the voicemail endpoint answers again

    assert report.success == 1, job.rows()[1]
    person_id = job.steps(1)["user"].remote_id
    assert person_id is not None
    voicemail = scripted.sim.person_settings(person_id)["voicemail"]
    assert voicemail["sendUnansweredCalls"]["numberOfRings"] == 9  # type: ignore[index]
    assert job.step_statuses(1)["settings"] == "updated"


# --- the settle polls: a lost create that was applied is found as soon as Webex shows it ------


def test_a_lost_create_that_was_applied_is_found_without_waiting_the_whole_settle(
    jobs: Jobs,
) -> None:
    """Applied, then answered 5xx; Webex shows the person by email 1.5 s later. The lookup is
    polled (0.5, 1, 2 s apart...), so the row is done about 3.5 s later, not after the whole
    LOOKUP_SETTLE_S; and nothing is created again."""
    scripted = seeded(jobs, FaultConfig(lookup_delay_s=1.5, write_error_rate=1.0))
    job = jobs.start([person(1)], sim=scripted.sim, LOOKUP_SETTLE_S=20)

    report = job.work(scripted.transport())

    assert report.success == 1
    assert scripted.count("POST", PEOPLE_CREATE) == 1
    assert job.sim.people_created_by_email() == {"user1@example.com": 1}
    assert 1.5 <= sum(job.time.sleeps) < 5
    assert job.steps(1)["user"].status == "created"


def test_a_lost_create_that_was_not_applied_is_sent_again_once_after_the_whole_settle(
    jobs: Jobs,
) -> None:
    """Answered 503 and not applied: the person is still missing after LOOKUP_SETTLE_S of
    polled lookups, and only then is the create sent again, once."""
    scripted = seeded(jobs, FaultConfig(lookup_delay_s=1.5))
    scripted.on("POST", PEOPLE_CREATE, error(503, "unavailable"))
    job = jobs.start([person(1)], sim=scripted.sim, LOOKUP_SETTLE_S=20)

    report = job.work(scripted.transport())

    assert report.success == 1
    assert scripted.count("POST", PEOPLE_CREATE) == 2
    assert job.sim.people_created_by_email() == {"user1@example.com": 1}
    assert sum(job.time.sleeps) >= 20
    lookups = scripted.count("GET", PEOPLE_LOOKUP.format(n=1))
    assert 3 <= lookups <= 10  # polled, a bounded number of times
