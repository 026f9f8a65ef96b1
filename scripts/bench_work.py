#!/usr/bin/env python3
"""Benchmark `ledger work` against the simulator on a real socket: requests per row by route,
rate-limited throughput, and the work process's CPU.

Webex rate-limits, so requests per row is the speed of the product. Each mode writes a
sample CSV (`write_sample_csv`: 20 locations, ~80 % of rows with a number, ~90 % with an
extension, ~35 % naming settings), serves a simulator on 127.0.0.1 in a thread of this
process (20 ms latency unless said otherwise), ingests into a fresh SQLite ledger, runs
`ledger work --quiet` as child process(es) at the default LEDGER_CONCURRENCY, and counts every
request by route (`METHOD /template?query-keys`, paging keys left out) and answer.

Modes (`--only`, repeatable; default: new, org, limit, faults):

    new     (1) a NEW run: empty org, every user created; then (2) a RE-RUN of the same
            finished CSV from an empty ledger against the now-populated org. Each prints
            requests per row by route, and the measured total against the target for this
            CSV's settings mix (see bench_org.py): new user = 1 create + 1 write per settings
            endpoint the row names + <= 0.1 amortised; re-run = 1 read per settings endpoint
            named + <= 0.1 amortised, zero writes. Then (3) `work` once more on the finished
            ledger: its CPU is what a process costs whatever its rows (start-up, checks,
            artifacts), and each run's CPU per request beyond it is printed.
    org     (3) an org that already holds many people (`--existing`, default 21,000): the
            CSV's locations exist, every third of its users is present without calling, the
            rest are other calling users half in the CSV's locations, half in 5 others.
    limit   (4) a rate-limited new run (`--rate-limit`, 100 req/s; `--rate-rows` rows) with
            one `work` process, then with three sharing one ledger (`--workers 1,3`): 429 share
            (429 answers / requests), accepted / limit (non-429 requests per second / limit),
            wall time, and wall / ideal, where ideal = accepted ÷ (0.95 x limit).
    faults  the fault mix on a new run: 3 % 5xx (nothing applied), 1 % writes applied then
            answered 5xx + 1 % applied then dropped, 1 % "400 but created", 1.5 s lookup lag,
            300 req/s: share of the limit used, and the tail of rows settling a lost create.
    sweep   LEDGER_CONCURRENCY sweep on `--sweep-rows` rows (one summary line per value).
    a       one summary line for `--rows` rows with latency and no limit.
    b       one summary line for `--rate-rows` rows with the rate limit.

Every run prints wall time, the CPU of the `work` process(es) per request
(getrusage(RUSAGE_CHILDREN) around them) and of this process meanwhile (the simulator).
Without faults or a rate limit the request counts are exact and the same run after run; with
them (429s, retries) they vary a little with timing. Times depend on the machine's load.

    .venv/bin/python scripts/bench_work.py                          # 3,000 rows, every new mode
    .venv/bin/python scripts/bench_work.py --rows 21000 --only new --only org
    .venv/bin/python scripts/bench_work.py --only limit --rate-rows 3000 --workers 1,3
    .venv/bin/python scripts/bench_work.py --only faults --rows 3000
    .venv/bin/python scripts/bench_work.py --only sweep --sweep 4,8,16,32 --sweep-rows 3000
    .venv/bin/python scripts/bench_work.py --only a --rows 3000 --profile /tmp/work.pstat

`--profile PATH` runs each `work` child under a profiler (see bench_profile.py) and writes
PATH-<run>-<worker> pstats files plus readable .txt versions.
`--keep DIR` works in DIR (which must not exist) and leaves it: ledgers, logs, artifacts.
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench_org import (
    CsvMix,
    SeededOrg,
    Target,
    accepted_rows,
    new_run_target,
    populated_org_target,
    rerun_target,
    seed_populated_org,
)
from bench_routes import (
    CountingSimulator,
    route_table,
    settle_tail,
    throttled,
    timeline,
    total,
    writes,
)

from ledger.config import DEFAULT_CONCURRENCY, Settings
from ledger.simulator.faults import FaultConfig
from ledger.simulator.messages import Fault, SimRequest, SimResponse
from ledger.simulator.sample import write_sample_csv
from ledger.simulator.server import SimServer, serve

TOKEN = "bench-token"
PROFILER = Path(__file__).with_name("bench_profile.py")
IDEAL_SHARE = 0.95
MODES = ("new", "org", "limit", "faults", "sweep", "a", "b")
DEFAULT_MODES = ("new", "org", "limit", "faults")
LEDGER = [sys.executable, "-m", "ledger.cli"]


@dataclass(frozen=True)
class WorkRun:
    """One `ledger work` over a ledger (one or several processes), measured."""

    rows: int
    workers: int
    concurrency: int
    wall_s: float
    cpu_s: float
    sim_cpu_s: float
    exit_codes: tuple[int, ...]
    outcomes: Counter[str]
    pending: Counter[str]
    counts: dict[str, Counter[str]]
    accepted_by_s: dict[int, int]
    # From the start of the (first) `work` process to the first request the simulator saw.
    first_request_s: float | None = None

    @property
    def requests(self) -> int:
        return total(self.counts)

    def summary(self) -> str:
        requests = max(self.requests, 1)
        outcomes = ", ".join(f"{name} {count:,}" for name, count in sorted(self.outcomes.items()))
        text = (
            f"  wall {self.wall_s:.1f} s · {self.rows / self.wall_s:.1f} rows/s · "
            f"{self.requests / self.wall_s:.1f} req/s · work cpu {self.cpu_s:.1f} s = "
            f"{1000 * self.cpu_s / requests:.2f} ms/req · sim cpu {self.sim_cpu_s:.1f} s · "
            f"{self.workers} worker(s) x conc {self.concurrency} · outcomes: {outcomes}"
        )
        if self.first_request_s is not None:
            text += f" · first request {self.first_request_s:.2f} s after start"
        if self.pending:
            reasons = ", ".join(f"{code} {n}" for code, n in sorted(self.pending.items()))
            text += f" (pending: {reasons})"
        if any(self.exit_codes):
            text += f" · !! exit codes {list(self.exit_codes)}"
        return text


class TimedSimulator(CountingSimulator):
    """A CountingSimulator that also notes when the first request since the last clear came."""

    def __init__(self, *, faults: FaultConfig | None = None, token: str | None = None) -> None:
        super().__init__(faults=faults, token=token)
        self.first_request_at: float | None = None

    def handle(self, request: SimRequest) -> SimResponse | Fault:
        if self.first_request_at is None:
            self.first_request_at = time.monotonic()
        return super().handle(request)

    def clear_route_counts(self) -> None:
        super().clear_route_counts()
        self.first_request_at = None


@dataclass(frozen=True)
class Bench:
    """A simulator on a socket and the options every run shares."""

    sim: TimedSimulator
    server: SimServer
    concurrency: int | None
    profile: Path | None
    # LOOKUP_SETTLE_S of the `work` children when given (else ledger's default).
    settle_s: float | None = None

    def ingest(self, root: Path, csv_path: Path) -> None:
        env = child_env(root, self.server.base_url, self.concurrency, "ingest")
        command = [*LEDGER, "ingest", str(csv_path)]
        subprocess.run(command, env=env, cwd=root, check=True, capture_output=True)

    def work(self, root: Path, rows: int, workers: int = 1, label: str = "") -> WorkRun:
        """Run `workers` `ledger work` processes at once on the ledger in `root`."""
        self.sim.clear_route_counts()
        commands = []
        for number in range(workers):
            name = f"w{number + 1}"
            command = [*LEDGER, "work", "--quiet"]
            if self.profile is not None:
                out = self.profile.with_name(
                    f"{self.profile.stem}-{label}-{name}{self.profile.suffix}"
                )
                command = [sys.executable, str(PROFILER), str(out), "work", "--quiet"]
            env = child_env(root, self.server.base_url, self.concurrency, name)
            if self.settle_s is not None:
                env["LOOKUP_SETTLE_S"] = f"{self.settle_s:g}"
            commands.append((command, env))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        own_before = time.process_time()
        started = time.monotonic()
        children = [
            subprocess.Popen(
                command,
                env=env,
                cwd=root,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for command, env in commands
        ]
        codes = []
        for child in children:
            _, err = child.communicate()
            codes.append(child.returncode)
            if child.returncode != 0:
                sys.stderr.write(err[-2000:])
        wall = time.monotonic() - started
        own = time.process_time() - own_before
        first = self.sim.first_request_at
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        outcomes, pending = _outcomes(root / "ledger.db")
        return WorkRun(
            rows=rows,
            workers=workers,
            concurrency=self.concurrency or DEFAULT_CONCURRENCY,
            wall_s=wall,
            cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            sim_cpu_s=own,
            exit_codes=tuple(codes),
            outcomes=outcomes,
            pending=pending,
            counts=self.sim.route_counts(),
            accepted_by_s=self.sim.accepted_by_second(),
            first_request_s=None if first is None else first - started,
        )


def child_env(root: Path, base_url: str, concurrency: int | None, name: str) -> dict[str, str]:
    """The environment of one `ledger` child: its own artifacts and log, the shared ledger."""
    env = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
    env |= {
        "WEBEX_BASE_URL": base_url,
        "WEBEX_ACCESS_TOKEN": TOKEN,
        "LEDGER_DATABASE_URL": f"sqlite:///{root / 'ledger.db'}",
        "LEDGER_OUTPUT_DIR": str(root / f"out-{name}"),
        "LEDGER_LOG_FILE": str(root / f"{name}.log"),
        "REQUEST_TIMEOUT_S": "10",
    }
    if concurrency is not None:
        env["LEDGER_CONCURRENCY"] = str(concurrency)
    return env


def _outcomes(database: Path) -> tuple[Counter[str], Counter[str]]:
    """Accepted rows by status, and pending rows by reason code."""
    with sqlite3.connect(database) as db:
        statuses = Counter(
            {s: n for s, n in db.execute("SELECT status, count(*) FROM rows GROUP BY status")}
        )
        reasons = Counter(
            {
                str(code): n
                for code, n in db.execute(
                    "SELECT reason_code, count(*) FROM rows WHERE status = 'pending' "
                    "GROUP BY reason_code"
                )
            }
        )
    del statuses["rejected"]
    return statuses, reasons


def serving(
    faults: FaultConfig, options: argparse.Namespace, body: Callable[[Bench, Path], None]
) -> None:
    """Run `body` with a fresh simulator on a socket and a scratch folder."""
    sim = TimedSimulator(faults=faults, token=TOKEN)
    server = serve(sim)
    bench = Bench(sim, server, options.concurrency, options.profile, options.settle)
    try:
        if options.keep is not None:
            options.keep.mkdir(parents=True, exist_ok=False)
            body(bench, options.keep)
        else:
            with tempfile.TemporaryDirectory(prefix="bench-work-") as folder:
                body(bench, Path(folder))
    finally:
        server.stop()


def fresh_ledger(bench: Bench, folder: Path, name: str, csv_path: Path) -> tuple[Path, CsvMix]:
    """A new ledger in folder/name with the CSV ingested; the mix of its accepted rows."""
    root = folder / name
    root.mkdir()
    bench.ingest(root, csv_path)
    return root, CsvMix.of(accepted_rows(root / "ledger.db"))


def sample(folder: Path, rows: int) -> Path:
    csv_path = folder / "users.csv"
    write_sample_csv(csv_path, rows, locations=20, seed=1)
    return csv_path


def report(title: str, run: WorkRun, mix: CsvMix, target: Target | None) -> None:
    print(f"\n== {title}", flush=True)
    print(f"  {mix.describe()}")
    print(run.summary())
    for line in route_table(run.counts, mix.rows):
        print(line)
    if target is not None:
        rows = max(mix.rows, 1)
        measured = run.requests
        print(f"  target per row: {target.formula}")
        print(
            f"  target {target.total:,.0f} requests ({target.total / rows:.3f}/row) · measured "
            f"{measured:,} ({measured / rows:.3f}/row) · measured / target = "
            f"{measured / max(target.total, 1e-9):.2f}"
        )
        print(
            f"  writes: target {target.writes:,.0f} ({target.writes / rows:.3f}/row) · measured "
            f"{writes(run.counts):,} ({writes(run.counts) / rows:.3f}/row)"
        )
    sys.stdout.flush()


def limit_line(run: WorkRun, limit: float) -> str:
    requests = max(run.requests, 1)
    refused = throttled(run.counts)
    accepted = run.requests - refused
    ideal = accepted / (IDEAL_SHARE * limit)
    return (
        f"  limit {limit:g} req/s, {run.workers} worker(s): 429 share "
        f"{100 * refused / requests:.1f} % ({refused:,} of {run.requests:,}) · accepted ÷ limit "
        f"{accepted / run.wall_s / limit:.2f} · all requests ÷ limit "
        f"{run.requests / run.wall_s / limit:.2f} · wall {run.wall_s:.1f} s · wall ÷ "
        f"(accepted ÷ ({IDEAL_SHARE} x limit) = {ideal:.1f} s) = {run.wall_s / ideal:.2f}\n"
        + timeline(run.accepted_by_s, run.wall_s, limit)
    )


# -- modes -----------------------------------------------------------------------------------


def mode_new(options: argparse.Namespace, latency: FaultConfig) -> None:
    def body(bench: Bench, folder: Path) -> None:
        csv_path = sample(folder, options.rows)
        root, mix = fresh_ledger(bench, folder, "new", csv_path)
        new = bench.work(root, mix.rows, label="new")
        report(f"(1) new run: {options.rows:,} rows, empty org", new, mix, new_run_target(mix))
        root, mix = fresh_ledger(bench, folder, "rerun", csv_path)
        rerun = bench.work(root, mix.rows, label="rerun")
        title = f"(2) re-run: same {options.rows:,} rows, empty ledger, populated org"
        report(title, rerun, mix, rerun_target(mix))
        finished = bench.work(root, mix.rows, label="finished")
        print(fixed_cost(finished, {"new run": new, "re-run": rerun}), flush=True)

    serving(latency, options, body)


def fixed_cost(finished: WorkRun, runs: dict[str, WorkRun]) -> str:
    """What a `work` process costs whatever its rows (start-up, the checks before the first
    claim, the artifacts of the whole run), measured on a finished ledger, and each run's CPU
    per request beyond it."""
    lines = [
        f"\n== (3) `work` on the finished ledger: work cpu {finished.cpu_s:.2f} s, "
        f"{finished.requests} requests, wall {finished.wall_s:.1f} s "
        "(start-up, checks, artifacts: paid once per process)"
    ]
    for name, run in runs.items():
        net = 1000 * (run.cpu_s - finished.cpu_s) / max(run.requests, 1)
        lines.append(f"  {name}: {net:.2f} ms/req of work cpu beyond that fixed cost")
    return "\n".join(lines)


def mode_org(options: argparse.Namespace, latency: FaultConfig) -> None:
    def body(bench: Bench, folder: Path) -> None:
        csv_path = sample(folder, options.rows)
        root, mix = fresh_ledger(bench, folder, "org", csv_path)
        seeded: SeededOrg = seed_populated_org(
            bench.sim, csv_path, accepted_rows(root / "ledger.db"), options.existing
        )
        run = bench.work(root, mix.rows, label="org")
        title = f"(3) org already holding many people: {options.rows:,} rows"
        print(f"\n  {seeded.describe()}")
        report(title, run, mix, populated_org_target(mix, CsvMix.of(seeded.present)))

    serving(latency, options, body)


def mode_limit(options: argparse.Namespace, latency: FaultConfig) -> None:
    limited = latency.model_copy(update={"rate_limit_rps": options.rate_limit})
    for workers in (int(n) for n in options.workers.split(",") if n.strip()):

        def body(bench: Bench, folder: Path, workers: int = workers) -> None:
            csv_path = sample(folder, options.rate_rows)
            root, mix = fresh_ledger(bench, folder, "limit", csv_path)
            run = bench.work(root, mix.rows, workers, label=f"limit{workers}")
            title = (
                f"(4) rate-limited new run: {options.rate_rows:,} rows, "
                f"{options.rate_limit:g} req/s, {workers} work process(es), one ledger"
            )
            report(title, run, mix, new_run_target(mix))
            print(limit_line(run, options.rate_limit), flush=True)

        serving(limited, options, body)


def mode_faults(options: argparse.Namespace, latency: FaultConfig) -> None:
    mix_faults = latency.model_copy(
        update={
            "error_rate": 0.03,
            "write_error_rate": 0.01,
            "write_drop_rate": 0.01,
            "people_create_400_rate": 0.01,
            "lookup_delay_s": 1.5,
            "rate_limit_rps": options.fault_limit,
        }
    )

    def body(bench: Bench, folder: Path) -> None:
        csv_path = sample(folder, options.rows)
        root, mix = fresh_ledger(bench, folder, "faults", csv_path)
        run = bench.work(root, mix.rows, label="faults")
        title = (
            f"fault mix: {options.rows:,} rows, new run, 3 % 5xx, 2 % writes applied then "
            f"5xx/dropped, 1 % '400 but created', 1.5 s lookup lag, {options.fault_limit:g} req/s"
        )
        report(title, run, mix, new_run_target(mix))
        print(limit_line(run, options.fault_limit), flush=True)
        print(settle_tail(run.accepted_by_s, run.wall_s, options.fault_limit, root / "ledger.db"))

    serving(mix_faults, options, body)


def mode_summary(name: str, rows: int, faults: FaultConfig, options: argparse.Namespace) -> None:
    """The older one-line cases (sweep, a, b)."""

    def body(bench: Bench, folder: Path) -> None:
        root, mix = fresh_ledger(bench, folder, name, sample(folder, rows))
        run = bench.work(root, mix.rows, label=name)
        per_row = run.requests / max(run.outcomes.get("success", 0), 1)
        text = f"{name:<6} rows={rows:>6} req/row={per_row:5.2f}" + run.summary()
        print(text, f"load={os.getloadavg()[0]:.1f}", flush=True)
        if faults.rate_limit_rps:
            print(limit_line(run, faults.rate_limit_rps), flush=True)

    serving(faults, options, body)


# -- entry point ---------------------------------------------------------------------------------


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=MODES, action="append", help="modes to run")
    parser.add_argument("--rows", type=int, default=3000, help="rows of new, org, faults, a")
    parser.add_argument("--rate-rows", type=int, default=3000, help="rows of limit and b")
    parser.add_argument("--rate-limit", type=float, default=100.0, help="req/s of limit and b")
    parser.add_argument("--workers", default="1,3", help="work processes of the limit runs")
    parser.add_argument("--existing", type=int, default=21_000, help="people already in org")
    parser.add_argument("--fault-limit", type=float, default=300.0, help="req/s of faults")
    parser.add_argument("--concurrency", type=int, help="LEDGER_CONCURRENCY (default: ledger's)")
    parser.add_argument(
        "--settle", type=float, help="LOOKUP_SETTLE_S of the work runs (default: ledger's)"
    )
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--sweep", default="4,8,16,32", help="concurrencies of the sweep")
    parser.add_argument("--sweep-rows", type=int, default=3000)
    parser.add_argument("--profile", type=Path, help="profile the `work` child of each run")
    parser.add_argument(
        "--keep", type=Path, help="work in this new folder and keep it (ledgers, logs, artifacts)"
    )
    return parser.parse_args()


def main() -> None:
    options = parse_options()
    only = set(options.only or DEFAULT_MODES)
    latency = FaultConfig(latency_ms=options.latency_ms)
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    if "new" in only:
        mode_new(options, latency)
    if "org" in only:
        mode_org(options, latency)
    if "limit" in only:
        mode_limit(options, latency)
    if "faults" in only:
        mode_faults(options, latency)
    if "sweep" in only:
        chosen = options.concurrency
        for value in (int(c) for c in options.sweep.split(",") if c.strip()):
            options.concurrency = value
            mode_summary("sweep", options.sweep_rows, latency, options)
        options.concurrency = chosen
    if "a" in only:
        mode_summary("a", options.rows, latency, options)
    if "b" in only:
        limited = latency.model_copy(update={"rate_limit_rps": options.rate_limit})
        mode_summary("b", options.rate_rows, limited, options)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
