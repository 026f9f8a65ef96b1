"""The typer app. Each command parses its arguments, calls one core function, and turns a
domain error into one line on stderr and an exit code (SPEC section 1):

    0 done · 2 bad usage, configuration or input · 3 circuit breaker · 4 interrupted or
    MAX_BATCHES with rows still ready · 1 internal error (traceback in the log file only)
"""

from __future__ import annotations

import csv
import json
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ledger.config import Settings, load_settings
from ledger.database import Ledger, open_ledger
from ledger.demo import run_demo
from ledger.error_handling import UsageError
from ledger.executor import work_run
from ledger.ingest import ingest_file
from ledger.logs import configure_logging, shutdown_logging
from ledger.progress import make_progress
from ledger.state_store import find_run, retry_rows, run_is_finished
from ledger.writers import export_all

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_BREAKER = 3
EXIT_INTERRUPTED = 4

app = typer.Typer(
    name="ledger",
    help="Provision Webex Calling in bulk from CSV, with a durable ledger of every row.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="SQLAlchemy URL of the ledger (default: LEDGER_DATABASE_URL)."),
]
RunOption = Annotated[
    int | None, typer.Option("--run", help="Run to act on (default: the latest).", min=1)
]
T = TypeVar("T")


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"ledger: {message}", markup=False)
    return typer.Exit(code)


def guarded(settings: Settings | None, action: Callable[[], T]) -> T:
    """Run a command's core call, mapping errors to one line and an exit code."""
    try:
        return action()
    except typer.Exit:
        raise
    except UsageError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except KeyboardInterrupt:
        raise _fail("interrupted", EXIT_INTERRUPTED) from None
    except Exception as exc:
        log_file = settings.LEDGER_LOG_FILE if settings else Path("ledger.log")
        _log_internal_error(log_file, exc)
        raise _fail(
            f"internal error ({type(exc).__name__}); details in {log_file}", EXIT_INTERNAL
        ) from None


def _log_internal_error(log_file: Path, exc: BaseException) -> None:
    # Straight to the file: the terminal gets one line, and the traceback (which may show
    # values the process held) stays out of it.
    try:
        with log_file.open("a", encoding="utf-8") as handle:
            trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            handle.write(json.dumps({"event": "internal_error", "traceback": trace}) + "\n")
    except OSError:
        pass


def settings_for(db: str | None) -> Settings:
    try:
        settings = load_settings()
        if db:
            settings = settings.model_copy(update={"LEDGER_DATABASE_URL": db})
        return settings
    except UsageError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None


def open_for(settings: Settings, *, read_only: bool = False) -> Ledger:
    return guarded(settings, lambda: open_ledger(settings.LEDGER_DATABASE_URL, read_only=read_only))


@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(help="The CSV file to ingest.")],
    db: DbOption = None,
) -> None:
    """Read, validate and de-duplicate a CSV into the ledger as a new run."""
    settings = settings_for(db)
    ledger = open_for(settings)
    try:
        report = guarded(settings, lambda: ingest_file(ledger, file, settings))
    finally:
        ledger.dispose()
    run = report.run
    if report.reused:
        out.print(f"{file} was already ingested as run {run.id}: nothing changed.")
    else:
        out.print(f"ingested {file} as run {run.id}")
    out.print(
        f"rows: {run.total_rows} · accepted: {run.accepted_rows} · rejected: {run.rejected_rows}"
    )
    for reason, count in report.rejected_by_reason.items():
        out.print(f"  rejected {reason}: {count}")
    if not report.reused:
        out.print(f"rejected rows: {report.rejected_file}")


@app.command()
def export(
    db: DbOption = None,
    run: RunOption = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for the artifacts (default: LEDGER_OUTPUT_DIR)."),
    ] = None,
) -> None:
    """Write results, pending, rejected, retry rows and checkpoint.json from the ledger."""
    settings = settings_for(db)
    ledger = open_for(settings, read_only=True)
    folder = out_dir or settings.LEDGER_OUTPUT_DIR
    try:
        report = guarded(settings, lambda: export_all(ledger, find_run(ledger, run), folder))
    finally:
        ledger.dispose()
    out.print(
        f"results: {report.results} lines · pending: {report.pending} · "
        f"rejected: {report.rejected} · retry: {report.retry} → {report.out_dir}"
    )


