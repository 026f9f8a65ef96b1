"""Sample input CSVs in the project's CSV contract, for demos, rehearsals and benchmarks.

Rows are generated and written one at a time, so a 210,000-row benchmark file costs no more
memory than a 30-row one. Every number is valid E.164 (+1 NANP, one area code per location, so
numbers are unique across the file), every extension unique within its location, and a few rows
are deliberately invalid (bad email, duplicate email, bad phone, ...) to exercise rejection.
"""

from __future__ import annotations

import csv
import random
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

COLUMNS = (
    "email", "first_name", "last_name", "display_name", "location_name",
    "location_time_zone", "location_preferred_language", "location_announcement_language",
    "location_address1", "location_address2", "location_city", "location_state",
    "location_postal_code", "location_country", "extension", "phone_number", "department",
    "title", "voicemail_enabled", "call_waiting_enabled", "voicemail_rings", "caller_id",
)  # fmt: skip

# city, state, postal code, country, IANA time zone, language, area code
_CITIES = (
    ("Austin", "TX", "78701", "US", "America/Chicago", "en_us", "512"),
    ("Denver", "CO", "80202", "US", "America/Denver", "en_us", "303"),
    ("Seattle", "WA", "98101", "US", "America/Los_Angeles", "en_us", "206"),
    ("Boston", "MA", "02108", "US", "America/New_York", "en_us", "617"),
    ("Atlanta", "GA", "30303", "US", "America/New_York", "en_us", "404"),
    ("Chicago", "IL", "60601", "US", "America/Chicago", "en_us", "312"),
    ("Phoenix", "AZ", "85004", "US", "America/Phoenix", "en_us", "602"),
    ("Miami", "FL", "33130", "US", "America/New_York", "es_es", "305"),
    ("San Jose", "CA", "95113", "US", "America/Los_Angeles", "en_us", "408"),
    ("Portland", "OR", "97204", "US", "America/Los_Angeles", "en_us", "503"),
    ("Nashville", "TN", "37219", "US", "America/Chicago", "en_us", "615"),
    ("Raleigh", "NC", "27601", "US", "America/New_York", "en_us", "919"),
    ("Salt Lake City", "UT", "84111", "US", "America/Denver", "en_us", "801"),
    ("Minneapolis", "MN", "55401", "US", "America/Chicago", "en_us", "612"),
    ("Montreal", "QC", "H2Y 1C6", "CA", "America/Toronto", "fr_ca", "514"),
    ("Toronto", "ON", "M5H 2N2", "CA", "America/Toronto", "en_us", "416"),
    ("Vancouver", "BC", "V6B 1A1", "CA", "America/Vancouver", "en_us", "604"),
    ("Dallas", "TX", "75201", "US", "America/Chicago", "en_us", "214"),
    ("San Diego", "CA", "92101", "US", "America/Los_Angeles", "en_us", "619"),
    ("Columbus", "OH", "43215", "US", "America/New_York", "en_us", "614"),
)
_STREETS = ("Main", "Oak", "Market", "Congress", "Elm", "Cedar", "Lake", "Pine", "Hill")
_FIRST = (
    "Ana", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "José",
    "Kara", "Liam", "Mei", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Zoë",
)  # fmt: skip
_LAST = (
    "Alvarez", "Brown", "Chen", "Dubois", "Evans", "Fischer", "García", "Hughes", "Ito",
    "Johnson", "Kowalski", "López", "Martin", "Nguyen", "O'Brien", "Patel", "Rossi", "Smith",
)  # fmt: skip
_DEPARTMENTS = ("Sales", "Support", "Engineering", "Finance", "Operations", "Marketing", "")
_TITLES = ("Agent", "Manager", "Engineer", "Analyst", "Director", "Coordinator", "")
_BOOLEANS = ("true", "false", "yes", "no", "1", "0")
_INVALID_KINDS = (
    "bad_email", "duplicate_email", "bad_phone", "bad_extension", "missing_names",
    "bad_rings", "bad_caller_id", "bad_boolean",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SampleSummary:
    """What was written."""

    path: Path
    rows: int
    invalid_rows: int
    locations: int


@dataclass(frozen=True, slots=True)
class _Site:
    name: str
    columns: tuple[str, ...]  # the nine location_* values, in COLUMNS order
    area_code: str


def _area_codes(count: int) -> list[str]:
    """Distinct valid NANP area codes: the cities' own first, then generic NXX codes."""
    chosen = [city[6] for city in _CITIES[:count]]
    used = set(chosen)
    for code in range(201, 990):
        if len(chosen) >= count:
            break
        text = str(code)
        if text[1] != "9" and text[1:] != "11" and text not in used:
            chosen.append(text)
    if len(chosen) < count:
        raise ValueError(f"at most {len(chosen)} locations are supported")
    return chosen


def _sites(count: int) -> list[_Site]:
    sites: list[_Site] = []
    for index, area_code in enumerate(_area_codes(count)):
        city, state, postal, country, zone, language, _ = _CITIES[index % len(_CITIES)]
        round_ = index // len(_CITIES)
        name = f"{city} Office" if round_ == 0 else f"{city} Office {round_ + 1:02d}"
        address1 = f"{100 + 7 * index} {_STREETS[index % len(_STREETS)]} St"
        suite = f"Suite {200 + index}" if index % 3 == 0 else ""
        columns = (zone, language, language, address1, suite, city, state, postal, country)
        sites.append(_Site(name, columns, area_code))
    return sites


def _exchanges() -> Iterator[str]:
    """Central-office codes 201..999 without the N11 service codes."""
    for code in range(201, 1000):
        text = str(code)
        if text[1:] != "11":
            yield text


_EXCHANGES = tuple(_exchanges())


def _number(site: _Site, serial: int, rng: random.Random) -> str:
    exchange = _EXCHANGES[serial // 10_000]
    line = f"{serial % 10_000:04d}"
    if rng.random() < 0.1:  # formatted as people type them; normalization must accept these
        return f"+1 ({site.area_code}) {exchange}-{line}"
    return f"+1{site.area_code}{exchange}{line}"


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def write_sample_csv(
    path: str | Path,
    rows: int,
    *,
    locations: int = 20,
    invalid_rows: int = 8,
    seed: int = 0,
) -> SampleSummary:
    """Write `rows` data rows (including `invalid_rows` invalid ones) across `locations` sites."""
    if rows < 1 or locations < 1 or not 0 <= invalid_rows < rows:
        raise ValueError("need rows >= 1, locations >= 1 and 0 <= invalid_rows < rows")
    rng = random.Random(seed)
    sites = _sites(locations)
    serials = [0] * len(sites)
    step = rows // (invalid_rows + 1)
    invalid_at = {step * (k + 1) + 1: _INVALID_KINDS[k % len(_INVALID_KINDS)]
                  for k in range(invalid_rows)}  # fmt: skip
    first_email = ""
    target = Path(path)
    with target.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row_id in range(1, rows + 1):
            site_index = (row_id - 1) % len(sites)
            site = sites[site_index]
            serial = serials[site_index]
            serials[site_index] += 1
            row = _valid_row(row_id, site, serial, rng)
            if row_id == 1:
                first_email = row[0]
            kind = invalid_at.get(row_id)
            if kind is not None:
                _spoil(row, kind, first_email)
            writer.writerow(row)
    return SampleSummary(target, rows, invalid_rows, len(sites))


def _valid_row(row_id: int, site: _Site, serial: int, rng: random.Random) -> list[str]:
    first = rng.choice(_FIRST)
    last = rng.choice(_LAST)
    email = f"{_ascii(first)}.{_ascii(last)}.{row_id}@example.com"
    shape = rng.random()
    extension = str(1000 + serial) if shape < 0.9 else ""
    phone = _number(site, serial, rng) if shape >= 0.2 or not extension else ""
    settings = ["", "", "", ""]
    if rng.random() < 0.35:
        settings = [
            rng.choice(_BOOLEANS),
            rng.choice(("true", "false", "")),
            str(rng.randint(2, 20)) if rng.random() < 0.5 else "",
            ("DIRECT_LINE" if phone else "LOCATION_NUMBER") if rng.random() < 0.5 else "",
        ]
    return [
        email, first, last, f"{first} {last}", site.name, *site.columns, extension, phone,
        rng.choice(_DEPARTMENTS), rng.choice(_TITLES), *settings,
    ]  # fmt: skip


def _spoil(row: list[str], kind: str, first_email: str) -> None:
    """Make the row invalid in one way (COLUMNS order: email 0, names 1-3, extension 14...)."""
    if kind == "bad_email":
        row[0] = row[0].replace("@", ".at.")
    elif kind == "duplicate_email":
        row[0] = first_email
    elif kind == "bad_phone":
        row[15] = "+1 555 12"
    elif kind == "bad_extension":
        row[14] = "12a4"
    elif kind == "missing_names":
        row[1] = row[2] = row[3] = ""
    elif kind == "bad_rings":
        row[20] = "25"
    elif kind == "bad_caller_id":
        row[21] = "SOMETIMES"
    else:
        row[18] = "maybe"
