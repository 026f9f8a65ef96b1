"""The one door to Webex: every call goes through `WebexClient.request()`.

Why it is built this way:

* **One seam for foreign errors.** httpx exceptions and HTTP statuses become the project's own
  tree (`ledger.error_handling`) here and nowhere else; the httpx error stays as `__cause__`.
  Every error carries the status, Webex `errorCode`, `Trackingid`, method and URL path (never the
  query, never the token), and a message read from whichever error body shape Webex used.
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
* **Threads share the rate limit politely.** Webex publishes no numeric limit, so the client
  learns it. A 429 or 423 with `Retry-After` sets a shared "not before" instant: every thread
  waits for it before its next request instead of hammering an API that asked for quiet. A 429
  also engages an AIMD limiter (`AdaptiveRateLimiter`): it starts unlimited, drops to 0.8 times
  the request rate observed over the last few seconds, and climbs by a fixed step after each
  streak of successes. Rates derive from the *observed* rate, so a burst of simultaneous 429s
  from many threads cuts once, not once per thread. Requests are spaced by reserving send slots
  under a lock and sleeping outside it. `adaptive_rate_limit=False` turns the limiter off; the
  shared pause always applies because it is the server's explicit request.
* **Counters for the operator.** `stats()` is a frozen snapshot of requests, retries, 429s,
  statuses by class and seconds spent waiting (summed over threads), stored per batch by the
  executor and shown by `ledger status`.
"""

from __future__ import annotations

import email.utils
import json as jsonlib
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC
from types import MappingProxyType, TracebackType
from typing import Any, Final, NoReturn, Self

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from ledger.config import Settings
from ledger.error_handling import (
    ConfigError,
    HTTPStatusError,
    InvariantError,
    RetryableError,
    RetryableStatusError,
    RetryExhaustedError,
    TimeoutError_,
    TransportError,
    UnexpectedResponseError,
    WebexError,
)
from ledger.logs import redact, register_secret

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]
QueryValue = str | int | float | bool | None

_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_THROTTLE_STATUSES: Final = frozenset({423, 429})
# Raised before a byte of the request left this process: retrying cannot apply a write twice.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)
_MESSAGE_LIMIT: Final = 500


@dataclass(frozen=True, slots=True)
class WebexResponse:
    """A successful answer. `headers` has lower-case names; `next_url` is the Link rel="next"."""

    status_code: int
    body: JsonObject | None
    tracking_id: str | None
    method: str
    path: str
    next_url: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def _with_fields(
    body: Mapping[str, Any] | None, names: tuple[str, ...], response: WebexResponse | None
) -> Mapping[str, Any]:
    if body is None:
        raise _unexpected(f"empty body, expected {', '.join(names)}", response)
    missing = [name for name in names if body.get(name) is None]
    if missing:
        raise _unexpected(f"response lacks {', '.join(missing)}", response)
    return body


def require_fields(
    body: Mapping[str, Any] | None, *names: str, response: WebexResponse | None = None
) -> None:
    """Check a response carries `names` (not null) before anything reads them."""
    _with_fields(body, names, response)


def require_str(
    body: Mapping[str, Any] | None, name: str, *, response: WebexResponse | None = None
) -> str:
    """A non-empty string field (ids, names): an empty id is as useless as a missing one."""
    value = _with_fields(body, (name,), response)[name]
    if not isinstance(value, str) or not value:
        raise _unexpected(f"field {name} is not a non-empty string", response)
    return value


def require_list(
    body: Mapping[str, Any] | None, key: str, *, response: WebexResponse | None = None
) -> list[JsonObject]:
    """A list of JSON objects under `key`, as every Webex list response has."""
    items = _with_fields(body, (key,), response)[key]
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise _unexpected(f"field {key} is not a list of objects", response)
    return items


def parse_retry_after(value: str | None, *, now: float, default: float) -> float | None:
    """Seconds asked for by a Retry-After header (None if absent). Never trusts its shape."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else default
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _descriptions(items: object) -> str | None:
    if not isinstance(items, list):
        return None
    texts = [
        text
        for item in items
        if isinstance(item, Mapping) and (text := _text(item.get("description")))
    ]
    return "; ".join(dict.fromkeys(texts)) or None


def webex_error_message(body: object) -> str | None:
    """The human message of any Webex error body shape (WEBEX_API.md, "Cross-cutting")."""
    if not isinstance(body, Mapping):
        return None
    error = body.get("error")
    inner = error.get("message") if isinstance(error, Mapping) else None
    return (
        _text(body.get("message"))
        or _descriptions(body.get("errors"))
        or _text(inner)
        or _descriptions(inner)
        or _text(body.get("errorMessage"))
    )


def _as_int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def webex_error_code(body: object, headers: Mapping[str, str]) -> int | None:
    """Webex's numeric errorCode from the body, else from `Cisco-Spark-Error-Codes`."""
    candidates: list[object] = []
    if isinstance(body, Mapping):
        candidates.append(body.get("errorCode"))
        for listed in (body.get("errors"), _nested_messages(body)):
            if isinstance(listed, list):
                candidates.extend(
                    item.get(name)
                    for item in listed
                    if isinstance(item, Mapping)
                    for name in ("errorCode", "code")
                )
    candidates.extend(headers.get("cisco-spark-error-codes", "").split(","))
    return next((code for item in candidates if (code := _as_int(item)) is not None), None)


