"""The artifacts, derived only from the ledger and written atomically (SPEC section 5).

Every file goes to a temporary name in the same folder, is flushed and fsynced, then renamed
over the old one, so a reader (or a crash) never sees a torn file. The content is a pure
function of the ledger: rows in `row_id` order, steps in pipeline order, timestamps as stored.
Cells a spreadsheet would execute, header cells included, are written with a leading `'`
(see `cells`; ingest reads them back without it). Files are written line by line as the ledger
yields them, never built in memory first.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sqlalchemy.orm import Session

from ledger.cells import FORMULA_STARTS, neutralise
from ledger.config import PIPELINE_VERSION
from ledger.database import Ledger
from ledger.error_handling import InvariantError, UsageError
from ledger.plan_diff import PLAN_COLUMNS
from ledger.records import RunInfo, iso
from ledger.reports import (
    checkpoint_position_in,
    outcome_counts,
    pending_lines,
    rejected_lines,
    result_lines,
    retry_lines,
    snapshot,
)
from ledger.state_store.plans import plan_lines

RESULTS_COLUMNS = (
    "timestamp",
    "batch_id",
    "row_id",
    "entity_type",
    "entity_key",
    "step",
    "status",
    "http_status",
    "message",
    "remote_id",
)
PENDING_COLUMNS = (
    "timestamp",
    "batch_id",
    "row_id",
    "entity_type",
    "entity_key",
    "step",
    "reason_code",
    "reason_message",
    "http_status",
    "raw_row_minified",
)
REJECTED_COLUMNS = (
    "timestamp",
    "row_id",
    "reason_code",
    "reason_message",
    "field",
    "raw_row_minified",
)
CHECKPOINT_KEYS = (
    "input_hash",
    "pipeline_version",
    "last_completed_batch_id",
    "last_completed_row_id",
    "started_at",
)
ARTIFACTS = ("results.csv", "pending_rows.csv", "rejected_rows.csv", "checkpoint.json")
RETRY_FILE = "retry_rows.csv"
PLAN_FILE = "plan.csv"
Cell = object
# The first characters of the text cells `neutralise` may change: the rest it leaves alone.
_GUARDED_FIRST = frozenset((*FORMULA_STARTS, "'"))


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[str]]:
    """A text file at a temporary name beside `path`, flushed, fsynced and renamed over `path`
    when the block ends; removed instead if the block fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_file(path) as out:
        out.write(text)


def atomic_write_csv(path: Path, columns: Sequence[str], lines: Iterable[Sequence[Cell]]) -> int:
    """Write a CSV atomically, line by line as `lines` yields them; returns the number of data
    lines. Nothing is built in memory: a retry file in the input's own columns can be wide."""
    with atomic_file(path) as out:
        writer = csv.writer(out, lineterminator="\n")
        # The csv module quotes a cell only for the characters of its own line terminator: a
        # bare carriage return (a raw input cell, a Webex message) would go out unquoted and
        # split the line for every reader. Such lines are written with every cell quoted.
        quoting_writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
        # Header cells too: the retry file's are the input's own, as hostile as its cells.
        header = [neutralise(column) for column in columns]
        (quoting_writer if any("\r" in cell for cell in header) else writer).writerow(header)
        width = len(columns)
        count = 0
        for line in lines:
            if len(line) != width:
                raise ValueError(f"{path.name}: a line has {len(line)} cells for {width} columns")
            # Each cell as the text `neutralise` gives it. Text that starts with none of the
            # guarded characters, None and non-negative ints need no call: nearly all cells.
            cells = [
                cell
                if type(cell) is str and (not cell or cell[0] not in _GUARDED_FIRST)
                else ""
                if cell is None
                else str(cell)
                if type(cell) is int and cell >= 0
                else neutralise(cell)
                for cell in line
            ]
            text = ",".join(cells)
            if (
                text.count(",") == width - 1
                and '"' not in text
                and "\n" not in text
                and "\r" not in text
                and (text or width > 1)
            ):
                # No cell needs quoting: this is the line the csv module would write, without
                # its scan of every character against the line terminator.
                out.write(text + "\n")
            elif "\r" in text:
                quoting_writer.writerow(cells)
            else:
                writer.writerow(cells)
            count += 1
    return count


