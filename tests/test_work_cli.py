"""`ledger work` through the CLI, against the simulator served in-process on a local port."""

from __future__ import annotations

import json
from pathlib import Path

from ledger.simulator import Simulator, running_server
from tests.conftest import LedgerEnv, assert_exit, invoke
from tests.worksupport import TOKEN, person, write_rows


def logged_events(log_file: Path, event: str) -> list[dict[str, object]]:
    lines = (json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line.get("event") == event]


def test_work_claims_batches_of_the_size_the_run_was_ingested_with(ledger_env: LedgerEnv) -> None:
    # BATCH_SIZE fixes each row's batch at ingest; a later BATCH_SIZE must not regroup them.
    path = write_rows(ledger_env.root / "users.csv", [person(n) for n in range(1, 8)])
    ingested = invoke("ingest", str(path), "--db", ledger_env.db_url, env={"BATCH_SIZE": "3"})
    assert_exit(ingested, 0)

    with running_server(Simulator(token=TOKEN)) as base_url:
        worked = invoke(
            "work",
            "--quiet",
            "--db",
            ledger_env.db_url,
            env={"BATCH_SIZE": "500", "WEBEX_ACCESS_TOKEN": TOKEN, "WEBEX_BASE_URL": base_url},
        )

    assert_exit(worked, 0)
    starts = logged_events(ledger_env.log_file, "batch_start")
    assert [(line["batch_id"], line["rows"]) for line in starts] == [(1, 3), (2, 3), (3, 1)]
    assert "3 batch(es) · 7 success" in worked.stdout
