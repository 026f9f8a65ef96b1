"""The settle after a create whose outcome is unknown runs from when that create was sent.

A row left `started` (its worker died between sending the create and recording the answer) is
looked up by whoever claims it next, allowing for Webex's lag before a new person shows up in
the lookup by email: LOOKUP_SETTLE_S from the `started` record's time, not from the new claim.
A row reclaimed again and again must not spend a whole settle every time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from ledger.models import Row, StepRecord
from ledger.records import StepOutcome, StepStatus
from ledger.state_store import claim_batch, record_step
from tests.support.people import person
from tests.support.work import Job, Jobs, Traffic, mark

SETTLE_S = 20.0


def crash_after_marking_started(job: Job, sent_ago_s: float) -> None:
    """A worker claimed row 1, recorded its user step `started` `sent_ago_s` seconds ago, and
    died before its create reached Webex (nothing was created)."""
    crashed = claim_batch(job.ledger, job.run.id, "crashed", 10, lease_s=60)
    assert len(crashed) == 1
    started = StepOutcome(
        step="user", status="started", entity_type="user", entity_key="user1@example.com"
    )
    record_step(job.ledger, crashed[0], started)
    sent_at = datetime.now(UTC) - timedelta(seconds=sent_ago_s)
    with job.ledger.write() as session:
        pk = session.scalars(select(Row.id).where(Row.run_id == job.run.id)).one()
        session.execute(
            update(StepRecord)
            .where(StepRecord.row_pk == pk, StepRecord.step == "user")
            .values(updated_at=sent_at)
        )
    assert job.expire_leases() == 1


def test_a_started_record_with_claimed_steps_carries_its_time(jobs: Jobs) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    job = jobs.start([person(1)], sim=sim, LOOKUP_SETTLE_S=SETTLE_S)
    crash_after_marking_started(job, sent_ago_s=3600)

    again = claim_batch(job.ledger, job.run.id, "worker-2", 10, lease_s=60)

    user = again[0].steps["user"]
    assert user.status == StepStatus.STARTED
    assert user.started_at is not None
    assert timedelta(seconds=3590) < datetime.now(UTC) - user.started_at < timedelta(hours=2)


def test_a_create_sent_longer_ago_than_the_settle_is_decided_by_one_lookup(jobs: Jobs) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    job = jobs.start([person(1)], sim=sim, LOOKUP_SETTLE_S=SETTLE_S)
    crash_after_marking_started(job, sent_ago_s=3600)
    start = mark(sim)

    report = job.work(worker_id="worker-2")

    assert report.success == 1, job.rows()[1]
    traffic = Traffic.since(sim, start)
    assert traffic.count("GET /v1/people") == 1  # one lookup, no re-check
    assert traffic.count("POST /v1/people") == 1
    assert job.time.sleeps == []  # and no wait for a lag long past
    assert sim.people_created_by_email() == {"user1@example.com": 1}
    assert job.step_statuses(1)["user"] == "created"


def test_a_create_sent_a_moment_ago_is_settled_for_what_is_left(jobs: Jobs) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    job = jobs.start([person(1)], sim=sim, LOOKUP_SETTLE_S=SETTLE_S)
    crash_after_marking_started(job, sent_ago_s=SETTLE_S - 4)
    start = mark(sim)

    report = job.work(worker_id="worker-2")

    assert report.success == 1, job.rows()[1]
    assert Traffic.since(sim, start).count("GET /v1/people") > 1  # re-checked...
    assert 0 < sum(job.time.sleeps) <= 4  # ...for the 4 s left of the settle, not 20
    assert sim.people_created_by_email() == {"user1@example.com": 1}


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_failure_recorded_over_a_started_step_keeps_when_the_create_was_sent(
    jobs: Jobs, engine: str, request: pytest.FixtureRequest
) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    database: dict[str, str] = {}
    if engine == "postgres":
        database["LEDGER_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    job = jobs.start([person(1)], sim=sim, LOOKUP_SETTLE_S=SETTLE_S, **database)
    crash_after_marking_started(job, sent_ago_s=3600)
    held = claim_batch(job.ledger, job.run.id, "worker-2", 10, lease_s=60)
    failed = StepOutcome(
        step="user",
        status="failed",
        entity_type="user",
        entity_key="user1@example.com",
        message="retry_exhausted",
    )

    record_step(job.ledger, held[0], failed)

    assert job.expire_leases() == 1
    again = claim_batch(job.ledger, job.run.id, "worker-3", 10, lease_s=60)
    user = again[0].steps["user"]
    assert user.status == StepStatus.STARTED
    assert user.started_at is not None
    assert datetime.now(UTC) - user.started_at > timedelta(seconds=3590)
