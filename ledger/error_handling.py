"""The project's one exception tree, and the mapping from errors to reason codes.

    LedgerError                         anything `ledger` raises on purpose
    ├── UsageError                      bad configuration or input: exit 2, one line
    │   ├── ConfigError                 an environment variable has a bad value
    │   └── InputFileError              a CSV that cannot be ingested at all
    ├── InvariantError                  a checked invariant failed (`assertion_failure`)
    ├── ClaimLostError                  the row's claim token changed: another worker owns it
    └── WebexError                      a call to Webex did not give what the step needs
        ├── RetryableError              worth retrying: timeouts, connection errors, 429, 423, 5xx
        │   ├── TransportError          no HTTP answer (timeout, refused, dropped connection)
        │   │   └── RequestTimeoutError the request timed out
        │   └── RetryableStatusError    429, 423 or 5xx; carries `retry_after`
        ├── RetryExhaustedError         a retryable failure past MAX_RETRIES (`retry_exhausted`)
        ├── HTTPStatusError             a non-retryable 4xx
        └── UnexpectedResponseError     a success status without the fields it must carry

`connection_client` is the only module that turns httpx errors and HTTP statuses into these;
the retry policy and the steps name only these types. Every WebexError carries structured
fields (`http_status`, `error_code`, `tracking_id`, `reason_code`) so nothing parses messages.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ReasonCode(StrEnum):
    """Why a row is pending or rejected (SPEC sections 3 and 5)."""

    # rejected (before any call)
    MISSING_FIELD = "missing_field"
    INVALID_EMAIL = "invalid_email"
    INVALID_NAME = "invalid_name"
    INVALID_PHONE = "invalid_phone"
    INVALID_EXTENSION = "invalid_extension"
    INVALID_VALUE = "invalid_value"
    DUPLICATE_IN_FILE = "duplicate_in_file"
    LOCATION_CONFLICT = "location_conflict"
    MALFORMED_ROW = "malformed_row"
    # pending (a step could not be completed)
    RETRY_EXHAUSTED = "retry_exhausted"
    BAD_REQUEST = "bad_request"
    AUTH_INVALID = "auth_invalid"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    NUMBER_IN_USE = "number_in_use"
    EXTENSION_IN_USE = "extension_in_use"
    LOCATION_MOVE_REQUIRED = "location_move_required"
    LOCATION_UNDEFINED = "location_undefined"
    LICENSE_UNAVAILABLE = "license_unavailable"
    UNEXPECTED_RESPONSE = "unexpected_response"
    ASSERTION_FAILURE = "assertion_failure"
    HALF_APPLIED = "half_applied"
    DEPENDENCY_FAILED = "dependency_failed"


REJECTED_REASONS = frozenset(
    {
        ReasonCode.MISSING_FIELD,
        ReasonCode.INVALID_EMAIL,
        ReasonCode.INVALID_NAME,
        ReasonCode.INVALID_PHONE,
        ReasonCode.INVALID_EXTENSION,
        ReasonCode.INVALID_VALUE,
        ReasonCode.DUPLICATE_IN_FILE,
        ReasonCode.LOCATION_CONFLICT,
        ReasonCode.MALFORMED_ROW,
    }
)
PENDING_REASONS = frozenset(set(ReasonCode) - REJECTED_REASONS)

# Webex errorCode values that deserve their own reason (WEBEX_API.md, "Observed error codes").
WEBEX_EXTENSION_UNAVAILABLE = 4202
WEBEX_LOCATION_NOT_CALLING = 5620


class LedgerError(Exception):
    """Base of every error `ledger` raises on purpose."""


class UsageError(LedgerError):
    """Bad usage, configuration or input: the CLI prints the message and exits 2."""


class ConfigError(UsageError):
    """An environment variable (or .env entry) has a bad value."""


class InputFileError(UsageError):
    """The CSV cannot be ingested at all; nothing was written."""


class InvariantError(LedgerError):
    """A checked invariant failed. Becomes `assertion_failure` for the row, never a crash."""

    reason_code = ReasonCode.ASSERTION_FAILURE


class ClaimLostError(LedgerError):
    """The row's claim token changed: its lease expired and another worker took it."""


class WebexError(LedgerError):
    """A Webex call that did not give what the step needs."""

    reason_code: ReasonCode = ReasonCode.UNEXPECTED_RESPONSE

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        error_code: int | None = None,
        tracking_id: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.error_code = error_code
        self.tracking_id = tracking_id
        self.method = method
        self.path = path


class RetryableError(WebexError):
    """Worth another try after a wait."""

    reason_code = ReasonCode.RETRY_EXHAUSTED

    # True when the request may have reached Webex and been applied (the outcome of a write
    # is then unknown and the next try must look up before creating).
    maybe_applied: bool = True


class TransportError(RetryableError):
    """No HTTP answer: connection refused or dropped, protocol error."""


class RequestTimeoutError(TransportError):
    """The request timed out."""


class RetryableStatusError(RetryableError):
    """429, 423 or 5xx."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class RetryExhaustedError(WebexError):
    """A retryable failure that was still failing after MAX_RETRIES retries."""

    reason_code = ReasonCode.RETRY_EXHAUSTED

    def __init__(self, last: RetryableError, attempts: int) -> None:
        super().__init__(
            f"gave up after {attempts} attempts: {last.message}",
            http_status=last.http_status,
            error_code=last.error_code,
            tracking_id=last.tracking_id,
            method=last.method,
            path=last.path,
        )
        self.last = last
        self.attempts = attempts


class HTTPStatusError(WebexError):
    """A non-retryable 4xx. Its reason code follows from the status and Webex errorCode."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.reason_code = reason_for_status(self.http_status, self.error_code)


class UnexpectedResponseError(WebexError):
    """A success status whose body lacks what the step must read (an `id`, a list key...)."""

    reason_code = ReasonCode.UNEXPECTED_RESPONSE


def reason_for_status(http_status: int | None, error_code: int | None = None) -> ReasonCode:
    """Map a non-retryable HTTP status (and Webex errorCode) to a pending reason code."""
    if error_code == WEBEX_EXTENSION_UNAVAILABLE:
        return ReasonCode.EXTENSION_IN_USE
    if http_status == 401:
        return ReasonCode.AUTH_INVALID
    if http_status == 403:
        return ReasonCode.FORBIDDEN
    if http_status == 404:
        return ReasonCode.NOT_FOUND
    if http_status == 409:
        return ReasonCode.CONFLICT
    if http_status is not None and 400 <= http_status < 500:
        return ReasonCode.BAD_REQUEST
    return ReasonCode.UNEXPECTED_RESPONSE


def is_auth_failure(reason: ReasonCode | str | None) -> bool:
    """Whether a pending reason counts towards the circuit breaker (401/403)."""
    return reason in (ReasonCode.AUTH_INVALID, ReasonCode.FORBIDDEN)
