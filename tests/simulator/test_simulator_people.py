"""The People API and the per-user calling settings, in-process, checked against the files."""

from __future__ import annotations

import httpx
import pytest

from ledger.simulator import Simulator
from tests.support.simulator import (
    add_numbers,
    create_location,
    create_user,
    license_id,
    person_body,
)

# -- people --------------------------------------------------------------------------------


def test_create_a_calling_user_in_one_request(api: httpx.Client) -> None:
    location_id = create_location(api, "Austin HQ")
    add_numbers(api, location_id, "+15125550100")
    license = license_id(api)
    body = person_body(
        "Ana.Alvarez@Example.com",
        location_id,
        license,
        extension="1001",
        phoneNumbers=[{"type": "work", "value": "+1 512 555 0100"}],
        department="Sales",
        title="Agent",
    )
    response = create_user(api, body)
    assert response.status_code == 200
    person = response.json()
    assert person["emails"] == ["ana.alvarez@example.com"]
    assert person["extension"] == "1001"
    assert person["locationId"] == location_id
    assert person["licenses"] == [license]
    assert person["phoneNumbers"] == [{"type": "work", "value": "+15125550100", "primary": True}]
    found = api.get("/people", params={"email": "ana.alvarez@example.com", "callingData": "true"})
    assert [item["id"] for item in found.json()["items"]] == [person["id"]]
    assert api.get(f"/people/{person['id']}", params={"callingData": "true"}).json() == person


def test_lookup_by_email_finds_nobody(api: httpx.Client) -> None:
    found = api.get("/people", params={"email": "nobody@example.com", "callingData": "true"})
    assert found.json()["items"] == []


def test_existing_email_is_409(api: httpx.Client, raw: httpx.Client, sim: Simulator) -> None:
    sim.add_person("ana@example.com")
    response = raw.post("/people", json={"emails": ["ANA@example.com"], "displayName": "Ana"})
    assert response.status_code == 409
    assert sim.users_by_email() == {"ana@example.com": 1}


def test_taken_extension_is_4202(api: httpx.Client, raw: httpx.Client, sim: Simulator) -> None:
    location_id = create_location(api, "Austin HQ")
    sim.add_person("ben@example.com", location_id=location_id, extension="1001")
    response = create_user(
        raw, person_body("ana@example.com", location_id, license_id(api), extension="1001")
    )
    assert response.status_code == 400
    assert response.json()["errorCode"] == 4202
    assert "extension is not available" in response.json()["message"]
    other = create_location(api, "Denver")
    elsewhere = person_body("ana@example.com", other, license_id(api), extension="1001")
    assert create_user(api, elsewhere).status_code == 200  # unique per location only


def test_number_must_be_in_the_inventory_and_free(api: httpx.Client, raw: httpx.Client) -> None:
    location_id = create_location(api, "Austin HQ")
    license = license_id(api)
    work = [{"type": "work", "value": "+15125550100"}]
    not_there = create_user(
        raw, person_body("a@example.com", location_id, license, phoneNumbers=work)
    )
    assert not_there.status_code == 400
    add_numbers(api, location_id, "+15125550100")
    assert (
        create_user(
            api, person_body("a@example.com", location_id, license, phoneNumbers=work)
        ).status_code
        == 200
    )
    taken = create_user(raw, person_body("b@example.com", location_id, license, phoneNumbers=work))
    assert taken.status_code == 400
    assert "already assigned" in taken.json()["message"]


def test_calling_fields_need_a_calling_license(api: httpx.Client, raw: httpx.Client) -> None:
    location_id = create_location(api, "Austin HQ")
    body = person_body(
        "a@example.com", location_id, license_id(api, "Meeting - Webex Meetings"), extension="1001"
    )
    assert create_user(raw, body).status_code == 400
    no_location = {
        "emails": ["b@example.com"],
        "displayName": "B",
        "licenses": [license_id(api)],
        "extension": "1001",
    }
    assert create_user(raw, no_location).status_code == 400


def test_put_replaces_the_whole_person(api: httpx.Client, raw: httpx.Client) -> None:
    location_id = create_location(api, "Austin HQ")
    body = person_body(
        "ana@example.com",
        location_id,
        license_id(api),
        extension="1001",
        department="Sales",
        title="Agent",
    )
    person = create_user(api, body).json()
    update = {
        key: person[key]
        for key in (
            "emails",
            "displayName",
            "firstName",
            "lastName",
            "extension",
            "locationId",
            "licenses",
        )
    }
    update["title"] = "Manager"
    replaced = api.put(f"/people/{person['id']}", params={"callingData": "true"}, json=update)
    assert replaced.status_code == 200
    after = api.get(f"/people/{person['id']}", params={"callingData": "true"}).json()
    assert after["title"] == "Manager"
    assert "department" not in after  # not sent, so cleared
    no_name = {key: value for key, value in update.items() if key != "displayName"}
    assert raw.put(f"/people/{person['id']}", json=no_name).status_code == 400


