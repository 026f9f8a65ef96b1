"""Claims, leases and fencing (SPEC section 6, "Workers"), as scenarios that take any ledger:
test_claims.py runs them on SQLite, test_postgres.py on PostgreSQL.

Each `check_*(ledger, folder)` ingests a run of its own under `folder` and asserts.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ledger.database import Ledger
from ledger.error_handling import ClaimLostError, InvariantError, ReasonCode
from ledger.records import ClaimedRow, StepOutcome
from ledger.state_store import (
    claim_batch,
    finish_row,
    record_step,
    release_rows,
    renew_leases,
    run_is_finished,
)
from tests.support.ledgers import make_run

LEASE_S = 60.0
SHORT_LEASE_S = 0.05


def user_step(row: ClaimedRow, status: str = "created") -> StepOutcome:
    return StepOutcome(
        step="user",
        status=status,
        entity_type="user",
        entity_key=row.user.email,
        http_status=200,
        remote_id=f"person-{row.row_id}",
    )


def row_ids(rows: list[ClaimedRow]) -> list[int]:
    return [row.row_id for row in rows]


def check_claims_go_batch_by_batch(ledger: Ledger, folder: Path) -> None:
    run = make_run(ledger, folder, rows=9, batch_size=2)
    # Accepted rows: 1 2 4 5 7 8 → batches (1 2) (4 5) (7 8).
    first = claim_batch(ledger, run.id, "w1", limit=3, lease_s=LEASE_S)
    assert row_ids(first) == [1, 2, 4]
    assert [row.batch_id for row in first] == [1, 1, 2]
    assert len({row.claim_token for row in first}) == 1
    assert first[0].user.email == "user1@example.com"
    assert first[0].steps == {}
    rest = claim_batch(ledger, run.id, "w2", limit=10, lease_s=LEASE_S)
    assert row_ids(rest) == [5, 7, 8]
    assert rest[0].claim_token != first[0].claim_token
    assert claim_batch(ledger, run.id, "w3", limit=10, lease_s=LEASE_S) == []
    with pytest.raises(InvariantError):
        claim_batch(ledger, run.id, "w3", limit=0, lease_s=LEASE_S)


def check_concurrent_claims_are_disjoint(ledger: Ledger, folder: Path) -> None:
    run = make_run(ledger, folder, rows=120)  # 80 accepted
    workers, limit, rounds = 8, 3, 4  # 8 x 3 x 4 = 96 claims: every row, with room to spare
    # Every round, all workers claim at the same instant.
    barrier = threading.Barrier(workers)
    claimed: dict[int, list[list[int]]] = {index: [] for index in range(workers)}
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for _ in range(rounds):
                barrier.wait(timeout=30)
                batch = claim_batch(ledger, run.id, f"w{index}", limit=limit, lease_s=LEASE_S)
                claimed[index].append(row_ids(batch))
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    every = [row_id for batches in claimed.values() for batch in batches for row_id in batch]
    assert len(every) == len(set(every)) == run.accepted_rows  # each row once, none lost
    # The first round had rows for everyone: each worker got a full batch of its own.
    assert [len(batches[0]) for batches in claimed.values()] == [limit] * workers
    assert claim_batch(ledger, run.id, "late", limit=10, lease_s=LEASE_S) == []


def check_live_lease_is_not_taken(ledger: Ledger, folder: Path) -> None:
    run = make_run(ledger, folder, rows=1)
    (held,) = claim_batch(ledger, run.id, "w1", limit=1, lease_s=LEASE_S)
    assert claim_batch(ledger, run.id, "w2", limit=5, lease_s=LEASE_S) == []
    record_step(ledger, held, user_step(held))
    finish_row(ledger, held, status="success", required_steps=("user",))
    assert run_is_finished(ledger, run.id)


def check_expired_lease_is_taken_and_the_old_worker_fenced(ledger: Ledger, folder: Path) -> None:
    run = make_run(ledger, folder, rows=1)
    (old,) = claim_batch(ledger, run.id, "slow", limit=1, lease_s=SHORT_LEASE_S)
    record_step(ledger, old, user_step(old, "started"))
    time.sleep(SHORT_LEASE_S * 3)
    (new,) = claim_batch(ledger, run.id, "fast", limit=1, lease_s=LEASE_S)
    assert (new.pk, new.row_id) == (old.pk, old.row_id)
    assert new.claim_token != old.claim_token
    # What the old worker began is handed over, so the new one looks up before creating.
    assert new.steps["user"].status == "started"
    assert new.steps["user"].attempts == 1

    with pytest.raises(ClaimLostError):
        record_step(ledger, old, user_step(old))
    with pytest.raises(ClaimLostError):
        finish_row(ledger, old, status="pending", reason_code=ReasonCode.BAD_REQUEST)
    assert release_rows(ledger, [old]) == 0
    renew_leases(ledger, [old.claim_token], LEASE_S)  # matches nothing any more

    record_step(ledger, new, user_step(new, "unchanged"))
    with pytest.raises(ClaimLostError):
        finish_row(ledger, old, status="success", required_steps=("user",))
    finish_row(ledger, new, status="success", required_steps=("user",))
    with pytest.raises(ClaimLostError):
        record_step(ledger, old, user_step(old))
    assert run_is_finished(ledger, run.id)
    assert new.steps["user"].status == "started"  # a snapshot: what the claim found


def check_fencing_comes_before_invariants(ledger: Ledger, folder: Path) -> None:
    # A worker that lost its row must hear "claim lost", not an invariant failure about a row
    # that is no longer its own (it would record a bogus assertion_failure).
    run = make_run(ledger, folder, rows=1)
    (old,) = claim_batch(ledger, run.id, "slow", limit=1, lease_s=SHORT_LEASE_S)
    record_step(ledger, old, user_step(old, "started"))
    time.sleep(SHORT_LEASE_S * 3)
    (new,) = claim_batch(ledger, run.id, "fast", limit=1, lease_s=LEASE_S)
    assert new.pk == old.pk
    with pytest.raises(ClaimLostError):
        finish_row(ledger, old, status="success", required_steps=("user",))


def check_renewed_lease_is_kept(ledger: Ledger, folder: Path) -> None:
    run = make_run(ledger, folder, rows=1)
    # Long enough to be renewed before it runs out however loaded the machine; short to wait.
    first_lease_s = 1.0
    (held,) = claim_batch(ledger, run.id, "w1", limit=1, lease_s=first_lease_s)
    renew_leases(ledger, [held.claim_token], LEASE_S)
    time.sleep(first_lease_s * 1.2)
    assert claim_batch(ledger, run.id, "w2", limit=5, lease_s=LEASE_S) == []
    # A fenced write renews the lease as well.
    record_step(ledger, held, user_step(held), lease_s=LEASE_S)
    assert claim_batch(ledger, run.id, "w3", limit=5, lease_s=LEASE_S) == []
    finish_row(ledger, held, status="success", required_steps=("user",))


def check_a_lease_that_ran_out_is_not_renewed(ledger: Ledger, folder: Path) -> None:
    run = make_run(ledger, folder, rows=1)
    (held,) = claim_batch(ledger, run.id, "w1", limit=1, lease_s=SHORT_LEASE_S)
    time.sleep(SHORT_LEASE_S * 3)
    renew_leases(ledger, [held.claim_token], LEASE_S)  # a heartbeat that came too late
    (taken,) = claim_batch(ledger, run.id, "w2", limit=5, lease_s=LEASE_S)
    assert taken.pk == held.pk
    with pytest.raises(ClaimLostError):
        record_step(ledger, held, user_step(held))


def check_released_rows_are_ready_again(ledger: Ledger, folder: Path) -> None:
    run = make_run(ledger, folder, rows=5)
    rows = claim_batch(ledger, run.id, "w1", limit=10, lease_s=LEASE_S)
    assert release_rows(ledger, rows) == len(rows) == run.accepted_rows
    again = claim_batch(ledger, run.id, "w2", limit=10, lease_s=LEASE_S)
    assert row_ids(again) == row_ids(rows)
    with pytest.raises(ClaimLostError):
        record_step(ledger, rows[0], user_step(rows[0]))


def check_success_needs_its_steps(ledger: Ledger, folder: Path) -> None:
    run = make_run(ledger, folder, rows=1)
    (row,) = claim_batch(ledger, run.id, "w1", limit=1, lease_s=LEASE_S)
    with pytest.raises(InvariantError):
        finish_row(ledger, row, status="success", required_steps=("user",))
    record_step(ledger, row, user_step(row, "started"))
    with pytest.raises(InvariantError):
        finish_row(ledger, row, status="success", required_steps=("user",))
    assert not run_is_finished(ledger, run.id)


SCENARIOS = [
    check_claims_go_batch_by_batch,
    check_concurrent_claims_are_disjoint,
    check_live_lease_is_not_taken,
    check_expired_lease_is_taken_and_the_old_worker_fenced,
    check_renewed_lease_is_kept,
    check_a_lease_that_ran_out_is_not_renewed,
    check_released_rows_are_ready_again,
    check_success_needs_its_steps,
    check_fencing_comes_before_invariants,
]


def scenario_id(scenario: object) -> str:
    return getattr(scenario, "__name__", "?").removeprefix("check_")
