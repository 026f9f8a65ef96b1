"""Group commit (SPEC section 6, "Durable progress" and "Workers"): the step records and finishes
of many row threads arriving together are committed in one transaction, each thread returning
once its own write is committed, and a thread whose claim was lost still hears it alone.

The ledger scenarios run on SQLite and on PostgreSQL. To make writes arrive together without
timing, the first transaction is held open until every other thread has handed in its write.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Connection

from ledger.database import Ledger
from ledger.error_handling import ClaimLostError, InvariantError
from ledger.group_commit import GroupCommit
from ledger.models import Row, StepRecord
from ledger.records import ClaimedRow, StepOutcome
from ledger.state_store import claim_batch, finish_row, record_step, release_rows
from tests.support.ledgers import Commits, make_run

LEASE_S = 60.0
# A bound on waiting for threads to queue up, never an expectation of how long that takes.
QUEUE_BOUND_S = 60.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest) -> Ledger:
    """A fresh, empty ledger on each engine (the shared fixtures, copied from a migrated one)."""
    name = "sqlite_ledger" if request.param == "sqlite" else "pg_ledger"
    opened: Ledger = request.getfixturevalue(name)
    return opened


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + QUEUE_BOUND_S
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


def together(
    ledger: Ledger, rows: Sequence[ClaimedRow], write: Callable[[ClaimedRow], None]
) -> dict[int, BaseException | None]:
    """Run `write(row)` for every row in a thread of its own, the first transaction held open
    until all the others are queued; each row's error, or None."""
    held = threading.Event()

    def hold_first(_connection: Connection) -> None:
        if not held.is_set():
            held.set()
            wait_until(lambda: ledger.group.waiting >= len(rows) - 1)

    outcomes: dict[int, BaseException | None] = {}
    lock = threading.Lock()

    def run(row: ClaimedRow) -> None:
        try:
            write(row)
        except BaseException as error:  # handed to the test
            with lock:
                outcomes[row.row_id] = error
        else:
            with lock:
                outcomes[row.row_id] = None

    event.listen(ledger.write_engine, "begin", hold_first)
    try:
        threads = [threading.Thread(target=run, args=(row,)) for row in rows]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=QUEUE_BOUND_S * 2)
    finally:
        event.remove(ledger.write_engine, "begin", hold_first)
    return outcomes


def user_step(row: ClaimedRow, status: str = "created") -> StepOutcome:
    return StepOutcome("user", status, "user", row.user.email, 200, f"person-{row.row_id}")


def recorded(ledger: Ledger, rows: Sequence[ClaimedRow]) -> dict[int, tuple[str, str | None]]:
    """row_id → (row status, its user step's status or None)."""
    with ledger.read() as session:
        found = session.execute(
            select(Row.row_id, Row.status, StepRecord.status)
            .outerjoin(StepRecord, (StepRecord.row_pk == Row.id) & (StepRecord.step == "user"))
            .where(Row.id.in_([row.pk for row in rows]))
        ).all()
    return {row_id: (status, step) for row_id, status, step in found}


def test_step_records_arriving_together_share_one_transaction(
    ledger: Ledger, tmp_path: Path
) -> None:
    run = make_run(ledger, tmp_path, rows=30)  # 20 accepted
    rows = claim_batch(ledger, run.id, "w1", limit=100, lease_s=LEASE_S)
    commits = Commits(ledger)
    try:
        outcomes = together(ledger, rows, lambda row: record_step(ledger, row, user_step(row)))
        written = commits.count
    finally:
        commits.close()

    assert outcomes == {row.row_id: None for row in rows}
    # The first thread's write alone, then the 19 that queued meanwhile in one transaction.
    assert written == 2
    assert recorded(ledger, rows) == {row.row_id: ("claimed", "created") for row in rows}

    commits = Commits(ledger)
    try:
        outcomes = together(
            ledger,
            rows,
            lambda row: finish_row(ledger, row, status="success", required_steps=("user",)),
        )
        written = commits.count
    finally:
        commits.close()
    assert outcomes == {row.row_id: None for row in rows}
    assert written == 2
    assert recorded(ledger, rows) == {row.row_id: ("success", "created") for row in rows}