class ArtifactFolderError(UsageError, OSError):
    """The artifacts cannot be written where they were asked for (`--out`, LEDGER_OUTPUT_DIR).

    A UsageError for the commands (exit 2, one line naming the folder and the system's reason),
    and still an OSError for `work`, whose periodic refresh logs it and goes on working.
    """

    def __init__(self, folder: Path, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.message = f"cannot write the artifacts to {folder}: {cause.strerror or cause}"

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ExportReport:
    out_dir: Path
    results: int
    pending: int
    rejected: int
    retry: int
    last_completed_batch_id: int


def write_rejected(ledger: Ledger, run: RunInfo, out_dir: Path) -> int:
    with snapshot(ledger) as session:
        return _write_rejected(session, run, out_dir)


def _write_rejected(session: Session, run: RunInfo, out_dir: Path) -> int:
    return atomic_write_csv(
        out_dir / "rejected_rows.csv", REJECTED_COLUMNS, rejected_lines(session, run.id)
    )


def checkpoint_document(ledger: Ledger, run: RunInfo) -> dict[str, str | int]:
    with snapshot(ledger) as session:
        return _checkpoint_document(session, run)


def _checkpoint_document(session: Session, run: RunInfo) -> dict[str, str | int]:
    batch_id, row_id = checkpoint_position_in(session, run.id)
    return {
        "input_hash": run.input_hash,
        "pipeline_version": run.pipeline_version or PIPELINE_VERSION,
        "last_completed_batch_id": batch_id,
        "last_completed_row_id": row_id,
        "started_at": iso(run.started_at),
    }


def export_all(ledger: Ledger, run: RunInfo, out_dir: Path) -> ExportReport:
    """Write the four artifacts and the retry file for `run` into `out_dir`.

    All of them are read in one snapshot of the ledger: while workers keep writing, the files
    still agree with each other (no row in two files or in none, no checkpoint ahead of them).
    Raises ArtifactFolderError when the folder cannot be created or written.
    """
    try:
        return _export_all(ledger, run, out_dir)
    except ArtifactFolderError:
        raise
    except OSError as exc:
        raise ArtifactFolderError(out_dir, exc) from exc


def _export_all(ledger: Ledger, run: RunInfo, out_dir: Path) -> ExportReport:
    with snapshot(ledger) as session:
        success_rows: set[int] = set()
        results = atomic_write_csv(
            out_dir / "results.csv",
            RESULTS_COLUMNS,
            result_lines(session, run.id, success_rows),
        )
        pending = atomic_write_csv(
            out_dir / "pending_rows.csv", PENDING_COLUMNS, pending_lines(session, run.id)
        )
        rejected = _write_rejected(session, run, out_dir)
        retry_columns = [*run.headers, "reason_code"]
        retry = atomic_write_csv(
            out_dir / RETRY_FILE, retry_columns, retry_lines(session, run.id, run.headers)
        )
        checkpoint = _checkpoint_document(session, run)
        expected = outcome_counts(session, run.id)
    # The writers' invariant (term sheet section 4): every row of the run is in exactly one
    # file. Checked on every export, under `python -O` too.
    written = {"success": len(success_rows), "pending": pending, "rejected": rejected}
    if written != expected:
        raise InvariantError(
            f"artifacts disagree with the ledger: wrote {written}, the ledger has {expected}"
        )
    atomic_write_text(
        out_dir / "checkpoint.json", json.dumps(checkpoint, indent=2, sort_keys=False) + "\n"
    )
    return ExportReport(
        out_dir=out_dir,
        results=results,
        pending=pending,
        rejected=rejected,
        retry=retry,
        last_completed_batch_id=int(checkpoint["last_completed_batch_id"]),
    )


def export_plan(ledger: Ledger, run: RunInfo, out_dir: Path) -> Path:
    """plan.csv of the run's plan, from the ledger (`PLAN_COLUMNS`, a line per field a step of
    a row would change, or per step when none would). Raises ArtifactFolderError when the
    folder cannot take it."""
    path = out_dir / PLAN_FILE
    try:
        with snapshot(ledger) as session:
            atomic_write_csv(path, PLAN_COLUMNS, plan_lines(session, run.id))
    except ArtifactFolderError:
        raise
    except OSError as exc:
        raise ArtifactFolderError(out_dir, exc) from exc
    return path


def write_plan_json(ledger: Ledger, run: RunInfo, summary: dict[str, object], out: IO[str]) -> int:
    """The run's plan as one JSON document on `out`: the summary's keys, then `lines` (each an
    object keyed by `PLAN_COLUMNS`), streamed from the ledger. Returns the number of lines."""
    head = json.dumps(summary, ensure_ascii=False)
    out.write(head[:-1] + (', "lines": [' if summary else '"lines": ['))
    count = 0
    with snapshot(ledger) as session:
        for line in plan_lines(session, run.id):
            out.write(
                ("\n" if count == 0 else ",\n")
                + json.dumps(dict(zip(PLAN_COLUMNS, line, strict=True)), ensure_ascii=False)
            )
            count += 1
    out.write("\n]}\n")
    return count
