"""Bearer tokens that expire, and the OAuth refresh endpoint `POST /v1/access_token`.

A long run outlives its access token: Webex then answers 401 mid-run, and a client holding an
integration's or service app's refresh token gets a new access token and carries on. With
`FaultConfig.token_ttl_s` set, a token expires that many seconds after the simulator first saw
it (or issued it); 0, the default, lets tokens live for ever.

The refresh endpoint is not in the OpenAPI files; Webex's integration and service-app guides
give it: a form-encoded (`application/x-www-form-urlencoded`) body with `grant_type=
refresh_token`, `client_id`, `client_secret` and `refresh_token`, answered with JSON
`access_token`, `expires_in`, `refresh_token`, `refresh_token_expires_in` and `token_type`.
Every refresh issues a new access token; the refresh token given back is the same one, as Webex
is documented to do. The simulator knows one OAuth client (`OAuthClient`: fixed defaults that
`ledger sim` can override), shown with the refresh count under `tokens` in `GET /_sim/state`.

Faults. The refresh answers with the latency of every request, but by default it is kept out of
the rate limit, hangs and random 5xx (`token_refresh_faults` lets them in): Webex's token service
can fail, yet a test of the API faults should not also be a test of refresh retries. A refresh is
never counted as a write: it changes nothing in the org, so a read-only command that refreshes
its token still makes zero writes.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qsl

from ledger.simulator.bodies import Reply
from ledger.simulator.errors import (
    refresh_token_invalid,
    token_client_invalid,
    token_request_invalid,
)
from ledger.simulator.messages import SimRequest

TOKEN_PATH = "/v1/access_token"
FORM_TYPE = "application/x-www-form-urlencoded"
# The lifetimes Webex gives integration and service-app tokens.
ACCESS_TOKEN_LIFETIME_S = 14 * 24 * 3600
REFRESH_TOKEN_LIFETIME_S = 90 * 24 * 3600


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """The one OAuth client the simulator's token endpoint accepts."""

    client_id: str = "sim-client-id"
    client_secret: str = "sim-client-secret"
    refresh_token: str = "sim-refresh-token"


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class TokenBook:
    """Which bearer tokens are accepted and until when, and the refreshes that issued new ones.

    Not thread-safe on its own: the Simulator calls it under its one lock.
    """

    def __init__(self, fixed_token: str | None, oauth: OAuthClient, seed: int) -> None:
        """`fixed_token`: besides issued tokens, the only one accepted (None accepts any)."""
        self.oauth = oauth
        self._fixed = fixed_token
        self._seed = seed
        self._rng = random.Random(f"tokens-{seed}")
        self._issued: set[str] = set()
        self._first_seen: dict[str, float] = {}
        self.refreshes = 0
        self.expired_answers = 0

    def accepts(self, header: str | None, ttl_s: float, now: float) -> bool:
        """Whether this Authorization header carries a valid token that has not expired."""
        token = bearer_token(header)
        if token is None:
            return False
        if self._fixed is not None and token != self._fixed and token not in self._issued:
            return False
        seen = self._first_seen.setdefault(token, now)
        if ttl_s > 0 and now - seen >= ttl_s:
            self.expired_answers += 1
            return False
        return True

    def refresh(self, request: SimRequest, ttl_s: float, now: float) -> Reply:
        """POST /v1/access_token: check the form, issue a new access token."""
        form = _form(request)
        grant = form.get("grant_type")
        if not grant:
            raise token_request_invalid("invalid_request: grant_type is required.")
        if grant != "refresh_token":
            raise token_request_invalid(f"unsupported_grant_type: '{grant}' is not supported.")
        oauth = self.oauth
        if (form.get("client_id"), form.get("client_secret")) != (
            oauth.client_id,
            oauth.client_secret,
        ):
            raise token_client_invalid()
        if form.get("refresh_token") != oauth.refresh_token:
            raise refresh_token_invalid()
        token = self._new_token()
        self._issued.add(token)
        self._first_seen[token] = now
        self.refreshes += 1
        lifetime = math.ceil(ttl_s) if ttl_s > 0 else ACCESS_TOKEN_LIFETIME_S
        return Reply(
            200,
            {
                "access_token": token,
                "expires_in": lifetime,
                "refresh_token": oauth.refresh_token,
                "refresh_token_expires_in": REFRESH_TOKEN_LIFETIME_S,
                "token_type": "Bearer",
            },
            (("Cache-Control", "no-store"),),
        )

    def reset(self) -> None:
        """Forget when tokens were first seen and the counts; issued tokens stay valid."""
        self._first_seen.clear()
        self._rng = random.Random(f"tokens-{self._seed}")
        self.refreshes = 0
        self.expired_answers = 0

    def snapshot(self, ttl_s: float) -> dict[str, object]:
        """The `tokens` part of `GET /_sim/state`: how to refresh, and what happened."""
        return {
            "ttl_s": ttl_s,
            "refresh_url_path": TOKEN_PATH,
            "client_id": self.oauth.client_id,
            "client_secret": self.oauth.client_secret,
            "refresh_token": self.oauth.refresh_token,
            "refreshes": self.refreshes,
            "issued": len(self._issued),
            "expired_answers": self.expired_answers,
        }

    def _new_token(self) -> str:
        while True:
            token = "SIM" + uuid.UUID(int=self._rng.getrandbits(128), version=4).hex
            if token not in self._issued and token not in self._first_seen:
                return token


def _form(request: SimRequest) -> dict[str, str]:
    """The form fields of the body; a body of another type has none (so they are missing)."""
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        return {}
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    return dict(parse_qsl(text, keep_blank_values=True))
