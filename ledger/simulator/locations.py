"""Locations, enabling them for Webex Calling, and their number inventory.

The quirks that matter to a client: `GET /locations?name=` matches names that *contain* the text,
case-insensitively; a new location is not a calling location, and every calling endpoint on it
answers 404 errorCode 5620 until `POST /telephony/config/locations` enables it; a number must be
added to a location's inventory before a person can have it.
"""

from __future__ import annotations

import re

from ledger.simulator.bodies import Call, Reply, opt_obj, opt_str, paginate, str_list
from ledger.simulator.errors import (
    ApiError,
    bad_request,
    conflict,
    group_not_found,
    invalid_value,
    missing_fields,
    not_found,
    too_many_numbers,
)
from ledger.simulator.people import E164_RE, normalize_number
from ledger.simulator.state import (
    ADDRESS_KEYS,
    LocationRecord,
    NumberRecord,
    calling_location_json,
    extension_entry,
    location_json,
    number_entry,
)

LOCATION_NAME_MAX = 256
CALLING_NAME_MAX = 80
REQUIRED_ADDRESS = ("address1", "city", "state", "postalCode", "country")
NUMBERS_MAX = 2000
# GUESS: the files give no limit for DID numbers per request (20 for mobile numbers, 500 for
# DEACTIVATE on the same path); this one keeps a client's batches to a size Webex takes.
NUMBERS_ADD_MAX = 500


def _address(body: dict[str, object], missing: list[str]) -> dict[str, str]:
    """The address object; names of absent required parts are appended to `missing`."""
    given = opt_obj(body, "address", invalid_value)
    if given is None:
        missing.append("address")
        return {}
    address: dict[str, str] = {}
    for key in ADDRESS_KEYS:
        value = opt_str(given, key, invalid_value)
        if value:
            address[key] = value
        elif key in REQUIRED_ADDRESS:
            missing.append(f"address.{key}")
    country = address.get("country")
    if country is not None and not re.fullmatch(r"[A-Za-z]{2}", country):
        raise invalid_value(f"address.country '{country}' is not an ISO-3166 two-letter code.")
    return address


def _required(body: dict[str, object], keys: tuple[str, ...], missing: list[str]) -> list[str]:
    values: list[str] = []
    for key in keys:
        value = opt_str(body, key, invalid_value, max_len=LOCATION_NAME_MAX)
        if not value:
            missing.append(key)
        values.append(value or "")
    return values


def list_locations(call: Call) -> Reply:
    """GET /locations?name= (contains, case-insensitive) &id=."""
    store = call.store
    found = store.find_locations(call.request.query_value("name"))
    wanted_id = call.request.query_value("id")
    if wanted_id:
        found = [loc for loc in found if loc.id == wanted_id]
    page, link = paginate(call, found, default_max=100, max_cap=1000)
    return Reply(200, {"items": [location_json(loc, store.org_id) for loc in page]}, link)


def create_location(call: Call) -> Reply:
    """POST /locations: 201 {"id"}; 25008 when required fields are missing."""
    store = call.store
    body = call.json_body(invalid_value)
    missing: list[str] = []
    name, time_zone, language, announcement = _required(
        body, ("name", "timeZone", "preferredLanguage", "announcementLanguage"), missing
    )
    address = _address(body, missing)
    if missing:
        raise missing_fields(missing)
    if store.location_named(name) is not None:
        raise conflict(f"A location named '{name}' already exists.")
    location = LocationRecord(
        id=store.new_id("LOCATION"),
        name=name,
        time_zone=time_zone,
        preferred_language=language,
        announcement_language=announcement,
        address=address,
        latitude=opt_str(body, "latitude", invalid_value),
        longitude=opt_str(body, "longitude", invalid_value),
        notes=opt_str(body, "notes", invalid_value),
    )
    store.locations[location.id] = location
    store.locations_created[location.name] += 1
    call.changed = True
    return Reply(201, {"id": location.id})


def _location(call: Call) -> LocationRecord:
    location = call.store.locations.get(call.params["locationId"])
    if location is None:
        raise not_found("Location not found.")
    return location


def get_location(call: Call) -> Reply:
    """GET /locations/{locationId}."""
    return Reply(200, location_json(_location(call), call.store.org_id))


def update_location(call: Call) -> Reply:
    """PUT /locations/{locationId}: the fields sent replace the stored ones; 204."""
    store = call.store
    location = _location(call)
    body = call.json_body(invalid_value)
    name = opt_str(body, "name", invalid_value, max_len=LOCATION_NAME_MAX)
    if name is not None:
        other = store.location_named(name)
        if other is not None and other.id != location.id:
            raise conflict(f"A location named '{name}' already exists.")
        if location.calling_enabled and len(name) > CALLING_NAME_MAX:
            raise invalid_value(f"A calling location's name is at most {CALLING_NAME_MAX} chars.")
    missing: list[str] = []
    address = _address(body, missing) if "address" in body else None
    if missing:
        raise missing_fields(missing)
    before = location_json(location, store.org_id)
    time_zone = opt_str(body, "timeZone", invalid_value)
    language = opt_str(body, "preferredLanguage", invalid_value)
    location.name = name or location.name
    location.time_zone = time_zone or location.time_zone
    location.preferred_language = language or location.preferred_language
    location.address = address if address is not None else location.address
    call.changed = location_json(location, store.org_id) != before
    return Reply(204)


def _calling_location(call: Call) -> LocationRecord:
    location = call.store.locations.get(call.params["locationId"])
    if location is None or not location.calling_enabled:
        raise group_not_found()
    return location


