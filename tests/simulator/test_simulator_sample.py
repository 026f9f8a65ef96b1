"""The sample CSV generator: the CSV contract's columns, valid data, and deliberate rejects."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import pytest

from ledger.simulator import write_sample_csv
from ledger.simulator.sample import COLUMNS

SPEC_COLUMNS = (
    "email,first_name,last_name,display_name,location_name,location_time_zone,"
    "location_preferred_language,location_announcement_language,location_address1,"
    "location_address2,location_city,location_state,location_postal_code,location_country,"
    "extension,phone_number,department,title,voicemail_enabled,call_waiting_enabled,"
    "voicemail_rings,caller_id"
).split(",")
E164 = re.compile(r"^\+[1-9]\d{7,14}$")


def read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_columns_are_the_csv_contract() -> None:
    assert list(COLUMNS) == SPEC_COLUMNS


def test_a_realistic_file(tmp_path: Path) -> None:
    summary = write_sample_csv(tmp_path / "users.csv", 3000, locations=25, invalid_rows=8)
    rows = read(summary.path)
    assert (summary.rows, summary.invalid_rows, summary.locations) == (3000, 8, 25)
    assert len(rows) == 3000
    assert len({row["location_name"] for row in rows}) == 25
    phones = [re.sub(r"[\s.()\-]", "", row["phone_number"]) for row in rows if row["phone_number"]]
    assert len(phones) > 2000
    valid_phones = [phone for phone in phones if E164.match(phone)]
    assert len(valid_phones) == len(set(valid_phones))
    assert len(phones) - len(valid_phones) == 1  # the one deliberately bad number
    extensions = Counter(
        (row["location_name"], row["extension"]) for row in rows if row["extension"]
    )
    assert max(extensions.values()) == 1
    emails = Counter(row["email"] for row in rows)
    assert sorted(emails.values())[-1] == 2  # one deliberate duplicate
    assert any(row["voicemail_rings"] for row in rows)
    assert any(row["caller_id"] for row in rows)
    assert all(len(row["first_name"]) <= 30 and len(row["last_name"]) <= 30 for row in rows)
    by_location: dict[str, set[tuple[str, ...]]] = {}
    for row in rows:
        values = tuple(row[column] for column in SPEC_COLUMNS[5:14])
        by_location.setdefault(row["location_name"], set()).add(values)
    assert all(len(values) == 1 for values in by_location.values())  # rows agree per location


def test_invalid_rows_are_of_several_kinds(tmp_path: Path) -> None:
    rows = read(write_sample_csv(tmp_path / "u.csv", 200, locations=3, invalid_rows=8).path)
    assert sum("@" not in row["email"] for row in rows) == 1
    assert sum(row["extension"] == "12a4" for row in rows) == 1
    assert (
        sum(not (row["first_name"] or row["last_name"] or row["display_name"]) for row in rows) == 1
    )
    assert sum(row["voicemail_rings"] == "25" for row in rows) == 1
    assert sum(row["caller_id"] == "SOMETIMES" for row in rows) == 1
    assert sum(row["voicemail_enabled"] == "maybe" for row in rows) == 1


def test_the_same_seed_gives_the_same_bytes(tmp_path: Path) -> None:
    first = write_sample_csv(tmp_path / "a.csv", 500, seed=3).path.read_bytes()
    again = write_sample_csv(tmp_path / "b.csv", 500, seed=3).path.read_bytes()
    other = write_sample_csv(tmp_path / "c.csv", 500, seed=4).path.read_bytes()
    assert first == again != other


def test_large_files_stream(tmp_path: Path) -> None:
    summary = write_sample_csv(tmp_path / "big.csv", 30_000, locations=40, invalid_rows=20)
    with summary.path.open(encoding="utf-8") as handle:
        assert sum(1 for _ in handle) == 30_001


@pytest.mark.parametrize(
    "kwargs", [{"rows": 0}, {"rows": 5, "invalid_rows": 5}, {"rows": 5, "locations": 0}]
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, int]) -> None:
    rows = kwargs.pop("rows")
    with pytest.raises(ValueError):
        write_sample_csv(tmp_path / "x.csv", rows, **kwargs)
