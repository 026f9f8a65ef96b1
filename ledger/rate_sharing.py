"""One org's rate limit, shared by the `work` processes of one ledger.

Webex limits an org's token, not a process. Each process keeps its own `AdaptiveRateLimiter`
(`ledger.pacing`), which learns its part of the limit from its own 429s and probes above it;
about once a second, never per request, one of its threads trades a short report with the
other processes through the ledger (`ledger.state_store.rate`): its pace (its share of the
limit), the limit of all the processes together as it last knew it, when it last cut after a
429 of its own, and the requests it had accepted per second over the last second. Processes
whose latest report is at most `live_s` seconds old are live. From the reports:

* **A 429 seen by one lowers the others.** A process that hears of a cut elsewhere (within
  `news_s`, and newer than `window_s` after the latest it knows of) cuts just under its pace
  and restarts its probe in step with the refused one: no process probes on into a limit the
  others just found. Cuts within `window_s` of each other are one burst: a bucket that runs
  dry refuses every process, and each cuts once, on its own 429.
* **The paces add up to the limit, and stay so as processes come and go.** A process that
  starts while others run takes its share of their paces at once (their sum ÷ the live
  processes) instead of slow-starting into the limit, and the others give it up; a lone
  process that finds the limit learnt in the last `memory_s` seconds starts at it. When one
  stops (its rows done, before its last artifacts, or while it waits on rows the others hold),
  it says so and the others split its pace at once instead of probing for it for half a
  minute; sending again, it rejoins as a newcomer; one killed counts as gone once its
  latest report is `live_s` old. A process whose own reports went stale (a long pause, a
  ledger locked for long) takes its share again as if it had just started.
* **A share left unused is used by the others.** A process between batches, out of rows or
  short of CPU uses less than its share: it lends what it does not use (all but
  `LEND_MARGIN` times its use), and one silent for `idle_s` (it trades only as it sends) lends
  all of it. The processes that use their shares pace on top of them a loan, split in
  proportion to their shares. The lender keeps its share: sending again, it says so at its
  next trade, and the others give the loan back at theirs. A 429 to a borrower gives the loan
  back and cuts just under its share, and so does one to a lender (it is the borrowers'
  doing, and its light use does not measure the limit). Just after a 429 or 423 of its own,
  or when it sends again after a silence, a process lends nothing: its use says little then.

Sharing is best effort: when the ledger cannot be reached, each process paces on its own, as a
lone process does, until the next report goes through. Reports are timed by each host's wall
clock, so hosts sharing a PostgreSQL ledger must agree on the time within a second (NTP does).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Final

from ledger.pacing import AdaptiveRateLimiter

logger = logging.getLogger(__name__)

# How long a report is kept: a process starting alone within this long of the latest one
# starts at the limit it names.
REPORTS_KEPT_S: Final = 600.0
# A process lends the part of its share above this many times what it uses.
LEND_MARGIN: Final = 1.25


@dataclass(frozen=True, slots=True)
class RateShare:
    """One process's report. Times are wall-clock seconds since the epoch (hosts differ)."""

    worker_id: str
    seen_at: float
    rate_per_s: float | None  # its pace; None while it slow-starts
    limit_per_s: float | None  # the paces of the live processes together, at its last trade
    throttled_at: float | None  # its latest cut after a 429 of its own
    used_per_s: float | None = None  # requests it had accepted per second lately, if telling


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
        live_s: float = 10.0,
        news_s: float = 3.0,
        memory_s: float = REPORTS_KEPT_S,
        window_s: float = 1.0,
        idle_s: float = 3.0,
    ) -> None:
        self._limiter = limiter
        self._exchange = exchange
        self._worker_id = worker_id
        self._clock = clock
        self._wall_clock = wall_clock
        self._interval_s = interval_s
        self._live_s = live_s
        self._news_s = news_s
        self._memory_s = memory_s
        self._window_s = window_s
        self._idle_s = idle_s
        self._syncing = threading.Lock()  # one thread trades the reports at a time
        self._lock = threading.Lock()  # the fields below
        self._due = -math.inf
        self._traded_at = -math.inf  # this process's latest trade that went through
        self._live: dict[str, RateShare] = {}  # the other live processes then
        self._limit: float | None = None  # the live processes' paces together then
        self._throttled_at: float | None = None  # this process's latest cut
        self._heard_at = -math.inf  # the latest cut acted on, this process's or another's
        self._refused_at = -math.inf  # this process's latest 429 or 423

    def maybe_sync(self) -> None:
        if self._clock() < self._due:  # the per-request path: one clock read
            return
        if not self._syncing.acquire(blocking=False):
            return  # another thread is trading the reports; this one goes on
        try:
            with self._lock:
                self._due = self._clock() + self._interval_s
                now = self._wall_clock()
                mine = RateShare(
                    self._worker_id,
                    now,
                    self._limiter.rate,
                    self._limit,
                    self._throttled_at,
                    self._used(now),
                )
            reports = self._exchange(mine)
            if reports is not None:
                with self._lock:
                    self._apply(mine, reports)
        finally:
            self._syncing.release()

    def leave(self) -> None:
        """This process stops sending: the others take its share at their next trade. Once:
        until it trades again, the others count it gone already (or never heard of it)."""
        with self._syncing:
            with self._lock:
                if self._traded_at == -math.inf:
                    return
                # Dated back past `live_s`: counted gone at once, its limit still on record.
                gone_at = self._wall_clock() - self._live_s - 1.0
                mine = RateShare(
                    self._worker_id,
                    gone_at,
                    self._limiter.rate,
                    self._limit,
                    self._throttled_at,
                    0.0,
                )
                self._traded_at = -math.inf  # should it send again, it starts as a newcomer
            self._exchange(mine)

    def on_cut(self) -> None:
        with self._lock:
            self._throttled_at = self._heard_at = self._wall_clock()
            self._due = -math.inf  # tell the others at once

    def on_refused(self) -> None:
        with self._lock:
            self._refused_at = self._clock()

    def _apply(self, mine: RateShare, reports: Sequence[RateShare]) -> None:
        now = mine.seen_at
        others = [report for report in reports if report.worker_id != self._worker_id]
        live = {r.worker_id: r for r in others if now - r.seen_at <= self._live_s}
        before, self._live = self._live, live
        rejoined = now - self._traded_at > self._live_s  # the others may have counted it gone
        self._traded_at = now
        processes = 1 + len(live)
        paces = [report.rate_per_s for report in live.values()]
        others_pace = sum(pace for pace in paces if pace is not None)
        known = None not in paces
        latest_cut = max((r.throttled_at for r in others if r.throttled_at), default=-math.inf)
        news = latest_cut > self._heard_at + self._window_s and now - latest_cut <= self._news_s
        self._heard_at = max(self._heard_at, latest_cut)
        rate = self._limiter.rate
        if rate is None or rejoined:
            # A newcomer: the others give up as much as it takes. Not cut by news: a slow
            # start finds the limit soon enough by itself.
            if live and known and others_pace > 0:
                rate = self._set(others_pace / processes, processes)
            elif not live:
                # Alone: the limit the latest process here knew is its own. One back from a
                # leave (it waited on rows the others held, and they died) takes their shares.
                rate = self._start_at_known_limit(others, now) or rate
        else:
            # The others that stopped leave their paces to split among the ones still sending
            # (one silent for `idle_s` may have stopped too); the ones that started take their
            # shares, each process giving up as much.
            given_up = sum(before[gone].rate_per_s or 0.0 for gone in before.keys() - live.keys())
            started = len(live.keys() - before.keys())
            sending = 1 + sum(
                1 for w, r in live.items() if w in before and now - r.seen_at <= self._idle_s
            )
            share = (rate + given_up / sending) * (processes - started) / processes
            if abs(share - rate) > 0.01 * rate:
                rate = self._set(share, processes)
            if news:
                rate = self._cut(rate)
        if rate is not None and known:
            self._limit = rate + others_pace
            self._borrow(now, rate, mine.used_per_s, live.values())

    def _used(self, now: float) -> float | None:
        """The requests accepted per second lately, or None (lending nothing) when that says
        little of what it needs: soon after a 429 or 423 of its own, the pause Webex asks for
        holds it back; sending again after `idle_s` without a trade, it has only started."""
        if self._clock() - self._refused_at < self._idle_s or now - self._traded_at > self._idle_s:
            return None
        return self._limiter.used_rate()

    def _borrow(
        self, now: float, rate: float, used: float | None, live: Collection[RateShare]
    ) -> None:
        """Pace on top of this process's share what idle ones leave of theirs, if it uses its own.

        A process using less than its share (between batches, short of rows or of CPU) lends
        what it does not use, less a margin (`LEND_MARGIN` times its use); the ones using theirs
        split the loan in proportion to their shares. The lender keeps its share: sending again,
        it reports so within a trade, and the borrowers give the loan back at their next.
        """
        lent = 0.0
        busy = 0.0  # the shares of the others that use theirs
        for report in live:
            if report.rate_per_s is None:
                continue
            if now - report.seen_at > self._idle_s:
                lent += report.rate_per_s  # it sent nothing since: it trades as it sends
                continue
            spare = report.rate_per_s - LEND_MARGIN * (report.used_per_s or 0.0)
            if report.used_per_s is not None and spare > 0:
                lent += spare
            else:
                busy += report.rate_per_s
        if used is None or LEND_MARGIN * used < rate:
            # It borrows nothing, and lends if another uses its own share (and so the loan).
            self._limiter.borrow(0.0, lending=used is not None and busy > 0)
        else:
            self._limiter.borrow(lent * rate / (rate + busy))

    def _start_at_known_limit(self, others: Sequence[RateShare], now: float) -> float | None:
        """Alone and slow-starting: start at the limit the latest process here knew."""
        recent = [r for r in others if r.limit_per_s is not None]
        latest = max(recent, key=lambda report: report.seen_at, default=None)
        if latest is None or not latest.limit_per_s or now - latest.seen_at > self._memory_s:
            return None
        return self._set(latest.limit_per_s, 1)

    def _cut(self, rate: float) -> float:
        """Just under this process's pace, and its probe restarted in step with the others'.

        Not to its own measure: a process that used less than its pace (short of rows or of
        CPU) would measure its use and lose the pace it holds; one that used it all, like
        those the bucket refused too, cuts on its own 429s. Nor to the processes' mean pace:
        where their demands differ, that takes from the busy what the idle cannot use.
        """
        lowered = self._limiter.on_throttled_elsewhere(rate)
        if lowered is None:
            return rate
        logger.warning(
            "lowered the request rate after HTTP 429 to another process",
            extra={"event": "rate_limit_lowered_elsewhere", "rate_per_s": round(lowered, 2)},
        )
        return lowered

    def _set(self, share: float, processes: int) -> float:
        rate = self._limiter.set_share(share)
        logger.info(
            "paced at this process's share of the rate limit",
            extra={
                "event": "rate_limit_shared",
                "rate_per_s": round(rate, 2),
                "processes": processes,
            },
        )
        return rate
