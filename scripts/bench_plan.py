#!/usr/bin/env python3
"""Benchmark `ledger plan` against the simulator on a real socket: requests per row by route
and wall time, next to `ledger work` on the same CSV.

A plan makes the lookups of `work` and none of its writes, so on the same org and ledger it
must cost at most the requests of a re-run (which also writes nothing). Each case writes a
sample CSV (`write_sample_csv`, 20 locations; see bench_work.py), serves a simulator on
127.0.0.1 in a thread of this process (20 ms latency unless said otherwise), ingests into a
fresh SQLite ledger, and runs `ledger plan --quiet` / `ledger work --quiet` as child processes
at the default LEDGER_CONCURRENCY:

    (1) plan of a NEW run (empty org), then `work` of it;
    (2) plan of a RE-RUN (the same finished CSV, an empty ledger, the populated org), then
        `work` of that re-run: the plan's requests must not exceed the re-run's;
    (3) with `--existing N`, a plan against an org already holding N people (as bench_work's
        org mode: a third of the CSV's users present without calling).

    .venv/bin/python scripts/bench_plan.py                     # 3,000 rows
    .venv/bin/python scripts/bench_plan.py --rows 21000
    .venv/bin/python scripts/bench_plan.py --rows 21000 --existing 21000
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench_org import CsvMix, accepted_rows, seed_populated_org
from bench_routes import route_table, total, writes
from bench_work import LEDGER, Bench, child_env, fresh_ledger, report, sample, serving

from ledger.simulator.faults import FaultConfig

PLAN_EXIT_CODES = (0, 5, 6)  # nothing to do, changes pending, rows blocked


@dataclass(frozen=True)
class PlanRun:
    """One `ledger plan`, measured."""

    rows: int
    wall_s: float
    cpu_s: float
    exit_code: int
    requests: int
    writes: int
    summary: str

    def line(self) -> str:
        return (
            f"  plan: exit {self.exit_code} · wall {self.wall_s:.1f} s · "
            f"{self.rows / self.wall_s:.0f} rows/s · {self.requests:,} requests = "
            f"{self.requests / max(self.rows, 1):.3f}/row · writes {self.writes} · "
            f"plan cpu {self.cpu_s:.1f} s\n  {self.summary}"
        )


def run_plan(bench: Bench, root: Path, rows: int) -> PlanRun:
    """`ledger plan --quiet` on the ledger in `root`, its requests counted by route."""
    bench.sim.clear_route_counts()
    env = child_env(root, bench.server.base_url, bench.concurrency, "plan")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(
        [*LEDGER, "plan", "--quiet"], env=env, cwd=root, capture_output=True, text=True
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in PLAN_EXIT_CODES:
        sys.stderr.write(done.stderr[-2000:])
    counts = bench.sim.route_counts()
    lines = done.stdout.strip().splitlines()
    print(f"\n  routes of the plan ({rows:,} rows):")
    for line in route_table(counts, rows):
        print(line)
    return PlanRun(
        rows=rows,
        wall_s=wall,
        cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        exit_code=done.returncode,
        requests=total(counts),
        writes=writes(counts),
        summary=lines[-1] if lines else "(no output)",
    )


def compare(plan: PlanRun, work_requests: int, what: str) -> None:
    rows = max(plan.rows, 1)
    verdict = "ok" if plan.requests <= work_requests else "MORE than"
    print(
        f"  plan {plan.requests / rows:.3f} requests/row vs {what} "
        f"{work_requests / rows:.3f}/row: {verdict} ({plan.requests:,} vs {work_requests:,})",
        flush=True,
    )


def cases(options: argparse.Namespace) -> None:
    def body(bench: Bench, folder: Path) -> None:
        csv_path = sample(folder, options.rows)
        root, mix = fresh_ledger(bench, folder, "new", csv_path)
        print(f"\n== (1) new run: {options.rows:,} rows, empty org\n  {mix.describe()}")
        plan = run_plan(bench, root, mix.rows)
        print(plan.line())
        work = bench.work(root, mix.rows, label="new")
        report("work of the new run", work, mix, None)
        compare(plan, work.requests, "work's new run (reads and writes)")

        root, mix = fresh_ledger(bench, folder, "rerun", csv_path)
        print(f"\n== (2) re-run: the same {options.rows:,} rows, empty ledger, populated org")
        plan = run_plan(bench, root, mix.rows)
        print(plan.line())
        rerun = bench.work(root, mix.rows, label="rerun")
        report("work of the re-run", rerun, mix, None)
        compare(plan, rerun.requests, "work's re-run")

    serving(FaultConfig(latency_ms=options.latency_ms), options, body)
    if options.existing:

        def populated(bench: Bench, folder: Path) -> None:
            csv_path = sample(folder, options.rows)
            root, mix = fresh_ledger(bench, folder, "org", csv_path)
            seeded = seed_populated_org(
                bench.sim, csv_path, accepted_rows(root / "ledger.db"), options.existing
            )
            print(f"\n== (3) org already holding many people: {options.rows:,} rows")
            print(f"  {seeded.describe()}\n  {CsvMix.of(seeded.present).describe()}")
            plan = run_plan(bench, root, mix.rows)
            print(plan.line())
            work = bench.work(root, mix.rows, label="org")
            report("work of that run", work, mix, None)
            compare(plan, work.requests, "work of that run")

        serving(FaultConfig(latency_ms=options.latency_ms), options, populated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--existing", type=int, default=0, help="people already in the org")
    parser.add_argument("--concurrency", type=int, help="LEDGER_CONCURRENCY (default: ledger's)")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    options = parser.parse_args()
    options.profile = None
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    cases(options)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
