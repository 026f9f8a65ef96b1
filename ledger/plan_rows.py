"""One row as `work` would decide it, by `work`'s own code: `RowRunner.context` and
`RowRunner.decide_steps` (the decision `work` makes before a row's first write), with the
location and calling steps as the location's plan found them (`plan_org`). What the decision
says becomes the row's planned steps (`plan_diff`): the fields each create or update would
write, before → after, or the block and its reason code.

Two things `work` finds out only by writing are asked first: an extension held by someone else
in the row's location (`actions_row.extension_taken`, which `work` asks only when the row's
number must be added first: else the user's create or update is refused), and whether the user
would take a unit of the calling license (the planner counts them against the units left).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ledger import actions_registry as registry
from ledger.actions_row import decide_number, extension_taken, find_number
from ledger.error_handling import InvariantError, ReasonCode, WebexError
from ledger.listings import BatchView
from ledger.plan_client import ReadOnlyClient
from ledger.plan_diff import (
    FieldChange,
    PlanAction,
    PlannedStep,
    changed,
    created,
    settings_after_apply,
)
from ledger.plan_org import LocationPlan, refuse_writes
from ledger.records import SHARED_STEPS, ClaimedRow, Failure, StepName
from ledger.row_runner import LicenseLookup, RowDecision, RowRunner

# The decision's progress (which step is being decided) names the step a block stops at.
from ledger.row_runner import _Progress as StepProgress

ACTIONS = {"create": PlanAction.CREATE, "update": PlanAction.UPDATE}


@dataclass
class RowPlan:
    """One row as planned: its steps in step order (a blocked row ends with the block), and
    whether its user would take a unit of the calling license."""

    row: ClaimedRow
    steps: list[PlannedStep]
    needs_unit: bool = False
    failure: Failure | None = None


class RowPlanner:
    """Plans rows with `work`'s RowRunner and the plan's read-only client (thread-safe: each
    row has its own context)."""

    def __init__(self, runner: RowRunner, client: ReadOnlyClient) -> None:
        self.rows = runner
        self.client = client

    def plan(
        self,
        row: ClaimedRow,
        location: LocationPlan,
        calling_license: LicenseLookup,
        view: BatchView | None = None,
    ) -> RowPlan:
        """The row's steps as `work` would take them, or where it would stop and why."""
        if location.failure is not None or location.location_id is None:
            failure = location.failure or Failure(
                ReasonCode.DEPENDENCY_FAILED, "the location has no id", None, StepName.LOCATION
            )
            return blocked(row, [], failure)
        steps = list(self._shared_steps(row, location))
        progress = StepProgress(StepName.USER, [])
        needs_unit = False
        try:
            license_id = calling_license.license_id
            if license_id is None:
                if calling_license.error is not None:
                    raise calling_license.error
                raise registry.StepPending(ReasonCode.LICENSE_UNAVAILABLE, calling_license.problem)
            ctx = self.rows.context(
                row, location.location_id, license_id, mark_started=refuse_writes, view=view
            )
            if calling_license.problem and ctx.user_id is None:
                # As `work`: with no unit left, only a user who holds the license goes on.
                person = ctx.person(settle_s=ctx.settle_for(StepName.USER))
                if not registry.holds_license(person, license_id):
                    needs_unit = True
                    raise registry.StepPending(
                        ReasonCode.LICENSE_UNAVAILABLE, calling_license.problem
                    )
            decision = self.rows.decide_steps(row, ctx, progress)
            _check_extension(ctx, decision)
            _check_number_elsewhere(ctx, decision, progress)
            needs_unit = _needs_unit(ctx, decision, license_id)
            steps.extend(self._row_steps(row, ctx, decision))
        except (WebexError, registry.StepPending, InvariantError) as error:
            stopped = blocked(row, steps, registry.failure_of(error, progress.step))
            stopped.needs_unit = needs_unit
            return stopped
        return RowPlan(row, steps, needs_unit)

    def _shared_steps(self, row: ClaimedRow, location: LocationPlan) -> Iterator[PlannedStep]:
        """The location and calling steps as `work` records them for this row: what they do
        for the row that carries them, `unchanged` for the others."""
        for step in SHARED_STEPS:
            shared = location.steps.get(step)
            if row.step_done(step):
                yield _step(row, step, PlanAction.UNCHANGED, message="done in an earlier session")
            elif shared is not None and location.by_row == row.row_id:
                yield _step(row, step, shared.action, shared.changes, shared.message)
            else:
                yield _step(row, step, PlanAction.UNCHANGED, message="provisioned once for the run")

    def _row_steps(
        self, row: ClaimedRow, ctx: registry.RowContext, decision: RowDecision
    ) -> Iterator[PlannedStep]:
        todo = {spec.name for spec, _done in decision.todo}
        for spec in registry.ROW_STEPS:
            if not spec.applies(row.user):
                continue
            if spec.name not in todo:
                yield _step(
                    row, spec.name, PlanAction.UNCHANGED, message="done in an earlier session"
                )
                continue
            plan = decision.plans.get(spec.name)
            if plan is None:  # read only once an earlier step of the row has written
                yield _step(
                    row,
                    spec.name,
                    PlanAction.UPDATE,
                    settings_after_apply(row.user),
                    "read and written once the user step has written",
                )
            elif plan.action in ACTIONS:
                changes = self._changes(ctx, spec.name, plan)
                yield _step(row, spec.name, ACTIONS[plan.action], changes)
            else:
                yield _step(row, spec.name, PlanAction.UNCHANGED)

    def _changes(
        self, ctx: registry.RowContext, step: StepName, plan: registry.Plan
    ) -> tuple[FieldChange, ...]:
        """The fields a create or update of `step` would write, before → after."""
        body = plan.body or {}
        if step == StepName.NUMBER:
            return (FieldChange("phoneNumber", "", ctx.row.phone_number or ""),)
        if step == StepName.USER and plan.action == "create":
            return created(body)
        if step == StepName.USER:
            return changed(ctx.person(settle_s=ctx.settle_for(StepName.USER)), body)
        changes: list[FieldChange] = []
        for _method, path, written in plan.writes:
            feature = path.rsplit("/", 1)[-1]
            before = self.client.read_feature(path)
            changes.extend(changed(before, written, prefix=f"{feature}."))
        return tuple(changes)


