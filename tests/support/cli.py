"""`ledger` run in-process through typer's CliRunner, the way a user runs it, and how it ended.

result = invoke("ingest", str(path), "--db", env.db_url, env={"BATCH_SIZE": "1"})
assert_exit(result, 0)      # the exit code, and no traceback on either stream
ingest(env, path, BATCH_SIZE="1")                  # the same, into the test's ledger
ingest_people(env, 8, BATCH_SIZE="2")              # person(1)…person(8), every column
query(env, "SELECT count(*) FROM runs"), run_count(env)   # the ledger file read with sqlite3
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from ledger.cli import app
from ledger.row_rules import COLUMNS
from tests.support.csvfiles import write_csv
from tests.support.people import person


@dataclass(frozen=True)
class LedgerEnv:
    """Where a CLI test's ledger, artifacts and log live."""

    root: Path
    db_url: str
    out_dir: Path
    log_file: Path

    @property
    def rejected_csv(self) -> Path:
        return self.out_dir / "rejected_rows.csv"

    @property
    def db_path(self) -> Path:
        return self.root / "l.db"


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run `ledger ARGS…` in-process, as a user would, stdout and stderr kept apart."""
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=True)


def assert_no_traceback(result: Result) -> None:
    for text in (result.stdout, result.stderr, result.output):
        assert "Traceback" not in text, text
    # An exception escaping the command (other than its own exit) is a crash, even if silent.
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)


def assert_exit(result: Result, code: int) -> None:
    assert_no_traceback(result)
    assert result.exit_code == code, (
        f"exit {result.exit_code}, expected {code}\nstdout: {result.stdout}\n"
        f"stderr: {result.stderr}"
    )


def ingest(env: LedgerEnv, path: Path, **variables: str) -> Result:
    """`ledger ingest PATH` into the test's ledger, with these variables set for the run."""
    return invoke("ingest", str(path), "--db", env.db_url, env=variables or None)


def ingest_people(env: LedgerEnv, count: int, **variables: str) -> None:
    """Ingest person(1) to person(count), every input column, from users.csv in the test's
    folder; the ingest must succeed."""
    people = [person(n) for n in range(1, count + 1)]
    assert_exit(ingest(env, write_csv(env.root / "users.csv", COLUMNS, people), **variables), 0)


def query(env: LedgerEnv, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """What `sql` reads from the test's ledger file, with sqlite3 rather than ledger."""
    with closing(sqlite3.connect(env.db_path)) as connection:
        return connection.execute(sql, params).fetchall()


def run_count(env: LedgerEnv) -> int:
    """The runs in the test's ledger; 0 while there is no ledger file."""
    if not env.db_path.exists():
        return 0
    return int(query(env, "SELECT COUNT(*) FROM runs")[0][0])


def row_statuses(env: LedgerEnv) -> dict[str, int]:
    """How many rows of the test's ledger are in each status."""
    return dict(query(env, "SELECT status, count(*) FROM rows GROUP BY status"))
