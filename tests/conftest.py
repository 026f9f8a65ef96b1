"""Fixtures and helpers shared by the test suite.

Every test starts with none of SPEC section 2's variables set (the developer's shell must not
leak a token or a BATCH_SIZE into a test). `ledger_env` goes further for tests of the CLI: the
working directory (where `.env` is read) is a fresh temporary folder, and the ledger, the
artifacts and the log all live inside it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ledger.cli import app
from ledger.config import Settings

CONFIG_VARIABLES = tuple(Settings.model_fields)


@pytest.fixture(autouse=True)
def _no_config_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CONFIG_VARIABLES:
        monkeypatch.delenv(name, raising=False)


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


def csv_text(header: Sequence[str], rows: Iterable[Sequence[str]], *, newline: str = "\n") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(
    path: Path,
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    newline: str = "\n",
    bom: bool = False,
) -> Path:
    """Write a UTF-8 CSV the way a spreadsheet would (quoting only where needed)."""
    data = csv_text(header, rows, newline=newline).encode("utf-8")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))
