"""The one door to Webex: every call goes through `WebexClient.request()`.

Why it is built this way:

* **One seam for foreign errors.** httpx exceptions and HTTP statuses become the project's own
  tree (`ledger.error_handling`) here and nowhere else; the httpx error stays as `__cause__`.
  Every error carries the status, Webex `errorCode`, `Trackingid`, method and URL path (never the
  query, never the token), and a message read from whichever error body shape Webex used
  (`ledger.responses` reads answers; this module decides what they mean).
* **A retry never creates a duplicate.** Webex has no idempotency keys. A request that is not
  `safe_to_retry` (POST and PATCH by default) is retried only after failures that prove nothing
  was applied: connect errors, connect or pool timeouts, 429 and 423. A failure after the request
  may have reached Webex (read or write timeout, connection lost after sending, 5xx) is raised at
  once with `maybe_applied=True`; the step layer then looks up before trying again, pacing its
  attempts with `backoff_wait()` so it waits exactly like the client does.
* **Every wait is bounded.** Backoff is exponential from `RETRY_BACKOFF_S` with "equal jitter"
  (a wait lies between half and all of the exponential value, so threads that failed together do
  not retry together). `Retry-After` is honoured as seconds or as an HTTP date; anything else
  (Webex has sent `rand(30),add(30)`) means `RETRY_AFTER_DEFAULT_S`. No wait exceeds
  `RETRY_AFTER_CAP_S`, and at most `MAX_RETRIES` retries follow the first try.
* **Threads share the rate limit politely.** Every request first waits its turn at one shared
  `Throttle` (`ledger.pacing`): a 429 or 423 with `Retry-After` pauses every thread, and a 429
  also lowers the adaptive request rate. `stats()` is a frozen snapshot of the counters.
* **At most LEDGER_CONCURRENCY requests in flight.** Every send holds one of the client's
  `slots` (`ledger.slots`); a thread sleeping before a retry gives its slot up meanwhile.
* **An expired token is renewed once, mid-run.** Each try carries the token current when it is
  sent (`ledger.access_token`). With `WEBEX_CLIENT_ID`, `WEBEX_CLIENT_SECRET` and
  `WEBEX_REFRESH_TOKEN` set, a 401 asks for a new access token with the refresh grant
  (`POST /access_token`, sent with the same retries, without a bearer token) and the refused
  request is sent once more with it; a 401 means Webex did not act on the request, so even a
  POST is safe to resend. Threads refused together cause one refresh. If the refresh fails, or
  the resend gets a 401 too, that 401 is raised as without the settings: `auth_invalid`, and the
  circuit breaker decides. One logical request never causes more than one refresh, and no
  token is refreshed twice. Without the settings a 401 is raised at once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, NoReturn, Self
from urllib.parse import unquote

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from ledger.access_token import AccessToken, RefreshCredentials
from ledger.config import Settings
from ledger.error_handling import (
    ConfigError,
    HTTPStatusError,
    InvariantError,
    RequestTimeoutError,
    RetryableError,
    RetryableStatusError,
    RetryExhaustedError,
    TransportError,
    UnexpectedResponseError,
    WebexError,
)
from ledger.logs import redact
from ledger.outgoing import QueryValue, RequestHop, request_body, request_headers
from ledger.pacing import (
    THROTTLE_STATUSES,
    AdaptiveRateLimiter,
    ClientStats,
    RequestCounters,
    Throttle,
)
from ledger.rate_sharing import RateExchange, SharedRateLimit
from ledger.responses import (
    MESSAGE_LIMIT,
    HttpAnswer,
    JsonObject,
    WebexResponse,
    parse_retry_after,
    read_error,
    read_success,
    unexpected_response,
)
from ledger.slots import RequestSlots

logger = logging.getLogger(__name__)

_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Raised before a byte of the request left this process: retrying cannot apply a write twice.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)


@dataclass(frozen=True, slots=True)
class _Call:
    """One logical request, as each of its tries is sent."""

    method: str
    target: str
    params: Mapping[str, QueryValue] | None = None
    json: Any = None
    form: Mapping[str, str] | None = field(default=None, repr=False)  # the refresh grant's secrets
    ok: frozenset[int] = frozenset({200})
    resend_unknown: bool = False


class _Renewal:
    """Whether a logical request already had its one token renewal after a 401."""

    __slots__ = ("used",)

    def __init__(self) -> None:
        self.used = False


def _transport_error(exc: httpx.HTTPError, method: str, path: str) -> WebexError:
    detail = redact(str(exc))[:MESSAGE_LIMIT]
    message = f"{method} {path}: {type(exc).__name__}" + (f": {detail}" if detail else "")
    error: RetryableError
    if isinstance(exc, httpx.TimeoutException):
        error = RequestTimeoutError(message, method=method, path=path)
    elif isinstance(exc, httpx.TransportError):
        error = TransportError(message, method=method, path=path)
    else:  # a body that cannot be decoded, too many redirects: an answer, but not a usable one
        return UnexpectedResponseError(message, method=method, path=path)
    error.maybe_applied = not isinstance(exc, _NOT_SENT)
    error.__cause__ = exc  # set now so log lines written before the raise can name it
    return error


def _worth_retrying(call: _Call, error: BaseException) -> bool:
    """Whether a try's failure is retried: a retryable error, unless it may have applied a
    request that must not be sent twice."""
    return isinstance(error, RetryableError) and (call.resend_unknown or not error.maybe_applied)


def _failure(state: RetryCallState) -> BaseException:
    error = state.outcome.exception() if state.outcome is not None else None
    if error is None:
        raise InvariantError("a retry was scheduled without a failure")
    return error


def _failure_label(error: BaseException) -> str:
    if isinstance(error, WebexError) and error.http_status is not None:
        return f"HTTP {error.http_status}"
    cause = error.__cause__
    return type(cause if cause is not None else error).__name__


def _log_fields(error: BaseException) -> dict[str, object]:
    if not isinstance(error, WebexError):
        return {}
    return {
        "http_status": error.http_status,
        "error_code": error.error_code,
        "tracking_id": error.tracking_id,
        "method": error.method,
        "path": error.path,
    }


class WebexClient:
    """The only HTTP client of the project. One instance is shared by all worker threads."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        max_connections: int | None = None,
        adaptive_rate_limit: bool = True,
    ) -> None:
        token = settings.WEBEX_ACCESS_TOKEN
        secret = token.get_secret_value().strip() if token is not None else ""
        if not secret:
            raise ConfigError("WEBEX_ACCESS_TOKEN is not set")
        base_url = httpx.URL(settings.WEBEX_BASE_URL.rstrip("/") + "/")
        if base_url.scheme not in ("http", "https") or not base_url.host:
            raise ConfigError("invalid WEBEX_BASE_URL: expected an http(s) URL")
        self._settings = settings
        self._base_url = base_url
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng if rng is not None else random.Random()
        self._hop = RequestHop(
            base_url,
            timeout_s=settings.REQUEST_TIMEOUT_S,
            connections=max_connections or settings.LEDGER_CONCURRENCY,
            transport=transport,
        )
        self.slots = RequestSlots(settings.LEDGER_CONCURRENCY)
        limiter = AdaptiveRateLimiter(clock=clock) if adaptive_rate_limit else None
        self._throttle = Throttle(clock=clock, sleep=sleep, limiter=limiter)
        self._counters = RequestCounters()
        self._token = AccessToken(
            secret,
            credentials=RefreshCredentials.from_settings(settings),
            send_grant=self._send_grant,
        )

    def __repr__(self) -> str:
        return f"WebexClient(base_url={str(self._base_url)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.done_sending()
        self._hop.close()

    def done_sending(self) -> None:
        """Nothing more to send for now: the processes sharing the limit take this one's share
        at once; sending again, it rejoins as a newcomer (`ledger.rate_sharing`)."""
        if self._throttle.sharing is not None:
            self._throttle.sharing.leave()

    @property
    def rate_limiter(self) -> AdaptiveRateLimiter | None:
        return self._throttle.limiter

    def share_rate_limit(self, exchange: RateExchange, worker_id: str) -> None:
        """Pace with the other processes `exchange` reaches (`ledger.rate_sharing`)."""
        limiter = self._throttle.limiter
        if limiter is not None:
            self._throttle.sharing = SharedRateLimit(
                limiter, exchange, worker_id, clock=self._clock, wall_clock=self._wall_clock
            )

    def stats(self) -> ClientStats:
        limiter = self._throttle.limiter
        return self._counters.snapshot(
            limiter.rate if limiter is not None else None, token_refreshes=self._token.refreshes
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, QueryValue] | None = None,
        json: Any = None,
        ok: Collection[int] = (200,),
        safe_to_retry: bool | None = None,
    ) -> WebexResponse:
        """Send one logical request, retrying what is safe to retry; raise a WebexError.

        `path` is relative to WEBEX_BASE_URL or an absolute URL on the same host (a Link
        header's next page, sent exactly as given). Query parameters that are None are left
        out. `safe_to_retry` says whether the request may be resent when its outcome is
        unknown; by default only POST and PATCH may not. With refresh credentials set, a 401
        renews the token and the request is sent once more, whatever its method.
        """
        verb = method.upper()
        call = _Call(
            verb,
            self._target(path),
            {k: v for k, v in params.items() if v is not None} if params else None,
            json,
            ok=frozenset(ok),
            resend_unknown=verb in _SAFE_METHODS if safe_to_retry is None else safe_to_retry,
        )
        renewal = _Renewal()
        try:  # most tries succeed: the retry machinery is set up after a failure only
            return self._attempt(call, renewal)
        except RetryableError as error:
            if not _worth_retrying(call, error):
                raise
            first: list[BaseException] = [error]

        def attempt() -> WebexResponse:
            # The retry loop starts from the first try's failure, as if it had made that try.
            if first:
                raise first.pop()
            return self._attempt(call, renewal)

        return self._retrying(call)(attempt)

    def compute_backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait after failed try number `attempt` (1-based), capped at RETRY_AFTER_CAP_S."""
        cap = self._settings.RETRY_AFTER_CAP_S
        if retry_after is not None:
            return min(cap, max(0.0, retry_after))
        exponent = min(max(attempt, 1) - 1, 60)
        exponential = min(cap, self._settings.RETRY_BACKOFF_S * 2.0**exponent)
        return exponential * (0.5 + 0.5 * self._rng.random())

    def backoff_wait(self, attempt: int, retry_after: float | None = None) -> float:
        """Sleep like the client's own retries do (for lookup-then-create loops); return it."""
        wait = self.compute_backoff(attempt, retry_after)
        self._retry_sleep(wait)
        return wait

    def paginate(
        self,
        path: str,
        *,
        params: Mapping[str, QueryValue] | None = None,
        items_key: str,
        max_pages: int = 1000,
    ) -> Iterator[JsonObject]:
        """Items of a Link-paged list; more than `max_pages` pages is an error, never a hang."""
        url, query = path, params
        seen: set[str] = set()
        for _ in range(max_pages):
            page = self.request("GET", url, params=query)
            items = page.require_list(items_key)
            yield from items
            if not items or page.next_url is None:
                return
            if page.next_url in seen:
                raise unexpected_response(f"Link next points back to {page.next_url}", page)
            seen.add(page.next_url)
            url, query = page.next_url, None
        raise UnexpectedResponseError(
            f"GET {path}: more than {max_pages} pages", method="GET", path=path
        )

    def paginate_offset(
        self,
        path: str,
        *,
        params: Mapping[str, QueryValue] | None = None,
        items_key: str,
        page_size: int = 2000,
        max_pages: int = 1000,
    ) -> Iterator[JsonObject]:
        """Items of a `start`/`max` paged list (`/telephony/config/numbers`), bounded likewise."""
        start = 0
        for _ in range(max_pages):
            page = self.request(
                "GET", path, params={**(params or {}), "start": start, "max": page_size}
            )
            items = page.require_list(items_key)
            yield from items
            if len(items) < page_size:
                return
            start += len(items)
        raise UnexpectedResponseError(
            f"GET {path}: more than {max_pages} pages", method="GET", path=path
        )

    def _target(self, path: str) -> str:
        if path.startswith("/"):
            return path  # relative to the base, as every call but a Link next page is
        try:
            url = httpx.URL(path)
        except httpx.InvalidURL as exc:
            raise UnexpectedResponseError(f"not a usable URL: {path[:200]}") from exc
        if not url.is_absolute_url:
            return path
        base = self._base_url
        if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
            raise UnexpectedResponseError(
                f"refusing to send the token to {url.scheme}://{url.host}", path=url.path
            )
        return path

    def _retrying(self, call: _Call) -> Retrying:
        return Retrying(
            stop=stop_after_attempt(self._settings.MAX_RETRIES + 1),
            retry=retry_if_exception(lambda error: _worth_retrying(call, error)),
            wait=self._tenacity_wait,
            sleep=self._retry_sleep,
            before_sleep=self._log_retry,
            retry_error_callback=self._give_up,
        )

    def _attempt(self, call: _Call, renewal: _Renewal) -> WebexResponse:
        """One try with the current token; after a 401, at most one renewal and resend."""
        generation, token = self._token.current()
        try:
            return self._send(call, token)
        except HTTPStatusError as error:
            if error.http_status != 401 or renewal.used:
                raise
            renewal.used = True
            if not self._token.renew_after_401(generation):
                raise  # the original 401: auth_invalid, for the circuit breaker to count
        # Webex answers 401 before acting on a request, so resending one that got it, even a
        # POST that creates something, cannot apply it twice.
        return self._send(call, self._token.current()[1])

    def _send_grant(self, form: Mapping[str, str]) -> WebexResponse:
        """The refresh grant for `AccessToken`: form fields, no bearer token, normal retries."""
        # Safe to resend whatever the failure: a refresh creates nothing in the org, and the
        # refresh token stays valid when Webex hands out a new access token.
        call = _Call("POST", "/access_token", form=form, resend_unknown=True)
        return self._retrying(call)(self._send, call, None)

    def _send(self, call: _Call, token: str | None) -> WebexResponse:
        """Wait for a turn, send once (with `token` as bearer if given), map the outcome."""
        self._counters.add_wait("throttle", self._throttle.wait_turn())
        method = call.method
        target = self._hop.origin_form(call.target, call.params)
        path = unquote(target.partition("?")[0])
        headers = request_headers(token)
        body = request_body(call.json, call.form, headers)
        self._counters.add("requests_sent")
        try:
            with self.slots.held():
                response = self._hop.send(method, target, headers, body)
        except httpx.HTTPError as exc:
            self._counters.add("transport_errors")
            error = _transport_error(exc, method, path)
            self._note_unknown_outcome(error, call.resend_unknown)
            raise error from exc
        status = response.status_code
        self._counters.add_status(status)
        if status in call.ok:
            self._throttle.on_accepted()
            return read_success(response, method, path)
        error = self._status_error(response, method, path, call.ok)
        if status in THROTTLE_STATUSES:
            self._on_throttled(status, error)
        elif status < 500:
            self._throttle.on_accepted()  # an answer on its merits: the rate was acceptable
        self._note_unknown_outcome(error, call.resend_unknown)
        raise error

    def _status_error(
        self, response: HttpAnswer, method: str, path: str, ok: frozenset[int]
    ) -> WebexError:
        status = response.status_code
        message, fields = read_error(response, method, path)
        if status in THROTTLE_STATUSES or status >= 500:
            retry_after = parse_retry_after(
                response.headers.get("retry-after"),
                now=self._wall_clock(),
                default=self._settings.RETRY_AFTER_DEFAULT_S,
            )
            error = RetryableStatusError(message, retry_after=retry_after, **fields)
            error.maybe_applied = status >= 500  # 429 and 423 refuse the request unapplied
            return error
        if 400 <= status < 500:
            return HTTPStatusError(message, **fields)
        return UnexpectedResponseError(f"{message}, expected {sorted(ok)}", **fields)

    def _on_throttled(self, status: int, error: WebexError) -> None:
        retry_after = error.retry_after if isinstance(error, RetryableStatusError) else None
        pause = None if retry_after is None else min(self._settings.RETRY_AFTER_CAP_S, retry_after)
        self._throttle.on_throttled(status, pause, _log_fields(error))

    def _note_unknown_outcome(self, error: WebexError, resend_unknown: bool) -> None:
        if isinstance(error, RetryableError) and error.maybe_applied and not resend_unknown:
            logger.warning(
                f"not resending after {_failure_label(error)}: the write may have been applied",
                extra={"event": "request_outcome_unknown", **_log_fields(error)},
            )

    def _tenacity_wait(self, state: RetryCallState) -> float:
        error = _failure(state)
        retry_after = error.retry_after if isinstance(error, RetryableStatusError) else None
        return self.compute_backoff(state.attempt_number, retry_after)

    def _retry_sleep(self, seconds: float) -> None:
        self._counters.add_wait("retry", seconds)
        with self.slots.released():  # a row that waits lets another one send
            self._sleep(seconds)

    def _log_retry(self, state: RetryCallState) -> None:
        error = _failure(state)
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        self._counters.add("retries")
        logger.warning(
            f"retrying after {_failure_label(error)}",
            extra={
                "event": "request_retry",
                "attempt": state.attempt_number,
                "wait_s": round(wait, 3),
                **_log_fields(error),
            },
        )

    def _give_up(self, state: RetryCallState) -> NoReturn:
        error = _failure(state)
        if not isinstance(error, RetryableError):
            raise error
        logger.error(
            f"gave up after {state.attempt_number} attempts: {_failure_label(error)}",
            extra={
                "event": "retry_exhausted",
                "attempt": state.attempt_number,
                **_log_fields(error),
            },
        )
        raise RetryExhaustedError(error, state.attempt_number) from error
