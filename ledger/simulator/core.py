"""The transport-independent simulator: `Simulator.handle(SimRequest) -> SimResponse | Fault`.

One lock guards the whole state, the counters and the random generator, so the socket server's
threads and an in-process client see one consistent org. Per /v1 request the order is what a
client meets in front of and inside Webex: forced auth failure or a bad or expired token (401),
the rate limit (429), a hang, a random 5xx (nothing applied), the route itself, and after a
successful write the "applied but answered badly" faults (5xx, dropped connection, 400 on
POST /people, which may leave the person without its calling part). The token endpoint
`POST /v1/access_token` needs no bearer token and meets those gateway faults only when
`token_refresh_faults` says so (see `tokens`).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from ledger.simulator import admin, errors, people
from ledger.simulator.bodies import Call, Reply
from ledger.simulator.errors import ApiError
from ledger.simulator.faults import FaultConfig, FaultInjector
from ledger.simulator.messages import Fault, HeaderPairs, SimRequest, SimResponse
from ledger.simulator.routes import Match, Route, match
from ledger.simulator.seeding import OrgSeeding
from ledger.simulator.state import OrgStore
from ledger.simulator.tokens import TOKEN_PATH, OAuthClient, TokenBook
from ledger.simulator.transport import mock_transport

JSON_TYPE = ("Content-Type", "application/json;charset=UTF-8")
UNKNOWN_ROUTE = "unknown"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """A /v1 request as received, with its outcome: what tests assert client behaviour on."""

    method: str
    path: str
    route: str
    query: tuple[tuple[str, str], ...]
    body: object
    status: int | str
    tracking_id: str


class Simulator(OrgSeeding):
    """A Webex org in memory that answers the subset of the API `ledger` uses."""

    def __init__(
        self,
        *,
        faults: FaultConfig | None = None,
        token: str | None = None,
        oauth: OAuthClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        request_log_size: int = 10_000,
    ) -> None:
        """`token`: the only bearer token accepted besides those the token endpoint issued
        (None accepts any non-empty one); `oauth`: the client that may refresh tokens."""
        self._lock = threading.RLock()
        self._clock = clock
        self._injector = FaultInjector(faults or FaultConfig(), clock)
        self._tokens = TokenBook(token, oauth or OAuthClient(), self._injector.config.seed)
        self._log: deque[LoggedRequest] = deque(maxlen=request_log_size)
        self._tracking = itertools.count(1)
        self._store = OrgStore(self._injector.config.seed, clock)
        self._by_route: dict[str, Counter[str]] = {}
        self._total = 0
        self._writes = 0
        self._write_requests = 0

    # -- the one entry point -------------------------------------------------------------

    def handle(self, request: SimRequest) -> SimResponse | Fault:
        """Answer one request (admin paths under /_sim, everything else as Webex would)."""
        if request.path == "/_sim" or request.path.startswith("/_sim/"):
            return admin.handle_admin(self, request)
        with self._lock:
            tracking_id = self._tracking_id()
            delay = self._injector.latency_s()
            found = match(request.method, request.path)
            route_name = found.route.name if found.route else UNKNOWN_ROUTE
            if request.path == TOKEN_PATH:
                route_name = f"{request.method} {TOKEN_PATH}"
                outcome = self._refresh(request, tracking_id, delay)
            else:
                if request.method in WRITE_METHODS:
                    self._write_requests += 1
                outcome = self._answer(request, found, tracking_id, delay)
            status: int | str = outcome.status if isinstance(outcome, SimResponse) else outcome.kind
            self._record(request, route_name, status, tracking_id)
            return outcome

    def transport(self) -> httpx.MockTransport:
        """An httpx transport to this simulator in-process, for `httpx.Client(transport=...)`."""
        return mock_transport(self.handle)

    # -- faults, reset and observation -----------------------------------------------------

    @property
    def faults(self) -> FaultConfig:
        """The fault configuration in force."""
        with self._lock:
            return self._injector.config

    def set_faults(self, config: FaultConfig) -> None:
        """Swap the fault configuration at run time (a new seed restarts the random sequence)."""
        with self._lock:
            self._injector.reconfigure(config)

    def reset(self) -> None:
        """Empty the org, the counters and the log; rewind the random sequence. Faults stay."""
        with self._lock:
            self._store = OrgStore(self._injector.config.seed, self._clock)
            self._injector.reset()
            self._tokens.reset()
            self._log.clear()
            self._by_route = {}
            self._total = 0
            self._writes = 0
            self._write_requests = 0

    @property
    def write_count(self) -> int:
        """POST/PUT/PATCH/DELETE requests that changed the org, whatever they were answered
        (a write applied then answered 5xx, dropped or 400 counts; one refused does not)."""
        with self._lock:
            return self._writes

    @property
    def write_request_count(self) -> int:
        """Every POST/PUT/PATCH/DELETE request under /v1, applied or not, whatever its answer
        (refused, rate-limited, unknown path...): zero means the client attempted no write.
        Token refreshes are not writes and are counted apart (`token_refresh_count`)."""
        with self._lock:
            return self._write_requests

    @property
    def token_refresh_count(self) -> int:
        """Successful POST /v1/access_token refreshes."""
        with self._lock:
            return self._tokens.refreshes

    @property
    def total_requests(self) -> int:
        """Every /v1 request received, whatever its answer."""
        with self._lock:
            return self._total

    @property
    def request_log(self) -> list[LoggedRequest]:
        """The most recent /v1 requests (bounded by `request_log_size`), oldest first."""
        with self._lock:
            return list(self._log)

    def requests_by_route(self) -> dict[str, dict[str, int]]:
        """Counts per `METHOD /v1/template` (or `unknown`) and status (or `hang`/`drop`)."""
        with self._lock:
            return {route: dict(counts) for route, counts in self._by_route.items()}

    def users_by_email(self) -> dict[str, int]:
        """How many people hold each email now (any value above 1 would be a duplicate)."""
        with self._lock:
            return dict(Counter(person.email for person in self._store.people.values()))

    def people_created_by_email(self) -> dict[str, int]:
        """How many times POST /people created a person per email (seeding not counted).

        Unlike `users_by_email`, a delete does not lower it: a client that created, deleted
        and created again shows 2 here.
        """
        with self._lock:
            return dict(self._store.people_created)

    def locations_by_name(self) -> dict[str, int]:
        """How many locations bear each name now."""
        with self._lock:
            return dict(Counter(loc.name for loc in self._store.locations.values()))

    def locations_created_by_name(self) -> dict[str, int]:
        """How many times POST /locations created a location per name (seeding not counted)."""
        with self._lock:
            return dict(self._store.locations_created)

    def state_snapshot(self) -> dict[str, object]:
        """What `GET /_sim/state` answers."""
        with self._lock:
            store = self._store
            return {
                "users_by_email": self.users_by_email(),
                "people_created_by_email": dict(store.people_created),
                "locations_by_name": self.locations_by_name(),
                "locations_created_by_name": dict(store.locations_created),
                "counts": {
                    "people": len(store.people),
                    "locations": len(store.locations),
                    "calling_locations": sum(
                        1 for loc in store.locations.values() if loc.calling_enabled
                    ),
                    "numbers": len(store.numbers),
                },
                "writes": self._writes,
                "write_requests": self._write_requests,
                "requests_total": self._total,
                "requests_by_route": self.requests_by_route(),
                "tokens": self._tokens.snapshot(self._injector.config.token_ttl_s),
                "faults": self._injector.config.model_dump(),
            }

    # -- the request pipeline --------------------------------------------------------------

    def _answer(
        self, request: SimRequest, found: Match, tracking_id: str, delay: float
    ) -> SimResponse | Fault:
        config = self._injector.config
        call: Call | None = None
        try:
            if config.auth_failure == 403:
                raise errors.forbidden()
            authorization = request.header("authorization")
            if config.auth_failure == 401 or not self._tokens.accepts(
                authorization, config.token_ttl_s, self._clock()
            ):
                raise errors.unauthorized()
            hang = self._gateway_faults(delay)
            if hang is not None:
                return hang
            route = found.route
            if route is None:
                if found.path_known:
                    raise errors.method_not_allowed(request.method)
                raise errors.unknown_path(request.path)
            call = Call(self._store, request, found.params, self._clock(), config.lookup_delay_s)
            reply = route.handler(call)
            if call.changed:
                self._writes += 1
                after = self._after_write(route, reply, tracking_id, delay)
                if after is not None:
                    return after
        except ApiError as error:
            if call is not None and call.changed:
                self._writes += 1  # a route that changed the org before refusing still wrote
            return self._error_response(error, tracking_id, delay)
        return self._response(reply, tracking_id, delay)

    def _gateway_faults(self, delay: float) -> Fault | None:
        """The rate limit (429), a hang, a random 5xx: raised, or the hang returned."""
        injector = self._injector
        config = injector.config
        wait = injector.take_token()
        if wait is not None:
            raise errors.too_many_requests(injector.retry_after(wait))
        if injector.chance(config.hang_rate):
            return Fault("hang", delay_s=delay, hang_s=config.hang_s)
        if injector.chance(config.error_rate):
            raise errors.server_error(injector.server_error_status())
        return None

    def _refresh(self, request: SimRequest, tracking_id: str, delay: float) -> SimResponse | Fault:
        """POST /v1/access_token: no bearer token, and gateway faults only when enabled."""
        config = self._injector.config
        try:
            if request.method != "POST":
                raise errors.method_not_allowed(request.method)
            if config.token_refresh_faults:
                hang = self._gateway_faults(delay)
                if hang is not None:
                    return hang
            reply = self._tokens.refresh(request, config.token_ttl_s, self._clock())
        except ApiError as error:
            return self._error_response(error, tracking_id, delay)
        return self._response(reply, tracking_id, delay)

    def _after_write(
        self, route: Route, reply: Reply, tracking_id: str, delay: float
    ) -> SimResponse | Fault | None:
        """The faults of a write that was applied: the client cannot know that it was."""
        injector = self._injector
        config = injector.config
        if injector.chance(config.write_drop_rate):
            return Fault("drop", delay_s=delay)
        if injector.chance(config.write_error_rate):
            error = errors.server_error(injector.server_error_status())
            return self._error_response(error, tracking_id, delay)
        if route.name == "POST /v1/people" and injector.chance(config.people_create_400_rate):
            if injector.chance(config.people_create_400_without_calling_share):
                people.strip_created_calling(self._store, reply)
            error = errors.bad_request("Failed to provision the calling data of the user.")
            return self._error_response(error, tracking_id, delay)
        return None

    def _tracking_id(self) -> str:
        number = next(self._tracking)
        return "ROUTER_" + str(uuid.UUID(int=number, version=4)).upper()

    def _response(self, reply: Reply, tracking_id: str, delay: float) -> SimResponse:
        headers: HeaderPairs = (("Trackingid", tracking_id), *reply.headers)
        if reply.body is None:
            return SimResponse(reply.status, headers, b"", delay)
        body = json.dumps(reply.body, separators=(",", ":")).encode()
        return SimResponse(reply.status, (*headers, JSON_TYPE), body, delay)

    def _error_response(self, error: ApiError, tracking_id: str, delay: float) -> SimResponse:
        reply = Reply(error.status, error.body(tracking_id), error.response_headers())
        return self._response(reply, tracking_id, delay)

    def _record(self, request: SimRequest, route: str, status: int | str, tracking: str) -> None:
        self._total += 1
        self._by_route.setdefault(route, Counter())[str(status)] += 1
        if self._log.maxlen:
            try:
                body: object = json.loads(request.body) if request.body else None
            except (ValueError, UnicodeDecodeError):
                body = request.body.decode("utf-8", "replace")
            self._log.append(
                LoggedRequest(
                    request.method, request.path, route, request.query, body, status, tracking
                )
            )
