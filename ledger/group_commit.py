"""Group commit: the writes that many threads hand in at about the same time, committed in one
transaction, each thread still returning only once its own write is durable.

A row thread records every step's outcome before its next request, so a worker with dozens of
rows in flight commits hundreds of small transactions a second; each costs a connection
checkout, `BEGIN`, a few statements and `COMMIT`, and on SQLite they queue for the one write
lock anyway. Here the first thread to arrive while nobody commits becomes the *leader*: it
takes every write waiting (its own among them), hands them to their `GroupWriter` in one
transaction, and wakes the others; writes that arrived meanwhile go to the next leader, one
of the threads that handed them in. Nothing runs in the background, and a thread alone commits
at once, as it would on its own.

A writer's `write_many` must apply every write of the group or raise. When it raises, or the
commit fails, the transaction is rolled back and each write is made again alone (`write_one`,
its own transaction) so that each thread gets its own outcome: the one whose claim was lost
hears `ClaimLostError`, the others commit as if nothing had happened.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

P = TypeVar("P")
P_contra = TypeVar("P_contra", contravariant=True)

# The most writes one transaction takes: a bound on its size and on a leader's time.
MAX_GROUP = 256


class GroupWriter(Protocol[P_contra]):
    """Applies one kind of write: many in the caller's transaction, or one in its own."""

    def write_many(self, connection: Connection, payloads: Sequence[P_contra]) -> None:
        """Apply every write in `connection`'s transaction, or raise (it is rolled back)."""

    def write_one(self, payload: P_contra) -> None:
        """Apply one write in a transaction of its own; raise its caller's error."""


class _Entry(Generic[P]):
    """One write handed in; its thread is woken once: when it is committed (`done`), or to
    lead the next group.

    The wake-up is a bare lock, taken at birth and released by the one who wakes the thread:
    each thread waits once and is woken once (see `_lead`), and a lock costs a fraction of a
    `threading.Event`, whose every wait builds a condition's lock anew.
    """

    __slots__ = ("_signal", "done", "error", "payload", "writer")

    def __init__(self, writer: GroupWriter[P], payload: P) -> None:
        self.writer = writer
        self.payload = payload
        self.done = False
        self.error: BaseException | None = None
        self._signal = threading.Lock()
        self._signal.acquire()

    def wait(self) -> None:
        """Block until `wake`."""
        self._signal.acquire()

    def wake(self) -> None:
        """Let the thread of this write go on (once)."""
        self._signal.release()


class GroupCommit:
    """Commits the writes handed to `submit` by many threads in shared transactions."""

    def __init__(self, engine: Engine, *, max_group: int = MAX_GROUP) -> None:
        self._engine = engine
        self._max_group = max_group
        self._lock = threading.Lock()
        self._queue: list[_Entry[Any]] = []
        self._leading = False
        # Counters for the operator and the tests: transactions committed, writes in them.
        self.transactions = 0
        self.writes = 0

    @property
    def waiting(self) -> int:
        """Writes handed in that no leader has taken yet."""
        with self._lock:
            return len(self._queue)

    def submit(self, writer: GroupWriter[P], payload: P) -> None:
        """Apply `payload` with `writer`; return once it is committed, or raise its error."""
        entry = _Entry(writer, payload)
        with self._lock:
            self._queue.append(entry)
            leads = not self._leading
            self._leading = True
        if not leads:
            # Woken once: when the group holding this write is committed, or to lead the next
            # (each thread is woken for its own write only, never for everyone's).
            entry.wait()
            leads = not entry.done
        if leads:
            self._lead(entry)
        if entry.error is not None:
            raise entry.error

    def _lead(self, mine: _Entry[Any]) -> None:
        """Commit groups until `mine` is committed, then hand the lead to the oldest write still
        waiting. Bounded: each group takes the oldest writes, `mine` among them within
        len(queue) / max_group groups."""
        while not mine.done:
            with self._lock:
                group = self._queue[: self._max_group]
                del self._queue[: self._max_group]
            try:
                self._commit(group)
            except BaseException:  # an interrupt: nobody may be left waiting for a leader
                with self._lock:
                    self._wake(group, mine)
                    self._hand_over(mine)
                raise
            with self._lock:
                self._wake(group, mine)
                if mine.done:
                    self._hand_over(mine)

    @staticmethod
    def _wake(group: list[_Entry[Any]], mine: _Entry[Any]) -> None:
        for entry in group:
            if entry is not mine:
                entry.wake()

    def _hand_over(self, mine: _Entry[Any]) -> None:
        """(With the lock held.) The lead goes to the oldest waiting write, or to nobody."""
        if mine in self._queue:  # interrupted before `mine` was written: it is given up
            self._queue.remove(mine)
            mine.done = True
        if self._queue:
            self._queue[0].wake()
        else:
            self._leading = False

    def _commit(self, group: list[_Entry[Any]]) -> None:
        try:
            try:
                with self._engine.begin() as connection:
                    for writer, payloads in _by_writer(group):
                        writer.write_many(connection, payloads)
            except Exception:
                # Which write failed, and why, is each write's own business: alone, each one
                # commits or raises its caller's error (a lost claim, a failed invariant).
                for entry in group:
                    try:
                        entry.writer.write_one(entry.payload)
                    except Exception as error:
                        entry.error = error
                    entry.done = True
                    self._count(1)
                return
            for entry in group:
                entry.done = True
            self._count(len(group))
        except BaseException as error:  # an interrupt: no caller may wait for ever
            for entry in group:
                if not entry.done:
                    entry.error = error
                    entry.done = True
            raise

    def _count(self, writes: int) -> None:
        with self._lock:
            self.transactions += 1
            self.writes += writes


def _by_writer(group: list[_Entry[Any]]) -> list[tuple[GroupWriter[Any], list[Any]]]:
    """The group's payloads per writer, writers in order of first appearance."""
    split: dict[int, tuple[GroupWriter[Any], list[Any]]] = {}
    for entry in group:
        split.setdefault(id(entry.writer), (entry.writer, []))[1].append(entry.payload)
    return list(split.values())
