#!/usr/bin/env python3
"""Benchmark the adaptive rate limiter: requests/s accepted against a limit it does not know.

Webex publishes no rate limit and answers 429 with Retry-After, so the share of the limit a
run gets accepted is its speed. Each case runs the previous limiter ("old": its code is
copied below) and the current one ("new") and prints, for each:

    accepted/limit   requests answered on their merits / (limit x seconds)
    429 %            requests answered 429 / requests answered

Model (always): `tests/support/rate_model.py`, a token bucket (one second's worth by default)
answering 429 with `Retry-After: 1`, fed by N threads that send as fast as the throttle lets
them, 10 ms per answer, in virtual time (a minute takes about a second). Cases: limits of 20,
100 and 300 requests/s for 60 s from a cold start; a limit of 100 that halves at 30 s (measured
over 40-60 s); a limit of 50 that doubles at 30 s (measured over 90-120 s).

`--processes`: three processes of 32 threads against a limit of 100/s, each with its own
limiter, "alone" or "sharing" reports as `work` processes of one ledger do (through a table
in memory here): started together, two stopping at 20 s, or starting at 0, 20 and 40 s.

`--socket`: the real `WebexClient` against the simulator on 127.0.0.1 (`rate_limit_rps`
100 unless `--limit`), N threads of GET /licenses for `--seconds` of wall time each.

    .venv/bin/python scripts/bench_limiter.py
    .venv/bin/python scripts/bench_limiter.py --burst 1,0.5,0.25 --threads 8
    .venv/bin/python scripts/bench_limiter.py --processes --burst 1,0.25
    .venv/bin/python scripts/bench_limiter.py --socket --threads 8,32 --seconds 60
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the model lives in tests/

from ledger.config import Settings
from ledger.connection_client import WebexClient
from ledger.error_handling import WebexError
from ledger.pacing import SharedPace
from ledger.simulator.core import Simulator
from ledger.simulator.faults import FaultConfig
from ledger.simulator.server import serve
from tests.support.rate_model import (
    MemoryExchange,
    ModelProcess,
    ThrottleFactory,
    client_throttle,
    run_model,
    run_processes,
    shared_throttle,
)

TOKEN = "bench-token"


# --- the previous limiter, as it was -----------------------------------------------------------


class OldLimiter:
    """AIMD: unlimited until a 429, then 0.8 x the rate seen over 10 s; +1/s per 20 successes."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._rate: float | None = None
        self._next_slot = -math.inf
        self._starts: deque[float] = deque(maxlen=4096)
        self._streak = 0

    @property
    def rate(self) -> float | None:
        with self._lock:
            return self._rate

    def reserve(self) -> float:
        with self._lock:
            now = self._clock()
            slot = now if self._rate is None else max(now, self._next_slot)
            if self._rate is not None:
                self._next_slot = slot + 1.0 / self._rate
            self._starts.append(slot)
            return slot - now

    def _observed(self, now: float) -> float:
        while self._starts and self._starts[0] < now - 10.0:
            self._starts.popleft()
        if not self._starts:
            return 0.0
        return len(self._starts) / max(now - self._starts[0], 1.0)

    def on_throttled(self) -> float:
        with self._lock:
            rate = min(1000.0, max(1.0, 0.8 * self._observed(self._clock())))
            self._rate = rate if self._rate is None else min(self._rate, rate)
            self._streak = 0
            return self._rate

    def on_success(self) -> float | None:
        with self._lock:
            if self._rate is None or self._rate >= 1000.0:
                return None
            self._streak += 1
            if self._streak < 20:
                return None
            self._streak = 0
            self._rate = min(1000.0, self._rate + 1.0)
            return self._rate


