"""The bearer token every request carries, and its renewal after a 401.

A personal token lasts 12 hours and a service app's 14 days; a long run can outlive either.
With a service app's or integration's credentials (`WEBEX_CLIENT_ID`, `WEBEX_CLIENT_SECRET`,
`WEBEX_REFRESH_TOKEN`), `AccessToken.renew_after_401()` asks Webex for a new access token with the
OAuth refresh grant (`POST /access_token`, form-encoded; not in the OpenAPI files, see
WEBEX_API.md "Cross-cutting"), and the client resends the refused request with it.

* **Single flight.** Every token has a generation number. A request remembers the generation it
  was sent with; after its 401 it asks for a renewal of *that* generation. The renewal runs under
  one lock: the first thread in refreshes, threads that were refused with the same token wait on
  the lock and then find a newer generation, so they only resend. Sixteen threads refused at once
  cause one refresh.
* **One try per generation.** A failed renewal (the endpoint answers 400 or 401, or the network
  fails past the client's retries) is not tried again for that token: every request refused with
  it keeps its 401, which becomes `auth_invalid`, for the circuit breaker to count. A renewed
  token may be renewed once in its turn, so a run lasting longer than two tokens still goes on.
* **Secrets stay secret.** The client secret and the refresh token are registered with the log
  redaction when this object is built, and each new access token (and refresh token) as soon as
  it is read from the answer, before it is stored or used. The grant's form body is never logged
  (the client logs method, path and status only), and nothing here is written to the ledger:
  a refresh token Webex hands back replaces the old one in memory only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from pydantic import SecretStr

from ledger.config import Settings
from ledger.error_handling import WebexError
from ledger.logs import register_secret
from ledger.responses import WebexResponse, unexpected_response

logger = logging.getLogger(__name__)

# Sends the refresh grant (form fields) to `POST /access_token`, with the client's retries.
GrantSender = Callable[[Mapping[str, str]], WebexResponse]


@dataclass(frozen=True, slots=True)
class RefreshCredentials:
    """What the refresh grant needs; `None` from `from_settings` when refresh is not set up."""

    client_id: str
    client_secret: SecretStr
    refresh_token: SecretStr

    @classmethod
    def from_settings(cls, settings: Settings) -> RefreshCredentials | None:
        # The settings refuse a partial set, so one missing value means none was given.
        client_id = settings.WEBEX_CLIENT_ID
        client_secret = settings.WEBEX_CLIENT_SECRET
        refresh_token = settings.WEBEX_REFRESH_TOKEN
        if client_id is None or client_secret is None or refresh_token is None:
            return None
        return cls(client_id, client_secret, refresh_token)


def _one_word(value: str) -> bool:
    return bool(value) and not any(char.isspace() for char in value)


class AccessToken:
    """The current token and its generation; thread-safe. Renewal needs credentials and a sender."""

    def __init__(
        self,
        token: str,
        *,
        credentials: RefreshCredentials | None = None,
        send_grant: GrantSender | None = None,
    ) -> None:
        register_secret(token)
        # Two locks, so that no network call is made under the one every request reads:
        # `_state_lock` guards the token, its generation and the count, briefly; `_renewal_lock`
        # makes renewals single-flight and is held while the grant is sent.
        self._state_lock = threading.Lock()
        self._renewal_lock = threading.Lock()
        self._token = token
        self._generation = 0
        self._refreshes = 0
        self._tried_generation: int | None = None
        # Kept as SecretStr (masked in any repr) until the grant's form is built.
        self._credentials = credentials
        self._send_grant = send_grant if credentials is not None else None
        if credentials is not None:
            register_secret(credentials.client_secret.get_secret_value())
            register_secret(credentials.refresh_token.get_secret_value())

    def __repr__(self) -> str:
        return f"AccessToken(generation={self.current()[0]}, renewable={self.renewable})"

    @property
    def renewable(self) -> bool:
        return self._send_grant is not None

    @property
    def refreshes(self) -> int:
        with self._state_lock:
            return self._refreshes

    def current(self) -> tuple[int, str]:
        """The generation and value of the token to send now."""
        with self._state_lock:
            return self._generation, self._token

    def renew_after_401(self, generation: int) -> bool:
        """After a 401 for the token of `generation`: whether a newer token is there to resend.

        Refreshes at most once per generation, whichever thread asks first; the others wait for
        that refresh and resend, or keep their 401 if it failed.
        """
        if self._credentials is None or self._send_grant is None:
            return False
        with self._renewal_lock:
            if generation != self.current()[0]:
                return True  # renewed since this request was sent: resend with the new token
            if self._tried_generation == generation:
                return False  # this token's one renewal was tried and failed
            self._tried_generation = generation
            return self._refresh(self._credentials, self._send_grant)

    def _refresh(self, credentials: RefreshCredentials, send_grant: GrantSender) -> bool:
        """Under the renewal lock: send the grant, take the new token; False if that failed."""
        old_refresh_token = credentials.refresh_token.get_secret_value()
        form = {
            "grant_type": "refresh_token",
            "client_id": credentials.client_id,
            "client_secret": credentials.client_secret.get_secret_value(),
            "refresh_token": old_refresh_token,
        }
        try:
            answer = send_grant(form)
            token, refresh_token = self._read_grant(answer)
        except WebexError as error:
            logger.error(
                f"could not renew the access token: {error.message}",
                extra={
                    "event": "token_refresh_failed",
                    "http_status": error.http_status,
                    "tracking_id": error.tracking_id,
                    "method": error.method,
                    "path": error.path,
                },
            )
            return False
        rotated = refresh_token is not None and refresh_token != old_refresh_token
        if refresh_token is not None:
            self._credentials = replace(credentials, refresh_token=SecretStr(refresh_token))
        with self._state_lock:
            self._token = token
            self._generation += 1
            self._refreshes += 1
            generation = self._generation
        expires_in = (answer.body or {}).get("expires_in")
        logger.info(
            "renewed the access token after HTTP 401",
            extra={
                "event": "token_refreshed",
                "generation": generation,
                "expires_in_s": expires_in if isinstance(expires_in, int | float) else None,
                "refresh_token_rotated": rotated,
                "tracking_id": answer.tracking_id,
            },
        )
        return True

    @staticmethod
    def _read_grant(answer: WebexResponse) -> tuple[str, str | None]:
        """The new access token and refresh token (if one came back), registered as secrets."""
        token = answer.require_str("access_token")
        register_secret(token)  # before anything else can carry it
        body = answer.body or {}
        refresh_token = body.get("refresh_token")
        if isinstance(refresh_token, str) and refresh_token:
            register_secret(refresh_token)
        else:
            refresh_token = None
        if not _one_word(token) or (refresh_token is not None and not _one_word(refresh_token)):
            raise unexpected_response("a token with whitespace inside", answer)
        return token, refresh_token
