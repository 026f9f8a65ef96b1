"""`ledger plan`: what `work` would do to each ready row, found by lookups only.

A plan decides with `work`'s own code, never a second copy of it: the locations with the
location and calling steps' lookup and decide (`plan_org`), each row with
`RowRunner.context` and `RowRunner.decide_steps`, the decision phase `work` runs before a
row's first write (`plan_rows`). What differs is what becomes of a decision: it is recorded
in the ledger (`plans`, `plan_lines`), written to `plan.csv`, and never applied. The client
sends nothing but GETs (`ReadOnlyClient`), and a create about to be recorded `started` is an
InvariantError.
`work` does not read the plan: it decides again from what it finds then.

The order is `work`'s: the calling license first (a read that also proves the token, its
scopes, the org and the base URL: `preflight`, exit 3 when it fails), then the locations the
rows name, then the rows batch by batch, `LEDGER_CONCURRENCY` at a time, with `work`'s circuit
breaker over each batch. Two things `work` finds out only by writing are looked up instead: an
extension held by someone else in the row's location (`plan_rows`), and a license that runs
out part-way (here: the rows, in file order, take the units left that the preflight's license
read counted; the rows after them are `license_unavailable`).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.actions_shared import license_units_left
from ledger.batch_prep import batch_view
from ledger.config import Settings
from ledger.database import Ledger
from ledger.error_handling import ReasonCode, is_auth_failure
from ledger.locations import LocationOutcome
from ledger.plan_client import ReadOnlyClient
from ledger.plan_diff import AFTER_APPLY, PlanOutcome
from ledger.plan_org import LocationPlan, plan_location, plan_locations
from ledger.plan_rows import RowPlan, RowPlanner, blocked
from ledger.plan_summary import LicenseCheck, PlanSummary, PlanTally
from ledger.preflight import UNTOUCHED, preflight
from ledger.records import SHARED_STEPS, ClaimedRow, Failure, RowStatus, RunInfo, StepName
from ledger.row_runner import LicenseLookup, RowRunner
from ledger.state_store.plans import (
    begin_plan,
    count_workable_rows,
    finish_plan,
    record_plan_lines,
    run_locations,
    workable_batches,
    workable_locations,
)
from ledger.writers import export_plan

if TYPE_CHECKING:
    from ledger.progress import ProgressSink

logger = logging.getLogger(__name__)

BREAKER_MIN_ROWS = 10
NOTHING_PLANNED = "nothing was planned, nothing was sent but reads"


@dataclass
class PlanReport:
    """How a plan ended: its summary (`complete` once it went through every row), where its
    plan.csv is, and why it stopped early: `breaker_message` (exit 3) or `stopped`."""

    summary: PlanSummary
    complete: bool = False
    plan_file: Path | None = None
    breaker_message: str | None = None
    stopped: bool = False


class Planner:
    """Plans the rows `work` would claim next (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        client: ReadOnlyClient,
        run: RunInfo,
        *,
        progress: ProgressSink,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.client = client
        self.run_info = run
        self.progress = progress
        self.stop = stop or threading.Event()
        self.row_planner = RowPlanner(RowRunner(settings, ledger, client), client)
        self.tally = PlanTally()
        self._locations: dict[str, LocationPlan] = {}
        self._locations_lock = threading.Lock()
        self._units_left: int | None = None
        self._units_wanted = 0

    def run(self) -> PlanReport:
        run_id = self.run_info.id
        if count_workable_rows(self.ledger, run_id) == 0:
            # Nothing `work` would claim: nothing to do, and no request to find that out.
            return self._finish(begin_plan(self.ledger, run_id), None)
        settings = self.settings
        checked = preflight(
            self.client,
            settings.WEBEX_CALLING_LICENSE,
            settings.WEBEX_BASE_URL,
            renewable=settings.WEBEX_REFRESH_TOKEN is not None,
        )
        if checked.failure is not None:
            logger.warning(f"plan stopped: {checked.failure}", extra={"event": "preflight_failed"})
            cause = checked.failure.replace(UNTOUCHED, NOTHING_PLANNED)
            return self._stopped(breaker_message=cause)
        calling_license = checked.license
        self._units_left = self._count_units(calling_license)
        units_at_start = self._units_left
        plan_id = begin_plan(self.ledger, run_id)
        if not self._plan_locations():
            return self._stopped(breaker_message=_breaker_message("the location lookups"))
        for batch_no, rows in enumerate(workable_batches(self.ledger, run_id), start=1):
            tripped = self._plan_batch(batch_no, plan_id, rows, calling_license)
            if tripped:
                return self._stopped(breaker_message=_breaker_message("most rows' lookups"))
            if self.stop.is_set():
                return self._stopped(stopped=True)
        license_check = LicenseCheck(
            settings.WEBEX_CALLING_LICENSE, units_at_start, self._units_wanted
        )
        return self._finish(plan_id, license_check)

    # --- org level ---------------------------------------------------------------------------

    def _count_units(self, calling_license: LicenseLookup) -> int | None:
        if calling_license.license_id is None or calling_license.problem:
            return 0
        # From the licenses the preflight read: the check costs no request.
        licenses = self.client.licenses_read()
        return license_units_left(licenses, self.settings.WEBEX_CALLING_LICENSE)

    def _plan_locations(self) -> bool:
        """Plan every location the rows name; False when Webex refused the token meanwhile."""
        run_id = self.run_info.id
        known = run_locations(self.ledger, run_id)
        planned = plan_locations(
            self.settings, self.client, known, workable_locations(self.ledger, run_id)
        )
        self._locations = planned
        self.client.treat_as_empty(
            location.location_id
            for location in planned.values()
            if location.empty_until_applied and location.location_id is not None
        )
        for name, location in planned.items():
            failure = location.failure
            self.tally.add_location(
                name,
                location.action(StepName.LOCATION),
                location.action(StepName.CALLING),
                None if failure is None else str(failure.reason),
            )
        return not any(
            location.failure is not None and is_auth_failure(location.failure.reason)
            for location in planned.values()
        )

    def _location_of(self, row: ClaimedRow) -> LocationPlan:
        name = row.user.location_name
        with self._locations_lock:
            found = self._locations.get(name)
        if found is not None:
            return found
        # A row that became workable after the plan started (a lease expired meanwhile).
        known = run_locations(self.ledger, self.run_info.id).get(name)
        found = plan_location(self.settings, self.client, name, known, row.row_id)
        with self._locations_lock:
            return self._locations.setdefault(name, found)

    # --- rows --------------------------------------------------------------------------------

    def _plan_batch(
        self, batch_no: int, plan_id: int, rows: list[ClaimedRow], calling_license: LicenseLookup
    ) -> bool:
        """Plan, record and count one batch; True when the circuit breaker trips."""
        started = time.monotonic()
        self.client.forget_features()

        # The batch's listings, as `work` reads them: the people of the org and the number
        # inventory of each location that exists already (one `work` would create is empty).
        existing = {
            row.user.location_name: LocationOutcome(location.name, location.location_id)
            for row in rows
            if (location := self._location_of(row)).failure is None
            and location.location_id not in (None, AFTER_APPLY)
            and not location.empty_until_applied
        }
        view = batch_view(self.row_planner.rows, rows, existing)

        def plan_one(row: ClaimedRow) -> RowPlan | None:
            if self.stop.is_set():
                return None
            planned = self.row_planner.plan(row, self._location_of(row), calling_license, view)
            self.progress.row_finished(
                RowStatus.PENDING if planned.failure is not None else RowStatus.SUCCESS
            )
            return planned

        with ThreadPoolExecutor(
            max_workers=self.settings.LEDGER_CONCURRENCY, thread_name_prefix="plan-row"
        ) as pool:
            planned = [found for found in pool.map(plan_one, rows) if found is not None]
        for row_plan in planned:  # in file order: the first rows take the units left
            self._take_unit(row_plan)
        record_plan_lines(self.ledger, plan_id, [s for p in planned for s in p.steps])
        for row_plan in planned:
            row = row_plan.row
            self.tally.add_row(row.row_id, row.user.location_name, row_plan.steps)
        blocked = sum(1 for row_plan in planned if row_plan.failure is not None)
        elapsed = time.monotonic() - started
        logger.info(
            "plan batch",
            extra={
                "event": "plan_batch",
                "batch_id": rows[0].batch_id,
                "rows": len(planned),
                "blocked": blocked,
                "elapsed_s": round(elapsed, 3),
            },
        )
        self.progress.batch_finished(
            batch_no=batch_no,
            rows=len(planned),
            success=len(planned) - blocked,
            pending=blocked,
            elapsed_s=elapsed,
        )
        return self._breaker_trips(planned)

    def _breaker_trips(self, planned: list[RowPlan]) -> bool:
        """`work`'s circuit breaker over a batch: most rows refused 401/403."""
        refused = sum(
            1
            for row_plan in planned
            if row_plan.failure is not None
            and (
                is_auth_failure(row_plan.failure.reason)
                or row_plan.failure.http_status in (401, 403)
            )
        )
        threshold = self.settings.CIRCUIT_BREAKER_THRESHOLD
        return len(planned) >= BREAKER_MIN_ROWS and refused / len(planned) >= threshold

    def _take_unit(self, row_plan: RowPlan) -> None:
        """A row whose user needs a license unit takes one of those left, or is blocked.
        Counted among the users to license also when no unit was left from the start."""
        if not row_plan.needs_unit:
            return
        self._units_wanted += 1
        if self._units_left is None or row_plan.failure is not None:
            return
        if self._units_left > 0:
            self._units_left -= 1
            return
        name = self.settings.WEBEX_CALLING_LICENSE
        failure = Failure(
            ReasonCode.LICENSE_UNAVAILABLE,
            f"license {name!r} would have no unit left for this user: the rows before it take "
            "the units left",
            None,
            StepName.USER,
        )
        shared = [planned for planned in row_plan.steps if planned.step in SHARED_STEPS]
        blocked_plan = blocked(row_plan.row, shared, failure)
        row_plan.steps, row_plan.failure = blocked_plan.steps, failure

    # --- the end -----------------------------------------------------------------------------

    def _finish(self, plan_id: int, license_check: LicenseCheck | None) -> PlanReport:
        outcome = self.tally.outcome()
        summary = PlanSummary(self.run_info.id, outcome, self.tally, license_check)
        finish_plan(self.ledger, plan_id, outcome, summary.as_dict())
        return PlanReport(summary, complete=True)

    def _stopped(self, *, breaker_message: str | None = None, stopped: bool = False) -> PlanReport:
        summary = PlanSummary(self.run_info.id, PlanOutcome.INCOMPLETE, self.tally, None)
        return PlanReport(summary, breaker_message=breaker_message, stopped=stopped)


def _breaker_message(where: str) -> str:
    return (
        f"circuit breaker: Webex refused {where} with 401/403. Check WEBEX_ACCESS_TOKEN "
        "(expired?), its scopes and admin role, the org, and WEBEX_BASE_URL; the plan is "
        "incomplete and no plan.csv was written"
    )


def plan_run(
    settings: Settings,
    ledger: Ledger,
    run: RunInfo,
    *,
    progress: ProgressSink,
    out_dir: Path,
    stop: threading.Event | None = None,
    client: ReadOnlyClient | None = None,
) -> PlanReport:
    """What `ledger plan` does once its settings, ledger and run are known: plan, record, and
    write plan.csv (only for a plan that went through every row).

    `client` defaults to one built from the settings, closed at the end; a client given stays
    open, its caller's to close.
    """
    total = count_workable_rows(ledger, run.id)
    progress.start(run_id=run.id, total=total, success=0, pending=0, rejected=0)
    try:
        with ExitStack() as owned:
            if client is None:
                client = owned.enter_context(ReadOnlyClient(settings))
            report = Planner(settings, ledger, client, run, progress=progress, stop=stop).run()
    finally:
        progress.stop()
    if report.complete:
        report.plan_file = export_plan(ledger, run, out_dir)
    return report
