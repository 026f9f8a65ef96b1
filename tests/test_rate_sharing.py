"""Several `work` processes sharing one org's rate limit through their ledger.

Each process keeps its own adaptive limiter and trades a report with the others about once a
second (`ledger.rate_sharing`). Together they must hold at least 0.9 of the limit with at most
3 % of requests answered 429, as processes start and stop. The processes run in virtual time
against one token bucket (`tests/support/rate_model.py`), trading through a table in memory
or through one SQLite ledger, the way `work` processes do.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ledger import executor
from ledger.database import Ledger, open_ledger
from ledger.models import RateShareRecord
from ledger.pacing import AdaptiveRateLimiter
from ledger.rate_sharing import RateShare, SharedRateLimit
from ledger.records import as_utc
from ledger.simulator import FaultConfig
from ledger.state_store import claim_batch, exchange_rate_shares, rate_exchange
from tests.support.clock import WALL_START, FakeTime
from tests.support.people import person
from tests.support.rate_model import (
    MemoryExchange,
    ModelProcess,
    ModelResult,
    ThrottleFactory,
    client_throttle,
    run_processes,
    shared_throttle,
)
from tests.support.work import BASE_URL, Jobs

SCOPE = "https://webexapis.com/v1"


def three_processes(
    throttles: list[ThrottleFactory],
    *,
    starts: tuple[float, float, float] = (0.0, 0.0, 0.0),
    stops: tuple[float, float, float] = (math.inf, math.inf, math.inf),
    seconds: int = 60,
    leave: bool = True,
) -> ModelResult:
    """Three processes of 32 threads against a limit of 100/s (a bucket of one second).

    A process that stops leaves as `work` does (its client closed), unless `leave=False`:
    then it dies, as a killed process does.
    """
    processes = [
        ModelProcess(32, throttle, start, stop, leaves=leave)
        for throttle, start, stop in zip(throttles, starts, stops, strict=True)
    ]
    return run_processes(limit=100, processes=processes, seconds=seconds)


def sharing(exchange: MemoryExchange | None = None) -> list[ThrottleFactory]:
    board = exchange if exchange is not None else MemoryExchange()
    return [shared_throttle(board.exchange, f"worker-{n}") for n in range(3)]


ALONE = [client_throttle] * 3

# --- processes coming and going ----------------------------------------------------------------


def test_processes_started_together_hold_the_limit() -> None:
    result = three_processes(sharing())
    assert result.accepted_share() >= 0.95
    assert result.throttled_share() <= 0.01


def test_when_processes_stop_the_one_left_takes_their_shares_at_once() -> None:
    result = three_processes(sharing(), stops=(20.0, 20.0, math.inf), seconds=50)
    # Its two peers' reports go stale within seconds: it paces at the whole limit from then.
    assert result.accepted_share(25, 50) >= 0.95
    assert result.throttled_share() <= 0.01


def test_when_processes_die_the_one_left_takes_their_shares_once_their_reports_are_stale() -> None:
    result = three_processes(sharing(), stops=(20.0, 20.0, math.inf), seconds=60, leave=False)
    # Silent, they lend their shares within seconds, ten seconds before they count as gone.
    assert result.accepted_share(20, 30) < 0.9
    assert result.accepted_share(24, 35) >= 0.95
    assert result.accepted_share(35, 60) >= 0.95
    assert result.throttled_share() <= 0.01


def test_without_sharing_the_one_left_probes_for_their_shares_for_half_a_minute() -> None:
    result = three_processes(ALONE, stops=(20.0, 20.0, math.inf), seconds=50)
    assert result.accepted_share(25, 50) < 0.75


def test_a_process_that_starts_while_others_run_takes_an_equal_share() -> None:
    result = three_processes(sharing(), starts=(0.0, 20.0, 40.0), seconds=70)
    assert result.accepted_share(20, 70) >= 0.95
    assert result.throttled_share(20, 70) <= 0.01
    shares = [sum(accepted[45:70]) for accepted in result.accepted_by_process]
    assert max(shares) <= 1.25 * min(shares), shares


def test_without_sharing_a_process_that_starts_late_gets_what_it_can() -> None:
    result = three_processes(ALONE, starts=(0.0, 20.0, 40.0), seconds=70)
    shares = [sum(accepted[45:70]) for accepted in result.accepted_by_process]
    assert max(shares) > 1.25 * min(shares), shares


def test_a_process_starting_alone_starts_at_the_limit_learnt_before() -> None:
    board = MemoryExchange()
    earlier = RateShare("worker-9", WALL_START - 120.0, 96.0, 97.0, WALL_START - 150.0)
    board.reports[earlier.worker_id] = earlier
    result = run_processes(
        limit=100,
        processes=[ModelProcess(32, shared_throttle(board.exchange, "worker-1"))],
        seconds=20,
    )
    # No slow start into the limit: no burst of 429s, the limit used from the first second.
    assert sum(result.throttled[:10]) == 0
    assert result.accepted_share(1, 10) >= 0.95


# --- a process that sends nothing for a while -------------------------------------------------


def one_idle(throttles: list[ThrottleFactory], *, idle: tuple[float, float]) -> ModelResult:
    """Three processes sharing the limit; the first sends nothing while `idle`, yet lives."""
    processes = [
        ModelProcess(32, throttles[0], idle_s=idle),
        ModelProcess(32, throttles[1]),
        ModelProcess(32, throttles[2]),
    ]
    return run_processes(limit=100, processes=processes, seconds=60)


def test_the_others_use_the_share_of_a_process_that_sends_nothing_for_a_while() -> None:
    result = one_idle(sharing(), idle=(20.0, 40.0))
    # Its share is lent within seconds (its report goes stale: it trades as it sends)...
    assert result.accepted_share(24, 40) >= 0.95
    # ...and given back when it sends again, for a 429 or two at most.
    assert result.accepted_share(40, 60) >= 0.95
    assert result.throttled_share() <= 0.01
    sent_again = [sum(accepted[45:60]) for accepted in result.accepted_by_process]
    assert max(sent_again) <= 2.0 * min(sent_again), sent_again


def test_a_process_back_from_waiting_on_rows_takes_the_shares_of_the_ones_that_died() -> None:
    # The first waits on the rows the others hold (it left the shared limit); they die with
    # them (SIGKILL, no leave). Once their leases run out it claims their rows and sends
    # again, alone: their shares are its own at once, not probed for over half a minute.
    processes = [
        ModelProcess(32, throttle, stop_s=stop, leaves=False, idle_s=idle, leaves_when_idle=True)
        for throttle, stop, idle in zip(
            sharing(),
            (math.inf, 30.0, 30.0),
            ((20.0, 45.0), *[(math.inf, math.inf)] * 2),
            strict=True,
        )
    ]
    result = run_processes(limit=100, processes=processes, seconds=60)
    # While it waits, the two that still send use its share...
    assert result.accepted_share(22, 30) >= 0.9
    # ...and back alone, it uses the whole limit within seconds.
    assert sum(result.accepted_by_process[0][47:60]) >= 0.9 * 100 * 13
    assert result.throttled_share() <= 0.03


Process = tuple[AdaptiveRateLimiter, SharedRateLimit]


def send_each(
    processes: list[Process], time: FakeTime, *, rates: list[float], seconds: float
) -> list[int]:
    """Process i sends `rates[i]` requests/s (or as many as its limiter allows), all
    accepted, trading reports as it goes; returns the requests each sent."""
    end = time.now + seconds
    due = [time.now for _ in processes]
    sent = [0 for _ in processes]
    while time.now < end:
        turn = min(range(len(processes)), key=due.__getitem__)
        time.now = max(time.now, due[turn])
        limiter, shared = processes[turn]
        shared.maybe_sync()
        due[turn] = time.now + max(limiter.reserve(), 1.0 / rates[turn])
        limiter.on_success()
        sent[turn] += 1
    return sent


def test_a_process_that_uses_little_of_its_share_lends_the_rest() -> None:
    time = FakeTime()
    idle, busy = processes = two_processes(time)
    send_together(processes, time, rate=40.0, seconds=3.0)
    refused(idle)  # each learns its part of a limit of about 80/s
    refused(busy)
    share = busy[0].rate
    assert share is not None
    send_each(processes, time, rates=[2.0, 1000.0], seconds=3.0)
    sent = send_each(processes, time, rates=[2.0, 1000.0], seconds=5.0)
    # The busy one paces at its share and most of the other's: all but the 1.25 x 2/s in use.
    pace = busy[0].pace
    assert pace is not None and pace >= 2 * share - 1.25 * 2.0 - 1.0
    assert sent[1] >= 5.0 * (2 * share - 4.0)
    assert (busy[0].rate or 0.0) <= 1.05 * share  # its own share, the loan apart
    # The lender sends again: within two trades the loan is given back.
    send_each(processes, time, rates=[1000.0, 1000.0], seconds=2.5)
    assert busy[0].pace == pytest.approx(busy[0].rate)
    sent = send_each(processes, time, rates=[1000.0, 1000.0], seconds=5.0)
    assert max(sent) <= 1.2 * min(sent), sent


def test_a_429_while_pacing_on_a_loan_gives_it_back_without_cutting_the_share_deeper() -> None:
    time = FakeTime()
    idle, busy = processes = two_processes(time)
    send_together(processes, time, rate=40.0, seconds=3.0)
    refused(idle)
    refused(busy)
    share = busy[0].rate
    assert share is not None
    send_each(processes, time, rates=[2.0, 1000.0], seconds=5.0)
    assert (busy[0].pace or 0.0) > 1.5 * share
    time.now += 1.5  # past the guard against a second cut in one burst
    busy[0].reserve()
    before = busy[0].rate
    assert before is not None
    refused(busy)  # the lender sent again before the borrower heard of it
    assert busy[0].pace == pytest.approx(0.97 * before)


# --- the trade, step by step -------------------------------------------------------------------


def two_processes(time: FakeTime) -> list[Process]:
    board = MemoryExchange()
    pair = []
    for name in ("worker-1", "worker-2"):
        limiter = AdaptiveRateLimiter(clock=time.monotonic)
        shared = SharedRateLimit(
            limiter, board.exchange, name, clock=time.monotonic, wall_clock=time.wall
        )
        pair.append((limiter, shared))
    return pair


def send_together(processes: list[Process], time: FakeTime, *, rate: float, seconds: float) -> None:
    """Each process sends `rate` requests/s (or as many as its limiter allows), all accepted,
    trading reports as it goes."""
    end = time.now + seconds
    due = [time.now for _ in processes]
    while time.now < end:
        turn = min(range(len(processes)), key=due.__getitem__)
        time.now = max(time.now, due[turn])
        limiter, shared = processes[turn]
        shared.maybe_sync()
        due[turn] = time.now + max(limiter.reserve(), 1.0 / rate)
        limiter.on_success()


def refused(process: Process) -> None:
    limiter, shared = process
    assert limiter.on_throttled() is not None
    shared.on_cut()


def test_a_429_seen_by_one_process_lowers_the_other() -> None:
    time = FakeTime()
    one, other = processes = two_processes(time)
    send_together(processes, time, rate=40.0, seconds=3.0)
    refused(one)  # a bucket that runs dry refuses both: each learns its part of the limit
    refused(other)
    send_together(processes, time, rate=1000.0, seconds=20.0)  # both probe above their parts
    before = other[0].rate
    refused(one)
    send_together(processes, time, rate=1000.0, seconds=0.5)
    after = other[0].rate
    assert before is not None and after is not None
    assert after <= 0.98 * before  # the other heard of it within the half second


def test_a_burst_that_refused_both_processes_cuts_each_once() -> None:
    time = FakeTime()
    one, other = processes = two_processes(time)
    send_together(processes, time, rate=40.0, seconds=3.0)
    refused(one)
    refused(other)
    rate = other[0].rate
    time.now += 1.5  # past the limiter's own guard against a second cut
    send_together(processes, time, rate=1.0, seconds=0.1)
    assert other[0].rate == pytest.approx(rate)


def test_the_reports_are_traded_about_once_a_second_not_per_request() -> None:
    board = MemoryExchange()
    result = run_processes(
        limit=100, processes=[ModelProcess(32, shared_throttle(board.exchange, "w"))], seconds=30
    )
    assert sum(result.accepted) > 2500
    assert board.trades <= 30 + 10  # once a second, and at once after each of its own cuts


# --- through the ledger ------------------------------------------------------------------------


@pytest.fixture
def three_ledgers(tmp_path: Path) -> Iterator[list[Ledger]]:
    """One SQLite ledger opened by three "processes", each with engines of its own."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    opened = [open_ledger(url) for _ in range(3)]
    yield opened
    for ledger in opened:
        ledger.dispose()


