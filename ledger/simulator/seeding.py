"""Putting entities straight into the org, for tests of "already exists" and "in use" paths.

People go through the same checks as POST /people (so a seeded org is one Webex could hold);
the caller holds the Simulator's lock.
"""

from __future__ import annotations

from ledger.simulator.errors import bad_request
from ledger.simulator.people import PersonInput, insert_person, normalize_number
from ledger.simulator.state import LocationRecord, NumberRecord, OrgStore

DEFAULT_ADDRESS = {
    "address1": "100 Main St",
    "city": "Austin",
    "state": "TX",
    "postalCode": "78701",
    "country": "US",
}
DEFAULT_CALLING_LICENSE = "Webex Calling - Professional"


def license_id(store: OrgStore, name: str) -> str:
    """The id of the license with this name."""
    for record in store.licenses.values():
        if record.name == name:
            return record.id
    raise KeyError(name)


def add_location(
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
    add_numbers(store, location.id, numbers)
    return location.id


def add_numbers(store: OrgStore, location_id: str, numbers: tuple[str, ...]) -> None:
    """Put numbers in the location's inventory (a number already there stays where it is)."""
    if location_id not in store.locations:
        raise KeyError(location_id)
    for number in numbers:
        normalized = normalize_number(number)
        store.numbers.setdefault(normalized, NumberRecord(normalized, location_id))


def add_person(
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
        licenses=[license_id(store, license_name)] if license_name else [],
        location_id=location_id,
        extension=extension,
        work_number=normalize_number(phone_number) if phone_number else None,
        extras={},
    )
    return insert_person(store, data, visible_at=float("-inf")).id
