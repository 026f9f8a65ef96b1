"""The ledger's schema: migrations give exactly the models' schema, the views exist and run,
the CHECK / UNIQUE / FOREIGN KEY constraints reject bad states, and an installed wheel carries
its migrations."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import setuptools
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, insert, inspect, text
from sqlalchemy.exc import IntegrityError

from ledger.database import Ledger, head_revision, open_ledger
from ledger.models import Base, Event, Row, Run, SharedEntity, StepRecord

PROJECT = Path(__file__).resolve().parents[1]
VIEWS = {"v_progress", "v_rows", "v_steps", "v_pending", "v_rejected"}
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = open_ledger(f"sqlite:///{tmp_path}/l.db")
    yield opened
    opened.dispose()


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


def test_migrating_an_empty_ledger_gives_the_models_schema(ledger: Ledger) -> None:
    assert_migrated_schema_is_the_models(ledger.engine)


def test_migrated_check_constraints_are_the_models(ledger: Ledger, tmp_path: Path) -> None:
    # compare_metadata does not look at CHECK constraints: compare them with a schema
    # created straight from the models.
    reference = create_engine(f"sqlite:///{tmp_path}/reference.db")
    try:
        Base.metadata.create_all(reference)
        expected = check_constraints(reference)
    finally:
        reference.dispose()
    found = check_constraints(ledger.engine)
    assert found == expected
    assert (
        "ck_rows_status",
        "status IN ('ready', 'claimed', 'success', 'pending', 'rejected')",
    ) in (found["rows"])


def test_opening_twice_is_a_no_op(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/l.db"
    for _ in range(2):
        opened = open_ledger(url)
        try:
            assert schema_diff(opened.engine) == []
        finally:
            opened.dispose()


def test_the_migration_detects_a_drifted_model(ledger: Ledger) -> None:
    # The comparison must be able to fail: a column the migrations lack shows up.
    with ledger.engine.begin() as connection:
        connection.execute(text("ALTER TABLE rows ADD COLUMN stray TEXT"))
    diff = schema_diff(ledger.engine)
    assert [entry[0] for entry in diff] == ["remove_column"]


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


def test_workers_opening_an_empty_ledger_together_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/l.db"
    assert open_from_processes_at_once(url) == [(0, "")] * 3
    engine = create_engine(url)
    try:
        assert_migrated_schema_is_the_models(engine)
    finally:
        engine.dispose()


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
}
CLAIM = {"claim_token": "t" * 32, "lease_expires_at": NOW}

# A second record of each table that is fine as it stands: each bad state below changes it.
FRESH: dict[type[Base], dict[str, Any]] = {
    Run: {"id": 2, "input_hash": "b" * 64},
    Row: {"id": 2, "row_id": 2},
    StepRecord: {"id": 2, "step": "number"},
    SharedEntity: {"id": 2, "entity_key": "Branch"},
    Event: {"id": 2},
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


@pytest.mark.parametrize(
    ("model", "change", "constraint"),
    [(model, change, constraint) for _, model, change, constraint in BAD_STATES],
    ids=[name for name, _, _, _ in BAD_STATES],
)
def test_constraints_refuse_bad_states(
    ledger: Ledger, model: type[Base], change: dict[str, Any], constraint: str
) -> None:
    insert_good_states(ledger)
    assert_bad_state_is_refused(ledger, model, change, constraint)


def test_good_states_are_accepted(ledger: Ledger) -> None:
    insert_good_states(ledger)
    with ledger.write() as session:
        session.execute(
            insert(Row),
            [
                GOOD[Row] | {"id": 2, "row_id": 2, "status": "claimed", **CLAIM},
                GOOD[Row]
                | {"id": 3, "row_id": 3, "status": "pending", "reason_code": "bad_request"},
                GOOD[Row]
                | {
                    "id": 4,
                    "row_id": 4,
                    "status": "rejected",
                    "batch_id": None,
                    "normalized_json": None,
                    "reason_code": "invalid_email",
                },
            ],
        )
    with ledger.read() as session:
        progress = session.execute(
            text("SELECT outcome, row_count FROM v_progress ORDER BY outcome")
        ).all()
    assert [tuple(line) for line in progress] == [
        ("claimed", 1),
        ("pending", 1),
        ("ready", 1),
        ("rejected", 1),
    ]


def test_deleting_a_run_cascades(ledger: Ledger) -> None:
    insert_good_states(ledger)
    with ledger.write() as session:
        session.execute(text("DELETE FROM runs"))
    with ledger.read() as session:
        counts = [
            session.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
            for table in ("rows", "steps", "entities", "events")
        ]
    assert counts == [0, 0, 0, 0]


# --- the wheel carries its migrations --------------------------------------------------------


def wheel_builder_missing() -> str | None:
    """Why `pip wheel --no-build-isolation` cannot work here, or None when it can."""
    if importlib.util.find_spec("wheel") is not None:
        return None
    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    if (major, minor) >= (70, 1):
        return None  # setuptools ships bdist_wheel itself from 70.1 on
    return (
        f"setuptools {setuptools.__version__} needs the `wheel` package to build a wheel "
        "offline; add `wheel` (or setuptools>=70.1) to the dev extras"
    )


def test_wheel_contains_the_migrations(tmp_path: Path) -> None:
    missing = wheel_builder_missing()
    if missing:
        pytest.skip(missing)
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT / name, source / name)
    for folder in ("ledger", "migrations"):
        shutil.copytree(
            PROJECT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    dist = tmp_path / "dist"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--wheel-dir",
            str(dist),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("ledger-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for required in (
        "ledger/migrations/env.py",
        "ledger/migrations/script.py.mako",
        "ledger/migrations/versions/0001_initial_schema.py",
        "ledger/py.typed",
        "ledger/cli.py",
    ):
        assert required in names
    assert not any(name.startswith("migrations/") for name in names)