def test_processes_share_the_limit_through_one_sqlite_ledger(three_ledgers: list[Ledger]) -> None:
    throttles = [
        shared_throttle(rate_exchange(ledger, SCOPE), f"worker-{n}")
        for n, ledger in enumerate(three_ledgers)
    ]
    result = three_processes(throttles, stops=(20.0, 20.0, math.inf), seconds=50)
    assert result.accepted_share() >= 0.9
    assert result.throttled_share() <= 0.03
    assert result.accepted_share(25, 50) >= 0.95  # fails without the ledger's reports
    with three_ledgers[0].read() as session:
        workers = session.scalars(
            select(RateShareRecord.worker_id).where(RateShareRecord.scope == SCOPE)
        ).all()
    assert sorted(workers) == ["worker-0", "worker-1", "worker-2"]


def test_an_idle_process_lends_its_share_through_one_sqlite_ledger(
    three_ledgers: list[Ledger],
) -> None:
    throttles = [
        shared_throttle(rate_exchange(ledger, SCOPE), f"worker-{n}")
        for n, ledger in enumerate(three_ledgers)
    ]
    result = one_idle(throttles, idle=(20.0, 40.0))
    assert result.accepted_share(24, 40) >= 0.95
    assert result.throttled_share() <= 0.01
    with three_ledgers[0].read() as session:
        used = session.scalars(
            select(RateShareRecord.used_per_s).where(RateShareRecord.worker_id == "worker-1")
        ).one()
    assert used is not None and used > 30.0  # a busy one's use: its share and a loan


