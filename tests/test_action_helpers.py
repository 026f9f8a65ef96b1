"""The pure helpers behind the steps: what they compare, and the bodies they build."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ledger import action_helpers as helpers
from ledger.row_rules import LocationSpec, UserRow

LOCATION_ID = "LOC-1"
LICENSE_ID = "LIC-CALLING"


def user(**fields: Any) -> UserRow:
    values: dict[str, Any] = {
        "email": "ana@example.com",
        "first_name": "Ana",
        "last_name": "Silva",
        "display_name": "Ana Silva",
        "location_name": "HQ",
        "extension": "1001",
    }
    return UserRow(**(values | fields))


def remote_person(**fields: Any) -> dict[str, Any]:
    """A calling user as GET /people?callingData=true shows one, read-only fields included."""
    body: dict[str, Any] = {
        "id": "P-1",
        "emails": ["ana@example.com"],
        "displayName": "Ana Silva",
        "firstName": "Ana",
        "lastName": "Silva",
        "extension": "1001",
        "locationId": LOCATION_ID,
        "licenses": ["LIC-MEETING", LICENSE_ID],
        "orgId": "ORG",
        "created": "2026-01-01T00:00:00.000Z",
        "lastModified": "2026-01-02T00:00:00.000Z",
        "lastActivity": "2026-01-03T00:00:00.000Z",
        "status": "active",
        "invitePending": False,
        "loginEnabled": True,
        "type": "person",
        "sipAddresses": [{"type": "personal-room", "value": "ana@example.webex.com"}],
        "nickName": "Ani",
        "avatar": "https://avatar.example/ana",
    }
    return body | fields


VOICEMAIL = {
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
    "notifications": {"enabled": True, "destination": "ana@example.com"},
    "transferToNumber": {"enabled": False},
    "emailCopyOfMessage": {"enabled": False},
    "messageStorage": {"mwiEnabled": True, "storageType": "INTERNAL"},
    "faxMessage": {"enabled": False},
    "voiceMessageForwardingEnabled": False,
}


# --- locations --------------------------------------------------------------------------------


def test_exact_location_keeps_only_the_exact_name_among_contains_matches() -> None:
    items = [
        {"id": "1", "name": "HQ West"},
        {"id": "2", "name": "hq"},
        {"id": "3", "name": "HQ"},
        {"id": "4", "name": "Old HQ"},
    ]
    assert helpers.exact_location(items, "HQ") == {"id": "3", "name": "HQ"}
    assert helpers.exact_location(items[:2], "HQ") is None
    assert helpers.exact_location([], "HQ") is None


def test_location_changes_is_none_when_what_the_file_gives_already_holds() -> None:
    remote = {
        "id": "L",
        "name": "HQ",
        "timeZone": "America/Chicago",
        "preferredLanguage": "en_us",
        "address": {"address1": "100 Main St", "city": "Austin", "state": "TX",
                    "postalCode": "78701", "country": "US"},
    }  # fmt: skip
    assert helpers.location_changes(LocationSpec(name="HQ"), remote) is None
    same = LocationSpec(name="HQ", time_zone="America/Chicago", city="Austin", country="US")
    assert helpers.location_changes(same, remote) is None
    moved = helpers.location_changes(LocationSpec(name="HQ", city="Round Rock"), remote)
    assert moved is not None
    assert moved["address"]["city"] == "Round Rock"
    assert moved["address"]["address1"] == "100 Main St"  # the rest of the address is kept
    assert (moved["name"], moved["timeZone"]) == ("HQ", "America/Chicago")
    rezoned = helpers.location_changes(LocationSpec(name="HQ", time_zone="America/Denver"), remote)
    assert rezoned is not None and rezoned["timeZone"] == "America/Denver"


def test_location_create_body_has_every_required_field() -> None:
    spec = LocationSpec(
        name="HQ", time_zone="America/Chicago", preferred_language="en_us",
        announcement_language="fr_ca", address1="1 Main", address2=None, city="Austin",
        state="TX", postal_code="78701", country="US",
    )  # fmt: skip
    assert helpers.location_create_body(spec) == {
        "name": "HQ",
        "timeZone": "America/Chicago",
        "preferredLanguage": "en_us",
        "announcementLanguage": "fr_ca",
        "address": {"address1": "1 Main", "city": "Austin", "state": "TX",
                    "postalCode": "78701", "country": "US"},
    }  # fmt: skip


def test_calling_enable_body_takes_the_locations_own_values_where_the_file_is_silent() -> None:
    remote = {
        "id": "L",
        "name": "HQ",
        "orgId": "ORG",
        "timeZone": "America/Chicago",
        "preferredLanguage": "es_es",
        "address": {"address1": "1 Main", "city": "Austin", "state": "TX",
                    "postalCode": "78701", "country": "US"},
    }  # fmt: skip
    body = helpers.calling_enable_body("L", LocationSpec(name="HQ"), remote)
    assert body == {
        "id": "L",
        "name": "HQ",
        "timeZone": "America/Chicago",
        "preferredLanguage": "es_es",
        "announcementLanguage": "es_es",
        "address": remote["address"],
    }
    assert "orgId" not in body


# --- people -----------------------------------------------------------------------------------


def test_person_create_body_makes_a_calling_user_in_one_request() -> None:
    row = user(phone_number="+15125550101", department="Sales", title="Agent")
    assert helpers.person_create_body(row, LOCATION_ID, LICENSE_ID) == {
        "emails": ["ana@example.com"],
        "displayName": "Ana Silva",
        "firstName": "Ana",
        "lastName": "Silva",
        "locationId": LOCATION_ID,
        "licenses": [LICENSE_ID],
        "extension": "1001",
        "phoneNumbers": [{"type": "work", "value": "+15125550101"}],
        "department": "Sales",
        "title": "Agent",
    }
    bare = helpers.person_create_body(user(first_name=None, extension=None,
                                           phone_number="+15125550101"), "L", "X")  # fmt: skip
    assert "firstName" not in bare and "extension" not in bare


def test_person_changes_is_none_when_the_person_already_matches() -> None:
    remote = remote_person(phoneNumbers=[{"type": "work", "value": "+1 (512) 555-0101",
                                          "primary": True}])  # fmt: skip
    row = user(phone_number="+15125550101")
    assert helpers.person_changes(row, LOCATION_ID, LICENSE_ID, remote) is None


def test_person_changes_strips_read_only_fields_and_keeps_the_rest() -> None:
    remote = remote_person(title="Agent", manager="Bob", phoneNumbers=[
        {"type": "mobile", "value": "+15125559999"},
        {"type": "work", "value": "+15125550000", "primary": True},
    ])  # fmt: skip
    before = copy.deepcopy(remote)
    row = user(last_name="Souza", phone_number="+15125550101")

    body = helpers.person_changes(row, LOCATION_ID, LICENSE_ID, remote)

    assert body is not None
    assert remote == before  # the lookup's answer is not changed in place
    for key in ("id", "created", "lastModified", "lastActivity", "status", "invitePending",
                "loginEnabled", "type", "sipAddresses", "orgId", "nickName", "avatar"):  # fmt: skip
        assert key not in body, key
    assert body["lastName"] == "Souza"
    assert body["displayName"] == "Ana Silva"
    assert (body["title"], body["manager"]) == ("Agent", "Bob")  # a PUT replaces: kept as is
    assert body["licenses"] == ["LIC-MEETING", LICENSE_ID]
    assert body["phoneNumbers"] == [
        {"type": "mobile", "value": "+15125559999"},
        {"type": "work", "value": "+15125550101"},
    ]


def _shared_parts(body: object, remote: object) -> list[object]:
    """The dicts and lists of `body` that are `remote`'s own objects (none may be)."""
    theirs: set[int] = set()

    def walk(value: object, into: list[object]) -> None:
        if isinstance(value, dict | list):
            into.append(value)
            for item in value.values() if isinstance(value, dict) else value:
                walk(item, into)

    remote_parts: list[object] = []
    walk(remote, remote_parts)
    theirs.update(id(part) for part in remote_parts)
    body_parts: list[object] = []
    walk(body, body_parts)
    return [part for part in body_parts if id(part) in theirs]


