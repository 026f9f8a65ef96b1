"""One claimed row of a prepared batch (`batch_prep`), worked to `success` or `pending`.

Its shared steps come from its location (provisioned before the batch's rows run), and its
number may already have been added with its location's others; its own steps (number, user,
settings) run here: all looked up and decided before the first write, so that a row blocked for
a reason a lookup can see changes nothing, then applied in order, each outcome committed before
the next step starts. Its lookups are answered by the batch's listings (`listings`) unless the
ledger shows the row needs its own (`RowRunner.uses_listing`). A failure makes the row pending
(`row_pending`), as `half_applied` when an earlier step had already changed Webex; with
ENABLE_SAFE_COMPENSATION a user this row created is deleted again first. A row back from
`ledger retry` looks up again what its steps did before, rather than trusting its record.
Every write is fenced by the row's claim: a worker that lost the row hears `ClaimLostError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ledger import actions_registry as registry
from ledger.config import Settings
from ledger.connection_client import WebexClient
from ledger.database import Ledger
from ledger.error_handling import ClaimLostError, InvariantError, ReasonCode, WebexError
from ledger.listings import BatchView, OrgListings
from ledger.locations import LocationOutcome
from ledger.logs import bind_log_context
from ledger.new_user_defaults import NewUserDefaults
from ledger.records import (
    CHANGED_STEP_STATUSES,
    SHARED_STEPS,
    SUCCESS_STEP_STATUSES,
    ClaimedRow,
    EntityType,
    Failure,
    RowStatus,
    StepName,
    StepOutcome,
    StepState,
    StepStatus,
    utcnow,
)
from ledger.row_pending import compensate, location_pending, record_pending
from ledger.state_store import finish_row, record_steps

if TYPE_CHECKING:
    from ledger.batch_prep import PreparedBatch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LicenseLookup:
    """The calling license as looked up for a batch: its id, or why there is none or no unit
    is left (`problem`), and the lookup's own error (a 401 must reach the breaker as one)."""

    license_id: str | None
    problem: str = ""
    error: WebexError | None = None
    units_left: int | None = None  # None: Webex does not count them


def lookup_license(client: WebexClient, wanted: str) -> LicenseLookup:
    try:
        license_id, problem, units_left = registry.find_license(client, wanted)
    except WebexError as error:
        return LicenseLookup(None, f"license lookup failed: {error}", error)
    return LicenseLookup(license_id, problem, units_left=units_left)


@dataclass
class _Progress:
    """Where a row's work stands: the step running now, and the steps that changed Webex (what
    makes a later failure `half_applied`)."""

    step: StepName
    changed: list[StepName]


@dataclass(frozen=True)
class RowDecision:
    """A row's own steps as decided before any write: the context their lookups filled, the
    steps still to run (each with whether a success of it is on record), and each step's plan.
    A step without a plan reads what an earlier step writes: it is decided when its turn comes.
    """

    ctx: registry.RowContext
    todo: list[tuple[registry.StepSpec, bool]]
    plans: dict[StepName, registry.Plan]


