#!/usr/bin/env python3
"""Time `ledger export` on a finished 21,000-row run (target: under 2 s).

Builds a throw-away ledger in a temporary folder: generates a CSV (a few rows invalid on
purpose, so some are rejected), ingests it, then marks most accepted rows success with five
step records each and the rest pending, with bulk SQL (setup time is not what is measured).
Then times `export_all` in-process and `ledger export` in a subprocess, and prints seconds
and rows/s for each.

    .venv/bin/python scripts/bench_export.py [--rows 21000] [--pending-every 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, update

from ledger.config import load_settings
from ledger.database import Ledger, open_ledger
from ledger.ingest import ingest_file
from ledger.models import Row, StepRecord
from ledger.records import RunInfo
from ledger.writers import export_all

HEADERS = (
    "email",
    "first_name",
    "last_name",
    "location_name",
    "location_time_zone",
    "location_preferred_language",
    "location_announcement_language",
    "location_address1",
    "location_city",
    "location_state",
    "location_postal_code",
    "location_country",
    "extension",
    "phone_number",
    "department",
    "voicemail_enabled",
)
LOCATIONS = 40
CHUNK = 5000


def write_csv(path: Path, rows: int) -> None:
    """A deterministic file; every 500th row has a bad email and is rejected at ingest."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADERS)
        for n in range(1, rows + 1):
            site = n % LOCATIONS
            email = f"user{n}@example.com" if n % 500 else f"user{n}-at-example.com"
            writer.writerow(
                (
                    email,
                    f"First{n}",
                    f"Last{n}",
                    f"Site {site:02d}",
                    "America/New_York",
                    "en_us",
                    "en_us",
                    f"{100 + site} Main St",
                    "Springfield",
                    "NY",
                    f"{10000 + site}",
                    "US",
                    f"{1000 + n // LOCATIONS}",
                    f"+1415{5_000_000 + n:07d}",
                    '=HYPERLINK("x")' if n % 997 == 0 else "Sales",
                    "true",
                )
            )


def finish_rows(ledger: Ledger, run: RunInfo, pending_every: int) -> tuple[int, int]:
    """Mark accepted rows success (five steps each) or pending, in bulk. Returns the counts."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    with ledger.write() as session:
        accepted = session.execute(
            Row.__table__.select()
            .with_only_columns(Row.id, Row.row_id, Row.email, Row.location_name)
            .where(Row.run_id == run.id, Row.status == "ready")
            .order_by(Row.row_id)
        ).all()
        success_pks: list[int] = []
        steps: list[dict[str, object]] = []
        pending = 0
        for pk, row_id, email, location in accepted:
            at = start + timedelta(milliseconds=row_id * 100)
            if row_id % pending_every == 0:
                session.execute(
                    update(Row)
                    .where(Row.id == pk)
                    .values(
                        status="pending",
                        reason_code="extension_in_use",
                        reason_message="extension is assigned to someone else",
                        reason_step="user",
                        http_status=400,
                        finished_at=at,
                        updated_at=at,
                    )
                )
                pending += 1
                continue
            success_pks.append(pk)
            for step, entity_type, key, status in (
                ("location", "location", location, "unchanged"),
                ("calling", "location", location, "unchanged"),
                ("number", "number", f"loc-{location}:+1415{row_id}", "created"),
                ("user", "user", email, "created"),
                ("settings", "settings", email, "updated"),
            ):
                steps.append(
                    {
                        "row_pk": pk,
                        "step": step,
                        "entity_type": entity_type,
                        "entity_key": key,
                        "status": status,
                        "attempts": 1,
                        "http_status": 200,
                        "remote_id": f"Y2lzY29zcGFyazovL3VzL1BFT1BMRS97{row_id:08d}{step}",
                        "message": None,
                        "tracking_id": f"ROUTER_{row_id:08d}",
                        "updated_at": at,
                    }
                )
            if len(steps) >= CHUNK:
                session.execute(insert(StepRecord), steps)
                steps = []
        if steps:
            session.execute(insert(StepRecord), steps)
        for first in range(0, len(success_pks), CHUNK):
            session.execute(
                update(Row)
                .where(Row.id.in_(success_pks[first : first + CHUNK]))
                .values(status="success", finished_at=start, updated_at=start)
            )
    return len(success_pks), pending


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=21_000)
    parser.add_argument("--pending-every", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_export_") as folder:
        base = Path(folder)
        url = f"sqlite:///{base / 'ledger.db'}"
        os.environ["LEDGER_DATABASE_URL"] = url
        os.environ["LEDGER_OUTPUT_DIR"] = str(base / "out")
        settings = load_settings()
        source = base / "users.csv"

        began = time.perf_counter()
        write_csv(source, args.rows)
        ledger = open_ledger(url)
        run = ingest_file(ledger, source, settings).run
        success, pending = finish_rows(ledger, run, args.pending_every)
        print(
            f"setup: {run.total_rows} rows ({success} success, {pending} pending, "
            f"{run.rejected_rows} rejected) in {time.perf_counter() - began:.1f}s"
        )

        best = float("inf")
        for attempt in range(1, args.repeat + 1):
            began = time.perf_counter()
            report = export_all(ledger, run, base / "out")
            elapsed = time.perf_counter() - began
            best = min(best, elapsed)
            print(
                f"export_all #{attempt}: {elapsed:.2f}s · {run.total_rows / elapsed:,.0f} rows/s "
                f"({report.results} result lines, {report.pending} pending, "
                f"{report.rejected} rejected, {report.retry} retry)"
            )
        ledger.dispose()

        ledger_cli = Path(sys.executable).with_name("ledger")
        command = [str(ledger_cli), "export", "--db", url, "--out", str(base / "cli-out")]
        began = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        cli_elapsed = time.perf_counter() - began
        print(
            f"ledger export (subprocess, interpreter start included): {cli_elapsed:.2f}s · "
            f"{run.total_rows / cli_elapsed:,.0f} rows/s"
        )
        target = 2.0
        verdict = "OK" if best < target and cli_elapsed < target else "MISSED"
        print(f"best export_all {best:.2f}s, CLI {cli_elapsed:.2f}s: {verdict} (target {target}s)")
        return 0 if verdict == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
