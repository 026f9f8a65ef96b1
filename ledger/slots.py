"""Request slots: at most LEDGER_CONCURRENCY requests in flight in a worker, and a row that
waits gives its slot to a row that can send.

A row thread holds a slot while it works a row (`held(start=True)`), so that no more than
LEDGER_CONCURRENCY rows are busy at once; while it sleeps before a retry or between the lookups
of a settling create (`released()`), the slot goes to another row, and it takes one back before
it goes on. A thread that holds none (a batch's preparation, the preflight) takes one for each
send only. Every request is sent holding a slot: the limit is on requests in flight, and a
worker with rows waiting out a backoff still sends at its full width.

Rows about to start wait behind every other taker: there are hundreds of them (a batch's rows
queue for the slots), and a batch's preparation, or a row back from a wait, that queued behind
them would wait for a whole batch's worth of requests, leaving the next batch unprepared.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from types import TracebackType


class RequestSlots:
    """`limit` slots shared by the threads of one client. Thread-safe."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"request slots must be at least 1, got {limit}")
        self.limit = limit
        self._lock = threading.Lock()
        self._first = threading.Condition(self._lock)  # takers served before rows starting
        self._starting = threading.Condition(self._lock)  # rows about to start
        self._free = limit
        self._first_waiting = 0
        self._starting_waiting = 0
        self._mine = threading.local()

    def holds(self) -> bool:
        """Whether the calling thread holds a slot now."""
        return bool(getattr(self._mine, "held", False))

    def held(self, *, start: bool = False) -> AbstractContextManager[None]:
        """Hold a slot for the block (waiting for one); a thread that holds one keeps it.
        `start`: a row about to start, which waits behind every other taker."""
        return _Switch(self, hold=True, start=start)

    def released(self) -> AbstractContextManager[None]:
        """Give the calling thread's slot up for the block (a wait), and take one back after."""
        return _Switch(self, hold=False)

    def waiting(self) -> tuple[int, int]:
        """How many threads wait for a slot now: (other takers, rows about to start)."""
        with self._lock:
            return self._first_waiting, self._starting_waiting

    def _take(self, *, start: bool) -> None:
        with self._lock:
            if start:
                self._starting_waiting += 1
                try:
                    while self._free == 0 or self._first_waiting:
                        self._starting.wait()
                finally:
                    self._starting_waiting -= 1
            else:
                self._first_waiting += 1
                try:
                    while self._free == 0:
                        self._first.wait()
                finally:
                    self._first_waiting -= 1
            self._free -= 1
            if self._free and not self._first_waiting:
                # Rows that waited while a first taker did: as many as slots are free.
                self._starting.notify(self._free)

    def _give(self) -> None:
        with self._lock:
            self._free += 1
            if self._first_waiting:
                self._first.notify()
            else:
                self._starting.notify()


# The two blocks as one class, not generator context managers: every request enters one.


class _Switch(AbstractContextManager[None]):
    """For the block, the calling thread holds a slot (`hold`) or holds none; as it was after.
    A thread already so changes nothing."""

    __slots__ = ("_hold", "_slots", "_start", "_switched")

    def __init__(self, slots: RequestSlots, *, hold: bool, start: bool = False) -> None:
        self._slots = slots
        self._hold = hold
        self._start = start  # a slot taken for the block: by a row about to start
        self._switched = False

    def __enter__(self) -> None:
        if self._slots.holds() != self._hold:
            self._set(self._hold, start=self._start)
            self._switched = True

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._switched:
            self._set(not self._hold, start=False)

    def _set(self, hold: bool, *, start: bool) -> None:
        slots = self._slots
        if hold:
            slots._take(start=start)
            slots._mine.held = True
        else:
            slots._mine.held = False
            slots._give()
