"""SIGKILL `ledger work` at random moments, again and again, then let it finish (SPEC section 6,
"Durable progress"): nothing lost, nothing duplicated, the org as the CSV says.

The simulator serves on 127.0.0.1 with mild ambiguous-write faults (writes applied then
answered 5xx or with a dropped connection, "400 but created") and a lag before a new user shows
up in the lookup by email that outlasts a restart, so a kill that lands between a create and
its record leaves the next worker a user it cannot see yet: the case the `started` record and
the settling lookup exist for. The kill moments come from a seeded generator and are counted
in finished rows (a few in seconds, to hit start-up), so the run gets its twenty kills on a
fast machine as on a slow one; the schedule is part of every failure message.
"""

from __future__ import annotations

import csv
import json
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from ledger.simulator.faults import FaultConfig
from ledger.simulator.sample import write_sample_csv
from tests.support.system import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    Workspace,
    in_background,
    ingested,
    running_simulator,
)
from tests.support.system_checks import (
    check_artifacts,
    check_no_duplicates,
    check_remote_matches,
    finished_rows,
    read_ledger,
    status_counts,
)

# Enough rows that the twenty kills (at most KILL_ROWS_MAX finished rows each) leave hundreds
# for the last start; more would only lengthen that last, uneventful stretch.
ROWS = 1000
KILLS = 20
KILL_ROWS_MAX = 60
MAX_STARTS = 60  # kills plus restarts: a run that never finishes fails, it does not hang
KILL_SEED = 20240607
# The lag outlasts a restart plus a lease (about 3 s): a restarted worker that forgot a
# create was under way would miss the user in its lookup and create it again.
FAULTS = FaultConfig(
    seed=5,
    write_error_rate=0.005,
    write_drop_rate=0.005,
    people_create_400_rate=0.005,
    lookup_delay_s=4.0,
)
HEADERS = {
    "results.csv": "timestamp,batch_id,row_id,entity_type,entity_key,step,status,http_status,"
    "message,remote_id",
    "pending_rows.csv": "timestamp,batch_id,row_id,entity_type,entity_key,step,reason_code,"
    "reason_message,http_status,raw_row_minified",
    "rejected_rows.csv": "timestamp,row_id,reason_code,reason_message,field,raw_row_minified",
}


def check_artifacts_whole(out_dir: Path) -> None:
    """After a kill, any artifact on disk is whole (a header, lines of the right width) and
    no row is in two of them: with no `retry` in between, a terminal row never changes file,
    so even files left by different exports cannot disagree."""
    row_ids: dict[str, set[str]] = {}
    for name, header in HEADERS.items():
        path = out_dir / name
        if not path.exists():
            continue
        with path.open(encoding="utf-8", newline="") as handle:
            lines = list(csv.reader(handle))
        assert lines and ",".join(lines[0]) == header, f"{name}: torn header"
        widths = Counter(len(line) for line in lines[1:])
        assert set(widths) <= {len(lines[0])}, f"{name}: torn lines {widths}"
        column = lines[0].index("row_id")
        row_ids[name] = {line[column] for line in lines[1:]}
    names = sorted(row_ids)
    for index, name in enumerate(names):
        for other in names[index + 1 :]:
            both = row_ids[name] & row_ids[other]
            assert not both, f"rows in {name} and {other}: {sorted(both)[:10]}"
    checkpoint = out_dir / "checkpoint.json"
    if checkpoint.exists():
        assert "last_completed_batch_id" in json.loads(checkpoint.read_text(encoding="utf-8"))


def kill_moment(rng: random.Random) -> tuple[str, float]:
    """When to kill: a quarter of the kills after a delay (often still starting up), the
    others once the worker has finished a random number of rows (mid-batch, mid-row)."""
    if rng.random() < 0.25:
        return "seconds", round(rng.uniform(0.2, 1.5), 2)
    return "rows", rng.randint(5, KILL_ROWS_MAX)


def wait_for_moment(
    process: subprocess.Popen[bytes], ws: Workspace, moment: tuple[str, float]
) -> bool:
    """Wait for the moment; False if the process ended first."""
    kind, amount = moment
    target = finished_rows(ws) + amount if kind == "rows" else 0
    deadline = time.monotonic() + (amount if kind == "seconds" else 120)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if kind == "rows" and finished_rows(ws) >= target:
            return True
        time.sleep(0.03)
    return process.poll() is None


@pytest.mark.slow
def test_sigkill_twenty_times_then_finish(tmp_path: Path) -> None:
    csv_path = tmp_path / "users.csv"
    sample = write_sample_csv(csv_path, ROWS, locations=20, seed=21)
    valid = ROWS - sample.invalid_rows
    rng = random.Random(KILL_SEED)
    schedule: list[object] = []
    started = time.monotonic()
    settings = {"LEDGER_LEASE_S": 2, "LOOKUP_SETTLE_S": 6, "BATCH_SIZE": 200}
    with ingested(running_simulator(FAULTS), csv_path, tmp_path / "w", **settings) as run:
        sim, ws, env = run
        kills = 0
        code: int | None = None
        for start in range(MAX_STARTS):
            with in_background(ws, env, "work", "--quiet", tag=f"work{start:02d}") as process:
                if kills < KILLS:
                    moment = kill_moment(rng)
                    if wait_for_moment(process, ws, moment):
                        process.send_signal(signal.SIGKILL)
                        process.wait(timeout=30)
                        kills += 1
                        schedule.append(moment)
                        check_artifacts_whole(ws.out_dir)
                        continue
                code = process.wait(timeout=300)
            schedule.append(("exit", code))
            context = f"start {start}, schedule {schedule}"
            assert code in (EXIT_OK, EXIT_INTERRUPTED), context
            if code == EXIT_OK:
                break
        else:
            pytest.fail(f"work did not finish in {MAX_STARTS} starts: {schedule}")
        elapsed = time.monotonic() - started
        assert kills == KILLS, f"the run finished after {kills} kills: {schedule}"

        rows = read_ledger(ws)
        counts = status_counts(rows)
        pending = Counter(row.reason_code for row in rows.values() if row.status == "pending")
        assert counts == {"success": valid, "rejected": sample.invalid_rows}, (
            counts,
            pending,
            schedule,
        )
        check_artifacts(ws, csv_path, rows)
        state = sim.state()
        check_no_duplicates(state)
        assert state["counts"]["people"] == valid, state["counts"]
        assert state["counts"]["locations"] == sample.locations, state["counts"]
        assert check_remote_matches(sim.sim, csv_path, rows) == valid
        # The faults were met: some creates were applied and their answer lost.
        by_route = state["requests_by_route"]
        assert "drop" in by_route["POST /v1/people"] or "400" in by_route["POST /v1/people"]
    print(f"\n{ROWS} rows, {kills} SIGKILLs, {len(schedule)} starts in {elapsed:.1f}s")
