"""The simulated organization: its records, the indexes that keep lookups fast, and their JSON.

Everything here runs under the Simulator's lock. The indexes (people by email, extension owners
per location, number inventory) exist because a 21,000-row run creates thousands of people and a
scan per create would make the simulator, not the client, the bottleneck.
"""

from __future__ import annotations

import base64
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

CALLING_LICENSE_PREFIX = "Webex Calling"
ADDRESS_KEYS = ("address1", "address2", "city", "state", "postalCode", "country")


def default_voicemail() -> dict[str, object]:
    """A calling user's voicemail settings as Webex gives them to a new user."""
    return {
        "enabled": True,
        "sendAllCalls": {"enabled": False},
        "sendBusyCalls": {"enabled": True, "greeting": "DEFAULT", "greetingUploaded": False},
        "sendUnansweredCalls": {
            "enabled": True,
            "greeting": "DEFAULT",
            "greetingUploaded": False,
            "numberOfRings": 3,
            "systemMaxNumberOfRings": 20,
        },
        "notifications": {"enabled": False},
        "transferToNumber": {"enabled": False},
        "emailCopyOfMessage": {"enabled": False},
        "messageStorage": {"mwiEnabled": True, "storageType": "INTERNAL"},
        "faxMessage": {"enabled": False},
    }


@dataclass(slots=True)
class LicenseRecord:
    """A subscription's license; consumed units are the seed count plus the people holding it."""

    id: str
    name: str
    total_units: int
    preconsumed: int = 0

    @property
    def calling(self) -> bool:
        """Whether holding it makes a person a Webex Calling user."""
        return self.name.startswith(CALLING_LICENSE_PREFIX)


@dataclass(slots=True)
class LocationRecord:
    """A location; `calling_enabled` flips when it is enabled for Webex Calling."""

    id: str
    name: str
    time_zone: str
    preferred_language: str
    announcement_language: str
    address: dict[str, str]
    latitude: str | None = None
    longitude: str | None = None
    notes: str | None = None
    calling_enabled: bool = False


@dataclass(slots=True)
class NumberRecord:
    """A phone number in a location's inventory, and who owns it."""

    number: str
    location_id: str
    state: str = "ACTIVE"
    owner_id: str | None = None


@dataclass(slots=True)
class PersonRecord:
    """A person. Calling fields are set only while the person holds a calling license."""

    id: str
    email: str
    display_name: str
    first_name: str | None
    last_name: str | None
    licenses: list[str]
    created: str
    last_modified: str
    visible_at: float
    location_id: str | None = None
    extension: str | None = None
    work_number: str | None = None
    department: str | None = None
    title: str | None = None
    extras: dict[str, object] = field(default_factory=dict)
    voicemail: dict[str, object] = field(default_factory=default_voicemail)
    caller_id: dict[str, object] = field(default_factory=dict)
    call_waiting: bool = True