def test_person_changes_builds_a_body_that_shares_nothing_with_the_lookup() -> None:
    remote = remote_person(manager={"id": "M-1", "tags": ["a"]}, phoneNumbers=[
        {"type": "mobile", "value": "+15125559999"},
    ])  # fmt: skip
    before = copy.deepcopy(remote)

    body = helpers.person_changes(user(last_name="Souza"), LOCATION_ID, LICENSE_ID, remote)

    assert body is not None and body["manager"] == {"id": "M-1", "tags": ["a"]}
    assert _shared_parts(body, remote) == []
    body["manager"]["tags"].append("b")
    body["phoneNumbers"][0]["value"] = "changed"
    assert remote == before


def test_person_changes_adds_the_license_and_location_a_non_calling_person_lacks() -> None:
    remote = remote_person(licenses=["LIC-MEETING"])
    del remote["locationId"], remote["extension"]

    body = helpers.person_changes(user(), LOCATION_ID, LICENSE_ID, remote)

    assert body is not None
    assert body["licenses"] == ["LIC-MEETING", LICENSE_ID]
    assert (body["locationId"], body["extension"]) == (LOCATION_ID, "1001")


def test_blank_cells_leave_the_persons_values_alone() -> None:
    remote = remote_person(department="Finance", title="Director")
    row = user(department=None, title=None, first_name=None)
    assert helpers.person_changes(row, LOCATION_ID, LICENSE_ID, remote) is None


