"""Jobs for the tests of `ledger work`: a job is a CSV ingested into a ledger in tmp_path,
worked by the product's own `Worker` and `WebexClient` against the simulator in-process.

    jobs = Jobs(tmp_path)                      # closes every ledger and client at exit
    jobs = Jobs(tmp_path, template=path)       # ledgers copied from a migrated one (faster)
    job = jobs.start([person(1), person(2)], faults=FaultConfig(...), BATCH_SIZE=30)
    report = job.work()                        # a Worker run; `transport=` to script answers
    job.rows()[1].status, job.steps(1)["user"].status, job.results(), job.pending()

Time is fake where a test waits: the client sleeps through `FakeTime.sleep`, which only moves
the fake clock, and the simulator reads the same clock, so its lookup delay passes as the
client "waits" for it. To answer chosen requests with exact sequences, work a job through
`Scripted` (support/scripted.py): `job.work(scripted.transport())`.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, update

from ledger.config import Settings
from ledger.connection_client import WebexClient
from ledger.database import Ledger, open_ledger
from ledger.executor import Worker, WorkReport
from ledger.ingest import ingest_file
from ledger.models import Row, StepRecord
from ledger.records import RunInfo
from ledger.row_rules import COLUMNS
from ledger.simulator import FaultConfig, LoggedRequest, Simulator
from tests.support.clock import FakeTime
from tests.support.csvfiles import read_csv, write_csv
from tests.support.ledgers import copy_ledger

TOKEN = "test-token-0123456789"
BASE_URL = "https://webex.test/v1"


class NullProgress:
    """A ProgressSink that only counts."""

    def __init__(self) -> None:
        self.rows: Counter[str] = Counter()
        self.batches = 0
        self._lock = threading.Lock()

    def start(self, *, run_id: int, total: int, success: int, pending: int, rejected: int) -> None:
        pass

    def row_finished(self, status: str) -> None:
        with self._lock:
            self.rows[status] += 1

    def batch_finished(
        self, *, batch_no: int, rows: int, success: int, pending: int, elapsed_s: float
    ) -> None:
        self.batches += 1

    def stop(self) -> None:
        pass


# --- jobs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowView:
    status: str
    reason_code: str | None
    reason_message: str | None
    reason_step: str | None
    http_status: int | None
    claimed_by: str | None


@dataclass(frozen=True)
class StepView:
    status: str
    remote_id: str | None
    message: str | None
    attempts: int
    http_status: int | None


def make_settings(root: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "WEBEX_ACCESS_TOKEN": TOKEN,
        "WEBEX_BASE_URL": BASE_URL,
        "LEDGER_DATABASE_URL": f"sqlite:///{root}/ledger.db",
        "LEDGER_OUTPUT_DIR": root / "out",
        "LEDGER_LOG_FILE": root / "ledger.log",
        "BATCH_SIZE": 50,
        "MAX_RETRIES": 2,
        "RETRY_BACKOFF_S": 0.01,
        "RETRY_AFTER_DEFAULT_S": 2.5,
        "LOOKUP_SETTLE_S": 20.0,
        "LEDGER_CONCURRENCY": 4,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class Job:
    """One ingested CSV, its ledger, and the simulated org it is worked against."""

    def __init__(
        self, jobs: Jobs, root: Path, rows: Sequence[dict[str, str]], sim: Simulator, **config: Any
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self._jobs = jobs
        self.root = root
        self.sim = sim
        self.time = jobs.time
        self.settings = make_settings(root, **config)
        self.out_dir = self.settings.LEDGER_OUTPUT_DIR
        self.csv_path = write_csv(root / "input.csv", COLUMNS, rows)
        if jobs.template is not None and "LEDGER_DATABASE_URL" not in config:
            copy_ledger(jobs.template, root / "ledger.db")
        self.ledger: Ledger = open_ledger(self.settings.LEDGER_DATABASE_URL)
        jobs.ledgers.append(self.ledger)
        self.run: RunInfo = ingest_file(self.ledger, self.csv_path, self.settings).run
        self.progress = NullProgress()

    def client(
        self, transport: httpx.BaseTransport | None = None, settings: Settings | None = None
    ) -> WebexClient:
        made = WebexClient(
            settings or self.settings,
            transport=transport or self.sim.transport(),
            sleep=self.time.sleep,
            clock=self.time.monotonic,
            wall_clock=self.time.wall,
        )
        self._jobs.clients.append(made)
        return made

    def worker(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        worker_id: str = "worker-1",
        **overrides: Any,
    ) -> Worker:
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        return Worker(
            settings,
            self.ledger,
            self.client(transport, settings),
            self.run,
            progress=self.progress,
            out_dir=self.out_dir,
            worker_id=worker_id,
        )

    def work(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        worker_id: str = "worker-1",
        **overrides: Any,
    ) -> WorkReport:
        """One `work` session with the product's Worker and WebexClient."""
        return self.worker(transport, worker_id=worker_id, **overrides).run()

    # --- reading the ledger and the artifacts ---------------------------------------------

    def rows(self) -> dict[int, RowView]:
        with self.ledger.read() as session:
            found = session.execute(
                select(
                    Row.row_id,
                    Row.status,
                    Row.reason_code,
                    Row.reason_message,
                    Row.reason_step,
                    Row.http_status,
                    Row.claimed_by,
                ).where(Row.run_id == self.run.id)
            ).all()
        return {line[0]: RowView(*line[1:]) for line in found}

    def statuses(self) -> Counter[str]:
        return Counter(view.status for view in self.rows().values())

    def steps(self, row_id: int) -> dict[str, StepView]:
        with self.ledger.read() as session:
            found = session.execute(
                select(
                    StepRecord.step,
                    StepRecord.status,
                    StepRecord.remote_id,
                    StepRecord.message,
                    StepRecord.attempts,
                    StepRecord.http_status,
                )
                .join(Row, Row.id == StepRecord.row_pk)
                .where(Row.run_id == self.run.id, Row.row_id == row_id)
            ).all()
        return {line[0]: StepView(*line[1:]) for line in found}

    def step_statuses(self, row_id: int) -> dict[str, str]:
        return {name: view.status for name, view in self.steps(row_id).items()}

    def expire_leases(self) -> int:
        """Make every claim of the run look expired, as if its worker had died long ago."""
        past = datetime.now(UTC) - timedelta(hours=1)
        with self.ledger.write() as session:
            result = session.execute(
                update(Row)
                .where(Row.run_id == self.run.id, Row.status == "claimed")
                .values(lease_expires_at=past)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def results(self) -> list[dict[str, str]]:
        return read_csv(self.out_dir / "results.csv")

    def results_of(self, row_id: int) -> dict[str, dict[str, str]]:
        return {line["step"]: line for line in self.results() if line["row_id"] == str(row_id)}

    def pending(self) -> dict[int, dict[str, str]]:
        return {int(line["row_id"]): line for line in read_csv(self.out_dir / "pending_rows.csv")}

    def checkpoint(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.out_dir / "checkpoint.json").read_text())
        return loaded