def _step(
    row: ClaimedRow,
    step: StepName,
    action: PlanAction,
    changes: tuple[FieldChange, ...] = (),
    message: str | None = None,
) -> PlannedStep:
    return PlannedStep(row.pk, row.row_id, step, action, changes, None, message)


def blocked(row: ClaimedRow, steps: list[PlannedStep], failure: Failure) -> RowPlan:
    block = PlannedStep(
        row.pk,
        row.row_id,
        failure.step,
        PlanAction.BLOCKED,
        reason=failure.reason,
        message=failure.message,
    )
    return RowPlan(row, [*steps, block], failure=failure)


def _check_extension(ctx: registry.RowContext, decision: RowDecision) -> None:
    """Blocked `extension_in_use` when the user's create or update would be refused for an
    extension held by someone else in the location (`decide_steps` asks only when the row's
    number would be added first; `work` finds out from the write itself)."""
    user, number = decision.plans.get(StepName.USER), decision.plans.get(StepName.NUMBER)
    if user is None or user.action not in ACTIONS:
        return
    if number is not None and number.action == "create":
        return  # asked already, before the writes
    taken = extension_taken(ctx, ctx.person(settle_s=ctx.settle_for(StepName.USER)))
    if taken is not None:
        raise registry.StepPending(taken.reason or ReasonCode.EXTENSION_IN_USE, taken.message or "")


def _needs_unit(ctx: registry.RowContext, decision: RowDecision, license_id: str) -> bool:
    """Whether the user step would give the user a unit of the license it does not hold."""
    user = decision.plans.get(StepName.USER)
    if user is None or user.action not in ACTIONS:
        return False
    if user.action == "create":
        return True
    person = ctx.person(settle_s=ctx.settle_for(StepName.USER))
    return not registry.holds_license(person, license_id)


def _check_number_elsewhere(
    ctx: registry.RowContext, decision: RowDecision, progress: StepProgress
) -> None:
    """A number the location's inventory lacks may be held in another location, which `work`
    learns only when its bulk add is refused: the plan asks Webex for that number, in any
    location, and blocks the row as `work`'s per-number decision would."""
    number = decision.plans.get(StepName.NUMBER)
    phone = ctx.row.phone_number
    if number is None or number.action != "create" or phone is None:
        return
    found = decide_number(ctx, find_number(ctx.client, phone))
    if found.action == "pending":
        progress.step = StepName.NUMBER
        raise registry.StepPending(found.reason or ReasonCode.NUMBER_IN_USE, found.message or "")
