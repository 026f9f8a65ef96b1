"""`ledger ingest`: a CSV file becomes a run in the ledger, or is refused whole."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from ledger.config import PIPELINE_VERSION, Settings
from ledger.data_pipeline import file_sha256, read_rows
from ledger.database import Ledger
from ledger.error_handling import ConfigError, InputFileError
from ledger.records import RunInfo
from ledger.state_store import begin_run, find_run_by_hash, rejection_counts
from ledger.writers import write_rejected


@dataclass(frozen=True)
class IngestReport:
    run: RunInfo
    reused: bool
    rejected_by_reason: dict[str, int]
    rejected_file: Path


def ingest_file(ledger: Ledger, path: Path, settings: Settings) -> IngestReport:
    """Ingest `path` as a new run (or find the run its bytes already made) and write
    `rejected_rows.csv`. Raises InputFileError, with nothing stored, for a file that cannot be
    ingested at all."""
    if not path.is_file():
        what = "not a regular file" if path.exists() else "no such file"
        raise InputFileError(f"{what}: {path}")
    input_hash = file_sha256(path)
    out_dir = settings.LEDGER_OUTPUT_DIR
    existing = find_run_by_hash(ledger, input_hash)
    if existing is not None:
        return _reused(ledger, existing, out_dir)
    # Before the run is stored: once it is, the same file only ever finds it again.
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"LEDGER_OUTPUT_DIR {out_dir} cannot be used as a folder: {exc.strerror}"
        ) from None
    headers, rows, dedupe = read_rows(path, max_rows=settings.MAX_ROWS)
    try:
        with begin_run(
            ledger,
            input_hash=input_hash,
            file_name=path.name,
            pipeline_version=PIPELINE_VERSION,
            batch_size=settings.BATCH_SIZE,
            headers=headers,
        ) as writer:
            for parsed in rows:
                writer.add(parsed)
            run = writer.finish(locations=dedupe.location_specs())
    except IntegrityError:
        # Another ingest of the same bytes stored its run between our look-up and our store
        # (the run's hash is unique): that run is this file's, as if it had been found above.
        existing = find_run_by_hash(ledger, input_hash)
        if existing is None:
            raise
        return _reused(ledger, existing, out_dir)
    write_rejected(ledger, run, out_dir)
    return IngestReport(
        run=run,
        reused=False,
        rejected_by_reason=rejection_counts(ledger, run.id),
        rejected_file=out_dir / "rejected_rows.csv",
    )


def _reused(ledger: Ledger, run: RunInfo, out_dir: Path) -> IngestReport:
    return IngestReport(
        run=run,
        reused=True,
        rejected_by_reason=rejection_counts(ledger, run.id),
        rejected_file=out_dir / "rejected_rows.csv",
    )
