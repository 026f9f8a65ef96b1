"""Listings a batch reads once instead of one lookup per row: people by location, numbers by
location, and several numbers added in one request. Checked against the files where they hold
the operation (the `api` fixture validates every exchange)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ledger.simulator import FaultConfig, Simulator
from ledger.simulator.locations import NUMBERS_ADD_MAX
from tests.support.clock import FakeTime
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


def seed_people(sim: Simulator, location_id: str, count: int, *, first: int = 0) -> list[str]:
    return [
        sim.add_person(f"user{n}@example.com", location_id=location_id, extension=str(2000 + n))
        for n in range(first, first + count)
    ]


def follow(api: httpx.Client, path: str, params: dict[str, Any]) -> list[httpx.Response]:
    """Every page of a listing, following `Link: rel="next"` exactly as given."""
    pages = [api.get(path, params=params)]
    while "next" in pages[-1].links:
        url = pages[-1].links["next"]["url"]
        assert url.startswith(BASE + path + "?"), url  # absolute, on the host that was asked
        pages.append(api.get(url))
    return pages


# -- GET /people as a listing -----------------------------------------------------------------


def test_people_of_a_location_with_calling_data(api: httpx.Client, sim: Simulator) -> None:
    austin = create_location(api, "Austin HQ")
    denver = create_location(api, "Denver")
    mine = seed_people(sim, austin, 3)
    seed_people(sim, denver, 2, first=10)
    sim.add_person("nocalling@example.com")
    listed = api.get("/people", params={"locationId": austin, "callingData": "true"}).json()
    assert [item["id"] for item in listed["items"]] == mine
    assert {item["locationId"] for item in listed["items"]} == {austin}
    assert [item["extension"] for item in listed["items"]] == ["2000", "2001", "2002"]
    everyone = api.get("/people").json()["items"]
    assert len(everyone) == 6
    assert all("locationId" not in item for item in everyone)  # without callingData


@pytest.mark.parametrize(
    ("params", "page_size"),
    [
        ({"callingData": "true", "max": 500}, 100),
        ({"locationId": None, "max": 80}, 50),
        ({"locationId": None, "callingData": "true", "max": 1000}, 50),
        ({"locationId": None}, 50),
        ({"callingData": "true", "max": 30}, 30),
    ],
)
def test_max_is_held_to_the_documented_caps(
    api: httpx.Client, sim: Simulator, params: dict[str, Any], page_size: int
) -> None:
    location_id = create_location(api, "Austin HQ")
    ids = seed_people(sim, location_id, 130)
    query = {key: location_id if key == "locationId" else value for key, value in params.items()}
    pages = follow(api, "/people", query)
    sizes = [len(page.json()["items"]) for page in pages]
    assert sizes[0] == page_size
    assert all(size <= page_size for size in sizes)
    assert [item["id"] for page in pages for item in page.json()["items"]] == ids


def test_a_new_person_is_missing_from_listings_for_the_lookup_delay() -> None:
    clock = FakeTime(start=1000.0)
    sim = Simulator(faults=FaultConfig(lookup_delay_s=5), clock=clock)
    hooks = contract_event_hooks()
    with httpx.Client(
        transport=sim.transport(), base_url=BASE, headers=AUTH, event_hooks=hooks
    ) as api:
        location_id = create_location(api, "Austin HQ")
        old = sim.add_person("old@example.com", location_id=location_id, extension="1000")
        created = create_user(
            api, person_body("new@example.com", location_id, license_id(api), extension="1001")
        ).json()
        by_location = {"locationId": location_id, "callingData": "true"}
        for params in (by_location, {}, {"id": created["id"]}, {"displayName": "Ana"}):
            items = api.get("/people", params=params).json()["items"]
            assert created["id"] not in [item["id"] for item in items], params
        assert api.get(f"/people/{created['id']}").status_code == 200  # by id: at once
        clock.now += 5
        items = api.get("/people", params=by_location).json()["items"]
        assert [item["id"] for item in items] == [old, created["id"]]


# -- GET /telephony/config/numbers by location ----------------------------------------------


def test_numbers_of_a_location_with_owner_and_extension(api: httpx.Client, sim: Simulator) -> None:
    austin = create_location(api, "Austin HQ")
    denver = create_location(api, "Denver")
    numbers = [f"+1512555{n:04d}" for n in range(5)]
    add_numbers(api, austin, *numbers)
    add_numbers(api, denver, "+13035550100")
    owner = sim.add_person(
        "ana@example.com", first_name="Ana", last_name="Alvarez", location_id=austin,
        extension="1001", phone_number=numbers[1],
    )  # fmt: skip
    pages = follow(api, "/telephony/config/numbers", {"locationId": austin, "max": 2})
    assert [len(page.json()["phoneNumbers"]) for page in pages] == [2, 2, 1]
    assert all("start=" in page.links["next"]["url"] for page in pages[:-1])
    entries = [entry for page in pages for entry in page.json()["phoneNumbers"]]
    assert [entry["phoneNumber"] for entry in entries] == numbers
    assert {entry["location"]["id"] for entry in entries} == {austin}
    owned = entries[1]
    assert owned["extension"] == "1001"
    assert owned["owner"] == {
        "id": owner,
        "type": "PEOPLE",
        "firstName": "Ana",
        "lastName": "Alvarez",
    }
    assert [entry for entry in entries if "owner" in entry] == [owned]


# -- POST /telephony/config/locations/{id}/numbers with several numbers ----------------------


def listed_numbers(api: httpx.Client, location_id: str) -> list[str]:
    body = api.get("/telephony/config/numbers", params={"locationId": location_id}).json()
    return [entry["phoneNumber"] for entry in body["phoneNumbers"]]


def test_several_numbers_in_one_request(api: httpx.Client, sim: Simulator) -> None:
    location_id = create_location(api, "Austin HQ")
    numbers = [f"+1512555{n:04d}" for n in range(NUMBERS_ADD_MAX)]
    writes = sim.write_count
    assert add_numbers(api, location_id, *numbers, numbers[0]).status_code == 201
    assert sim.write_count == writes + 1
    assert listed_numbers(api, location_id) == numbers


def test_more_than_the_cap_adds_none(api: httpx.Client, raw: httpx.Client) -> None:
    location_id = create_location(api, "Austin HQ")
    numbers = [f"+1512555{n:04d}" for n in range(NUMBERS_ADD_MAX + 1)]
    response = add_numbers(raw, location_id, *numbers)
    assert response.status_code == 400
    assert str(NUMBERS_ADD_MAX) in response.json()["message"]
    assert listed_numbers(api, location_id) == []


@pytest.mark.parametrize("bad", ["5125550199", "+13035550100"])
def test_one_bad_number_adds_none(api: httpx.Client, raw: httpx.Client, bad: str) -> None:
    location_id = create_location(api, "Austin HQ")
    add_numbers(api, create_location(api, "Denver"), "+13035550100")
    response = add_numbers(raw, location_id, "+15125550100", bad, "+15125550101")
    assert response.status_code == 400
    assert bad in response.json()["message"]
    assert listed_numbers(api, location_id) == []
