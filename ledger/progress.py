"""What `ledger work` reports about its progress, and the counts behind every display.

The executor reports through `ProgressSink` and never knows which display it feeds:

    start(...)         once, with the run's counts as the ledger has them before work begins
    row_finished(...)  once per row a worker finishes, from worker threads (thread-safe)
    batch_finished(..) once per batch, after its rows
    stop()             once; the bar leaves its last state on screen

`RunTally` keeps the numbers every display shows: rows finished in the run (success + pending +
rejected, out of the total), the rate over the last minute, and the time left at that rate.
The displays that print (a live bar on a terminal, one plain line per batch otherwise) are in
`ledger.console`, with everything else that writes to the terminal; `QuietProgress` shows
nothing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

# The rate is measured over this window: long enough to smooth a batch's tail, short enough
# to follow a change of pace (a rate limit starting, a second worker joining).
RATE_WINDOW_S = 60.0
# No rate (and no ETA) is shown before this many rows finished in the window.
RATE_MIN_ROWS = 2


@dataclass(frozen=True)
class ProgressWords:
    """How a display names what it counts: `work` is working, and its rows finish as success
    or pending; `plan` is planning, and its rows are planned or blocked."""

    doing: str = "working"
    done: str = "finished"
    success: str = "success"
    pending: str = "pending"
    rejected: bool = True  # whether the run's rejected rows are counted too


WORK_WORDS = ProgressWords()
PLAN_WORDS = ProgressWords("planning", "planned", "ready", "blocked", rejected=False)


class ProgressSink(Protocol):
    def start(self, *, run_id: int, total: int, success: int, pending: int, rejected: int) -> None:
        """The run about to be worked and its counts so far."""

    def row_finished(self, status: str) -> None:
        """A row became `success` or `pending`. Called from worker threads."""

    def batch_finished(
        self, *, batch_no: int, rows: int, success: int, pending: int, elapsed_s: float
    ) -> None:
        """A batch is done: its own counts and how long it took."""

    def stop(self) -> None:
        """Work is over (finished, stopped or interrupted)."""


def format_rate(rows_per_s: float | None) -> str:
    """`12.1 rows/s`; two decimals below one row a second; `? rows/s` when unknown."""
    if rows_per_s is None:
        return "? rows/s"
    return f"{rows_per_s:.1f} rows/s" if rows_per_s >= 1 else f"{rows_per_s:.2f} rows/s"


def format_duration(seconds: float | None) -> str:
    """A short human duration: `45s`, `26m`, `3h05m`; `?` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes}m"
    return f"{minutes // 60}h{minutes % 60:02d}m"


class RunTally:
    """The run's counts and recent finishing times, shared by worker threads under one lock."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, words: ProgressWords = WORK_WORDS
    ) -> None:
        self._clock = clock
        self.words = words
        self._lock = threading.Lock()
        self._recent: deque[float] = deque()
        self.run_id = 0
        self.total = 0
        self.success = 0
        self.pending = 0
        self.rejected = 0
        self.started = clock()

    def start(self, *, run_id: int, total: int, success: int, pending: int, rejected: int) -> None:
        with self._lock:
            self.run_id = run_id
            self.total = max(total, 0)
            self.success = max(success, 0)
            self.pending = max(pending, 0)
            self.rejected = max(rejected, 0)
            self.started = self._clock()
            self._recent.clear()

    def row_finished(self, status: str) -> None:
        now = self._clock()
        with self._lock:
            if status == "success":
                self.success += 1
            else:
                # Anything but success leaves the row for an operator: count it as pending
                # rather than lose it from the display.
                self.pending += 1
            self._recent.append(now)
            self._forget_before(now - RATE_WINDOW_S)

    def _forget_before(self, horizon: float) -> None:
        while self._recent and self._recent[0] < horizon:
            self._recent.popleft()

    @property
    def finished(self) -> int:
        return self.success + self.pending + self.rejected

    def rate(self) -> float | None:
        """Rows per second over the last RATE_WINDOW_S (or since start, when shorter)."""
        now = self._clock()
        with self._lock:
            self._forget_before(now - RATE_WINDOW_S)
            count = len(self._recent)
        span = min(RATE_WINDOW_S, now - self.started)
        if count < RATE_MIN_ROWS or span <= 0:
            return None
        return count / span

    def eta_s(self, rate: float | None) -> float | None:
        remaining = max(self.total - self.finished, 0)
        if remaining == 0:
            return 0.0
        return None if not rate else remaining / rate

    def counts_line(self) -> str:
        """`run 3: 1507/21000 finished (1488 success, 12 pending, 7 rejected)`"""
        words = self.words
        rejected = f", {self.rejected} rejected" if words.rejected else ""
        return (
            f"run {self.run_id}: {self.finished}/{self.total} {words.done} "
            f"({self.success} {words.success}, {self.pending} {words.pending}{rejected})"
        )

    def run_line(self) -> str:
        """`counts_line()`, then ` · 12.1 rows/s · ETA 26m`."""
        rate = self.rate()
        return (
            f"{self.counts_line()} · {format_rate(rate)} · ETA {format_duration(self.eta_s(rate))}"
        )


class QuietProgress:
    """Shows nothing (`--progress quiet`): the log file still has every batch."""

    def start(self, *, run_id: int, total: int, success: int, pending: int, rejected: int) -> None:
        return None

    def row_finished(self, status: str) -> None:
        return None

    def batch_finished(
        self, *, batch_no: int, rows: int, success: int, pending: int, elapsed_s: float
    ) -> None:
        return None

    def stop(self) -> None:
        return None
