"""The simulator's endpoints, in-process: happy paths and the Webex quirks a client must meet.

The `api` client validates every request it sends and every answer it gets against the official
OpenAPI files (when present), so these tests also keep the simulator true to them.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from ledger.simulator import SimRequest, SimResponse, Simulator
from tests.support.simulator import (
    ADDRESS,
    AUTH,
    BASE,
    add_numbers,
    create_location,
    create_user,
    license_id,
    location_body,
    person_body,
)

# -- cross-cutting -------------------------------------------------------------------------


def test_every_answer_carries_a_tracking_id(api: httpx.Client, raw: httpx.Client) -> None:
    ok = api.get("/licenses")
    missing = raw.get("/nothing/here")
    assert ok.headers["Trackingid"].startswith("ROUTER_")
    assert missing.headers["Trackingid"] != ok.headers["Trackingid"]
    assert missing.json()["trackingId"] == missing.headers["Trackingid"]


def test_401_without_a_bearer_token(sim: Simulator) -> None:
    with httpx.Client(transport=sim.transport(), base_url=BASE) as client:
        response = client.get("/licenses")
    assert response.status_code == 401
    assert "access token" in response.json()["message"]


def test_only_the_configured_token_is_accepted() -> None:
    sim = Simulator(token="s3cret")
    transport = sim.transport()
    with httpx.Client(transport=transport, base_url=BASE, headers=AUTH) as wrong:
        assert wrong.get("/licenses").status_code == 401
    right = {"Authorization": "Bearer s3cret"}
    with httpx.Client(transport=transport, base_url=BASE, headers=right) as client:
        assert client.get("/licenses").status_code == 200


def test_unknown_path_answers_404_no_static_resource(raw: httpx.Client) -> None:
    response = raw.get("/telephony/config/people/abc/voicemail")
    assert response.status_code == 404
    assert response.json()["message"] == (
        "No static resource hydra/v1/telephony/config/people/abc/voicemail."
    )
    assert response.json()["errors"][0]["description"] == response.json()["message"]


def test_known_path_with_wrong_method_is_405(raw: httpx.Client) -> None:
    assert raw.delete("/licenses").status_code == 405


# -- licenses ------------------------------------------------------------------------------


def test_licenses_are_seeded_and_consumed_units_rise(api: httpx.Client) -> None:
    items = {item["name"]: item for item in api.get("/licenses").json()["items"]}
    assert {"Webex Calling - Professional", "Webex Calling - Basic"} <= set(items)
    professional = items["Webex Calling - Professional"]
    assert professional["totalUnits"] > 100_000
    assert professional["consumedUnits"] == 0
    location_id = create_location(api, "Austin HQ")
    body = person_body("ana@example.com", location_id, professional["id"], extension="1001")
    assert create_user(api, body).status_code == 200
    after = {item["name"]: item for item in api.get("/licenses").json()["items"]}
    assert after["Webex Calling - Professional"]["consumedUnits"] == 1
    assert after["Webex Calling - Basic"]["consumedUnits"] == 0


def test_exhausted_license_is_refused(sim: Simulator, raw: httpx.Client) -> None:
    scarce = sim.add_license("Webex Calling - Scarce", total_units=1)
    location_id = sim.add_location("Austin HQ", calling=True)
    first = person_body("a@example.com", location_id, scarce, extension="1001")
    second = person_body("b@example.com", location_id, scarce, extension="1002")
    assert create_user(raw, first).status_code == 200
    refused = create_user(raw, second)
    assert refused.status_code == 400
    assert "available" in refused.json()["message"]


# -- locations -----------------------------------------------------------------------------


def test_create_and_read_a_location(api: httpx.Client) -> None:
    created = api.post("/locations", json=location_body("Austin HQ"))
    assert created.status_code == 201
    location_id = created.json()["id"]
    detail = api.get(f"/locations/{location_id}").json()
    assert detail["name"] == "Austin HQ"
    assert detail["address"] == ADDRESS
    assert detail["timeZone"] == "America/Chicago"
    assert detail["orgId"]


def test_location_name_lookup_is_contains_and_case_insensitive(api: httpx.Client) -> None:
    create_location(api, "Austin HQ", calling=False)
    create_location(api, "Greater Austin Branch", calling=False)
    create_location(api, "Denver", calling=False)
    names = [
        item["name"] for item in api.get("/locations", params={"name": "austin"}).json()["items"]
    ]
    assert names == ["Austin HQ", "Greater Austin Branch"]


def test_location_missing_required_fields_is_25008(raw: httpx.Client) -> None:
    response = raw.post("/locations", json={"name": "Austin HQ", "address": {"city": "Austin"}})
    assert response.status_code == 400
    body = response.json()
    assert body["errorCode"] == 25008
    assert body["errors"][0]["errorCode"] == 25008
    assert "timeZone" in body["message"] and "address.address1" in body["message"]
    assert response.headers["Cisco-Spark-Error-Codes"] == "25008"


def test_duplicate_location_name_is_409(api: httpx.Client, raw: httpx.Client) -> None:
    create_location(api, "Austin HQ", calling=False)
    assert raw.post("/locations", json=location_body("austin hq")).status_code == 409


def test_update_a_location_is_204(api: httpx.Client, sim: Simulator) -> None:
    location_id = create_location(api, "Austin HQ", calling=False)
    writes = sim.write_count
    change = {"name": "Austin HQ", "timeZone": "America/Denver", "address": dict(ADDRESS)}
    response = api.put(f"/locations/{location_id}", json=change)
    assert response.status_code == 204
    assert response.content == b""
    assert api.get(f"/locations/{location_id}").json()["timeZone"] == "America/Denver"
    assert sim.write_count == writes + 1
    api.put(f"/locations/{location_id}", json=change)  # the same values again: no write
    assert sim.write_count == writes + 1


# -- Webex Calling on a location ------------------------------------------------------------


def test_calling_endpoints_answer_5620_until_the_location_is_enabled(
    api: httpx.Client, raw: httpx.Client
) -> None:
    location_id = create_location(api, "Austin HQ", calling=False)
    before = api.get(f"/telephony/config/locations/{location_id}")
    assert before.status_code == 404
    assert before.json()["errorCode"] == 5620
    assert "Group not found with this external ID" in before.json()["message"]
    assert add_numbers(raw, location_id, "+15125550100").json()["errorCode"] == 5620
    assert api.get("/telephony/config/locations").json()["locations"] == []
    enabled = api.post(
        "/telephony/config/locations", json={"id": location_id, **location_body("Austin HQ")}
    )
    assert enabled.status_code == 201
    assert enabled.json() == {"id": location_id}
    detail = api.get(f"/telephony/config/locations/{location_id}").json()
    assert detail["id"] == location_id
    listed = api.get("/telephony/config/locations", params={"name": "AUSTIN"}).json()
    assert [loc["id"] for loc in listed["locations"]] == [location_id]


def test_enabling_needs_its_required_fields(api: httpx.Client, raw: httpx.Client) -> None:
    location_id = create_location(api, "Austin HQ", calling=False)
    response = raw.post("/telephony/config/locations", json={"id": location_id})
    assert response.status_code == 400
    assert response.json()["errorCode"] == 25008


def test_adding_numbers_ignores_those_already_there(api: httpx.Client, sim: Simulator) -> None:
    location_id = create_location(api, "Austin HQ")
    assert add_numbers(api, location_id, "+15125550100").status_code == 201
    writes = sim.write_count
    again = add_numbers(api, location_id, "+15125550100", "+15125550101")
    assert again.status_code == 201
    assert sim.write_count == writes + 1
    assert add_numbers(api, location_id, "+15125550100").status_code == 201
    assert sim.write_count == writes + 1  # nothing new: not a write
    listed = api.get("/telephony/config/numbers", params={"locationId": location_id}).json()
    assert [entry["phoneNumber"] for entry in listed["phoneNumbers"]] == [
        "+15125550100",
        "+15125550101",
    ]


def test_numbers_show_owner_extension_only_entries_and_page_by_offset(
    api: httpx.Client,
) -> None:
    location_id = create_location(api, "Austin HQ")
    add_numbers(api, location_id, "+15125550100", "+15125550101")
    license = license_id(api)
    owner = create_user(
        api,
        person_body(
            "ana@example.com",
            location_id,
            license,
            extension="1001",
            phoneNumbers=[{"type": "work", "value": "+15125550100"}],
        ),
    ).json()
    create_user(api, person_body("ben@example.com", location_id, license, extension="1002"))
    entries = api.get("/telephony/config/numbers", params={"locationId": location_id}).json()[
        "phoneNumbers"
    ]
    by_key = {entry.get("phoneNumber") or entry["extension"]: entry for entry in entries}
    assert by_key["+15125550100"]["owner"]["id"] == owner["id"]
    assert by_key["+15125550100"]["extension"] == "1001"
    assert by_key["+15125550100"]["location"] == {"id": location_id, "name": "Austin HQ"}
    assert "owner" not in by_key["+15125550101"]
    assert "phoneNumber" not in by_key["1002"]
    assert by_key["1002"]["owner"]["type"] == "PEOPLE"
    one = api.get("/telephony/config/numbers", params={"phoneNumber": "+15125550100"})
    assert [e["owner"]["id"] for e in one.json()["phoneNumbers"]] == [owner["id"]]
    ext = api.get(
        "/telephony/config/numbers", params={"locationId": location_id, "extension": "1002"}
    ).json()["phoneNumbers"]
    assert [e["extension"] for e in ext] == ["1002"]
    pages = [
        api.get(
            "/telephony/config/numbers",
            params={"locationId": location_id, "start": start, "max": 2},
        ).json()["phoneNumbers"]
        for start in (0, 2)
    ]
    assert [len(page) for page in pages] == [2, 1]


# -- pagination ----------------------------------------------------------------------------


def follow(api: httpx.Client, first: httpx.Response, key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = list(first.json()[key])
    response = first
    for _ in range(100):
        link = response.links.get("next")
        if link is None:
            return items
        assert link["url"].startswith(BASE + "/"), link["url"]
        response = api.get(link["url"])
        items.extend(response.json()[key])
    raise AssertionError("pagination did not end")


def test_people_pages_follow_the_link_header(api: httpx.Client, sim: Simulator) -> None:
    for index in range(7):
        sim.add_person(f"user{index}@example.com")
    first = api.get("/people", params={"callingData": "true", "max": 3})
    assert len(first.json()["items"]) == 3
    assert "cursor=" in first.links["next"]["url"]
    emails = [item["emails"][0] for item in follow(api, first, "items")]
    assert emails == [f"user{index}@example.com" for index in range(7)]


def test_location_and_license_pages(api: httpx.Client, raw: httpx.Client, sim: Simulator) -> None:
    for index in range(5):
        sim.add_location(f"Site {index}")
    first = api.get("/locations", params={"max": 2})
    assert [loc["name"] for loc in follow(api, first, "items")] == [f"Site {i}" for i in range(5)]
    licenses = raw.get("/licenses", params={"max": 1})  # the files do not list max for /licenses
    assert len(follow(raw, licenses, "items")) == 3


# -- admin endpoints and accessors -----------------------------------------------------------


def admin(sim: Simulator, method: str, path: str, body: object = None) -> SimResponse:
    payload = json.dumps(body).encode() if body is not None else b""
    response = sim.handle(SimRequest.build(method, path, body=payload))
    assert isinstance(response, SimResponse)
    return response


def test_admin_state_counts_users_locations_writes_and_requests(
    api: httpx.Client, raw: httpx.Client, sim: Simulator
) -> None:
    location_id = create_location(api, "Austin HQ")
    create_user(api, person_body("ana@example.com", location_id, license_id(api), extension="1001"))
    raw.get("/nowhere")
    state = admin(sim, "GET", "/_sim/state").json()
    assert state["users_by_email"] == {"ana@example.com": 1}
    assert state["locations_by_name"] == {"Austin HQ": 1}
    assert state["writes"] == 3 == sim.write_count
    assert state["requests_by_route"]["POST /v1/people"] == {"200": 1}
    assert state["requests_by_route"]["unknown"] == {"404": 1}
    assert state["requests_total"] == sim.total_requests == 5
    assert [entry.route for entry in sim.request_log][-1] == "unknown"
    assert sim.request_log[0].body == location_body("Austin HQ")


def test_admin_reset_and_faults(sim: Simulator) -> None:
    sim.add_person("ana@example.com")
    assert admin(sim, "POST", "/_sim/reset").status == 200
    assert sim.users_by_email() == {}
    assert admin(sim, "GET", "/_sim/faults").json()["error_rate"] == 0
    patched = admin(sim, "PATCH", "/_sim/faults", {"error_rate": 0.5})
    assert patched.status == 200 and sim.faults.error_rate == 0.5
    replaced = admin(sim, "PUT", "/_sim/faults", {"latency_ms": 5})
    assert replaced.status == 200 and sim.faults.error_rate == 0 and sim.faults.latency_ms == 5
    invalid = admin(sim, "PUT", "/_sim/faults", {"error_rate": 2, "bogus": 1})
    assert invalid.status == 400
    assert {item["field"] for item in invalid.json()["errors"]} == {"error_rate", "bogus"}
    assert admin(sim, "GET", "/_sim/nothing").status == 404


def test_admin_recent_requests(api: httpx.Client, sim: Simulator) -> None:
    api.get("/licenses")
    listed = admin(sim, "GET", "/_sim/requests").json()
    assert listed["items"][-1]["route"] == "GET /v1/licenses"
    assert listed["items"][-1]["status"] == 200


def test_seeded_entities_are_what_the_api_shows(api: httpx.Client, sim: Simulator) -> None:
    location_id = sim.add_location("Austin HQ", calling=True, numbers=("+15125550100",))
    person_id = sim.add_person(
        "ana@example.com", location_id=location_id, extension="1001", phone_number="+15125550100"
    )
    shown = api.get(f"/people/{person_id}", params={"callingData": "true"}).json()
    assert shown == sim.person(person_id) == sim.person_by_email("ANA@example.com")
    assert sim.location(location_id) is not None
    assert sim.person_settings(person_id)["callWaiting"] is True
