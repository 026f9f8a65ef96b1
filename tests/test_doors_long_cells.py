"""A cell too long for its column is rejected with that column's reason code (SPEC section 3):
a first or last name longer than NAME_MAX characters is `invalid_name`, however long it is."""

from __future__ import annotations

import pytest

from ledger.row_rules import MAX_CELL_CHARS, NAME_MAX
from tests.support.cli import LedgerEnv, assert_exit, invoke
from tests.support.csvfiles import read_csv, write_csv

HEADER = [
    "email",
    "first_name",
    "last_name",
    "display_name",
    "location_name",
    "extension",
    "phone_number",
    "department",
]
HUGE = 100 * MAX_CELL_CHARS


def row(n: int, **cells: str) -> list[str]:
    values = {
        "email": f"user{n}@example.com",
        "first_name": "Ana",
        "last_name": "Lima",
        "location_name": "HQ",
        "extension": str(1000 + n),
        **cells,
    }
    return [values.get(column, "") for column in HEADER]


@pytest.mark.parametrize(
    ("cells", "reason", "field"),
    [
        ({"first_name": "A" * (NAME_MAX + 1)}, "invalid_name", "first_name"),
        ({"first_name": "A" * HUGE}, "invalid_name", "first_name"),
        ({"last_name": "L" * HUGE}, "invalid_name", "last_name"),
        ({"display_name": "D" * HUGE}, "invalid_name", "display_name"),
        ({"email": "e" * HUGE + "@example.com"}, "invalid_email", "email"),
        ({"extension": "1" * HUGE}, "invalid_extension", "extension"),
        ({"phone_number": "+1" + "5" * HUGE}, "invalid_phone", "phone_number"),
        ({"location_name": "H" * HUGE}, "invalid_value", "location_name"),
        ({"department": "S" * HUGE}, "invalid_value", "department"),
    ],
    ids=[
        "first-one-past-the-limit",
        "first-huge",
        "last-huge",
        "display-huge",
        "email-huge",
        "extension-huge",
        "phone-huge",
        "location-huge",
        "department-huge",
    ],
)
def test_a_cell_too_long_for_its_column_gets_that_columns_reason(
    ledger_env: LedgerEnv, cells: dict[str, str], reason: str, field: str
) -> None:
    path = write_csv(ledger_env.root / "users.csv", HEADER, [row(1), row(2, **cells)])
    assert_exit(invoke("ingest", str(path), "--db", ledger_env.db_url), 0)
    lines = read_csv(ledger_env.rejected_csv)
    assert [(line["row_id"], line["reason_code"], line["field"]) for line in lines] == [
        ("2", reason, field)
    ]
    assert len(lines[0]["reason_message"]) < 100  # names the column, never quotes the cell
