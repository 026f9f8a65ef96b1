#!/usr/bin/env python3
"""Run `ledger ARGS` under a profiler: `bench_profile.py OUT ARGS...` (used by bench_work.py).

yappi (every thread, CPU clock; `pip install yappi`) when installed, else cProfile (main thread
only: the rows run in worker threads, so cProfile alone says little). Writes the pstats file OUT
and a readable OUT.txt.
"""

from __future__ import annotations

import sys


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


if __name__ == "__main__":
    profiled_child(sys.argv[1], sys.argv[2:])