def test_put_cannot_move_a_calling_user(api: httpx.Client, raw: httpx.Client) -> None:
    austin = create_location(api, "Austin HQ")
    denver = create_location(api, "Denver")
    person = create_user(
        api, person_body("ana@example.com", austin, license_id(api), extension="1001")
    ).json()
    moved = {**person_body("ana@example.com", denver, license_id(api)), "extension": "1001"}
    response = raw.put(f"/people/{person['id']}", params={"callingData": "true"}, json=moved)
    assert response.status_code == 400
    assert "location" in response.json()["message"]
    assert (
        api.get(f"/people/{person['id']}", params={"callingData": "true"}).json()["locationId"]
        == austin
    )


def test_dropping_the_calling_license_frees_the_extension(api: httpx.Client) -> None:
    location_id = create_location(api, "Austin HQ")
    license = license_id(api)
    person = create_user(
        api, person_body("ana@example.com", location_id, license, extension="1001")
    ).json()
    plain = {"emails": person["emails"], "displayName": "Ana Alvarez", "licenses": []}
    assert (
        api.put(f"/people/{person['id']}", params={"callingData": "true"}, json=plain).status_code
        == 200
    )
    reuse = person_body("ben@example.com", location_id, license, extension="1001")
    assert create_user(api, reuse).status_code == 200


def test_delete_is_204_then_404(api: httpx.Client, raw: httpx.Client) -> None:
    location_id = create_location(api, "Austin HQ")
    person = create_user(
        api, person_body("ana@example.com", location_id, license_id(api), extension="1001")
    ).json()
    assert api.delete(f"/people/{person['id']}").status_code == 204
    assert raw.get(f"/people/{person['id']}").status_code == 404
    assert raw.delete(f"/people/{person['id']}").status_code == 404
    again = person_body("ana@example.com", location_id, license_id(api), extension="1001")
    assert create_user(api, again).status_code == 200


# -- calling settings ----------------------------------------------------------------------


@pytest.fixture
def calling_person(api: httpx.Client) -> str:
    location_id = create_location(api, "Austin HQ")
    add_numbers(api, location_id, "+15125550100")
    body = person_body(
        "ana@example.com",
        location_id,
        license_id(api),
        extension="1001",
        phoneNumbers=[{"type": "work", "value": "+15125550100"}],
    )
    return str(create_user(api, body).json()["id"])


def test_voicemail_read_modify_write(
    api: httpx.Client, raw: httpx.Client, calling_person: str
) -> None:
    url = f"/people/{calling_person}/features/voicemail"
    settings = api.get(url).json()
    assert settings["enabled"] is True
    settings["enabled"] = False
    settings["sendUnansweredCalls"]["numberOfRings"] = 6
    assert api.put(url, json=settings).status_code == 204
    after = api.get(url).json()
    assert after["enabled"] is False
    assert after["sendUnansweredCalls"]["numberOfRings"] == 6
    settings["sendUnansweredCalls"]["numberOfRings"] = 25
    rejected = raw.put(url, json=settings)
    assert rejected.status_code == 400
    assert "numberOfRings" in rejected.json()["error"]["message"][0]["description"]


def test_caller_id_lists_types_and_requires_selected(
    api: httpx.Client, raw: httpx.Client, calling_person: str
) -> None:
    url = f"/people/{calling_person}/features/callerId"
    current = api.get(url).json()
    assert current["types"] == ["DIRECT_LINE", "LOCATION_NUMBER", "CUSTOM"]
    assert current["selected"] == "DIRECT_LINE"
    assert api.put(url, json={"selected": "LOCATION_NUMBER"}).status_code == 204
    assert api.get(url).json()["selected"] == "LOCATION_NUMBER"
    missing = raw.put(url, json={"blockInForwardCallsEnabled": True})
    assert missing.status_code == 400
    assert "selected" in missing.json()["error"]["message"][0]["description"]


def test_call_waiting(api: httpx.Client, calling_person: str) -> None:
    url = f"/people/{calling_person}/features/callWaiting"
    assert api.get(url).json() == {"enabled": True}
    assert api.put(url, json={"enabled": False}).status_code == 204
    assert api.get(url).json() == {"enabled": False}


def test_settings_of_a_non_calling_person_are_404(raw: httpx.Client, sim: Simulator) -> None:
    person_id = sim.add_person("plain@example.com")
    for feature in ("voicemail", "callerId", "callWaiting"):
        assert raw.get(f"/people/{person_id}/features/{feature}").status_code == 404
