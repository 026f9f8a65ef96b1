"""Ledgers built without the executor: a CSV is ingested, then rows are driven through
`state_store` exactly as a worker would (`claim_batch`, `record_step`, `finish_row`).

    mixed = build_mixed_run(env)         # 15 rows in every outcome (see its docstring)
    work_rows(ledger, run, {14: "success", 15: EXTENSION_IN_USE})
    run = make_run(ledger, folder, rows=9, batch_size=2)   # every 3rd row rejected
    url = copy_ledger(template, tmp_path / "l.db")        # a fresh ledger, without migrating
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import event
from sqlalchemy.engine import Connection

from ledger.config import load_settings
from ledger.database import Ledger, open_ledger
from ledger.error_handling import ReasonCode
from ledger.ingest import ingest_file
from ledger.records import ClaimedRow, RunInfo, StepOutcome
from ledger.state_store import claim_batch, finish_row, record_step, release_rows
from tests.support.cli import LedgerEnv
from tests.support.csvfiles import write_csv
from tests.support.people import person

# The input columns of a mixed run.
HEADER = [
    "email",
    "first_name",
    "last_name",
    "location_name",
    "location_time_zone",
    "location_country",
    "extension",
    "phone_number",
    "department",
    "voicemail_enabled",
]


@dataclass(frozen=True)
class Pending:
    """How `work_rows` should leave a row pending."""

    code: ReasonCode
    message: str = "the extension belongs to someone else"
    step: str = "user"
    http_status: int | None = 400


Plan = Pending | Literal["success"]


def step_outcomes(row: ClaimedRow) -> list[StepOutcome]:
    """What a worker records for a row whose steps all succeed (SPEC section 4)."""
    user = row.user
    location = user.location_name
    steps = [
        StepOutcome("location", "unchanged", "location", location, 200, f"LOC-{location}"),
        StepOutcome("calling", "unchanged", "location", location, 200, f"LOC-{location}"),
    ]
    if user.phone_number:
        key = f"LOC-{location}:{user.phone_number}"
        steps.append(StepOutcome("number", "created", "number", key, 201, f"NUM-{row.row_id}"))
    steps.append(StepOutcome("user", "created", "user", user.email, 200, f"PERSON-{row.row_id}"))
    settings = "updated" if user.names_settings() else "skipped"
    steps.append(StepOutcome("settings", settings, "settings", user.email, 200))
    return steps


def finish(ledger: Ledger, row: ClaimedRow, outcome: Plan) -> None:
    """Record a claimed row's steps and finish it as `outcome`, as a worker would."""
    steps = step_outcomes(row)
    if outcome == "success":
        for step in steps:
            record_step(ledger, row, step)
        finish_row(ledger, row, status="success", required_steps=[step.step for step in steps])
        return
    # The steps before the failing one succeeded; the failing one is recorded as failed.
    for step in steps:
        if step.step == outcome.step:
            failed = StepOutcome(
                step.step,
                "failed",
                step.entity_type,
                step.entity_key,
                outcome.http_status,
                message=outcome.message,
            )
            record_step(ledger, row, failed)
            break
        record_step(ledger, row, step)
    finish_row(
        ledger,
        row,
        status="pending",
        reason_code=outcome.code,
        reason_message=outcome.message,
        reason_step=outcome.step,
        http_status=outcome.http_status,
    )


def work_rows(
    ledger: Ledger,
    run: RunInfo,
    plan: Mapping[int, Plan],
    *,
    worker: str = "worker-a",
    lease_s: float = 60.0,
    keep_claimed: bool = False,
) -> list[ClaimedRow]:
    """Claim every ready row and finish those `plan` names (by row_id) as planned.

    The others are released back to `ready`, or with `keep_claimed` left claimed (in flight)
    and returned.
    """
    left = []
    for row in claim_batch(ledger, run.id, worker, 100_000, lease_s):
        outcome = plan.get(row.row_id)
        if outcome is None:
            left.append(row)
        else:
            finish(ledger, row, outcome)
    if keep_claimed:
        return left
    release_rows(ledger, left)
    return []


@dataclass(frozen=True)
class MixedRun:
    """A run with rows in every outcome, and which row_id is in which."""

    ledger: Ledger
    run: RunInfo
    source: Path
    success: frozenset[int]
    pending: Mapping[int, Pending]
    rejected: Mapping[int, str]
    in_flight: tuple[ClaimedRow, ...]
    ready: frozenset[int]

    @property
    def claimed(self) -> frozenset[int]:
        return frozenset(row.row_id for row in self.in_flight)

    @property
    def all_rows(self) -> frozenset[int]:
        return frozenset(range(1, self.run.total_rows + 1))


