"""Everything `ledger` prints for people, through rich: lines, tables, the status summary and
the live progress of `work`.

The rest of the package computes values and never imports rich; the CLI hands them here.
Standard output gets the command's results, standard error one line per problem.

Values come from data: the ledger's cells, file and folder names, Webex's answers. So nothing
here is read as Rich markup or emoji codes (a location named `Lab [/x]` is text, not a closing
tag), and `printable` shows control characters as escapes (`\x1b`) instead of sending them
to the operator's terminal. Everything printed goes out as a `Text` built by `shown`.

`make_progress("auto", console)` picks a live bar when the console is a terminal and plain
lines when it is a pipe or a log file, so CI logs and `nohup` files stay readable. Both show
the numbers of `ledger.progress.RunTally`.
"""

from __future__ import annotations

import csv
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console, RenderableType
from rich.table import Column, Table
from rich.text import Text

from ledger.error_handling import UsageError
from ledger.plan_diff import PlanAction
from ledger.progress import (
    PLAN_WORDS,
    WORK_WORDS,
    ProgressSink,
    ProgressWords,
    QuietProgress,
    RunTally,
    format_duration,
    format_rate,
)
from ledger.records import StepName, StepStatus, iso

if TYPE_CHECKING:
    from rich.progress import TaskID

    # Imported for their annotations only: `ledger.demo` loads the simulator.
    from ledger.demo import DemoReport
    from ledger.plan_summary import PlanSummary
    from ledger.status import RunStatus

PROGRESS_MODES = ("auto", "quiet", "plain", "bar")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


# C0 and C1 control characters, DEL, and the bidirectional overrides that reorder what a
# terminal shows. Tab stays (rich expands it); a newline stays only inside a table cell.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(value: str, *, newlines: bool = False) -> str:
    """`value` with every control character written as its escape (ESC as `\\x1b`)."""
    pattern = _CONTROL if newlines else _CONTROL_OR_NEWLINE
    return pattern.sub(lambda found: found.group().encode("unicode_escape").decode(), value)


def shown(value: object, *, newlines: bool = False) -> Text:
    """`value` as plain text for rich: no markup, no emoji codes, no control characters."""
    return Text(printable("" if value is None else str(value), newlines=newlines))


def print_out(line: str) -> None:
    """One line of a command's result on standard output."""
    out.print(shown(line))


def print_err(line: str) -> None:
    """One line on standard error."""
    err.print(shown(line))


def print_failure(message: str) -> None:
    """The one line a command that fails leaves on standard error."""
    err.print(shown(f"ledger: {message}"))


