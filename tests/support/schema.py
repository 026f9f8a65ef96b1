"""The ledger's schema checks, for any backend: test_schema.py runs them on SQLite,
test_postgres.py on PostgreSQL.

    assert_migrated_schema_is_the_models(engine)   migrations give exactly the models' schema
    open_from_processes_at_once(url, count)        that many processes migrate at one instant
    insert_good_states(ledger); assert_bad_state_is_refused(ledger, *BAD_STATES[i][1:])
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, insert, inspect, text
from sqlalchemy.exc import IntegrityError

from ledger.database import Ledger, head_revision
from ledger.models import Base, Event, RateShareRecord, Row, Run, SharedEntity, StepRecord

VIEWS = {"v_progress", "v_rows", "v_steps", "v_pending", "v_rejected", "v_plan"}
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


# --- migrations versus models ----------------------------------------------------------------


def schema_diff(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, Base.metadata))


def check_constraints(engine: Engine) -> dict[str, set[tuple[str | None, str]]]:
    """Per table: (name, text squeezed of whitespace) of each CHECK constraint, as reflected."""
    inspector = inspect(engine)
    return {
        table: {
            (check["name"], " ".join(check["sqltext"].split()))
            for check in inspector.get_check_constraints(table)
        }
        for table in inspector.get_table_names()
        if table != "alembic_version"
    }


def assert_migrated_schema_is_the_models(engine: Engine) -> None:
    assert schema_diff(engine) == []
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    assert current == head_revision()
    views = set(inspect(engine).get_view_names())
    assert views == VIEWS
    with engine.connect() as connection:
        for view in VIEWS:
            connection.execute(text(f"SELECT * FROM {view} LIMIT 1")).all()


# Opens the ledger once the parent says "go", so that every child migrates at the same time.
_OPEN_ON_GO = """
import sys
from ledger.database import open_ledger
print("ready", flush=True)
sys.stdin.readline()
open_ledger(sys.argv[1]).dispose()
"""


def open_from_processes_at_once(url: str, count: int = 3) -> list[tuple[int, str]]:
    """(exit code, stderr) of `count` processes opening an empty ledger at the same instant."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_ON_GO, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    results = []
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            _, stderr = child.communicate(timeout=60)
            results.append((child.returncode, stderr))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()
    return results


# --- constraints reject bad states -----------------------------------------------------------

GOOD = {
    Run: {
        "id": 1,
        "input_hash": "a" * 64,
        "file_name": "users.csv",
        "pipeline_version": "1",
        "started_at": NOW,
        "total_rows": 2,
        "accepted_rows": 1,
        "rejected_rows": 1,
        "batch_size": 500,
        "headers_json": "[]",
    },
    Row: {
        "id": 1,
        "run_id": 1,
        "row_id": 1,
        "batch_id": 1,
        "raw_json": "{}",
        "normalized_json": "{}",
        "status": "ready",
        "attempts": 0,
        "created_at": NOW,
        "updated_at": NOW,
    },
    StepRecord: {
        "id": 1,
        "row_pk": 1,
        "step": "user",
        "entity_type": "user",
        "entity_key": "a@x.com",
        "status": "created",
        "attempts": 1,
        "updated_at": NOW,
    },
    SharedEntity: {
        "id": 1,
        "run_id": 1,
        "entity_type": "location",
        "entity_key": "HQ",
        "status": "ready",
        "remote_id": "loc-1",
        "calling_enabled": True,
        "updated_at": NOW,
    },
    Event: {"id": 1, "run_id": 1, "row_pk": 1, "kind": "claimed", "at": NOW},
    RateShareRecord: {
        "id": 1,
        "scope": "https://webexapis.com/v1",
        "worker_id": "host:1",
        "seen_at": NOW,
        "rate_per_s": 48.5,
        "limit_per_s": 97.0,
        "throttled_at": NOW,
    },
}
CLAIM = {"claim_token": "t" * 32, "lease_expires_at": NOW}

# A second record of each table that is fine as it stands: each bad state below changes it.
FRESH: dict[type[Base], dict[str, Any]] = {
    Run: {"id": 2, "input_hash": "b" * 64},
    Row: {"id": 2, "row_id": 2},
    StepRecord: {"id": 2, "step": "number"},
    SharedEntity: {"id": 2, "entity_key": "Branch"},
    Event: {"id": 2},
    RateShareRecord: {"id": 2, "worker_id": "host:2"},
}

