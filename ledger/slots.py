"""Request slots: at most LEDGER_CONCURRENCY requests in flight in a worker, and a row that
waits gives its slot to a row that can send.

A row thread holds a slot while it works a row (`held()`), so that no more than
LEDGER_CONCURRENCY rows are busy at once; while it sleeps before a retry or between the lookups
of a settling create (`released()`), the slot goes to another row, and it takes one back before
it goes on. A thread that holds none (a batch's preparation, the preflight) takes one for each
send only. Every request is sent holding a slot: the limit is on requests in flight, and a
worker with rows waiting out a backoff still sends at its full width.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class RequestSlots:
    """`limit` slots shared by the threads of one client. Thread-safe."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"request slots must be at least 1, got {limit}")
        self.limit = limit
        self._free = threading.Semaphore(limit)
        self._mine = threading.local()

    def holds(self) -> bool:
        """Whether the calling thread holds a slot now."""
        return bool(getattr(self._mine, "held", False))

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold a slot for the block (waiting for one); a thread that holds one keeps it."""
        if self.holds():
            yield
            return
        self._free.acquire()
        self._mine.held = True
        try:
            yield
        finally:
            self._mine.held = False
            self._free.release()

    @contextmanager
    def released(self) -> Iterator[None]:
        """Give the calling thread's slot up for the block (a wait), and take one back after."""
        if not self.holds():
            yield
            return
        self._mine.held = False
        self._free.release()
        try:
            yield
        finally:
            self._free.acquire()
            self._mine.held = True
