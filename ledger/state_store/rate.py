"""The `work` processes' reports on the rate limit they share (`ledger.rate_sharing`).

Each process rewrites its own row of `rate_shares` about once a second and reads the others'
in the same short transaction; nothing here is per request. A row is keyed by the Webex base
URL (`scope`: the processes of one ledger calling one API share its limit) and the worker id.
Rows unseen for `forget_after_s` are deleted, in a transaction of their own, so that no
process ever holds its own row while it waits for another's.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from ledger.database import Ledger
from ledger.models import Base
from ledger.rate_sharing import REPORTS_KEPT_S, RateExchange, RateShare
from ledger.records import as_utc

logger = logging.getLogger(__name__)

_SHARES = Base.metadata.tables["rate_shares"]
_COLUMNS = (
    _SHARES.c.worker_id,
    _SHARES.c.seen_at,
    _SHARES.c.rate_per_s,
    _SHARES.c.limit_per_s,
    _SHARES.c.throttled_at,
    _SHARES.c.used_per_s,
)


def exchange_rate_shares(
    ledger: Ledger, scope: str, mine: RateShare, *, forget_after_s: float = REPORTS_KEPT_S
) -> list[RateShare]:
    """Write this process's report; return every report of `scope` seen lately, its own too."""
    values = {
        "seen_at": _datetime(mine.seen_at),
        "rate_per_s": mine.rate_per_s,
        "limit_per_s": mine.limit_per_s,
        "throttled_at": None if mine.throttled_at is None else _datetime(mine.throttled_at),
        "used_per_s": mine.used_per_s,
    }
    with ledger.write_connection() as connection:
        written = connection.execute(
            update(_SHARES)
            .where(_SHARES.c.scope == scope, _SHARES.c.worker_id == mine.worker_id)
            .values(values)
        ).rowcount
        if not written:
            connection.execute(
                insert(_SHARES).values(scope=scope, worker_id=mine.worker_id, **values)
            )
        found = connection.execute(select(*_COLUMNS).where(_SHARES.c.scope == scope)).all()
    reports = [
        RateShare(
            worker_id=worker_id,
            seen_at=as_utc(seen_at).timestamp(),
            rate_per_s=rate_per_s,
            limit_per_s=limit_per_s,
            throttled_at=None if throttled_at is None else as_utc(throttled_at).timestamp(),
            used_per_s=used_per_s,
        )
        for worker_id, seen_at, rate_per_s, limit_per_s, throttled_at, used_per_s in found
    ]
    forget_before = mine.seen_at - forget_after_s
    if any(report.seen_at < forget_before for report in reports):
        with ledger.write_connection() as connection:
            connection.execute(
                delete(_SHARES).where(
                    _SHARES.c.scope == scope, _SHARES.c.seen_at < _datetime(forget_before)
                )
            )
    return [report for report in reports if report.seen_at >= forget_before]


def rate_exchange(ledger: Ledger, scope: str) -> RateExchange:
    """`exchange_rate_shares` for `scope`, as `SharedRateLimit` calls it.

    A ledger that fails (locked past its timeout, a lost connection) gives no news this time:
    the process paces on its own meanwhile. The first failure and the recovery are logged.
    """
    failing = False

    def exchange(mine: RateShare) -> list[RateShare] | None:
        nonlocal failing
        try:
            reports = exchange_rate_shares(ledger, scope, mine)
        except SQLAlchemyError as error:
            if not failing:
                logger.warning(
                    f"the rate limit is not shared for now: {type(error).__name__}",
                    extra={"event": "rate_share_failed"},
                )
            failing = True
            return None
        if failing:
            logger.info("the rate limit is shared again", extra={"event": "rate_share_resumed"})
        failing = False
        return reports

    return exchange


def _datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
