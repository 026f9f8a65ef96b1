"""`ledger export` (SPEC section 5): the artifacts' exact columns, checkpoint.json, every row
in exactly one file, byte-identical re-exports, neutralised formula cells, retry_rows.csv, and
one consistent snapshot while workers write.

The ledgers are built without the executor: a CSV is ingested, then rows are driven through
`state_store` exactly as a worker would (`claim_batch`, `record_step`, `finish_row`). The
helpers for that (`MixedRun`, `build_mixed_run`, `work_rows`) are shared with
test_status_retry.py.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

import ledger.writers
from ledger.config import PIPELINE_VERSION, load_settings
from ledger.database import Ledger, open_ledger
from ledger.error_handling import ReasonCode
from ledger.ingest import ingest_file
from ledger.records import ClaimedRow, RunInfo, StepOutcome
from ledger.state_store import (
    claim_batch,
    finish_row,
    record_step,
    release_rows,
)
from ledger.writers import export_all, neutralise
from tests.conftest import LedgerEnv, assert_exit, invoke, read_csv, write_csv

# --- building ledgers without the executor ---------------------------------------------------

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
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


def person(n: int, **overrides: str) -> list[str]:
    values = {
        "email": f"user{n}@example.com",
        "first_name": "User",
        "last_name": f"Number{n}",
        "location_name": "HQ",
        "extension": str(1000 + n),
        **overrides,
    }
    return [values.get(column, "") for column in HEADER]


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
        person(1, phone_number="+1 415 555 0101", location_time_zone="America/New_York"),
        person(2, voicemail_enabled="true"),
        person(3, email="not-an-email"),
        person(4),
        person(5, location_name="Branch", location_country="US"),
        person(6),
        person(7, extension="7"),
        person(8, phone_number="+14155550108"),
        person(9),
        person(10, location_name="Branch"),
        person(11),
        person(12, email="USER1@example.com"),
        person(13),
        person(14),
        person(15),
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


@pytest.fixture
def mixed(ledger_env: LedgerEnv) -> Iterator[MixedRun]:
    built = build_mixed_run(ledger_env)
    yield built
    built.ledger.dispose()


def export(env: LedgerEnv, out_dir: Path) -> None:
    assert_exit(invoke("export", "--db", env.db_url, "--out", str(out_dir)), 0)


def header_of(path: Path) -> str:
    return path.read_text(encoding="utf-8").splitlines()[0]


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# --- the artifacts ---------------------------------------------------------------------------


def test_artifact_headers_are_exactly_the_spec(ledger_env: LedgerEnv, mixed: MixedRun) -> None:
    out = ledger_env.root / "export"
    export(ledger_env, out)
    assert header_of(out / "results.csv") == (
        "timestamp,batch_id,row_id,entity_type,entity_key,step,status,http_status,message,remote_id"
    )
    assert header_of(out / "pending_rows.csv") == (
        "timestamp,batch_id,row_id,entity_type,entity_key,step,reason_code,reason_message,"
        "http_status,raw_row_minified"
    )
    assert header_of(out / "rejected_rows.csv") == (
        "timestamp,row_id,reason_code,reason_message,field,raw_row_minified"
    )
    checkpoint = load_json(out / "checkpoint.json")
    assert list(checkpoint) == [
        "input_hash",
        "pipeline_version",
        "last_completed_batch_id",
        "last_completed_row_id",
        "started_at",
    ]


def test_checkpoint_values_follow_the_spec(ledger_env: LedgerEnv, mixed: MixedRun) -> None:
    out = ledger_env.root / "export"
    export(ledger_env, out)
    checkpoint = load_json(out / "checkpoint.json")
    assert checkpoint["input_hash"] == hashlib.sha256(mixed.source.read_bytes()).hexdigest()
    assert checkpoint["pipeline_version"] == PIPELINE_VERSION
    assert TIMESTAMP.match(checkpoint["started_at"])
    # Batch 1 (rows 1, 2, 4, 5) is all terminal; batch 2 still holds row 9 in flight.
    assert (checkpoint["last_completed_batch_id"], checkpoint["last_completed_row_id"]) == (1, 5)

    # Finishing row 9 completes batch 2 (its highest row is 10); batch 3 still has two ready.
    finish(mixed.ledger, mixed.in_flight[0], "success")
    export(ledger_env, out)
    checkpoint = load_json(out / "checkpoint.json")
    assert (checkpoint["last_completed_batch_id"], checkpoint["last_completed_row_id"]) == (2, 10)

    work_rows(mixed.ledger, mixed.run, {14: "success"})
    export(ledger_env, out)
    checkpoint = load_json(out / "checkpoint.json")
    assert (checkpoint["last_completed_batch_id"], checkpoint["last_completed_row_id"]) == (2, 10)

    work_rows(mixed.ledger, mixed.run, {15: EXTENSION_IN_USE})
    export(ledger_env, out)
    checkpoint = load_json(out / "checkpoint.json")
    assert (checkpoint["last_completed_batch_id"], checkpoint["last_completed_row_id"]) == (3, 15)


def test_checkpoint_is_zero_until_the_first_batch_is_terminal(ledger_env: LedgerEnv) -> None:
    source = write_csv(ledger_env.root / "users.csv", HEADER, [person(n) for n in range(1, 6)])
    ledger = open_ledger(ledger_env.db_url)
    try:
        settings = load_settings(BATCH_SIZE=2, LEDGER_OUTPUT_DIR=ledger_env.out_dir)
        run = ingest_file(ledger, source, settings).run
        # Batch 2 and 3 done, batch 1 (rows 1, 2) still has row 1 ready: nothing is complete.
        work_rows(ledger, run, {2: "success", 3: "success", 4: "success", 5: "success"})
        export_all(ledger, run, ledger_env.out_dir)
    finally:
        ledger.dispose()
    checkpoint = load_json(ledger_env.out_dir / "checkpoint.json")
    assert (checkpoint["last_completed_batch_id"], checkpoint["last_completed_row_id"]) == (0, 0)


def test_exporting_twice_gives_byte_identical_files(ledger_env: LedgerEnv, mixed: MixedRun) -> None:
    first, second = ledger_env.root / "first", ledger_env.root / "second"
    export(ledger_env, first)
    export(ledger_env, second)
    names = sorted(path.name for path in first.iterdir())
    assert names == [
        "checkpoint.json",
        "pending_rows.csv",
        "rejected_rows.csv",
        "results.csv",
        "retry_rows.csv",
    ]
    before = {name: (first / name).read_bytes() for name in names}
    assert before == {name: (second / name).read_bytes() for name in names}
    export(ledger_env, first)  # over the files it wrote: no temporary files left behind
    assert sorted(path.name for path in first.iterdir()) == names
    assert before == {name: (first / name).read_bytes() for name in names}


def test_every_row_is_in_exactly_one_outcome_file(ledger_env: LedgerEnv, mixed: MixedRun) -> None:
    # Finish the run: every row terminal, mixing success, pending and rejected.
    finish(mixed.ledger, mixed.in_flight[0], "success")
    work_rows(mixed.ledger, mixed.run, {14: "success", 15: EXTENSION_IN_USE})
    out = ledger_env.root / "export"
    export(ledger_env, out)
    results = read_csv(out / "results.csv")
    pending = read_csv(out / "pending_rows.csv")
    rejected = read_csv(out / "rejected_rows.csv")

    in_results = {int(line["row_id"]) for line in results}
    in_pending = [int(line["row_id"]) for line in pending]
    in_rejected = [int(line["row_id"]) for line in rejected]
    assert len(in_pending) == len(set(in_pending)), "a pending row is listed twice"
    assert len(in_rejected) == len(set(in_rejected)), "a rejected row is listed twice"
    assert not in_results & set(in_pending)
    assert not in_results & set(in_rejected)
    assert not set(in_pending) & set(in_rejected)
    assert in_results | set(in_pending) | set(in_rejected) == mixed.all_rows
    assert in_results == mixed.success | {9, 14}
    assert set(in_pending) == set(mixed.pending) | {15}
    assert {int(line["row_id"]): line["reason_code"] for line in rejected} == mixed.rejected


def test_results_hold_each_success_rows_steps_in_order(
    ledger_env: LedgerEnv, mixed: MixedRun
) -> None:
    out = ledger_env.root / "export"
    export(ledger_env, out)
    results = read_csv(out / "results.csv")
    by_row: dict[int, list[dict[str, str]]] = {}
    for line in results:
        by_row.setdefault(int(line["row_id"]), []).append(line)
    # Row 1 has a phone number and no settings (skipped steps are not listed); row 2 names a
    # setting and has no number.
    assert [(line["step"], line["status"]) for line in by_row[1]] == [
        ("location", "unchanged"),
        ("calling", "unchanged"),
        ("number", "created"),
        ("user", "created"),
    ]
    assert [(line["step"], line["status"]) for line in by_row[2]] == [
        ("location", "unchanged"),
        ("calling", "unchanged"),
        ("user", "created"),
        ("settings", "updated"),
    ]
    user_line = by_row[5][-1]
    assert user_line == {
        "timestamp": user_line["timestamp"],
        "batch_id": "1",
        "row_id": "5",
        "entity_type": "user",
        "entity_key": "user5@example.com",
        "step": "user",
        "status": "created",
        "http_status": "200",
        "message": "",
        "remote_id": "PERSON-5",
    }
    assert all(TIMESTAMP.match(line["timestamp"]) for line in results)
    assert list(by_row) == sorted(by_row), "results.csv is not in row_id order"


def test_pending_and_rejected_lines(ledger_env: LedgerEnv, mixed: MixedRun) -> None:
    out = ledger_env.root / "export"
    export(ledger_env, out)
    pending = {int(line["row_id"]): line for line in read_csv(out / "pending_rows.csv")}
    number = pending[8]
    assert number["batch_id"] == "2"
    assert (number["entity_type"], number["entity_key"]) == ("number", "LOC-HQ:+14155550108")
    assert (number["step"], number["reason_code"], number["http_status"]) == (
        "number",
        "number_in_use",
        "409",
    )
    assert number["reason_message"] == NUMBER_IN_USE.message
    raw = json.loads(number["raw_row_minified"])
    assert list(raw) == HEADER
    assert raw["phone_number"] == "+14155550108"
    assert (pending[4]["entity_type"], pending[4]["entity_key"]) == ("user", "user4@example.com")
    assert all(TIMESTAMP.match(line["timestamp"]) for line in pending.values())

    rejected = read_csv(out / "rejected_rows.csv")
    assert [(line["row_id"], line["reason_code"], line["field"]) for line in rejected] == [
        ("3", "invalid_email", "email"),
        ("7", "invalid_extension", "extension"),
        ("12", "duplicate_in_file", "email"),
    ]
    assert json.loads(rejected[0]["raw_row_minified"])["email"] == "not-an-email"


# --- formula cells ---------------------------------------------------------------------------

ARABIC_INDIC_DIGITS = "".join(chr(0x0661 + n) for n in range(9))  # str.isdigit() says yes


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+2", "'=1+2"),
        ("+SUM(A1:A2)", "'+SUM(A1:A2)"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("+14155550100", "+14155550100"),
        ("+1 415 555 0100", "'+1 415 555 0100"),
        ("+1415555010012345", "'+1415555010012345"),  # 16 digits: not E.164
        (f"+{ARABIC_INDIC_DIGITS}", f"'+{ARABIC_INDIC_DIGITS}"),  # no phone number
        ("Sales", "Sales"),
        ("a=b", "a=b"),
        ("", ""),
        (None, ""),
        (404, "404"),
        (-1, "'-1"),
    ],
)
def test_neutralise(cell: object, written: str) -> None:
    assert neutralise(cell) == written


def test_formula_cells_are_neutralised_in_every_artifact(ledger_env: LedgerEnv) -> None:
    rows = [
        person(1, location_name="-Lab", department='=HYPERLINK("http://x")'),
        person(2, department="+SUM(A1)", phone_number="+14155550100"),
        person(3, department="@cmd", email="bad@"),
        person(4, department="\t=1+1"),
        person(5, department="\r-1"),
        person(6, department="Sales", phone_number="+14155550106"),
        person(7, department="two\rlines"),
    ]
    # CRLF line ends, so that the csv module quotes the cells holding a carriage return.
    source = write_csv(ledger_env.root / "users.csv", HEADER, rows, newline="\r\n")
    ledger = open_ledger(ledger_env.db_url)
    try:
        settings = load_settings(LEDGER_OUTPUT_DIR=ledger_env.out_dir)
        run = ingest_file(ledger, source, settings).run
        formula = Pending(ReasonCode.BAD_REQUEST, "=cmd|' /C calc'!A0", "user", 400)
        plan: dict[int, Plan] = {
            1: "success",
            2: formula,
            4: formula,
            5: formula,
            6: "success",
            7: formula,
        }
        work_rows(ledger, run, plan)
        export_all(ledger, run, ledger_env.out_dir)
    finally:
        ledger.dispose()
    out = ledger_env.out_dir

    results = read_csv(out / "results.csv")
    assert {line["entity_key"] for line in results if line["step"] == "location"} == {
        "'-Lab",
        "HQ",
    }
    numbers = [line["entity_key"] for line in results if line["step"] == "number"]
    assert numbers == ["LOC-HQ:+14155550106"]

    pending = read_csv(out / "pending_rows.csv")
    assert [line["reason_message"] for line in pending] == ["'=cmd|' /C calc'!A0"] * 4

    # retry_rows.csv gives back the input's own cells: the dangerous ones are neutralised, a
    # plain E.164 number is left as it is.
    retry = {line["email"]: line for line in read_csv(out / "retry_rows.csv")}
    assert retry["user2@example.com"]["department"] == "'+SUM(A1)"
    assert retry["user2@example.com"]["phone_number"] == "+14155550100"
    assert retry["bad@"]["department"] == "'@cmd"
    assert retry["user4@example.com"]["department"] == "'\t=1+1"
    assert retry["user5@example.com"]["department"] == "'\r-1"
    # A carriage return inside a cell is quoted, so the line is not split in two.
    assert retry["user7@example.com"]["department"] == "two\rlines"
    assert len(retry) == 5
    # Row 1 succeeded: its formula department is in no artifact cell (only inside JSON).
    assert "user1@example.com" not in retry


# --- retry_rows.csv --------------------------------------------------------------------------


def test_retry_rows_hold_pending_and_rejected_rows_in_the_input_columns(
    ledger_env: LedgerEnv, mixed: MixedRun
) -> None:
    out = ledger_env.root / "export"
    export(ledger_env, out)
    with (out / "retry_rows.csv").open(encoding="utf-8", newline="") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == [*HEADER, "reason_code"]
    by_email = {line[0]: line for line in lines[1:]}
    expected = {
        "user4@example.com": "extension_in_use",
        "user8@example.com": "number_in_use",
        "user11@example.com": "extension_in_use",
        "not-an-email": "invalid_email",
        "user7@example.com": "invalid_extension",
        "USER1@example.com": "duplicate_in_file",  # as the file had it, not normalized
    }
    assert {email: line[-1] for email, line in by_email.items()} == expected
    # In row_id order, each cell as the input had it.
    assert [line[0] for line in lines[1:]] == [
        "not-an-email",
        "user4@example.com",
        "user7@example.com",
        "user8@example.com",
        "user11@example.com",
        "USER1@example.com",
    ]
    assert by_email["user7@example.com"][HEADER.index("extension")] == "7"
    assert by_email["user8@example.com"][HEADER.index("phone_number")] == "+14155550108"


# --- one snapshot ----------------------------------------------------------------------------


def test_an_export_reads_one_snapshot_while_a_worker_writes(
    ledger_env: LedgerEnv, mixed: MixedRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row finished while the export runs is in none of its files, and the checkpoint does
    not run ahead of results.csv: all five files describe the same committed state."""
    (in_flight,) = claim_batch(mixed.ledger, mixed.run.id, "worker-b", 1, 60.0)  # row 14
    real_write = ledger.writers.atomic_write_csv
    calls: list[str] = []

    def write_then_finish(path: Path, *args: Any, **kwargs: Any) -> int:
        count = real_write(path, *args, **kwargs)
        if not calls:
            # After results.csv is written, workers commit: rows 9 and 14 succeed.
            finish(mixed.ledger, mixed.in_flight[0], "success")
            finish(mixed.ledger, in_flight, "success")
        calls.append(path.name)
        return count

    monkeypatch.setattr(ledger.writers, "atomic_write_csv", write_then_finish)
    out = ledger_env.root / "export"
    export_all(mixed.ledger, mixed.run, out)
    assert calls[0] == "results.csv"
    results = {int(line["row_id"]) for line in read_csv(out / "results.csv")}
    assert 9 not in results
    assert 14 not in results
    assert load_json(out / "checkpoint.json")["last_completed_batch_id"] == 1

    monkeypatch.setattr(ledger.writers, "atomic_write_csv", real_write)
    export_all(mixed.ledger, mixed.run, out)
    results = {int(line["row_id"]) for line in read_csv(out / "results.csv")}
    assert {9, 14} <= results
    assert load_json(out / "checkpoint.json")["last_completed_batch_id"] == 2


def test_an_export_that_would_lose_a_row_is_refused(
    ledger_env: LedgerEnv, mixed: MixedRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writers' invariant is checked on every export, not assumed: a pending row that goes
    missing from pending_rows.csv (here, a query that drops one) stops the export."""
    from ledger import writers
    from ledger.error_handling import InvariantError

    real = writers.pending_lines

    def drop_first(session: Any, run_id: int) -> Any:
        lines = real(session, run_id)
        next(lines, None)
        return lines

    monkeypatch.setattr(writers, "pending_lines", drop_first)
    with pytest.raises(InvariantError, match="artifacts disagree with the ledger"):
        writers.export_all(mixed.ledger, mixed.run, ledger_env.root / "broken")
    assert not (ledger_env.root / "broken" / "checkpoint.json").exists()
