"""Fixtures of the whole suite (the helpers they use are in tests/support/).

Every test starts with none of SPEC section 2's variables set (the developer's shell must not
leak a token or a BATCH_SIZE into a test). `ledger_env` goes further for tests of the CLI: the
working directory (where `.env` is read) is a fresh temporary folder, and the ledger, the
artifacts and the log all live inside it.

A fresh ledger is migrated once per session and copied for each test that asks for one
(`sqlite_ledger`, `jobs`, `mixed`; `postgres_ledger_url` on PostgreSQL): migrating is the slow
part of opening a new ledger, and the migrations have tests of their own (test_schema.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.config import Settings
from ledger.database import Ledger, open_ledger
from tests.support.cli import LedgerEnv
from tests.support.clock import FakeTime
from tests.support.ledgers import MixedRun, build_mixed_run, copy_ledger, migrated_ledger_file
from tests.support.postgres import PostgresServer, migrated_template, throwaway_cluster
from tests.support.work import Jobs


@pytest.fixture(autouse=True)
def _no_config_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_time() -> FakeTime:
    """A fake clock: time moves only when something sleeps on it or the test advances it."""
    return FakeTime()


@pytest.fixture
def ledger_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LedgerEnv:
    env = LedgerEnv(
        root=tmp_path,
        db_url=f"sqlite:///{tmp_path}/l.db",
        out_dir=tmp_path / "out",
        log_file=tmp_path / "ledger.log",
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEDGER_OUTPUT_DIR", str(env.out_dir))
    monkeypatch.setenv("LEDGER_LOG_FILE", str(env.log_file))
    return env


@pytest.fixture(scope="session")
def sqlite_ledger_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite ledger migrated to head, never opened by a test: copy it (copy_ledger)."""
    return migrated_ledger_file(tmp_path_factory.mktemp("template") / "ledger.db")


@pytest.fixture
def sqlite_ledger(tmp_path: Path, sqlite_ledger_template: Path) -> Iterator[Ledger]:
    """A fresh, empty SQLite ledger at tmp_path/l.db, open; disposed at the test's end."""
    opened = open_ledger(copy_ledger(sqlite_ledger_template, tmp_path / "l.db"))
    yield opened
    opened.dispose()


@pytest.fixture
def jobs(tmp_path: Path, sqlite_ledger_template: Path) -> Iterator[Jobs]:
    """Jobs of `ledger work` under tmp_path, on one fake clock; closed at the test's end."""
    with Jobs(tmp_path, template=sqlite_ledger_template) as made:
        yield made


@pytest.fixture
def mixed(ledger_env: LedgerEnv, sqlite_ledger_template: Path) -> Iterator[MixedRun]:
    """A ledger at `ledger_env.db_url` with rows in every outcome (see build_mixed_run)."""
    copy_ledger(sqlite_ledger_template, ledger_env.db_path)
    built = build_mixed_run(ledger_env)
    yield built
    built.ledger.dispose()


# --- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the whole session (skips the test when there is none)."""
    with throwaway_cluster() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A `postgresql+psycopg://` URL of a fresh, empty database (dropped afterwards)."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture(scope="session")
def _postgres_ledger_template(postgres_server: PostgresServer) -> str:
    return migrated_template(postgres_server)  # migrated once; each test gets a copy


@pytest.fixture
def postgres_ledger_url(
    postgres_server: PostgresServer, _postgres_ledger_template: str
) -> Iterator[str]:
    """The URL of a fresh database already migrated to head (faster than migrating each),
    dropped afterwards."""
    url = postgres_server.create_database(template=_postgres_ledger_template)
    yield url
    postgres_server.drop_database(url)


@pytest.fixture
def pg_ledger(postgres_ledger_url: str) -> Iterator[Ledger]:
    """A fresh, empty PostgreSQL ledger, open; disposed at the test's end."""
    opened = open_ledger(postgres_ledger_url)
    yield opened
    opened.dispose()
