"""What the system tests check, read-only: the ledger file (with sqlite3), the artifacts (as
CSV) and the simulator's state. Each check fails with a message naming the first rows that
break an invariant.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.simulator.core import Simulator
from tests.support.csvfiles import read_csv
from tests.support.system import Workspace

RESULT_STATUSES = frozenset({"created", "updated", "unchanged"})


# --- the ledger ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerRow:
    row_id: int
    batch_id: int | None
    status: str
    reason_code: str | None
    reason_message: str | None
    email: str | None
    location_name: str | None
    user: dict[str, Any] | None


def read_ledger(ws: Workspace) -> dict[int, LedgerRow]:
    """Every row of the latest run, by row_id."""
    with contextlib.closing(sqlite3.connect(f"file:{ws.db_path}?mode=ro", uri=True)) as db:
        run_id = db.execute("SELECT max(id) FROM runs").fetchone()[0]
        found = db.execute(
            "SELECT row_id, batch_id, status, reason_code, reason_message, email, "
            "location_name, normalized_json FROM rows WHERE run_id = ? ORDER BY row_id",
            (run_id,),
        ).fetchall()
    return {
        row[0]: LedgerRow(*row[:7], user=json.loads(row[7]) if row[7] else None) for row in found
    }


def read_steps(ws: Workspace) -> dict[int, dict[str, str]]:
    """Recorded step statuses of the latest run's rows: {row_id: {step: status}}."""
    with contextlib.closing(sqlite3.connect(f"file:{ws.db_path}?mode=ro", uri=True)) as db:
        found = db.execute(
            "SELECT r.row_id, s.step, s.status FROM steps s JOIN rows r ON r.id = s.row_pk "
            "WHERE r.run_id = (SELECT max(id) FROM runs)"
        ).fetchall()
    steps: dict[int, dict[str, str]] = {}
    for row_id, step, status in found:
        steps.setdefault(row_id, {})[step] = status
    return steps


def rows_created_despite_an_error(ws: Workspace) -> set[int]:
    """Rows of the latest run with a step whose create answered badly yet was applied."""
    with contextlib.closing(sqlite3.connect(f"file:{ws.db_path}?mode=ro", uri=True)) as db:
        found = db.execute(
            "SELECT DISTINCT r.row_id FROM steps s JOIN rows r ON r.id = s.row_pk "
            "WHERE r.run_id = (SELECT max(id) FROM runs) AND s.status = 'created' "
            "AND s.message LIKE 'created%'"
        ).fetchall()
    return {row_id for (row_id,) in found}


def finished_rows(ws: Workspace) -> int:
    """Rows of the latest run that `work` made terminal (cheap enough to poll)."""
    with contextlib.closing(sqlite3.connect(f"file:{ws.db_path}?mode=ro", uri=True)) as db:
        found = db.execute(
            "SELECT count(*) FROM rows WHERE run_id = (SELECT max(id) FROM runs) "
            "AND status IN ('success', 'pending')"
        ).fetchone()
    return int(found[0])


def status_counts(rows: Mapping[int, LedgerRow]) -> Counter[str]:
    return Counter(row.status for row in rows.values())


# --- the input and the artifacts -----------------------------------------------------------


def input_row_count(csv_path: Path) -> int:
    return len(read_csv(csv_path))


