"""`ledger work`: batch → row → steps, recording every outcome as it happens.

A batch is claimed in one short transaction. Its locations are provisioned first (each once per
run, whoever gets there first: a shared entity claimed in the ledger), then its rows run
`LEDGER_CONCURRENCY` at a time in threads. Each step's outcome is committed before the next
step starts, and no transaction is open while a request is in flight. Failures of the outside
world become pending rows and log lines; nothing raised by a row stops the run. The circuit
breaker and SIGINT/SIGTERM stop the run between rows: rows not started go back to `ready`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ledger import actions_registry as registry
from ledger.batch_iterator import BatchBounds, BatchState, LeaseKeeper, iterate_batches
from ledger.config import Settings
from ledger.connection_client import WebexClient
from ledger.data_pipeline import LocationSpec
from ledger.database import Ledger
from ledger.error_handling import (
    ClaimLostError,
    InvariantError,
    ReasonCode,
    WebexError,
    is_auth_failure,
)
from ledger.logs import bind_log_context
from ledger.records import (
    SHARED_STEPS,
    SUCCESS_STEP_STATUSES,
    ClaimedRow,
    EntityState,
    EntityType,
    Failure,
    RowStatus,
    RunInfo,
    StepName,
    StepOutcome,
    StepStatus,
    entity_of_step,
)
from ledger.state_store import (
    claim_entity,
    finish_row,
    record_step,
    record_steps,
    release_rows,
    reset_failed_entities,
    save_worker_stats,
    update_entity,
)
from ledger.writers import export_all

if TYPE_CHECKING:
    from ledger.progress import ProgressSink

logger = logging.getLogger(__name__)

CHANGED = (StepStatus.CREATED, StepStatus.UPDATED)
BUSY_POLL_S = 0.5


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class LocationOutcome:
    """A location as a batch's rows see it: its id, or why it could not be provisioned."""

    name: str
    location_id: str | None
    steps: dict[StepName, registry.Applied] = field(default_factory=dict)
    by_row: int | None = None
    failure: tuple[ReasonCode, str, int | None] | None = None
    failed_step: str = "location"  # `location` or `calling`: where provisioning stopped
    busy: bool = False


@dataclass
class RowFailure:
    reason: ReasonCode
    message: str
    http_status: int | None
    step: str


@dataclass
class WorkReport:
    """How `work` ended: `finished`, `breaker`, `stopped`, `max_batches` or `held_elsewhere`."""

    ended: str
    batches: int = 0
    success: int = 0
    pending: int = 0
    released: int = 0
    breaker_message: str | None = None


