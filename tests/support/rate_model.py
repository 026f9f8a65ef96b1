"""A rate-limited server and worker threads that hammer it, in virtual time.

The server is a token bucket (a limit in requests/s that may change over time; by default it
holds one second's worth, like the simulator's) answering 429 with `Retry-After: 1` when it is
empty; each answer takes 10 ms. Worker threads loop as the
client's do: wait their turn at the `Throttle`, send, and report the answer to it; after a 429
a thread also waits out `Retry-After` itself, as the client's retry does.

The threads are real threads running the real `Throttle`, but only one runs at a time and time
moves only when every thread sleeps: `VirtualThreads.sleep` hands control to the thread whose
wake-up comes first. A minute of traffic takes a fraction of a second and every run is the same.

    result = run_model(limit=100, threads=8, seconds=60)
    result.accepted_share()   # accepted requests / (limit x seconds)
    result.throttled_share()  # 429 answers / all answers
"""

from __future__ import annotations

import functools
import heapq
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ledger.pacing import AdaptiveRateLimiter, Throttle
from ledger.rate_sharing import RateExchange, RateShare, SharedRateLimit
from tests.support.clock import WALL_START, FakeTime

RETRY_AFTER_S = 1.0
LATENCY_S = 0.01


class RateLimiterLike(Protocol):
    @property
    def rate(self) -> float | None: ...


class ThrottleLike(Protocol):
    """What the workers use of `ledger.pacing.Throttle` (an older one fits too)."""

    @property
    def limiter(self) -> RateLimiterLike | None: ...

    def wait_turn(self) -> float: ...

    def on_throttled(
        self, status: int, pause: float | None, log_fields: Mapping[str, object]
    ) -> None: ...

    def on_accepted(self) -> None: ...


ThrottleFactory = Callable[[Callable[[], float], Callable[[float], None]], ThrottleLike]


def client_throttle(clock: Callable[[], float], sleep: Callable[[float], None]) -> Throttle:
    """The throttle `WebexClient` builds with `adaptive_rate_limit=True`."""
    return Throttle(clock=clock, sleep=sleep, limiter=AdaptiveRateLimiter(clock=clock))


def shared_throttle(exchange: RateExchange, worker_id: str) -> ThrottleFactory:
    """The client's throttle, sharing its limit through `exchange` as `work` does."""

    def build(clock: Callable[[], float], sleep: Callable[[float], None]) -> Throttle:
        throttle = client_throttle(clock, sleep)
        assert throttle.limiter is not None
        throttle.sharing = SharedRateLimit(
            throttle.limiter,
            exchange,
            worker_id,
            clock=clock,
            wall_clock=lambda: WALL_START + clock(),
        )
        return throttle

    return build


class MemoryExchange:
    """The ledger's table of reports, in memory: `exchange` keeps the latest of each process."""

    def __init__(self) -> None:
        self.reports: dict[str, RateShare] = {}
        self.trades = 0

    def exchange(self, mine: RateShare) -> list[RateShare]:
        self.trades += 1
        self.reports[mine.worker_id] = mine
        return list(self.reports.values())


class _Stopped(Exception):
    """Raised in a worker thread when virtual time has run out."""