class OldThrottle:
    """The shared pause and the limiter, as the previous `Throttle` ran them."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        limiter: OldLimiter | None,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self.limiter = limiter
        self._lock = threading.Lock()
        self._not_before = -math.inf
        self.sharing: SharedPace | None = None  # it shared nothing; the client asks

    def paused_for(self) -> float:
        with self._lock:
            return max(0.0, self._not_before - self._clock())

    def wait_turn(self) -> float:
        waited = 0.0
        for _ in range(50):
            pause = self.paused_for()
            if pause > 0:
                self._sleep(pause)
                waited += pause
                continue
            delay = self.limiter.reserve() if self.limiter is not None else 0.0
            if delay > 0:
                self._sleep(delay)
                waited += delay
            return waited
        return waited

    def on_throttled(
        self, status: int, pause: float | None, log_fields: Mapping[str, object]
    ) -> None:
        if pause is not None:
            with self._lock:
                self._not_before = max(self._not_before, self._clock() + pause)
        if status == 429 and self.limiter is not None:
            self.limiter.on_throttled()

    def on_accepted(self) -> None:
        if self.limiter is not None:
            self.limiter.on_success()


def old_throttle(clock: Callable[[], float], sleep: Callable[[float], None]) -> OldThrottle:
    return OldThrottle(clock=clock, sleep=sleep, limiter=OldLimiter(clock=clock))


LIMITERS: dict[str, ThrottleFactory] = {"old": old_throttle, "new": client_throttle}


# --- the model ---------------------------------------------------------------------------------


def row(label: str, cells: list[tuple[float, float]], note: str = "") -> str:
    """One line of the table: per limiter, accepted/limit and the 429 share."""
    text = f"{label:<30}" + "".join(
        f"{accepted:>22.3f}{100 * share:>8.2f} %" for accepted, share in cells
    )
    return text + note


def header() -> str:
    return f"{'case':<30}" + "".join(
        f"{name + ': accepted/limit':>22}{'429 %':>10}" for name in LIMITERS
    )


def halving(now: float) -> float:
    return 100.0 if now < 30 else 50.0


def doubling(now: float) -> float:
    return 50.0 if now < 30 else 100.0


def model_cases(bursts: list[float], thread_counts: list[int]) -> None:
    for burst in bursts:
        print(f"\nmodel: token bucket of {burst:g} s, Retry-After 1 s, 10 ms per answer")
        print(header())
        for limit in (20, 100, 300):
            for threads in thread_counts:
                cells = []
                for factory in LIMITERS.values():
                    got = run_model(limit=limit, threads=threads, burst_s=burst, throttle=factory)
                    cells.append((got.accepted_share(), got.throttled_share()))
                print(row(f"{limit}/s, {threads} threads, 0-60 s", cells))
        for threads in thread_counts:
            cells = []
            for factory in LIMITERS.values():
                got = run_model(limit=halving, threads=threads, burst_s=burst, throttle=factory)
                cells.append((got.accepted_share(40, 60), got.throttled_share(30, 60)))
            print(row(f"100->50/s, {threads} thr, 40-60 s", cells))
        for threads in thread_counts:
            cells = []
            for factory in LIMITERS.values():
                got = run_model(
                    limit=doubling, threads=threads, seconds=120, burst_s=burst, throttle=factory
                )
                cells.append((got.accepted_share(90, 120), got.throttled_share(30, 120)))
            print(row(f"50->100/s, {threads} thr, 90-120 s", cells))


# --- several processes sharing one limit -------------------------------------------------------


def process_cases(bursts: list[float]) -> None:
    """Three processes of 32 threads, each with its own limiter: alone, or sharing reports."""
    inf = math.inf
    cases = [
        ("together, 0-60 s", (0.0, 0.0, 0.0), (inf, inf, inf), 60, (0, 60)),
        ("two stop at 20 s, 25-50 s", (0.0, 0.0, 0.0), (20.0, 20.0, inf), 50, (25, 50)),
        ("start at 0/20/40 s, 20-70 s", (0.0, 20.0, 40.0), (inf, inf, inf), 70, (20, 70)),
    ]
    for burst in bursts:
        print(f"\nprocesses: 3 x 32 threads, limit 100/s, token bucket of {burst:g} s")
        print(
            f"{'case':<30}"
            + "".join(f"{name + ': accepted/limit':>26}{'429 %':>10}" for name in SHARING)
            + "   accepted per process (sharing)"
        )
        for label, starts, stops, seconds, (start, end) in cases:
            cells, split = [], ""
            for factory in SHARING.values():
                throttles = factory()
                processes = [
                    ModelProcess(32, throttle, first, last)
                    for throttle, first, last in zip(throttles, starts, stops, strict=True)
                ]
                got = run_processes(limit=100, processes=processes, seconds=seconds, burst_s=burst)
                cells.append((got.accepted_share(start, end), got.throttled_share(start, end)))
                split = ", ".join(f"{sum(p[start:end]):,}" for p in got.accepted_by_process)
            text = f"{label:<30}" + "".join(
                f"{accepted:>26.3f}{100 * share:>8.2f} %" for accepted, share in cells
            )
            print(f"{text}   {split}")


def alone() -> list[ThrottleFactory]:
    return [client_throttle] * 3


def sharing() -> list[ThrottleFactory]:
    board = MemoryExchange()
    return [shared_throttle(board.exchange, f"worker-{n}") for n in range(3)]


SHARING: dict[str, Callable[[], list[ThrottleFactory]]] = {"alone": alone, "sharing": sharing}


# --- the real client on a socket ---------------------------------------------------------------


@dataclass(frozen=True)
class SocketMeasure:
    accepted: int
    throttled: int
    answered: int
    rate: float | None


@contextmanager
def client_with(name: str, settings: Settings, threads: int) -> Iterator[WebexClient]:
    if name == "new":
        with WebexClient(settings, max_connections=threads) as client:
            yield client
        return
    with (
        mock.patch("ledger.connection_client.AdaptiveRateLimiter", OldLimiter),
        mock.patch("ledger.connection_client.Throttle", OldThrottle),
    ):
        client = WebexClient(settings, max_connections=threads)
    with client:
        yield client


def socket_case(name: str, limit: float, threads: int, seconds: float) -> SocketMeasure:
    server = serve(Simulator(faults=FaultConfig(rate_limit_rps=limit), token=TOKEN))
    settings = Settings(
        WEBEX_ACCESS_TOKEN=TOKEN,
        WEBEX_BASE_URL=server.base_url,
        LEDGER_CONCURRENCY=threads,
        REQUEST_TIMEOUT_S=10,
    )
    stop = threading.Event()
    try:
        with client_with(name, settings, threads) as client:

            def work() -> None:
                while not stop.is_set():
                    try:
                        client.request("GET", "/licenses")
                    except WebexError:
                        pass  # retries exhausted: the next request tries again

            workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
            for worker in workers:
                worker.start()
            time.sleep(seconds)
            stats = client.stats()
            stop.set()
            for worker in workers:
                worker.join(timeout=120)
    finally:
        server.stop()
    answered = stats.responses_2xx + stats.responses_4xx + stats.responses_5xx
    return SocketMeasure(stats.responses_2xx, stats.status_429, answered, stats.rate_limit_per_s)


def socket_cases(limit: float, thread_counts: list[int], seconds: float) -> None:
    print(f"\nsocket: WebexClient, simulator on 127.0.0.1 limited to {limit:g}/s, ", end="")
    print(f"GET /licenses for {seconds:g} s")
    print(header() + "   limiter rate at the end, load")
    for threads in thread_counts:
        cells = []
        rates = []
        for name in LIMITERS:
            got = socket_case(name, limit, threads, seconds)
            cells.append((got.accepted / (limit * seconds), got.throttled / max(got.answered, 1)))
            rates.append("-" if got.rate is None else f"{got.rate:.1f}")
        load = f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        print(row(f"{limit:g}/s, {threads} threads", cells, f"   {', '.join(rates)}; {load}"))


def numbers(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threads", default="8,32", help="thread counts (default 8,32)")
    parser.add_argument("--burst", default="1", help="token bucket sizes in seconds (model)")
    parser.add_argument("--processes", action="store_true", help="also three processes")
    parser.add_argument("--socket", action="store_true", help="also run the real client")
    parser.add_argument("--limit", type=float, default=100.0, help="simulator limit (socket)")
    parser.add_argument("--seconds", type=float, default=60.0, help="wall seconds per run")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the client logs every pause; the table is the output
    thread_counts = [int(n) for n in numbers(args.threads)]
    model_cases(numbers(args.burst), thread_counts)
    if args.processes:
        process_cases(numbers(args.burst))
    if args.socket:
        socket_cases(args.limit, thread_counts, args.seconds)


if __name__ == "__main__":
    main()
