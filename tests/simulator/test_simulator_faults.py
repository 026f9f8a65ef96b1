"""Each injected fault, in-process, seeded and on a fake clock so nothing sleeps or flakes."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from ledger.simulator import PROFILES, Fault, FaultConfig, SimRequest, SimResponse, Simulator
from tests.support.clock import FakeTime
from tests.support.simulator import AUTH, LOCATION


def get(sim: Simulator, path: str = "/v1/licenses") -> SimResponse | Fault:
    return sim.handle(SimRequest.build("GET", path, headers=AUTH))


def test_latency_with_jitter_is_part_of_the_answer(make: Any) -> None:
    sim, _ = make(latency_ms=40, latency_jitter_ms=20, seed=3)
    delays = []
    for _ in range(20):
        outcome = get(sim)
        assert isinstance(outcome, SimResponse)
        delays.append(outcome.delay_s)
    assert all(0.040 <= delay <= 0.060 for delay in delays)
    assert len(set(delays)) > 1


def test_in_process_latency_is_slept(make: Any) -> None:
    _, client = make(latency_ms=30)
    started = time.perf_counter()
    client.get("/licenses")
    assert time.perf_counter() - started >= 0.03


def test_rate_limit_answers_429_with_retry_after(make: Any, clock: FakeTime) -> None:
    _, client = make(rate_limit_rps=2)
    statuses = [client.get("/licenses").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = client.get("/licenses")
    assert limited.headers["Retry-After"] == "1"
    assert limited.headers["Trackingid"]
    clock.now += 1.0
    assert client.get("/licenses").status_code == 200


def test_some_retry_after_values_are_garbage(make: Any) -> None:
    _, client = make(rate_limit_rps=1, retry_after_garbage_rate=1.0)
    client.get("/licenses")
    limited = client.get("/licenses")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "rand(30),add(30)"


def test_random_5xx_is_not_applied(make: Any) -> None:
    sim, client = make(error_rate=1.0, seed=1)
    statuses = {client.post("/locations", json=LOCATION).status_code for _ in range(12)}
    assert statuses <= {500, 502, 503, 504} and len(statuses) > 1
    assert sim.locations_by_name() == {}
    assert sim.write_count == 0


def test_gateway_errors_use_the_error_message_shape(make: Any) -> None:
    _, client = make(error_rate=1.0, seed=1)
    for _ in range(20):
        response = client.get("/licenses")
        if response.status_code in (502, 504):
            assert set(response.json()) == {"errorMessage"}
            return
    raise AssertionError("no gateway error drawn")


def test_hang_in_process_raises_read_timeout(make: Any) -> None:
    sim, client = make(hang_rate=1.0, hang_s=7)
    with pytest.raises(httpx.ReadTimeout):
        client.get("/licenses")
    outcome = get(sim)
    assert isinstance(outcome, Fault)
    assert (outcome.kind, outcome.hang_s) == ("hang", 7)
    assert sim.requests_by_route()["GET /v1/licenses"] == {"hang": 2}


def test_write_applied_then_answered_5xx(make: Any) -> None:
    sim, client = make(write_error_rate=1.0)
    response = client.post("/locations", json=LOCATION)
    assert response.status_code >= 500
    assert sim.locations_by_name() == {"Austin HQ": 1}
    assert sim.write_count == 1
    assert client.get("/licenses").status_code == 200  # reads are not affected


def test_write_applied_then_connection_dropped(make: Any) -> None:
    sim, client = make(write_drop_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/locations", json=LOCATION)
    assert sim.locations_by_name() == {"Austin HQ": 1}
    assert sim.requests_by_route()["POST /v1/locations"] == {"drop": 1}


def test_failed_writes_are_not_faulted(make: Any) -> None:
    sim, client = make(write_error_rate=1.0)
    assert client.post("/locations", json={"name": "x"}).status_code == 400
    assert sim.write_count == 0


def test_people_create_answers_400_but_creates(make: Any) -> None:
    sim, client = make(people_create_400_rate=1.0)
    response = client.post("/people", json={"emails": ["ana@example.com"], "displayName": "Ana"})
    assert response.status_code == 400
    assert response.json()["message"]
    assert sim.users_by_email() == {"ana@example.com": 1}
    found = client.get("/people", params={"email": "ana@example.com"}).json()["items"]
    assert len(found) == 1


def test_new_person_shows_in_email_lookup_after_the_delay(make: Any, clock: FakeTime) -> None:
    _, client = make(lookup_delay_s=5)
    created = client.post("/people", json={"emails": ["ana@example.com"], "displayName": "Ana"})
    person_id = created.json()["id"]
    assert client.get("/people", params={"email": "ana@example.com"}).json()["items"] == []
    assert client.get(f"/people/{person_id}").status_code == 200  # by id: at once
    clock.now += 5
    found = client.get("/people", params={"email": "ana@example.com"}).json()["items"]
    assert [item["id"] for item in found] == [person_id]


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_for_everything(make: Any, status: int) -> None:
    sim, client = make(auth_failure=status)
    assert client.get("/licenses").status_code == status
    assert client.post("/locations", json=LOCATION).status_code == status
    assert sim.locations_by_name() == {}


def statuses(seed: int) -> list[int | str]:
    sim = Simulator(faults=FaultConfig(seed=seed, error_rate=0.3, hang_rate=0.1))
    return [outcome_of(get(sim)) for _ in range(60)]


def test_the_same_seed_replays_the_same_faults() -> None:
    assert statuses(7) == statuses(7)
    assert statuses(7) != statuses(8)
    assert 200 in statuses(7) and "hang" in statuses(7)


def test_faults_change_at_run_time(make: Any) -> None:
    sim, client = make()
    assert client.get("/licenses").status_code == 200
    sim.set_faults(sim.faults.model_copy(update={"auth_failure": 401}))
    assert client.get("/licenses").status_code == 401
    sim.set_faults(FaultConfig())
    assert client.get("/licenses").status_code == 200


def outcome_of(outcome: SimResponse | Fault) -> int | str:
    return outcome.status if isinstance(outcome, SimResponse) else outcome.kind


def test_reset_rewinds_the_random_sequence(make: Any) -> None:
    sim, _ = make(error_rate=0.5, seed=11)
    first = [outcome_of(get(sim)) for _ in range(20)]
    sim.reset()
    assert [outcome_of(get(sim)) for _ in range(20)] == first


def test_fault_config_is_frozen_and_validated() -> None:
    config = FaultConfig()
    with pytest.raises(ValueError):
        FaultConfig(error_rate=1.5)
    with pytest.raises(ValueError):
        FaultConfig.model_validate({"no_such_fault": 1})
    with pytest.raises(ValueError):
        config.error_rate = 0.5  # type: ignore[misc]
    assert set(PROFILES) >= {"none", "mild", "chaos"}
    assert PROFILES["none"] == FaultConfig()
    assert PROFILES["chaos"].error_rate > PROFILES["mild"].error_rate > 0
