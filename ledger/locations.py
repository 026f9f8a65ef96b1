"""A batch's locations, provisioned before its rows: each once per run, by whoever gets there
first.

A location is a shared entity in the ledger. A worker claims it before provisioning it, so two
workers never create the same location; the others poll (bounded by a lease) until it is ready
or failed, then reuse its id or its failure. The heartbeat keeps the claim alive while the
location and calling steps run. What those steps did is recorded on the entity, for the row
that did it; the rows that reuse the location record it `unchanged`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ledger import actions_registry as registry
from ledger.batch_iterator import LeaseKeeper
from ledger.config import Settings
from ledger.connection_client import WebexClient
from ledger.database import Ledger
from ledger.error_handling import ClaimLostError, InvariantError, WebexError
from ledger.logs import bind_log_context
from ledger.records import (
    SHARED_STEPS,
    ClaimedRow,
    EntityState,
    EntityStatus,
    EntityType,
    Failure,
    StepName,
    StepOutcome,
    StepStatus,
)
from ledger.row_rules import LocationSpec
from ledger.state_store import claim_entity, update_entity

logger = logging.getLogger(__name__)

BUSY_POLL_S = 0.5


@dataclass(frozen=True)
class LocationOutcome:
    """A location as a batch's rows see it: its id and what its shared steps did (for the row
    `by_row` that did them), or why it could not be provisioned, or `busy`: another worker
    still holds it."""

    name: str
    location_id: str | None
    steps: dict[StepName, StepOutcome] = field(default_factory=dict)
    by_row: int | None = None
    failure: Failure | None = None
    busy: bool = False


class LocationProvisioner:
    """Provisions the locations a worker's batches name (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        client: WebexClient,
        run_id: int,
        *,
        stop: threading.Event,
        keeper: LeaseKeeper | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.client = client
        self.run_id = run_id
        self.stop = stop
        self.keeper = keeper

    def ensure(self, rows: Sequence[ClaimedRow]) -> dict[str, LocationOutcome]:
        """Each location these rows name, provisioned or found as another worker left it."""
        first_rows: dict[str, int] = {}
        for row in rows:
            first_rows.setdefault(row.user.location_name, row.row_id)
        # Locations are independent of each other: provision them side by side (at Webex's
        # latency, twenty new locations one after another took most of a first batch).
        width = max(1, min(self.settings.LEDGER_CONCURRENCY, len(first_rows)))
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="location") as pool:
            outcomes = pool.map(lambda item: self._ensure_one(*item), first_rows.items())
            return dict(zip(first_rows, outcomes, strict=True))

    def _ensure_one(self, name: str, row_id: int) -> LocationOutcome:
        lease = self.settings.LEDGER_LEASE_S
        polls = int(lease / BUSY_POLL_S) + 1
        for _ in range(polls):
            entity = claim_entity(self.ledger, self.run_id, EntityType.LOCATION, name, lease)
            if entity.status == EntityStatus.READY and entity.remote_id:
                return _ready(name, entity)
            if entity.failure is not None:
                return LocationOutcome(name, None, by_row=entity.by_row, failure=entity.failure)
            if entity.token is not None:
                if self.keeper is not None:
                    self.keeper.hold(entity.token)
                try:
                    return self._provision(name, entity, row_id)
                finally:
                    if self.keeper is not None:
                        self.keeper.drop(entity.token)
            if self.stop.wait(BUSY_POLL_S):
                break
        return LocationOutcome(name, None, busy=True)

    def _provision(self, name: str, entity: EntityState, row_id: int) -> LocationOutcome:
        """The location and calling steps for a location this worker holds."""
        lease = self.settings.LEDGER_LEASE_S
        held = [entity]

        def mark_started(started: StepOutcome) -> None:
            held[0] = update_entity(self.ledger, held[0], step=started, lease_s=lease)

        ctx = registry.LocationContext(
            client=self.client,
            spec=entity.desired or LocationSpec(name=name),
            max_attempts=self.settings.MAX_RETRIES + 1,
            mark_started=mark_started,
        )
        current = StepName.LOCATION
        with bind_log_context(entity_key=name, row_id=row_id):
            try:
                location_id = held[0].remote_id
                remote: registry.JSON | None = None
                if location_id is None:
                    location, remote = registry.provision_location(ctx)
                    location_id = location.remote_id
                    if not location_id:
                        raise InvariantError(f"location {name!r} provisioned without an id")
                    held[0] = update_entity(
                        self.ledger,
                        held[0],
                        remote_id=location_id,
                        step=location,
                        by_row=row_id,
                        lease_s=lease,
                    )
                else:
                    location = held[0].steps.get(StepName.LOCATION) or ctx.outcome(
                        StepName.LOCATION, StepStatus.UNCHANGED, location_id
                    )
                current = StepName.CALLING
                calling = registry.provision_calling(ctx, location_id, location, remote)
                held[0] = update_entity(
                    self.ledger,
                    held[0],
                    calling_enabled=True,
                    step=calling,
                    by_row=row_id,
                    done=True,
                    lease_s=lease,
                )
                steps = {StepName.LOCATION: location, StepName.CALLING: calling}
                return LocationOutcome(name, location_id, steps=steps, by_row=row_id)
            except ClaimLostError:
                return LocationOutcome(name, None, busy=True)
            except (WebexError, registry.StepPending, InvariantError) as error:
                failure = registry.failure_of(error, current)
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
                        self.ledger, held[0], by_row=row_id, failure=failure, lease_s=lease
                    )
                except ClaimLostError:
                    return LocationOutcome(name, None, busy=True)
                return LocationOutcome(name, None, by_row=row_id, failure=failure)


def _ready(name: str, entity: EntityState) -> LocationOutcome:
    remote_id = entity.remote_id or ""
    steps = {
        step: entity.steps.get(step)
        or StepOutcome(step, StepStatus.UNCHANGED, EntityType.LOCATION, name, remote_id=remote_id)
        for step in SHARED_STEPS
    }
    return LocationOutcome(name, remote_id, steps=steps, by_row=entity.by_row)
