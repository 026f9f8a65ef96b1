"""An internal error's traceback goes to the log file through the same redaction as every log
line (SPEC section 2: the token is never logged), even when the exception names the token."""

from __future__ import annotations

import json
import uuid

import pytest

from ledger.logs import REDACTED, register_secret
from ledger.row_rules import COLUMNS
from tests.support.cli import LedgerEnv, assert_exit, invoke
from tests.support.csvfiles import write_csv
from tests.support.people import person


def test_a_registered_secret_in_an_exception_does_not_reach_the_log_file(
    ledger_env: LedgerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_csv(ledger_env.root / "users.csv", COLUMNS, [person(1)])
    assert_exit(invoke("ingest", str(source), "--db", ledger_env.db_url), 0)
    secret = f"NmQ1Yz{uuid.uuid4().hex}"  # shaped like a Webex token, registered like one
    register_secret(secret)
    bearer = f"Bearer {uuid.uuid4().hex}.unregistered"

    def broken(*_: object) -> None:
        raise RuntimeError(f"Webex refused {secret} (sent as 'Authorization: {bearer}')")

    monkeypatch.setattr("ledger.writers.export_all", broken)
    result = invoke("export", "--db", ledger_env.db_url)

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"ledger: internal error (RuntimeError); details in {ledger_env.log_file}"
    ]
    logged = ledger_env.log_file.read_text(encoding="utf-8")
    assert secret not in logged
    assert bearer.split()[1] not in logged
    entry = json.loads(logged.splitlines()[-1])
    assert entry["event"] == "internal_error"
    assert "Traceback" in entry["traceback"]
    assert f"Webex refused {REDACTED}" in entry["traceback"]
