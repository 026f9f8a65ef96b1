"""Numbers added to a location many at a time: `POST /telephony/config/locations/{id}/numbers`
carries a list, so a batch adds every number a location lacks in one request (split above
`BULK_NUMBERS_MAX`), and each number comes back with its own outcome.

A request is refused whole when one of its numbers is (not E.164, in another location): when
Webex's answer names exactly one of the numbers sent, that one is set aside as refused and the
others are sent again; otherwise the request is split in halves until each refusal stands
alone. The number of requests is bounded (at most about twice the numbers). Adding a number
already there is ignored by Webex, so a request is safe to resend after a timeout or a 5xx;
when its answer is lost for good, the location's inventory, read again, tells which numbers
are there.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ledger.connection_client import WebexClient
from ledger.error_handling import (
    HTTPStatusError,
    RetryableError,
    RetryExhaustedError,
    UnexpectedResponseError,
    WebexError,
)
from ledger.listings import NumberInventory

# The files give no cap for DID numbers in one add (mobile numbers: 20); 500 is the cap they
# give DEACTIVATE on the same path, and what a batch of 500 rows can need at most anyway.
BULK_NUMBERS_MAX = 500
# 4xx answers that refuse a request because of what it carries (which numbers may be named).
_REFUSALS = (400, 409, 422)


@dataclass(frozen=True)
class NumberAdded:
    """A number that is in the location now: the answer that said so, and how it was known."""

    http_status: int | None
    tracking_id: str | None
    message: str | None = None


NumberResult = NumberAdded | WebexError


def add_numbers(
    client: WebexClient,
    location_id: str,
    numbers: Sequence[str],
    *,
    reread: Callable[[], NumberInventory | None],
) -> dict[str, NumberResult]:
    """Add `numbers` (E.164) to the location; each number's outcome: added, or the error that
    refused it. `reread` reads the location's inventory afresh (None: it could not)."""
    wanted = list(dict.fromkeys(numbers))
    chunks = deque(
        wanted[start : start + BULK_NUMBERS_MAX]
        for start in range(0, len(wanted), BULK_NUMBERS_MAX)
    )
    results: dict[str, NumberResult] = {}
    for _ in range(2 * len(wanted) + len(chunks)):
        if not chunks:
            break
        chunk = chunks.popleft()
        try:
            response = client.request(
                "POST",
                f"/telephony/config/locations/{location_id}/numbers",
                json={"phoneNumbers": chunk, "state": "ACTIVE"},
                ok=(200, 201, 204),
                safe_to_retry=True,
            )
        except HTTPStatusError as error:
            if error.http_status not in _REFUSALS:
                results.update(dict.fromkeys(chunk, error))
                continue
            if len(chunk) == 1:
                results[chunk[0]] = error
                continue
            named = [number for number in chunk if _names(error.message, number)]
            if len(named) == 1:
                results[named[0]] = error
                chunks.appendleft([number for number in chunk if number != named[0]])
            else:
                middle = len(chunk) // 2
                chunks.extendleft((chunk[middle:], chunk[:middle]))
            continue
        except (RetryExhaustedError, RetryableError, UnexpectedResponseError) as error:
            results.update(_after_lost_answer(chunk, error, reread()))
            continue
        added = NumberAdded(response.status_code, response.tracking_id)
        results.update(dict.fromkeys(chunk, added))
    for chunk in chunks:  # the bound above was reached: what is left was not sent
        lost = UnexpectedResponseError(f"number add to location {location_id}: too many refusals")
        results.update(dict.fromkeys(chunk, lost))
    return results


def _names(message: str, number: str) -> bool:
    """Whether an error message names `number` (with or without its `+`, not inside another).
    Only Webex's own text is searched, not the method and path the message starts with."""
    detail = message.partition(" answered ")[2] or message
    digits = re.escape(number.lstrip("+"))
    return re.search(rf"(?<!\d){digits}(?!\d)", detail) is not None


def _after_lost_answer(
    chunk: list[str], error: WebexError, inventory: NumberInventory | None
) -> dict[str, NumberResult]:
    """The outcome of numbers whose add was sent but not answered: there now, or not added."""
    outcome: dict[str, NumberResult] = {}
    for number in chunk:
        if inventory is not None and inventory.number(number) is not None:
            message = f"added; the answer was lost ({error.message})"
            outcome[number] = NumberAdded(None, error.tracking_id, message)
        else:
            outcome[number] = error
    return outcome
