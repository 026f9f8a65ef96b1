"""Request counters per worker process and run, refreshed after every batch."""

from __future__ import annotations

from sqlalchemy import select

from ledger.database import Ledger
from ledger.models import WorkerStats
from ledger.records import utcnow


def save_worker_stats(
    ledger: Ledger,
    run_id: int,
    worker_id: str,
    *,
    requests: int,
    retries: int,
    throttled: int,
    wait_s: float,
) -> None:
    now = utcnow()
    with ledger.write() as session:
        record = session.scalars(
            select(WorkerStats).where(
                WorkerStats.run_id == run_id, WorkerStats.worker_id == worker_id
            )
        ).first()
        if record is None:
            record = WorkerStats(run_id=run_id, worker_id=worker_id, started_at=now)
            session.add(record)
        record.requests = requests
        record.retries = retries
        record.throttled = throttled
        record.wait_s = wait_s
        record.updated_at = now
