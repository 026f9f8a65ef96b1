"""A `work` process SIGKILLed the moment its create of a person was applied, and the next one
reading the org while Webex still hides that person from its listings (SPEC section 6): the
listing misses the person, yet the row is not created again. Its `started` record sends it to
its own lookup, which finds the person once Webex shows it.

The simulator's clock is the test's: a new person stays hidden (far longer than any restart)
until the second worker's listing has been answered, then time jumps past the lag.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ledger.row_rules import COLUMNS
from ledger.simulator.core import Simulator
from ledger.simulator.faults import FaultConfig
from ledger.simulator.messages import Fault, SimRequest, SimResponse
from ledger.simulator.server import serve
from tests.support.csvfiles import write_csv
from tests.support.people import person, phone
from tests.support.system import (
    EXIT_OK,
    TOKEN,
    SimHandle,
    Workspace,
    expect_exit,
    ingest,
    ledger_env,
    run_ledger,
    start_ledger,
)
from tests.support.system_checks import person_differences

LAG_S = 3600.0  # how long a new person is missing from lookups and listings


class ShiftedClock:
    """Monotonic time that a test can move forward."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.shift


class KillAfterFirstCreate(Simulator):
    """Kills `victim` right after the first POST /v1/people is applied, before its answer is
    sent; remembers the emails each listing of the org's people showed, and lets the lag pass
    once the second listing was answered."""

    def __init__(self, **kwargs: Any) -> None:
        self.clock = ShiftedClock()
        super().__init__(clock=self.clock, **kwargs)
        self.victim: subprocess.Popen[bytes] | None = None
        self.listed: list[set[str]] = []
        self._kill_lock = threading.Lock()

    def handle(self, request: SimRequest) -> SimResponse | Fault:
        answer = super().handle(request)
        if request.path != "/v1/people":
            return answer
        if request.method == "POST":
            with self._kill_lock:
                victim, self.victim = self.victim, None
            if victim is not None:
                victim.send_signal(signal.SIGKILL)
                victim.wait(timeout=30)
        elif request.query_value("email") is None and isinstance(answer, SimResponse):
            items = (answer.json() or {}).get("items") or []
            self.listed.append({email for item in items for email in item.get("emails", [])})
            if len(self.listed) == 2:
                self.clock.shift += LAG_S
        return answer


@pytest.mark.slow
def test_a_listing_that_lags_after_a_killed_create_makes_no_second_person(
    tmp_path: Path,
) -> None:
    sim = KillAfterFirstCreate(faults=FaultConfig(lookup_delay_s=LAG_S), token=TOKEN)
    sim.add_location("HQ", calling=True)
    handle = SimHandle(sim, serve(sim))
    rows = [person(n, phone_number=phone(n)) for n in range(1, 5)]
    try:
        ws = Workspace(tmp_path / "w")
        # No settle time: the `started` record alone must keep the listing from answering.
        env = ledger_env(ws, handle.base_url, LOOKUP_SETTLE_S=0, LEDGER_CONCURRENCY=1)
        ingest(ws, env, write_csv(tmp_path / "users.csv", COLUMNS, rows))

        first = start_ledger(ws, env, "work", "--quiet", tag="killed")
        sim.victim = first
        assert first.wait(timeout=120) == -signal.SIGKILL
        created = [email for email, count in sim.people_created_by_email().items() if count]
        assert created == ["user1@example.com"]  # applied, its answer never heard

        expect_exit(run_ledger(ws, env, "work", "--quiet"), EXIT_OK)
    finally:
        handle.close()

    # The second worker's listing was read while Webex still hid user1.
    assert len(sim.listed) == 2
    assert "user1@example.com" not in sim.listed[1]
    assert sim.people_created_by_email() == {f"user{n}@example.com": 1 for n in range(1, 5)}
    # Not even sent again (Webex would have refused it with 409, which ends in a lookup too).
    # (In any order: row threads outnumber the one request slot, and take it as they come.)
    creates = [r.body for r in sim.request_log if r.route == "POST /v1/people"]
    emails = sorted(email for body in creates for email in body["emails"])
    assert emails == [f"user{n}@example.com" for n in range(1, 5)]
    assert sim.users_by_email() == {f"user{n}@example.com": 1 for n in range(1, 5)}
    for row in rows:
        assert person_differences(sim, row) == []
