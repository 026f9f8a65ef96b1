"""`--db` naming a SQLite file that is someone else's database is refused, untouched.

Opening it as a ledger used to add the ledger's seven tables to it and switch it to WAL."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.support.cli import LedgerEnv, assert_exit, invoke
from tests.support.csvfiles import one_user_csv


def users_csv(env: LedgerEnv) -> Path:
    return one_user_csv(env.root / "users.csv")


@pytest.mark.parametrize("command", ["ingest", "retry"])
def test_a_sqlite_database_that_is_not_a_ledger_is_refused_untouched(
    ledger_env: LedgerEnv, command: str
) -> None:
    other = ledger_env.root / "inventory.db"
    with closing(sqlite3.connect(other)) as connection:
        connection.execute("CREATE TABLE phones (number TEXT PRIMARY KEY, owner TEXT)")
        connection.execute("INSERT INTO phones VALUES ('+14155550100', 'Ana')")
        connection.commit()
    # An mtime in the past, so that any write would show even within the clock's resolution.
    os.utime(other, ns=(1_000_000_000, 1_000_000_000))
    before = other.read_bytes()
    args = [str(users_csv(ledger_env))] if command == "ingest" else []
    result = invoke(command, *args, "--db", f"sqlite:///{other}")
    assert_exit(result, 2)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "not a ledger" in lines[0]
    assert str(other) in lines[0]
    assert other.read_bytes() == before
    assert other.stat().st_mtime_ns == 1_000_000_000
    assert sorted(path.name for path in ledger_env.root.glob("inventory.db*")) == ["inventory.db"]


@pytest.mark.parametrize("content", ["empty", "no-tables"])
def test_an_empty_file_or_database_becomes_a_ledger(ledger_env: LedgerEnv, content: str) -> None:
    target = ledger_env.root / "new.db"
    if content == "empty":
        target.write_bytes(b"")
    else:
        with closing(sqlite3.connect(target)) as connection:
            connection.execute("PRAGMA user_version = 7")  # a header, and no table
            connection.commit()
    result = invoke("ingest", str(users_csv(ledger_env)), "--db", f"sqlite:///{target}")
    assert_exit(result, 0)
    with closing(sqlite3.connect(target)) as connection:
        assert connection.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,)


def test_a_ledger_is_opened_again(ledger_env: LedgerEnv) -> None:
    assert_exit(invoke("ingest", str(users_csv(ledger_env)), "--db", ledger_env.db_url), 0)
    result = invoke("ingest", str(users_csv(ledger_env)), "--db", ledger_env.db_url)
    assert_exit(result, 0)
    assert "already ingested as run 1" in result.stdout
