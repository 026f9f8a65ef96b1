"""What the work benchmark compares against: the CSV's settings mix, the per-row request
targets it implies, and an org that already holds many people.

Targets per accepted row (the throughput issue's budget; "amortised" covers locations,
licenses, listings and number inventory shared by many rows):

    new run     1 create + 1 write per settings endpoint the row names + <= 0.1 amortised
    re-run      1 read per settings endpoint the row names + <= 0.1 amortised, zero writes

A row names voicemail (voicemail_enabled or voicemail_rings), callWaiting
(call_waiting_enabled) and callerId (caller_id), each at most once.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ledger.simulator.core import Simulator

AMORTISED = 0.1
ENDPOINT_FIELDS = {
    "voicemail": ("voicemail_enabled", "voicemail_rings"),
    "callWaiting": ("call_waiting_enabled",),
    "callerId": ("caller_id",),
}
OTHER_LOCATIONS = 5
EXTENSION_BASE = 700_000  # far above the sample's extensions (1000 + serial per location)


@dataclass(frozen=True)
class AcceptedRow:
    """What the benchmark needs of one accepted row."""

    email: str
    first_name: str
    last_name: str
    display_name: str
    endpoints: tuple[str, ...]  # the settings endpoints the row names


@dataclass(frozen=True)
class CsvMix:
    """How many accepted rows there are and how many name each settings endpoint."""

    rows: int
    by_endpoint: dict[str, int]

    @property
    def settings(self) -> int:
        """Settings endpoints named, summed over the rows."""
        return sum(self.by_endpoint.values())

    @classmethod
    def of(cls, rows: list[AcceptedRow]) -> CsvMix:
        """Count the mix of these rows."""
        by_endpoint = {name: 0 for name in ENDPOINT_FIELDS}
        for row in rows:
            for name in row.endpoints:
                by_endpoint[name] += 1
        return cls(len(rows), by_endpoint)

    def describe(self) -> str:
        """`2,992 rows; voicemail 1,050, callWaiting 700, callerId 520`."""
        named = ", ".join(f"{name} {count:,}" for name, count in self.by_endpoint.items())
        return f"{self.rows:,} accepted rows; rows naming {named}"


@dataclass(frozen=True)
class Target:
    """A request budget for a run: total and writes, with how it was reckoned."""

    total: float
    writes: float
    formula: str


def accepted_rows(database: Path) -> list[AcceptedRow]:
    """The accepted rows of the ledger's only run, in row order, read after ingest."""
    query = "SELECT normalized_json FROM rows WHERE status != 'rejected' ORDER BY row_id"
    with sqlite3.connect(database) as db:
        found = [json.loads(text) for (text,) in db.execute(query) if text]
    return [_accepted(values) for values in found]


def _accepted(values: dict[str, object]) -> AcceptedRow:
    def text(key: str) -> str:
        value = values.get(key)
        return "" if value is None else str(value)

    endpoints = tuple(
        name
        for name, fields in ENDPOINT_FIELDS.items()
        if any(values.get(field) is not None for field in fields)
    )
    return AcceptedRow(
        text("email"), text("first_name"), text("last_name"), text("display_name"), endpoints
    )


def new_run_target(mix: CsvMix) -> Target:
    """Every user created: 1 create + 1 write per settings endpoint named + 0.1 amortised."""
    writes = mix.rows + mix.settings
    return Target(
        total=writes + AMORTISED * mix.rows,
        writes=writes + AMORTISED * mix.rows,
        formula=_formula("1 create", "write", mix),
    )


def rerun_target(mix: CsvMix) -> Target:
    """Nothing to change: 1 read per settings endpoint named + 0.1 amortised, zero writes."""
    return Target(
        total=mix.settings + AMORTISED * mix.rows,
        writes=0.0,
        formula=_formula("", "read", mix) + ", zero writes",
    )


def populated_org_target(mix: CsvMix, present: CsvMix) -> Target:
    """A reference, not a budget the issue sets: new-run target plus a read of each settings
    endpoint named by a row whose user already existed (not created by this run)."""
    writes = mix.rows + mix.settings
    return Target(
        total=writes + present.settings + AMORTISED * mix.rows,
        writes=writes + AMORTISED * mix.rows,
        formula=_formula("1 create or update", "write", mix)
        + f" + reads of present users' settings ({present.settings / max(mix.rows, 1):.3f}/row)"
        + " [reference: assumes every present user's setting differs]",
    )


def _formula(first: str, verb: str, mix: CsvMix) -> str:
    rows = max(mix.rows, 1)
    parts = [first] if first else []
    parts += [f"{count / rows:.3f} {name} {verb}s" for name, count in mix.by_endpoint.items()]
    parts.append(f"{AMORTISED} amortised")
    return " + ".join(parts)


@dataclass(frozen=True)
class SeededOrg:
    """What `seed_populated_org` put in the org."""

    present: list[AcceptedRow]
    others: int
    csv_locations: int
    other_locations: int

    def describe(self) -> str:
        """One line for the report."""
        people = len(self.present) + self.others
        return (
            f"{people:,} people already in the org: {len(self.present):,} of the CSV's users "
            f"(every third accepted row) without calling, {self.others:,} other calling users "
            f"alternating between the CSV's {self.csv_locations} locations (which exist, "
            f"calling-enabled, with the CSV's values) and {self.other_locations} other locations"
        )


def seed_populated_org(
    sim: Simulator, csv_path: Path, rows: list[AcceptedRow], existing: int
) -> SeededOrg:
    """Fill the org before the run: the CSV's locations, a third of its users, and others up
    to `existing` people, through the simulator's seeding API (no request is counted)."""
    csv_locations = [
        sim.add_location(
            site.name,
            calling=True,
            time_zone=site.time_zone,
            preferred_language=site.language,
            announcement_language=site.announcement_language,
            address=site.address,
        )
        for site in _csv_locations(csv_path)
    ]
    other_locations = [
        sim.add_location(f"Branch Office {number:02d}", calling=True)
        for number in range(1, OTHER_LOCATIONS + 1)
    ]
    present = rows[2::3]
    for row in present:
        sim.add_person(
            row.email,
            first_name=row.first_name,
            last_name=row.last_name,
            display_name=row.display_name or None,
        )
    others = max(existing - len(present), 0)
    for index in range(others):
        pool = csv_locations if index % 2 == 0 else other_locations
        sim.add_person(
            f"colleague.{index}@example.com",
            first_name="Existing",
            last_name=f"Colleague {index}",
            location_id=pool[(index // 2) % len(pool)],
            extension=str(EXTENSION_BASE + index),
        )
    return SeededOrg(present, others, len(csv_locations), len(other_locations))


@dataclass(frozen=True)
class _Site:
    name: str
    time_zone: str
    language: str
    announcement_language: str
    address: dict[str, str]


def _csv_locations(csv_path: Path) -> list[_Site]:
    """Each location the CSV names, with the values its first row gives."""
    found: dict[str, _Site] = {}
    with csv_path.open(encoding="utf-8", newline="") as handle:
        for line in csv.DictReader(handle):
            name = line["location_name"]
            if name in found:
                continue
            address = {
                "address1": line["location_address1"],
                "address2": line["location_address2"],
                "city": line["location_city"],
                "state": line["location_state"],
                "postalCode": line["location_postal_code"],
                "country": line["location_country"],
            }
            found[name] = _Site(
                name,
                line["location_time_zone"],
                line["location_preferred_language"],
                line["location_announcement_language"],
                {key: value for key, value in address.items() if value},
            )
    return list(found.values())
