"""Fault injection: the failures a long provisioning run meets against the real Webex API.

`FaultConfig` is frozen and validated, so a running simulator only ever swaps one whole valid
configuration for another (at start, through `PUT /_sim/faults`, or `Simulator.set_faults`).
`FaultInjector` draws every random decision from one `random.Random(seed)`: a failing test can
be replayed by giving the same seed and the same request sequence.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Probability = Annotated[float, Field(ge=0.0, le=1.0)]

# A Retry-After value really seen from Webex: not a number, not a date. Clients must cope.
GARBAGE_RETRY_AFTER = "rand(30),add(30)"


class FaultConfig(BaseModel):
    """Which faults to inject, and how often. The defaults inject nothing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(default=0, description="Seed of every random decision (replayable runs).")
    latency_ms: float = Field(default=0.0, ge=0, le=60_000, description="Added to every answer.")
    latency_jitter_ms: float = Field(
        default=0.0, ge=0, le=60_000, description="Uniform random extra latency, 0..this."
    )
    rate_limit_rps: float = Field(
        default=0.0, ge=0, le=100_000, description="Requests/s over all /v1 calls; 0 = no limit."
    )
    rate_limit_burst: float = Field(
        default=0.0, ge=0, le=100_000, description="Token bucket size; 0 = one second's worth."
    )
    retry_after_garbage_rate: Probability = Field(
        default=0.0, description="Share of 429 answers whose Retry-After is unparseable."
    )
    error_rate: Probability = Field(
        default=0.0, description="Requests answered 500/502/503/504 without being applied."
    )
    hang_rate: Probability = Field(
        default=0.0, description="Requests that get no answer for hang_s (past client timeout)."
    )
    hang_s: float = Field(default=35.0, gt=0, le=3_600, description="How long a hang lasts.")
    write_error_rate: Probability = Field(
        default=0.0, description="Successful writes applied, then answered with a 5xx."
    )
    write_drop_rate: Probability = Field(
        default=0.0, description="Successful writes applied, then the connection is dropped."
    )
    people_create_400_rate: Probability = Field(
        default=0.0, description="POST /people that create the person yet answer 400."
    )
    people_create_400_without_calling_share: Probability = Field(
        default=0.0,
        description=(
            "Share of those '400 but created' answers whose person is created without its "
            "calling part: no location, extension, phone number or calling license (other "
            "licenses kept). A PUT /people/{id}?callingData=true with them makes it a calling "
            "user; until then its calling settings answer 404."
        ),
    )
    lookup_delay_s: float = Field(
        default=0.0, ge=0, le=3_600, description="Delay before a new person shows in ?email=."
    )
    auth_failure: Literal[401, 403] | None = Field(
        default=None, description="Answer every /v1 request with this status."
    )
    token_ttl_s: float = Field(
        default=0.0,
        ge=0,
        le=30 * 24 * 3600,
        description=(
            "A bearer token is refused with 401 this many seconds after the simulator first "
            "saw or issued it; 0 = tokens never expire."
        ),
    )
    token_refresh_faults: bool = Field(
        default=False,
        description=(
            "Let the rate limit, hangs and random 5xx reach POST /v1/access_token too; "
            "by default only latency does."
        ),
    )


PROFILES: dict[str, FaultConfig] = {
    "none": FaultConfig(),
    "mild": FaultConfig(
        latency_ms=20,
        latency_jitter_ms=20,
        rate_limit_rps=300,
        retry_after_garbage_rate=0.1,
        error_rate=0.01,
        hang_rate=0.001,
        write_error_rate=0.005,
        write_drop_rate=0.005,
        people_create_400_rate=0.01,
        lookup_delay_s=2,
    ),
    "chaos": FaultConfig(
        latency_ms=50,
        latency_jitter_ms=100,
        rate_limit_rps=50,
        retry_after_garbage_rate=0.3,
        error_rate=0.05,
        hang_rate=0.01,
        write_error_rate=0.03,
        write_drop_rate=0.03,
        people_create_400_rate=0.05,
        people_create_400_without_calling_share=0.5,
        lookup_delay_s=10,
    ),
}


class FaultInjector:
    """Draws fault decisions and keeps the rate limiter's token bucket.

    Not thread-safe on its own: the Simulator calls it under its one lock.
    """

    def __init__(self, config: FaultConfig, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._config = config
        self._rng = random.Random(config.seed)
        self._tokens = self._bucket_size()
        self._refilled_at = clock()

    @property
    def config(self) -> FaultConfig:
        """The configuration in force."""
        return self._config

    def reconfigure(self, config: FaultConfig) -> None:
        """Swap the configuration; a new seed restarts the random draws, a new rate the bucket."""
        old = self._config
        self._config = config
        if config.seed != old.seed:
            self._rng = random.Random(config.seed)
        if (config.rate_limit_rps, config.rate_limit_burst) != (
            old.rate_limit_rps,
            old.rate_limit_burst,
        ):
            self._tokens = self._bucket_size()
            self._refilled_at = self._clock()

    def reset(self) -> None:
        """Back to the start of the seeded sequence with a full bucket."""
        self._rng = random.Random(self._config.seed)
        self._tokens = self._bucket_size()
        self._refilled_at = self._clock()

    def chance(self, probability: float) -> bool:
        """True with the given probability; draws nothing when it is 0, to keep replays stable."""
        return probability > 0 and self._rng.random() < probability

    def latency_s(self) -> float:
        """The delay to add to this answer, in seconds."""
        config = self._config
        jitter = self._rng.uniform(0, config.latency_jitter_ms) if config.latency_jitter_ms else 0
        return (config.latency_ms + jitter) / 1000.0

    def take_token(self) -> float | None:
        """Spend one request token: None if allowed, else the seconds until one is available."""
        rate = self._config.rate_limit_rps
        if rate <= 0:
            return None
        now = self._clock()
        size = self._bucket_size()
        self._tokens = min(size, self._tokens + (now - self._refilled_at) * rate)
        self._refilled_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / rate

    def retry_after(self, wait_s: float) -> str:
        """The Retry-After value for a 429: whole seconds, or now and then garbage."""
        if self.chance(self._config.retry_after_garbage_rate):
            return GARBAGE_RETRY_AFTER
        return str(max(1, math.ceil(wait_s)))

    def server_error_status(self) -> int:
        """Which 5xx to answer with."""
        return self._rng.choice((500, 502, 503, 504))

    def _bucket_size(self) -> float:
        config = self._config
        return config.rate_limit_burst or max(1.0, config.rate_limit_rps)
