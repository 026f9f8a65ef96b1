"""The artifacts `ledger work` writes as it goes and when it stops (SPEC sections 1, 5): a
folder that cannot take them no longer ends in exit 0, and LEDGER_REFRESH_S paces them."""

from __future__ import annotations

import shutil
from itertools import pairwise
from pathlib import Path

import pytest
from typer.testing import Result

import ledger.executor as executor
from ledger.database import Ledger
from ledger.records import RunInfo
from ledger.simulator import Simulator, running_server
from ledger.writers import ExportReport, export_all
from tests.support.cli import LedgerEnv, assert_exit, ingest_people, invoke, row_statuses
from tests.support.clock import FakeTime
from tests.support.csvfiles import read_csv
from tests.support.people import person
from tests.support.work import TOKEN, Job, Jobs, NullProgress

ROWS = 8


def ingested(env: LedgerEnv) -> None:
    ingest_people(env, ROWS, BATCH_SIZE="2")


def work(env: LedgerEnv, **settings: str) -> Result:
    with running_server(Simulator(token=TOKEN)) as base_url:
        variables = {"WEBEX_BASE_URL": base_url, "WEBEX_ACCESS_TOKEN": TOKEN, **settings}
        return invoke("work", "--db", env.db_url, "--quiet", env=variables)