def check_reports_are_traded(ledger: Ledger) -> None:
    now = WALL_START
    mine = RateShare("worker-1", now, 30.0, 90.0, now - 5.0)
    assert exchange_rate_shares(ledger, SCOPE, mine) == [mine]
    other = RateShare("worker-2", now + 0.5, None, None, None)
    assert sorted(exchange_rate_shares(ledger, SCOPE, other), key=str) == [mine, other]
    elsewhere = RateShare("worker-1", now + 0.7, 10.0, None, None)
    assert exchange_rate_shares(ledger, "https://other.test/v1", elsewhere) == [elsewhere]
    # Reports unseen for ten minutes are forgotten.
    later = RateShare("worker-2", now + 601.0, 50.0, 50.0, None)
    assert exchange_rate_shares(ledger, SCOPE, later) == [later]


def test_reports_are_traded_through_sqlite(three_ledgers: list[Ledger]) -> None:
    check_reports_are_traded(three_ledgers[0])


def test_a_report_says_the_rate_its_process_uses(three_ledgers: list[Ledger]) -> None:
    mine = RateShare("worker-1", WALL_START, 30.0, 90.0, None, 12.5)
    other = RateShare("worker-2", WALL_START + 0.5, 60.0, 90.0, None, None)
    exchange_rate_shares(three_ledgers[0], SCOPE, mine)
    found = exchange_rate_shares(three_ledgers[1], SCOPE, other)
    assert sorted(found, key=str) == [mine, other]


