"""Pacing requests to Webex across threads, and counting them.

Webex publishes no numeric rate limit, so the client learns it, and the worker threads share it
politely through one `Throttle` that every request passes before it is sent and that hears how
each answer went (`on_throttled`, `on_accepted`):

* **A shared pause.** A 429 or 423 with `Retry-After` sets a shared "not before" instant: every
  thread waits for it before its next request instead of hammering an API that asked for quiet,
  even one that was already sleeping until its send slot. The pause always applies because it
  is the server's explicit request.
* **An adaptive limiter** (`AdaptiveRateLimiter`) that finds the limit and holds just under it.
  Requests are spaced by reserving send slots under a lock and sleeping outside it; the
  client's `adaptive_rate_limit=False` leaves the limiter out (the pause still applies).

  - *Slow start.* Until the first 429 requests are paced from 50/s (8 may go at once), the
    rate doubling every half second during which requests queue for slots: threads starting
    together do not empty the bucket at once, and idle time never raises a rate.
  - *The cut.* A 429 says the server's bucket just ran dry, as it did at the previous cut. If
    that was recent (15 s), or requests queued for slots nearly all the time since at a rate
    still near the one it set (within 120 s), the requests accepted since, over the time
    since, are the limit; the pause Webex asked for counts for at most half a second (a
    bucket refills in a pause only what it holds), and no more than the time served after
    it (a bucket that ran dry at once held little). Otherwise the requests accepted over the
    last second measure it; if that read high (a bucket lets a burst through), the cut that
    soon follows corrects it.
    The rate becomes 0.97 times the measure: never above the rate refused, never below half
    the rate sent in one step. Threads refused together cut once: a 429 to a request reserved
    before the latest cut, or within a second of it, is ignored, and a slot reserved before a
    cut is given up and taken again at the new rate.
  - *The probe.* Then the rate follows a cubic curve of the seconds spent with requests
    queueing: back near the measure in seconds, flat around it, then rising ever faster
    (doubling 30 s past the flat part). A limit that rose is found within a minute; one that
    did not is crossed about once a minute, for a few 429s and one or two cuts.
  - This holds the limit within a few percent if the bucket holds half a second's worth or
    more; with less, each pause costs throughput and the measure reads low.
  - Other processes sharing the limit (`ledger.rate_sharing`, through `Throttle.sharing`)
    report their 429s, which cut this one just under its pace and restart its probe in step
    with theirs (`on_throttled_elsewhere`), their comings and goings, which change its
    share of the limit (`set_share`), and the part of their shares they leave unused, paced
    on top of the rate but never learnt as part of it (`borrow`).
* **Counters for the operator.** `RequestCounters` counts requests, retries, 429s, statuses by
  class and seconds waited (summed over threads); `WebexClient.stats()` snapshots them as a
  `ClientStats`, stored per batch by the executor and shown by `ledger status`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Final, Protocol

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


class _EventMeter:
    """Events counted in short bins over the last `span_s` seconds (bounded memory)."""

    def __init__(self, *, span_s: float, bin_s: float = 0.05) -> None:
        self._bin_s = bin_s
        self._bins: deque[list[int]] = deque(maxlen=math.ceil(span_s / bin_s) + 2)

    def add(self, now: float) -> None:
        index = math.floor(now / self._bin_s)
        if self._bins and self._bins[-1][0] == index:
            self._bins[-1][1] += 1
        else:
            self._bins.append([index, 1])

    def count_since(self, start: float) -> float:
        """Events after `start`; the bin that holds `start` counts in proportion."""
        total = 0.0
        for index, count in reversed(self._bins):
            begin = index * self._bin_s
            if begin >= start:
                total += count
                continue
            total += count * max(0.0, (begin + self._bin_s - start) / self._bin_s)
            break
        return total


class AdaptiveRateLimiter:
    """Paces request starts at the rate Webex accepts, learnt from 429s. Thread-safe.

    Memory is bounded (two rings of counters, over `steady_s` and `anchor_s`) and nothing
    waits here: `reserve()` says how long to sleep. The method is in the module docstring; its
    knobs are the slow start (`initial_rate`, `doubling_s`, `initial_burst`), the cut
    (`backoff` times the measure, taken over `window_s` or since a cut within `anchor_s`, or
    within `steady_s` while requests queued, counting `bucket_s` of a pause) and the probe
    (`probe_s` to double past the flat part).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        initial_rate: float = 50.0,
        doubling_s: float = 0.5,
        initial_burst: int = 8,
        backoff: float = 0.97,
        probe_s: float = 30.0,
        window_s: float = 1.0,
        anchor_s: float = 15.0,
        steady_s: float = 120.0,
        bucket_s: float = 0.5,
        min_rate: float = 1.0,
        max_rate: float = 1000.0,
    ) -> None:
        self._clock = clock
        self._initial_rate = initial_rate
        self._doubling_s = doubling_s
        self._initial_burst = initial_burst
        # The probe: rate = ceiling * (1 + growth * (t - plateau)^3), t = busy seconds since
        # the cut. It starts at backoff * ceiling, is flat at the ceiling after `plateau_s`
        # (9 s), then doubles the ceiling `probe_s` seconds later.
        self._growth = 1.0 / probe_s**3
        self._plateau_s = probe_s * (1.0 - backoff) ** (1.0 / 3.0)
        self._window_s = window_s
        self._anchor_s = anchor_s
        self._bucket_s = bucket_s
        self._min_rate = min_rate
        self._max_rate = max_rate
        self._lock = threading.Lock()
        self._steady_s = steady_s
        self._accepted = _EventMeter(span_s=max(anchor_s, window_s, steady_s) + 1.0)
        self._started = _EventMeter(span_s=max(anchor_s, window_s) + 1.0)
        self._mine = threading.local()  # the cuts counted when this thread last reserved
        self._ceiling: float | None = None  # the learnt limit; None until the first 429
        self._cut_at = -math.inf
        self._cuts = 0
        self._resumed_at: float | None = None  # the first reservation after the latest cut
        self._first_at: float | None = None  # the first reservation ever
        self._busy_s = 0.0  # seconds since the latest cut while requests queued for slots
        self._reserved_at: float | None = None
        self._next_slot = -math.inf
        self._reported = 0.0
        self._borrowed = 0.0  # paced on top of the rate: shares other processes leave unused
        self._lending = False  # other processes pace on part of this one's rate

    @property
    def rate(self) -> float | None:
        """Requests per second allowed now; None while no 429 has been seen (slow start)."""
        with self._lock:
            return None if self._ceiling is None else self._current()

    @property
    def pace(self) -> float | None:
        """Requests per second paced now: the rate and what is borrowed (`borrow`)."""
        with self._lock:
            if self._ceiling is None:
                return None
            return min(self._max_rate, self._current() + self._borrowed)

    def reserve(self) -> float:
        """Claim the next send slot and return the seconds until it (sleep outside any lock)."""
        with self._lock:
            now = self._clock()
            self._mine.cut = self._cuts
            self._started.add(now)
            if self._first_at is None:
                self._first_at = now
            if self._resumed_at is None:
                self._resumed_at = now
            rate = min(self._max_rate, self._current() + self._borrowed)
            due = max(now, self._next_slot)
            # Until the first 429 a few requests may go at once: a run's first requests, or
            # the few of a short command, are not spaced out.
            burst = self._initial_burst if self._ceiling is None else 1
            slot = max(now, due - max(burst - 1, 0) / rate)
            self._next_slot = due + 1.0 / rate
            if slot > now and self._reserved_at is not None:
                # Requests are queueing: the limiter, not the workload, sets the pace, so this
                # time counts as probing the limit. Idle time does not raise the rate.
                self._busy_s += min(now - self._reserved_at, 1.0)
            self._reserved_at = now
            return slot - now

    def holds_slot(self) -> bool:
        """Whether this thread's latest slot still stands: no cut since it was reserved."""
        with self._lock:
            return bool(getattr(self._mine, "cut", self._cuts) == self._cuts)

    def observed_rate(self) -> float:
        """Requests started per second over the last `anchor_s` seconds."""
        with self._lock:
            return self._per_second(self._started, self._clock(), self._anchor_s)

    def used_rate(self) -> float:
        """Requests accepted per second over the last `window_s` seconds: the rate in use."""
        with self._lock:
            return self._per_second(self._accepted, self._clock(), self._window_s)

    def borrow(self, rate: float, *, lending: bool = False) -> float:
        """Pace `rate` more than the rate until the next call or cut; returns the whole pace.

        For a limit shared with other processes: the part of theirs they leave unused. It is
        never part of the rate this process learns: a cut gives it back first. `lending`: this
        process leaves part of its rate to the others meanwhile.
        """
        with self._lock:
            self._borrowed = max(0.0, rate)
            self._lending = lending
            return min(self._max_rate, self._current() + self._borrowed)

    def on_success(self) -> float | None:
        """Count an accepted request; returns the rate when it rose well past the ceiling."""
        with self._lock:
            self._accepted.add(self._clock())
            if self._ceiling is None:
                return None
            rate = self._current()
            if rate < 1.1 * self._reported:
                return None
            self._reported = rate
            return rate

    def on_throttled(self) -> float | None:
        """After a 429: cut to just under the rate Webex accepted; None if it adds nothing.

        A 429 for a request reserved before the latest cut belongs to the burst that caused
        that cut (threads refused together cut once), and so does any 429 within `window_s`.
        One while pacing on borrowed shares gives them back and cuts just under the rate: the
        others sending again, not a lower limit, is the likely cause, and what was accepted
        measures their part too. So does one while lending: what this process sent measures
        its use, not the limit, and the borrowers cause it.
        """
        with self._lock:
            now = self._clock()
            if getattr(self._mine, "cut", self._cuts) != self._cuts:
                return None
            if now - self._cut_at < self._window_s:
                return None
            if self._borrowed > 0 or self._lending:
                return self._cut(now, self._current())
            return self._cut(now, self._measured(now))

    def on_throttled_elsewhere(self, rate: float) -> float | None:
        """Another client sharing the limit was refused while this one's share was `rate`.

        Cuts to just under `rate` (or the current rate, if lower), at most once per `window_s`
        like a 429 of our own; None if it adds nothing.
        """
        with self._lock:
            now = self._clock()
            if now - self._cut_at < self._window_s:
                return None
            return self._cut(now, min(self._current(), rate))

    def set_share(self, rate: float) -> float:
        """Pace at `rate` from now on, then probe above it as after a cut; returns the rate.

        For a limit shared with other processes: this process's share of it changed (one
        started or stopped), or is known before any 429 of its own. What it was accepted at
        its former share no longer measures the limit: the next cut measures the last
        `window_s` seconds.
        """
        with self._lock:
            self._cut_at = -math.inf
            self._borrowed = 0.0
            self._lending = False
            self._ceiling = min(self._max_rate, max(self._min_rate, rate))
            self._busy_s = self._plateau_s  # on the flat part of the curve, at `rate`
            self._reported = self._ceiling
            return self._current()

    def _current(self) -> float:
        if self._ceiling is None:
            rate = self._initial_rate * math.pow(2.0, min(self._busy_s / self._doubling_s, 30.0))
        else:
            offset = self._busy_s - self._plateau_s
            rate = self._ceiling * (1.0 + self._growth * offset**3)
        return min(self._max_rate, max(self._min_rate, rate))

    def _measured(self, now: float) -> float:
        """The ceiling a cut now sets: the measure, never above the rate that was refused."""
        # Never below half the rate requests were sent at in one step: idle time in the
        # measure must not crash the rate (a steep fall of the limit takes a few cuts).
        floor = 0.5 * self._per_second(self._started, now, self._window_s)
        return min(self._current(), max(floor, self._estimate(now)))

    def _estimate(self, now: float) -> float:
        """The limit, measured from the requests Webex accepted just before this 429."""
        since_cut = now - self._cut_at
        resumed = self._resumed_at if self._resumed_at is not None else now
        # Requests queued for slots nearly all the time since, at a rate still near the one
        # the cut set: the rate, not the workload, set the pace, and the limit did not rise
        # meanwhile, so however long ago the cut was, no idle time or old limit skews it.
        steady = (
            since_cut <= self._steady_s
            and self._busy_s >= 0.9 * (now - resumed)
            and self._ceiling is not None
            and self._current() <= 1.25 * self._ceiling
        )
        if since_cut <= self._anchor_s or steady:
            # The bucket behind the limit was empty at the latest cut and is empty again now,
            # so what it let through in between is its rate. During the pause it refilled by
            # what it holds, taken as `bucket_s` seconds' worth: too much reads low, too little
            # reads high and costs one more cut soon. Nor more than the time served since: a
            # bucket that ran dry that soon held less, unless the rate sent was above twice
            # the limit (then the next cut, soon too, reads it).
            paused = min(resumed - self._cut_at, self._bucket_s, now - resumed)
            served = now - resumed + paused
            if served > 0:
                return self._accepted.count_since(self._cut_at) / served
        # Long after a cut, nothing is known to have emptied the bucket but this 429: measure
        # the last `window_s` seconds, which the next cut, if needed, refines.
        return self._per_second(self._accepted, now, self._window_s)

    def _per_second(self, meter: _EventMeter, now: float, window: float) -> float:
        """Events per second over the last `window` seconds (or since the first request)."""
        first = self._first_at if self._first_at is not None else now
        span = min(window, max(now - first, 0.25 * self._window_s))
        return meter.count_since(now - span) / span

    def _cut(self, now: float, ceiling: float) -> float:
        self._ceiling = min(self._max_rate, max(self._min_rate, ceiling))
        self._cut_at = now
        self._cuts += 1
        self._resumed_at = None
        self._busy_s = 0.0
        self._borrowed = 0.0
        self._lending = False
        self._reported = self._ceiling
        rate = self._current()
        self._next_slot = min(self._next_slot, now + 1.0 / rate)
        return rate


