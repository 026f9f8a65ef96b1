"""Pacing requests to Webex across threads, and counting them.

Webex publishes no numeric rate limit, so the client learns it, and the worker threads share it
politely through one `Throttle` that every request passes before it is sent and that hears how
each answer went (`on_throttled`, `on_accepted`):

* **A shared pause.** A 429 or 423 with `Retry-After` sets a shared "not before" instant: every
  thread waits for it before its next request instead of hammering an API that asked for quiet.
  The pause always applies because it is the server's explicit request.
* **An AIMD limiter** (`AdaptiveRateLimiter`), engaged by a 429: it starts unlimited, drops to
  0.8 times the request rate observed over the last few seconds, and climbs by a fixed step after
  each streak of successes. Rates derive from the *observed* rate, so a burst of simultaneous
  429s from many threads cuts once, not once per thread. Requests are spaced by reserving send
  slots under a lock and sleeping outside it. The client's `adaptive_rate_limit=False` leaves it
  out.
* **Counters for the operator.** `RequestCounters` counts requests, retries, 429s, statuses by
  class and seconds spent waiting (summed over threads); `WebexClient.stats()` snapshots them,
  with the count of token refreshes, as a frozen `ClientStats`, stored per batch by the executor
  and shown by `ledger status`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Final

logger = logging.getLogger(__name__)

THROTTLE_STATUSES: Final = frozenset({423, 429})


@dataclass(frozen=True, slots=True)
class ClientStats:
    """Counters since the client was built. Wait seconds are summed over all threads."""

    requests_sent: int = 0
    retries: int = 0
    status_429: int = 0
    status_423: int = 0
    transport_errors: int = 0
    token_refreshes: int = 0
    responses_2xx: int = 0
    responses_3xx: int = 0
    responses_4xx: int = 0
    responses_5xx: int = 0
    retry_wait_s: float = 0.0
    throttle_wait_s: float = 0.0
    rate_limit_per_s: float | None = None

    def as_dict(self) -> dict[str, int | float | None]:
        return asdict(self)


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

    def on_throttled(
        self, status: int, pause: float | None, log_fields: Mapping[str, object]
    ) -> None:
        """After a 429 or 423: pause every thread if Webex asked to; a 429 also lowers the rate."""
        if pause is not None:
            self.pause_all(pause)
            logger.warning(
                "pausing every request as Webex asked",
                extra={"event": "shared_pause", "wait_s": round(pause, 3), **log_fields},
            )
        if status == 429 and self.limiter is not None:
            before = self.limiter.rate
            rate = self.limiter.on_throttled()
            if rate != before:
                logger.warning(
                    "lowered the request rate after HTTP 429",
                    extra={"event": "rate_limit_lowered", "rate_per_s": round(rate, 2)},
                )

    def on_accepted(self) -> None:
        """After an answer on its merits (not 429, 423 or 5xx): the rate may rise."""
        rate = self.limiter.on_success() if self.limiter is not None else None
        if rate is not None:
            logger.info(
                "raised the request rate",
                extra={"event": "rate_limit_raised", "rate_per_s": round(rate, 2)},
            )


class RequestCounters:
    """Thread-safe counters behind `ClientStats`."""

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
            if status in THROTTLE_STATUSES:
                self._counts[f"status_{status}"] += 1

    def add_wait(self, kind: str, seconds: float) -> None:
        with self._lock:
            self._waits[kind] += seconds

    def snapshot(self, rate: float | None, *, token_refreshes: int = 0) -> ClientStats:
        with self._lock:
            return ClientStats(
                requests_sent=self._counts["requests_sent"],
                retries=self._counts["retries"],
                status_429=self._counts["status_429"],
                status_423=self._counts["status_423"],
                transport_errors=self._counts["transport_errors"],
                token_refreshes=token_refreshes,
                responses_2xx=self._by_class[2],
                responses_3xx=self._by_class[3],
                responses_4xx=self._by_class[4],
                responses_5xx=self._by_class[5],
                retry_wait_s=round(self._waits["retry"], 3),
                throttle_wait_s=round(self._waits["throttle"], 3),
                rate_limit_per_s=rate,
            )