# (what, table, change, the constraint that must refuse it)
BAD_STATES: list[tuple[str, type[Base], dict[str, Any], str]] = [
    ("row status", Row, {"status": "bogus"}, "ck_rows_status"),
    (
        "rejected row in a batch",
        Row,
        {"status": "rejected", "normalized_json": None, "reason_code": "invalid_email"},
        "ck_rows_batch_only_for_accepted",
    ),
    ("accepted row without a batch", Row, {"batch_id": None}, "ck_rows_batch_only_for_accepted"),
    (
        "accepted row without normalized values",
        Row,
        {"normalized_json": None},
        "ck_rows_normalized_only_for_accepted",
    ),
    ("pending row without a reason", Row, {"status": "pending"}, "ck_rows_reason_iff_failed"),
    ("ready row with a reason", Row, {"reason_code": "bad_request"}, "ck_rows_reason_iff_failed"),
    (
        "claimed row without a token",
        Row,
        {"status": "claimed", "lease_expires_at": NOW},
        "ck_rows_claim_iff_claimed",
    ),
    (
        "claimed row without a lease",
        Row,
        {"status": "claimed", "claim_token": "t" * 32},
        "ck_rows_claim_iff_claimed",
    ),
    ("ready row holding a claim", Row, CLAIM, "ck_rows_claim_iff_claimed"),
    ("row_id 0", Row, {"row_id": 0}, "ck_rows_row_id"),
    ("row of no run", Row, {"run_id": 99}, "fk_rows_run_id_runs"),
    ("row twice", Row, {"row_id": 1}, "uq_rows_run_id_row_id"),
    ("run counts", Run, {"rejected_rows": 5}, "ck_runs_counts_add_up"),
    (
        "negative counts",
        Run,
        {"total_rows": 0, "accepted_rows": 1, "rejected_rows": -1},
        "ck_runs_counts",
    ),
    ("batch size 0", Run, {"batch_size": 0}, "ck_runs_batch_size"),
    ("same input twice", Run, {"input_hash": "a" * 64}, "uq_runs_input_hash"),
    ("step status", StepRecord, {"status": "bogus"}, "ck_steps_status"),
    ("step name", StepRecord, {"step": "bogus"}, "ck_steps_step"),
    ("negative attempts", StepRecord, {"attempts": -1}, "ck_steps_attempts"),
    ("step of no row", StepRecord, {"row_pk": 99}, "fk_steps_row_pk_rows"),
    ("step twice", StepRecord, {"step": "user"}, "uq_steps_row_pk_step"),
    ("entity status", SharedEntity, {"status": "bogus"}, "ck_entities_status"),
    ("ready entity without id", SharedEntity, {"remote_id": None}, "ck_entities_ready_has_id"),
    (
        "claimed entity without token",
        SharedEntity,
        {"status": "claimed"},
        "ck_entities_claim_iff_claimed",
    ),
    (
        "entity twice",
        SharedEntity,
        {"entity_key": "HQ"},
        "uq_entities_run_id_entity_type_entity_key",
    ),
    ("event of no run", Event, {"run_id": 99}, "fk_events_run_id_runs"),
    ("rate of zero", RateShareRecord, {"rate_per_s": 0.0}, "ck_rate_shares_rate_per_s"),
    ("negative limit", RateShareRecord, {"limit_per_s": -1.0}, "ck_rate_shares_limit_per_s"),
    (
        "one worker's report twice",
        RateShareRecord,
        {"worker_id": "host:1"},
        "uq_rate_shares_scope_worker_id",
    ),
]
# SQLite names a failed CHECK, but not a failed UNIQUE or FOREIGN KEY constraint.
SQLITE_WORDING = {"uq_": "UNIQUE constraint failed", "fk_": "FOREIGN KEY constraint failed"}


def insert_good_states(ledger: Ledger) -> None:
    with ledger.write() as session:
        for model, values in GOOD.items():
            session.execute(insert(model), [values])


def assert_bad_state_is_refused(
    ledger: Ledger, model: type[Base], change: dict[str, Any], constraint: str
) -> None:
    """The fresh record goes in; the same record with `change` is refused by `constraint`."""
    fresh = GOOD[model] | FRESH[model]
    with pytest.raises(IntegrityError) as caught, ledger.write() as session:
        session.execute(insert(model), [fresh | change])
    message = str(caught.value.orig)
    if ledger.is_sqlite and constraint[:3] in SQLITE_WORDING:
        assert SQLITE_WORDING[constraint[:3]] in message
    else:
        assert constraint in message
    with ledger.write() as session:
        session.execute(insert(model), [fresh])
