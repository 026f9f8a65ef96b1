"""System tests: `ledger` as a subprocess against the simulator on a real socket (127.0.0.1).

What they hold `ledger` to (SPEC sections 1, 5, 6):

* under rate limits, 5xx, hangs past the client's timeout, writes applied then answered 5xx or
  dropped, "400 but created" (half of them without the person's calling part) and lag before
  a new user shows up, every valid row ends `success` or pending for a transient reason,
  nothing exists twice on the simulator, and every success row's person matches its CSV line
  field by field; with the faults gone, `ledger retry` + `ledger work` finish every row;
* a finished CSV worked again from an empty ledger makes no write at all;
* the artifacts account for every row exactly once, and `work` exits 0 only when every row is
  terminal, 4 when stopped by MAX_BATCHES or SIGTERM/SIGINT (after finishing the rows in
  flight), and a restart completes the run.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from ledger.simulator.faults import FaultConfig
from ledger.simulator.sample import write_sample_csv
from tests.support.revoked import running_revoked_simulator
from tests.support.system import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    Workspace,
    expect_exit,
    faults_for_a_while,
    in_background,
    ingest,
    ingested,
    ledger_env,
    run_ledger,
    running_simulator,
    wait_for,
    write_subset_csv,
)
from tests.support.system_checks import (
    LedgerRow,
    check_artifacts,
    check_no_duplicates,
    check_remote_matches,
    finished_rows,
    read_ledger,
    read_steps,
    rows_created_despite_an_error,
    status_counts,
)

WRITE_METHODS = ("POST ", "PUT ", "PATCH ", "DELETE ")
# A thousand rows meet every fault below many times over (see the checks after the run).
ROWS = 1000
# The rate limit is on for ten seconds of the faulty run only, from when half its rows are
# finished: by then the run is at its pace, on a fast machine as on a slow one.
RATE_LIMITED_FROM_ROWS = ROWS // 2
RATE_LIMITED_S = 10.0
RATE_LIMIT = {"rate_limit_rps": 100, "rate_limit_burst": 20}
RERUN_FIRST_ROWS = 300

# Every fault of SPEC section 7 at once, at rates a long run meets many times over.
FAULTS = FaultConfig(
    seed=11,
    latency_ms=1,
    latency_jitter_ms=4,
    retry_after_garbage_rate=0.2,
    error_rate=0.03,
    hang_rate=0.003,
    hang_s=2.0,  # past REQUEST_TIMEOUT_S=1
    write_error_rate=0.02,
    write_drop_rate=0.02,
    people_create_400_rate=0.03,
    # Half of those leave the person without location, license, extension or number.
    people_create_400_without_calling_share=0.5,
    lookup_delay_s=1.0,  # under LOOKUP_SETTLE_S=3
)


def transient(row: LedgerRow) -> bool:
    """Pending only because retries ran out (directly, after an earlier step, or for its
    location): what a fault-free retry must fix."""
    if row.reason_code == "retry_exhausted":
        return True
    wrapped = row.reason_code in ("half_applied", "dependency_failed")
    return wrapped and "retry_exhausted" in (row.reason_message or "")


def write_methods(state: dict[str, object]) -> dict[str, int]:
    """Requests per write route (whatever their answer) from GET /_sim/state."""
    by_route = state["requests_by_route"]
    assert isinstance(by_route, dict)
    return {
        route: sum(counts.values())
        for route, counts in by_route.items()
        if route.startswith(WRITE_METHODS)
    }


def work_until_done(ws: Workspace, env: dict[str, str]) -> dict[int, LedgerRow]:
    result = run_ledger(ws, env, "work", timeout=600)
    expect_exit(result, EXIT_OK)
    return read_ledger(ws)


@pytest.mark.slow
def test_faults_then_retry_then_rerun_from_an_empty_ledger(tmp_path: Path) -> None:
    csv_path = tmp_path / "users.csv"
    sample = write_sample_csv(csv_path, ROWS, locations=20, seed=5)
    valid = ROWS - sample.invalid_rows
    # One retry only: with these fault rates some requests do run out of retries. More rows
    # in flight than usual, so that hangs and settling lookups overlap, and big batches, so
    # that fewer batch ends wait for their slowest row.
    first = {"MAX_RETRIES": 1, "LEDGER_CONCURRENCY": 32, "BATCH_SIZE": 500}
    with ingested(running_simulator(FAULTS), csv_path, tmp_path / "first", **first) as run:
        sim, ws, env = run

        # (a) Under every fault: each valid row is success or pending for a transient reason.
        # The rate limit lasts ten seconds in the middle of the run: the client's AIMD limiter
        # takes a while to climb back after a cut (correct, but slow to test), and a cut made
        # before the run reaches its pace is deeper (the rate it observed was low).
        rate_limited = faults_for_a_while(
            sim,
            when=lambda: finished_rows(ws) >= RATE_LIMITED_FROM_ROWS,
            seconds=RATE_LIMITED_S,
            on=RATE_LIMIT,
            off={"rate_limit_rps": 0},
        )
        with rate_limited:
            started = time.monotonic()
            rows = work_until_done(ws, env)
            faulty_s = time.monotonic() - started
        counts = status_counts(rows)
        assert counts["rejected"] == sample.invalid_rows, counts
        assert counts["success"] + counts["pending"] == valid, counts
        odd = [r for r in rows.values() if r.status == "pending" and not transient(r)]
        assert not odd, [(r.row_id, r.reason_code, r.reason_message) for r in odd[:10]]
        check_artifacts(ws, csv_path, rows)
        state = sim.state()
        check_no_duplicates(state)
        check_remote_matches(sim.sim, csv_path, rows)
        # The run met the faults it was meant to meet.
        by_route = state["requests_by_route"]
        seen = {status for answers in by_route.values() for status in answers}
        assert {"429", "hang", "drop"} <= seen, seen
        assert seen & {"500", "502", "503", "504"}, seen
        assert "400" in by_route["POST /v1/people"], by_route["POST /v1/people"]
        was_pending = {row_id for row_id, row in rows.items() if row.status == "pending"}
        touched = rows_created_despite_an_error(ws)
        assert touched, "no create was answered badly yet applied: the faults missed"

        # Faults off, pending rows back to ready, work again: everything succeeds.
        sim.put_faults(FaultConfig())
        retried = run_ledger(ws, env, "retry")
        expect_exit(retried, EXIT_OK)
        assert f"{len(was_pending)} pending row(s) are ready again" in retried.stdout
        rows = work_until_done(ws, env)
        assert status_counts(rows) == {"success": valid, "rejected": sample.invalid_rows}
        check_artifacts(ws, csv_path, rows)
        state = sim.state()
        check_no_duplicates(state)
        assert check_remote_matches(sim.sim, csv_path, rows) == valid
        assert state["counts"]["people"] == valid, state["counts"]

        # (b) Finished rows worked again from an empty ledger: all unchanged, not one write.
        # The rows the faults touched (pending then retried, created despite an error
        # answer) and the first few hundred, as a CSV of their own, to keep this quick.
        subset = tmp_path / "finished.csv"
        kept = write_subset_csv(
            csv_path, subset, was_pending | touched | set(range(1, RERUN_FIRST_ROWS + 1))
        )
        writes_before, write_routes_before = state["writes"], write_methods(state)
        again = Workspace(tmp_path / "again")
        env_again = ledger_env(again, sim.base_url, LEDGER_CONCURRENCY=32)
        ingest(again, env_again, subset)
        rows = work_until_done(again, env_again)
        assert status_counts(rows)["success"] + status_counts(rows)["rejected"] == kept
        check_artifacts(again, subset, rows)
        changed = {
            (row_id, step, status)
            for row_id, steps in read_steps(again).items()
            for step, status in steps.items()
            if status != "unchanged"
        }
        assert not changed, sorted(changed)[:10]
        state = sim.state()
        assert state["writes"] == writes_before
        assert write_methods(state) == write_routes_before
        check_no_duplicates(state)
    print(
        f"\nfaulty run of {ROWS} rows: {faulty_s:.1f}s, {len(was_pending)} pending, "
        f"{len(touched)} created despite an error; re-run of {kept} rows"
    )


def test_max_batches_then_sigterm_then_sigint_then_restart(tmp_path: Path) -> None:
    csv_path = tmp_path / "users.csv"
    sample = write_sample_csv(csv_path, 300, locations=3, invalid_rows=3, seed=9)
    valid = 300 - sample.invalid_rows
    # Slow enough answers that a signal finds rows in flight.
    slow = running_simulator(FaultConfig(latency_ms=30, lookup_delay_s=0.5))
    with ingested(slow, csv_path, tmp_path / "w", BATCH_SIZE=50, LEDGER_CONCURRENCY=8) as run:
        sim, ws, env = run

        # MAX_BATCHES=1: one batch done, rows still ready → exit 4; artifacts show the done.
        result = run_ledger(ws, {**env, "MAX_BATCHES": "1"}, "work")
        expect_exit(result, EXIT_INTERRUPTED)
        rows = read_ledger(ws)
        counts = status_counts(rows)
        assert counts["success"] == 50 and counts["ready"] == valid - 50, counts
        check_artifacts(ws, csv_path, rows, finished=False)

        for signum in (signal.SIGTERM, signal.SIGINT):
            done_before = status_counts(read_ledger(ws))["success"]
            with in_background(ws, env, "work", tag=signum.name) as process:
                assert wait_for(
                    lambda target=done_before + 20: (
                        status_counts(read_ledger(ws))["success"] >= target
                    ),
                    60,
                ), "work made no progress"
                process.send_signal(signum)
                sent = time.monotonic()
                code = process.wait(timeout=30)
            stopped_in = time.monotonic() - sent
            stderr = (ws.root / f"{signum.name}.stderr").read_text()
            assert code == EXIT_INTERRUPTED, (signum.name, code, stderr)
            assert "Traceback" not in stderr, stderr
            assert "finishing the rows in flight" in stderr, stderr
            assert stopped_in < 10, f"{signum.name}: took {stopped_in:.1f}s to stop"
            rows = read_ledger(ws)
            counts = status_counts(rows)
            assert counts["claimed"] == 0, counts  # in-flight rows finished, the rest released
            assert counts["ready"] > 0, f"{signum.name} came too late to test anything: {counts}"
            assert counts["pending"] == 0, counts
            # A row that was started was finished: no ready row has a recorded step.
            steps = read_steps(ws)
            abandoned = [r for r in rows.values() if r.status == "ready" and steps.get(r.row_id)]
            assert not abandoned, [(r.row_id, steps[r.row_id]) for r in abandoned[:10]]
            check_artifacts(ws, csv_path, rows, finished=False)

        # MAX_BATCHES exactly what is left: the bound is hit as the last row ends → exit 0.
        left = -(-status_counts(read_ledger(ws))["ready"] // 50)
        result = run_ledger(ws, {**env, "MAX_BATCHES": str(left)}, "work")
        expect_exit(result, EXIT_OK)
        rows = read_ledger(ws)
        assert status_counts(rows) == {"success": valid, "rejected": sample.invalid_rows}
        check_artifacts(ws, csv_path, rows)
        check_no_duplicates(sim.state())
        assert check_remote_matches(sim.sim, csv_path, rows) == valid

        # Nothing left to do: work again exits 0 at once, without a single request.
        before = sim.state()["requests_total"]
        expect_exit(run_ledger(ws, env, "work"), EXIT_OK)
        assert sim.state()["requests_total"] == before


def test_circuit_breaker_exits_3_then_retry_after_the_fix_completes(tmp_path: Path) -> None:
    csv_path = tmp_path / "users.csv"
    sample = write_sample_csv(csv_path, 120, locations=2, invalid_rows=2, seed=4)
    valid = 120 - sample.invalid_rows
    # The token is revoked after the preflight read: one refused from the start stops `work`
    # before any row (test_work_preflight.py).
    revoked = running_revoked_simulator()
    with ingested(revoked, csv_path, tmp_path / "w", BATCH_SIZE=60, LEDGER_CONCURRENCY=4) as run:
        sim, ws, env = run
        result = run_ledger(ws, env, "work")
        expect_exit(result, 3)
        assert "circuit breaker" in result.stderr, result.stderr
        rows = read_ledger(ws)
        counts = status_counts(rows)
        # The batch stopped after its first rows: the others were never tried and stay ready.
        assert counts["claimed"] == 0 and counts["ready"] >= valid - 60, counts
        assert 10 <= counts["pending"] < 60, counts
        reasons_seen = {r.reason_code for r in rows.values() if r.status == "pending"}
        assert reasons_seen <= {"auth_invalid", "dependency_failed"}, reasons_seen
        check_artifacts(ws, csv_path, rows, finished=False)
        assert sim.state()["writes"] == 0

        # The token is fixed: the pending rows are retried and everything completes.
        sim.put_faults(FaultConfig())
        reasons = ("--reason", "auth_invalid", "--reason", "dependency_failed")
        expect_exit(run_ledger(ws, env, "retry", *reasons), EXIT_OK)
        expect_exit(run_ledger(ws, env, "work"), EXIT_OK)
        rows = read_ledger(ws)
        assert status_counts(rows) == {"success": valid, "rejected": sample.invalid_rows}
        check_artifacts(ws, csv_path, rows)
        check_no_duplicates(sim.state())
        assert check_remote_matches(sim.sim, csv_path, rows) == valid


def test_every_batch_logs_its_start_and_end(tmp_path: Path) -> None:
    """SPEC 6: batch start and end are logged; only repeated identical *errors* are
    summarized. Twenty quick batches (well past the identical lines after which a repeat is
    summarized) must give twenty start and twenty end lines."""
    csv_path = tmp_path / "users.csv"
    write_sample_csv(csv_path, 100, locations=2, invalid_rows=0, seed=6)
    settings = {"BATCH_SIZE": 5, "LEDGER_CONCURRENCY": 8}
    with ingested(running_simulator(), csv_path, tmp_path / "w", **settings) as (_, ws, env):
        expect_exit(run_ledger(ws, env, "work"), EXIT_OK)
    lines = [json.loads(line) for line in ws.log_file.read_text(encoding="utf-8").splitlines()]
    for event in ("batch_start", "batch_end"):
        logged = [line for line in lines if line.get("event") == event]
        assert sorted(line["batch_id"] for line in logged) == list(range(1, 21)), event
        assert not [line for line in logged if "repeated" in line], event