@app.command()
def retry(
    db: DbOption = None,
    run: RunOption = None,
    reason: Annotated[
        list[str] | None,
        typer.Option("--reason", help="Only pending rows with this reason code (repeatable)."),
    ] = None,
    row: Annotated[
        list[int] | None, typer.Option("--row", help="Only this row_id (repeatable).", min=1)
    ] = None,
) -> None:
    """Put pending rows back to ready, after the cause was fixed; `work` then redoes them."""
    from ledger.error_handling import PENDING_REASONS

    unknown = sorted(set(reason or ()) - {str(code) for code in PENDING_REASONS})
    if unknown:
        raise _fail(f"not a pending reason code: {', '.join(unknown)}", EXIT_USAGE)
    settings = settings_for(db)
    ledger = open_for(settings)
    try:
        count = guarded(
            settings,
            lambda: retry_rows(
                ledger, find_run(ledger, run).id, reasons=reason or (), row_ids=row or ()
            ),
        )
    finally:
        ledger.dispose()
    out.print(f"{count} pending row(s) are ready again: run `ledger work`.")


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="A read-only SQL query over the ledger's views.")],
    db: DbOption = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
) -> None:
    """Run a read-only query over the ledger (see the README for its views)."""
    settings = settings_for(db)
    ledger = open_for(settings, read_only=True)

    def run_query() -> tuple[list[str], list[tuple[object, ...]]]:
        try:
            with ledger.read() as session:
                result = session.connection().execute(text(query))
                if not result.returns_rows:
                    raise UsageError("the query returned no rows to show")
                return list(result.keys()), [tuple(row) for row in result]
        except SQLAlchemyError as exc:
            detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise UsageError(f"query failed: {detail}") from None

    try:
        columns, rows = guarded(settings, run_query)
    finally:
        ledger.dispose()
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    out.print(table)


@app.command()
def work(
    db: DbOption = None,
    run: RunOption = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar and no per-batch lines.")
    ] = False,
) -> None:
    """Provision every ready row of the run against Webex, recording each step as it happens."""
    settings = settings_for(db)
    if settings.WEBEX_ACCESS_TOKEN is None or not settings.WEBEX_ACCESS_TOKEN.get_secret_value():
        raise _fail("WEBEX_ACCESS_TOKEN is not set (the token `work` calls Webex with)", EXIT_USAGE)
    ledger = open_for(settings)
    try:
        code = guarded(settings, lambda: _work(settings, ledger, run, quiet))
    finally:
        ledger.dispose()
    raise typer.Exit(code)


