"""Step records of many rows handed in at once (`record_rows_steps`, a batch's bulk number add):
one wait and one transaction, yet each row fenced by its own claim and given its own step
record and event (SPEC section 6, "Durable progress" and "Workers"); and through `work`, every
row's `started` is committed before the add that carries its number is sent.

The ledger scenarios run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from ledger.database import Ledger
from ledger.models import Event, Row, StepRecord
from ledger.records import ClaimedRow, StepOutcome
from ledger.state_store import claim_batch, record_rows_steps, release_rows
from tests.support.ledgers import Commits, make_run
from tests.support.people import person, phone
from tests.support.scripted import Scripted
from tests.support.work import Jobs

LEASE_S = 60.0
NUMBERS_ADD = r"^/v1/telephony/config/locations/[^/]+/numbers$"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest) -> Ledger:
    """A fresh, empty ledger on each engine (the shared fixtures, copied from a migrated one)."""
    name = "sqlite_ledger" if request.param == "sqlite" else "pg_ledger"
    opened: Ledger = request.getfixturevalue(name)
    return opened


def number_step(row: ClaimedRow, status: str = "started") -> StepOutcome:
    return StepOutcome("number", status, "number", f"HQ:+1555000{row.row_id:04d}")


def number_records(ledger: Ledger, rows: Sequence[ClaimedRow]) -> dict[int, tuple[str, int]]:
    """row pk → (its number step's status, attempts), for the rows that have one."""
    with ledger.read() as session:
        found = session.execute(
            select(StepRecord.row_pk, StepRecord.status, StepRecord.attempts).where(
                StepRecord.step == "number", StepRecord.row_pk.in_([row.pk for row in rows])
            )
        ).all()
    return {pk: (status, attempts) for pk, status, attempts in found}


def number_events(ledger: Ledger, rows: Sequence[ClaimedRow]) -> dict[int, list[str]]:
    with ledger.read() as session:
        found = session.execute(
            select(Event.row_pk, Event.kind)
            .where(Event.step == "number", Event.row_pk.in_([row.pk for row in rows]))
            .order_by(Event.id)
        ).all()
    kinds: dict[int, list[str]] = {}
    for pk, kind in found:
        kinds.setdefault(pk, []).append(kind)
    return kinds


def test_rows_recorded_together_share_one_transaction_each_with_its_own_record(
    ledger: Ledger, tmp_path: Path
) -> None:
    run = make_run(ledger, tmp_path, rows=30)  # 20 accepted
    rows = claim_batch(ledger, run.id, "w1", limit=100, lease_s=LEASE_S)
    commits = Commits(ledger)
    try:
        lost = record_rows_steps(
            ledger, [(row, [number_step(row)]) for row in rows], lease_s=LEASE_S
        )
        written = commits.count
    finally:
        commits.close()

    assert lost == frozenset()
    assert written == 1
    assert number_records(ledger, rows) == {row.pk: ("started", 1) for row in rows}
    assert number_events(ledger, rows) == {row.pk: ["step_started"] for row in rows}

    lost = record_rows_steps(
        ledger, [(row, [number_step(row, "created")]) for row in rows], lease_s=LEASE_S
    )
    assert lost == frozenset()
    # The same record moved on (attempts count the `started` once), with an event of its own.
    assert number_records(ledger, rows) == {row.pk: ("created", 1) for row in rows}
    assert number_events(ledger, rows) == {row.pk: ["step_started", "step_created"] for row in rows}


def test_a_lost_claim_among_rows_recorded_together_spoils_only_that_row(
    ledger: Ledger, tmp_path: Path
) -> None:
    run = make_run(ledger, tmp_path, rows=30)
    rows = claim_batch(ledger, run.id, "w1", limit=100, lease_s=LEASE_S)
    # Two rows are taken over by another worker (given back, then claimed by w2).
    taken_over = rows[4:6]
    assert release_rows(ledger, taken_over) == 2
    assert len(claim_batch(ledger, run.id, "w2", limit=2, lease_s=LEASE_S)) == 2

    lost = record_rows_steps(ledger, [(row, [number_step(row)]) for row in rows], lease_s=LEASE_S)

    assert lost == {row.pk for row in taken_over}
    kept = [row for row in rows if row not in taken_over]
    assert number_records(ledger, rows) == {row.pk: ("started", 1) for row in kept}
    with ledger.read() as session:
        owners = dict(session.execute(select(Row.id, Row.claimed_by)).all())
    assert {owners[row.pk] for row in taken_over} == {"w2"}


def test_every_row_s_started_is_committed_before_the_bulk_add_is_sent(jobs: Jobs) -> None:
    sim = jobs.simulator()
    sim.add_location("HQ", calling=True)
    scripted = Scripted(sim)
    rows = [person(n, phone_number=phone(n)) for n in range(1, 9)]
    job = jobs.start(rows, sim=sim)
    inner = sim.transport()
    seen_at_send: list[dict[str, str]] = []

    def look_then_forward(request: httpx.Request) -> httpx.Response:
        # Read on a connection of its own: only what is committed shows.
        seen_at_send.append(
            {str(n): job.step_statuses(n).get("number", "none") for n in range(1, 9)}
        )
        return inner.handle_request(request)

    scripted.on("POST", NUMBERS_ADD, look_then_forward)

    report = job.work(scripted.transport())

    assert report.success == 8
    assert seen_at_send == [{str(n): "started" for n in range(1, 9)}]
    for n in range(1, 9):
        assert job.steps(n)["number"].status == "created"
        assert job.steps(n)["number"].attempts == 1
