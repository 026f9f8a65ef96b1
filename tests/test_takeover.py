"""A crash costs no idle time: rows held by a `work` of this host whose process is gone are
claimed again at once, not after LEDGER_LEASE_S (SPEC section 6, "Durable progress").

A worker names itself `host:pid`. Only when the host is this one and the pid no longer exists
is its lease cut short; a worker of another host, or a live pid here, keeps its rows until the
lease expires. The rows taken get a new token, so the dead worker's fence fails as before.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.database import Ledger
from ledger.error_handling import ClaimLostError
from ledger.simulator.faults import FaultConfig
from ledger.simulator.sample import write_sample_csv
from ledger.state_store import claim_batch, record_step
from tests.support.claims import row_ids, user_step
from tests.support.ledgers import make_run
from tests.support.system import (
    EXIT_OK,
    expect_exit,
    in_background,
    ingested,
    run_ledger,
    running_simulator,
    wait_for,
)
from tests.support.system_checks import (
    check_artifacts,
    check_no_duplicates,
    finished_rows,
    read_ledger,
    status_counts,
)

LONG_LEASE_S = 300.0
# Rows of the CLI test: the kill lands after the first 20 finish, leaving over a hundred held.
KILLED_RUN_ROWS = 150
HOST = socket.gethostname()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest) -> Ledger:
    """A fresh ledger on each engine (the fixtures are in tests/conftest.py)."""
    fixture = {"sqlite": "sqlite_ledger", "postgres": "pg_ledger"}[request.param]
    opened: Ledger = request.getfixturevalue(fixture)
    return opened


def dead_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_a_dead_worker_of_this_host_loses_its_rows_before_its_lease_ends(
    ledger: Ledger, tmp_path: Path
) -> None:
    run = make_run(ledger, tmp_path, rows=9, batch_size=2)  # accepted: 1 2 | 4 5 | 7 8
    gone = dead_pid()
    held = {
        holder: claim_batch(ledger, run.id, holder, limit=2, lease_s=LONG_LEASE_S)
        # The dead one claims last: any claim after it would already take its rows.
        for holder in (f"elsewhere.invalid:{gone}", f"{HOST}:{os.getpid()}", f"{HOST}:{gone}")
    }
    assert [row_ids(rows) for rows in held.values()] == [[1, 2], [4, 5], [7, 8]]

    taken = claim_batch(ledger, run.id, "restarted", limit=10, lease_s=60)

    assert row_ids(taken) == [7, 8]
    assert taken[0].claim_token != held[f"{HOST}:{gone}"][0].claim_token
    assert claim_batch(ledger, run.id, "another", limit=10, lease_s=60) == []
    # Fenced: the dead worker, were it still writing, would record nothing over the new owner.
    with pytest.raises(ClaimLostError):
        record_step(ledger, held[f"{HOST}:{gone}"][0], user_step(taken[0]))
    record_step(ledger, taken[0], user_step(taken[0]))


def test_a_pid_this_user_may_not_signal_counts_as_alive(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = make_run(ledger, tmp_path, rows=3, batch_size=2)  # accepted: 1 2
    holder = f"{HOST}:{dead_pid()}"
    assert row_ids(claim_batch(ledger, run.id, holder, limit=2, lease_s=LONG_LEASE_S)) == [1, 2]

    def not_permitted(pid: int, signum: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("ledger.state_store.claims.os.kill", not_permitted)
    assert claim_batch(ledger, run.id, "another", limit=10, lease_s=60) == []


def test_worker_names_that_are_not_host_and_pid_are_left_alone(
    ledger: Ledger, tmp_path: Path
) -> None:
    run = make_run(ledger, tmp_path, rows=12, batch_size=2)  # accepted: 1 2 4 5 7 8 10 11
    for holder in (f"{HOST}:0", f"{HOST}:-5", f"{HOST}:x", f"{HOST}:", HOST, f"{HOST}:99999999999"):
        assert claim_batch(ledger, run.id, holder, limit=1, lease_s=LONG_LEASE_S)
    left = claim_batch(ledger, run.id, "another", limit=10, lease_s=60)
    assert row_ids(left) == [10, 11]  # only the rows nobody held


# --- through the CLI: SIGKILL, then a restart that does not wait out the lease -------------


@pytest.mark.slow
def test_a_restart_after_sigkill_finishes_without_waiting_for_the_lease(tmp_path: Path) -> None:
    csv_path = tmp_path / "users.csv"
    sample = write_sample_csv(csv_path, KILLED_RUN_ROWS, locations=2, invalid_rows=0, seed=9)
    # One batch, so the kill lands among its rows, after its locations were provisioned.
    settings = {"LEDGER_LEASE_S": LONG_LEASE_S, "BATCH_SIZE": KILLED_RUN_ROWS}
    simulator = running_simulator(FaultConfig(latency_ms=20))
    with ingested(simulator, csv_path, tmp_path / "w", **settings) as (sim, ws, env):
        with in_background(ws, env, "work", "--quiet") as process:
            assert wait_for(lambda: finished_rows(ws) >= 20, timeout=120)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        held = status_counts(read_ledger(ws))["claimed"]
        assert held > 0, "the kill came after the batch: nothing was left to take over"

        started = time.monotonic()
        # Without the takeover this restart would poll for the whole lease (300 s), then stop
        # with exit 4 and the rows still claimed: the timeout fails it long before.
        result = run_ledger(ws, env, "work", "--quiet", timeout=LONG_LEASE_S / 3)
        elapsed = time.monotonic() - started

        expect_exit(result, EXIT_OK)
        rows = read_ledger(ws)
        assert status_counts(rows) == {"success": sample.rows - sample.invalid_rows}
        check_artifacts(ws, csv_path, rows)
        check_no_duplicates(sim.state())
    print(f"\n{held} rows taken over from the killed worker; finished in {elapsed:.1f}s")
