"""Fixtures of the simulator's tests: a fresh simulator and in-process clients of it, and
`make(token=None, **faults)` for simulators of their own on the fake `clock`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from ledger.simulator import FaultConfig, Simulator
from tests.support.clock import FakeTime
from tests.support.openapi import contract_event_hooks
from tests.support.simulator import AUTH, BASE


@pytest.fixture
def sim() -> Simulator:
    return Simulator()


@pytest.fixture
def api(sim: Simulator) -> Iterator[httpx.Client]:
    """A client whose every exchange is checked against the OpenAPI files (the test is skipped,
    saying where it looked, when they are absent)."""
    hooks = contract_event_hooks()
    with httpx.Client(
        transport=sim.transport(), base_url=BASE, headers=AUTH, event_hooks=hooks
    ) as client:
        yield client


@pytest.fixture
def raw(sim: Simulator) -> Iterator[httpx.Client]:
    """A client without contract checks, for requests that are wrong on purpose."""
    with httpx.Client(transport=sim.transport(), base_url=BASE, headers=AUTH) as client:
        yield client


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime(start=1000.0)


@pytest.fixture
def make(clock: FakeTime) -> Iterator[Callable[..., tuple[Simulator, httpx.Client]]]:
    """Builds simulators with the given faults (and token) on `clock`, each with a client
    without contract checks; the clients are closed at the test's end."""
    clients: list[httpx.Client] = []

    def build(token: str | None = None, **faults: Any) -> tuple[Simulator, httpx.Client]:
        sim = Simulator(faults=FaultConfig(**faults), token=token, clock=clock)
        client = httpx.Client(transport=sim.transport(), base_url=BASE, headers=AUTH)
        clients.append(client)
        return sim, client

    yield build
    for client in clients:
        client.close()
