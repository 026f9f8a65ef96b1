#!/usr/bin/env python3
"""Benchmark `ledger work` against the simulator on a real socket, to choose its concurrency.

Each case writes a sample CSV (`write_sample_csv`), serves a fresh simulator on 127.0.0.1 in
a thread of this process, ingests into a fresh SQLite ledger, then runs `ledger work` as a
child process and measures it:

    rows/s            valid rows finished / wall seconds of `work`
    req/row           simulator requests (GET /_sim/state) / success rows
    cpu ms/req        CPU of the `work` process (getrusage(RUSAGE_CHILDREN) around it) / requests
    sim cpu s         CPU of this process meanwhile: the simulator's share of the machine
    429 %             requests answered 429 / requests
    of limit          (rate-limited case) requests/s and non-429 requests/s / the limit

Cases: a sweep of LEDGER_CONCURRENCY on a small file with API latency; (a) a big file with
latency and no rate limit; (b) the same latency with a rate limit (fewer rows by default).

    .venv/bin/python scripts/bench_work.py                      # sweep, (a), (b)
    .venv/bin/python scripts/bench_work.py --only sweep --sweep 4,8,16,32 --sweep-rows 3000
    .venv/bin/python scripts/bench_work.py --only a --rows 21000 --concurrency 16
    .venv/bin/python scripts/bench_work.py --only b --rate-rows 3000 --rate-limit 100
    .venv/bin/python scripts/bench_work.py --only a --rows 3000 --profile /tmp/work.pstat

`--profile PATH` runs the `work` child under yappi (every thread, CPU clock; `pip install
yappi`) or, without yappi, cProfile (main thread only: the rows run in worker threads, so
cProfile alone says little), and writes a pstats file plus a readable PATH.txt.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ledger.config import DEFAULT_CONCURRENCY, Settings
from ledger.simulator.core import Simulator
from ledger.simulator.faults import FaultConfig
from ledger.simulator.sample import write_sample_csv
from ledger.simulator.server import serve

TOKEN = "bench-token"
PROFILED = "_profiled"


@dataclass(frozen=True)
class Case:
    name: str
    rows: int
    concurrency: int | None
    faults: FaultConfig


@dataclass(frozen=True)
class Measure:
    case: Case
    valid_rows: int
    success: int
    wall_s: float
    cpu_s: float
    sim_cpu_s: float
    requests: int
    throttled: int
    exit_code: int

    @property
    def rows_per_s(self) -> float:
        return self.valid_rows / self.wall_s

    def line(self) -> str:
        case = self.case
        concurrency = case.concurrency or DEFAULT_CONCURRENCY
        text = (
            f"{case.name:<8} rows={case.rows:>6} conc={concurrency:>3} "
            f"wall={self.wall_s:7.1f}s rows/s={self.rows_per_s:6.1f} "
            f"req/row={self.requests / max(self.success, 1):5.2f} "
            f"cpu ms/req={1000 * self.cpu_s / max(self.requests, 1):5.2f} "
            f"work cpu={self.cpu_s:6.1f}s sim cpu={self.sim_cpu_s:6.1f}s "
            f"429={100 * self.throttled / max(self.requests, 1):5.1f}%"
        )
        limit = case.faults.rate_limit_rps
        if limit:
            sent = self.requests / self.wall_s
            served = (self.requests - self.throttled) / self.wall_s
            text += f" req/s={sent:6.1f} ({sent / limit:.2f} of limit, {served / limit:.2f} served)"
        if self.success != self.valid_rows or self.exit_code != 0:
            text += f" !! exit {self.exit_code}, {self.success}/{self.valid_rows} success"
        return text


def child_env(root: Path, base_url: str, concurrency: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
    env |= {
        "WEBEX_BASE_URL": base_url,
        "WEBEX_ACCESS_TOKEN": TOKEN,
        "LEDGER_DATABASE_URL": f"sqlite:///{root / 'ledger.db'}",
        "LEDGER_OUTPUT_DIR": str(root / "out"),
        "LEDGER_LOG_FILE": str(root / "ledger.log"),
        "REQUEST_TIMEOUT_S": "10",
    }
    if concurrency is not None:
        env["LEDGER_CONCURRENCY"] = str(concurrency)
    return env


def run_case(case: Case, profile: Path | None = None) -> Measure:
    with tempfile.TemporaryDirectory(prefix="bench-work-") as folder:
        root = Path(folder)
        csv_path = root / "users.csv"
        sample = write_sample_csv(csv_path, case.rows, locations=20, seed=1)
        sim = Simulator(faults=case.faults, token=TOKEN)
        server = serve(sim)
        try:
            env = child_env(root, server.base_url, case.concurrency)
            cli = [sys.executable, "-m", "ledger.cli"]
            subprocess.run([*cli, "ingest", str(csv_path)], env=env, cwd=root, check=True,
                           capture_output=True)  # fmt: skip
            work = [*cli, "work", "--quiet"]
            if profile is not None:
                work = [sys.executable, __file__, PROFILED, str(profile), "work", "--quiet"]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            own_before = time.process_time()
            started = time.monotonic()
            done = subprocess.run(work, env=env, cwd=root, capture_output=True, text=True)
            wall = time.monotonic() - started
            own = time.process_time() - own_before
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if done.returncode != 0:
                sys.stderr.write(done.stderr[-2000:])
            with httpx.Client(base_url=server.origin) as admin:
                state: dict[str, Any] = admin.get("/_sim/state").json()
        finally:
            server.stop()
        success = _success_rows(root)
    throttled = sum(counts.get("429", 0) for counts in state["requests_by_route"].values())
    return Measure(
        case=case,
        valid_rows=case.rows - sample.invalid_rows,
        success=success,
        wall_s=wall,
        cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        sim_cpu_s=own,
        requests=int(state["requests_total"]),
        throttled=throttled,
        exit_code=done.returncode,
    )


def _success_rows(root: Path) -> int:
    import sqlite3

    with sqlite3.connect(root / "ledger.db") as db:
        return int(db.execute("SELECT count(*) FROM rows WHERE status = 'success'").fetchone()[0])


def profiled_child(out: str, args: list[str]) -> None:
    """Run `ledger ARGS` in this process under yappi (or cProfile); write OUT and OUT.txt."""
    from ledger.cli import app

    try:
        import yappi  # type: ignore[import-not-found]
    except ImportError:
        yappi = None
    if yappi is None:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            app(args, standalone_mode=False)
        finally:
            profiler.disable()
            profiler.dump_stats(out)
            with open(out + ".txt", "w") as text:
                pstats.Stats(out, stream=text).sort_stats("cumulative").print_stats(80)
        return
    yappi.set_clock_type("cpu")
    yappi.start(builtins=True)
    try:
        app(args, standalone_mode=False)
    finally:
        yappi.stop()
        stats = yappi.get_func_stats()
        stats.save(out, type="pstat")
        columns = {0: ("name", 100), 1: ("ncall", 12), 2: ("tsub", 9), 3: ("ttot", 9)}
        with open(out + ".txt", "w") as text:
            text.write("=== by own time (tsub)\n")
            stats.sort("tsub").print_all(out=text, columns=columns)
            text.write("\n=== by total time (ttot)\n")
            stats.sort("ttot").print_all(out=text, columns=columns)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == PROFILED:
        profiled_child(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("sweep", "a", "b"), action="append")
    parser.add_argument("--rows", type=int, default=21_000, help="rows of case (a)")
    parser.add_argument("--concurrency", type=int, help="LEDGER_CONCURRENCY of (a) and (b)")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--sweep", default="4,8,16,32", help="concurrencies of the sweep")
    parser.add_argument("--sweep-rows", type=int, default=3000)
    parser.add_argument("--rate-limit", type=float, default=100.0, help="requests/s of (b)")
    parser.add_argument("--rate-rows", type=int, default=3000, help="rows of case (b)")
    parser.add_argument("--profile", type=Path, help="profile the `work` child of each case")
    options = parser.parse_args()
    only = set(options.only or ("sweep", "a", "b"))
    latency = FaultConfig(latency_ms=options.latency_ms)
    cases: list[Case] = []
    if "sweep" in only:
        cases += [
            Case("sweep", options.sweep_rows, int(c), latency)
            for c in options.sweep.split(",")
            if c.strip()
        ]
    if "a" in only:
        cases.append(Case("a", options.rows, options.concurrency, latency))
    if "b" in only:
        limited = latency.model_copy(update={"rate_limit_rps": options.rate_limit})
        cases.append(Case("b", options.rate_rows, options.concurrency, limited))
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    for number, case in enumerate(cases):
        profile = None
        if options.profile is not None:
            profile = options.profile.with_name(
                f"{options.profile.stem}-{number}-{case.name}{options.profile.suffix}"
            )
        measure = run_case(case, profile)
        print(measure.line(), f"load={os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
