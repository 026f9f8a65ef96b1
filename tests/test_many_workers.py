"""Several `ledger work` processes sharing one ledger, against one simulator on a socket.

The shape the product is built for: many workers (on several machines, here processes) claim
rows from one ledger. Each must get rows nobody else holds, locations must be created once,
and the run must end with every row in exactly one outcome and no duplicate anywhere.
"""

from __future__ import annotations

import csv
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ledger.simulator.core import Simulator
from ledger.simulator.faults import FaultConfig
from ledger.simulator.sample import write_sample_csv
from ledger.simulator.server import running_server

ROWS = 240
WORKERS = 3


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/shared.db"
    else:
        yield request.getfixturevalue("postgres_url")


def _env(tmp_path: Path, db_url: str, base_url: str, name: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LEDGER_",))}
    env.update(
        LEDGER_DATABASE_URL=db_url,
        LEDGER_OUTPUT_DIR=str(tmp_path / f"out-{name}"),
        LEDGER_LOG_FILE=str(tmp_path / f"{name}.log"),
        WEBEX_BASE_URL=base_url,
        WEBEX_ACCESS_TOKEN="shared-test-token",
        BATCH_SIZE="25",
        LEDGER_CONCURRENCY="4",
        LEDGER_LEASE_S="5",
        RETRY_BACKOFF_S="0.02",
        LOOKUP_SETTLE_S="3",
        REQUEST_TIMEOUT_S="5",
    )
    return env


def _ledger(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_workers_sharing_a_ledger_split_the_rows_and_duplicate_nothing(
    shared_ledger: str, tmp_path: Path
) -> None:
    csv_path = tmp_path / "users.csv"
    sample = write_sample_csv(csv_path, ROWS, locations=6, invalid_rows=4, seed=11)
    # Latency makes the workers overlap; ambiguous writes and lag test the create protocol
    # while several processes work the same locations.
    sim = Simulator(
        faults=FaultConfig(
            seed=3, latency_ms=5, write_error_rate=0.02, write_drop_rate=0.02, lookup_delay_s=0.5
        )
    )
    with running_server(sim) as base_url:
        ingest = _ledger("ingest", str(csv_path), env=_env(tmp_path, shared_ledger, base_url, "i"))
        assert ingest.returncode == 0, ingest.stderr
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "ledger.cli", "work", "--quiet"],
                env=_env(tmp_path, shared_ledger, base_url, f"w{n}"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in range(WORKERS)
        ]
        outputs = [worker.communicate(timeout=240) for worker in workers]
        codes = [worker.returncode for worker in workers]

    assert codes == [0] * WORKERS, outputs
    for _, stderr in outputs:
        assert "Traceback" not in stderr

    engine = create_engine(shared_ledger)
    try:
        with engine.connect() as db:
            statuses = dict(
                db.execute(text("SELECT status, count(*) FROM rows GROUP BY status")).all()
            )
            success_ids = set(
                db.execute(text("SELECT row_id FROM rows WHERE status = 'success'")).scalars()
            )
            per_worker = db.execute(
                text("SELECT worker_id, requests FROM worker_stats ORDER BY worker_id")
            ).all()
            claimed_by = (
                db.execute(text("SELECT detail_json FROM events WHERE kind = 'claimed'"))
                .scalars()
                .all()
            )
    finally:
        engine.dispose()

    assert statuses == {"success": ROWS - sample.invalid_rows, "rejected": sample.invalid_rows}
    # Every worker took part: the rows were split, not worked by one while others waited.
    assert len(per_worker) == WORKERS
    assert all(requests > 0 for _, requests in per_worker)
    assert len({detail for detail in claimed_by}) == WORKERS
    # Nothing twice on the remote side, and each location created exactly once.
    assert all(count == 1 for count in sim.users_by_email().values())
    assert len(sim.users_by_email()) == ROWS - sample.invalid_rows
    assert sim.locations_created_by_name() == {name: 1 for name in sim.locations_by_name()}
    assert len(sim.locations_by_name()) == 6

    # The artifacts read back from either engine: a results line per step that ran, each
    # stamped as its step was recorded, in ISO 8601 UTC.
    export = _ledger(
        "export", "--out", str(tmp_path / "out"), env=_env(tmp_path, shared_ledger, base_url, "e")
    )
    assert export.returncode == 0, export.stderr
    with (tmp_path / "out" / "results.csv").open(newline="") as results:
        lines = list(csv.DictReader(results))
    assert {int(line["row_id"]) for line in lines} == success_ids
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z")
    assert all(stamp.fullmatch(line["timestamp"]) for line in lines)
    assert len({line["timestamp"] for line in lines}) > 1


def test_sqlite_ledger_is_usable_by_status_while_workers_write(tmp_path: Path) -> None:
    """A reader (`ledger status`) never fails with 'database is locked' during a shared run."""
    db_url = f"sqlite:///{tmp_path}/shared.db"
    csv_path = tmp_path / "users.csv"
    write_sample_csv(csv_path, 120, locations=3, invalid_rows=2, seed=5)
    sim = Simulator(faults=FaultConfig(latency_ms=5))
    with running_server(sim) as base_url:
        env = _env(tmp_path, db_url, base_url, "s")
        assert _ledger("ingest", str(csv_path), env=env).returncode == 0
        worker = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "work", "--quiet"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        readings = []
        while worker.poll() is None and len(readings) < 5:
            status = _ledger("status", "--json", env=env)
            assert status.returncode == 0, status.stderr
            readings.append(status.stdout)
        _, stderr = worker.communicate(timeout=240)
    assert worker.returncode == 0, stderr
    assert readings
    with closing(sqlite3.connect(tmp_path / "shared.db")) as db:
        open_rows = db.execute(
            "SELECT count(*) FROM rows WHERE status NOT IN ('success', 'rejected')"
        ).fetchone()
    assert open_rows == (0,)