EXTENSION_IN_USE = Pending(ReasonCode.EXTENSION_IN_USE)
NUMBER_IN_USE = Pending(
    ReasonCode.NUMBER_IN_USE, "number +14155550108 is assigned to another user", "number", 409
)


def build_mixed_run(
    env: LedgerEnv, *, keep_claimed: bool = True, db_url: str | None = None
) -> MixedRun:
    """15 rows in batches of 4 (rejected rows get no batch):

    batch 1: rows 1, 2, 4, 5         success, success, pending, success   (3 rejected)
    batch 2: rows 6, 8, 9, 10        success, pending, claimed, success   (7 rejected)
    batch 3: rows 11, 13, 14, 15     pending, success, ready, ready       (12 rejected)
    """
    rows = [
        person(
            1, values=False, phone_number="+1 415 555 0101", location_time_zone="America/New_York"
        ),
        person(2, values=False, voicemail_enabled="true"),
        person(3, values=False, email="not-an-email"),
        person(4, values=False),
        person(5, values=False, location_name="Branch", location_country="US"),
        person(6, values=False),
        person(7, values=False, extension="7"),
        person(8, values=False, phone_number="+14155550108"),
        person(9, values=False),
        person(10, values=False, location_name="Branch"),
        person(11, values=False),
        person(12, values=False, email="USER1@example.com"),
        person(13, values=False),
        person(14, values=False),
        person(15, values=False),
    ]
    source = write_csv(env.root / "users.csv", HEADER, rows)
    ledger = open_ledger(db_url or env.db_url)
    settings = load_settings(BATCH_SIZE=4, LEDGER_OUTPUT_DIR=env.out_dir)
    run = ingest_file(ledger, source, settings).run
    success = frozenset({1, 2, 5, 6, 10, 13})
    pending = {4: EXTENSION_IN_USE, 8: NUMBER_IN_USE, 11: EXTENSION_IN_USE}
    plan: dict[int, Plan] = {row_id: "success" for row_id in success} | pending
    # Row 9 stays claimed by worker-a (in flight); rows 14 and 15 go back to ready.
    claimed = work_rows(ledger, run, plan, keep_claimed=True)
    in_flight = [row for row in claimed if row.row_id == 9 and keep_claimed]
    release_rows(ledger, [row for row in claimed if row not in in_flight])
    return MixedRun(
        ledger=ledger,
        run=run,
        source=source,
        success=success,
        pending=pending,
        rejected={3: "invalid_email", 7: "invalid_extension", 12: "duplicate_in_file"},
        in_flight=tuple(in_flight),
        ready=frozenset({14, 15} | (set() if keep_claimed else {9})),
    )


def make_run(ledger: Ledger, folder: Path, rows: int, batch_size: int = 500) -> RunInfo:
    """Ingest `rows` valid users (every 3rd with a bad email, so batches skip it)."""
    path = write_csv(
        folder / f"users-{rows}-{batch_size}.csv",
        ["email", "first_name", "location_name", "extension"],
        [
            [f"user{n}@example.com" if n % 3 else f"bad{n}", f"U{n}", "HQ", str(1000 + n)]
            for n in range(1, rows + 1)
        ],
    )
    settings = load_settings(LEDGER_OUTPUT_DIR=folder / "out", BATCH_SIZE=batch_size)
    return ingest_file(ledger, path, settings).run


def migrated_ledger_file(path: Path) -> Path:
    """A new SQLite ledger at `path`, migrated to head, for fresh ledgers to be copied from.

    Migrating is most of the cost of opening a new ledger (every revision, each in its own
    transaction); a copy takes a fraction of it and gives the same file (closed, the ledger
    leaves no -wal beside it).
    """
    open_ledger(f"sqlite:///{path}").dispose()
    assert not Path(f"{path}-wal").exists(), "the template ledger was left with a -wal"
    return path


def copy_ledger(template: Path, target: Path) -> str:
    """A fresh ledger at `target`, copied from `template` (owner-only, as ledger creates
    it); returns its URL."""
    shutil.copy(template, target)
    return f"sqlite:///{target}"


class Commits:
    """Counts the transactions committed on the ledger's write engine."""

    def __init__(self, ledger: Ledger) -> None:
        self.count = 0
        self._engine = ledger.write_engine
        event.listen(self._engine, "commit", self._seen)

    def _seen(self, _connection: Connection) -> None:
        self.count += 1

    def close(self) -> None:
        event.remove(self._engine, "commit", self._seen)