class SharedPace(Protocol):
    """The limiter's rate shared with other processes (`ledger.rate_sharing`)."""

    def maybe_sync(self) -> None:
        """Trade news with the other processes if it is time to (cheap when it is not)."""

    def on_cut(self) -> None:
        """This process's limiter was just cut after a 429 of its own."""

    def on_refused(self) -> None:
        """This process was just answered 429 or 423: it sends less for a while."""

    def leave(self) -> None:
        """This process stops sending requests."""


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
        self.sharing: SharedPace | None = None

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
            sharing = self.sharing
            if sharing is not None:
                sharing.maybe_sync()
            pause = self.paused_for()
            if pause > 0:
                self._sleep(pause)
                waited += pause
                continue
            limiter = self.limiter
            delay = limiter.reserve() if limiter is not None else 0.0
            if delay > 0:
                self._sleep(delay)
                waited += delay
                # While this thread slept, Webex may have asked for quiet, and the rate may
                # have been cut: a slot spaced at the old rate is no longer this thread's.
                if self.paused_for() > 0 or (limiter is not None and not limiter.holds_slot()):
                    continue
            return waited
        return waited

    def on_throttled(
        self, status: int, pause: float | None, log_fields: Mapping[str, object]
    ) -> None:
        """After a 429 or 423: pause every thread if Webex asked to; a 429 also lowers the rate."""
        if self.sharing is not None:
            self.sharing.on_refused()
        if pause is not None:
            self.pause_all(pause)
            logger.warning(
                "pausing every request as Webex asked",
                extra={"event": "shared_pause", "wait_s": round(pause, 3), **log_fields},
            )
        if status == 429 and self.limiter is not None:
            rate = self.limiter.on_throttled()
            if rate is not None:
                logger.warning(
                    "lowered the request rate after HTTP 429",
                    extra={"event": "rate_limit_lowered", "rate_per_s": round(rate, 2)},
                )
                if self.sharing is not None:
                    self.sharing.on_cut()

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
