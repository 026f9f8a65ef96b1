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
from pathlib import Path
from typing import Any

import pytest
import setuptools
from sqlalchemy import create_engine, insert, text

from ledger.database import (
    HEAD_REVISION,
    Ledger,
    current_revision,
    head_revision,
    open_ledger,
)
from ledger.models import Base, Row
from tests.support.schema import (
    BAD_STATES,
    CLAIM,
    GOOD,
    assert_bad_state_is_refused,
    assert_migrated_schema_is_the_models,
    check_constraints,
    insert_good_states,
    open_from_processes_at_once,
    schema_diff,
)

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = open_ledger(f"sqlite:///{tmp_path}/l.db")
    yield opened
    opened.dispose()


# --- migrations versus models ----------------------------------------------------------------


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


def test_the_head_ledger_opens_at_is_alembics_head() -> None:
    # A new migration must move HEAD_REVISION too, or ledgers would be opened as current.
    assert HEAD_REVISION == head_revision()


def test_the_revision_read_without_alembic_is_alembics(ledger: Ledger, tmp_path: Path) -> None:
    from alembic.runtime.migration import MigrationContext

    with ledger.engine.connect() as connection:
        assert current_revision(connection) == HEAD_REVISION
        assert current_revision(connection) == (
            MigrationContext.configure(connection).get_current_revision()
        )
    empty = create_engine(f"sqlite:///{tmp_path}/empty.db")
    with empty.connect() as connection:
        assert current_revision(connection) is None
    empty.dispose()


def test_a_ledger_at_head_opens_without_loading_alembic(ledger: Ledger) -> None:
    url = ledger.engine.url.render_as_string(hide_password=False)
    probe = (
        "import sys; from ledger.database import open_ledger; "
        f"open_ledger({url!r}).dispose(); open_ledger({url!r}, read_only=True).dispose(); "
        "print('alembic' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def test_the_migration_detects_a_drifted_model(ledger: Ledger) -> None:
    # The comparison must be able to fail: a column the migrations lack shows up.
    with ledger.engine.begin() as connection:
        connection.execute(text("ALTER TABLE rows ADD COLUMN stray TEXT"))
    diff = schema_diff(ledger.engine)
    assert [entry[0] for entry in diff] == ["remove_column"]


def test_workers_opening_an_empty_ledger_together_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/l.db"
    assert open_from_processes_at_once(url) == [(0, "")] * 3
    engine = create_engine(url)
    try:
        assert_migrated_schema_is_the_models(engine)
    finally:
        engine.dispose()


# --- constraints reject bad states -----------------------------------------------------------


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