@dataclass
class _BatchTally:
    processed: int = 0
    auth_failures: int = 0
    success: int = 0
    pending: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


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
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.client = client
        self.run_info = run
        self.progress = progress
        self.out_dir = out_dir
        self.worker_id = worker_id or default_worker_id()
        self.stop = stop or threading.Event()
        self.sleep = sleep
        self.breaker = threading.Event()
        self.keeper: LeaseKeeper | None = None
        self.license_id: str | None = None
        self.license_problem = ""
        # Why the license could not be looked up (a 401 must reach the circuit breaker as one).
        self.license_error: WebexError | None = None

    # --- the run --------------------------------------------------------------------------

    def run(self) -> WorkReport:
        settings = self.settings
        bounds = BatchBounds(
            batch_size=settings.BATCH_SIZE,
            max_batches=settings.MAX_BATCHES,
            lease_s=settings.LEDGER_LEASE_S,
            total_rows=self.run_info.accepted_rows,
        )
        state = BatchState()
        report = WorkReport(ended="finished")
        # A location that failed in an earlier session (a 401 before the token was fixed, an
        # outage) gets one more chance; rows already pending because of it wait for `retry`.
        reset_failed_entities(self.ledger, self.run_info.id)
        with LeaseKeeper(self.ledger, settings.LEDGER_LEASE_S) as keeper:
            self.keeper = keeper
            for rows in iterate_batches(
                self.ledger,
                self.run_info.id,
                self.worker_id,
                bounds,
                state,
                should_stop=lambda: self.stop.is_set() or self.breaker.is_set(),
                wait=self.stop.wait,
            ):
                keeper.hold(rows[0].claim_token)
                try:
                    self._work_batch(state.batches, rows, report)
                finally:
                    keeper.drop(rows[0].claim_token)
                if self.breaker.is_set():
                    break
        report.batches = state.batches
        if self.breaker.is_set():
            report.ended = "breaker"
        elif self.stop.is_set():
            report.ended = "stopped"
        else:
            report.ended = state.ended
        self._refresh_artifacts()
        return report

    def _work_batch(self, batch_no: int, rows: list[ClaimedRow], report: WorkReport) -> None:
        started = time.monotonic()
        batch_id = rows[0].batch_id
        logger.info(
            "batch start",
            extra={"event": "batch_start", "batch_id": batch_id, "rows": len(rows)},
        )
        self._refresh_license()
        locations = self._ensure_locations(rows)
        tally = _BatchTally()
        unstarted: list[ClaimedRow] = []
        unstarted_lock = threading.Lock()

        def work_one(row: ClaimedRow) -> None:
            if self.stop.is_set() or self.breaker.is_set():
                with unstarted_lock:
                    unstarted.append(row)
                return
            location = locations[row.user.location_name]
            if location.busy:
                with unstarted_lock:
                    unstarted.append(row)
                return
            outcome = self._work_row(row, location)
            if outcome is None:
                return
            self._count(tally, outcome)

        with ThreadPoolExecutor(
            max_workers=self.settings.LEDGER_CONCURRENCY, thread_name_prefix="row"
        ) as pool:
            list(pool.map(work_one, rows))
        report.released += release_rows(self.ledger, unstarted)
        report.success += tally.success
        report.pending += tally.pending
        self._save_stats()
        self._refresh_artifacts()
        elapsed = time.monotonic() - started
        logger.info(
            "batch end",
            extra={
                "event": "batch_end",
                "batch_id": batch_id,
                "rows": len(rows),
                "success": tally.success,
                "pending": tally.pending,
                "released": len(unstarted),
                "elapsed_s": round(elapsed, 3),
            },
        )
        self.progress.batch_finished(
            batch_no=batch_no,
            rows=len(rows),
            success=tally.success,
            pending=tally.pending,
            elapsed_s=elapsed,
        )

    def _count(self, tally: _BatchTally, outcome: RowFailure | str) -> None:
        threshold = self.settings.CIRCUIT_BREAKER_THRESHOLD
        with tally.lock:
            tally.processed += 1
            if isinstance(outcome, RowFailure):
                tally.pending += 1
                if is_auth_failure(outcome.reason) or outcome.http_status in (401, 403):
                    tally.auth_failures += 1
            else:
                tally.success += 1
            tripped = tally.processed >= 10 and tally.auth_failures / tally.processed >= threshold
        self.progress.row_finished("pending" if isinstance(outcome, RowFailure) else "success")
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

    # --- shared prerequisites -------------------------------------------------------------

    def _refresh_license(self) -> None:
        self.license_error = None
        try:
            self.license_id, self.license_problem = registry.find_license(
                self.client, self.settings.WEBEX_CALLING_LICENSE
            )
        except WebexError as error:
            self.license_id, self.license_problem = None, f"license lookup failed: {error}"
            self.license_error = error

    def _ensure_locations(self, rows: list[ClaimedRow]) -> dict[str, LocationOutcome]:
        first_rows: dict[str, int] = {}
        for row in rows:
            first_rows.setdefault(row.user.location_name, row.row_id)
        # Locations are independent of each other: provision them side by side (at Webex's
        # latency, twenty new locations one after another took most of a first batch).
        width = max(1, min(self.settings.LEDGER_CONCURRENCY, len(first_rows)))
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="location") as pool:
            outcomes = pool.map(lambda item: self._ensure_location(*item), first_rows.items())
            return dict(zip(first_rows, outcomes, strict=True))

    def _ensure_location(self, name: str, row_id: int) -> LocationOutcome:
        lease = self.settings.LEDGER_LEASE_S
        polls = int(lease / BUSY_POLL_S) + 1
        for _ in range(polls):
            entity = claim_entity(self.ledger, self.run_info.id, EntityType.LOCATION, name, lease)
            if entity.status == "ready" and entity.remote_id:
                return _ready(name, entity)
            if entity.failure is not None:
                failure = entity.failure
                return LocationOutcome(
                    name,
                    None,
                    failure=(failure.reason, failure.message, failure.http_status),
                    by_row=entity.by_row,
                    failed_step=failure.step,
                )
            if entity.token is not None:
                if self.keeper is not None:
                    self.keeper.hold(entity.token)
                try:
                    return self._provision_location(name, entity, row_id)
                finally:
                    if self.keeper is not None:
                        self.keeper.drop(entity.token)
            if self.stop.wait(BUSY_POLL_S):
                break
        return LocationOutcome(name, None, busy=True)

    def _provision_location(self, name: str, entity: EntityState, row_id: int) -> LocationOutcome:
        spec = entity.desired or LocationSpec(name=name)
        held = [entity]
        lease = self.settings.LEDGER_LEASE_S

        def mark_started(step: str) -> None:
            started = StepOutcome(StepName(step), StepStatus.STARTED, EntityType.LOCATION, name)
            held[0] = update_entity(self.ledger, held[0], step=started, lease_s=lease)

        ctx = registry.LocationContext(
            client=self.client,
            spec=spec,
            settle_s=self.settings.LOOKUP_SETTLE_S,
            max_attempts=self.settings.MAX_RETRIES + 1,
            mark_started=mark_started,
        )
        steps: dict[StepName, registry.Applied] = {}
        current = "location"
        with bind_log_context(entity_key=name, row_id=row_id):
            try:
                location_id = held[0].remote_id
                remote: dict[str, object] | None = None
                if location_id is None:
                    remote = registry.lookup_location(ctx)
                    plan = registry.decide_location(ctx, remote)
                    if plan.action == "pending":
                        raise registry.StepPending(
                            plan.reason or ReasonCode.LOCATION_UNDEFINED, plan.message or ""
                        )
                    applied = registry.apply_location(ctx, plan)
                    location_id = applied.remote_id
                    if not location_id:
                        raise InvariantError(f"location {name!r} provisioned without an id")
                    steps[StepName.LOCATION] = applied
                    held[0] = update_entity(
                        self.ledger,
                        held[0],
                        remote_id=location_id,
                        by_row=row_id,
                        step=_outcome_of(StepName.LOCATION, applied, name),
                        lease_s=lease,
                    )
                else:
                    steps[StepName.LOCATION] = _applied_from(
                        held[0].steps.get(StepName.LOCATION), location_id
                    )
                current = "calling"
                # A location created a moment ago is not a calling location yet, and the file
                # gave every value enabling needs: no lookup and no GET of the location.
                just_created = remote is None and steps[StepName.LOCATION].status == "created"
                calling = None if just_created else registry.lookup_calling(ctx, location_id)
                if calling is None:
                    if remote is None and not just_created:
                        remote = self.client.request("GET", f"/locations/{location_id}").body
                    steps[StepName.CALLING] = registry.apply_calling(ctx, location_id, remote or {})
                else:
                    steps[StepName.CALLING] = registry.Applied(StepStatus.UNCHANGED, location_id)
                held[0] = update_entity(
                    self.ledger,
                    held[0],
                    calling_enabled=True,
                    by_row=row_id,
                    step=_outcome_of(StepName.CALLING, steps[StepName.CALLING], name),
                    done=True,
                    lease_s=lease,
                )
                return LocationOutcome(name, location_id, steps=steps, by_row=row_id)
            except ClaimLostError:
                return LocationOutcome(name, None, busy=True)
            except (WebexError, registry.StepPending, InvariantError) as error:
                failure = _failure_of(error, current)
                logger.error(
                    "location could not be provisioned",
                    extra={
                        "event": "location_failed",
                        "reason_code": str(failure.reason),
                        "http_status": failure.http_status,
                        "tracking_id": getattr(error, "tracking_id", None),
                    },
                )
                try:
                    update_entity(
                        self.ledger,
                        held[0],
                        by_row=row_id,
                        failure=Failure(
                            failure.reason, failure.message, failure.http_status, StepName(current)
                        ),
                        lease_s=lease,
                    )
                except ClaimLostError:
                    return LocationOutcome(name, None, busy=True)
                return LocationOutcome(
                    name,
                    None,
                    by_row=row_id,
                    failure=(failure.reason, failure.message, failure.http_status),
                    failed_step=current,
                )

    # --- one row ----------------------------------------------------------------------------

    def _work_row(self, row: ClaimedRow, location: LocationOutcome) -> RowFailure | str | None:
        """Work one row to success or pending; None when its claim was lost."""
        with bind_log_context(batch_id=row.batch_id, row_id=row.row_id, entity_key=row.user.email):
            try:
                return self._row_steps(row, location)
            except ClaimLostError:
                logger.warning(
                    "claim lost; another worker owns the row", extra={"event": "claim_lost"}
                )
                return None
            except Exception as error:
                # A bug met by one row (an answer of a shape nobody foresaw, say) must not stop
                # the other 20,000: the row goes pending `assertion_failure` with the traceback
                # in the log. If even that cannot be recorded, the ledger itself is in trouble.
                logger.critical(
                    f"unexpected error: {type(error).__name__}",
                    extra={"event": "assertion_failure"},
                    exc_info=error,
                )
                failure = RowFailure(
                    ReasonCode.ASSERTION_FAILURE,
                    f"unexpected {type(error).__name__}: {error}"[:500],
                    None,
                    "user",
                )
                try:
                    self._record_pending(row, failure, error)
                except ClaimLostError:
                    return None
                return failure

    def _row_steps(self, row: ClaimedRow, location: LocationOutcome) -> RowFailure | str:
        lease = self.settings.LEDGER_LEASE_S
        changed: list[StepName] = [
            name for name, state in row.steps.items() if state.status in CHANGED
        ]
        current: str = "location"
        compensate_id: str | None = None
        try:
            if location.failure is not None:
                current = location.failed_step
                reason, message, http_status = location.failure
                if reason != ReasonCode.LOCATION_UNDEFINED and location.by_row != row.row_id:
                    message = f"location {location.name!r}: {reason}: {message}"
                    reason = ReasonCode.DEPENDENCY_FAILED
                raise registry.StepPending(reason, message, http_status)
            location_id = location.location_id
            if location_id is None:
                raise InvariantError("a location without an id reached a row")
            shared: list[StepOutcome] = []
            for step in SHARED_STEPS:
                if row.steps.get(step) and row.steps[step].status in SUCCESS_STEP_STATUSES:
                    continue
                applied = location.steps.get(step)
                mine = applied is not None and location.by_row == row.row_id
                status = applied.status if mine and applied else StepStatus.UNCHANGED
                shared.append(
                    StepOutcome(
                        step=step,
                        status=status,
                        entity_type=EntityType.LOCATION,
                        entity_key=location.name,
                        http_status=applied.http_status if mine and applied else None,
                        remote_id=location_id,
                        message=None if mine else "provisioned once for the run",
                        tracking_id=applied.tracking_id if mine and applied else None,
                    )
                )
                if status in CHANGED:
                    changed.append(step)
            # Both were done by the location's provisioning: one transaction records them.
            record_steps(self.ledger, row, shared, lease_s=lease)
            license_id = self.license_id
            if license_id is None:
                current = "user"
                if self.license_error is not None:
                    raise self.license_error
                raise registry.StepPending(ReasonCode.LICENSE_UNAVAILABLE, self.license_problem)

            def mark_started(step: str) -> None:
                record_step(
                    self.ledger,
                    row,
                    StepOutcome(
                        step=StepName(step),
                        status=StepStatus.STARTED,
                        entity_type=EntityType(step),
                        entity_key=row.user.email,
                    ),
                    lease_s=lease,
                )

            user_done = row.steps.get(StepName.USER)
            if user_done is not None and user_done.status not in SUCCESS_STEP_STATUSES:
                user_done = None
            ctx = registry.RowContext(
                client=self.client,
                row=row.user,
                location_id=location_id,
                license_id=license_id,
                settle_s=self.settings.LOOKUP_SETTLE_S,
                max_attempts=self.settings.MAX_RETRIES + 1,
                mark_started=mark_started,
                unknown_outcome=frozenset(
                    name for name, state in row.steps.items() if state.status == "started"
                ),
                user_id=user_done.remote_id if user_done is not None else None,
            )
            if self.license_problem and user_done is None:
                # No unit left: only a user who already holds the license can go on. The
                # lookup is the user step's own (memoised), so this costs no request.
                current = "user"
                person = ctx.person(settle="user" in ctx.unknown_outcome)
                if not registry.holds_license(person, license_id):
                    raise registry.StepPending(ReasonCode.LICENSE_UNAVAILABLE, self.license_problem)
            for spec in registry.ROW_STEPS:
                if not spec.applies(row.user):
                    continue
                current = spec.name
                previous = row.steps.get(spec.name)
                if previous and previous.status in SUCCESS_STEP_STATUSES:
                    continue
                with bind_log_context(step=spec.name):
                    plan = spec.decide(ctx, spec.lookup(ctx))
                    if plan.action == "pending":
                        raise registry.StepPending(
                            plan.reason or ReasonCode.CONFLICT, plan.message or "", None
                        )
                    applied = spec.apply(ctx, plan)
                if spec.name == "user" and applied.status == "created":
                    compensate_id = applied.remote_id
                record_step(
                    self.ledger,
                    row,
                    StepOutcome(
                        step=spec.name,
                        status=applied.status,
                        entity_type=spec.entity_type,
                        entity_key=spec.entity_key(ctx),
                        http_status=applied.http_status,
                        remote_id=applied.remote_id,
                        message=applied.message,
                        tracking_id=applied.tracking_id,
                    ),
                    lease_s=lease,
                )
                if applied.status in CHANGED:
                    changed.append(spec.name)
            finish_row(
                self.ledger,
                row,
                status=RowStatus.SUCCESS,
                required_steps=registry.steps_for(row.user),
            )
            return "success"
        except ClaimLostError:
            raise
        except (WebexError, registry.StepPending, InvariantError) as error:
            failure = _failure_of(error, current)
            if isinstance(error, InvariantError):
                logger.critical(
                    "assertion failure", extra={"event": "assertion_failure", "step": current}
                )
            if changed and failure.reason not in (ReasonCode.ASSERTION_FAILURE,):
                failure = RowFailure(
                    ReasonCode.HALF_APPLIED,
                    f"{current} failed after {', '.join(changed)} changed Webex: "
                    f"{failure.reason}: {failure.message}",
                    failure.http_status,
                    current,
                )
            if compensate_id and self.settings.ENABLE_SAFE_COMPENSATION:
                failure = self._compensate(row, compensate_id, failure)
            self._record_pending(row, failure, error)
            return failure

    def _record_pending(self, row: ClaimedRow, failure: RowFailure, error: Exception) -> None:
        logger.warning(
            "row pending",
            extra={
                "event": "row_pending",
                "step": failure.step,
                "reason_code": str(failure.reason),
                "http_status": failure.http_status,
                "tracking_id": getattr(error, "tracking_id", None),
            },
        )
        entity_type, entity_key = entity_of_step(
            failure.step, row.user.email, row.user.location_name
        )
        try:
            record_step(
                self.ledger,
                row,
                StepOutcome(
                    step=StepName(failure.step),
                    status=StepStatus.FAILED,
                    entity_type=entity_type,
                    entity_key=entity_key,
                    http_status=failure.http_status,
                    message=failure.message,
                    tracking_id=getattr(error, "tracking_id", None),
                ),
            )
        except InvariantError:
            pass
        finish_row(
            self.ledger,
            row,
            status=RowStatus.PENDING,
            reason_code=failure.reason,
            reason_message=failure.message,
            reason_step=StepName(failure.step),
            http_status=failure.http_status,
        )

    def _compensate(self, row: ClaimedRow, person_id: str, failure: RowFailure) -> RowFailure:
        """Delete the user this row created in this run (ENABLE_SAFE_COMPENSATION)."""
        try:
            self.client.request("DELETE", f"/people/{person_id}", ok=(200, 204, 404))
        except WebexError as error:
            logger.error(
                "compensation failed", extra={"event": "compensation_failed", "step": "user"}
            )
            return RowFailure(
                failure.reason,
                f"{failure.message}; deleting the user it created failed: {error.message}",
                failure.http_status,
                failure.step,
            )
        logger.warning("compensated: user deleted", extra={"event": "compensated"})
        record_step(
            self.ledger,
            row,
            StepOutcome(
                step=StepName.USER,
                status=StepStatus.FAILED,
                entity_type=EntityType.USER,
                entity_key=row.user.email,
                remote_id=person_id,
                message="created in this run, then deleted by compensation",
            ),
        )
        return RowFailure(
            failure.reason,
            f"{failure.message}; the user created in this run was deleted (compensation)",
            failure.http_status,
            failure.step,
        )

    # --- bookkeeping --------------------------------------------------------------------------

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

    def _refresh_artifacts(self) -> None:
        try:
            export_all(self.ledger, self.run_info, self.out_dir)
        except InvariantError as error:
            logger.critical(str(error), extra={"event": "assertion_failure", "step": "export"})
        except OSError as error:
            logger.error(
                f"artifacts not written: {error.strerror}", extra={"event": "export_failed"}
            )