def _nested_messages(body: Mapping[str, Any]) -> object:
    error = body.get("error")
    return error.get("message") if isinstance(error, Mapping) else None


def _lenient_json(response: httpx.Response) -> object:
    try:
        return jsonlib.loads(response.content) if response.content else None
    except ValueError:
        return None


def _tracking_id(headers: Mapping[str, str], body: object) -> str | None:
    from_body = body.get("trackingId") if isinstance(body, Mapping) else None
    return headers.get("trackingid") or _text(from_body)


class AdaptiveRateLimiter:
    """AIMD pacing of request starts, learnt from 429s. Thread-safe; bounded memory."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        decrease_factor: float = 0.8,
        increase_step: float = 1.0,
        increase_after: int = 20,
        min_rate: float = 1.0,
        max_rate: float = 1000.0,
        window_s: float = 10.0,
        history: int = 4096,
    ) -> None:
        self._clock = clock
        self._decrease_factor = decrease_factor
        self._increase_step = increase_step
        self._increase_after = increase_after
        self._min_rate = min_rate
        self._max_rate = max_rate
        self._window_s = window_s
        self._lock = threading.Lock()
        self._rate: float | None = None
        self._next_slot = -math.inf
        self._starts: deque[float] = deque(maxlen=history)
        self._streak = 0

    @property
    def rate(self) -> float | None:
        """Allowed requests per second; None while no 429 has been seen."""
        with self._lock:
            return self._rate

    def reserve(self) -> float:
        """Claim the next send slot and return the seconds until it (sleep outside any lock)."""
        with self._lock:
            now = self._clock()
            slot = now if self._rate is None else max(now, self._next_slot)
            if self._rate is not None:
                self._next_slot = slot + 1.0 / self._rate
            self._starts.append(slot)
            return slot - now

    def observed_rate(self) -> float:
        with self._lock:
            return self._observed(self._clock())

    def _observed(self, now: float) -> float:
        while self._starts and self._starts[0] < now - self._window_s:
            self._starts.popleft()
        if not self._starts:
            return 0.0
        # At least a second of span, so three quick requests do not read as 300 per second.
        return len(self._starts) / max(now - self._starts[0], 1.0)

    def on_throttled(self) -> float:
        """Multiplicative decrease after a 429; returns the new rate."""
        with self._lock:
            target = self._decrease_factor * self._observed(self._clock())
            rate = min(self._max_rate, max(self._min_rate, target))
            self._rate = rate if self._rate is None else min(self._rate, rate)
            self._streak = 0
            return self._rate

    def on_success(self) -> float | None:
        """Additive increase after a streak of successes; returns the new rate if it rose."""
        with self._lock:
            if self._rate is None or self._rate >= self._max_rate:
                return None
            self._streak += 1
            if self._streak < self._increase_after:
                return None
            self._streak = 0
            self._rate = min(self._max_rate, self._rate + self._increase_step)
            return self._rate


class Throttle:
    """The shared "not before" instant plus the optional limiter, in front of every request."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        limiter: AdaptiveRateLimiter | None,
        max_rounds: int = 50,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self.limiter = limiter
        self._max_rounds = max_rounds
        self._lock = threading.Lock()
        self._not_before = -math.inf

    def pause_all(self, seconds: float) -> None:
        """No thread starts a request for `seconds` (extends, never shortens, a pause)."""
        with self._lock:
            self._not_before = max(self._not_before, self._clock() + seconds)

    def paused_for(self) -> float:
        with self._lock:
            return max(0.0, self._not_before - self._clock())

    def wait_turn(self) -> float:
        """Block until this thread may send; returns the seconds slept."""
        waited = 0.0
        # Each round sleeps a capped pause; a pause extended forever still ends after the bound.
        for _ in range(self._max_rounds):
            pause = self.paused_for()
            if pause > 0:
                self._sleep(pause)
                waited += pause
                continue
            delay = self.limiter.reserve() if self.limiter is not None else 0.0
            if delay > 0:
                self._sleep(delay)
                waited += delay
            return waited
        return waited


class _Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(
            ("requests_sent", "retries", "status_429", "status_423", "transport_errors"), 0
        )
        self._by_class = [0, 0, 0, 0, 0, 0]
        self._waits = {"retry": 0.0, "throttle": 0.0}

    def add(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def add_status(self, status: int) -> None:
        with self._lock:
            self._by_class[min(max(status // 100, 0), 5)] += 1
            if status in _THROTTLE_STATUSES:
                self._counts[f"status_{status}"] += 1

    def add_wait(self, kind: str, seconds: float) -> None:
        with self._lock:
            self._waits[kind] += seconds

    def snapshot(self, rate: float | None) -> ClientStats:
        with self._lock:
            return ClientStats(
                requests_sent=self._counts["requests_sent"],
                retries=self._counts["retries"],
                status_429=self._counts["status_429"],
                status_423=self._counts["status_423"],
                transport_errors=self._counts["transport_errors"],
                responses_2xx=self._by_class[2],
                responses_3xx=self._by_class[3],
                responses_4xx=self._by_class[4],
                responses_5xx=self._by_class[5],
                retry_wait_s=round(self._waits["retry"], 3),
                throttle_wait_s=round(self._waits["throttle"], 3),
                rate_limit_per_s=rate,
            )
