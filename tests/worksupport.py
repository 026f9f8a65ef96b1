"""Helpers for the tests of `ledger work`: a job is a CSV ingested into a ledger in tmp_path,
worked by the product's own `Worker` and `WebexClient` against the simulator in-process.

    jobs = Jobs(tmp_path)                      # closes every ledger and client at exit
    job = jobs.start([person(1), person(2)], faults=FaultConfig(...), BATCH_SIZE=30)
    report = job.work()                        # a Worker run; `transport=` to script answers
    job.rows()[1].status, job.steps(1)["user"].status, job.results(), job.pending()

Time is fake where a test waits: the client sleeps through `FakeTime.sleep`, which only moves
the fake clock, and the simulator reads the same clock, so its lookup delay passes as the
client "waits" for it. `Scripted` wraps the simulator to answer chosen requests with exact
sequences (a 429 with a given Retry-After, a timeout after a create was applied, ...) and
counts every request the client sent, including those the simulator never saw.
"""

from __future__ import annotations

import csv
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
from sqlalchemy import select, update

from ledger.config import Settings
from ledger.connection_client import WebexClient
from ledger.data_pipeline import COLUMNS
from ledger.database import Ledger, open_ledger
from ledger.executor import Worker, WorkReport
from ledger.ingest import ingest_file
from ledger.models import Row, StepRecord
from ledger.records import RunInfo
from ledger.simulator import FaultConfig, LoggedRequest, Simulator

TOKEN = "test-token-0123456789"
BASE_URL = "https://webex.test/v1"
WALL_START = 1_800_000_000.0

# The values of a location as the simulator seeds one by default (seeding.DEFAULT_ADDRESS and
# add_location's defaults): a seeded "HQ" agrees with rows that carry these.
HQ_VALUES = {
    "location_time_zone": "America/Chicago",
    "location_preferred_language": "en_us",
    "location_announcement_language": "en_us",
    "location_address1": "100 Main St",
    "location_city": "Austin",
    "location_state": "TX",
    "location_postal_code": "78701",
    "location_country": "US",
}


def person(n: int, location: str = "HQ", *, values: bool = True, **cells: str) -> dict[str, str]:
    """A valid CSV row for user n in `location` (with the HQ values unless `values=False`)."""
    row = {
        "email": f"user{n}@example.com",
        "first_name": "User",
        "last_name": f"Number{n}",
        "location_name": location,
        "extension": str(1000 + n),
    }
    if values:
        row |= HQ_VALUES
    return row | cells


def phone(n: int) -> str:
    return f"+1512555{n:04d}"


def write_rows(path: Path, rows: Sequence[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            unknown = set(row) - set(COLUMNS)
            if unknown:
                raise ValueError(f"not CSV columns: {sorted(unknown)}")
            writer.writerow(row)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


class FakeTime:
    """Monotonic and wall clocks that move only when something sleeps (thread-safe)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def wall(self) -> float:
        return WALL_START + self.monotonic()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


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


# --- scripted answers -----------------------------------------------------------------------

Answer = Callable[[httpx.Request], httpx.Response]


def error(code: int, message: str = "scripted error", **headers: str) -> Answer:
    """An answer with Webex's usual error body."""

    def answer(request: httpx.Request) -> httpx.Response:
        body = {"message": message, "errors": [{"description": message}], "trackingId": "SCRIPT"}
        return httpx.Response(code, json=body, headers={"Trackingid": "SCRIPT", **headers})

    return answer


def read_timeout() -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("scripted: no answer in time", request=request)

    return answer


def dropped() -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("scripted: server disconnected", request=request)

    return answer


@dataclass
class Rule:
    method: str
    pattern: re.Pattern[str]
    answers: list[Answer]
    after: bool  # forward first (the simulator applies the request), then answer this instead
    repeat: bool  # keep answering the last answer once the others were used
    hook: Callable[[httpx.Request], None] | None = None
    used: int = 0


@dataclass(frozen=True)
class SentRequest:
    """A request as the client sent it (whether the simulator or the script answered it)."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    body: Any


@dataclass
class Scripted:
    """The simulator in-process, with chosen requests answered from a script."""

    sim: Simulator
    sent: list[tuple[str, str]] = field(default_factory=list)
    log: list[SentRequest] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._inner = self.sim.transport()

    def on(
        self,
        method: str,
        pattern: str,
        *answers: Answer,
        after: bool = False,
        repeat: bool = False,
        hook: Callable[[httpx.Request], None] | None = None,
    ) -> Rule:
        """Answer `method` requests whose path+query matches `pattern` (re.search, unquoted)."""
        rule = Rule(method.upper(), re.compile(pattern), list(answers), after, repeat, hook)
        self.rules.append(rule)
        return rule

    def count(self, method: str, pattern: str = "") -> int:
        compiled = re.compile(pattern)
        with self._lock:
            return sum(1 for m, target in self.sent if m == method and compiled.search(target))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        target = unquote(request.url.raw_path.decode("ascii"))
        chosen: tuple[Rule, Answer | None] | None = None
        content = request.read()
        body = json.loads(content) if content else None
        sent = SentRequest(
            request.method, request.url.path, tuple(request.url.params.multi_items()), body
        )
        with self._lock:
            self.sent.append((request.method, target))
            self.log.append(sent)
            for rule in self.rules:
                if rule.method != request.method or not rule.pattern.search(target):
                    continue
                if rule.used < len(rule.answers):
                    chosen = (rule, rule.answers[rule.used])
                elif rule.repeat and rule.answers:
                    chosen = (rule, rule.answers[-1])
                elif rule.hook is not None and not rule.answers and rule.used == 0:
                    chosen = (rule, None)
                else:
                    continue
                rule.used += 1
                break
        if chosen is None:
            return self._inner.handle_request(request)
        rule, answer = chosen
        if rule.after or answer is None:
            response = self._inner.handle_request(request)
            if rule.hook is not None:
                rule.hook(request)
            if answer is None:
                return response
        return answer(request)


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
        self.csv_path = write_rows(root / "input.csv", rows)
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

    def __init__(self, root: Path) -> None:
        self.root = root
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
