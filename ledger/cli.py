"""The typer app. Each command parses its arguments, calls one core function, and turns a
domain error into one line on stderr and an exit code (SPEC section 1):

    0 done · 2 bad usage, configuration or input (for `work`, also: its artifacts could not
    be written) · 3 circuit breaker, or `work`'s preflight · 4 interrupted or MAX_BATCHES with
    rows still ready · 1 internal error (traceback in the log file only)

`plan` tells scripts what it found (in the spirit of Terraform's -detailed-exitcode):

    0 nothing to do · 5 changes pending (creates or updates, no row blocked) · 6 rows blocked

What a command prints goes through `ledger.console`.

Each command imports the modules it uses when it runs: every `ledger` process (and each worker
of a run) pays at start-up for what this module imports, so that is typer and little else.
`ledger sim` is built only when used (see `ledger.lazy_commands`).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar

import typer

from ledger.error_handling import UsageError
from ledger.lazy_commands import LazyGroup, Loader

if TYPE_CHECKING:
    from typer import _click

    from ledger.config import Settings
    from ledger.database import Ledger

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_BREAKER = 3
EXIT_INTERRUPTED = 4
EXIT_PLAN_CHANGES = 5
EXIT_PLAN_BLOCKED = 6


def _sim_command() -> _click.Command:
    from ledger.simulator.command import sim_command

    sim_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    sim_app.command("sim")(sim_command)
    return typer.main.get_command(sim_app)


# The first line of `sim_command`'s docstring, for `ledger --help`.
SIM_HELP = "Serve a local Webex-compatible API (with optional faults) for rehearsals and tests."


class _Commands(LazyGroup):
    lazy: ClassVar[Mapping[str, Loader]] = {"sim": _sim_command}


app = typer.Typer(
    cls=_Commands,
    name="ledger",
    help="Provision Webex Calling in bulk from CSV, with a durable ledger of every row.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
)

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="SQLAlchemy URL of the ledger (default: LEDGER_DATABASE_URL)."),
]
RunOption = Annotated[
    int | None, typer.Option("--run", help="Run to act on (default: the latest).", min=1)
]


def _fail(message: str, code: int) -> typer.Exit:
    from ledger import console

    console.print_failure(message)
    return typer.Exit(code)


@contextmanager
def guard(settings: Settings | None) -> Iterator[None]:
    """Errors raised in the block become one line on stderr and an exit code."""
    try:
        yield
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


@contextmanager
def opened_ledger(settings: Settings, *, read_only: bool = False) -> Iterator[Ledger]:
    """The ledger of `settings`, open for the block and disposed after it; errors in opening
    it or in the block become one line and an exit code, as with `guard`."""
    with guard(settings):
        from ledger.database import open_ledger

        ledger = open_ledger(settings.LEDGER_DATABASE_URL, read_only=read_only)
        try:
            yield ledger
        finally:
            ledger.dispose()


def _log_internal_error(log_file: Path, exc: BaseException) -> None:
    # Straight to the file: the terminal gets one line, and the traceback (which may show
    # values the process held) stays out of it. It is masked like every log line: an
    # exception's message may carry the token. Masked before JSON escaping could hide it.
    try:
        from ledger.logs import redact

        with log_file.open("a", encoding="utf-8") as handle:
            trace = redact("".join(traceback.format_exception(exc)))
            handle.write(json.dumps({"event": "internal_error", "traceback": trace}) + "\n")
    except OSError:
        pass


def settings_for(db: str | None) -> Settings:
    from ledger.config import load_settings

    try:
        settings = load_settings()
        if db:
            settings = settings.model_copy(update={"LEDGER_DATABASE_URL": db})
        return settings
    except UsageError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None


@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(help="The CSV file to ingest.")],
    db: DbOption = None,
) -> None:
    """Read, validate and de-duplicate a CSV into the ledger as a new run."""
    from ledger import console
    from ledger.ingest import ingest_file

    settings = settings_for(db)
    with opened_ledger(settings) as ledger:
        report = ingest_file(ledger, file, settings)
    run = report.run
    if report.reused:
        console.print_out(f"{file} was already ingested as run {run.id}: nothing changed.")
    else:
        console.print_out(f"ingested {file} as run {run.id}")
    console.print_out(
        f"rows: {run.total_rows} · accepted: {run.accepted_rows} · rejected: {run.rejected_rows}"
    )
    for reason, count in report.rejected_by_reason.items():
        console.print_out(f"  rejected {reason}: {count}")
    if not report.reused:
        console.print_out(f"rejected rows: {report.rejected_file}")


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
    from ledger import console
    from ledger.state_store import find_run
    from ledger.writers import export_all

    settings = settings_for(db)
    folder = out_dir or settings.LEDGER_OUTPUT_DIR
    with opened_ledger(settings, read_only=True) as ledger:
        report = export_all(ledger, find_run(ledger, run), folder)
    console.print_out(
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
    from ledger import console
    from ledger.error_handling import PENDING_REASONS
    from ledger.state_store import find_run, retry_rows

    unknown = sorted(set(reason or ()) - {str(code) for code in PENDING_REASONS})
    if unknown:
        raise _fail(f"not a pending reason code: {', '.join(unknown)}", EXIT_USAGE)
    settings = settings_for(db)
    with opened_ledger(settings) as ledger:
        count = retry_rows(
            ledger, find_run(ledger, run).id, reasons=reason or (), row_ids=row or ()
        )
    console.print_out(f"{count} pending row(s) are ready again: run `ledger work`.")


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="A read-only SQL query over the ledger's views.")],
    db: DbOption = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
) -> None:
    """Run one read-only query over the ledger (see the README for its views)."""
    from ledger import console
    from ledger.sql_query import run_query

    settings = settings_for(db)
    with opened_ledger(settings, read_only=True) as ledger:
        result = run_query(ledger, query, timeout_s=settings.LEDGER_SQL_TIMEOUT_S)
    if as_csv:
        console.print_csv(result.columns, result.rows)
    else:
        console.print_table(result.columns, result.rows)


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
    with opened_ledger(settings) as ledger:
        code = _work(settings, ledger, run, quiet)
    raise typer.Exit(code)


def _work(settings: Settings, ledger: Ledger, run_id: int | None, quiet: bool) -> int:
    from ledger import console
    from ledger.executor import work_run
    from ledger.logs import configure_logging, shutdown_logging
    from ledger.state_store import find_run, run_is_finished

    run = find_run(ledger, run_id)
    progress = console.work_progress(quiet)
    configure_logging(
        settings.LEDGER_LOG_FILE,
        run_id=run.id,
        console_level=logging.CRITICAL if console.is_live(quiet) else logging.ERROR,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            console.print_err(
                "ledger: stopping now; the ledger is consistent, `ledger work` resumes"
            )
            raise SystemExit(EXIT_INTERRUPTED)
        stop.set()
        console.print_err(f"ledger: {signal.Signals(signum).name}: finishing the rows in flight…")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = work_run(settings, ledger, run, progress=progress, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutdown_logging()
    written = "" if report.artifacts_error else f" · artifacts in {settings.LEDGER_OUTPUT_DIR}"
    console.print_out(
        f"run {run.id}: {report.batches} batch(es) · {report.success} success · "
        f"{report.pending} pending this session{written}"
    )
    if report.artifacts_error:
        console.print_failure(
            f"{report.artifacts_error}; the ledger keeps every outcome: "
            "`ledger export --out DIR` writes them elsewhere"
        )
    if report.breaker_message is not None:  # stopped before its first claim
        console.print_failure(report.breaker_message)
        return EXIT_BREAKER
    if report.ended == "breaker":
        console.print_err(
            "ledger: circuit breaker: most rows failed with 401/403. Check WEBEX_ACCESS_TOKEN "
            "(expired?), its scopes and admin role, the org, and WEBEX_BASE_URL. Unworked rows "
            "stay ready."
        )
        return EXIT_BREAKER
    if report.artifacts_error:
        return EXIT_USAGE
    if report.ended == "finished" and run_is_finished(ledger, run.id):
        return EXIT_OK
    console.print_err(
        f"ledger: stopped ({report.ended}) with rows still to do: `ledger work` resumes"
    )
    return EXIT_INTERRUPTED


@app.command()
def plan(
    db: DbOption = None,
    run: RunOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the plan as one JSON document instead.")
    ] = False,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for plan.csv (default: LEDGER_OUTPUT_DIR)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Show what `work` would do to each ready row, by lookups only: nothing is written to
    Webex. Exit 0: nothing to do; 5: changes pending; 6: rows blocked."""
    settings = settings_for(db)
    if settings.WEBEX_ACCESS_TOKEN is None or not settings.WEBEX_ACCESS_TOKEN.get_secret_value():
        raise _fail("WEBEX_ACCESS_TOKEN is not set (the token `plan` reads Webex with)", EXIT_USAGE)
    folder = out_dir or settings.LEDGER_OUTPUT_DIR
    with opened_ledger(settings) as ledger:
        code = _plan(settings, ledger, run, folder, as_json=as_json, quiet=quiet)
    raise typer.Exit(code)


