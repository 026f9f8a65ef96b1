"""Putting entities straight into the org, for tests of "already exists" and "in use" paths,
and reading them back without going through the API.

People go through the same checks as POST /people (so a seeded org is one Webex could hold).
`OrgSeeding` is the part of the Simulator's interface that does this, under its lock.
"""

from __future__ import annotations

import threading

from ledger.simulator.errors import bad_request
from ledger.simulator.people import PersonInput, insert_person, normalize_number
from ledger.simulator.state import (
    LocationRecord,
    NumberRecord,
    OrgStore,
    location_json,
    person_json,
)

DEFAULT_ADDRESS = {
    "address1": "100 Main St",
    "city": "Austin",
    "state": "TX",
    "postalCode": "78701",
    "country": "US",
}
DEFAULT_CALLING_LICENSE = "Webex Calling - Professional"


def find_license_id(store: OrgStore, name: str) -> str:
    """The id of the license with this name."""
    for record in store.licenses.values():
        if record.name == name:
            return record.id
    raise KeyError(name)


def seed_location(
    store: OrgStore,
    name: str,
    *,
    calling: bool,
    numbers: tuple[str, ...],
    time_zone: str,
    preferred_language: str,
    announcement_language: str,
    address: dict[str, str] | None,
) -> str:
    """Add a location; duplicates of a name are refused as the API refuses them."""
    if store.location_named(name) is not None:
        raise bad_request(f"A location named '{name}' already exists.")
    location = LocationRecord(
        id=store.new_id("LOCATION"),
        name=name,
        time_zone=time_zone,
        preferred_language=preferred_language,
        announcement_language=announcement_language,
        address=dict(address or DEFAULT_ADDRESS),
        calling_enabled=calling,
    )
    store.locations[location.id] = location
    seed_numbers(store, location.id, numbers)
    return location.id


def seed_numbers(store: OrgStore, location_id: str, numbers: tuple[str, ...]) -> None:
    """Put numbers in the location's inventory (a number already there stays where it is)."""
    if location_id not in store.locations:
        raise KeyError(location_id)
    for number in numbers:
        normalized = normalize_number(number)
        store.numbers.setdefault(normalized, NumberRecord(normalized, location_id))


def seed_person(
    store: OrgStore,
    email: str,
    *,
    first_name: str,
    last_name: str,
    display_name: str | None,
    location_id: str | None,
    extension: str | None,
    phone_number: str | None,
    license_name: str | None,
) -> str:
    """Add a person, visible to the lookup by email at once; returns the id."""
    if license_name is None and location_id is not None:
        license_name = DEFAULT_CALLING_LICENSE
    data = PersonInput(
        email=email.strip().lower(),
        display_name=display_name or f"{first_name} {last_name}".strip(),
        first_name=first_name,
        last_name=last_name,
        department=None,
        title=None,
        licenses=[find_license_id(store, license_name)] if license_name else [],
        location_id=location_id,
        extension=extension,
        work_number=normalize_number(phone_number) if phone_number else None,
        extras={},
    )
    return insert_person(store, data, visible_at=float("-inf")).id


class OrgSeeding:
    """The Simulator's methods that seed the org and read it directly (no request, no fault)."""

    _lock: threading.RLock
    _store: OrgStore

    def add_license(self, name: str, total_units: int, consumed_units: int = 0) -> str:
        """Add a license; returns its id."""
        with self._lock:
            return self._store.add_license(name, total_units, consumed_units).id

    def license_id(self, name: str) -> str:
        """The id of the license with this name (KeyError if none)."""
        with self._lock:
            return find_license_id(self._store, name)

    def add_location(
        self,
        name: str,
        *,
        calling: bool = False,
        numbers: tuple[str, ...] = (),
        time_zone: str = "America/Chicago",
        preferred_language: str = "en_us",
        announcement_language: str = "en_us",
        address: dict[str, str] | None = None,
    ) -> str:
        """Add a location (optionally calling-enabled, with numbers); returns its id."""
        with self._lock:
            return seed_location(
                self._store,
                name,
                calling=calling,
                numbers=numbers,
                time_zone=time_zone,
                preferred_language=preferred_language,
                announcement_language=announcement_language,
                address=address,
            )

    def add_numbers(self, location_id: str, numbers: tuple[str, ...]) -> None:
        """Put numbers in a location's inventory."""
        with self._lock:
            seed_numbers(self._store, location_id, numbers)

    def add_person(
        self,
        email: str,
        *,
        first_name: str = "Test",
        last_name: str = "User",
        display_name: str | None = None,
        location_id: str | None = None,
        extension: str | None = None,
        phone_number: str | None = None,
        license_name: str | None = None,
    ) -> str:
        """Add a person, a calling user when given a location and a calling license; their id.

        `license_name` defaults to the Professional calling license when a location is given.
        Raises ApiError on the same checks as POST /people (taken extension, unknown number...).
        """
        with self._lock:
            return seed_person(
                self._store,
                email,
                first_name=first_name,
                last_name=last_name,
                display_name=display_name,
                location_id=location_id,
                extension=extension,
                phone_number=phone_number,
                license_name=license_name,
            )

    def person(self, person_id: str) -> dict[str, object] | None:
        """The person as GET /people/{id}?callingData=true shows it, or None."""
        with self._lock:
            record = self._store.people.get(person_id)
            return None if record is None else person_json(self._store, record, calling_data=True)

    def person_by_email(self, email: str) -> dict[str, object] | None:
        """The person holding this email (ignoring any lookup delay), or None."""
        with self._lock:
            record = self._store.person_by_email(email)
            return None if record is None else person_json(self._store, record, calling_data=True)

    def location(self, location_id: str) -> dict[str, object] | None:
        """The location as GET /locations/{id} shows it plus `callingEnabled`, or None."""
        with self._lock:
            record = self._store.locations.get(location_id)
            if record is None:
                return None
            return {
                **location_json(record, self._store.org_id),
                "callingEnabled": record.calling_enabled,
            }

    def person_settings(self, person_id: str) -> dict[str, object]:
        """A person's calling settings: voicemail, callerId choices, callWaiting."""
        with self._lock:
            record = self._store.people[person_id]
            return {
                "voicemail": dict(record.voicemail),
                "callerId": dict(record.caller_id),
                "callWaiting": record.call_waiting,
            }
