"""Request slots (`ledger.slots`): rows about to start wait behind every other taker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ledger.slots import RequestSlots

# Longest a test waits for its threads to queue: a bound on a failing test, not a measured time.
BOUND_S = 30.0


def wait_until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + BOUND_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def take_in_turn(slots: RequestSlots, order: list[str], first: Callable[[], None]) -> None:
    """With the one slot held: three rows queue to start, then `first` queues (in a thread of
    its own) for a slot; the slot is given up. Each appends to `order` once it has the slot."""

    def row(n: int) -> None:
        with slots.held(start=True):
            order.append(f"row {n}")

    threads = [threading.Thread(target=row, args=(n,)) for n in range(1, 4)]
    with slots.held():
        for thread in threads:
            thread.start()
        assert wait_until(lambda: slots.waiting() == (0, 3))
        threads.append(threading.Thread(target=first))
        threads[-1].start()
        assert wait_until(lambda: slots.waiting() == (1, 3))
    for thread in threads:
        thread.join(BOUND_S)


def test_a_send_outside_a_row_goes_before_rows_queued_to_start() -> None:
    # A batch's preparation sends while hundreds of rows queue for the slots: behind them, it
    # would wait for a whole batch's worth of requests.
    slots = RequestSlots(1)
    order: list[str] = []

    def preparation() -> None:
        with slots.held():
            order.append("preparation")

    take_in_turn(slots, order, preparation)

    assert order == ["preparation", "row 1", "row 2", "row 3"]


def test_a_row_back_from_a_wait_goes_before_rows_queued_to_start() -> None:
    slots = RequestSlots(1)
    order: list[str] = []
    back = threading.Event()
    waiting = threading.Event()

    def row_in_a_backoff() -> None:
        with slots.held():
            with slots.released():
                waiting.set()
                back.wait(BOUND_S)
            order.append("back")

    backoff = threading.Thread(target=row_in_a_backoff)
    backoff.start()
    assert waiting.wait(BOUND_S)  # it gave its slot up, and sleeps

    take_in_turn(slots, order, back.set)
    backoff.join(BOUND_S)

    assert order == ["back", "row 1", "row 2", "row 3"]


def test_a_thread_holds_one_slot_however_deep_and_gives_it_back_on_error() -> None:
    slots = RequestSlots(2)
    free = slots._free  # what is left to take, as the slots count it
    assert not slots.holds()
    with slots.held(start=True):
        assert slots.holds() and slots._free == free - 1
        with slots.held():  # a request of the row: the row's slot, not a second one
            assert slots._free == free - 1
        assert slots.holds()  # the inner block did not give the row's slot away
        with slots.released():  # a wait: the slot goes to others meanwhile
            assert not slots.holds() and slots._free == free
            with slots.released():  # nothing left to give
                assert slots._free == free
        assert slots.holds() and slots._free == free - 1
    assert not slots.holds() and slots._free == free
    try:
        with slots.held():
            raise RuntimeError("a row's bug")
    except RuntimeError:
        pass
    assert not slots.holds() and slots._free == free
    try:
        with slots.held(), slots.released():
            raise RuntimeError("a wait interrupted")
    except RuntimeError:
        pass
    assert not slots.holds() and slots._free == free