def test_needs_location_move_only_for_a_calling_user_elsewhere() -> None:
    assert helpers.needs_location_move(remote_person(), "LOC-2")
    assert not helpers.needs_location_move(remote_person(), LOCATION_ID)
    assert not helpers.needs_location_move(remote_person(locationId=None), LOCATION_ID)


# --- numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "listed", ["+15125550101", "+1 512 555 0101", "+1 (512) 555-0101", "+1.512.555.0101"]
)
def test_number_entry_compares_numbers_by_their_digits(listed: str) -> None:
    entry = {"phoneNumber": listed, "owner": {"id": "P-9"}, "location": {"id": "L-2"}}
    items = [{"phoneNumber": "+15125550199"}, entry]
    assert helpers.number_entry(items, "+15125550101") is entry
    assert helpers.number_owner_id(entry) == "P-9"
    assert helpers.number_location_id(entry) == "L-2"


def test_number_entry_does_not_match_another_number() -> None:
    items = [{"phoneNumber": "+15125550102"}, {"phoneNumber": "+25125550101"}, {"extension": "12"}]
    assert helpers.number_entry(items, "+15125550101") is None
    assert helpers.number_owner_id({"phoneNumber": "+1"}) is None
    assert helpers.number_location_id({"location": "L"}) is None


# --- per-user settings ------------------------------------------------------------------------


def test_voicemail_changes_sets_only_what_the_row_names() -> None:
    before = copy.deepcopy(VOICEMAIL)
    body = helpers.voicemail_changes(user(voicemail_enabled=False, voicemail_rings=6), VOICEMAIL)

    assert body is not None
    assert VOICEMAIL == before
    assert body["enabled"] is False
    assert body["sendUnansweredCalls"]["numberOfRings"] == 6
    assert body["sendUnansweredCalls"]["greeting"] == "DEFAULT"
    assert body["notifications"] == {"enabled": True, "destination": "ana@example.com"}
    assert body["messageStorage"] == VOICEMAIL["messageStorage"]
    # What only Webex reports is not sent back.
    assert "voiceMessageForwardingEnabled" not in body
    assert body["sendUnansweredCalls"] == {
        "enabled": True,
        "greeting": "DEFAULT",
        "numberOfRings": 6,
    }
    assert body["sendBusyCalls"] == {"enabled": True, "greeting": "DEFAULT"}


def test_voicemail_changes_builds_a_body_that_shares_nothing_with_the_read() -> None:
    remote = copy.deepcopy(VOICEMAIL)
    body = helpers.voicemail_changes(user(voicemail_rings=6), remote)

    assert body is not None
    assert _shared_parts(body, remote) == []
    body["notifications"]["destination"] = "changed"
    body["messageStorage"]["storageType"] = "changed"
    assert remote == VOICEMAIL


def test_voicemail_changes_is_none_when_equal_or_not_named() -> None:
    assert (
        helpers.voicemail_changes(user(voicemail_enabled=True, voicemail_rings=3), VOICEMAIL)
        is None
    )
    assert helpers.voicemail_changes(user(), VOICEMAIL) is None
    only_rings = helpers.voicemail_changes(user(voicemail_rings=4), VOICEMAIL)
    assert only_rings is not None and only_rings["enabled"] is True


def test_voicemail_rings_turn_on_unanswered_calls_when_voicemail_had_no_such_section() -> None:
    body = helpers.voicemail_changes(user(voicemail_rings=5), {"enabled": True})
    assert body == {"enabled": True, "sendUnansweredCalls": {"numberOfRings": 5, "enabled": True}}


def test_call_waiting_changes() -> None:
    assert helpers.call_waiting_changes(user(call_waiting_enabled=False), {"enabled": True}) == {
        "enabled": False
    }
    assert helpers.call_waiting_changes(user(call_waiting_enabled=True), {"enabled": True}) is None
    assert helpers.call_waiting_changes(user(), {"enabled": False}) is None


def test_caller_id_changes_sends_only_selected() -> None:
    remote = {"types": ["DIRECT_LINE", "LOCATION_NUMBER"], "selected": "DIRECT_LINE",
              "directNumber": "+15125550101"}  # fmt: skip
    assert helpers.caller_id_changes(user(caller_id="LOCATION_NUMBER"), remote) == {
        "selected": "LOCATION_NUMBER"
    }
    assert helpers.caller_id_changes(user(caller_id="DIRECT_LINE"), remote) is None
    assert helpers.caller_id_changes(user(), remote) is None