def test_a_lost_claim_in_a_group_fails_only_its_own_caller(ledger: Ledger, tmp_path: Path) -> None:
    run = make_run(ledger, tmp_path, rows=30)
    rows = claim_batch(ledger, run.id, "w1", limit=100, lease_s=LEASE_S)
    # Three rows are taken over by another worker (given back, then claimed by w2).
    lost = rows[3:6]
    assert release_rows(ledger, lost) == 3
    taken = claim_batch(ledger, run.id, "w2", limit=3, lease_s=LEASE_S)
    assert [row.pk for row in taken] == [row.pk for row in lost]
    lost_ids = {row.row_id for row in lost}

    outcomes = together(ledger, rows, lambda row: record_step(ledger, row, user_step(row)))

    assert {n for n, error in outcomes.items() if isinstance(error, ClaimLostError)} == lost_ids
    assert {n for n, error in outcomes.items() if error is None} == {
        r.row_id for r in rows
    } - lost_ids
    after = recorded(ledger, rows)
    assert {n: after[n] for n in lost_ids} == {n: ("claimed", None) for n in lost_ids}
    assert all(after[r.row_id] == ("claimed", "created") for r in rows if r.row_id not in lost_ids)

    # Finishing together: the lost rows hear it, one row lacking its step fails its invariant,
    # and the rest are finished.
    unrecorded = rows[0]
    with ledger.write() as session:  # as if its user step had never been recorded
        session.execute(StepRecord.__table__.delete().where(StepRecord.row_pk == unrecorded.pk))

    outcomes = together(
        ledger,
        rows,
        lambda row: finish_row(ledger, row, status="success", required_steps=("user",)),
    )

    assert {n for n, e in outcomes.items() if isinstance(e, ClaimLostError)} == lost_ids
    assert {n for n, e in outcomes.items() if isinstance(e, InvariantError)} == {unrecorded.row_id}
    finished = {r.row_id for r in rows} - lost_ids - {unrecorded.row_id}
    assert {n for n, e in outcomes.items() if e is None} == finished
    after = recorded(ledger, rows)
    assert {n for n, (status, _) in after.items() if status == "success"} == finished
    assert after[unrecorded.row_id] == ("claimed", None)


def test_a_row_finished_with_its_last_steps_after_losing_its_claim_records_none_of_them(
    ledger: Ledger, tmp_path: Path
) -> None:
    run = make_run(ledger, tmp_path, rows=30)
    rows = claim_batch(ledger, run.id, "w1", limit=100, lease_s=LEASE_S)
    lost = rows[2:4]
    assert release_rows(ledger, lost) == 2
    assert len(claim_batch(ledger, run.id, "w2", limit=2, lease_s=LEASE_S)) == 2
    lost_ids = {row.row_id for row in lost}

    # Each row's last step and its finish in one write, all rows arriving together.
    outcomes = together(
        ledger,
        rows,
        lambda row: finish_row(
            ledger, row, status="success", required_steps=("user",), outcomes=[user_step(row)]
        ),
    )

    assert {n for n, e in outcomes.items() if isinstance(e, ClaimLostError)} == lost_ids
    assert {n for n, e in outcomes.items() if e is None} == {r.row_id for r in rows} - lost_ids
    after = recorded(ledger, rows)
    # The new owner's rows carry nothing of the old worker's: no step, no finish.
    assert {n: after[n] for n in lost_ids} == {n: ("claimed", None) for n in lost_ids}
    assert all(after[r.row_id] == ("success", "created") for r in rows if r.row_id not in lost_ids)


# --- the mechanism alone ------------------------------------------------------------------------


class ListWriter:
    """A GroupWriter that records what it was handed; payloads named "bad" fail alone."""

    def __init__(self, hold: Callable[[], None]) -> None:
        self.groups: list[list[str]] = []
        self.alone: list[str] = []
        self._hold = hold

    def write_many(self, _connection: Connection, payloads: Sequence[str]) -> None:
        self._hold()
        self.groups.append(list(payloads))
        if "bad" in payloads:
            raise ValueError("one payload of the group is bad")

    def write_one(self, payload: str) -> None:
        self.alone.append(payload)
        if payload == "bad":
            raise ValueError(f"{payload} refused")


def submit_together(
    commit: GroupCommit, writer: ListWriter, payloads: Sequence[str]
) -> dict[str, Any]:
    results: dict[str, Any] = {}

    def run(payload: str) -> None:
        try:
            commit.submit(writer, payload)
        except ValueError as error:
            results[payload] = str(error)
        else:
            results[payload] = "ok"

    threads = [threading.Thread(target=run, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=QUEUE_BOUND_S * 2)
    return results


def test_a_group_that_fails_is_written_again_one_by_one(sqlite_ledger: Ledger) -> None:
    commit = GroupCommit(sqlite_ledger.write_engine)
    first = threading.Event()

    def hold() -> None:
        if not first.is_set():
            first.set()
            wait_until(lambda: commit.waiting >= 5)

    writer = ListWriter(hold)
    payloads = ["a", "b", "c", "bad", "d", "e"]
    results = submit_together(commit, writer, payloads)

    assert results == {"a": "ok", "b": "ok", "c": "ok", "bad": "bad refused", "d": "ok", "e": "ok"}
    assert [len(group) for group in writer.groups] == [1, 5]
    # The failed group of five was rolled back and each of its writes made alone, in order.
    assert writer.alone == writer.groups[1]
    assert commit.transactions == 1 + 5
    assert commit.writes == 6
