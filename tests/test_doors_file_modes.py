"""Every file ledger creates is readable by its owner only: the ledger, its -wal and -shm, the
log and the artifacts hold names, emails and phone numbers."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import LedgerEnv, assert_exit, invoke
from tests.support.csvfiles import write_csv
from tests.support.people import person
from tests.support.work import Jobs


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    # The common default, under which files are created 0644 unless asked otherwise.
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ingest_creates_the_ledger_and_the_artifacts_owner_only(ledger_env: LedgerEnv) -> None:
    path = write_csv(
        ledger_env.root / "users.csv",
        ["email", "first_name", "location_name", "extension"],
        [["a@example.com", "A", "HQ", "10"], ["bad", "B", "HQ", "11"]],
    )
    assert_exit(invoke("ingest", str(path), "--db", ledger_env.db_url), 0)
    assert_exit(invoke("export", "--db", ledger_env.db_url), 0)
    assert mode(ledger_env.root / "l.db") == 0o600
    artifacts = sorted(ledger_env.out_dir.iterdir())
    assert len(artifacts) == 5
    assert {item.name: mode(item) for item in artifacts} == {item.name: 0o600 for item in artifacts}


def test_a_work_session_keeps_the_wal_and_shm_owner_only(tmp_path: Path) -> None:
    with Jobs(tmp_path) as jobs:
        job = jobs.start([person(1), person(2)])
        report = job.work()
        assert report.success == 2
        database = job.root / "ledger.db"
        # The ledger is still open: SQLite keeps its -wal and -shm beside it.
        for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
            assert mode(path) == 0o600, path


def test_the_demo_creates_its_ledger_and_log_owner_only(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = invoke("demo", "--dir", str(folder), "--rows", "10", "--profile", "none", "--quiet")
    assert_exit(result, 0)
    created = {
        path.relative_to(folder).as_posix(): mode(path)
        for path in folder.rglob("*")
        if path.is_file()
    }
    # The generated sample input holds made-up people only.
    created.pop("run/users.csv")
    assert "ledger.log" in created
    assert "run/ledger.db" in created
    assert "run/out/results.csv" in created
    assert created == dict.fromkeys(created, 0o600)