def print_table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Query results as a table; NULL is an empty cell."""
    table = Table(*(Column(header=shown(name, newlines=True)) for name in columns))
    for row in rows:
        table.add_row(*(shown(cell, newlines=True) for cell in row))
    out.print(table)


def print_csv(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Query results as CSV on standard output, values exactly as stored."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)


def is_live(quiet: bool) -> bool:
    """Whether `work` shows a live bar (and so keeps routine log lines off the terminal)."""
    return not quiet and out.is_terminal


def print_demo(report: DemoReport) -> None:
    """What `ledger demo` did, and where its ledger and artifacts are."""
    counts = report.status.rows
    print_out(
        f"rows: {counts.total} · success: {counts.success} · pending: {counts.pending} · "
        f"rejected: {counts.rejected} · still to do: {counts.ready + counts.claimed}"
    )
    for reason in report.status.pending_reasons:
        print_out(f"  pending {reason.reason_code}: {reason.count}")
    print_out(
        f"requests to the simulator: {report.requests} · duplicate users on it: "
        f"{report.duplicate_users}"
    )
    print_out(f"input:     {report.csv_path}")
    print_out(
        f"ledger:    {report.folder / 'ledger.db'}  (try: ledger sql --db "
        f'sqlite:///{report.folder / "ledger.db"} "SELECT * FROM v_progress")'
    )
    print_out(f"artifacts: {report.export.out_dir}")
    for name in (
        "results.csv",
        "pending_rows.csv",
        "rejected_rows.csv",
        "checkpoint.json",
        "retry_rows.csv",
    ):
        print_out(f"  {report.export.out_dir / name}")


# --- ledger status ---------------------------------------------------------------------------


def print_status(status: RunStatus) -> None:
    for renderable in status_renderables(status):
        out.print(renderable)


def status_renderables(status: RunStatus) -> list[RenderableType]:
    """A compact summary for a terminal: a few lines, the steps table, the pending reasons."""
    rows = status.rows
    done = rows.finished
    share = f" ({100 * done / rows.total:.1f}%)" if rows.total else ""
    rate = status.throughput.rows_per_s
    requests = status.requests
    lines = [
        f"run {status.run_id} · {status.file_name} · started {iso(status.started_at)} · "
        f"sha256 {status.input_hash[:12]}…",
        f"rows      {done}/{rows.total} finished{share}: {rows.success} success · "
        f"{rows.pending} pending · {rows.rejected} rejected · {rows.ready} ready · "
        f"{rows.claimed} in flight",
        f"pace      {status.throughput.finished_in_window} rows in the last minute"
        + ("" if rate is None else f" ({format_rate(rate)})")
        + f" · ETA {format_duration(status.throughput.eta_s)}",
        f"requests  {requests.requests} · {requests.retries} retries · "
        f"{requests.throttled} throttled (429) · "
        f"{requests.wait_s:.1f}s waited in backoffs and pauses (summed over threads)",
        f"checkpoint batch {status.checkpoint.last_completed_batch_id} "
        f"(row {status.checkpoint.last_completed_row_id})",
    ]
    if status.workers:
        lines.append(
            "workers   " + " · ".join(f"{w.worker_id} holds {w.rows}" for w in status.workers)
        )
    else:
        lines.append("workers   none holding rows")
    if status.expired_leases:
        lines.append(
            f"stale     {status.expired_leases} claimed row(s) whose lease expired "
            "(their worker stopped; the next `ledger work` takes them over)"
        )
    parts: list[RenderableType] = [shown(line) for line in lines]
    if status.steps:
        present = [s for s in StepStatus if any(s in c for c in status.steps.values())]
        table = Table("step", *present, box=None, pad_edge=False, header_style="bold")
        for step, counts in status.steps.items():
            table.add_row(step, *(str(counts.get(s, 0)) for s in present))
        parts.append(table)
    if status.pending_reasons:
        reasons = Table(
            "pending reason", "rows", "example", box=None, pad_edge=False, header_style="bold"
        )
        for reason in status.pending_reasons:
            example = f"row {reason.example_row_id}"
            if reason.example_message:
                example += f": {reason.example_message}"
            reasons.add_row(shown(reason.reason_code), str(reason.count), shown(example))
        parts.append(reasons)
    parts.append(shown(f"next      {next_step(status)}"))
    return parts


def next_step(status: RunStatus) -> str:
    """What an operator does next with this run, in one line."""
    rows = status.rows
    if rows.ready or rows.claimed:
        held = " (some are held by a worker at work now)" if status.workers else ""
        return f"`ledger work` works the {rows.ready + rows.claimed} row(s) still to do{held}"
    if rows.pending:
        return (
            f"{rows.pending} row(s) pending: fix what their reasons say (pending_rows.csv), "
            "then `ledger retry` and `ledger work`"
        )
    if rows.rejected:
        return (
            f"nothing left to work; {rows.rejected} row(s) were rejected at ingest: correct "
            "them in retry_rows.csv (why: rejected_rows.csv) and ingest it as a new run"
        )
    return "nothing left to do: every row succeeded"


# --- ledger plan -----------------------------------------------------------------------------


def plan_renderables(summary: PlanSummary) -> list[RenderableType]:
    """The org-level checks, the actions per step, the blockers; the `Plan:` line last."""
    tally = summary.tally
    parts: list[RenderableType] = []
    if tally.rows:
        parts.extend(shown(line) for line in summary.org_checks())
        steps = Table(
            "step",
            *(Column(str(a), justify="right") for a in PlanAction),
            box=None,
            pad_edge=False,
            header_style="bold",
        )
        for step in StepName:
            counts = tally.steps.get(step)
            if counts is not None:
                steps.add_row(step, *(f"{counts.get(a, 0):,}" for a in PlanAction))
        parts.append(steps)
    if tally.blockers:
        blockers = Table(
            "blocked by",
            Column("rows", justify="right"),
            "example",
            box=None,
            pad_edge=False,
            header_style="bold",
        )
        for reason, blocker in sorted(tally.blockers.items()):
            example = f"row {blocker.example_row_id}"
            if blocker.example_message:
                example += f": {blocker.example_message}"
            blockers.add_row(shown(reason), f"{blocker.rows:,}", shown(example))
        parts.append(blockers)
    return parts


def print_plan(summary: PlanSummary, plan_file: Path | None) -> None:
    for renderable in plan_renderables(summary):
        out.print(renderable)
    if plan_file is not None:
        print_out(f"plan.csv: {plan_file}")
    print_out(summary.headline())


# --- the progress of ledger work -------------------------------------------------------------


class PlainProgress:
    """One line when work starts and one per batch: for pipes, CI logs and `nohup` files."""

    def __init__(
        self,
        console: Console,
        clock: Callable[[], float] = time.monotonic,
        words: ProgressWords = WORK_WORDS,
    ) -> None:
        self._console = console
        self.tally = RunTally(clock, words)

    def _print(self, line: str) -> None:
        self._console.print(shown(line), highlight=False, soft_wrap=True)

    def start(self, *, run_id: int, total: int, success: int, pending: int, rejected: int) -> None:
        self.tally.start(
            run_id=run_id, total=total, success=success, pending=pending, rejected=rejected
        )
        self._print(f"{self.tally.words.doing} {self.tally.counts_line()}")

    def row_finished(self, status: str) -> None:
        self.tally.row_finished(status)

    def batch_finished(
        self, *, batch_no: int, rows: int, success: int, pending: int, elapsed_s: float
    ) -> None:
        words = self.tally.words
        self._print(
            f"batch {batch_no}: {rows} rows ({success} {words.success}, {pending} "
            f"{words.pending}) in {elapsed_s:.1f}s · {self.tally.run_line()}"
        )

    def stop(self) -> None:
        return None


class BarProgress:
    """A live rich bar: finished/total, the outcome counts, rows/s and ETA."""

    def __init__(
        self,
        console: Console,
        clock: Callable[[], float] = time.monotonic,
        words: ProgressWords = WORK_WORDS,
    ) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.tally = RunTally(clock, words)
        self._progress = Progress(
            TextColumn("[bold]run {task.fields[run_id]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[rate]} · ETA {task.fields[eta]}"),
            console=console,
            refresh_per_second=4,
            transient=False,
        )
        self._task: TaskID | None = None

    def _fields(self) -> tuple[str, str, str]:
        """The counts, rate and ETA columns' text."""
        tally = self.tally
        rate = tally.rate()
        words = tally.words
        counts = (
            f"[green]{tally.success} {words.success}[/] · "
            f"[yellow]{tally.pending} {words.pending}[/]"
        )
        if words.rejected:
            counts += f" · [red]{tally.rejected} rejected[/]"
        return counts, format_rate(rate), format_duration(tally.eta_s(rate))

    def start(self, *, run_id: int, total: int, success: int, pending: int, rejected: int) -> None:
        self.tally.start(
            run_id=run_id, total=total, success=success, pending=pending, rejected=rejected
        )
        counts, rate, eta = self._fields()
        self._task = self._progress.add_task(
            "work",
            total=self.tally.total,
            completed=self.tally.finished,
            run_id=run_id,
            counts=counts,
            rate=rate,
            eta=eta,
        )
        self._progress.start()

    def _refresh(self) -> None:
        if self._task is not None:
            counts, rate, eta = self._fields()
            self._progress.update(
                self._task, completed=self.tally.finished, counts=counts, rate=rate, eta=eta
            )

    def row_finished(self, status: str) -> None:
        self.tally.row_finished(status)
        self._refresh()

    def batch_finished(
        self, *, batch_no: int, rows: int, success: int, pending: int, elapsed_s: float
    ) -> None:
        self._refresh()

    def stop(self) -> None:
        self._refresh()
        self._progress.stop()


def make_progress(mode: str, console: Console, words: ProgressWords = WORK_WORDS) -> ProgressSink:
    """The display for `mode` (`auto`, `quiet`, `plain` or `bar`) writing to `console`."""
    if mode == "quiet":
        return QuietProgress()
    if mode == "plain" or (mode == "auto" and not console.is_terminal):
        return PlainProgress(console, words=words)
    if mode in ("bar", "auto"):
        return BarProgress(console, words=words)
    raise UsageError(f"unknown progress mode {mode!r}: use one of {', '.join(PROGRESS_MODES)}")


def work_progress(quiet: bool) -> ProgressSink:
    """The display of `work` and `demo` on standard output: nothing when quiet."""
    return make_progress("quiet" if quiet else "auto", out)


def plan_progress(quiet: bool) -> ProgressSink:
    """The display of `plan`, as `work`'s, on standard error: standard output is the plan's."""
    return make_progress("quiet" if quiet else "auto", err, PLAN_WORDS)