@pytest.mark.postgres
def test_reports_are_traded_through_postgres(postgres_ledger_url: str) -> None:
    ledger = open_ledger(postgres_ledger_url)
    try:
        check_reports_are_traded(ledger)
    finally:
        ledger.dispose()


def test_a_failing_ledger_leaves_each_process_on_its_own(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path}/ledger.db")
    exchange = rate_exchange(ledger, SCOPE)
    ledger.dispose()
    (tmp_path / "ledger.db").unlink()
    (tmp_path / "ledger.db").mkdir()  # the file is gone: nothing can open it now
    assert exchange(RateShare("worker-1", WALL_START, None, None, None)) is None


def test_work_reports_its_pace_in_the_ledger(jobs: Jobs) -> None:
    job = jobs.start(
        [person(n) for n in range(1, 31)], faults=FaultConfig(rate_limit_rps=20, rate_limit_burst=5)
    )
    worker = job.worker(worker_id="worker-7")
    worker.run()

    def report() -> tuple[str, str, float | None, datetime, datetime | None]:
        with job.ledger.read() as session:
            found = session.execute(
                select(
                    RateShareRecord.scope,
                    RateShareRecord.worker_id,
                    RateShareRecord.rate_per_s,
                    RateShareRecord.seen_at,
                    RateShareRecord.throttled_at,
                )
            ).one()
        return found.scope, found.worker_id, found.rate_per_s, found.seen_at, found.throttled_at

    scope, worker_id, rate, seen_at, throttled_at = report()
    assert (scope, worker_id) == (BASE_URL, "worker-7")
    assert throttled_at is not None  # it was refused, and told the others
    # Its pace as the limiter holds it: cut after the 429s of a 20 req/s bucket, never to 0.
    assert rate is not None and 2.0 <= rate <= 40.0
    # Its rows done, it leaves: its report is dated back so that the others count it gone at
    # once (see the test below for when).
    now = datetime.fromtimestamp(job.time.wall(), UTC)
    assert as_utc(seen_at) < now - timedelta(seconds=10)


