"""Per-user calling settings under /people/{personId}/features/...: voicemail, caller ID, call
waiting. Only calling users have them; anyone else gets 404, as from Webex.

PUT updates the fields it names and leaves the others (the settings endpoints are not the
full-replace People PUT); read-only fields sent back from a GET are ignored, as Webex does.
"""

from __future__ import annotations

from ledger.simulator.bodies import Call, Reply, opt_bool, opt_obj, opt_str
from ledger.simulator.errors import not_found, settings_invalid
from ledger.simulator.state import PersonRecord

# The writable parts of each voicemail section; anything else in a PUT is read-only or unknown.
_VOICEMAIL_WRITABLE: dict[str, tuple[str, ...]] = {
    "sendAllCalls": ("enabled",),
    "sendBusyCalls": ("enabled", "greeting"),
    "sendUnansweredCalls": ("enabled", "greeting", "numberOfRings"),
    "notifications": ("enabled", "destination"),
    "transferToNumber": ("enabled", "destination"),
    "emailCopyOfMessage": ("enabled", "emailId"),
    "messageStorage": ("mwiEnabled", "storageType", "externalEmail"),
    "faxMessage": ("enabled", "phoneNumber", "extension"),
}
_GREETINGS = ("DEFAULT", "CUSTOM")
CALLER_ID_TYPES = ("DIRECT_LINE", "LOCATION_NUMBER", "CUSTOM")


def _calling_person(call: Call) -> PersonRecord:
    person = call.store.people.get(call.params["personId"])
    if person is None or not call.store.is_calling(person):
        raise not_found("Person not found or not a Webex Calling user.")
    return person


def get_voicemail(call: Call) -> Reply:
    """GET .../features/voicemail."""
    return Reply(200, _copy(_calling_person(call).voicemail))


def put_voicemail(call: Call) -> Reply:
    """PUT .../features/voicemail: 204; numberOfRings must be 2 to 20."""
    person = _calling_person(call)
    body = call.json_body(settings_invalid)
    updated = _copy(person.voicemail)
    enabled = opt_bool(body, "enabled", settings_invalid)
    if enabled is not None:
        updated["enabled"] = enabled
    for section, writable in _VOICEMAIL_WRITABLE.items():
        given = opt_obj(body, section, settings_invalid)
        if given is None:
            continue
        current = updated.get(section)
        merged = dict(current) if isinstance(current, dict) else {}
        for key in writable:
            if key in given:
                merged[key] = _voicemail_value(section, key, given[key])
        updated[section] = merged
    if updated != person.voicemail:
        person.voicemail = updated
        call.changed = True
    return Reply(204)


def _voicemail_value(section: str, key: str, value: object) -> object:
    if key in ("enabled", "mwiEnabled") and not isinstance(value, bool):
        raise settings_invalid(f"{section}.{key} must be true or false.")
    if key == "numberOfRings":
        if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 20:
            raise settings_invalid(f"{section}.numberOfRings must be between 2 and 20.")
    if key == "greeting" and value not in _GREETINGS:
        raise settings_invalid(f"{section}.greeting must be one of {', '.join(_GREETINGS)}.")
    return value


def _caller_id_types(person: PersonRecord) -> list[str]:
    """DIRECT_LINE is offered only to a person who has a number of their own."""
    if person.work_number is None:
        return ["LOCATION_NUMBER", "CUSTOM"]
    return list(CALLER_ID_TYPES)


def get_caller_id(call: Call) -> Reply:
    """GET .../features/callerId: the allowed `types` and the `selected` one."""
    person = _calling_person(call)
    types = _caller_id_types(person)
    selected = person.caller_id.get("selected", types[0])
    body: dict[str, object] = {"types": types, "selected": selected}
    if person.work_number is not None:
        body["directNumber"] = person.work_number
    if person.extension is not None:
        body["extensionNumber"] = person.extension
    custom = person.caller_id.get("customNumber")
    if custom is not None:
        body["customNumber"] = custom
    for key, value in (("firstName", person.first_name), ("lastName", person.last_name)):
        if value is not None:
            body[key] = value
    body["blockInForwardCallsEnabled"] = person.caller_id.get("blockInForwardCallsEnabled", False)
    body["externalCallerIdNamePolicy"] = person.caller_id.get(
        "externalCallerIdNamePolicy", "DIRECT_LINE"
    )
    return Reply(200, body)


def put_caller_id(call: Call) -> Reply:
    """PUT .../features/callerId: `selected` is required and must be one of the `types`."""
    person = _calling_person(call)
    body = call.json_body(settings_invalid)
    selected = opt_str(body, "selected", settings_invalid)
    if selected is None:
        raise settings_invalid("selected is required.")
    if selected not in _caller_id_types(person):
        raise settings_invalid(f"selected '{selected}' is not allowed for this person.")
    custom = opt_str(body, "customNumber", settings_invalid)
    if selected == "CUSTOM" and not custom:
        raise settings_invalid("customNumber is required when selected is CUSTOM.")
    updated = dict(person.caller_id)
    updated["selected"] = selected
    if custom is not None:
        updated["customNumber"] = custom
    block = opt_bool(body, "blockInForwardCallsEnabled", settings_invalid)
    if block is not None:
        updated["blockInForwardCallsEnabled"] = block
    policy = opt_str(body, "externalCallerIdNamePolicy", settings_invalid)
    if policy is not None:
        if policy not in ("DIRECT_LINE", "LOCATION", "OTHER"):
            raise settings_invalid(f"externalCallerIdNamePolicy '{policy}' is not valid.")
        updated["externalCallerIdNamePolicy"] = policy
    if updated != person.caller_id:
        person.caller_id = updated
        call.changed = True
    return Reply(204)


def get_call_waiting(call: Call) -> Reply:
    """GET .../features/callWaiting."""
    return Reply(200, {"enabled": _calling_person(call).call_waiting})


def put_call_waiting(call: Call) -> Reply:
    """PUT .../features/callWaiting: `enabled` is required."""
    person = _calling_person(call)
    enabled = opt_bool(call.json_body(settings_invalid), "enabled", settings_invalid)
    if enabled is None:
        raise settings_invalid("enabled is required.")
    if enabled != person.call_waiting:
        person.call_waiting = enabled
        call.changed = True
    return Reply(204)


def _copy(settings: dict[str, object]) -> dict[str, object]:
    """A copy deep enough that a caller cannot change the stored sections."""
    return {k: dict(v) if isinstance(v, dict) else v for k, v in settings.items()}
