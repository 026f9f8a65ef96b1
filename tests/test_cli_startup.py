"""Every `ledger` process (each worker of a run too) pays at start-up for what the CLI imports
before its command runs. So a command imports only what it uses: `import ledger.cli`,
`ledger --help` and `ledger status` leave the simulator, the demo, the planner and the
executor unimported, and only the commands that open a ledger load SQLAlchemy and Alembic.

Each case runs in a fresh interpreter (`python -X importtime`, which names every module it
imports on standard error), as a user's shell would start it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from ledger.cli import SIM_HELP, app
from tests.support.cli import LedgerEnv, assert_exit, invoke
from tests.support.ledgers import MixedRun

# Only the commands that use them may import these.
HEAVY = (
    "ledger.demo",
    "ledger.simulator",
    "ledger.planner",
    "ledger.executor",
    "ledger.ingest",
)
# Nor may a command that neither reads the settings nor opens a ledger.
LEDGER_ONLY = ("ledger.config", "ledger.database", "sqlalchemy", "alembic", "pydantic_settings")


def imported(*python_args: str, cwd: Path) -> set[str]:
    """The modules a fresh `python -X importtime ARGS…` imports (standard error names each)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *python_args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """The modules of `modules` that are one of `packages` or inside one."""
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_importing_the_cli_imports_no_command_module(tmp_path: Path) -> None:
    modules = imported("-c", "import ledger.cli", cwd=tmp_path)
    assert "ledger.cli" in modules
    assert loaded(modules, (*HEAVY, *LEDGER_ONLY, "rich", "httpx")) == []


def test_help_imports_no_command_module(tmp_path: Path) -> None:
    modules = imported("-m", "ledger.cli", "--help", cwd=tmp_path)
    assert loaded(modules, HEAVY + LEDGER_ONLY) == []


def test_status_imports_neither_the_simulator_nor_the_executor(
    ledger_env: LedgerEnv, mixed: MixedRun
) -> None:
    modules = imported("-m", "ledger.cli", "status", "--db", ledger_env.db_url, cwd=ledger_env.root)
    assert "ledger.status" in modules  # the command did run
    assert loaded(modules, HEAVY) == []


def test_sim_is_listed_with_its_own_help_and_built_when_used() -> None:
    # `ledger --help` lists `sim` by SIM_HELP, without building it: it must say what the
    # real command's help says.
    command = typer.main.get_command(app).commands["sim"]  # type: ignore[attr-defined]
    assert (command.help or "").strip().splitlines()[0] == SIM_HELP
    assert "--rate-limit-rps" in {opt for param in command.params for opt in param.opts}
    listing = invoke("--help", env={"COLUMNS": "300"})
    assert_exit(listing, 0)
    assert SIM_HELP in listing.stdout
    result = invoke("sim", "--help", env={"COLUMNS": "300"})
    assert_exit(result, 0)
    assert "--rate-limit-rps" in result.stdout


def test_a_sqlite_ledger_loads_no_postgresql_dialect(
    ledger_env: LedgerEnv, mixed: MixedRun
) -> None:
    # The PostgreSQL dialect loads every driver module it ships: a SQLite ledger never needs it.
    command = ("-m", "ledger.cli", "export", "--db", ledger_env.db_url)
    modules = imported(*command, cwd=ledger_env.root)
    assert "ledger.state_store.step_statements" in modules  # the step statements were built
    assert loaded(modules, ("sqlalchemy.dialects.postgresql", "asyncpg", "psycopg")) == []
