"""The ledger on PostgreSQL (the many-workers backend), against a throw-away cluster.

Skipped, with the reason, where the PostgreSQL server binaries are not installed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from ledger.database import Ledger, open_ledger
from ledger.models import Base
from ledger.records import ClaimedRow
from ledger.state_store import claim_batch
from tests.support.claims import (
    LEASE_S,
    check_a_lease_that_ran_out_is_not_renewed,
    check_concurrent_claims_are_disjoint,
    check_expired_lease_is_taken_and_the_old_worker_fenced,
    check_fencing_comes_before_invariants,
    check_live_lease_is_not_taken,
    check_released_rows_are_ready_again,
    check_renewed_lease_is_kept,
)
from tests.support.cli import LedgerEnv, assert_exit, invoke
from tests.support.csvfiles import write_csv
from tests.support.ledgers import make_run
from tests.support.schema import (
    BAD_STATES,
    assert_bad_state_is_refused,
    assert_migrated_schema_is_the_models,
    insert_good_states,
    open_from_processes_at_once,
)

pytestmark = pytest.mark.postgres


def test_open_ledger_migrates_an_empty_database_to_head(postgres_url: str) -> None:
    opened = open_ledger(postgres_url)
    try:
        assert opened.engine.dialect.name == "postgresql"
        assert not opened.is_sqlite
        assert_migrated_schema_is_the_models(opened.engine)
    finally:
        opened.dispose()
    # Opening again finds the schema at head and leaves it be.
    again = open_ledger(postgres_url)
    try:
        assert_migrated_schema_is_the_models(again.engine)
    finally:
        again.dispose()


def test_workers_opening_an_empty_database_together_all_succeed(postgres_url: str) -> None:
    assert open_from_processes_at_once(postgres_url, count=4) == [(0, "")] * 4
    opened = open_ledger(postgres_url)
    try:
        assert_migrated_schema_is_the_models(opened.engine)
    finally:
        opened.dispose()


@pytest.mark.parametrize(
    ("model", "change", "constraint"),
    [(model, change, constraint) for _, model, change, constraint in BAD_STATES[:12:3]],
    ids=[name for name, _, _, _ in BAD_STATES[:12:3]],
)
def test_constraints_hold_on_postgres(
    pg_ledger: Ledger, model: type[Base], change: dict[str, Any], constraint: str
) -> None:
    insert_good_states(pg_ledger)
    assert_bad_state_is_refused(pg_ledger, model, change, constraint)


def test_ingest_via_the_cli(ledger_env: LedgerEnv, postgres_url: str) -> None:
    path = write_csv(
        ledger_env.root / "users.csv",
        ["email", "first_name", "location_name", "extension"],
        [["a@x.com", "A", "HQ", "10"], ["bad", "B", "HQ", "11"], ["c@x.com", "C", "HQ", "12"]],
    )
    result = invoke("ingest", str(path), "--db", postgres_url, env={"BATCH_SIZE": "1"})
    assert_exit(result, 0)
    assert "rows: 3 · accepted: 2 · rejected: 1" in result.stdout
    again = invoke("ingest", str(path), "--db", postgres_url)
    assert_exit(again, 0)
    assert "already ingested as run 1" in again.stdout
    opened = open_ledger(postgres_url)
    try:
        with opened.read() as session:
            rows = session.execute(
                text("SELECT row_id, status, batch_id, reason_code FROM rows ORDER BY row_id")
            ).all()
            runs = session.execute(text("SELECT COUNT(*) FROM runs")).scalar_one()
    finally:
        opened.dispose()
    assert [tuple(row) for row in rows] == [
        (1, "ready", 1, None),
        (2, "rejected", None, "invalid_email"),
        (3, "ready", 2, None),
    ]
    assert runs == 1


@pytest.mark.parametrize(
    "scenario",
    [
        check_concurrent_claims_are_disjoint,
        check_live_lease_is_not_taken,
        check_expired_lease_is_taken_and_the_old_worker_fenced,
        check_fencing_comes_before_invariants,
        check_renewed_lease_is_kept,
        check_a_lease_that_ran_out_is_not_renewed,
        check_released_rows_are_ready_again,
    ],
    ids=lambda scenario: scenario.__name__.removeprefix("check_"),
)
def test_claims_on_postgres(
    pg_ledger: Ledger, tmp_path: Path, scenario: Callable[[Ledger, Path], None]
) -> None:
    scenario(pg_ledger, tmp_path)


def test_claims_skip_rows_locked_by_an_open_transaction(pg_ledger: Ledger, tmp_path: Path) -> None:
    # While another transaction holds some ready rows, a claim takes the others at once
    # instead of waiting for them: FOR UPDATE SKIP LOCKED.
    run = make_run(pg_ledger, tmp_path, rows=6)  # accepted: rows 1 2 4 5
    claimed: list[ClaimedRow] = []
    worker = threading.Thread(
        target=lambda: claimed.extend(
            claim_batch(pg_ledger, run.id, "other", limit=10, lease_s=LEASE_S)
        )
    )
    with pg_ledger.write() as session:
        locked = list(
            session.execute(
                text(
                    "SELECT row_id FROM rows WHERE status = 'ready' ORDER BY row_id LIMIT 2 "
                    "FOR UPDATE"
                )
            ).scalars()
        )
        worker.start()
        worker.join(timeout=10)
        waited = worker.is_alive()
        session.rollback()
    worker.join(timeout=10)
    assert locked == [1, 2]
    assert not waited, "the claim waited for locked rows instead of skipping them"
    assert [row.row_id for row in claimed] == [4, 5]
