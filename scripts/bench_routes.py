"""Requests counted by route for the work benchmark: a Simulator that tallies what it answers.

The simulator's own `requests_by_route` keys on the path template alone, which cannot tell a
lookup by email (`GET /people?email`) from a listing of a location's people
(`GET /people?locationId`). `CountingSimulator` answers exactly as `Simulator` does and also
counts each /v1 request under `METHOD /template?query-keys`, with the answer's status; the
counters can be cleared without touching the org, so that a re-run is counted on its own.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping

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
