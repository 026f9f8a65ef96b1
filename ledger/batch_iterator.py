"""Claiming rows batch by batch, with static bounds, and keeping the claims alive.

`iterate_batches` yields claimed batches until the run has no claimable row, a bound is hit or a
stop is asked for. Every loop here has a fixed upper bound: the number of batches (MAX_BATCHES,
or a ceiling derived from the run's size), and the polls while other workers hold the last rows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ledger.database import Ledger
from ledger.records import ClaimedRow, WorkEnd
from ledger.state_store import claim_batch, renew_leases, run_is_finished

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchBounds:
    batch_size: int
    max_batches: int  # 0: only the ceiling derived from the run applies
    lease_s: float
    total_rows: int

    def ceiling(self) -> int:
        """No run needs more claims than this: every row claimed a few times over."""
        per_pass = -(-max(self.total_rows, 1) // self.batch_size)
        derived = per_pass * 10 + 10
        return min(self.max_batches, derived) if self.max_batches else derived


@dataclass
class BatchState:
    """Why iteration ended: `finished`, `max_batches`, `stopped`, or `held_elsewhere`."""

    ended: WorkEnd = WorkEnd.FINISHED
    batches: int = 0


def iterate_batches(
    ledger: Ledger,
    run_id: int,
    worker_id: str,
    bounds: BatchBounds,
    state: BatchState,
    should_stop: Callable[[], bool],
    wait: Callable[[float], bool],
) -> Iterator[list[ClaimedRow]]:
    """Claimed batches, lowest batch first. `wait(s)` sleeps and returns True when stopping."""
    ceiling = bounds.ceiling()
    # While other workers hold the last rows, poll until their leases could have expired.
    idle_polls_left = int(bounds.lease_s / 1.0) + 5
    while state.batches < ceiling:
        if should_stop():
            state.ended = WorkEnd.STOPPED
            return
        rows = claim_batch(ledger, run_id, worker_id, bounds.batch_size, bounds.lease_s)
        if not rows:
            if run_is_finished(ledger, run_id):
                state.ended = WorkEnd.FINISHED
                return
            if idle_polls_left <= 0:
                state.ended = WorkEnd.HELD_ELSEWHERE
                return
            idle_polls_left -= 1
            if wait(1.0):
                state.ended = WorkEnd.STOPPED
                return
            continue
        state.batches += 1
        yield rows
    state.ended = WorkEnd.FINISHED if run_is_finished(ledger, run_id) else WorkEnd.MAX_BATCHES


class LeaseKeeper:
    """A heartbeat thread renewing the leases of the rows this worker holds."""

    def __init__(self, ledger: Ledger, lease_s: float) -> None:
        self._ledger = ledger
        self._lease_s = lease_s
        self._tokens: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease-keeper", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def hold(self, token: str) -> None:
        with self._lock:
            self._tokens.add(token)

    def drop(self, token: str) -> None:
        with self._lock:
            self._tokens.discard(token)

    def _beat(self) -> None:
        interval = max(self._lease_s / 3, 0.2)
        while not self._stop.wait(interval):
            with self._lock:
                tokens = list(self._tokens)
            try:
                renew_leases(self._ledger, tokens, self._lease_s)
            except Exception:  # a missed beat only shortens the lease; the next one may land
                logger.warning(
                    "lease renewal failed", extra={"event": "lease_renewal_failed"}, exc_info=True
                )