def list_calling_locations(call: Call) -> Reply:
    """GET /telephony/config/locations?name=: only calling-enabled locations, key `locations`."""
    found = [
        loc
        for loc in call.store.find_locations(call.request.query_value("name"))
        if loc.calling_enabled
    ]
    page, link = paginate(call, found, default_max=2000, max_cap=2000)
    return Reply(
        200, {"locations": [calling_location_json(loc, detail=False) for loc in page]}, link
    )


def get_calling_location(call: Call) -> Reply:
    """GET /telephony/config/locations/{locationId}: 404 errorCode 5620 until enabled."""
    return Reply(200, calling_location_json(_calling_location(call), detail=True))


def enable_calling(call: Call) -> Reply:
    """POST /telephony/config/locations: enable an existing location; 201 {"id"}."""
    store = call.store
    body = call.json_body(invalid_value)
    missing: list[str] = []
    location_id, name, _, _, announcement = _required(
        body, ("id", "name", "timeZone", "preferredLanguage", "announcementLanguage"), missing
    )
    _address(body, missing)
    if missing:
        raise missing_fields(missing)
    location = store.locations.get(location_id)
    if location is None:
        raise not_found(f"Location '{location_id}' not found.")
    if location.calling_enabled:
        raise conflict("The location is already enabled for Webex Calling.")
    if len(name) > CALLING_NAME_MAX or len(location.name) > CALLING_NAME_MAX:
        raise invalid_value(f"A calling location's name is at most {CALLING_NAME_MAX} chars.")
    location.calling_enabled = True
    location.announcement_language = announcement
    call.changed = True
    return Reply(201, {"id": location.id})


def add_numbers(call: Call) -> Reply:
    """POST /telephony/config/locations/{id}/numbers: 201; numbers already there are ignored.

    Several numbers in one request are added all or none: one that is not E.164 or lives in
    another location refuses the request, naming it (a GUESS, see errors.py).
    """
    store = call.store
    location = _calling_location(call)
    body = call.json_body(invalid_value)
    numbers = list(dict.fromkeys(str_list(body, "phoneNumbers", invalid_value)))
    if not numbers:
        raise missing_fields(["phoneNumbers"])
    if len(numbers) > NUMBERS_ADD_MAX:
        raise too_many_numbers(NUMBERS_ADD_MAX)
    state = opt_str(body, "state", invalid_value) or "ACTIVE"
    if state not in ("ACTIVE", "INACTIVE"):
        raise invalid_value(f"state '{state}' is not valid.")
    for number in numbers:
        if not E164_RE.match(number):
            raise invalid_value(f"Phone number '{number}' is not in E.164 format.")
        existing = store.numbers.get(number)
        if existing is not None and existing.location_id != location.id:
            raise invalid_value(f"Phone number '{number}' already exists in another location.")
    for number in numbers:
        if number not in store.numbers:
            store.numbers[number] = NumberRecord(number, location.id, state)
            call.changed = True
    return Reply(201)


def list_numbers(call: Call) -> Reply:
    """GET /telephony/config/numbers: numbers and owned extensions, offset-paged by start/max."""
    store = call.store
    location_id = call.request.query_value("locationId")
    if location_id:
        location = store.locations.get(location_id)
        if location is None or not location.calling_enabled:
            raise group_not_found()
    phone = call.request.query_value("phoneNumber")
    extension = call.request.query_value("extension")
    # Fetch straight from the indexes when one number or extension is asked for: a client
    # checks one of those per row, and a scan each time would not scale to 21,000 rows.
    entries: list[dict[str, object]]
    if phone:
        record = store.numbers.get(_query_number(phone))
        entries = [number_entry(store, record)] if record is not None else []
    elif extension and location_id:
        owner_id = store.extension_owner.get((location_id, extension))
        entries = [_owner_entry(call, location_id, owner_id)] if owner_id is not None else []
    else:
        # Narrowed by location before the entries are built: a batch reads a whole location.
        entries = [
            number_entry(store, record)
            for record in store.numbers.values()
            if not location_id or record.location_id == location_id
        ]
        entries.extend(
            extension_entry(store, loc_id, store.people[person_id])
            for (loc_id, _), person_id in store.extension_owner.items()
            if (not location_id or loc_id == location_id)
            and store.people[person_id].work_number is None
        )
    wanted_owner = call.request.query_value("ownerId")
    only_free = call.flag("available")
    kept = [
        entry
        for entry in entries
        if _entry_matches(entry, location_id, extension, wanted_owner, only_free)
    ]
    page, link = paginate(call, kept, default_max=NUMBERS_MAX, max_cap=NUMBERS_MAX)
    return Reply(200, {"phoneNumbers": page}, link)


def _owner_entry(call: Call, location_id: str, person_id: str) -> dict[str, object]:
    person = call.store.people[person_id]
    if person.work_number is not None:
        return number_entry(call.store, call.store.numbers[person.work_number])
    return extension_entry(call.store, location_id, person)


def _query_number(raw: str) -> str:
    """A number from a query string; a `+` sent unencoded arrives as a space."""
    text = raw.strip()
    try:
        return normalize_number(text if text.startswith("+") else "+" + text)
    except ApiError:
        raise bad_request(f"Invalid phoneNumber '{raw}'.") from None


def _entry_matches(
    entry: dict[str, object],
    location_id: str | None,
    extension: str | None,
    owner_id: str | None,
    only_free: bool,
) -> bool:
    location = entry.get("location")
    owner = entry.get("owner")
    if location_id and not (isinstance(location, dict) and location.get("id") == location_id):
        return False
    if extension and entry.get("extension") != extension:
        return False
    if owner_id and not (isinstance(owner, dict) and owner.get("id") == owner_id):
        return False
    return not (only_free and owner is not None)
