"""Settings and clients for tests of the HTTP client against an httpx.MockTransport (no
network), on a fake clock (the `fake_time` fixture of tests/conftest.py)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import httpx

from ledger.config import Settings
from ledger.connection_client import WebexClient
from tests.support.clock import FakeTime

TOKEN = "NjQ0ZTk0secret-token-value_0123456789abcdef"
BASE = "https://webex.test/v1"


def make_settings(**overrides: Any) -> Settings:
    """Fast, bounded retries and a token: what a client test needs, overridable per test."""
    values: dict[str, Any] = {
        "WEBEX_ACCESS_TOKEN": TOKEN,
        "WEBEX_BASE_URL": BASE,
        "MAX_RETRIES": 3,
        "RETRY_BACKOFF_S": 0.5,
        "RETRY_AFTER_CAP_S": 60.0,
        "RETRY_AFTER_DEFAULT_S": 5.0,
        "REQUEST_TIMEOUT_S": 7.0,
        "LEDGER_CONCURRENCY": 4,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def mock_client(
    settings: Settings,
    fake_time: FakeTime,
    answer: Callable[[httpx.Request], httpx.Response],
    **options: Any,
) -> WebexClient:
    """A WebexClient whose requests `answer` takes, sleeping on the fake clock, its backoff
    jitter seeded (`options`: WebexClient's other keyword arguments)."""
    return WebexClient(
        settings,
        transport=httpx.MockTransport(answer),
        sleep=fake_time.sleep,
        clock=fake_time.monotonic,
        wall_clock=fake_time.wall,
        rng=random.Random(7),
        **options,
    )
