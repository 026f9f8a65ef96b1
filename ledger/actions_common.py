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


def create_once(
    client: WebexClient,
    started: StepOutcome,
    mark_started: Callable[[StepOutcome], None],
    send: Callable[[], StepOutcome],
    find: Callable[[], str | None],
    max_attempts: int,
    settle_s: float,
) -> StepOutcome:
    """Create something exactly once although a create's outcome can be unknown.

    Before each POST the step is recorded `started` (the `started` outcome, committed by
    `mark_started`). A failure that may have been applied (a timeout, a 5xx, a dropped
    connection) and Webex's "400 but created" are followed by a lookup; only a lookup that still
    misses lets the create be sent again, at most `max_attempts` times in all.
    """

    def found_created(
        remote_id: str, http_status: int | None, tracking_id: str | None, message: str
    ) -> StepOutcome:
        return replace(
            started,
            status=StepStatus.CREATED,
            remote_id=remote_id,
            http_status=http_status,
            tracking_id=tracking_id,
            message=message,
        )

    last: RetryableError | None = None
    for attempt in range(1, max_attempts + 1):
        mark_started(started)
        try:
            return send()
        except HTTPStatusError as error:
            if error.http_status != 400 or error.error_code == WEBEX_EXTENSION_UNAVAILABLE:
                raise
            found = find()
            if found is not None:
                return found_created(
                    found,
                    error.http_status,
                    error.tracking_id,
                    "created although Webex answered 400",
                )
            raise
        except UnexpectedResponseError as error:
            # A 2xx without the fields it must carry: the create happened, its id is unknown.
            found = find()
            if found is not None:
                return found_created(
                    found, error.http_status, error.tracking_id, "created; the answer lacked the id"
                )
            raise
        except RetryableError as error:
            last = error
            found = find()
            if found is not None:
                return found_created(
                    found,
                    None,
                    error.tracking_id,
                    f"created; the answer was lost ({error.message})",
                )
            if attempt < max_attempts:
                client.backoff_wait(attempt, getattr(error, "retry_after", None))
    if last is None:
        raise UnexpectedResponseError(f"{started.step}: no create attempt was made")
    raise RetryExhaustedError(last, max_attempts)