class VirtualThreads:
    """Run functions on threads one at a time, in the virtual time of a `FakeTime`."""

    def __init__(self, time: FakeTime, *, until: float) -> None:
        self._time = time
        self._until = until
        self._lock = threading.Lock()
        self._queue: list[tuple[float, int, int]] = []  # (wake-up, order, thread index)
        self._order = 0
        self._gates: list[threading.Lock] = []
        self._local = threading.local()
        self._stopped = False
        self._done = threading.Event()
        self._errors: list[BaseException] = []

    def sleep(self, seconds: float) -> None:
        """Called by a worker thread: let the others run until `seconds` of virtual time pass."""
        me: int = self._local.index
        with self._lock:
            self._push(self._time.now + max(0.0, seconds), me)
            self._hand_over()
        self._wait(me)

    def run(self, workers: list[Callable[[], None]]) -> None:
        """Run every worker (each loops until time is up); raise the first worker's error."""
        self._gates = [threading.Lock() for _ in workers]
        for gate in self._gates:
            gate.acquire()
        threads = [
            threading.Thread(target=self._body, args=(index, work), daemon=True)
            for index, work in enumerate(workers)
        ]
        with self._lock:
            for index in range(len(workers)):
                self._push(self._time.now, index)
        for thread in threads:
            thread.start()
        with self._lock:
            self._hand_over()
        # A safety net only: a model run takes well under a second of real time.
        if not self._done.wait(timeout=300):
            raise TimeoutError("the virtual threads never finished")
        for thread in threads:
            thread.join(timeout=10)
        if self._errors:
            raise self._errors[0]

    def _body(self, index: int, work: Callable[[], None]) -> None:
        self._local.index = index
        try:
            self._wait(index)
            work()
        except _Stopped:
            pass
        except BaseException as error:  # reported by run(), in the test's thread
            with self._lock:
                self._errors.append(error)
                self._stop()
            return
        with self._lock:  # a worker that returns gives up its turn for good
            self._hand_over()

    def _push(self, at: float, index: int) -> None:
        heapq.heappush(self._queue, (at, self._order, index))
        self._order += 1

    def _hand_over(self) -> None:
        """Wake the thread due first (under the lock), or stop when time is up."""
        if self._stopped:
            return
        if not self._queue or self._queue[0][0] >= self._until:
            self._stop()
            return
        at, _, index = heapq.heappop(self._queue)
        self._time.now = max(self._time.now, at)
        self._gates[index].release()

    def _stop(self) -> None:
        self._stopped = True
        for _, _, index in self._queue:
            self._gates[index].release()
        self._queue.clear()
        self._done.set()

    def _wait(self, index: int) -> None:
        self._gates[index].acquire()
        if self._stopped:
            raise _Stopped


@dataclass
class TokenBucketServer:
    """Answers True (accepted) while its bucket holds a token, else False (429)."""

    limit: Callable[[float], float]  # requests/s at a given time
    burst_s: float = 1.0  # the bucket holds this many seconds' worth of the current limit
    tokens: float = field(init=False, default=-1.0)
    refilled_at: float = field(init=False, default=0.0)

    def take(self, now: float) -> bool:
        rate = self.limit(now)
        size = max(1.0, rate * self.burst_s)
        if self.tokens < 0:  # the first request finds a full bucket
            self.tokens = size
        self.tokens = min(size, self.tokens + (now - self.refilled_at) * rate)
        self.refilled_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class ModelResult:
    """What the server answered, counted per second of virtual time."""

    seconds: int
    limit: Callable[[float], float]
    accepted: list[int]
    throttled: list[int]
    rates: list[float | None] = field(default_factory=list)  # the limiter's, each second
    accepted_by_process: list[list[int]] = field(default_factory=list)

    def accepted_share(self, start: int = 0, end: int | None = None) -> float:
        """Accepted requests over [start, end) seconds / what the limit allowed meanwhile."""
        stop = self.seconds if end is None else end
        allowed = sum(self.limit(second + 0.5) for second in range(start, stop))
        return sum(self.accepted[start:stop]) / allowed

    def throttled_share(self, start: int = 0, end: int | None = None) -> float:
        stop = self.seconds if end is None else end
        refused = sum(self.throttled[start:stop])
        answered = refused + sum(self.accepted[start:stop])
        return refused / answered if answered else 0.0


def run_model(
    *,
    limit: float | Callable[[float], float],
    threads: int,
    seconds: int = 60,
    burst_s: float = 1.0,
    latency_s: float = LATENCY_S,
    stagger_s: float = 0.0,
    throttle: ThrottleFactory | None = None,
) -> ModelResult:
    """`threads` workers send as fast as the throttle lets them for `seconds` of virtual time.

    `throttle` builds the throttle from a clock and a sleep (default: the client's own, with
    its adaptive limiter).
    """
    process = ModelProcess(threads, throttle if throttle is not None else client_throttle)
    return run_processes(
        limit=limit,
        processes=[process],
        seconds=seconds,
        burst_s=burst_s,
        latency_s=latency_s,
        stagger_s=stagger_s,
    )


