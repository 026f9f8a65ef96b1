"""`ledger work` as the CLI and the demo run it: `work_run`, and the command itself (against
the simulator served in-process on a local port)."""

from __future__ import annotations

import json
from pathlib import Path

from ledger.executor import work_run
from ledger.row_rules import COLUMNS
from ledger.simulator import Simulator, running_server
from tests.support.cli import LedgerEnv, assert_exit, invoke
from tests.support.csvfiles import write_csv
from tests.support.people import person
from tests.support.scripted import Scripted
from tests.support.work import TOKEN, Jobs, NullProgress


class StartRecorder(NullProgress):
    """A progress sink that keeps the counts each session started from."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[dict[str, int]] = []

    def start(self, *, run_id: int, total: int, success: int, pending: int, rejected: int) -> None:
        self.starts.append(
            {"total": total, "success": success, "pending": pending, "rejected": rejected}
        )


def logged_events(log_file: Path, event: str) -> list[dict[str, object]]:
    lines = (json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line.get("event") == event]


def test_work_claims_batches_of_the_size_the_run_was_ingested_with(ledger_env: LedgerEnv) -> None:
    # BATCH_SIZE fixes each row's batch at ingest; a later BATCH_SIZE must not regroup them.
    path = write_csv(ledger_env.root / "users.csv", COLUMNS, [person(n) for n in range(1, 8)])
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


def test_work_run_uses_the_client_it_is_given_and_starts_from_the_ledger_counts(
    tmp_path: Path,
) -> None:
    with Jobs(tmp_path) as jobs:
        job = jobs.start([person(1), person(2), person(3, email="not-an-email")])
        scripted = Scripted(job.sim)
        client = job.client(scripted.transport())
        progress = StartRecorder()

        first = work_run(job.settings, job.ledger, job.run, progress=progress, client=client)
        again = work_run(job.settings, job.ledger, job.run, progress=progress, client=client)

        assert (first.ended, first.success, again.success) == ("finished", 2, 0)
        # Every request went through the given client (the settings' base URL is not served).
        assert scripted.count("POST", r"^/v1/people\b") == 2
        assert progress.starts == [
            {"total": 3, "success": 0, "pending": 0, "rejected": 1},
            {"total": 3, "success": 2, "pending": 0, "rejected": 1},
        ]
        client.request("GET", "/licenses")  # still open: a client given stays the caller's
