"""A fake clock: time moves only when something sleeps or a test advances it.

time = FakeTime()
WebexClient(settings, sleep=time.sleep, clock=time.monotonic, wall_clock=time.wall)
time.sleeps        every sleep asked for, in order
Simulator(clock=time)  a bare clock: calling it reads the monotonic time
"""

from __future__ import annotations

import threading

WALL_START = 1_800_000_000.0


class FakeTime:
    """Monotonic and wall clocks that move only when something sleeps (thread-safe)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def __call__(self) -> float:
        return self.monotonic()

    def wall(self) -> float:
        return WALL_START + self.monotonic()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
