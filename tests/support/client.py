"""Settings for tests of the HTTP client against an httpx.MockTransport (no network)."""

from __future__ import annotations

from typing import Any

from ledger.config import Settings

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