def test_work_whose_artifacts_cannot_be_written_exits_2_naming_the_folder(
    ledger_env: LedgerEnv,
) -> None:
    ingested(ledger_env)
    shutil.rmtree(ledger_env.out_dir)
    ledger_env.out_dir.write_text("a file where the folder was", encoding="utf-8")

    result = work(ledger_env, LEDGER_REFRESH_S="0")

    assert_exit(result, 2)
    lines = [line for line in result.stderr.splitlines() if str(ledger_env.out_dir) in line]
    assert len(lines) == 1, result.stderr
    assert "cannot write the artifacts" in lines[0] and "File exists" in lines[0]
    assert "ledger export --out" in lines[0]
    # The run itself is done and safe in the ledger; the artifacts can be written elsewhere.
    assert row_statuses(ledger_env) == {"success": ROWS}
    elsewhere = ledger_env.root / "elsewhere"
    assert_exit(invoke("export", "--db", ledger_env.db_url, "--out", str(elsewhere)), 0)
    assert {line["row_id"] for line in read_csv(elsewhere / "results.csv")} == {
        str(n) for n in range(1, ROWS + 1)
    }


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every export `work` makes, by folder (each still writes the files)."""
    made: list[Path] = []

    def counted(ledger: Ledger, run: RunInfo, out_dir: Path) -> ExportReport:
        made.append(out_dir)
        return export_all(ledger, run, out_dir)

    monkeypatch.setattr(executor, "export_all", counted)
    return made


def test_a_long_refresh_interval_writes_the_artifacts_once_when_work_stops(
    ledger_env: LedgerEnv, exports: list[Path]
) -> None:
    ingested(ledger_env)  # four batches of two

    result = work(ledger_env, LEDGER_REFRESH_S="3600")

    assert_exit(result, 0)
    assert "4 batch(es)" in result.stdout
    assert exports == [ledger_env.out_dir]  # not once per batch: once, at the end
    success_rows = {line["row_id"] for line in read_csv(ledger_env.out_dir / "results.csv")}
    assert success_rows == {str(n) for n in range(1, ROWS + 1)}


def test_a_refresh_interval_of_0_writes_the_artifacts_after_every_batch(
    ledger_env: LedgerEnv, exports: list[Path]
) -> None:
    ingested(ledger_env)

    result = work(ledger_env, LEDGER_REFRESH_S="0")

    assert_exit(result, 0)
    assert len(exports) == 4 + 1  # every batch, and when work stops


def test_a_bad_refresh_interval_is_a_configuration_error(ledger_env: LedgerEnv) -> None:
    ingested(ledger_env)
    result = work(ledger_env, LEDGER_REFRESH_S="-1")
    assert_exit(result, 2)
    assert "LEDGER_REFRESH_S" in result.stderr


class SlowBatches(NullProgress):
    """Each batch takes BATCH_S on the fake clock; the end of each is noted."""

    def __init__(self, time: FakeTime) -> None:
        super().__init__()
        self.time = time
        self.ends: list[float] = []

    def batch_finished(
        self, *, batch_no: int, rows: int, success: int, pending: int, elapsed_s: float
    ) -> None:
        super().batch_finished(
            batch_no=batch_no, rows=rows, success=success, pending=pending, elapsed_s=elapsed_s
        )
        self.time.advance(BATCH_S)
        self.ends.append(self.time.monotonic())


BATCH_S = 5.0


def refreshes_timed(
    jobs: Jobs, job: Job, monkeypatch: pytest.MonkeyPatch, refresh_takes: float = 0.0
) -> tuple[executor.Worker, SlowBatches, list[float]]:
    """A worker whose batches each take BATCH_S on the fake clock, and the instants at which
    it starts each refresh of the artifacts (each taking `refresh_takes`)."""
    started: list[float] = []

    def timed(ledger: Ledger, run: RunInfo, out_dir: Path) -> ExportReport:
        started.append(jobs.time.monotonic())
        jobs.time.advance(refresh_takes)
        return export_all(ledger, run, out_dir)

    monkeypatch.setattr(executor, "export_all", timed)
    progress = SlowBatches(jobs.time)
    worker = executor.Worker(
        job.settings,
        job.ledger,
        job.client(),
        job.run,
        progress=progress,
        out_dir=job.out_dir,
        clock=jobs.time.monotonic,
    )
    return worker, progress, started


@pytest.mark.parametrize(("refresh_takes", "floor"), [(0.0, 15.0), (4.0, 40.0)])
def test_a_slow_refresh_waits_ten_times_as_long_before_the_next(
    jobs: Jobs, monkeypatch: pytest.MonkeyPatch, refresh_takes: float, floor: float
) -> None:
    # A refresh rewrites the artifacts from the whole run: on a large one it takes long, and
    # refreshing every LEDGER_REFRESH_S would take an ever larger share of the worker's time.
    job = jobs.start(
        [person(n) for n in range(1, 21)],
        BATCH_SIZE=1,
        LEDGER_CONCURRENCY=1,
        LEDGER_REFRESH_S=15,
    )
    worker, progress, started = refreshes_timed(jobs, job, monkeypatch, refresh_takes)

    report = worker.run()

    assert report.ended == "finished" and report.batches == 20
    *during, last = started
    assert last >= progress.ends[-1]  # always when work stops
    assert len(during) >= 2
    gaps = [later - earlier for earlier, later in pairwise(during)]
    # LEDGER_REFRESH_S, or ten times the refresh's duration where that is longer, apart.
    assert all(floor <= gap < floor + BATCH_S + refresh_takes for gap in gaps), gaps
    assert {line["row_id"] for line in job.results()} == {str(n) for n in range(1, 21)}


def test_the_last_batch_leaves_the_artifacts_to_the_write_as_work_stops(
    jobs: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A refresh rewrites the whole run (seconds on a large one): due as the last batch ends, it
    # would be made twice in a row, once for that batch and once as `work` stops.
    job = jobs.start(
        [person(n) for n in range(1, 5)],
        BATCH_SIZE=1,
        LEDGER_CONCURRENCY=1,
        LEDGER_REFRESH_S=4,
    )
    worker, _progress, started = refreshes_timed(jobs, job, monkeypatch)
    begun = jobs.time.monotonic()

    report = worker.run()

    assert report.ended == "finished" and report.batches == 4
    # The batches end BATCH_S apart, at 0, 5, 10 and 15 s: the second and third refresh the
    # artifacts, the last leaves them to the write as work stops (after its own BATCH_S).
    assert [at - begun for at in started] == [5.0, 10.0, 20.0]
    assert {line["row_id"] for line in job.results()} == {"1", "2", "3", "4"}