class Jobs:
    """Makes jobs under tmp_path and closes what they opened."""

    def __init__(self, root: Path, *, template: Path | None = None) -> None:
        self.root = root
        self.template = template
        self.time = FakeTime()
        self.ledgers: list[Ledger] = []
        self.clients: list[WebexClient] = []
        self._count = 0

    def __enter__(self) -> Jobs:
        return self

    def __exit__(self, *_exc: object) -> None:
        for client in self.clients:
            client.close()
        for ledger in self.ledgers:
            ledger.dispose()

    def simulator(self, faults: FaultConfig | None = None) -> Simulator:
        """A simulator on the fake clock (its lookup delay passes as the client sleeps)."""
        return Simulator(faults=faults, clock=self.time.monotonic)

    def start(
        self,
        rows: Sequence[dict[str, str]],
        *,
        sim: Simulator | None = None,
        faults: FaultConfig | None = None,
        **config: Any,
    ) -> Job:
        """Ingest `rows` into a fresh ledger (a fresh org too, unless `sim` is given)."""
        self._count += 1
        simulator = sim if sim is not None else self.simulator(faults)
        return Job(self, self.root / f"job{self._count}", rows, simulator, **config)


@dataclass(frozen=True)
class Traffic:
    """Requests the simulator received during a stretch of a test, by route."""

    requests: list[LoggedRequest]

    @classmethod
    def since(cls, sim: Simulator, start: int) -> Traffic:
        return cls(sim.request_log[start:])

    def count(self, route: str) -> int:
        return sum(1 for request in self.requests if request.route == route)

    def writes(self) -> list[LoggedRequest]:
        return [r for r in self.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")]

    def routes(self) -> Counter[str]:
        return Counter(request.route for request in self.requests)


def mark(sim: Simulator) -> int:
    """Where the simulator's request log stands now (see Traffic.since)."""
    return len(sim.request_log)


def iter_bodies(requests: Sequence[LoggedRequest], route: str) -> Iterator[Any]:
    for request in requests:
        if request.route == route:
            yield request.body
