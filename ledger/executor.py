"""`ledger work`: batch → row → steps, recording every outcome as it happens.

A batch is claimed in one short transaction and prepared in one call (`Worker.prepare`: the
calling license, and its locations, each provisioned once per run by whoever gets there first,
`locations`); then its rows run in a pool of threads (`row_runner`), each row's outcome
committed before its next step starts, and no transaction open while a request is in flight.

The batches form a pipeline (`pipeline`): once the circuit breaker could judge the current batch
(BREAKER_MIN_ROWS done), the next is claimed and prepared, and its rows queue behind them, so the
pool never idles while a batch is prepared; a worker holds at most `BATCHES_HELD` batches at
once (tails of rows settling a lost create included). LEDGER_CONCURRENCY bounds the rows at work
and the requests in flight (`slots`): there are more row threads than that, and a row sleeping in
a backoff or a settling lookup gives its slot to another row meanwhile.

Failures of the outside world become pending rows and log lines; nothing raised by a row stops
the run. The circuit breaker (counted per batch) and SIGINT/SIGTERM stop the run between rows:
rows not started go back to `ready`. After every batch the worker's request counters are
saved, and the artifacts rewritten once LEDGER_REFRESH_S has passed since they last were, and
ten times as long as that refresh took: a refresh reads the whole run, so on a large one it
waits longer, and refreshing never takes more than a tenth of the worker's time. With
LEDGER_REFRESH_S=0 they are rewritten after every batch. They are always written when `work`
stops; otherwise the last batch leaves them to that write rather than writing them twice.

Before the first claim, one read checks the token, its scopes, the org and the base URL
(`preflight`); when it fails, the run stops with every row still ready.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.batch_iterator import BatchBounds, BatchSource, LeaseKeeper
from ledger.batch_prep import PreparedBatch, prepare_batch
from ledger.config import Settings
from ledger.connection_client import WebexClient
from ledger.database import Ledger
from ledger.error_handling import ClaimLostError, InvariantError, is_auth_failure
from ledger.locations import LocationProvisioner
from ledger.pipeline import BatchPipeline
from ledger.preflight import preflight
from ledger.records import ClaimedRow, Failure, RowStatus, RunInfo, WorkEnd
from ledger.reports import outcome_counts, snapshot
from ledger.row_runner import LicenseLookup, RowRunner
from ledger.state_store import (
    rate_exchange,
    release_rows,
    reset_failed_entities,
    run_is_finished,
    save_worker_stats,
)
from ledger.writers import ArtifactFolderError, export_all

if TYPE_CHECKING:
    from ledger.progress import ProgressSink

logger = logging.getLogger(__name__)

# Row threads per request slot: the extra threads work rows while others wait out a backoff or
# settle a lost create (LOOKUP_SETTLE_S, holding no slot but a thread). Under the fault mix of
# the work benchmark up to 75 rows of a worker settled at once: with four threads per slot
# (128 at the default concurrency), not far from leaving slots idle.
ROW_THREADS_PER_SLOT = 8
MAX_ROW_THREADS = 256
# The next batch is claimed once BREAKER_MIN_ROWS of the current batch's rows are done (the
# breaker has judged it: one tripping in a batch finds no next one claimed), so that it is
# prepared while the current one is worked: preparing a batch (its listings, each row's
# decision, its bulk number adds) takes about as long as working it. Failing that (the first
# rows wait out a settle), once no more than this many slots' worth of its rows, and at most
# half the batch, are left to start.
PREFETCH_SLOTS = 8
# The circuit breaker judges a batch once this many of its rows are done.
BREAKER_MIN_ROWS = 10
# The artifacts are refreshed again only after this many times as long as their last refresh
# took (and LEDGER_REFRESH_S): they are rewritten from the whole run, whose size it grows with.
REFRESH_COST_FACTOR = 10


def prefetch_rows(concurrency: int, batch_size: int) -> int:
    """How few of a batch's rows left to start have the next batch claimed (PREFETCH_SLOTS)."""
    return min(PREFETCH_SLOTS * concurrency, batch_size // 2)


def default_worker_id() -> str:
    """`host:pid`: a claim of a process of this host that died is taken over at once."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class WorkReport:
    """How `work` ended, and what this session did."""

    ended: WorkEnd
    batches: int = 0
    success: int = 0
    pending: int = 0
    released: int = 0
    # Set when `work` stopped before its first claim: the likely cause, in one line.
    breaker_message: str | None = None
    # Why the last refresh of the artifacts failed (folder and OS reason); None once written.
    artifacts_error: str | None = None


@dataclass
class _BatchTally:
    processed: int = 0
    auth_failures: int = 0
    success: int = 0
    pending: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Batch:
    """A claimed batch as the worker sees it: its rows, what they need, and its tally."""

    number: int
    rows: list[ClaimedRow]
    prepared: PreparedBatch
    started_at: float
    tally: _BatchTally = field(default_factory=_BatchTally)


class Worker:
    """One `work` process's engine; `run()` works the run until it ends (see WorkReport)."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        client: WebexClient,
        run: RunInfo,
        *,
        progress: ProgressSink,
        out_dir: Path,
        worker_id: str | None = None,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.client = client
        self.run_info = run
        self.progress = progress
        self.out_dir = out_dir
        self.worker_id = worker_id or default_worker_id()
        # Other `work` processes of this ledger share the org's rate limit with this one.
        client.share_rate_limit(rate_exchange(ledger, settings.WEBEX_BASE_URL), self.worker_id)
        self.stop = stop or threading.Event()
        self.sleep = sleep
        self.clock = clock
        self._refreshed_at = 0.0  # when the artifacts were last written (set as run() starts)
        self._refresh_took = 0.0  # how long that took
        self.breaker = threading.Event()
        self.rows = RowRunner(settings, ledger, client)
        # The preflight's license lookup, kept for the first batch (then looked up per batch).
        self._license: LicenseLookup | None = None
        # Set while run() runs: the location provisioner and the heartbeat of this worker's claims.
        self._locations: LocationProvisioner | None = None
        self._keeper: LeaseKeeper | None = None

    def run(self) -> WorkReport:
        settings = self.settings
        bounds = BatchBounds(
            # Fixed at ingest with each row's batch_id: claiming by it keeps batches whole.
            batch_size=self.run_info.batch_size,
            max_batches=settings.MAX_BATCHES,
            lease_s=settings.LEDGER_LEASE_S,
            total_rows=self.run_info.accepted_rows,
        )
        report = WorkReport(ended=WorkEnd.FINISHED)
        self._refreshed_at = self.clock()
        # A finished run needs no request at all; any other is checked before its first claim.
        if not run_is_finished(self.ledger, self.run_info.id) and not self._preflight(report):
            self._refresh_artifacts(report)
            return report
        # A location that failed in an earlier session (a 401 before the token was fixed, an
        # outage) gets one more chance; rows already pending because of it wait for `retry`.
        reset_failed_entities(self.ledger, self.run_info.id)
        source = BatchSource(
            self.ledger,
            self.run_info.id,
            self.worker_id,
            bounds,
            should_stop=self._stopping,
            wait=self.stop.wait,
            # Waiting on the rows other workers hold, it sends nothing: they take its share.
            on_idle=self.client.done_sending,
        )
        concurrency = settings.LEDGER_CONCURRENCY
        pipeline: BatchPipeline[_Batch] = BatchPipeline(
            source,
            slots=self.client.slots,
            threads=min(ROW_THREADS_PER_SLOT * concurrency, max(concurrency, MAX_ROW_THREADS)),
            prefetch_at=prefetch_rows(concurrency, bounds.batch_size),
            judged_after=BREAKER_MIN_ROWS,
            stopping=self._stopping,
            open_batch=self._open_batch,
            can_start=self._can_start,
            work=self._work_one,
            close_batch=lambda batch, unstarted, last: self._close_batch(
                batch, unstarted, report, last=last
            ),
        )
        with LeaseKeeper(self.ledger, settings.LEDGER_LEASE_S) as keeper:
            self._keeper = keeper
            self._locations = LocationProvisioner(
                settings, self.ledger, self.client, self.run_info.id, stop=self.stop, keeper=keeper
            )
            try:
                pipeline.run()
            finally:
                self._keeper = self._locations = None
        # The artifacts of a long run take seconds to write: the others sharing the limit send
        # meanwhile at this process's share too.
        self.client.done_sending()
        report.batches = source.batches
        writes = self.ledger.group
        logger.info(
            f"{writes.writes} step writes committed in {writes.transactions} transactions",
            extra={
                "event": "ledger_writes",
                "writes": writes.writes,
                "transactions": writes.transactions,
            },
        )
        if self.breaker.is_set():
            report.ended = WorkEnd.BREAKER
        elif self.stop.is_set():
            report.ended = WorkEnd.STOPPED
        else:
            report.ended = source.ended or WorkEnd.FINISHED
        self._refresh_artifacts(report)
        return report

    def prepare(self, rows: list[ClaimedRow]) -> PreparedBatch:
        """What a batch's rows need, for all of them at once (`batch_prep.prepare_batch`): the
        calling license (the preflight's for the first batch), each location they name, the
        listings their lookups are answered from, and their numbers added in bulk."""
        if self._locations is None:
            raise InvariantError("a batch was prepared outside Worker.run()")
        prepared = prepare_batch(self.rows, self._locations, rows, self._license)
        self._license = None
        return prepared

    def work_row(self, row: ClaimedRow, prepared: PreparedBatch) -> Failure | None:
        """One row's work (see RowRunner.work): None for success, else why it is pending."""
        return self.rows.work(row, prepared)

    def _can_start(self, batch: _Batch, row: ClaimedRow) -> bool:
        """Whether a row may start now; else it goes back to `ready`. Not after the breaker
        tripped; not once asked to stop, unless the batch's preparation already wrote for it
        (its number was added); not while another worker still provisions its location."""
        prepared = batch.prepared
        if self.breaker.is_set() or (self.stop.is_set() and not prepared.in_flight(row)):
            return False
        return not prepared.locations[row.user.location_name].busy

    def _stopping(self) -> bool:
        return self.stop.is_set() or self.breaker.is_set()

    def _preflight(self, report: WorkReport) -> bool:
        """Whether the token, org and base URL work (see `preflight`); if not, say why."""
        settings = self.settings
        checked = preflight(
            self.client,
            settings.WEBEX_CALLING_LICENSE,
            settings.WEBEX_BASE_URL,
            renewable=settings.WEBEX_REFRESH_TOKEN is not None,
        )
        if checked.failure is None:
            self._license = checked.license
            return True
        error = checked.license.error
        # A warning, not an error: the command tells the operator, in one line of its own.
        logger.warning(
            f"preflight failed: {checked.failure}",
            extra={
                "event": "preflight_failed",
                "http_status": error.http_status if error is not None else None,
                "tracking_id": error.tracking_id if error is not None else None,
            },
        )
        report.ended = WorkEnd.BREAKER
        report.breaker_message = checked.failure
        return False

    # --- a batch's life in the pipeline -----------------------------------------------------

    def _open_batch(self, number: int, rows: list[ClaimedRow]) -> _Batch:
        if self._keeper is not None:
            self._keeper.hold(rows[0].claim_token)
        started = time.monotonic()
        logger.info(
            "batch start",
            extra={"event": "batch_start", "batch_id": rows[0].batch_id, "rows": len(rows)},
        )
        return _Batch(number, rows, self.prepare(rows), started)

    def _work_one(self, batch: _Batch, row: ClaimedRow) -> None:
        try:
            failure = self.work_row(row, batch.prepared)
        except ClaimLostError:  # another worker owns the row now: not ours to count
            return
        self._count(batch.tally, failure)

    def _close_batch(
        self, batch: _Batch, unstarted: list[ClaimedRow], report: WorkReport, *, last: bool
    ) -> None:
        tally = batch.tally
        report.released += release_rows(self.ledger, unstarted)
        report.success += tally.success
        report.pending += tally.pending
        if self._keeper is not None:
            self._keeper.drop(batch.rows[0].claim_token)
        self._save_stats()
        if self._refresh_due(last=last):
            self._refresh_artifacts(report)
        elapsed = time.monotonic() - batch.started_at
        logger.info(
            "batch end",
            extra={
                "event": "batch_end",
                "batch_id": batch.rows[0].batch_id,
                "rows": len(batch.rows),
                "success": tally.success,
                "pending": tally.pending,
                "released": len(unstarted),
                "elapsed_s": round(elapsed, 3),
            },
        )
        self.progress.batch_finished(
            batch_no=batch.number,
            rows=len(batch.rows),
            success=tally.success,
            pending=tally.pending,
            elapsed_s=elapsed,
        )

    def _count(self, tally: _BatchTally, failure: Failure | None) -> None:
        """Count a finished row, and trip the breaker when most rows fail authentication."""
        threshold = self.settings.CIRCUIT_BREAKER_THRESHOLD
        with tally.lock:
            tally.processed += 1
            if failure is not None:
                tally.pending += 1
                if is_auth_failure(failure.reason) or failure.http_status in (401, 403):
                    tally.auth_failures += 1
            else:
                tally.success += 1
            tripped = (
                tally.processed >= BREAKER_MIN_ROWS
                and tally.auth_failures / tally.processed >= threshold
            )
        self.progress.row_finished(RowStatus.PENDING if failure is not None else RowStatus.SUCCESS)
        if tripped and not self.breaker.is_set():
            self.breaker.set()
            logger.critical(
                "circuit breaker: most rows fail authentication or permission",
                extra={
                    "event": "circuit_breaker",
                    "processed": tally.processed,
                    "auth_failures": tally.auth_failures,
                    "likely_cause": "the token expired or is wrong (WEBEX_ACCESS_TOKEN), lacks "
                    "admin scopes, belongs to another org, or WEBEX_BASE_URL points elsewhere",
                },
            )

    def _save_stats(self) -> None:
        stats = self.client.stats()
        save_worker_stats(
            self.ledger,
            self.run_info.id,
            self.worker_id,
            requests=stats.requests_sent,
            retries=stats.retries,
            throttled=stats.status_429,
            wait_s=stats.retry_wait_s + stats.throttle_wait_s,
        )

    def _refresh_due(self, *, last: bool) -> bool:
        """Whether a batch that ends now refreshes the artifacts (see REFRESH_COST_FACTOR).
        Not the `last` batch: `run` writes them as `work` stops, right after it."""
        floor = self.settings.LEDGER_REFRESH_S
        if floor == 0:  # asked for after every batch, whatever it costs
            return True
        if last:
            return False
        interval = max(floor, REFRESH_COST_FACTOR * self._refresh_took)
        return self.clock() - self._refreshed_at >= interval

    def _refresh_artifacts(self, report: WorkReport) -> None:
        """Write the artifacts. A folder that cannot take them does not stop the run (the ledger
        holds every outcome); the failure is logged and kept in `report` until a refresh
        succeeds, so a run whose last refresh failed can say so."""
        started = self._refreshed_at = self.clock()
        try:
            export_all(self.ledger, self.run_info, self.out_dir)
        except InvariantError as error:
            logger.critical(str(error), extra={"event": "assertion_failure", "step": "export"})
        except OSError as error:
            logger.error(
                f"artifacts not written: {error.strerror}", extra={"event": "export_failed"}
            )
            report.artifacts_error = (
                str(error)
                if isinstance(error, ArtifactFolderError)
                else f"cannot write the artifacts to {self.out_dir}: {error.strerror or error}"
            )
        else:
            report.artifacts_error = None
        self._refresh_took = self.clock() - started


def work_run(
    settings: Settings,
    ledger: Ledger,
    run: RunInfo,
    *,
    progress: ProgressSink,
    stop: threading.Event | None = None,
    client: WebexClient | None = None,
) -> WorkReport:
    """What `ledger work` does once its settings, ledger and run are known (the demo too).

    `client` defaults to one built from the settings, closed at the end; a client given stays
    open, its caller's to close.
    """
    with snapshot(ledger) as session:
        counts = outcome_counts(session, run.id)
    progress.start(
        run_id=run.id,
        total=run.total_rows,
        success=counts[RowStatus.SUCCESS],
        pending=counts[RowStatus.PENDING],
        rejected=counts[RowStatus.REJECTED],
    )
    try:
        with ExitStack() as owned:
            if client is None:
                client = owned.enter_context(WebexClient(settings))
            return Worker(
                settings,
                ledger,
                client,
                run,
                progress=progress,
                out_dir=settings.LEDGER_OUTPUT_DIR,
                stop=stop,
            ).run()
    finally:
        progress.stop()
