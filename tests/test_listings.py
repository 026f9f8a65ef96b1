"""`OrgListings`, what one worker session keeps of the org: read in pages, kept, read again once
old, and given up (for the lookup per row) when the org is larger than a batch's pages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.connection_client import WebexClient
from ledger.listings import OrgListings
from ledger.simulator import Simulator
from tests.support.clock import FakeTime
from tests.support.work import Traffic, make_settings


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def sim(time: FakeTime) -> Simulator:
    return Simulator(clock=time.monotonic)


@pytest.fixture
def client(tmp_path: Path, sim: Simulator, time: FakeTime) -> Iterator[WebexClient]:
    made = WebexClient(
        make_settings(tmp_path),
        transport=sim.transport(),
        sleep=time.sleep,
        clock=time.monotonic,
        wall_clock=time.wall,
    )
    yield made
    made.close()


def listing_reads(sim: Simulator) -> int:
    return Traffic(sim.request_log).count("GET /v1/people")


def test_the_people_are_kept_then_read_again_once_old(
    sim: Simulator, client: WebexClient, time: FakeTime
) -> None:
    sim.add_person("a@example.com")
    listings = OrgListings(client, clock=time.monotonic, max_age_s=300)

    first = listings.people(budget_pages=5)
    sim.add_person("b@example.com")
    kept = listings.people(budget_pages=5)
    time.advance(301)
    again = listings.people(budget_pages=5)

    assert first is not None and kept is not None and again is not None
    assert set(first) == set(kept) == {"a@example.com"}
    assert set(again) == {"a@example.com", "b@example.com"}
    assert listing_reads(sim) == 2


def test_an_org_larger_than_the_budget_is_given_up_until_a_larger_one(
    sim: Simulator, client: WebexClient, time: FakeTime
) -> None:
    for n in range(150):  # two pages of 100
        sim.add_person(f"p{n}@example.com")
    listings = OrgListings(client, clock=time.monotonic)

    assert listings.people(budget_pages=1) is None
    assert listings.people(budget_pages=1) is None  # not tried again for as few rows
    assert listing_reads(sim) == 1
    found = listings.people(budget_pages=2)

    assert found is not None and len(found) == 150
    assert listing_reads(sim) == 3


def test_a_person_this_worker_wrote_is_what_the_kept_listing_shows(
    sim: Simulator, client: WebexClient, time: FakeTime
) -> None:
    listings = OrgListings(client, clock=time.monotonic)
    assert listings.people(budget_pages=1) == {}

    listings.remember_person({"id": "P1", "emails": ["New@Example.com"], "displayName": "N"})

    assert (listings.people(budget_pages=1) or {})["new@example.com"]["id"] == "P1"
    assert listing_reads(sim) == 1


def test_a_location_s_inventory_names_each_number_and_extension_owner(
    sim: Simulator, client: WebexClient, time: FakeTime
) -> None:
    hq = sim.add_location("HQ", calling=True, numbers=("+15125550001", "+15125550002"))
    owner = sim.add_person(
        "a@example.com", location_id=hq, extension="2001", phone_number="+15125550001"
    )
    other = sim.add_person("b@example.com", location_id=hq, extension="2002")
    listings = OrgListings(client, clock=time.monotonic)

    inventory = listings.inventory(hq)

    assert inventory is not None
    assert set(inventory.by_number) == {"+15125550001", "+15125550002"}
    assert inventory.extension_owners("2001") == [owner]
    assert inventory.extension_owners("2002") == [other]  # an extension without a number
    assert inventory.extension_owners("2003") == []
    added = listings.numbers_added(hq, ["+15125550003"])
    assert added is not None and added.number("+15125550003") is not None
    assert listings.inventory(hq) is added  # kept: no second read
    assert Traffic(sim.request_log).count("GET /v1/telephony/config/numbers") == 1
