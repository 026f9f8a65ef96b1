"""The one read `work` makes before it claims a row, and what its failure means.

`work` needs the calling license's id anyway (GET /licenses, which needs an admin's read
scopes). Asked for before any row is claimed, that lookup proves the rest too: WEBEX_BASE_URL
answers like Webex, and the token is valid, has the scopes, and belongs to an org. When it
fails, every row would fail the same way: against a closed port each row would spend the
whole retry budget and end pending `retry_exhausted`; against an expired token a batch's rows
would be spent before the circuit breaker trips. So `work` stops at once instead, with every
row still ready, and one line naming the likely cause (exit 3, like the circuit breaker).

The lookup's answer is not thrown away: the first batch uses it, so the check costs no request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import httpx

from ledger.connection_client import WebexClient
from ledger.error_handling import RetryExhaustedError, TransportError, WebexError
from ledger.row_runner import LicenseLookup, lookup_license

UNTOUCHED: Final = "nothing was claimed, every row is still ready"


@dataclass(frozen=True)
class Preflight:
    """The license lookup `work` starts from; `failure` says why it cannot start at all."""

    license: LicenseLookup
    failure: str | None = None


def preflight(
    client: WebexClient, license_name: str, base_url: str, *, renewable: bool = False
) -> Preflight:
    """Look the calling license up; a failure of that read is a failure of the whole setup.

    A license that is missing or has no unit left is not one: the rows it stops say so, each.
    `renewable`: refresh credentials are set (the client already tried them on a 401).
    """
    found = lookup_license(client, license_name)
    if found.error is None:
        return Preflight(found)
    return Preflight(found, likely_cause(found.error, base_url, renewable=renewable))


def likely_cause(error: WebexError, base_url: str, *, renewable: bool = False) -> str:
    """One line for the operator: which setting to check, and why."""
    url = _shown_url(base_url)
    if isinstance(error, RetryExhaustedError):
        if isinstance(error.last, TransportError):
            return (
                f"WEBEX_BASE_URL {url} cannot be reached ({error.last.message}; "
                f"{error.attempts} attempts): check the URL and the network; {UNTOUCHED}"
            )
        return (
            f"WEBEX_BASE_URL {url} kept failing ({error.message}): Webex may be down, or the "
            f"URL points elsewhere; {UNTOUCHED}"
        )
    if error.http_status == 401 and renewable:
        return (
            "Webex refused the token (401 on GET /licenses), even after renewing it: check "
            "WEBEX_ACCESS_TOKEN, WEBEX_CLIENT_ID, WEBEX_CLIENT_SECRET and WEBEX_REFRESH_TOKEN; "
            f"{UNTOUCHED}"
        )
    if error.http_status == 401:
        return (
            "Webex refused the token (401 on GET /licenses): WEBEX_ACCESS_TOKEN is invalid or "
            f"expired; {UNTOUCHED}"
        )
    if error.http_status == 403:
        return (
            "Webex answered 403 on GET /licenses: the token in WEBEX_ACCESS_TOKEN lacks admin "
            f"scopes or an admin role, or belongs to another org; {UNTOUCHED}"
        )
    return (
        f"WEBEX_BASE_URL {url} does not answer like the Webex API ({error.message}): it should "
        f"be the API root, like https://webexapis.com/v1; {UNTOUCHED}"
    )


def _shown_url(base_url: str) -> str:
    # A URL is not secret, but a user:password in it would be.
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL:
        return "(not a URL)"
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))
