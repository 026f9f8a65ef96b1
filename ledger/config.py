"""Settings from the environment (and a `.env` file in the working directory), validated once.

Every variable of SPEC section 2 is here with its default and range. A bad value raises
`ConfigError` naming the variable; the CLI turns that into one line and exit 2. The token is a
`SecretStr`: its repr and str are masked, so it cannot be printed or logged by accident.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ledger.error_handling import ConfigError

PIPELINE_VERSION = "1"

# Chosen with scripts/bench_work.py (work as a subprocess against the socket simulator):
# against a 20 ms API, 16 rows in flight gave 83.5 rows/s and 32 gave 79.9 (the process is
# CPU-bound there); against 200 ms, closer to Webex's own latency, 16 gave 13.0 rows/s and 32
# gave 20.8. 32 keeps enough requests in flight for the real API, and the client's adaptive
# limiter slows it down when Webex answers 429.
DEFAULT_CONCURRENCY = 32

REFRESH_VARIABLES = ("WEBEX_CLIENT_ID", "WEBEX_CLIENT_SECRET", "WEBEX_REFRESH_TOKEN")


class Settings(BaseSettings):
    """The validated configuration. Field names are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        case_sensitive=False,
    )

    WEBEX_ACCESS_TOKEN: SecretStr | None = None
    WEBEX_BASE_URL: str = Field(default="https://webexapis.com/v1", min_length=1)
    WEBEX_CALLING_LICENSE: str = Field(default="Webex Calling - Professional", min_length=1)
    LEDGER_DATABASE_URL: str = Field(default="sqlite:///ledger.db", min_length=1)
    LEDGER_OUTPUT_DIR: Path = Path("out")
    LEDGER_LOG_FILE: Path = Path("ledger.log")
    BATCH_SIZE: int = Field(default=500, ge=1, le=10_000)
    MAX_ROWS: int = Field(default=50_000, ge=1, le=10_000_000)
    MAX_BATCHES: int = Field(default=0, ge=0)
    MAX_RETRIES: int = Field(default=5, ge=0, le=20)
    REQUEST_TIMEOUT_S: float = Field(default=30.0, gt=0, le=600)
    LEDGER_CONCURRENCY: int = Field(default=DEFAULT_CONCURRENCY, ge=1, le=256)
    CIRCUIT_BREAKER_THRESHOLD: float = Field(default=0.8, gt=0, le=1)
    ENABLE_SAFE_COMPENSATION: bool = False
    # A service app's or integration's credentials, all three or none: with them `work` renews
    # an access token that expires mid-run. The client id names the app; the other two are
    # secrets like the token.
    WEBEX_CLIENT_ID: str | None = None
    WEBEX_CLIENT_SECRET: SecretStr | None = None
    WEBEX_REFRESH_TOKEN: SecretStr | None = None
    # Not in the term sheet: how long a claim on a row lasts without a heartbeat. A killed
    # worker's rows become claimable again after this; live workers renew every third of it.
    LEDGER_LEASE_S: float = Field(default=60.0, ge=1, le=3600)
    # The longest wait honoured from a Retry-After header, and the wait used when it is garbage.
    RETRY_AFTER_CAP_S: float = Field(default=60.0, gt=0, le=3600)
    RETRY_AFTER_DEFAULT_S: float = Field(default=5.0, gt=0, le=3600)
    # The first backoff wait of a retry; doubles each try, with jitter, up to the cap.
    RETRY_BACKOFF_S: float = Field(default=0.5, gt=0, le=60)
    # After a create whose outcome is unknown, how long a lookup miss is re-checked before
    # creating again (Webex may take a while to show a new person in the lookup by email).
    LOOKUP_SETTLE_S: float = Field(default=20.0, ge=0, le=600)
    # The shortest interval between two refreshes of the artifacts during `work` (0: after
    # every batch). Each one rewrites every file, so a 20,000-row run must not do it per batch.
    LEDGER_REFRESH_S: float = Field(default=15.0, ge=0, le=86_400)
    # The longest a `ledger sql` query may run (and wait for a lock) before it is stopped.
    LEDGER_SQL_TIMEOUT_S: float = Field(default=30.0, gt=0, le=86_400)

    @field_validator("LEDGER_LOG_FILE", mode="before")
    @classmethod
    def _named_file(cls, value: object) -> object:
        # An empty value would become Path("."), the working directory, which no log can open.
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty; give the log file's name")
        return value

    @field_validator("WEBEX_ACCESS_TOKEN", mode="before")
    @classmethod
    def _one_piece_secret(cls, value: object) -> object:
        # A token pasted across two lines would reach the Authorization header, and every error
        # message that quotes it, with its second half past the point where masking stops.
        # Surrounding whitespace is only the newline of `$(cat token-file)`: dropped.
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not isinstance(value, str):
            return value
        value = value.strip()
        if any(character.isspace() for character in value):
            raise ValueError("has whitespace inside it (a wrapped paste?); give it on one line")
        return value

    @field_validator(*REFRESH_VARIABLES, mode="before")
    @classmethod
    def _one_word_credential(cls, value: object) -> object:
        """Trimmed; blank means unset; whitespace inside is a copy-paste accident, not a value."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not isinstance(value, str):
            return value
        text = value.strip()
        if any(char.isspace() for char in text):
            raise PydanticCustomError("whitespace", "whitespace inside the value")
        return text or None

    @model_validator(mode="after")
    def _refresh_credentials_together(self) -> Self:
        given = {
            "WEBEX_CLIENT_ID": self.WEBEX_CLIENT_ID is not None,
            "WEBEX_CLIENT_SECRET": self.WEBEX_CLIENT_SECRET is not None,
            "WEBEX_REFRESH_TOKEN": self.WEBEX_REFRESH_TOKEN is not None,
        }
        missing = [name for name, present in given.items() if not present]
        if 0 < len(missing) < len(given):
            # Names only: a value given here may be a secret.
            raise PydanticCustomError(
                "refresh_credentials",
                "the token refresh needs {needed} together; missing: {missing}",
                {"needed": ", ".join(given), "missing": ", ".join(missing)},
            )
        return self


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings; raise ConfigError with one line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(part) for part in first["loc"]) or "configuration"
        raw = os.environ.get(name)
        secret = "TOKEN" in name or "SECRET" in name
        shown = "" if raw is None or secret else f" (got {raw!r})"
        reason = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"invalid {name}{shown}: {reason}") from None
