"""`ledger` run in-process through typer's CliRunner, the way a user runs it, and how it ended.

result = invoke("ingest", str(path), "--db", env.db_url, env={"BATCH_SIZE": "1"})
assert_exit(result, 0)      # the exit code, and no traceback on either stream
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner, Result

from ledger.cli import app


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