class RowRunner:
    """Works claimed rows through their steps (see the module docstring)."""

    def __init__(self, settings: Settings, ledger: Ledger, client: WebexClient) -> None:
        self.settings = settings
        self.ledger = ledger
        self.client = client
        # The org as this worker session read it: what a batch's lookups are answered from.
        self.listings = OrgListings(client)
        # Per row at work (by pk): step records that precede no write of theirs (a step found
        # `unchanged`, the location's steps), made with the row's next record instead of alone:
        # lost in a crash, they are found again by the next try's lookups. Each row is worked
        # by one thread at a time.
        self._deferred: dict[int, list[StepOutcome]] = {}
        # The settings a user this worker creates starts with, per location.
        self.new_user_defaults = NewUserDefaults()

    def work(self, row: ClaimedRow, batch: PreparedBatch) -> Failure | None:
        """Work one row of a prepared batch (`batch_prep`): None once it is `success`, its
        Failure once it is `pending`.

        Raises ClaimLostError when another worker has taken the row over: this one must leave
        it alone, and it counts for neither outcome.
        """
        with bind_log_context(batch_id=row.batch_id, row_id=row.row_id, entity_key=row.user.email):
            try:
                return self._steps(row, batch)
            except ClaimLostError:
                self._deferred.pop(row.pk, None)
                logger.warning(
                    "claim lost; another worker owns the row", extra={"event": "claim_lost"}
                )
                raise
            except Exception as error:
                # A bug met by one row (an answer of a shape nobody foresaw, say) must not stop
                # the other 20,000: the row goes pending `assertion_failure` with the traceback
                # in the log. If even that cannot be recorded, the ledger itself is in trouble.
                logger.critical(
                    f"unexpected error: {type(error).__name__}",
                    extra={"event": "assertion_failure"},
                    exc_info=error,
                )
                failure = Failure(
                    ReasonCode.ASSERTION_FAILURE,
                    f"unexpected {type(error).__name__}: {error}"[:500],
                    None,
                    StepName.USER,
                )
                record_pending(self.ledger, row, failure, error)
                return failure

    def _steps(self, row: ClaimedRow, batch: PreparedBatch) -> Failure | None:
        location = batch.locations[row.user.location_name]
        calling_license = batch.license
        number = batch.numbers.get(row.pk)
        if isinstance(number, StepOutcome):  # added (and recorded) with its location's others
            row = with_step(row, number)
        progress = _Progress(
            StepName.LOCATION,
            [name for name, state in row.steps.items() if state.status in CHANGED_STEP_STATUSES],
        )
        ctx: registry.RowContext | None = None
        try:
            if location.failure is not None:
                progress.step = location.failure.step
                raise location_pending(location, location.failure)
            location_id = self._record_shared_steps(row, location, progress.changed)
            license_id = calling_license.license_id
            if license_id is None:
                progress.step = StepName.USER
                if calling_license.error is not None:
                    raise calling_license.error
                raise registry.StepPending(ReasonCode.LICENSE_UNAVAILABLE, calling_license.problem)
            if isinstance(number, Failure):  # the location's number add refused this number
                progress.step = StepName.NUMBER
                raise registry.StepPending(number.reason, number.message, number.http_status)
            ctx = batch.contexts.get(row.pk) or self.context(
                row, location_id, license_id, mark_started=self.recorder(row), view=batch.view
            )
            progress.step = StepName.USER
            self.check_license(ctx, calling_license, unit=row.pk not in batch.no_unit)
            self._row_steps(row, ctx, progress)
            finish_row(
                self.ledger,
                row,
                status=RowStatus.SUCCESS,
                required_steps=registry.steps_for(row.user),
                outcomes=self._deferred.pop(row.pk, ()),
            )
            return None
        except ClaimLostError:
            raise
        except (WebexError, registry.StepPending, InvariantError) as error:
            current, changed = progress.step, progress.changed
            failure = registry.failure_of(error, current)
            if isinstance(error, InvariantError):
                logger.critical(
                    "assertion failure", extra={"event": "assertion_failure", "step": current}
                )
            if changed and failure.reason != ReasonCode.ASSERTION_FAILURE:
                failure = Failure(
                    ReasonCode.HALF_APPLIED,
                    f"{current} failed after {', '.join(changed)} changed Webex: "
                    f"{failure.reason}: {failure.message}",
                    failure.http_status,
                    current,
                )
            created_id = ctx.created_id if ctx is not None else None
            if created_id and self.settings.ENABLE_SAFE_COMPENSATION:
                failure = compensate(self.ledger, self.client, row, created_id, failure)
            record_pending(self.ledger, row, failure, error, self._deferred.pop(row.pk, ()))
            return failure

    def context(
        self,
        row: ClaimedRow,
        location_id: str,
        license_id: str,
        *,
        mark_started: Callable[[StepOutcome], None],
        view: BatchView | None = None,
    ) -> registry.RowContext:
        """The context a row's steps share: what the ledger knows of the row's earlier tries
        (a user id recorded by a success, creates whose outcome is unknown) and the ids of its
        location and license. `mark_started` records a create about to be sent. `view`, the
        batch's listings (`listings`), answers the row's lookups where `uses_listing` allows."""
        user_done = row.steps.get(StepName.USER)
        if user_done is not None and user_done.status not in SUCCESS_STEP_STATUSES:
            user_done = None
        return registry.RowContext(
            client=self.client,
            row=row.user,
            location_id=location_id,
            license_id=license_id,
            settle_s=self.settings.LOOKUP_SETTLE_S,
            max_attempts=self.settings.MAX_RETRIES + 1,
            mark_started=mark_started,
            unknown_outcome=self._settle_left(row),
            user_id=user_done.remote_id if user_done is not None else None,
            view=view if self.uses_listing(row) else None,
            new_user_defaults=self.new_user_defaults,
        )

    @staticmethod
    def uses_listing(row: ClaimedRow) -> bool:
        """Whether a batch's listings may answer this row's lookups: not when the ledger shows
        a create of its user whose outcome is unknown (`started`: Webex may lag in showing that
        person), a person id recorded by an earlier success, or a failed step (a row back from
        `ledger retry`): then its own lookups decide, the user's with LOOKUP_SETTLE_S."""
        return not any(
            state.status == StepStatus.FAILED
            or (step == StepName.USER and state.status != StepStatus.SKIPPED)
            for step, state in row.steps.items()
        )

    def recorder(self, row: ClaimedRow) -> Callable[[StepOutcome], None]:
        """What records a row's step as it is about to write (its `mark_started`)."""
        return lambda started: self._record(row, started)

    def _record(self, row: ClaimedRow, outcome: StepOutcome, *, defer: bool = False) -> None:
        """Record `outcome` with the row's deferred records, or (`defer`) add it to them."""
        deferred = self._deferred.setdefault(row.pk, [])
        deferred.append(outcome)
        if defer:
            return
        del self._deferred[row.pk]
        record_steps(self.ledger, row, deferred, lease_s=self.settings.LEDGER_LEASE_S)

    @staticmethod
    def check_license(
        ctx: registry.RowContext, calling_license: LicenseLookup, *, unit: bool = True
    ) -> None:
        """With no unit of the license left for this row (none at all, or `unit` False: the
        batch's rows before it took the units left), only a user who already holds it can go
        on (StepPending otherwise). The lookup is the user step's own (memoised)."""
        if (unit and not calling_license.problem) or ctx.user_id is not None:
            return
        person = ctx.person(settle_s=ctx.settle_for(StepName.USER))
        if registry.holds_license(person, ctx.license_id):
            return
        problem = calling_license.problem or (
            f"license {calling_license.license_id!r} has no unit left for this user: the rows "
            "before it in the batch take the units left"
        )
        raise registry.StepPending(ReasonCode.LICENSE_UNAVAILABLE, problem)

    def decide_steps(
        self, row: ClaimedRow, ctx: registry.RowContext, progress: _Progress | None = None
    ) -> RowDecision:
        """The row's own steps (number, user, settings), every one looked up and decided before
        the first write, so that a row blocked for a reason a lookup can see (a number or an
        extension in use, a user in another location) changes nothing. Reads only: `work` then
        applies the decision, `ledger plan` reports it. Raises StepPending for a blocked row.

        A row that was pending before (a failed step on record) is back after `retry`: what its
        steps did then may no longer hold (a person found after a create whose answer was lost
        may lack its calling part), so each is looked up again; only what differs is written.
        """
        progress = progress or _Progress(StepName.USER, [])
        recheck = any(state.status == StepStatus.FAILED for state in row.steps.values())
        todo = [
            (spec, row.step_done(spec.name))
            for spec in registry.ROW_STEPS
            if spec.applies(row.user) and (recheck or not row.step_done(spec.name))
        ]
        plans: dict[StepName, registry.Plan] = {}
        for spec, _done in todo:
            earlier = plans.get(spec.reads_after) if spec.reads_after is not None else None
            if earlier is not None and earlier.action != "unchanged":
                continue  # decided when its turn comes, once that earlier step has written
            progress.step = spec.name
            plans[spec.name] = self._decide(ctx, spec)
        progress.step = StepName.USER
        blocked = registry.blocked_before_writes(ctx, plans)
        if blocked is not None:
            raise registry.StepPending(blocked.reason or ReasonCode.CONFLICT, blocked.message or "")
        return RowDecision(ctx, todo, plans)

    def _row_steps(self, row: ClaimedRow, ctx: registry.RowContext, progress: _Progress) -> None:
        """Decide the row's own steps (`decide_steps`), then apply them in order, each outcome
        committed before the next step starts."""
        decision = self.decide_steps(row, ctx, progress)
        last = len(decision.todo) - 1
        for index, (spec, done) in enumerate(decision.todo):
            progress.step = spec.name
            plan = decision.plans.get(spec.name) or self._decide(ctx, spec)
            if done and plan.action == "unchanged":
                continue  # as recorded: nothing to write, nothing new to record
            with bind_log_context(step=spec.name):
                outcome = spec.apply(ctx, plan)
            # Committed before the next step starts; the last step's with the row's finish.
            self._record(row, outcome, defer=not outcome.changed or index == last)
            if outcome.changed:
                progress.changed.append(spec.name)

    @staticmethod
    def _decide(ctx: registry.RowContext, spec: registry.StepSpec) -> registry.Plan:
        """A step's lookup and decision; a plan that cannot go on raises StepPending."""
        with bind_log_context(step=spec.name):
            plan = spec.decide(ctx, spec.lookup(ctx))
        if plan.action == "pending":
            raise registry.StepPending(plan.reason or ReasonCode.CONFLICT, plan.message or "")
        return plan

    def _settle_left(self, row: ClaimedRow) -> dict[StepName, float]:
        """The steps an earlier try left `started`, each with how long its lookups must still
        allow for Webex's lag: LOOKUP_SETTLE_S from when its create was sent. A row reclaimed
        again and again (a crash loop) spends the settle once, not once per claim."""
        settle_s = self.settings.LOOKUP_SETTLE_S
        now = utcnow()
        left: dict[StepName, float] = {}
        for name, state in row.steps.items():
            if state.status != StepStatus.STARTED:
                continue
            if state.started_at is None:  # not known: allow for all of it
                left[name] = settle_s
                continue
            since = (now - state.started_at).total_seconds()
            left[name] = min(settle_s, max(0.0, settle_s - since))
        return left

    def _record_shared_steps(
        self, row: ClaimedRow, location: LocationOutcome, changed: list[StepName]
    ) -> str:
        """Record the location's steps for this row (with the row's next record): as they went
        for the row that provisioned it, `unchanged` for the others. Gives the location's id."""
        location_id = location.location_id
        if location_id is None:
            raise InvariantError("a location without an id reached a row")
        for step in SHARED_STEPS:
            if row.step_done(step):
                continue
            done = location.steps.get(step)
            if done is not None and location.by_row == row.row_id:
                outcome = replace(done, remote_id=location_id, message=None)
            else:
                outcome = StepOutcome(
                    step,
                    StepStatus.UNCHANGED,
                    EntityType.LOCATION,
                    location.name,
                    remote_id=location_id,
                    message="provisioned once for the run",
                )
            self._record(row, outcome, defer=True)  # the location's own record is its entity
            if outcome.changed:
                changed.append(step)
        return location_id


def with_step(row: ClaimedRow, outcome: StepOutcome) -> ClaimedRow:
    """The row as its record stands once `outcome` (a success) was recorded for it."""
    earlier = row.steps.get(outcome.step)
    attempts = earlier.attempts if earlier is not None else 1
    state = StepState(outcome.status, outcome.remote_id, attempts)
    return replace(row, steps={**row.steps, outcome.step: state})
