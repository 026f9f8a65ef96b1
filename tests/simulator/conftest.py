"""Fixtures of the simulator's tests: a fresh simulator and in-process clients of it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from ledger.simulator import Simulator
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
