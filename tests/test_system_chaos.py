"""`ledger` as a subprocess against the simulator's `chaos` profile, as `ledger demo --profile
chaos` runs it (the same sample, faults and settings), on a socket the test keeps open.

Chaos stops some rows (retries run out, a "400 but created" whose person stays invisible past
the settle...). What it must never do: leave a success row whose person differs from its CSV
line, make anything twice, or stop a row in a way that `ledger retry` + `ledger work` cannot
finish once the faults are gone (a `conflict` on the person an earlier try created, settings
reads that answer 404 after every retry because a recorded step was trusted).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.simulator.faults import PROFILES, FaultConfig
from ledger.simulator.sample import write_sample_csv
from tests.support.system import (
    EXIT_OK,
    Workspace,
    expect_exit,
    ingest,
    ledger_env,
    run_ledger,
    running_simulator,
)
from tests.support.system_checks import (
    check_artifacts,
    check_no_duplicates,
    check_remote_matches,
    read_ledger,
    status_counts,
)

ROWS = 300
# What `ledger demo --rows 300 --profile chaos` runs (ledger.demo): its sample, its faults...
CHAOS = PROFILES["chaos"].model_copy(update={"hang_s": 5.0, "seed": 7})
# ...and its settings; None leaves a variable at its default, as the demo does.
DEMO_SETTINGS: dict[str, object] = {
    "REQUEST_TIMEOUT_S": 3,
    "LOOKUP_SETTLE_S": 8,  # under chaos's lag of 10 s: some new people outlast the settle
    "RETRY_BACKOFF_S": None,
    "RETRY_AFTER_DEFAULT_S": None,
    "RETRY_AFTER_CAP_S": None,
    "LEDGER_LEASE_S": None,
    "BATCH_SIZE": None,
    "LEDGER_CONCURRENCY": None,
}


@pytest.mark.slow
def test_what_chaos_alone_stopped_succeeds_after_one_retry(tmp_path: Path) -> None:
    csv_path = tmp_path / "users.csv"
    sample = write_sample_csv(csv_path, ROWS, locations=max(2, min(30, ROWS // 100)), seed=7)
    valid = ROWS - sample.invalid_rows
    with running_simulator(CHAOS) as sim:
        ws = Workspace(tmp_path / "chaos")
        env = ledger_env(ws, sim.base_url, **DEMO_SETTINGS)
        ingest(ws, env, csv_path)

        expect_exit(run_ledger(ws, env, "work", timeout=600), EXIT_OK)
        rows = read_ledger(ws)
        counts = status_counts(rows)
        assert counts["success"] + counts["pending"] == valid, counts
        check_artifacts(ws, csv_path, rows)
        check_no_duplicates(sim.state())
        check_remote_matches(sim.sim, csv_path, rows)  # every success is true
        stopped = {row_id for row_id, row in rows.items() if row.status == "pending"}

        # Chaos is over; the operator retries what it stopped, once.
        sim.put_faults(FaultConfig())
        retried = run_ledger(ws, env, "retry")
        expect_exit(retried, EXIT_OK)
        assert f"{len(stopped)} pending row(s) are ready again" in retried.stdout
        expect_exit(run_ledger(ws, env, "work", timeout=600), EXIT_OK)

        rows = read_ledger(ws)
        still = [(r.row_id, r.reason_code, r.reason_message) for r in rows.values()]
        still = [line for line in still if rows[line[0]].status == "pending"]
        assert not still, still[:10]
        assert status_counts(rows) == {"success": valid, "rejected": sample.invalid_rows}
        check_artifacts(ws, csv_path, rows)
        state = sim.state()
        check_no_duplicates(state)
        assert state["counts"]["people"] == valid, state["counts"]
        assert state["counts"]["locations"] == sample.locations, state["counts"]
        assert check_remote_matches(sim.sim, csv_path, rows) == valid
    print(f"\nchaos stopped {len(stopped)} of {valid} rows; one retry finished them")
