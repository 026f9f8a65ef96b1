"""What every step shares: the `Plan` a decision makes, `StepPending`, the create-once protocol,
and the one mapping from an error to the `Failure` a row or a location records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from ledger.connection_client import WebexClient
from ledger.error_handling import (
    WEBEX_EXTENSION_UNAVAILABLE,
    HTTPStatusError,
    ReasonCode,
    RetryableError,
    RetryExhaustedError,
    UnexpectedResponseError,
    WebexError,
)
from ledger.records import Failure, StepName, StepOutcome, StepStatus

JSON = dict[str, Any]
Action = Literal["create", "update", "unchanged", "pending"]


@dataclass(frozen=True)
class Plan:
    """What a step would do, from what its lookup saw."""

    action: Action
    remote_id: str | None = None
    body: JSON | None = None
    reason: ReasonCode | None = None
    message: str | None = None
    writes: tuple[tuple[str, str, JSON], ...] = ()  # settings: (method, path, body) each


class StepPending(Exception):
    """A step cannot complete for a reason that is not an HTTP error (pending with `reason`)."""

    def __init__(self, reason: ReasonCode, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.http_status = http_status


def failure_of(error: Exception, step: StepName) -> Failure:
    """The failure of `step` that `error` stands for (anything unforeseen: an assertion)."""
    if isinstance(error, StepPending):
        return Failure(error.reason, error.message, error.http_status, step)
    if isinstance(error, WebexError):
        return Failure(ReasonCode(error.reason_code), error.message, error.http_status, step)
    return Failure(ReasonCode.ASSERTION_FAILURE, str(error), None, step)


def id_of(item: JSON) -> str:
    value = item.get("id")
    if not isinstance(value, str) or not value:
        raise UnexpectedResponseError("an item without an id")
    return value


@dataclass(frozen=True)
class Created:
    """What a create came to. `outcome` is what to record. `found` is set when the create's own
    answer did not give the entity (a timeout, a 5xx, a dropped connection, "400 but created", a
    2xx without an id, a 409 "already exists") and a lookup found it: it is the entity as that
    lookup saw it, which may lack part of what was sent (Webex's "400 but created" can make a
    person without its calling part). The step compares it with the row before trusting it."""

    outcome: StepOutcome
    found: JSON | None = None


def create_once(
    client: WebexClient,
    started: StepOutcome,
    mark_started: Callable[[StepOutcome], None],
    send: Callable[[], StepOutcome],
    find: Callable[[], JSON | None],
    max_attempts: int,
) -> Created:
    """Create something exactly once although a create's outcome can be unknown.

    Before each POST the step is recorded `started` (the `started` outcome, committed by
    `mark_started`). A failure that may have been applied (a timeout, a 5xx, a dropped
    connection), Webex's "400 but created" and a 409 "already exists" are followed by a lookup
    (`find`, which settles where Webex lags); only a lookup that still misses after a failure
    that may not have been applied lets the create be sent again, at most `max_attempts` times
    in all. Whatever a lookup found comes back as `Created.found`, to be compared with the row.
    """

    def found_after(
        found: JSON, status: StepStatus, error: WebexError, http_status: int | None, message: str
    ) -> Created:
        outcome = replace(
            started,
            status=status,
            remote_id=id_of(found),
            http_status=http_status,
            tracking_id=error.tracking_id,
            message=message,
        )
        return Created(outcome, found)

    last: RetryableError | None = None
    for attempt in range(1, max_attempts + 1):
        mark_started(started)
        try:
            return Created(send())
        except HTTPStatusError as error:
            if error.http_status == 409:
                # It exists: made by an earlier try of this call whose answer was lost (then
                # this row created it), or before this call (then it is recorded as found).
                found = find()
                if found is not None:
                    if last is not None:
                        message = "created; the answer was lost, then Webex answered 409"
                        return found_after(found, StepStatus.CREATED, error, 409, message)
                    message = "already existed (Webex answered 409)"
                    return found_after(found, StepStatus.UNCHANGED, error, 409, message)
                raise
            if error.http_status != 400 or error.error_code == WEBEX_EXTENSION_UNAVAILABLE:
                raise
            found = find()
            if found is not None:
                message = "created although Webex answered 400"
                return found_after(found, StepStatus.CREATED, error, 400, message)
            raise
        except UnexpectedResponseError as error:
            # A 2xx without the fields it must carry: the create happened, its id is unknown.
            found = find()
            if found is not None:
                message = "created; the answer lacked the id"
                return found_after(found, StepStatus.CREATED, error, error.http_status, message)
            raise
        except RetryableError as error:
            last = error
            found = find()
            if found is not None:
                message = f"created; the answer was lost ({error.message})"
                return found_after(found, StepStatus.CREATED, error, None, message)
            if attempt < max_attempts:
                client.backoff_wait(attempt, getattr(error, "retry_after", None))
    if last is None:
        raise UnexpectedResponseError(f"{started.step}: no create attempt was made")
    raise RetryExhaustedError(last, max_attempts)


def completed(created: Created, plan: Plan, update: Callable[[Plan], StepOutcome]) -> StepOutcome:
    """The outcome of a create whose entity a lookup found (`created.found`), once compared with
    what the row asks for through the step's own decide (`plan`): as found when it matches,
    completed by the plan's update when it does not. A plan that cannot go on is pending."""
    outcome = created.outcome
    if plan.action == "pending":
        raise StepPending(
            plan.reason or ReasonCode.CONFLICT,
            f"{outcome.message}, but {plan.message}",
            outcome.http_status,
        )
    if plan.action != "update":
        return outcome
    updated = update(plan)
    return replace(
        outcome,
        status=StepStatus.UPDATED if outcome.status == StepStatus.UNCHANGED else outcome.status,
        http_status=updated.http_status,
        tracking_id=updated.tracking_id,
        message=f"{outcome.message}; found incomplete, completed by an update",
    )
