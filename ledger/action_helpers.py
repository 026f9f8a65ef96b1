"""Pure payload builders and comparisons for the steps: no I/O, no state.

Each `*_changes` function compares what the row asks for with what Webex has and returns the
body to write, or None when the remote state already matches (the step is then `unchanged` and
makes no write). Only what the row names is compared: a blank cell means "leave as is".
"""

from __future__ import annotations

from typing import Any

from ledger.row_rules import LocationSpec, UserRow

JSON = dict[str, Any]


def json_copy(value: JSON) -> JSON:
    """A copy of a JSON object that shares no dict or list with it (`copy.deepcopy` for what
    JSON decodes to, without its memo and dispatch)."""
    return {key: _json_copy(item) for key, item in value.items()}


def _json_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_copy(item) for item in value]
    return value


# Person fields Webex sets itself; a PUT that sends them back is refused or ignored.
PERSON_READ_ONLY = (
    "id",
    "created",
    "lastModified",
    "lastActivity",
    "status",
    "invitePending",
    "loginEnabled",
    "type",
    "sipAddresses",
    "orgId",
    "nickName",
    "avatar",
    "xmppFederationJid",
)
# Per voicemail section, what only Webex reports (a custom greeting is uploaded, not set).
VOICEMAIL_READ_ONLY = {
    "sendBusyCalls": ("greetingUploaded",),
    "sendUnansweredCalls": ("greetingUploaded", "systemMaxNumberOfRings"),
}
ADDRESS_KEYS = {
    "address1": "address1",
    "address2": "address2",
    "city": "city",
    "state": "state",
    "postal_code": "postalCode",
    "country": "country",
}


# --- locations -------------------------------------------------------------------------------


def exact_location(items: list[JSON], name: str) -> JSON | None:
    """Webex matches `name` as "contains", case-insensitively: keep only the exact name."""
    for item in items:
        if item.get("name") == name:
            return item
    return None


def location_address(spec: LocationSpec) -> JSON:
    address: JSON = {}
    for field, key in ADDRESS_KEYS.items():
        value = getattr(spec, field)
        if value is not None:
            address[key] = value
    return address


def _remote_address(remote: JSON) -> JSON:
    """The address fields a location has, as Webex reports them."""
    found = remote.get("address")
    if not isinstance(found, dict):
        return {}
    return {key: found[key] for key in ADDRESS_KEYS.values() if key in found}


def location_create_body(spec: LocationSpec) -> JSON:
    """POST /locations: every required field must be known (see LocationSpec.missing_to_create)."""
    return {
        "name": spec.name,
        "timeZone": spec.time_zone,
        "preferredLanguage": spec.preferred_language,
        "announcementLanguage": spec.announcement_language,
        "address": location_address(spec),
    }


def location_changes(spec: LocationSpec, remote: JSON) -> JSON | None:
    """The PUT /locations/{id} body that makes `remote` agree with what the file gives."""
    address = _remote_address(remote)
    wanted_address = location_address(spec)
    changed = any(address.get(key) != value for key, value in wanted_address.items())
    address |= wanted_address
    body: JSON = {
        "name": spec.name,
        "timeZone": remote.get("timeZone"),
        "preferredLanguage": remote.get("preferredLanguage"),
        "address": address,
    }
    if spec.time_zone is not None and spec.time_zone != remote.get("timeZone"):
        body["timeZone"] = spec.time_zone
        changed = True
    if spec.preferred_language is not None and spec.preferred_language != remote.get(
        "preferredLanguage"
    ):
        body["preferredLanguage"] = spec.preferred_language
        changed = True
    if not changed:
        return None
    return {key: value for key, value in body.items() if value is not None}


def calling_enable_body(location_id: str, spec: LocationSpec, remote: JSON) -> JSON:
    """POST /telephony/config/locations: the location's own values, the file's where given."""
    address = _remote_address(remote)
    address |= location_address(spec)
    preferred = spec.preferred_language or remote.get("preferredLanguage")
    body: JSON = {
        "id": location_id,
        "name": spec.name,
        "timeZone": spec.time_zone or remote.get("timeZone"),
        "preferredLanguage": preferred,
        "announcementLanguage": spec.announcement_language or preferred,
        "address": address,
    }
    return {key: value for key, value in body.items() if value is not None}


# --- people ----------------------------------------------------------------------------------


def person_create_body(row: UserRow, location_id: str, license_id: str) -> JSON:
    """POST /people?callingData=true for a calling user: location, license and numbers in one go."""
    body: JSON = {
        "emails": [row.email],
        "displayName": row.display_name,
        "locationId": location_id,
        "licenses": [license_id],
    }
    if row.first_name is not None:
        body["firstName"] = row.first_name
    if row.last_name is not None:
        body["lastName"] = row.last_name
    if row.extension is not None:
        body["extension"] = row.extension
    if row.phone_number is not None:
        body["phoneNumbers"] = [{"type": "work", "value": row.phone_number}]
    if row.department is not None:
        body["department"] = row.department
    if row.title is not None:
        body["title"] = row.title
    return body


def person_put_base(remote: JSON) -> JSON:
    """The person as a PUT must send it back: everything, minus what Webex owns. Shallow: its
    values are `remote`'s own (replaced, never changed in place, by `person_changes`)."""
    body = dict(remote)
    for key in PERSON_READ_ONLY:
        body.pop(key, None)
    return body


