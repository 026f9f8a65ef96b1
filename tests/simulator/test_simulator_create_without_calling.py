"""Webex's "400 but created" on POST /people that leaves the identity without its calling part."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from ledger.simulator import PROFILES, FaultConfig, Simulator
from tests.support.openapi import contract_event_hooks
from tests.support.simulator import (
    AUTH,
    BASE,
    add_numbers,
    create_location,
    create_user,
    license_id,
    person_body,
)

NUMBER = "+15125550100"
WORK = [{"type": "work", "value": NUMBER}]


@pytest.fixture
def faulty() -> Simulator:
    return Simulator(
        faults=FaultConfig(people_create_400_rate=1.0, people_create_400_without_calling_share=1.0)
    )


@pytest.fixture
def client(faulty: Simulator) -> Iterator[httpx.Client]:
    hooks = contract_event_hooks()
    with httpx.Client(
        transport=faulty.transport(), base_url=BASE, headers=AUTH, event_hooks=hooks
    ) as api:
        yield api


def create_calling_user(api: httpx.Client) -> tuple[httpx.Response, str, str, str]:
    """POST a calling user with a number and an extension; (answer, location, license, meeting)."""
    location_id = create_location(api, "Austin HQ")
    add_numbers(api, location_id, NUMBER)
    calling = license_id(api)
    meetings = license_id(api, "Meeting - Webex Meetings")
    body = person_body("ana@example.com", location_id, calling, extension="1001", phoneNumbers=WORK)
    body["licenses"] = [calling, meetings]
    return create_user(api, body), location_id, calling, meetings


def test_the_person_exists_without_calling_data(client: httpx.Client, faulty: Simulator) -> None:
    response, _, calling, meetings = create_calling_user(client)
    assert response.status_code == 400
    assert faulty.users_by_email() == {"ana@example.com": 1}
    found = client.get("/people", params={"email": "ana@example.com", "callingData": "true"})
    [person] = found.json()["items"]
    for key in ("locationId", "extension", "phoneNumbers"):
        assert key not in person, key
    assert person["licenses"] == [meetings]
    assert calling not in person["licenses"]
    units = {item["id"]: item["consumedUnits"] for item in client.get("/licenses").json()["items"]}
    assert units[calling] == 0 and units[meetings] == 1


def test_its_number_and_extension_stay_free(client: httpx.Client) -> None:
    _, location_id, _, _ = create_calling_user(client)
    entries = client.get("/telephony/config/numbers", params={"locationId": location_id}).json()[
        "phoneNumbers"
    ]
    assert [(entry["phoneNumber"], "owner" in entry) for entry in entries] == [(NUMBER, False)]


@pytest.mark.parametrize("feature", ["voicemail", "callerId", "callWaiting"])
def test_its_calling_settings_answer_404(client: httpx.Client, feature: str) -> None:
    create_calling_user(client)
    person = client.get("/people", params={"email": "ana@example.com"}).json()["items"][0]
    assert client.get(f"/people/{person['id']}/features/{feature}").status_code == 404


def test_a_put_with_calling_data_makes_it_a_calling_user(
    client: httpx.Client, faulty: Simulator
) -> None:
    _, location_id, calling, meetings = create_calling_user(client)
    person = client.get(
        "/people", params={"email": "ana@example.com", "callingData": "true"}
    ).json()["items"][0]
    writable = {
        key: value
        for key, value in person.items()
        if key not in {"id", "created", "lastModified", "type", "orgId"}
    }
    update = {
        **writable,
        "locationId": location_id,
        "licenses": [calling, meetings],
        "extension": "1001",
        "phoneNumbers": WORK,
    }
    response = client.put(f"/people/{person['id']}", params={"callingData": "true"}, json=update)
    assert response.status_code == 200, response.text
    shown = response.json()
    assert (shown["locationId"], shown["extension"]) == (location_id, "1001")
    assert shown["phoneNumbers"][0]["value"] == NUMBER
    assert client.get(f"/people/{person['id']}/features/voicemail").status_code == 200
    assert faulty.people_created_by_email() == {"ana@example.com": 1}


def test_by_default_a_400_but_created_keeps_the_calling_part() -> None:
    sim = Simulator(faults=FaultConfig(people_create_400_rate=1.0))
    with httpx.Client(transport=sim.transport(), base_url=BASE, headers=AUTH) as api:
        response, location_id, _, _ = create_calling_user(api)
    assert response.status_code == 400
    person = sim.person_by_email("ana@example.com")
    assert person is not None
    assert (person["locationId"], person["extension"]) == (location_id, "1001")


def test_the_share_is_of_the_400_answers_only() -> None:
    sim = Simulator(faults=FaultConfig(people_create_400_without_calling_share=1.0))
    with httpx.Client(transport=sim.transport(), base_url=BASE, headers=AUTH) as api:
        response, location_id, _, _ = create_calling_user(api)
    assert response.status_code == 200
    person = sim.person_by_email("ana@example.com")
    assert person is not None and person["locationId"] == location_id


def test_chaos_includes_it_and_the_default_does_not() -> None:
    assert PROFILES["chaos"].people_create_400_without_calling_share > 0
    assert FaultConfig().people_create_400_without_calling_share == 0