def _work(settings: Settings, ledger: Ledger, run_id: int | None, quiet: bool) -> int:
    run = find_run(ledger, run_id)
    progress = make_progress("quiet" if quiet else "auto", out)
    configure_logging(
        settings.LEDGER_LOG_FILE,
        run_id=run.id,
        console_level=logging.CRITICAL if progress_is_live(quiet) else logging.ERROR,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            err.print("ledger: stopping now; the ledger is consistent, `ledger work` resumes")
            raise SystemExit(EXIT_INTERRUPTED)
        stop.set()
        err.print(f"ledger: {signal.Signals(signum).name}: finishing the rows in flight…")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = work_run(settings, ledger, run, progress=progress, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutdown_logging()
    out.print(
        f"run {run.id}: {report.batches} batch(es) · {report.success} success · "
        f"{report.pending} pending this session · artifacts in {settings.LEDGER_OUTPUT_DIR}"
    )
    if report.ended == "breaker":
        err.print(
            "ledger: circuit breaker: most rows failed with 401/403. Check WEBEX_ACCESS_TOKEN "
            "(expired?), its scopes and admin role, the org, and WEBEX_BASE_URL. Unworked rows "
            "stay ready."
        )
        return EXIT_BREAKER
    if report.ended == "finished" and run_is_finished(ledger, run.id):
        return EXIT_OK
    err.print(f"ledger: stopped ({report.ended}) with rows still to do: `ledger work` resumes")
    return EXIT_INTERRUPTED


@app.command()
def demo(
    folder: Annotated[
        Path, typer.Option("--dir", help="A new folder for the demo's ledger, CSV and artifacts.")
    ] = Path("demo"),
    rows: Annotated[int, typer.Option(help="Rows in the sample CSV.", min=10, max=50_000)] = 2000,
    profile: Annotated[
        str, typer.Option(help="Simulator fault profile: none, mild or chaos.")
    ] = "mild",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Generate a sample CSV, serve the simulator, then ingest, work and export it. No token."""
    folder = folder.resolve()
    if folder.exists() and any(folder.iterdir()):
        raise _fail(f"{folder} is not empty: give the demo a new folder (--dir)", EXIT_USAGE)
    folder.mkdir(parents=True, exist_ok=True)
    configure_logging(folder / "ledger.log", console_level=logging.CRITICAL)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    out.print(f"ledger demo: {rows} rows against the simulator ({profile} faults) in {folder}")
    try:
        report = guarded(
            None,
            lambda: run_demo(
                folder / "run",
                rows=rows,
                profile=profile,
                progress=make_progress("quiet" if quiet else "auto", out),
                stop=stop,
            ),
        )
    finally:
        signal.signal(signal.SIGINT, previous)
        shutdown_logging()
    counts = report.status.rows
    out.print(
        f"rows: {counts.total} · success: {counts.success} · pending: {counts.pending} · "
        f"rejected: {counts.rejected} · still to do: {counts.ready + counts.claimed}"
    )
    for reason in report.status.pending_reasons:
        out.print(f"  pending {reason.reason_code}: {reason.count}")
    out.print(
        f"requests to the simulator: {report.requests} · duplicate users on it: "
        f"{report.duplicate_users}"
    )
    out.print(f"input:     {report.csv_path}")
    out.print(
        f"ledger:    {report.folder / 'ledger.db'}  (try: ledger sql --db "
        f'sqlite:///{report.folder / "ledger.db"} "SELECT * FROM v_progress")'
    )
    out.print(f"artifacts: {report.export.out_dir}")
    for name in (
        "results.csv",
        "pending_rows.csv",
        "rejected_rows.csv",
        "checkpoint.json",
        "retry_rows.csv",
    ):
        out.print(f"  {report.export.out_dir / name}")
    if report.work.ended not in ("finished",):
        raise typer.Exit(EXIT_INTERRUPTED)


def _register_simulator() -> None:
    from ledger.simulator.command import sim_command

    app.command("sim")(sim_command)


_register_simulator()


def progress_is_live(quiet: bool) -> bool:
    return not quiet and out.is_terminal


@app.command()
def status(
    db: DbOption = None,
    run: RunOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a summary.")
    ] = False,
) -> None:
    """Counts per outcome and step, pending reasons, throughput and ETA of a run."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from ledger.status import RunStatus, run_status, status_renderables

    settings = settings_for(db)
    ledger = open_for(settings, read_only=True)

    def read_status() -> RunStatus:
        try:
            info = find_run(ledger, run)
        except (OperationalError, ProgrammingError) as exc:
            # A file or database that holds no ledger (the URL may carry a password: not shown).
            detail = str(exc.orig).splitlines()[0]
            raise UsageError(f"cannot read a ledger there: {detail}") from None
        return run_status(ledger, info)

    try:
        report = guarded(settings, read_status)
    finally:
        ledger.dispose()
    if as_json:
        typer.echo(report.model_dump_json())
        return
    for renderable in status_renderables(report):
        out.print(renderable)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