def _work_number(person: JSON) -> str | None:
    for number in person.get("phoneNumbers") or []:
        if isinstance(number, dict) and number.get("type") == "work":
            value = number.get("value")
            return str(value) if value is not None else None
    return None


def compact_number(value: str | None) -> str | None:
    """A number as the rows hold it: digits and `+` only (Webex may format it otherwise)."""
    return None if value is None else "".join(ch for ch in value if ch.isdigit() or ch == "+")


def person_changes(row: UserRow, location_id: str, license_id: str, remote: JSON) -> JSON | None:
    """The full PUT /people/{id} body that brings `remote` to the row's values, or None."""
    body = person_put_base(remote)
    changed = False

    def want(key: str, value: object) -> None:
        nonlocal changed
        if value is not None and body.get(key) != value:
            body[key] = value
            changed = True

    want("firstName", row.first_name)
    want("lastName", row.last_name)
    want("displayName", row.display_name)
    want("department", row.department)
    want("title", row.title)
    want("extension", row.extension)
    if not body.get("locationId"):
        want("locationId", location_id)
    licenses = list(body.get("licenses") or [])
    if license_id not in licenses:
        body["licenses"] = [*licenses, license_id]
        changed = True
    if row.phone_number is not None and compact_number(_work_number(body)) != row.phone_number:
        others = [
            n
            for n in body.get("phoneNumbers") or []
            if not (isinstance(n, dict) and n.get("type") == "work")
        ]
        body["phoneNumbers"] = [*others, {"type": "work", "value": row.phone_number}]
        changed = True
    if not body.get("displayName"):
        body["displayName"] = row.display_name
        changed = True
    return json_copy(body) if changed else None


def needs_location_move(remote: JSON, location_id: str) -> bool:
    """A calling user already in another location can only be moved by a move-users job."""
    current = remote.get("locationId")
    return bool(current) and current != location_id


# --- numbers ---------------------------------------------------------------------------------


def number_entry(items: list[JSON], phone_number: str) -> JSON | None:
    for item in items:
        if compact_number(str(item.get("phoneNumber") or "")) == phone_number:
            return item
    return None


def person_has_number(person: JSON, phone_number: str, location_id: str) -> bool:
    """Whether a calling user in `location_id` already has `phone_number` as work number."""
    return (
        person.get("locationId") == location_id
        and compact_number(_work_number(person)) == phone_number
    )


def person_has_extension(person: JSON, extension: str, location_id: str) -> bool:
    """Whether a calling user in `location_id` already has `extension`."""
    return person.get("locationId") == location_id and person.get("extension") == extension


def number_entry_of(person: JSON, phone_number: str, location_id: str) -> JSON:
    """The inventory entry a person's own number implies (owner: that person)."""
    return {
        "phoneNumber": phone_number,
        "location": {"id": location_id},
        "owner": {"id": person.get("id"), "type": "PEOPLE"},
    }


def number_owner_id(entry: JSON) -> str | None:
    owner = entry.get("owner")
    if isinstance(owner, dict) and owner.get("id"):
        return str(owner["id"])
    return None


def number_location_id(entry: JSON) -> str | None:
    location = entry.get("location")
    if isinstance(location, dict) and location.get("id"):
        return str(location["id"])
    return None


# --- per-user settings -----------------------------------------------------------------------


def voicemail_changes(row: UserRow, remote: JSON) -> JSON | None:
    """Read-modify-write: the whole voicemail object back, with the row's values set. Decided
    on a shallow copy (a part set is replaced, never changed in place); the body that comes out
    shares nothing with `remote`."""
    body = dict(remote)
    changed = False
    if row.voicemail_enabled is not None and body.get("enabled") != row.voicemail_enabled:
        body["enabled"] = row.voicemail_enabled
        changed = True
    if row.voicemail_rings is not None:
        unanswered = body.get("sendUnansweredCalls")
        unanswered = dict(unanswered) if isinstance(unanswered, dict) else {}
        if unanswered.get("numberOfRings") != row.voicemail_rings:
            unanswered["numberOfRings"] = row.voicemail_rings
            unanswered.setdefault("enabled", True)
            body["sendUnansweredCalls"] = unanswered
            changed = True
    if not changed:
        return None
    # Fields only Webex reports: an update must not carry them (wxc_sdk leaves the same out).
    for key in ("voiceMessageForwardingEnabled", "systemMaxNumberOfRings"):
        body.pop(key, None)
    for section, read_only in VOICEMAIL_READ_ONLY.items():
        part = body.get(section)
        if isinstance(part, dict):
            body[section] = {k: v for k, v in part.items() if k not in read_only}
    return json_copy(body)


def call_waiting_changes(row: UserRow, remote: JSON) -> JSON | None:
    if row.call_waiting_enabled is None or remote.get("enabled") == row.call_waiting_enabled:
        return None
    return {"enabled": row.call_waiting_enabled}


def caller_id_changes(row: UserRow, remote: JSON) -> JSON | None:
    if row.caller_id is None or remote.get("selected") == row.caller_id:
        return None
    return {"selected": row.caller_id}
