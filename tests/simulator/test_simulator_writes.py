"""The write counters of `GET /_sim/state`: `writes` (the org changed) and `write_requests`
(every POST/PUT/PATCH/DELETE under /v1, whatever became of it), which lets a test prove that
a read-only command attempted no write at all."""

from __future__ import annotations

import httpx

from ledger.simulator import FaultConfig, SimRequest, Simulator
from tests.support.simulator import (
    AUTH,
    BASE,
    LOCATION,
    add_numbers,
    create_location,
    create_user,
    license_id,
    person_body,
)


def counters(sim: Simulator) -> tuple[object, object]:
    state = sim.state_snapshot()
    assert (state["writes"], state["write_requests"]) == (
        sim.write_count,
        sim.write_request_count,
    )
    return state["writes"], state["write_requests"]


def test_every_write_route_counts_once(api: httpx.Client, sim: Simulator) -> None:
    location_id = create_location(api, "Austin HQ")  # POST /locations, POST telephony locations
    api.put(f"/locations/{location_id}", json={"timeZone": "America/Denver"})
    add_numbers(api, location_id, "+15125550100")
    person = create_user(
        api, person_body("ana@example.com", location_id, license_id(api), extension="1001")
    ).json()
    changed = {k: v for k, v in person.items() if k not in {"id", "created", "lastModified"}}
    changed.pop("type")
    changed.pop("orgId")
    api.put(f"/people/{person['id']}", json={**changed, "title": "Agent"})
    api.put(f"/people/{person['id']}/features/voicemail", json={"enabled": False})
    api.put(f"/people/{person['id']}/features/callerId", json={"selected": "LOCATION_NUMBER"})
    api.put(f"/people/{person['id']}/features/callWaiting", json={"enabled": False})
    api.delete(f"/people/{person['id']}")
    assert counters(sim) == (10, 10)


def test_reads_count_no_write(api: httpx.Client, sim: Simulator) -> None:
    location_id = create_location(api, "Austin HQ")
    before = counters(sim)
    api.get("/licenses")
    api.get("/locations", params={"name": "Austin"})
    api.get("/people", params={"locationId": location_id, "callingData": "true"})
    api.get("/telephony/config/numbers", params={"locationId": location_id})
    assert counters(sim) == before


def test_writes_that_change_nothing_are_still_attempts(raw: httpx.Client, sim: Simulator) -> None:
    raw.post("/locations", json={"name": "incomplete"})  # 400
    raw.post("/nowhere", json={})  # 404, unknown path
    raw.patch("/licenses", json={})  # 405
    raw.delete("/people/unknown")  # 404
    raw.put("/locations", json={})  # 405
    assert counters(sim) == (0, 5)


def test_writes_refused_before_the_route_are_attempts_too() -> None:
    for faults in (FaultConfig(auth_failure=401), FaultConfig(rate_limit_rps=1, seed=1)):
        sim = Simulator(faults=faults, clock=lambda: 0.0)
        with httpx.Client(transport=sim.transport(), base_url=BASE, headers=AUTH) as client:
            statuses = {client.post("/locations", json=LOCATION).status_code for _ in range(3)}
        assert statuses & {401, 429}, faults
        assert sim.write_request_count == 3
        assert sim.write_count <= 1


def test_a_write_applied_then_answered_badly_changed_the_org() -> None:
    sim = Simulator(faults=FaultConfig(people_create_400_rate=1.0))
    body = b'{"emails": ["ana@example.com"], "displayName": "Ana"}'
    sim.handle(SimRequest.build("POST", "/v1/people", headers=AUTH, body=body))
    assert counters(sim) == (1, 1)


def test_reset_clears_both(api: httpx.Client, sim: Simulator) -> None:
    create_location(api, "Austin HQ")
    sim.reset()
    assert counters(sim) == (0, 0)