def test_a_429_to_processes_that_all_use_little_measures_what_they_use() -> None:
    # Nobody borrows: no loan explains the 429, the limit fell below their shares (another
    # client of the org, say). It is measured, not just cut under.
    time = FakeTime()
    one, other = processes = two_processes(time)
    send_together(processes, time, rate=40.0, seconds=3.0)
    refused(one)
    refused(other)
    share = one[0].rate
    assert share is not None
    send_each(processes, time, rates=[5.0, 5.0], seconds=6.0)
    time.now += 1.5
    one[0].reserve()
    refused(one)
    assert (one[0].rate or 0.0) < 0.5 * share


def test_work_gives_its_share_up_before_it_writes_the_last_artifacts(
    jobs: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The artifacts of a long run take seconds to write; the other processes sharing the
    # limit should not wait that long for this one's share.
    job = jobs.start(
        [person(n) for n in range(1, 31)], faults=FaultConfig(rate_limit_rps=20, rate_limit_burst=5)
    )
    worker = job.worker(worker_id="worker-7")

    def seen_at() -> datetime:
        with job.ledger.read() as session:
            return as_utc(session.execute(select(RateShareRecord.seen_at)).scalar_one())

    when_written: list[datetime] = []
    export_all = executor.export_all

    def exporting(*args: Any, **kwargs: Any) -> Any:
        when_written.append(seen_at())
        return export_all(*args, **kwargs)

    monkeypatch.setattr(executor, "export_all", exporting)
    worker.run()
    worker.client.close()
    # Closed, it leaves: its report is dated back past `live_s` (10 s) so that the others count
    # it gone at once. It was dated so already when the last artifacts were written.
    gone = seen_at()
    assert when_written
    assert when_written[-1] <= gone + timedelta(seconds=5)


def test_work_waiting_on_rows_another_worker_holds_gives_its_share_up(jobs: Jobs) -> None:
    # Near a run's end one process may still work its last batch while the others have nothing
    # left to claim: they wait for its rows (its lease might expire), sending nothing. Waiting,
    # they must not keep a share of the limit that the busy one could use.
    job = jobs.start([person(n) for n in range(1, 11)])
    assert len(claim_batch(job.ledger, job.run.id, "worker-busy", limit=10, lease_s=600)) == 10
    worker = job.worker(worker_id="worker-7")

    def seen_at() -> datetime | None:
        with job.ledger.read() as session:
            found = session.execute(
                select(RateShareRecord.seen_at).where(RateShareRecord.worker_id == "worker-7")
            ).scalar_one_or_none()
        return None if found is None else as_utc(found)

    class Waits(threading.Event):
        """Stops `work` at its third wait, noting where its report stood at each, and how
        often it had left the shared limit by then."""

        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[datetime | None, int]] = []

        def wait(self, timeout: float | None = None) -> bool:
            self.seen.append((seen_at(), len(leaves)))
            if len(self.seen) == 3:
                self.set()
            return self.is_set()

    leaves: list[float] = []
    done_sending = worker.client.done_sending

    def leaving() -> None:
        leaves.append(job.time.wall())
        done_sending()

    worker.client.done_sending = leaving  # type: ignore[method-assign]
    worker.stop = waits = Waits()
    report = worker.run()
    assert report.success == 0
    assert job.statuses() == {"claimed": 10}  # held by the busy worker, never touched here
    # At its first wait, its report was already dated back past `live_s` (10 s): gone. It left
    # once for the whole wait, not once per look at the ledger.
    now = datetime.fromtimestamp(job.time.wall(), UTC)
    first, _left = waits.seen[0]
    assert first is not None and first < now - timedelta(seconds=10)
    assert [left for _seen, left in waits.seen] == [1, 1, 1]


def test_a_process_leaves_once_until_it_trades_again() -> None:
    # `work` leaves as it starts waiting on the others' rows, again when its rows are done and
    # when its client closes: one report dated gone is enough until it sends again.
    time = FakeTime()
    traded: list[RateShare] = []
    board = MemoryExchange()

    def exchange(mine: RateShare) -> Any:
        traded.append(mine)
        return board.exchange(mine)

    limiter = AdaptiveRateLimiter(clock=time.monotonic)
    shared = SharedRateLimit(
        limiter, exchange, "worker-1", clock=time.monotonic, wall_clock=time.wall
    )
    shared.leave()
    assert traded == []  # never reported: nobody counts it
    shared.maybe_sync()
    shared.leave()
    shared.leave()
    assert len(traded) == 2  # its report, then one dated gone
    time.now += 2.0
    shared.maybe_sync()
    shared.leave()
    assert len(traded) == 4  # back and gone again
    assert traded[-1].seen_at < time.wall() - 10.0
