#!/usr/bin/env python3
"""Benchmark the ledger writes of `work` alone: the step records and finishes of claimed rows,
with no HTTP, from many threads at once, as the row threads of `work` write them.

Each row gets what a new user with a number and settings costs today: its location steps
(`record_steps`, two outcomes), a `started` mark before its create, then its number, user and
settings outcomes (`record_step` each), and `finish_row`. Prints the CPU of this process per
row and per write call, and how many write transactions the ledger committed.

    .venv/bin/python scripts/bench_steps.py --rows 3000 --threads 32
    .venv/bin/python scripts/bench_steps.py --rows 3000 --threads 32 --db postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import event, func, select

from ledger.config import Settings
from ledger.database import Ledger, open_ledger
from ledger.ingest import ingest_file
from ledger.models import Base
from ledger.records import ClaimedRow, StepOutcome
from ledger.simulator.sample import write_sample_csv
from ledger.state_store import claim_batch, finish_row, record_step, record_steps

ROWS_T = Base.metadata.tables["rows"]
WRITES_PER_ROW = 6  # record_steps, started, number, user, settings, finish


def outcomes(row: ClaimedRow) -> Iterator[list[StepOutcome]]:
    """The write calls of one row, in the order `work` makes them."""
    user = row.user
    location = user.location_name
    yield [
        StepOutcome("location", "unchanged", "location", location, 200, f"LOC-{location}"),
        StepOutcome("calling", "unchanged", "location", location, 200, f"LOC-{location}"),
    ]
    yield [StepOutcome("user", "started", "user", user.email)]
    key = f"LOC-{location}:{row.row_id}"
    yield [StepOutcome("number", "created", "number", key, 201, f"NUM-{row.row_id}")]
    yield [StepOutcome("user", "created", "user", user.email, 200, f"PERSON-{row.row_id}")]
    yield [StepOutcome("settings", "updated", "settings", user.email, 204)]


def work_rows(ledger: Ledger, rows: list[ClaimedRow], threads: int) -> None:
    queue = list(reversed(rows))
    lock = threading.Lock()

    def run() -> None:
        while True:
            with lock:
                if not queue:
                    return
                row = queue.pop()
            for part in outcomes(row):
                if len(part) == 1:
                    record_step(ledger, row, part[0], lease_s=60.0)
                else:
                    record_steps(ledger, row, part, lease_s=60.0)
            finish_row(
                ledger,
                row,
                status="success",
                required_steps=["location", "calling", "number", "user", "settings"],
            )

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--db", help="a PostgreSQL URL (default: SQLite in a scratch folder)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-steps-") as scratch:
        folder = Path(scratch)
        url = options.db or f"sqlite:///{folder / 'ledger.db'}"
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            LEDGER_DATABASE_URL=url,
            LEDGER_OUTPUT_DIR=folder / "out",
            BATCH_SIZE=500,
        )
        csv_path = folder / "users.csv"
        write_sample_csv(csv_path, options.rows, invalid_rows=0, seed=1)
        ledger = open_ledger(url)
        run = ingest_file(ledger, csv_path, settings).run
        rows: list[ClaimedRow] = []
        while batch := claim_batch(ledger, run.id, "bench:1", 500, 600.0):
            rows.extend(batch)
        commits = [0]

        def count_commit(_connection: object) -> None:
            commits[0] += 1

        event.listen(ledger.write_engine, "commit", count_commit)
        cpu, wall = time.process_time(), time.monotonic()
        work_rows(ledger, rows, options.threads)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        with ledger.read() as session:
            done = session.scalar(
                select(func.count()).where(ROWS_T.c.run_id == run.id, ROWS_T.c.status == "success")
            )
        ledger.dispose()
    calls = len(rows) * WRITES_PER_ROW
    print(
        f"{len(rows):,} rows x {WRITES_PER_ROW} writes, {options.threads} threads, "
        f"{'PostgreSQL' if options.db else 'SQLite'}: cpu {cpu:.2f} s = "
        f"{1000 * cpu / max(len(rows), 1):.3f} ms/row, {1000 * cpu / max(calls, 1):.3f} ms/write "
        f"· {commits[0]:,} commits for {calls:,} writes · wall {wall:.1f} s · {done:,} success"
    )


if __name__ == "__main__":
    main()
