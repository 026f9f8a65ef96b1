#!/usr/bin/env python3
"""Time `ledger ingest` on 21,000 and 210,000 rows, and check that it streams.

For each size: writes a sample CSV (`ledger.simulator.sample.write_sample_csv`: valid rows
over 20 locations, a few invalid on purpose), then runs `ledger ingest` on it in a fresh
subprocess against a fresh SQLite ledger, so that each figure is that run's own: wall time,
CPU seconds, rows/s, and peak RSS (from wait4: the child's own rusage). CPU seconds tell
the code's cost apart from a busy machine's. A bare `ledger --help` is measured
too, as the floor every run pays for Python and its imports.

Targets: 21,000 rows in under 3 s, and the 210,000-row run's peak memory under twice the
21,000-row run's (ingest streams the file; it never holds it whole).

    .venv/bin/python scripts/bench_ingest.py [--sizes 21000 210000] [--check]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ledger.simulator.sample import write_sample_csv

TARGET_21K_S = 3.0
TARGET_MEMORY_RATIO = 2.0


@dataclass(frozen=True)
class Measure:
    label: str
    rows: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.rows else 0.0


def run_child(
    args: list[str], *, cwd: Path, env: dict[str, str]
) -> tuple[float, float, float, str]:
    """Run `python -m ledger.cli ARGS` alone: (wall s, CPU s, peak RSS in MB, its output)."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert child.stdout is not None
    output = child.stdout.read()
    child.stdout.close()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"ledger {' '.join(args)} exited {child.returncode}:\n{output}")
    cpu = usage.ru_utime + usage.ru_stime
    return seconds, cpu, usage.ru_maxrss / 1024, output  # ru_maxrss is in KiB on Linux


def bench(sizes: list[int], folder: Path) -> list[Measure]:
    env = {
        **os.environ,
        "LEDGER_OUTPUT_DIR": str(folder / "out"),
        "LEDGER_LOG_FILE": str(folder / "ledger.log"),
        "MAX_ROWS": str(max(sizes) + 1),
    }
    seconds, cpu, rss, _ = run_child(["--help"], cwd=folder, env=env)
    measures = [Measure("ledger --help (floor)", 0, seconds, cpu, rss)]
    for size in sizes:
        source = folder / f"users-{size}.csv"
        summary = write_sample_csv(source, size)
        database = folder / f"ledger-{size}.db"
        seconds, cpu, rss, output = run_child(
            ["ingest", str(source), "--db", f"sqlite:///{database}"], cwd=folder, env=env
        )
        if f"rows: {size}" not in output:
            raise SystemExit(f"unexpected output for {size} rows:\n{output}")
        megabytes = source.stat().st_size / 1e6
        label = f"ingest {size:,} rows ({megabytes:.0f} MB, {summary.invalid_rows} invalid)"
        measures.append(Measure(label, size, seconds, cpu, rss))
    return measures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[21_000, 210_000])
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        measures = bench(options.sizes, Path(tmp))

    print(f"{'what':<44} {'wall s':>7} {'CPU s':>7} {'rows/s':>8} {'peak RSS':>11}")
    for m in measures:
        rate = f"{m.rows_per_s:,.0f}" if m.rows else "-"
        print(
            f"{m.label:<44} {m.seconds:>7.2f} {m.cpu_seconds:>7.2f} {rate:>8} "
            f"{m.peak_rss_mb:>8.1f} MB"
        )

    by_rows = {m.rows: m for m in measures if m.rows}
    missed = []
    if 21_000 in by_rows:
        fast = by_rows[21_000].seconds < TARGET_21K_S
        print(f"21,000 rows under {TARGET_21K_S:.0f} s: {'yes' if fast else 'NO'}")
        missed += [] if fast else ["21k time"]
    if 21_000 in by_rows and 210_000 in by_rows:
        ratio = by_rows[210_000].peak_rss_mb / by_rows[21_000].peak_rss_mb
        lean = ratio < TARGET_MEMORY_RATIO
        print(
            f"peak memory 210k / 21k: {ratio:.2f} "
            f"(target < {TARGET_MEMORY_RATIO:.0f}): {'yes' if lean else 'NO'}"
        )
        missed += [] if lean else ["memory ratio"]
    return 1 if options.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
