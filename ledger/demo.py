"""`ledger demo`: the whole job, end to end, against the built-in simulator. No token needed.

It writes a sample CSV, serves the simulator on a free local port with mild faults (latency, a
rate limit, a few 5xx, ambiguous writes, lag before new users show up), then ingests, works and
exports exactly as an operator would against Webex, into a folder of its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from ledger.config import Settings, load_settings
from ledger.database import open_ledger
from ledger.error_handling import UsageError
from ledger.executor import WorkReport, work_run
from ledger.ingest import IngestReport, ingest_file
from ledger.progress import ProgressSink
from ledger.simulator.core import Simulator
from ledger.simulator.faults import PROFILES
from ledger.simulator.sample import write_sample_csv
from ledger.simulator.server import running_server
from ledger.status import RunStatus, run_status
from ledger.writers import ExportReport, export_all

DEMO_TOKEN = "demo-token"


@dataclass(frozen=True)
class DemoReport:
    folder: Path
    csv_path: Path
    ingest: IngestReport
    work: WorkReport
    export: ExportReport
    status: RunStatus
    requests: int
    duplicate_users: int


def demo_settings(folder: Path, base_url: str) -> Settings:
    return load_settings(
        WEBEX_ACCESS_TOKEN=DEMO_TOKEN,
        WEBEX_BASE_URL=base_url,
        LEDGER_DATABASE_URL=f"sqlite:///{folder / 'ledger.db'}",
        LEDGER_OUTPUT_DIR=folder / "out",
        LEDGER_LOG_FILE=folder / "ledger.log",
        # Hangs on the simulator last a few seconds; time out sooner than against Webex.
        REQUEST_TIMEOUT_S=3.0,
        LOOKUP_SETTLE_S=8.0,
    )


def run_demo(
    folder: Path,
    *,
    rows: int,
    profile: str,
    progress: ProgressSink,
    stop: threading.Event | None = None,
) -> DemoReport:
    if profile not in PROFILES:
        raise UsageError(f"unknown fault profile {profile!r}: one of {', '.join(PROFILES)}")
    if folder.exists() and any(folder.iterdir()):
        raise UsageError(f"{folder} is not empty: give the demo a new folder (--dir)")
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / "users.csv"
    write_sample_csv(csv_path, rows, locations=max(2, min(30, rows // 100)), seed=7)
    faults = PROFILES[profile].model_copy(update={"hang_s": 5.0, "seed": 7})
    sim = Simulator(faults=faults, token=DEMO_TOKEN)
    with running_server(sim) as base_url:
        settings = demo_settings(folder, base_url)
        ledger = open_ledger(settings.LEDGER_DATABASE_URL)
        try:
            ingest = ingest_file(ledger, csv_path, settings)
            work = work_run(settings, ledger, ingest.run, progress=progress, stop=stop)
            export = export_all(ledger, ingest.run, settings.LEDGER_OUTPUT_DIR)
            status = run_status(ledger, ingest.run)
        finally:
            ledger.dispose()
        duplicates = sum(1 for count in sim.users_by_email().values() if count > 1)
        return DemoReport(
            folder=folder,
            csv_path=csv_path,
            ingest=ingest,
            work=work,
            export=export,
            status=status,
            requests=sim.total_requests,
            duplicate_users=duplicates,
        )
