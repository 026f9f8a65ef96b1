"""The live progress of `ledger work`: a bar on a terminal, one plain line per batch otherwise.

The executor reports through `ProgressSink` and never knows which display it feeds:

    start(...)         once, with the run's counts as the ledger has them before work begins
    row_finished(...)  once per row a worker finishes, from worker threads (thread-safe)
    batch_finished(..) once per batch, after its rows
    stop()             once; the bar leaves its last state on screen

`make_progress("auto", console)` picks the bar when the console is a terminal and plain lines
when it is a pipe or a log file, so CI logs and `nohup` files stay readable. Both displays
show the same numbers: rows finished in the run (success + pending + rejected, out of the
total), the rate over the last minute, and the time left at that rate.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from ledger.error_handling import UsageError

PROGRESS_MODES = ("auto", "quiet", "plain", "bar")
# The rate is measured over this window: long enough to smooth a batch's tail, short enough
# to follow a change of pace (a rate limit starting, a second worker joining).
RATE_WINDOW_S = 60.0
# No rate (and no ETA) is shown before this many rows finished in the window.
RATE_MIN_ROWS = 2


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

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
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
        return (
            f"run {self.run_id}: {self.finished}/{self.total} finished "
            f"({self.success} success, {self.pending} pending, {self.rejected} rejected)"
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


class PlainProgress:
    """One line when work starts and one per batch: for pipes, CI logs and `nohup` files."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        self._console = console
        self.tally = RunTally(clock)

    def _print(self, line: str) -> None:
        self._console.print(line, markup=False, highlight=False, soft_wrap=True)

    def start(self, *, run_id: int, total: int, success: int, pending: int, rejected: int) -> None:
        self.tally.start(
            run_id=run_id, total=total, success=success, pending=pending, rejected=rejected
        )
        self._print(f"working {self.tally.counts_line()}")

    def row_finished(self, status: str) -> None:
        self.tally.row_finished(status)

    def batch_finished(
        self, *, batch_no: int, rows: int, success: int, pending: int, elapsed_s: float
    ) -> None:
        self._print(
            f"batch {batch_no}: {rows} rows ({success} success, {pending} pending) "
            f"in {elapsed_s:.1f}s · {self.tally.run_line()}"
        )

    def stop(self) -> None:
        return None


class BarProgress:
    """A live rich bar: finished/total, the outcome counts, rows/s and ETA."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        self.tally = RunTally(clock)
        self._progress = Progress(
            TextColumn("[bold]run {task.fields[run_id]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[rate]} · ETA {task.fields[eta]}"),
            console=console,
            refresh_per_second=4,
            transient=False,
        )
        self._task: TaskID | None = None

    def _fields(self) -> tuple[str, str, str]:
        """The counts, rate and ETA columns' text."""
        tally = self.tally
        rate = tally.rate()
        counts = (
            f"[green]{tally.success} success[/] · [yellow]{tally.pending} pending[/] · "
            f"[red]{tally.rejected} rejected[/]"
        )
        return counts, format_rate(rate), format_duration(tally.eta_s(rate))

    def start(self, *, run_id: int, total: int, success: int, pending: int, rejected: int) -> None:
        self.tally.start(
            run_id=run_id, total=total, success=success, pending=pending, rejected=rejected
        )
        counts, rate, eta = self._fields()
        self._task = self._progress.add_task(
            "work",
            total=self.tally.total,
            completed=self.tally.finished,
            run_id=run_id,
            counts=counts,
            rate=rate,
            eta=eta,
        )
        self._progress.start()

    def _refresh(self) -> None:
        if self._task is not None:
            counts, rate, eta = self._fields()
            self._progress.update(
                self._task, completed=self.tally.finished, counts=counts, rate=rate, eta=eta
            )

    def row_finished(self, status: str) -> None:
        self.tally.row_finished(status)
        self._refresh()

    def batch_finished(
        self, *, batch_no: int, rows: int, success: int, pending: int, elapsed_s: float
    ) -> None:
        self._refresh()

    def stop(self) -> None:
        self._refresh()
        self._progress.stop()


def make_progress(mode: str, console: Console) -> ProgressSink:
    """The display for `mode` (`auto`, `quiet`, `plain` or `bar`) writing to `console`."""
    if mode == "quiet":
        return QuietProgress()
    if mode == "plain" or (mode == "auto" and not console.is_terminal):
        return PlainProgress(console)
    if mode in ("bar", "auto"):
        return BarProgress(console)
    raise UsageError(f"unknown progress mode {mode!r}: use one of {', '.join(PROGRESS_MODES)}")