@dataclass(frozen=True)
class ModelProcess:
    """One client process: its threads share one throttle, from `start_s` to `stop_s`.

    Between `idle_s[0]` and `idle_s[1]` it sends nothing but stays live, as a `work` process
    does while it prepares a batch; with `leaves_when_idle` it leaves the shared limit as that
    starts, as `work` does while it waits on the rows other processes hold.
    """

    threads: int
    throttle: ThrottleFactory = client_throttle
    start_s: float = 0.0
    stop_s: float = math.inf
    leaves: bool = True  # at `stop_s` it tells the others sharing its limit, or it just dies
    idle_s: tuple[float, float] = (math.inf, math.inf)
    leaves_when_idle: bool = False


def run_processes(
    *,
    limit: float | Callable[[float], float],
    processes: Sequence[ModelProcess],
    seconds: int = 60,
    burst_s: float = 1.0,
    latency_s: float = LATENCY_S,
    stagger_s: float = 0.0,
    time: FakeTime | None = None,
) -> ModelResult:
    """Several client processes, each with its own throttle, against one server.

    Each process's throttle is built (from the shared virtual clock and sleep) when its first
    thread starts; `result.rates` follows the first process's limiter and
    `result.accepted_by_process[i][second]` counts process i's accepted requests.
    """
    limit_at = limit if callable(limit) else (lambda _now, fixed=float(limit): fixed)
    time = time if time is not None else FakeTime()
    scheduler = VirtualThreads(time, until=float(seconds))
    server = TokenBucketServer(limit_at, burst_s=burst_s)
    result = ModelResult(seconds, limit_at, [0] * seconds, [0] * seconds)
    result.accepted_by_process = [[0] * seconds for _ in processes]
    gates: dict[int, ThrottleLike] = {}
    no_fields: dict[str, object] = {}

    def gate_of(process: int) -> ThrottleLike:
        if process not in gates:
            gates[process] = processes[process].throttle(time.monotonic, scheduler.sleep)
        return gates[process]

    def worker(process: int, index: int) -> None:
        spec = processes[process]
        start = spec.start_s + index * stagger_s  # workers that start one after another
        if start:
            scheduler.sleep(start)
        gate = gate_of(process)
        while time.now < spec.stop_s:
            if spec.idle_s[0] <= time.now < spec.idle_s[1]:
                sharing = gate.sharing if isinstance(gate, Throttle) else None
                if index == 0 and spec.leaves_when_idle and sharing is not None:
                    sharing.leave()  # as `work` does when it waits on the others' rows
                scheduler.sleep(spec.idle_s[1] - time.now)
                continue
            gate.wait_turn()
            now = time.now
            accepted = server.take(now)
            second = min(int(now), seconds - 1)
            if process == 0:
                while len(result.rates) <= second:
                    result.rates.append(gate.limiter.rate if gate.limiter is not None else None)
            scheduler.sleep(latency_s)
            if accepted:
                result.accepted[second] += 1
                result.accepted_by_process[process][second] += 1
                gate.on_accepted()
            else:
                result.throttled[second] += 1
                gate.on_throttled(429, RETRY_AFTER_S, no_fields)
                scheduler.sleep(RETRY_AFTER_S)  # the client's retry waits out Retry-After too
        if index == 0 and spec.leaves and isinstance(gate, Throttle) and gate.sharing is not None:
            gate.sharing.leave()  # as `WebexClient.close()` does

    workers = [
        functools.partial(worker, process, index)
        for process, spec in enumerate(processes)
        for index in range(spec.threads)
    ]
    scheduler.run(workers)
    return result