def _plan(
    settings: Settings,
    ledger: Ledger,
    run_id: int | None,
    folder: Path,
    *,
    as_json: bool,
    quiet: bool,
) -> int:
    from ledger import console
    from ledger.logs import configure_logging, shutdown_logging
    from ledger.plan_diff import PlanOutcome
    from ledger.planner import plan_run
    from ledger.state_store import find_run
    from ledger.writers import write_plan_json

    run = find_run(ledger, run_id)
    progress = console.plan_progress(quiet)
    configure_logging(
        settings.LEDGER_LOG_FILE,
        run_id=run.id,
        console_level=logging.CRITICAL if console.is_live(quiet) else logging.ERROR,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise SystemExit(EXIT_INTERRUPTED)
        stop.set()
        console.print_err(f"ledger: {signal.Signals(signum).name}: stopping the plan…")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = plan_run(settings, ledger, run, progress=progress, out_dir=folder, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutdown_logging()
    if report.breaker_message is not None:
        console.print_failure(report.breaker_message)
        return EXIT_BREAKER
    if not report.complete:
        console.print_failure("plan interrupted: it is incomplete, and no plan.csv was written")
        return EXIT_INTERRUPTED
    summary = report.summary
    if as_json:
        document: dict[str, object] = summary.as_dict()
        document["plan_file"] = str(report.plan_file) if report.plan_file else None
        write_plan_json(ledger, run, document, sys.stdout)
    else:
        console.print_plan(summary, report.plan_file)
    codes = {
        PlanOutcome.NOTHING_TO_DO: EXIT_OK,
        PlanOutcome.CHANGES_PENDING: EXIT_PLAN_CHANGES,
        PlanOutcome.BLOCKED: EXIT_PLAN_BLOCKED,
    }
    return codes.get(summary.outcome, EXIT_INTERNAL)


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
    from ledger import console
    from ledger.demo import run_demo
    from ledger.logs import configure_logging, shutdown_logging

    folder = folder.resolve()
    if folder.exists() and any(folder.iterdir()):
        raise _fail(f"{folder} is not empty: give the demo a new folder (--dir)", EXIT_USAGE)
    folder.mkdir(parents=True, exist_ok=True)
    configure_logging(folder / "ledger.log", console_level=logging.CRITICAL)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    console.print_out(
        f"ledger demo: {rows} rows against the simulator ({profile} faults) in {folder}"
    )
    try:
        with guard(None):
            report = run_demo(
                folder / "run",
                rows=rows,
                profile=profile,
                progress=console.work_progress(quiet),
                stop=stop,
            )
    finally:
        signal.signal(signal.SIGINT, previous)
        shutdown_logging()
    console.print_demo(report)
    if report.work.ended not in ("finished",):
        raise typer.Exit(EXIT_INTERRUPTED)


@app.command("sim", help=SIM_HELP)
def _sim_stand_in() -> None:
    """Stands in for `ledger.simulator.command.sim_command` until `sim` is used."""


@app.command()
def status(
    db: DbOption = None,
    run: RunOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a summary.")
    ] = False,
) -> None:
    """Counts per outcome and step, pending reasons, throughput and ETA of a run."""
    from ledger import console
    from ledger.status import read_run_status

    settings = settings_for(db)
    with opened_ledger(settings, read_only=True) as ledger:
        report = read_run_status(ledger, run)
    if as_json:
        typer.echo(report.model_dump_json())
    else:
        console.print_status(report)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