def check_artifacts(
    ws: Workspace, csv_path: Path, rows: Mapping[int, LedgerRow], *, finished: bool = True
) -> None:
    """The artifacts agree with the ledger and account for every row of the input.

    Every terminal row is in exactly one of results / pending / rejected (pending and rejected
    one line each; results one line per step, each step the row needs); rows still open
    appear in none. With `finished`, no row is open, so the three files partition the input.
    """
    total = input_row_count(csv_path)
    assert sorted(rows) == list(range(1, total + 1)), "the ledger lost or invented rows"
    results = read_csv(ws.out_dir / "results.csv")
    pending = read_csv(ws.out_dir / "pending_rows.csv")
    rejected = read_csv(ws.out_dir / "rejected_rows.csv")
    pending_ids = [int(line["row_id"]) for line in pending]
    rejected_ids = [int(line["row_id"]) for line in rejected]
    assert len(pending_ids) == len(set(pending_ids)), "a row is twice in pending_rows.csv"
    assert len(rejected_ids) == len(set(rejected_ids)), "a row is twice in rejected_rows.csv"
    result_steps: dict[int, list[str]] = {}
    for line in results:
        assert line["status"] in RESULT_STATUSES, line
        result_steps.setdefault(int(line["row_id"]), []).append(line["step"])
    in_results, in_pending, in_rejected = set(result_steps), set(pending_ids), set(rejected_ids)
    assert not in_results & in_pending, sorted(in_results & in_pending)[:10]
    assert not in_results & in_rejected, sorted(in_results & in_rejected)[:10]
    assert not in_pending & in_rejected, sorted(in_pending & in_rejected)[:10]
    by_status: dict[str, set[int]] = {}
    for row in rows.values():
        by_status.setdefault(row.status, set()).add(row.row_id)
    assert in_results == by_status.get("success", set()), "results.csv ≠ success rows"
    assert in_pending == by_status.get("pending", set()), "pending_rows.csv ≠ pending rows"
    assert in_rejected == by_status.get("rejected", set()), "rejected_rows.csv ≠ rejected rows"
    for row_id, steps in result_steps.items():
        assert len(steps) == len(set(steps)), f"row {row_id}: a step twice in results.csv"
        assert steps == needed_steps(rows[row_id]), f"row {row_id}: steps {steps}"
    for line in pending:
        row = rows[int(line["row_id"])]
        assert line["reason_code"] == row.reason_code, line
    if finished:
        assert in_results | in_pending | in_rejected == set(range(1, total + 1)), (
            "some rows are in no artifact: "
            f"{sorted(set(range(1, total + 1)) - in_results - in_pending - in_rejected)[:10]}"
        )
    checkpoint = json.loads((ws.out_dir / "checkpoint.json").read_text(encoding="utf-8"))
    assert checkpoint["input_hash"] == hashlib.sha256(csv_path.read_bytes()).hexdigest()
    batches = [row.batch_id for row in rows.values() if row.batch_id is not None]
    if finished and batches:
        last_batch = max(batches)
        assert checkpoint["last_completed_batch_id"] == last_batch, checkpoint
        assert checkpoint["last_completed_row_id"] == max(
            row.row_id for row in rows.values() if row.batch_id == last_batch
        ), checkpoint


def needed_steps(row: LedgerRow) -> list[str]:
    """The steps a success row must show, in order (SPEC section 4)."""
    user = row.user or {}
    steps = ["location", "calling"]
    if user.get("phone_number"):
        steps.append("number")
    steps.append("user")
    if any(
        user.get(key) is not None
        for key in ("voicemail_enabled", "call_waiting_enabled", "voicemail_rings", "caller_id")
    ):
        steps.append("settings")
    return steps


# --- the simulator's org -------------------------------------------------------------------


def check_no_duplicates(state: Mapping[str, Any]) -> None:
    """No email or location name exists (or was ever created) twice on the simulator."""
    for key in (
        "users_by_email",
        "people_created_by_email",
        "locations_by_name",
        "locations_created_by_name",
    ):
        twice = {name: count for name, count in state[key].items() if count != 1}
        assert not twice, f"{key}: {dict(list(twice.items())[:10])}"


def _compact(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit() or ch == "+")


TRUE_WORDS = frozenset({"true", "yes", "1"})
CALLING_LICENSE = "Webex Calling - Professional"


def _cell(line: Mapping[str, str], column: str) -> str:
    return (line.get(column) or "").strip()


