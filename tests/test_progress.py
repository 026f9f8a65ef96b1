"""The progress display of `ledger work`: a live bar on a terminal, one line per batch on a
pipe, nothing when quiet; the same counts from many worker threads."""

from __future__ import annotations

import io
import re
import threading

import pytest
from rich.console import Console

from ledger.console import BarProgress, PlainProgress, make_progress
from ledger.error_handling import UsageError
from ledger.progress import QuietProgress, RunTally, format_duration, format_rate
from tests.support.clock import FakeTime

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def console(*, terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=160, color_system=None), buffer


@pytest.mark.parametrize(
    ("mode", "terminal", "kind"),
    [
        ("auto", True, BarProgress),
        ("auto", False, PlainProgress),
        ("bar", False, BarProgress),
        ("plain", True, PlainProgress),
        ("quiet", True, QuietProgress),
        ("quiet", False, QuietProgress),
    ],
)
def test_make_progress_picks_the_display(mode: str, terminal: bool, kind: type) -> None:
    screen, _ = console(terminal=terminal)
    assert type(make_progress(mode, screen)) is kind


def test_an_unknown_mode_is_a_usage_error() -> None:
    screen, _ = console(terminal=False)
    with pytest.raises(UsageError, match="fancy"):
        make_progress("fancy", screen)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "?"), (-1.0, "?"), (0.0, "0s"), (45.2, "45s"), (1560.0, "26m"), (3900.0, "1h05m")],
)
def test_format_duration(seconds: float | None, shown: str) -> None:
    assert format_duration(seconds) == shown


@pytest.mark.parametrize(
    ("rate", "shown"), [(None, "? rows/s"), (0.0167, "0.02 rows/s"), (12.06, "12.1 rows/s")]
)
def test_format_rate(rate: float | None, shown: str) -> None:
    assert format_rate(rate) == shown


def test_plain_prints_one_line_per_batch() -> None:
    screen, buffer = console(terminal=False)
    clock = FakeTime(start=1000.0)
    progress = PlainProgress(screen, clock=clock)
    progress.start(run_id=3, total=21000, success=1000, pending=10, rejected=7)
    for n in range(500):
        clock.now += 0.08
        progress.row_finished("pending" if n % 250 == 0 else "success")
    progress.batch_finished(batch_no=3, rows=500, success=498, pending=2, elapsed_s=41.23)
    progress.stop()
    lines = buffer.getvalue().splitlines()
    assert lines == [
        "working run 3: 1017/21000 finished (1000 success, 10 pending, 7 rejected)",
        # 500 rows in the 40 s since start: 12.5 rows/s; 19483 left: 26 minutes.
        "batch 3: 500 rows (498 success, 2 pending) in 41.2s · run 3: 1517/21000 finished "
        "(1498 success, 12 pending, 7 rejected) · 12.5 rows/s · ETA 26m",
    ]


def test_plain_rate_covers_the_last_minute_only() -> None:
    clock = FakeTime(start=1000.0)
    tally = RunTally(clock)
    tally.start(run_id=1, total=1000, success=0, pending=0, rejected=0)
    for _ in range(600):  # 10 rows/s for a minute
        clock.now += 0.1
        tally.row_finished("success")
    assert tally.rate() == pytest.approx(10.0, rel=0.02)
    clock.now += 30  # nothing for half a minute
    assert tally.rate() == pytest.approx(300 / 60, rel=0.02)
    clock.now += 31
    assert tally.rate() is None
    assert tally.eta_s(None) is None
    tally.start(run_id=1, total=5, success=3, pending=1, rejected=1)
    assert tally.eta_s(None) == 0.0, "nothing left: no wait, even without a rate"


def test_plain_before_any_rate_shows_question_marks() -> None:
    screen, buffer = console(terminal=False)
    progress = make_progress("plain", screen)
    progress.start(run_id=1, total=10, success=0, pending=0, rejected=0)
    progress.batch_finished(batch_no=1, rows=0, success=0, pending=0, elapsed_s=0.0)
    assert buffer.getvalue().splitlines()[-1].endswith("· ? rows/s · ETA ?")


def test_quiet_prints_nothing() -> None:
    screen, buffer = console(terminal=True)
    progress = make_progress("quiet", screen)
    progress.start(run_id=1, total=10, success=0, pending=0, rejected=0)
    progress.row_finished("success")
    progress.batch_finished(batch_no=1, rows=1, success=1, pending=0, elapsed_s=1.0)
    progress.stop()
    assert buffer.getvalue() == ""


def finish_from_threads(progress: PlainProgress | BarProgress, threads: int, each: int) -> None:
    def work(index: int) -> None:
        for n in range(each):
            progress.row_finished("pending" if (index + n) % 10 == 0 else "success")

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def test_counts_from_many_threads_are_exact() -> None:
    screen, _ = console(terminal=False)
    progress = PlainProgress(screen)
    progress.start(run_id=1, total=10_000, success=0, pending=0, rejected=5)
    finish_from_threads(progress, threads=8, each=1000)
    tally = progress.tally
    assert (tally.success, tally.pending, tally.rejected) == (7200, 800, 5)
    assert tally.finished == 8005


def test_bar_on_a_terminal_shows_counts_rate_and_eta() -> None:
    screen, buffer = console(terminal=True)
    progress = make_progress("auto", screen)
    assert isinstance(progress, BarProgress)
    progress.start(run_id=7, total=1000, success=100, pending=4, rejected=6)
    finish_from_threads(progress, threads=4, each=100)
    progress.batch_finished(batch_no=1, rows=400, success=360, pending=40, elapsed_s=2.0)
    progress.stop()
    tally = progress.tally
    assert (tally.success, tally.pending, tally.rejected) == (460, 44, 6)
    screen_text = ANSI.sub("", buffer.getvalue())
    final = [line for line in screen_text.splitlines() if line.strip()][-1]
    assert "run 7" in final
    assert "510/1000" in final
    assert "460 success · 44 pending · 6 rejected" in final
    assert re.search(r"[\d.]+ rows/s", final), final
    assert re.search(r"ETA (\d+s|\d+m|\d+h\d\dm)", final), final


def test_bar_stop_without_start_is_harmless() -> None:
    screen, buffer = console(terminal=True)
    progress = BarProgress(screen)
    progress.stop()
    assert ANSI.sub("", buffer.getvalue()).strip() == ""
