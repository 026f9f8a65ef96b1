"""Requests counted by route for the work benchmark: a Simulator that tallies what it answers.

The simulator's own `requests_by_route` keys on the path template alone, which cannot tell a
lookup by email (`GET /people?email`) from a listing of a location's people
(`GET /people?locationId`). `CountingSimulator` answers exactly as `Simulator` does and also
counts each /v1 request under `METHOD /template?query-keys`, with the answer's status; the
counters can be cleared without touching the org, so that a re-run is counted on its own.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from contextlib import closing
from pathlib import Path

from ledger.simulator.core import Simulator
from ledger.simulator.faults import FaultConfig
from ledger.simulator.messages import Fault, SimRequest, SimResponse
from ledger.simulator.routes import match

API_PREFIX = "/v1"
# Paging and response-shape keys: a second page of a listing is the same route as the first.
IGNORED_QUERY_KEYS = frozenset({"callingData", "max", "start", "cursor"})
READ_METHOD = "GET"
THROTTLED = "429"

RouteCounts = Mapping[str, Counter[str]]


def route_key(request: SimRequest) -> str:
    """`GET /people?email`, `PUT /people/{id}/features/voicemail`, `POST /locations`..."""
    found = match(request.method, request.path)
    if found.route is None:
        template = request.path.removeprefix(API_PREFIX) + " (no such route)"
    else:
        template = found.route.template.removeprefix(API_PREFIX)
        for name in found.params:
            template = template.replace("{" + name + "}", "{id}")
    keys = sorted({key for key, _ in request.query} - IGNORED_QUERY_KEYS)
    query = "?" + "&".join(keys) if keys else ""
    return f"{request.method} {template}{query}"


class CountingSimulator(Simulator):
    """A Simulator that also counts every /v1 request by route key and status."""

    def __init__(self, *, faults: FaultConfig | None = None, token: str | None = None) -> None:
        # The request log keeps every body as parsed JSON: costly over 100,000 requests and
        # not needed here, so it is off.
        super().__init__(faults=faults, token=token, request_log_size=0)
        self._counts_lock = threading.Lock()
        self._counts: dict[str, Counter[str]] = {}
        # Non-429 answers by whole second since the counts were cleared: the shape of a run.
        self._started = time.monotonic()
        self._accepted_by_s: Counter[int] = Counter()

    def handle(self, request: SimRequest) -> SimResponse | Fault:
        """Answer as the Simulator does, then count the answer under its route."""
        outcome = super().handle(request)
        if request.path.startswith(API_PREFIX + "/"):
            status = str(outcome.status) if isinstance(outcome, SimResponse) else outcome.kind
            key = route_key(request)
            with self._counts_lock:
                self._counts.setdefault(key, Counter())[status] += 1
                if status != THROTTLED:
                    self._accepted_by_s[int(time.monotonic() - self._started)] += 1
        return outcome

    def route_counts(self) -> dict[str, Counter[str]]:
        """A copy of the counts since the start or the last `clear_route_counts()`."""
        with self._counts_lock:
            return {key: Counter(counts) for key, counts in self._counts.items()}

    def accepted_by_second(self) -> dict[int, int]:
        """Non-429 answers in each whole second since the start or the last clear."""
        with self._counts_lock:
            return dict(self._accepted_by_s)

    def clear_route_counts(self) -> None:
        """Start counting afresh; the org and the faults stay as they are."""
        with self._counts_lock:
            self._counts = {}
            self._started = time.monotonic()
            self._accepted_by_s = Counter()


def total(counts: RouteCounts) -> int:
    """Every request counted, whatever its answer."""
    return sum(sum(statuses.values()) for statuses in counts.values())


def throttled(counts: RouteCounts) -> int:
    """Requests answered 429."""
    return sum(statuses.get(THROTTLED, 0) for statuses in counts.values())


def writes(counts: RouteCounts) -> int:
    """POST/PUT/PATCH/DELETE requests, whatever their answer (429 included)."""
    return sum(
        sum(statuses.values())
        for key, statuses in counts.items()
        if not key.startswith(READ_METHOD + " ")
    )


def route_table(counts: RouteCounts, rows: int) -> list[str]:
    """One line per route, most requested first: requests, per row, and answers by status."""
    per = max(rows, 1)
    width = max([len(key) for key in counts] + [24])
    lines = [f"  {'route':<{width}} {'requests':>9} {'per row':>8}  answers"]
    ordered = sorted(counts.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    for key, statuses in ordered:
        count = sum(statuses.values())
        lines.append(
            f"  {key:<{width}} {count:>9} {count / per:>8.3f}  {_statuses(statuses.items())}"
        )
    count = total(counts)
    lines.append(f"  {'total':<{width}} {count:>9} {count / per:>8.3f}")
    lines.append(
        f"  {'  of which writes':<{width}} {writes(counts):>9} {writes(counts) / per:>8.3f}"
    )
    return lines


def timeline(by_second: Mapping[int, int], wall_s: float, limit: float, width: int = 5) -> str:
    """Accepted ÷ limit in each `width`-second window of a run: where the limit went unused."""
    windows = max(int(wall_s // width) + 1, 1)
    shares = []
    for window in range(windows):
        seconds = min(width, max(wall_s - window * width, 0.001))
        accepted = sum(by_second.get(window * width + s, 0) for s in range(width))
        shares.append(f"{accepted / (seconds * limit):.2f}")
    return f"  accepted ÷ limit per {width} s: " + " ".join(shares)


def _statuses(items: Iterable[tuple[str, int]]) -> str:
    return " ".join(f"{status}:{count}" for status, count in sorted(items))


def settle_tail(by_second: Mapping[int, int], wall_s: float, limit: float, ledger: Path) -> str:
    """Where a run under faults stops using the limit, and why: the run is busy until the last
    second with at least half the limit accepted; the rows that finish after that are counted
    with those whose create was sent more than once (a lost create, sent again only after
    LOOKUP_SETTLE_S found no person)."""
    busy = [second for second, accepted in by_second.items() if accepted >= 0.5 * limit]
    busy_end = max(busy, default=-1) + 1
    # From the end of the busy part to the last request (then the last row finishes; what
    # follows is the process's own end: artifacts, exit).
    tail_s = max(max(by_second, default=0) + 1 - busy_end, 0)
    used = sum(n for second, n in by_second.items() if second < busy_end)
    share = used / (busy_end * limit) if busy_end else 0.0
    with closing(sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)) as db:
        last = db.execute("SELECT MAX(julianday(finished_at)) FROM rows").fetchone()[0]
        in_tail, resent = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(EXISTS (SELECT 1 FROM steps s WHERE s.row_pk = r.id"
            " AND s.step = 'user' AND s.attempts >= 2)), 0) FROM rows r"
            " WHERE julianday(r.finished_at) > ? - ? / 86400.0",
            (last or 0.0, tail_s),
        ).fetchone()
    return (
        f"  busy until {busy_end} s (accepted ÷ limit {share:.2f} until then), then {tail_s} s "
        f"to the last request: {in_tail} row(s) finished in them, {resent} of them after "
        "sending their create again (a lost create waits LOOKUP_SETTLE_S before it is sent "
        f"again); wall {wall_s:.0f} s"
    )
