"""Claiming rows batch by batch, with static bounds, and keeping the claims alive.

`BatchSource` claims batches one at a time until the run has no claimable row, a bound is hit or
a stop is asked for. Every loop here has a fixed upper bound: the number of batches
(MAX_BATCHES, or a ceiling derived from the run's size), and the polls while other workers hold
the last rows. `LeaseKeeper` renews the leases of every claim this worker holds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
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


class BatchSource:
    """Claims a run's batches one at a time, lowest batch first, within the static bounds.

    `ended` says why no batch will come any more (None while some may): `finished`,
    `max_batches`, `stopped`, or `held_elsewhere`; `batches` counts the batches claimed.
    """

    def __init__(
        self,
        ledger: Ledger,
        run_id: int,
        worker_id: str,
        bounds: BatchBounds,
        *,
        should_stop: Callable[[], bool],
        wait: Callable[[float], bool],
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self._ledger = ledger
        self._run_id = run_id
        self._worker_id = worker_id
        self._bounds = bounds
        self._ceiling = bounds.ceiling()
        self._should_stop = should_stop
        self._wait = wait  # sleeps, and returns True when stopping
        # Called once as this worker starts waiting on the rows other workers hold (it has
        # nothing to send meanwhile), again after each batch it claims since.
        self._on_idle = on_idle
        self._idle = False
        # While other workers hold the last rows, poll until their leases could have expired.
        self._idle_polls_left = int(bounds.lease_s / 1.0) + 5
        self.ended: WorkEnd | None = None
        self.batches = 0

    def claim(self, *, working: bool) -> list[ClaimedRow] | None:
        """The next claimed batch, or None.

        While this worker still works a batch (`working`), None means "none now": ask again
        once that batch is done, when what is left of the run is known. Otherwise None comes
        with `ended` set; before that, while other workers hold the run's last rows, this
        polls (boundedly) until they finish them or their leases expire.
        """
        while self.ended is None:
            if self._should_stop():
                self.ended = WorkEnd.STOPPED
                return None
            if self.batches >= self._ceiling:
                if not working:
                    finished = run_is_finished(self._ledger, self._run_id)
                    self.ended = WorkEnd.FINISHED if finished else WorkEnd.MAX_BATCHES
                return None
            bounds = self._bounds
            rows = claim_batch(
                self._ledger, self._run_id, self._worker_id, bounds.batch_size, bounds.lease_s
            )
            if rows:
                self.batches += 1
                self._idle = False
                return rows
            if working:
                return None
            if run_is_finished(self._ledger, self._run_id):
                self.ended = WorkEnd.FINISHED
                return None
            if self._idle_polls_left <= 0:
                self.ended = WorkEnd.HELD_ELSEWHERE
                return None
            self._idle_polls_left -= 1
            if not self._idle and self._on_idle is not None:
                self._idle = True
                self._on_idle()
            if self._wait(1.0):
                self.ended = WorkEnd.STOPPED
        return None


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
