"""What a plan checks of the org before any row: the locations the rows name (to create, to
update, to enable for calling, or undefined), and the calling license's units left.

A location is planned with `work`'s own lookup and decide (`actions_shared`) and the order of
`locations.LocationProvisioner`: a location the ledger has ready is reused as it is; else it is
looked up by name and created or updated, then its calling is enabled unless it already is.
What the location and calling steps would do is carried by the first row that names the
location (the row `work` records it for); every other row reuses it (`unchanged`).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ledger import actions_registry as registry
from ledger.actions_shared import decide_location, lookup_calling, lookup_location
from ledger.config import Settings
from ledger.connection_client import WebexClient
from ledger.error_handling import InvariantError, ReasonCode, WebexError
from ledger.plan_diff import AFTER_APPLY, FieldChange, PlanAction, changed, created
from ledger.records import EntityState, EntityStatus, Failure, StepName, StepOutcome
from ledger.row_rules import LocationSpec

logger = logging.getLogger(__name__)


def refuse_writes(started: StepOutcome) -> None:
    """The `mark_started` of a plan: a create about to be sent is a bug in a plan."""
    raise InvariantError(f"a plan sends no create, yet {started.step} was about to send one")


@dataclass(frozen=True)
class SharedPlan:
    """What one shared step (location or calling) would do, for the row that carries it."""

    action: PlanAction
    changes: tuple[FieldChange, ...] = ()
    message: str | None = None


@dataclass(frozen=True)
class LocationPlan:
    """A location as the plan found it: its id (AFTER_APPLY for one `work` would create), what
    its location and calling steps would do for the row `by_row` (None: no row carries them,
    the ledger has the location ready), or why its rows are blocked (`failure`)."""

    name: str
    location_id: str | None
    steps: dict[StepName, SharedPlan]
    by_row: int | None = None
    failure: Failure | None = None

    @property
    def empty_until_applied(self) -> bool:
        """Whether `work` would create it or enable its calling before any of its rows."""
        calling = self.steps.get(StepName.CALLING)
        return calling is not None and calling.action == PlanAction.CREATE

    def action(self, step: StepName) -> PlanAction:
        found = self.steps.get(step)
        return found.action if found is not None else PlanAction.UNCHANGED


def plan_locations(
    settings: Settings,
    client: WebexClient,
    known: dict[str, EntityState],
    first_rows: dict[str, int],
) -> dict[str, LocationPlan]:
    """Each location the rows name (`first_rows`: its first row), planned side by side."""
    width = max(1, min(settings.LEDGER_CONCURRENCY, len(first_rows)))

    def plan_one(name: str) -> LocationPlan:
        return plan_location(settings, client, name, known.get(name), first_rows[name])

    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="plan-location") as pool:
        return dict(zip(first_rows, pool.map(plan_one, first_rows), strict=True))


def plan_location(
    settings: Settings,
    client: WebexClient,
    name: str,
    entity: EntityState | None,
    first_row: int,
) -> LocationPlan:
    """The location and calling steps `work` would take for this location (reads only)."""
    if entity is not None and entity.status == EntityStatus.READY and entity.remote_id:
        return LocationPlan(name, entity.remote_id, {})  # provisioned once for the run
    spec = entity.desired if entity is not None and entity.desired else LocationSpec(name=name)
    ctx = registry.LocationContext(
        client=client,
        spec=spec,
        max_attempts=settings.MAX_RETRIES + 1,
        mark_started=refuse_writes,
    )
    current = StepName.LOCATION
    try:
        if entity is not None and entity.remote_id:  # made in an earlier session
            location_id = entity.remote_id
            location = SharedPlan(PlanAction.UNCHANGED)
        else:
            location_id, location = _location_step(ctx)
        current = StepName.CALLING
        calling = _calling_step(ctx, location_id)
    except (WebexError, registry.StepPending) as error:
        failure = registry.failure_of(error, current)
        if f"location {name!r}" not in failure.message:
            failure = Failure(
                failure.reason,
                f"location {name!r}: {failure.message}",
                failure.http_status,
                failure.step,
            )
        return LocationPlan(name, None, {}, by_row=first_row, failure=failure)
    steps = {StepName.LOCATION: location, StepName.CALLING: calling}
    return LocationPlan(name, location_id, steps, by_row=first_row)


def _location_step(ctx: registry.LocationContext) -> tuple[str, SharedPlan]:
    remote = lookup_location(ctx)
    plan = decide_location(ctx, remote)
    if plan.action == "pending":
        raise registry.StepPending(plan.reason or ReasonCode.LOCATION_UNDEFINED, plan.message or "")
    if plan.action == "create" and plan.body is not None:
        return AFTER_APPLY, SharedPlan(PlanAction.CREATE, created(plan.body))
    if plan.remote_id is None:
        raise InvariantError(f"location {ctx.spec.name!r} found without an id")
    if plan.action == "update" and plan.body is not None:
        return plan.remote_id, SharedPlan(PlanAction.UPDATE, changed(remote, plan.body))
    return plan.remote_id, SharedPlan(PlanAction.UNCHANGED)


def _calling_step(ctx: registry.LocationContext, location_id: str) -> SharedPlan:
    """Enable calling unless it is (a location `work` would create is not, yet)."""
    if location_id != AFTER_APPLY and lookup_calling(ctx, location_id) is not None:
        return SharedPlan(PlanAction.UNCHANGED)
    before = "" if location_id == AFTER_APPLY else "false"
    return SharedPlan(
        PlanAction.CREATE,
        (FieldChange("callingEnabled", before, "true"),),
        "enable Webex Calling in the location",
    )


# --- the license -----------------------------------------------------------------------------
