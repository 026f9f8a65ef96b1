"""One org's rate limit, shared by the `work` processes of one ledger.

Webex limits an org's token, not a process. Each process keeps its own `AdaptiveRateLimiter`
(`ledger.pacing`), which learns its part of the limit from its own 429s and probes above it;
about once a second, never per request, one of its threads trades a short report with the
other processes through the ledger (`ledger.state_store.rate`): its pace, the limit of all
the processes together as it last knew it, and when it last cut after a 429 of its own.
Processes whose latest report is at most `live_s` seconds old are live. From the reports:

* **A 429 seen by one lowers the others.** A process that hears of a cut elsewhere newer
  than `window_s` after the latest it knows of cuts too, to what its own measure says, as if
  refused itself: a bucket that runs dry refuses every process, and those it did not refuse
  yet are about to be. Cuts within `window_s` of each other are one burst, counted once.
* **The paces add up to the limit, and stay so as processes come and go.** A process that
  starts while others run takes its share of their paces at once (their sum ÷ the live
  processes) instead of slow-starting into the limit, and the others give it up; a lone
  process that finds the limit learnt in the last `memory_s` seconds starts at it. When one
  stops (its reports go stale), the others split its pace at once instead of probing for it
  for half a minute. A process whose own reports went stale (a long pause, a busy ledger)
  takes its share again as if it had just started.

Sharing is best effort: when the ledger cannot be reached, each process paces on its own, as a
lone process does, until the next report goes through. Reports are timed by each host's wall
clock, so hosts sharing a PostgreSQL ledger must agree on the time within a second (NTP does).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from ledger.pacing import AdaptiveRateLimiter

logger = logging.getLogger(__name__)

# How long a report is kept: a process starting alone within this long of the latest one
# starts at the limit it names.
REPORTS_KEPT_S: Final = 600.0


@dataclass(frozen=True, slots=True)
class RateShare:
    """One process's report. Times are wall-clock seconds since the epoch (hosts differ)."""

    worker_id: str
    seen_at: float
    rate_per_s: float | None  # its pace; None while it slow-starts
    limit_per_s: float | None  # the paces of the live processes together, at its last trade
    throttled_at: float | None  # its latest cut after a 429 of its own


# Writes this process's report and returns the reports of the processes sharing its limit
# seen lately (its own included); None when the reports could not be traded this time.
RateExchange = Callable[[RateShare], Sequence[RateShare] | None]


class SharedRateLimit:
    """This process's side of the shared limit; `Throttle.sharing` calls it. Thread-safe."""

    def __init__(
        self,
        limiter: AdaptiveRateLimiter,
        exchange: RateExchange,
        worker_id: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        interval_s: float = 1.0,
        live_s: float = 3.0,
        memory_s: float = REPORTS_KEPT_S,
        window_s: float = 1.0,
    ) -> None:
        self._limiter = limiter
        self._exchange = exchange
        self._worker_id = worker_id
        self._clock = clock
        self._wall_clock = wall_clock
        self._interval_s = interval_s
        self._live_s = live_s
        self._memory_s = memory_s
        self._window_s = window_s
        self._syncing = threading.Lock()  # one thread trades the reports at a time
        self._lock = threading.Lock()  # the fields below
        self._due = -math.inf
        self._traded_at = -math.inf  # this process's latest trade that went through
        self._live: dict[str, RateShare] = {}  # the other live processes then
        self._limit: float | None = None  # the live processes' paces together then
        self._throttled_at: float | None = None  # this process's latest cut
        self._heard_at = -math.inf  # the latest cut acted on, this process's or another's

    def maybe_sync(self) -> None:
        if self._clock() < self._due:  # the per-request path: one clock read
            return
        if not self._syncing.acquire(blocking=False):
            return  # another thread is trading the reports; this one goes on
        try:
            with self._lock:
                self._due = self._clock() + self._interval_s
                mine = RateShare(
                    self._worker_id,
                    self._wall_clock(),
                    self._limiter.rate,
                    self._limit,
                    self._throttled_at,
                )
            reports = self._exchange(mine)
            if reports is not None:
                with self._lock:
                    self._apply(mine, reports)
        finally:
            self._syncing.release()

    def on_cut(self) -> None:
        with self._lock:
            self._throttled_at = self._heard_at = self._wall_clock()
            self._due = -math.inf  # tell the others at once

    def _apply(self, mine: RateShare, reports: Sequence[RateShare]) -> None:
        now = mine.seen_at
        others = [report for report in reports if report.worker_id != self._worker_id]
        live = {r.worker_id: r for r in others if now - r.seen_at <= self._live_s}
        before, self._live = self._live, live
        rejoined = now - self._traded_at > self._live_s  # the others may have counted it gone
        self._traded_at = now
        cuts = [r.throttled_at for r in others if r.throttled_at is not None]
        latest_cut = max(cuts, default=-math.inf)
        if latest_cut > self._heard_at + self._window_s:
            self._heard_at = latest_cut
            # Only a process that was sending when the others were refused has its own measure.
            if now - latest_cut <= self._live_s and not rejoined:
                self._cut()
        paces = [report.rate_per_s for report in live.values()]
        others_pace = sum(rate for rate in paces if rate is not None)
        known = None not in paces
        rate = self._limiter.rate
        if rate is not None and known:
            self._limit = rate + others_pace
        processes = 1 + len(live)
        if rate is None or rejoined:
            if live and known and others_pace > 0:
                self._set(others_pace / processes, processes)  # the others give up as much
            elif not live and rate is None:
                self._start_at_known_limit(others, now)
            return
        # The others that stopped leave their paces to split; the ones that started take
        # their shares, each process giving up as much.
        given_up = sum(before[gone].rate_per_s or 0.0 for gone in before.keys() - live.keys())
        started = len(live.keys() - before.keys())
        share = (rate + given_up / (processes - started)) * (processes - started) / processes
        if abs(share - rate) > 0.01 * rate:
            self._set(share, processes)

    def _start_at_known_limit(self, others: Sequence[RateShare], now: float) -> None:
        """Alone and slow-starting: start at the limit the latest process here knew."""
        recent = [r for r in others if r.limit_per_s is not None]
        latest = max(recent, key=lambda report: report.seen_at, default=None)
        if latest is not None and latest.limit_per_s and now - latest.seen_at <= self._memory_s:
            self._set(latest.limit_per_s, 1)

    def _cut(self) -> None:
        rate = self._limiter.on_throttled_elsewhere()
        if rate is not None:
            logger.warning(
                "lowered the request rate after HTTP 429 to another process",
                extra={"event": "rate_limit_lowered_elsewhere", "rate_per_s": round(rate, 2)},
            )

    def _set(self, share: float, processes: int) -> None:
        rate = self._limiter.set_share(share)
        logger.info(
            "paced at this process's share of the rate limit",
            extra={
                "event": "rate_limit_shared",
                "rate_per_s": round(rate, 2),
                "processes": processes,
            },
        )
