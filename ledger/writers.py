"""The artifacts, derived only from the ledger and written atomically (SPEC section 5).

Every file goes to a temporary name in the same folder, is flushed and fsynced, then renamed
over the old one, so a reader (or a crash) never sees a torn file. The content is a pure
function of the ledger: rows in `row_id` order, steps in pipeline order, timestamps as stored.
Cells a spreadsheet would execute are written with a leading `'`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ledger.config import PIPELINE_VERSION
from ledger.database import Ledger
from ledger.reports import (
    checkpoint_position,
    pending_lines,
    rejected_lines,
    result_lines,
    retry_lines,
)
from ledger.state_store import RunInfo, iso

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
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

Cell = object


def is_plain_e164(text: str) -> bool:
    return text.startswith("+") and 9 <= len(text) <= 16 and text[1:].isdigit()


def neutralise(value: Cell) -> str:
    """The cell as text, with a leading `'` where a spreadsheet would execute it."""
    if value is None:
        return ""
    text = str(value)
    if text.startswith(FORMULA_STARTS) and not is_plain_e164(text):
        return "'" + text
    return text


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_csv(path: Path, columns: Sequence[str], lines: Iterable[Sequence[Cell]]) -> int:
    """Write a CSV atomically; returns the number of data lines."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    for line in lines:
        if len(line) != len(columns):
            raise ValueError(
                f"{path.name}: a line has {len(line)} cells for {len(columns)} columns"
            )
        writer.writerow([neutralise(cell) for cell in line])
        count += 1
    atomic_write_text(path, buffer.getvalue())
    return count


@dataclass(frozen=True)
class ExportReport:
    out_dir: Path
    results: int
    pending: int
    rejected: int
    retry: int
    last_completed_batch_id: int


def write_rejected(ledger: Ledger, run: RunInfo, out_dir: Path) -> int:
    return atomic_write_csv(
        out_dir / "rejected_rows.csv", REJECTED_COLUMNS, rejected_lines(ledger, run.id)
    )


def checkpoint_document(ledger: Ledger, run: RunInfo) -> dict[str, str | int]:
    batch_id, row_id = checkpoint_position(ledger, run.id)
    return {
        "input_hash": run.input_hash,
        "pipeline_version": run.pipeline_version or PIPELINE_VERSION,
        "last_completed_batch_id": batch_id,
        "last_completed_row_id": row_id,
        "started_at": iso(run.started_at),
    }


def export_all(ledger: Ledger, run: RunInfo, out_dir: Path) -> ExportReport:
    """Write the four artifacts and the retry file for `run` into `out_dir`."""
    results = atomic_write_csv(
        out_dir / "results.csv", RESULTS_COLUMNS, result_lines(ledger, run.id)
    )
    pending = atomic_write_csv(
        out_dir / "pending_rows.csv", PENDING_COLUMNS, pending_lines(ledger, run.id)
    )
    rejected = write_rejected(ledger, run, out_dir)
    retry_columns = [*run.headers, "reason_code"]
    retry = atomic_write_csv(
        out_dir / RETRY_FILE, retry_columns, retry_lines(ledger, run.id, run.headers)
    )
    checkpoint = checkpoint_document(ledger, run)
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
