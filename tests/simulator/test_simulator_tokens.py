"""Tokens that expire (`token_ttl_s`) and the refresh endpoint `POST /v1/access_token`.

The endpoint is not in the OpenAPI files, so these requests go through a client without the
contract hooks; its form fields and answer keys are those of Webex's integration guides.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import httpx
import pytest

from ledger.simulator import OAuthClient, SimRequest, Simulator
from ledger.simulator.routes import ROUTES
from ledger.simulator.tokens import TOKEN_PATH
from tests.support.clock import FakeTime
from tests.support.openapi import load_contract
from tests.support.simulator import BASE, LOCATION

FORM = {
    "grant_type": "refresh_token",
    "client_id": "sim-client-id",
    "client_secret": "sim-client-secret",
    "refresh_token": "sim-refresh-token",
}


def refresh(client: httpx.Client, **changes: str | None) -> httpx.Response:
    form = {key: value for key, value in {**FORM, **changes}.items() if value is not None}
    return client.post("/access_token", data=form, headers={"Authorization": ""})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_expires_ttl_seconds_after_it_was_first_seen(make: Any, clock: FakeTime) -> None:
    sim, client = make(token_ttl_s=60)
    assert client.get("/licenses").status_code == 200
    clock.now += 59
    assert client.get("/licenses").status_code == 200
    clock.now += 1
    expired = client.get("/licenses")
    assert expired.status_code == 401
    body = expired.json()
    assert set(body) == {"message", "errors", "trackingId"}
    assert body["errors"] == [{"description": body["message"]}]
    assert expired.headers["Trackingid"] == body["trackingId"]
    assert client.post("/locations", json=LOCATION).status_code == 401
    assert sim.locations_by_name() == {}
    assert sim.state_snapshot()["tokens"]["expired_answers"] == 2  # type: ignore[index]


def test_by_default_tokens_never_expire(make: Any, clock: FakeTime) -> None:
    _, client = make()
    assert client.get("/licenses").status_code == 200
    clock.now += 10 * 365 * 24 * 3600
    assert client.get("/licenses").status_code == 200


def test_a_refreshed_token_works_and_expires_in_its_turn(make: Any, clock: FakeTime) -> None:
    sim, client = make(token="first", token_ttl_s=100)
    assert client.get("/licenses", headers=bearer("first")).status_code == 200
    clock.now += 100
    assert client.get("/licenses", headers=bearer("first")).status_code == 401
    response = refresh(client)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    answer = response.json()
    assert set(answer) == {
        "access_token",
        "expires_in",
        "refresh_token",
        "refresh_token_expires_in",
        "token_type",
    }
    assert answer["expires_in"] == 100
    assert answer["refresh_token"] == "sim-refresh-token"
    assert answer["refresh_token_expires_in"] > answer["expires_in"]
    new_token = answer["access_token"]
    assert new_token != "first"
    assert client.get("/licenses", headers=bearer(new_token)).status_code == 200
    assert client.get("/licenses", headers=bearer("made-up")).status_code == 401
    clock.now += 100
    assert client.get("/licenses", headers=bearer(new_token)).status_code == 401
    again = refresh(client).json()["access_token"]
    assert again not in ("first", new_token)
    assert sim.token_refresh_count == 2


def test_without_a_ttl_a_refresh_says_fourteen_days(make: Any) -> None:
    _, client = make()
    assert refresh(client).json()["expires_in"] == 14 * 24 * 3600


@pytest.mark.parametrize(
    ("changes", "status", "words"),
    [
        ({"client_id": "other"}, 401, "invalid_client"),
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_secret": None}, 401, "invalid_client"),
        ({"refresh_token": "stale"}, 400, "invalid_grant"),
        ({"refresh_token": None}, 400, "invalid_grant"),
        ({"grant_type": "authorization_code"}, 400, "unsupported_grant_type"),
        ({"grant_type": None}, 400, "invalid_request"),
    ],
)
def test_wrong_credentials_are_refused(
    make: Any, changes: dict[str, str | None], status: int, words: str
) -> None:
    sim, client = make()
    response = refresh(client, **changes)
    assert response.status_code == status
    assert words in response.json()["message"]
    assert response.json()["trackingId"] == response.headers["Trackingid"]
    assert sim.token_refresh_count == 0


def test_a_json_body_is_not_a_form(make: Any) -> None:
    _, client = make()
    response = client.post("/access_token", json=FORM)
    assert response.status_code == 400
    assert client.get("/access_token").status_code == 405


def test_the_credentials_can_be_chosen(clock: FakeTime) -> None:
    oauth = OAuthClient("my-id", "my-secret", "my-refresh")
    sim = Simulator(oauth=oauth, clock=clock)
    with httpx.Client(transport=sim.transport(), base_url=BASE) as client:
        assert refresh(client).status_code == 401
        chosen = refresh(
            client, client_id="my-id", client_secret="my-secret", refresh_token="my-refresh"
        )
        assert chosen.status_code == 200
    tokens = sim.state_snapshot()["tokens"]
    assert isinstance(tokens, dict)
    assert (tokens["client_id"], tokens["refresh_token"], tokens["refreshes"]) == (
        "my-id",
        "my-refresh",
        1,
    )


def test_the_refresh_meets_no_gateway_fault_unless_told(make: Any) -> None:
    sim, client = make(error_rate=1.0, hang_rate=0.0, seed=2)
    assert client.get("/licenses").status_code >= 500
    assert refresh(client).status_code == 200
    sim.set_faults(sim.faults.model_copy(update={"token_refresh_faults": True}))
    assert refresh(client).status_code >= 500
    assert sim.token_refresh_count == 1
    assert sim.requests_by_route()["POST /v1/access_token"]["200"] == 1


def test_the_refresh_is_not_a_write(make: Any) -> None:
    sim, client = make()
    refresh(client)
    refresh(client, refresh_token="stale")
    state = sim.state_snapshot()
    assert (state["writes"], state["write_requests"]) == (0, 0)
    assert sim.write_request_count == 0


def test_a_ttl_set_at_run_time_counts_from_the_first_sight(make: Any, clock: FakeTime) -> None:
    sim, client = make()
    assert client.get("/licenses").status_code == 200
    clock.now += 30
    sim.set_faults(sim.faults.model_copy(update={"token_ttl_s": 30}))
    assert client.get("/licenses").status_code == 401


def test_in_process_requests_carry_form_bodies_as_sent(make: Any) -> None:
    sim, _ = make()
    body = b"grant_type=refresh_token&client_id=sim-client-id&client_secret=sim-client-secret"
    outcome = sim.handle(
        SimRequest.build(
            "POST",
            "/v1/access_token",
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
            body=body + b"&refresh_token=sim-refresh-token",
        )
    )
    assert getattr(outcome, "status", None) == 200


def test_ledger_sim_prints_how_to_refresh_and_serves_it() -> None:
    script = (
        "import typer\nfrom ledger.simulator.command import sim_command\ntyper.run(sim_command)\n"
    )
    command = [sys.executable, "-c", script, "--port", "0", "--token-ttl-s", "600"]
    command += ["--client-id", "ops-id", "--client-secret", "ops-secret"]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    ) as process:
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip()
            usage = process.stdout.readline().strip()
            assert f"POST {base_url}/access_token" in usage
            fields = dict(part.split("=", 1) for part in usage.split() if "=" in part)
            assert fields["client_id"] == "ops-id"
            assert fields["grant_type"] == "refresh_token"
            with httpx.Client(base_url=base_url, timeout=10) as client:
                answer = client.post("/access_token", data=fields)
                assert answer.status_code == 200, answer.text
                assert answer.json()["expires_in"] == 600
                token = answer.json()["access_token"]
                assert client.get("/licenses", headers=bearer(token)).status_code == 200
                state = client.get(base_url.removesuffix("/v1") + "/_sim/state").json()
            assert state["tokens"]["refreshes"] == 1
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()


def test_the_token_endpoint_is_not_in_the_files_so_not_a_route() -> None:
    contract = load_contract()
    with pytest.raises(AssertionError, match="no such operation"):
        contract.find("POST", "/v1/access_token")
    assert all(route.template != TOKEN_PATH for route in ROUTES)
