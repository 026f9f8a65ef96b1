"""Failures the contract gives exit 2 and one line (SPEC section 1), which used to be exit 1,
an internal error: an unusable `--out`, a ledger from a newer version, a CSV cell past the csv
module's limit, an empty or unusable LEDGER_LOG_FILE, and two ingests of one file at once."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

import ledger.ingest as ingest_module
from ledger.config import load_settings
from ledger.database import open_ledger
from ledger.ingest import ingest_file
from tests.support.cli import LedgerEnv, assert_exit, ingest, invoke, run_count
from tests.support.csvfiles import write_csv
from tests.support.people import person
from tests.support.work import Jobs

HEADER = ["email", "first_name", "location_name", "extension"]


def users_csv(env: LedgerEnv, name: str = "users.csv", rows: int = 2) -> Path:
    people = [[f"user{n}@example.com", "User", "HQ", str(1000 + n)] for n in range(rows)]
    return write_csv(env.root / name, HEADER, people)


def one_line(result: Result) -> str:
    assert_exit(result, 2)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- export --out -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_folder", "reason"),
    [
        (lambda root: root / "users.csv" / "out", "Not a directory"),
        (lambda root: root / "users.csv", "File exists"),
    ],
    ids=["under-a-file", "is-a-file"],
)
def test_export_to_an_unusable_folder_is_exit_2_naming_it(
    ledger_env: LedgerEnv, make_folder: Callable[[Path], Path], reason: str
) -> None:
    assert_exit(ingest(ledger_env, users_csv(ledger_env)), 0)
    folder = make_folder(ledger_env.root)
    line = one_line(invoke("export", "--db", ledger_env.db_url, "--out", str(folder)))
    assert str(folder) in line
    assert reason in line


# --- a ledger from a newer version ------------------------------------------------------------


def test_a_ledger_from_a_newer_version_is_refused_by_every_command(ledger_env: LedgerEnv) -> None:
    assert_exit(ingest(ledger_env, users_csv(ledger_env)), 0)
    with closing(sqlite3.connect(ledger_env.db_path)) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
        connection.commit()
    for result in (
        ingest(ledger_env, users_csv(ledger_env, "other.csv", rows=3)),
        invoke("export", "--db", ledger_env.db_url),
        invoke("status", "--db", ledger_env.db_url),
    ):
        line = one_line(result)
        assert "written by a newer ledger" in line
        assert "upgrade" in line
    assert run_count(ledger_env) == 1


# --- a cell past the csv module's field size limit --------------------------------------------


@pytest.fixture
def small_field_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    # The real limit is 16 MiB; a small one makes the same failure cheap to provoke.
    monkeypatch.setattr("ledger.data_pipeline.CSV_FIELD_LIMIT", 1000)
    return 1000


def test_a_header_cell_past_the_field_limit_refuses_the_file(
    ledger_env: LedgerEnv, small_field_limit: int
) -> None:
    path = write_csv(
        ledger_env.root / "users.csv",
        [*HEADER, "x" * (small_field_limit + 1)],
        [["a@example.com", "A", "HQ", "10", ""]],
    )
    line = one_line(ingest(ledger_env, path))
    assert "the header (line 1)" in line
    assert "nothing ingested" in line
    assert not (ledger_env.root / "l.db").exists() or run_count(ledger_env) == 0


def test_a_data_cell_past_the_field_limit_refuses_the_file_naming_its_row(
    ledger_env: LedgerEnv, small_field_limit: int
) -> None:
    path = write_csv(
        ledger_env.root / "users.csv",
        HEADER,
        [
            ["a@example.com", "A", "HQ", "10"],
            ["b@example.com", "B" * (small_field_limit + 1), "HQ", "11"],
            ["c@example.com", "C", "HQ", "12"],
        ],
    )
    line = one_line(ingest(ledger_env, path))
    assert "data row 2 (line 3)" in line
    assert "nothing ingested" in line
    assert run_count(ledger_env) == 0


# --- LEDGER_LOG_FILE --------------------------------------------------------------------------


def test_an_empty_log_file_setting_is_a_config_error(ledger_env: LedgerEnv) -> None:
    line = one_line(ingest(ledger_env, users_csv(ledger_env), LEDGER_LOG_FILE=""))
    assert "LEDGER_LOG_FILE" in line
    assert not (ledger_env.root / "l.db").exists()


def test_a_log_file_that_cannot_be_opened_stops_work_with_one_line(ledger_env: LedgerEnv) -> None:
    assert_exit(ingest(ledger_env, users_csv(ledger_env)), 0)
    folder = ledger_env.root / "logs"
    folder.mkdir()
    result = invoke(
        "work",
        "--db",
        ledger_env.db_url,
        "--quiet",
        env={
            "LEDGER_LOG_FILE": str(folder),
            "WEBEX_ACCESS_TOKEN": "a-token-for-nothing",
            "WEBEX_BASE_URL": "http://127.0.0.1:9/v1",  # never reached
        },
    )
    line = one_line(result)
    assert "LEDGER_LOG_FILE" in line
    assert str(folder) in line


# --- two ingests of one file at once ----------------------------------------------------------


def test_the_loser_of_two_ingests_of_one_file_reuses_the_winners_run(
    ledger_env: LedgerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race made deterministic: another `ledger ingest` of the same bytes stores its run
    # after this one looked for it and before this one stores its own.
    path = users_csv(ledger_env, rows=50)
    real_begin_run = ingest_module.begin_run
    rivals = [path]

    def begin_after_a_rival(*args: Any, **kwargs: Any) -> Any:
        if rivals:
            rival = open_ledger(ledger_env.db_url)
            try:
                ingest_file(
                    rival, rivals.pop(), load_settings(LEDGER_OUTPUT_DIR=ledger_env.out_dir)
                )
            finally:
                rival.dispose()
        return real_begin_run(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "begin_run", begin_after_a_rival)
    result = ingest(ledger_env, path)
    assert not rivals  # the rival did run in between
    assert_exit(result, 0)
    assert "already ingested as run 1" in result.stdout
    assert run_count(ledger_env) == 1


def test_work_still_goes_on_when_its_artifacts_cannot_be_written(tmp_path: Path) -> None:
    # The error export raises for an unusable folder is a UsageError for the commands, and
    # still an OSError for the refresh inside `work`, which logs it and carries on.
    with Jobs(tmp_path) as jobs:
        job = jobs.start([person(1), person(2)])
        shutil.rmtree(job.out_dir)
        job.out_dir.write_text("a file where the folder was", encoding="utf-8")
        report = job.work()
        assert (report.ended, report.success) == ("finished", 2)
        assert job.statuses() == {"success": 2}
