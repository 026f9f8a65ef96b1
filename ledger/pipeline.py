"""Keeping a worker's row threads busy: batches claimed ahead, rows fed to a pool of threads.

`BatchPipeline` claims a batch, has it opened (prepared) and queues its rows for the pool. Once
`judged_after` of its rows are done (what the worker needs to judge a batch, say whether the
circuit breaker trips), or no more than `prefetch_at` are left to start, it claims and opens the
next one, whose rows queue behind them: a batch is prepared while the one before it is worked,
so the threads go on from one batch to the next instead of idling while one is prepared. At most
`BATCHES_HELD` batches are held at once. A batch is closed, on this (the calling) thread, once
its last row is done.

The pool has more threads than request slots (`slots`): a row is worked holding a slot, and a
row sleeping in a backoff gives it to another meanwhile (see `ledger.slots`); rows about to
start take a slot behind every other taker (a batch's preparation among them). A row whose turn
comes while work is stopping, or that its batch says cannot start, is set aside unstarted and
handed to `close_batch`, which gives it back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ledger.batch_iterator import BatchSource
from ledger.records import ClaimedRow
from ledger.slots import RequestSlots

B = TypeVar("B")

# Rows settling a lost create wait LOOKUP_SETTLE_S (20 s by default), twice when the create
# sent again is lost too, while a batch takes a few seconds: nearly every batch under faults
# keeps such a tail. Holding 8 stopped the claims for seconds at a time in a 10,000-row run
# (the limit's use fell to 0.07-0.49 for 5 s windows mid-run); 32 outlast a 40 s tail at
# 300 req/s. Held rows cost no slot; a thread each, and their batch's row list.
BATCHES_HELD = 32
# How often the loop looks at `stopping` while it waits for rows (a signal sets it).
STOP_POLL_S = 0.5


@dataclass
class _InFlight(Generic[B]):
    """A batch in the pipeline; the counts are guarded by the pipeline's condition."""

    batch: B
    rows: list[ClaimedRow]
    to_start: int
    to_finish: int
    # The next batch may be claimed once `to_finish` is down to this (`judged_after` rows done).
    to_judge: int
    unstarted: list[ClaimedRow] = field(default_factory=list)
    futures: list[Future[None]] = field(default_factory=list)


class BatchPipeline(Generic[B]):
    """Runs batches from `source` through a pool of `threads` row threads (see the module
    docstring). The worker says what a batch and a row mean:

    open_batch(number, rows) -> B   claimed: hold it, prepare what its rows need (this thread)
    can_start(batch, row)           whether the row may be worked now, stopping or not
                                    (else it is set aside)
    work(batch, row)                work one row (a row thread, holding a request slot)
    close_batch(batch, unstarted, last)  last row done: give `unstarted` back, report (this
                                    thread); `last`: no other batch is held and the source
                                    has none left to give as far as is known
    """

    def __init__(
        self,
        source: BatchSource,
        *,
        slots: RequestSlots,
        threads: int,
        prefetch_at: int,
        judged_after: int,
        stopping: Callable[[], bool],
        open_batch: Callable[[int, list[ClaimedRow]], B],
        can_start: Callable[[B, ClaimedRow], bool],
        work: Callable[[B, ClaimedRow], None],
        close_batch: Callable[[B, list[ClaimedRow], bool], None],
    ) -> None:
        self._source = source
        self._slots = slots
        self._threads = threads
        self._prefetch_at = prefetch_at
        self._judged_after = judged_after
        self._stopping = stopping
        self._open = open_batch
        self._can_start = can_start
        self._work = work
        self._close = close_batch
        self._changed = threading.Condition()
        self._changes = 0

    def run(self) -> None:
        """Until the source ends or `stopping()`, and every batch taken is closed."""
        with ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="row") as pool:
            self._loop(pool)

    def _loop(self, pool: ThreadPoolExecutor) -> None:
        source = self._source
        active: list[_InFlight[B]] = []
        # After an empty claim while batches ran: ask again only once one of them is done.
        claim_after_close = False
        # Bounded: every turn claims a batch (at most the source's ceiling), closes one (as
        # many), or waits for a row of an active batch to start or finish.
        while True:
            with self._changed:
                seen = self._changes
                done = [flight for flight in active if flight.to_finish == 0]
                room = len(active) < BATCHES_HELD and (
                    not active
                    or active[-1].to_start <= self._prefetch_at
                    or active[-1].to_finish <= active[-1].to_judge
                )
            for flight in done:
                active.remove(flight)
                for future in flight.futures:
                    future.result()  # a row's unexpected error ends `work`, as it always did
            if done and not active and not claim_after_close and not self._stopping():
                # Whether a batch follows decides whether this one is the last (see close).
                rows = source.claim(working=True)
                if rows is not None:
                    active.append(self._start(pool, source.batches, rows))
                claim_after_close = rows is None
            for flight in done:
                # The last, as far as is known: no other batch held and none left to claim.
                last = not active and (
                    claim_after_close or source.ended is not None or self._stopping()
                )
                self._close(flight.batch, flight.unstarted, last)
                claim_after_close = False
            if done:
                continue
            if room and not claim_after_close and not self._stopping():
                rows = source.claim(working=bool(active))
                if rows is not None:
                    active.append(self._start(pool, source.batches, rows))
                    continue
                claim_after_close = bool(active)
            if not active and (source.ended is not None or self._stopping()):
                return
            self._wait_for_change(seen)

    def _wait_for_change(self, seen: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._changes != seen, STOP_POLL_S)

    def _start(self, pool: ThreadPoolExecutor, number: int, rows: list[ClaimedRow]) -> _InFlight[B]:
        count = len(rows)
        judged = count - min(self._judged_after, count)
        flight = _InFlight(self._open(number, rows), rows, count, count, judged)
        flight.futures = [pool.submit(self._run_row, flight, row) for row in rows]
        return flight

    def _run_row(self, flight: _InFlight[B], row: ClaimedRow) -> None:
        try:
            with self._slots.held(start=True):
                startable = self._can_start(flight.batch, row)
                self._note(flight, started=True)
                if not startable:
                    with self._changed:
                        flight.unstarted.append(row)
                    return
                self._work(flight.batch, row)
        finally:
            self._note(flight, finished=True)

    def _note(self, flight: _InFlight[B], *, started: bool = False, finished: bool = False) -> None:
        """Count a row started or finished; wake the loop when that matters to it."""
        with self._changed:
            if started:
                flight.to_start -= 1
                if flight.to_start != self._prefetch_at:
                    return
            if finished:
                flight.to_finish -= 1
                if flight.to_finish not in (0, flight.to_judge):
                    return
            self._changes += 1
            self._changed.notify_all()
