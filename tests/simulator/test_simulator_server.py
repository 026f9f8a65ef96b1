"""The simulator on a real socket: keep-alive, concurrency, real hangs and dropped connections,
the admin endpoints over HTTP, and the `ledger sim` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import typer
from typer.testing import CliRunner

from ledger.simulator import FaultConfig, Simulator, running_server, serve
from ledger.simulator.command import sim_command
from tests.support.openapi import contract_event_hooks
from tests.support.simulator import AUTH, LOCATION


@pytest.fixture
def base_url(sim: Simulator) -> Iterator[str]:
    with running_server(sim) as url:
        yield url


def test_serves_webex_over_http_with_keep_alive(base_url: str, sim: Simulator) -> None:
    assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
    hooks = contract_event_hooks()
    with httpx.Client(base_url=base_url, headers=AUTH, event_hooks=hooks) as client:
        for _ in range(5):
            response = client.get("/licenses")
            assert response.status_code == 200
            assert response.headers["Trackingid"]
            assert response.http_version == "HTTP/1.1"
        created = client.post("/locations", json=LOCATION)
        assert created.status_code == 201
        assert client.get(f"/locations/{created.json()['id']}").json()["name"] == "Austin HQ"
    assert sim.total_requests == 7


def test_link_header_points_at_the_server_itself(base_url: str, sim: Simulator) -> None:
    for index in range(3):
        sim.add_person(f"user{index}@example.com")
    with httpx.Client(base_url=base_url, headers=AUTH) as client:
        first = client.get("/people", params={"max": 2, "callingData": "true"})
        next_url = first.links["next"]["url"]
        assert next_url.startswith(base_url + "/people?")
        second = client.get(next_url)
    assert [item["emails"][0] for item in second.json()["items"]] == ["user2@example.com"]
    assert "next" not in second.links


def test_401_and_unknown_path_over_http(base_url: str) -> None:
    with httpx.Client(base_url=base_url) as client:
        assert client.get("/licenses").status_code == 401
        missing = client.get("/nope", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json()["message"] == "No static resource hydra/v1/nope."


def test_concurrent_clients_see_one_consistent_org(base_url: str, sim: Simulator) -> None:
    def create(worker: int) -> None:
        with httpx.Client(base_url=base_url, headers=AUTH) as client:
            for index in range(25):
                body = {"emails": [f"w{worker}-{index}@example.com"], "displayName": "W"}
                assert client.post("/people", json=body).status_code == 200

    threads = [threading.Thread(target=create, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = sim.users_by_email()
    assert len(counts) == 150 and set(counts.values()) == {1}
    assert sim.write_count == 150


def test_chunked_request_body(base_url: str, sim: Simulator) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"emails": ["ana@example.com"],'
        yield b' "displayName": "Ana"}'

    with httpx.Client(base_url=base_url, headers=AUTH) as client:
        response = client.post("/people", content=chunks())
    assert response.status_code == 200
    assert sim.users_by_email() == {"ana@example.com": 1}


def test_a_hang_outlasts_the_client_timeout_and_stop_wakes_it(sim: Simulator) -> None:
    sim.set_faults(FaultConfig(hang_rate=1.0, hang_s=30))
    server = serve(sim)
    try:
        with httpx.Client(base_url=server.base_url, headers=AUTH, timeout=0.3) as client:
            started = time.perf_counter()
            with pytest.raises(httpx.ReadTimeout):
                client.get("/licenses")
            assert time.perf_counter() - started < 5
    finally:
        stopping = time.perf_counter()
        server.stop()
    assert time.perf_counter() - stopping < 5  # the 30 s hang did not hold the stop
    assert sim.requests_by_route()["GET /v1/licenses"] == {"hang": 1}


def test_a_dropped_connection_after_the_write_was_applied(base_url: str, sim: Simulator) -> None:
    sim.set_faults(FaultConfig(write_drop_rate=1.0))
    with httpx.Client(base_url=base_url, headers=AUTH) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/locations", json=LOCATION)
        assert client.get("/locations").json()["items"][0]["name"] == "Austin HQ"
    assert sim.locations_by_name() == {"Austin HQ": 1}


def test_latency_is_real_on_the_socket(base_url: str, sim: Simulator) -> None:
    sim.set_faults(FaultConfig(latency_ms=50))
    with httpx.Client(base_url=base_url, headers=AUTH) as client:
        started = time.perf_counter()
        client.get("/licenses")
    assert time.perf_counter() - started >= 0.05


def test_admin_endpoints_over_http(base_url: str, sim: Simulator) -> None:
    admin = base_url.removesuffix("/v1") + "/_sim"
    with httpx.Client(headers=AUTH) as client:
        client.post(base_url + "/locations", json=LOCATION)
        state = client.get(admin + "/state").json()
        assert state["locations_by_name"] == {"Austin HQ": 1}
        assert state["requests_by_route"] == {"POST /v1/locations": {"201": 1}}
        changed = client.put(admin + "/faults", json={"auth_failure": 403})
        assert changed.status_code == 200 and changed.json()["auth_failure"] == 403
        assert client.get(base_url + "/licenses").status_code == 403
        assert client.get(admin + "/faults").json()["auth_failure"] == 403  # admin: no faults
        assert client.post(admin + "/reset").status_code == 200
        assert client.get(admin + "/state").json()["locations_by_name"] == {}
        assert client.put(admin + "/faults", json={"hang_rate": -1}).status_code == 400


def test_stop_frees_the_port(sim: Simulator) -> None:
    with running_server(sim) as url:
        with httpx.Client(base_url=url, headers=AUTH) as client:
            assert client.get("/licenses").status_code == 200
    with pytest.raises(httpx.ConnectError), httpx.Client(base_url=url, headers=AUTH) as client:
        client.get("/licenses")


# -- the `ledger sim` command ---------------------------------------------------------------


def sim_app() -> typer.Typer:
    app = typer.Typer()
    app.command("sim")(sim_command)
    return app


def test_every_option_has_help_text() -> None:
    command = typer.main.get_command(sim_app())
    assert command.help
    options = [p for p in command.params if p.param_type_name == "option"]
    assert len(options) >= 17
    for option in options:
        assert getattr(option, "help", None), f"--{option.name} has no help text"
    result = CliRunner().invoke(sim_app(), ["--help"])
    assert result.exit_code == 0
    assert "--profile" in result.output and "--hang-rate" in result.output


@pytest.mark.parametrize(
    "args", [["--profile", "nonsense"], ["--error-rate", "2"], ["--auth-failure", "500"]]
)
def test_bad_options_exit_2(args: list[str]) -> None:
    result = CliRunner().invoke(sim_app(), ["--port", "0", *args])
    assert result.exit_code == 2


def test_the_command_prints_the_base_url_and_stops_on_ctrl_c() -> None:
    script = (
        "import typer\nfrom ledger.simulator.command import sim_command\ntyper.run(sim_command)\n"
    )
    command = [sys.executable, "-c", script, "--port", "0", "--profile", "mild"]
    with subprocess.Popen(
        [*command, "--error-rate", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    ) as process:
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip()
            assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
            with httpx.Client(base_url=base_url, headers=AUTH, timeout=10) as client:
                assert client.get("/licenses").status_code in (200, 429)
                faults = client.get(base_url.removesuffix("/v1") + "/_sim/faults").json()
            assert faults["error_rate"] == 0 and faults["latency_ms"] == 20
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