def person_differences(sim: Simulator, line: Mapping[str, str]) -> list[str]:
    """How the person the CSV line names differs from it on the simulator, field by field
    (empty: it matches). A blank optional cell asks for nothing, so it is not compared."""
    email = _cell(line, "email").lower()
    person = sim.person_by_email(email)
    if person is None:
        return [f"{email} does not exist"]
    problems: list[str] = []

    def expect(what: str, seen: object, wanted: object) -> None:
        if seen != wanted:
            problems.append(f"{what} {seen!r} (the CSV says {wanted!r})")

    location = sim.location(str(person.get("locationId")))
    expect("location", location and location["name"], _cell(line, "location_name"))
    if _cell(line, "extension"):
        expect("extension", person.get("extension"), _cell(line, "extension"))
    numbers = person.get("phoneNumbers") or []
    assert isinstance(numbers, list)
    values = [str(item.get("value")) for item in numbers if isinstance(item, dict)]
    if _cell(line, "phone_number"):
        expect("numbers", values, [_compact(_cell(line, "phone_number"))])
    first, last = _cell(line, "first_name"), _cell(line, "last_name")
    display = _cell(line, "display_name") or " ".join(part for part in (first, last) if part)
    for column, key, wanted in (
        ("first_name", "firstName", first),
        ("last_name", "lastName", last),
        ("display_name", "displayName", display),
        ("department", "department", _cell(line, "department")),
        ("title", "title", _cell(line, "title")),
    ):
        if wanted:
            expect(column, person.get(key), wanted)
    licenses = person.get("licenses") or []
    assert isinstance(licenses, list)
    if sim.license_id(CALLING_LICENSE) not in licenses:
        problems.append(f"no calling license (licenses {licenses})")
        return problems  # not a calling user: it has no calling settings to compare
    problems += _settings_differences(sim, str(person["id"]), line, has_number=bool(values))
    return problems


def _settings_differences(
    sim: Simulator, person_id: str, line: Mapping[str, str], *, has_number: bool
) -> list[str]:
    settings = sim.person_settings(person_id)
    voicemail = settings["voicemail"]
    caller_id = settings["callerId"]
    assert isinstance(voicemail, dict) and isinstance(caller_id, dict)
    unanswered = voicemail.get("sendUnansweredCalls") or {}
    # What GET .../callerId answers where nothing was ever selected: the first allowed type,
    # DIRECT_LINE for a person with a number of their own (the simulator's `features`).
    selected = caller_id.get("selected") or ("DIRECT_LINE" if has_number else "LOCATION_NUMBER")
    seen = {
        "voicemail_enabled": voicemail.get("enabled"),
        "voicemail_rings": unanswered.get("numberOfRings"),
        "call_waiting_enabled": settings["callWaiting"],
        "caller_id": selected,
    }
    problems = []
    for column, value in seen.items():
        cell = _cell(line, column)
        if not cell:
            continue
        if column in ("voicemail_enabled", "call_waiting_enabled"):
            wanted: object = cell.lower() in TRUE_WORDS
        elif column == "voicemail_rings":
            wanted = int(cell)
        else:
            wanted = cell.upper()
        if value != wanted:
            problems.append(f"{column} {value!r} (the CSV says {wanted!r})")
    return problems


def check_remote_matches(
    sim: Simulator, csv_path: Path, rows: Mapping[int, LedgerRow], *, only_success: bool = True
) -> int:
    """Each valid row of the CSV exists on the simulator as the CSV says; returns rows checked.

    Compared with the CSV as written (not with the ledger's normalized copy), field by field:
    the email holds a person in the location the row names, with the row's extension, work
    number, first, last and display name, department and title, the calling license, and each
    calling setting the row names (`person_differences`). With `only_success`, rows the ledger
    has as pending are skipped.
    """
    problems: list[str] = []
    checked = 0
    for row_id, line in enumerate(read_csv(csv_path), start=1):
        row = rows[row_id]
        if row.status == "rejected" or (only_success and row.status != "success"):
            continue
        checked += 1
        problems += [f"row {row_id}: {problem}" for problem in person_differences(sim, line)]
    assert not problems, f"{len(problems)} differences from Webex: {problems[:10]}"
    return checked
