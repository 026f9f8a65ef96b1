"""`work` keeps its rows busy (issue: no idle tail, no idle slot): the next batch runs while a
batch's last rows are still at work, and a row that waits out a backoff lets others send.

Each test makes a few rows wait for something that only other rows can bring about; it holds
them with a bound (a failure, never a hang) and asserts that what they waited for happened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import httpx
import pytest

from ledger.connection_client import WebexClient
from ledger.executor import Worker
from ledger.simulator import Simulator
from tests.support.people import person
from tests.support.scripted import Scripted, error, looked_up_row_by_row
from tests.support.work import Job, Jobs

# Longest a held row waits for the others: a bound on a failing test, not a measured time.
HOLD_BOUND_S = 30.0


def wait_until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + HOLD_BOUND_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def created(sim: Simulator, numbers: Iterable[int]) -> int:
    """How many of users `numbers` the org holds."""
    people = sim.people_created_by_email()
    return sum(1 for n in numbers if people.get(f"user{n}@example.com"))


def worker_with(job: Job, transport: httpx.BaseTransport, sleep: Callable[[float], None]) -> Worker:
    client = WebexClient(
        job.settings,
        transport=transport,
        sleep=sleep,
        clock=job.time.monotonic,
        wall_clock=job.time.wall,
    )
    job._jobs.clients.append(client)
    return Worker(
        job.settings,
        job.ledger,
        client,
        job.run,
        progress=job.progress,
        out_dir=job.out_dir,
        worker_id="worker-1",
    )


class InFlight(httpx.BaseTransport):
    """Counts the requests in flight at once through `inner` (the most ever seen)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._now = 0
        self.most = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self._now += 1
            self.most = max(self.most, self._now)
        try:
            return self._inner.handle_request(request)
        finally:
            with self._lock:
                self._now -= 1


def test_the_next_batch_runs_while_a_slow_row_holds_up_the_tail(jobs: Jobs) -> None:
    job = jobs.start([person(n) for n in range(1, 21)], BATCH_SIZE=10, LEDGER_CONCURRENCY=2)
    seen: dict[str, bool] = {}

    def hold_row_1(_request: httpx.Request) -> None:
        # Row 1 of batch 1 is answered only once batch 2 (rows 11-20) has users of its own.
        seen["batch 2 went on"] = wait_until(lambda: created(job.sim, range(11, 21)) >= 3)

    scripted = looked_up_row_by_row(Scripted(job.sim))
    scripted.on("GET", r"^/v1/people\?.*email=user1@example\.com", hook=hold_row_1)

    report = job.work(scripted.transport())

    assert seen == {"batch 2 went on": True}
    assert (report.ended, report.batches, report.success) == ("finished", 2, 20)
    assert job.progress.batches == 2
    assert job.statuses() == {"success": 20}


@pytest.mark.parametrize(
    ("batches", "held_batches"),
    [
        # A row settling a lost create waits LOOKUP_SETTLE_S (20 s by default). With such
        # rows in two batches at once, the worker must still go on through the next ones.
        (4, 2),
        # Under faults nearly every batch keeps such a row (twice 20 s when the create sent
        # again is lost too): with a tail in each of ten batches, batch 12 still runs.
        (12, 10),
    ],
)
def test_batches_go_on_past_tails_that_wait_longer_than_a_batch_takes(
    jobs: Jobs, batches: int, held_batches: int
) -> None:
    rows = 10 * batches
    # One slot more than held rows: those keep theirs (they are mid-request), one is left.
    job = jobs.start(
        [person(n) for n in range(1, rows + 1)],
        BATCH_SIZE=10,
        LEDGER_CONCURRENCY=held_batches + 1,
    )
    seen: dict[str, bool] = {}
    last_batch = range(rows - 9, rows + 1)

    def hold_until_the_last_batch_goes_on(request: httpx.Request) -> None:
        email = request.url.params["email"]
        seen[email] = wait_until(lambda: created(job.sim, last_batch) >= 3)

    scripted = looked_up_row_by_row(Scripted(job.sim))
    held = range(1, 10 * held_batches, 10)  # the first row of each held batch
    for n in held:
        pattern = rf"^/v1/people\?.*email=user{n}@example\.com"
        scripted.on("GET", pattern, hook=hold_until_the_last_batch_goes_on)

    report = job.work(scripted.transport())

    assert seen == {f"user{n}@example.com": True for n in held}
    assert (report.ended, report.batches, report.success) == ("finished", batches, rows)
    assert job.statuses() == {"success": rows}


def test_rows_waiting_out_a_retry_after_do_not_hold_a_slot(jobs: Jobs) -> None:
    job = jobs.start([person(n) for n in range(1, 13)], LEDGER_CONCURRENCY=2)
    scripted = looked_up_row_by_row(Scripted(job.sim))
    for n in (1, 2):  # as many rows as slots answered "come back in 30 s"
        busy = error(503, "try again later", **{"Retry-After": "30"})
        scripted.on("GET", rf"^/v1/people\?.*email=user{n}@example\.com", busy)
    waited: list[bool] = []

    def sleep(seconds: float) -> None:
        if seconds >= 30:  # rows 1 and 2 wait; rows 3-12 must get done meanwhile
            waited.append(wait_until(lambda: created(job.sim, range(3, 13)) == 10))
        job.time.sleep(seconds)

    in_flight = InFlight(scripted.transport())
    report = worker_with(job, in_flight, sleep).run()

    assert waited == [True, True]
    assert report.success == 12
    assert job.statuses() == {"success": 12}
    assert in_flight.most <= 2  # LEDGER_CONCURRENCY bounds the requests in flight


def test_the_next_batch_is_claimed_once_ten_rows_of_the_current_one_are_done(jobs: Jobs) -> None:
    # Preparing a batch (its listings, each row's decision, its bulk number adds) takes about as
    # long as working it: the next one is claimed, and prepared, while the current one is
    # worked, as soon as the circuit breaker could judge it (ten rows done), not once a few
    # slots' worth of its rows are left to start (here 8 of 30).
    job = jobs.start([person(n) for n in range(1, 61)], BATCH_SIZE=30, LEDGER_CONCURRENCY=1)
    lock = threading.Lock()
    looked_up: list[int] = []
    seen: dict[str, bool] = {}

    def batch_2_claimed() -> bool:
        rows = job.rows()
        return any(rows[n].status == "claimed" for n in range(31, 61))

    def hold_the_twelfth_row(_request: httpx.Request) -> None:
        # Eleven of batch 1's rows are done (or about to be): 19 are left to start.
        with lock:
            looked_up.append(1)
            twelfth = len(looked_up) == 12
        if twelfth:
            seen["batch 2 claimed"] = wait_until(batch_2_claimed)

    scripted = looked_up_row_by_row(Scripted(job.sim))
    for n in range(1, 31):
        pattern = rf"^/v1/people\?.*email=user{n}@example\.com"
        scripted.on("GET", pattern, hook=hold_the_twelfth_row)

    report = job.work(scripted.transport())

    assert seen == {"batch 2 claimed": True}
    assert (report.ended, report.batches, report.success) == ("finished", 2, 60)
    assert job.statuses() == {"success": 60}
