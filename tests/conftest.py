"""Fixtures of the whole suite (the helpers they use are in tests/support/).

Every test starts with none of SPEC section 2's variables set (the developer's shell must not
leak a token or a BATCH_SIZE into a test). `ledger_env` goes further for tests of the CLI: the
working directory (where `.env` is read) is a fresh temporary folder, and the ledger, the
artifacts and the log all live inside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.config import Settings
from tests.support.cli import LedgerEnv
from tests.support.ledgers import MixedRun, build_mixed_run
from tests.support.postgres import PostgresServer, migrated_template, throwaway_cluster
from tests.support.work import Jobs


@pytest.fixture(autouse=True)
def _no_config_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)


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


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[Jobs]:
    """Jobs of `ledger work` under tmp_path, on one fake clock; closed at the test's end."""
    with Jobs(tmp_path) as made:
        yield made


@pytest.fixture
def mixed(ledger_env: LedgerEnv) -> Iterator[MixedRun]:
    """A ledger at `ledger_env.db_url` with rows in every outcome (see build_mixed_run)."""
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
def postgres_url(postgres_server: PostgresServer) -> str:
    """A `postgresql+psycopg://` URL of a fresh, empty database."""
    return postgres_server.create_database()


@pytest.fixture(scope="session")
def _postgres_ledger_template(postgres_server: PostgresServer) -> str:
    return migrated_template(postgres_server)  # migrated once; each test gets a copy


@pytest.fixture
def postgres_ledger_url(postgres_server: PostgresServer, _postgres_ledger_template: str) -> str:
    """The URL of a fresh database already migrated to head (faster than migrating each)."""
    return postgres_server.create_database(template=_postgres_ledger_template)