def now_iso() -> str:
    """Wall-clock time in the format Webex uses for `created` and `lastModified`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + "000Z"


class OrgStore:
    """One organization's entities with their indexes; ids are drawn from a seeded generator."""

    def __init__(self, seed: int, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._ids = random.Random(f"ids-{seed}")
        self.org_id = self.new_id("ORGANIZATION")
        self.licenses: dict[str, LicenseRecord] = {}
        self.locations: dict[str, LocationRecord] = {}
        self.people: dict[str, PersonRecord] = {}
        self.people_by_email: dict[str, str] = {}
        self.numbers: dict[str, NumberRecord] = {}
        self.extension_owner: dict[tuple[str, str], str] = {}
        self.license_holders: Counter[str] = Counter()
        self.people_created: Counter[str] = Counter()
        self.locations_created: Counter[str] = Counter()
        self.add_license("Webex Calling - Professional", 1_000_000)
        self.add_license("Webex Calling - Basic", 1_000_000)
        self.add_license("Meeting - Webex Meetings", 1_000_000)

    def new_id(self, kind: str) -> str:
        """A Webex-style id: base64 of `ciscospark://us/KIND/uuid`, without padding."""
        value = uuid.UUID(int=self._ids.getrandbits(128), version=4)
        raw = f"ciscospark://us/{kind}/{value}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def add_license(self, name: str, total_units: int, preconsumed: int = 0) -> LicenseRecord:
        """Add a license to the org (tests use small totals to exhaust one)."""
        record = LicenseRecord(self.new_id("LICENSE"), name, total_units, preconsumed)
        self.licenses[record.id] = record
        return record

    def consumed_units(self, license_id: str) -> int:
        """Units in use: the seed count plus every person holding the license."""
        return self.licenses[license_id].preconsumed + self.license_holders[license_id]

    def set_licenses(self, person: PersonRecord, licenses: list[str]) -> None:
        """Replace a person's licenses, keeping the consumed-units counts right."""
        self.license_holders.subtract(person.licenses)
        person.licenses = list(licenses)
        self.license_holders.update(person.licenses)

    def is_calling(self, person: PersonRecord) -> bool:
        """A person is a Webex Calling user while holding a calling license."""
        return any(lic in self.licenses and self.licenses[lic].calling for lic in person.licenses)

    def find_locations(self, contains: str | None) -> list[LocationRecord]:
        """Locations whose name contains the text, case-insensitively (as Webex matches)."""
        if not contains:
            return list(self.locations.values())
        needle = contains.casefold()
        return [loc for loc in self.locations.values() if needle in loc.name.casefold()]

    def location_named(self, name: str) -> LocationRecord | None:
        """The location with exactly this name (case-insensitive), if any."""
        folded = name.casefold()
        for location in self.locations.values():
            if location.name.casefold() == folded:
                return location
        return None

    def person_by_email(self, email: str) -> PersonRecord | None:
        """The person holding this email (case-insensitive), if any."""
        person_id = self.people_by_email.get(email.casefold())
        return self.people.get(person_id) if person_id else None

    def release_calling(self, person: PersonRecord) -> None:
        """Free the person's number and extension (on delete, license removal or change)."""
        if person.work_number is not None:
            record = self.numbers.get(person.work_number)
            if record is not None and record.owner_id == person.id:
                record.owner_id = None
        if person.location_id is not None and person.extension is not None:
            key = (person.location_id, person.extension)
            if self.extension_owner.get(key) == person.id:
                del self.extension_owner[key]

    def claim_calling(self, person: PersonRecord) -> None:
        """Record the person as owner of their number and extension."""
        if person.work_number is not None:
            self.numbers[person.work_number].owner_id = person.id
        if person.location_id is not None and person.extension is not None:
            self.extension_owner[(person.location_id, person.extension)] = person.id

    def remove_person(self, person: PersonRecord) -> None:
        """Delete a person and free what they held."""
        self.release_calling(person)
        self.set_licenses(person, [])
        del self.people[person.id]
        if self.people_by_email.get(person.email.casefold()) == person.id:
            del self.people_by_email[person.email.casefold()]


def location_json(location: LocationRecord, org_id: str) -> dict[str, object]:
    """GET /locations/{id} and the items of GET /locations."""
    body: dict[str, object] = {
        "id": location.id,
        "name": location.name,
        "orgId": org_id,
        "address": dict(location.address),
        "timeZone": location.time_zone,
        "preferredLanguage": location.preferred_language,
    }
    for key, value in (
        ("latitude", location.latitude),
        ("longitude", location.longitude),
        ("notes", location.notes),
    ):
        if value is not None:
            body[key] = value
    return body


def calling_location_json(location: LocationRecord, *, detail: bool) -> dict[str, object]:
    """GET /telephony/config/locations items (`detail=False`) and /{id} (`detail=True`)."""
    body: dict[str, object] = {
        "id": location.id,
        "name": location.name,
        "address": dict(location.address),
    }
    if detail:
        body["announcementLanguage"] = location.announcement_language
        body["timeZone"] = location.time_zone
        body["preferredLanguage"] = location.preferred_language
    return body


def person_json(store: OrgStore, person: PersonRecord, *, calling_data: bool) -> dict[str, object]:
    """A person as GET /people/{id} shows it; calling fields only with callingData=true.

    Fields without a value are left out rather than sent as null: the official schema types
    them as plain strings, and Webex omits them too.
    """
    body: dict[str, object] = {"id": person.id, "emails": [person.email]}
    if person.work_number is not None:
        body["phoneNumbers"] = [{"type": "work", "value": person.work_number, "primary": True}]
    if calling_data and person.extension is not None:
        body["extension"] = person.extension
    if calling_data and person.location_id is not None:
        body["locationId"] = person.location_id
    body["displayName"] = person.display_name
    for key, value in (
        ("firstName", person.first_name),
        ("lastName", person.last_name),
        ("department", person.department),
        ("title", person.title),
    ):
        if value is not None:
            body[key] = value
    body["orgId"] = store.org_id
    body["licenses"] = list(person.licenses)
    for key, extra in person.extras.items():
        # The schema types loginEnabled as the strings "true"/"false" in answers.
        body[key] = ("true" if extra else "false") if key == "loginEnabled" else extra
    body["created"] = person.created
    body["lastModified"] = person.last_modified
    body["type"] = "person"
    return body


def number_entry(store: OrgStore, record: NumberRecord) -> dict[str, object]:
    """One number of GET /telephony/config/numbers, with its owner's extension if owned."""
    entry: dict[str, object] = {"phoneNumber": record.number}
    owner = store.people.get(record.owner_id) if record.owner_id else None
    if owner is not None and owner.extension is not None:
        entry["extension"] = owner.extension
    entry.update(_number_common(store, record.location_id, record.state, owner))
    return entry


def extension_entry(store: OrgStore, location_id: str, person: PersonRecord) -> dict[str, object]:
    """An extension owned by a person without a number: Webex lists it with no phoneNumber."""
    entry: dict[str, object] = {"extension": person.extension}
    entry.update(_number_common(store, location_id, "ACTIVE", person))
    return entry


def _number_common(
    store: OrgStore, location_id: str, state: str, owner: PersonRecord | None
) -> dict[str, object]:
    location = store.locations[location_id]
    common: dict[str, object] = {
        "state": state,
        "mainNumber": False,
        "location": {"id": location.id, "name": location.name},
    }
    if owner is not None:
        owner_json: dict[str, object] = {"id": owner.id, "type": "PEOPLE"}
        if owner.first_name is not None:
            owner_json["firstName"] = owner.first_name
        if owner.last_name is not None:
            owner_json["lastName"] = owner.last_name
        common["owner"] = owner_json
    return common