def work_run(
    settings: Settings,
    ledger: Ledger,
    run: RunInfo,
    *,
    progress: ProgressSink,
    stop: threading.Event | None = None,
) -> WorkReport:
    """What `ledger work` does once its settings, ledger and run are known (the demo too)."""
    from ledger.status import run_status

    counts = run_status(ledger, run).rows
    progress.start(
        run_id=run.id,
        total=run.total_rows,
        success=counts.success,
        pending=counts.pending,
        rejected=counts.rejected,
    )
    try:
        with WebexClient(settings) as client:
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


def _failure_of(error: Exception, step: str) -> RowFailure:
    if isinstance(error, registry.StepPending):
        return RowFailure(error.reason, error.message, error.http_status, step)
    if isinstance(error, WebexError):
        return RowFailure(ReasonCode(error.reason_code), error.message, error.http_status, step)
    return RowFailure(ReasonCode.ASSERTION_FAILURE, str(error), None, step)


def _outcome_of(step: StepName, applied: registry.Applied, name: str) -> StepOutcome:
    return StepOutcome(
        step,
        StepStatus(applied.status),
        EntityType.LOCATION,
        name,
        http_status=applied.http_status,
        remote_id=applied.remote_id,
        tracking_id=applied.tracking_id,
    )


def _applied_from(saved: StepOutcome | None, remote_id: str) -> registry.Applied:
    if saved is not None:
        return registry.Applied(saved.status, remote_id, saved.http_status, saved.tracking_id)
    return registry.Applied(StepStatus.UNCHANGED, remote_id)


def _ready(name: str, entity: EntityState) -> LocationOutcome:
    remote_id = entity.remote_id or ""
    return LocationOutcome(
        name,
        remote_id,
        steps={
            StepName.LOCATION: _applied_from(entity.steps.get(StepName.LOCATION), remote_id),
            StepName.CALLING: _applied_from(entity.steps.get(StepName.CALLING), remote_id),
        },
        by_row=entity.by_row,
    )
