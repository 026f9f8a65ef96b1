"""How a row that cannot complete is recorded: its failed step and the row pending, with
compensation first where ENABLE_SAFE_COMPENSATION allows it, and, for the rows of a location
that could not be provisioned, the location's own reason."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from ledger import actions_registry as registry
from ledger.connection_client import WebexClient
from ledger.database import Ledger
from ledger.error_handling import InvariantError, WebexError
from ledger.locations import LocationOutcome
from ledger.records import (
    ClaimedRow,
    EntityType,
    Failure,
    RowStatus,
    StepName,
    StepOutcome,
    StepStatus,
    entity_of_step,
)
from ledger.state_store import finish_row, record_step, record_steps

logger = logging.getLogger(__name__)


def record_pending(
    ledger: Ledger,
    row: ClaimedRow,
    failure: Failure,
    error: Exception,
    earlier: Sequence[StepOutcome] = (),
) -> None:
    """Record the row pending: its failed step (where the step allows), then the row.
    `earlier`: the row's step records not made yet, made with the failed step's."""
    tracking_id = getattr(error, "tracking_id", None)
    logger.warning(
        "row pending",
        extra={
            "event": "row_pending",
            "step": failure.step,
            "reason_code": str(failure.reason),
            "http_status": failure.http_status,
            "tracking_id": tracking_id,
        },
    )
    entity_type, entity_key = entity_of_step(failure.step, row.user.email, row.user.location_name)
    try:
        record_steps(
            ledger,
            row,
            [
                *earlier,
                StepOutcome(
                    step=failure.step,
                    status=StepStatus.FAILED,
                    entity_type=entity_type,
                    entity_key=entity_key,
                    http_status=failure.http_status,
                    message=failure.message,
                    tracking_id=tracking_id,
                ),
            ],
        )
    except InvariantError:
        pass
    finish_row(
        ledger,
        row,
        status=RowStatus.PENDING,
        reason_code=failure.reason,
        reason_message=failure.message,
        reason_step=failure.step,
        http_status=failure.http_status,
    )


def compensate(
    ledger: Ledger, client: WebexClient, row: ClaimedRow, person_id: str, failure: Failure
) -> Failure:
    """Delete the user this row created in this run (ENABLE_SAFE_COMPENSATION)."""
    try:
        registry.delete_person(client, person_id)
    except WebexError as error:
        logger.error(
            "compensation failed", extra={"event": "compensation_failed", "step": StepName.USER}
        )
        return replace(
            failure,
            message=f"{failure.message}; deleting the user it created failed: {error.message}",
        )
    logger.warning("compensated: user deleted", extra={"event": "compensated"})
    record_step(
        ledger,
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
    return replace(
        failure,
        message=f"{failure.message}; the user created in this run was deleted (compensation)",
    )


def location_pending(location: LocationOutcome, failure: Failure) -> registry.StepPending:
    """Why a row of a location that failed is pending: the location's own reason code, for every
    row it stopped (so that `ledger retry --reason CODE` after fixing that cause brings them all
    back), with a message naming the location. A location that failed without a reason code of
    its own reaches here as `dependency_failed` (`state_store.entities`)."""
    message = failure.message
    if f"location {location.name!r}" not in message:
        message = f"location {location.name!r}: {message}"
    return registry.StepPending(failure.reason, message, failure.http_status)
