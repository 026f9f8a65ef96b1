"""The vocabulary every layer passes: the states of rows, steps and shared entities, and the
frozen records that carry a run, a claimed row, a step's outcome and a failure between layers.

The schema's CHECK constraints are built from these enums (`models`), so a state the code can
name is a state the database accepts, and nothing else. A `StrEnum` member is its own string:
it is stored as is and compares equal to what the database hands back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from ledger.error_handling import ReasonCode
from ledger.row_rules import LocationSpec, UserRow


class RowStatus(StrEnum):
    """Where a row stands. `claimed`: a worker holds it under a token and a lease."""

    READY = "ready"
    CLAIMED = "claimed"
    SUCCESS = "success"
    PENDING = "pending"
    REJECTED = "rejected"


TERMINAL_ROW_STATUSES = (RowStatus.SUCCESS, RowStatus.PENDING, RowStatus.REJECTED)


class StepName(StrEnum):
    """The steps of a row, in the order they run (SPEC section 4)."""

    LOCATION = "location"
    CALLING = "calling"
    NUMBER = "number"
    USER = "user"
    SETTINGS = "settings"


# Done once per location per run, by whichever row gets there first.
SHARED_STEPS = (StepName.LOCATION, StepName.CALLING)


class StepStatus(StrEnum):
    """A step's recorded state. `started`: its write was sent and its outcome is not known yet
    (a crash, a timeout): whoever works the row next must look up before writing again."""

    STARTED = "started"
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    FAILED = "failed"


SUCCESS_STEP_STATUSES = frozenset(
    {StepStatus.CREATED, StepStatus.UPDATED, StepStatus.UNCHANGED, StepStatus.SKIPPED}
)
# The statuses by which a step changed Webex (what makes a later failure `half_applied`).
CHANGED_STEP_STATUSES = frozenset({StepStatus.CREATED, StepStatus.UPDATED})


class EntityStatus(StrEnum):
    """A shared entity (a location). `new`: named by the file, not provisioned yet;
    `claimed`: a worker is provisioning it."""

    NEW = "new"
    CLAIMED = "claimed"
    READY = "ready"
    FAILED = "failed"


class EntityType(StrEnum):
    """What a step record's `entity_key` names."""

    LOCATION = "location"
    NUMBER = "number"
    USER = "user"
    SETTINGS = "settings"


class WorkEnd(StrEnum):
    """How a `work` session ended."""

    FINISHED = "finished"
    BREAKER = "breaker"
    STOPPED = "stopped"
    MAX_BATCHES = "max_batches"
    HELD_ELSEWHERE = "held_elsewhere"


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were written as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def iso(value: datetime, timespec: str = "auto") -> str:
    """ISO 8601 UTC with a `Z`: the one format of every timestamp `ledger` writes out."""
    if value.tzinfo is None:  # stored UTC, handed back naive by SQLite
        return value.isoformat(timespec=timespec) + "Z"
    return value.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def entity_of_step(step: str | None, email: str, location_name: str) -> tuple[EntityType, str]:
    """The entity (type, key) a failed step names where it recorded none of its own."""
    if step in SHARED_STEPS:
        return EntityType.LOCATION, location_name
    if step is None:
        return EntityType.USER, email
    return EntityType(step), email


@dataclass(frozen=True)
class RunInfo:
    """One ingested file, as stored."""

    id: int
    input_hash: str
    file_name: str
    pipeline_version: str
    started_at: datetime
    total_rows: int
    accepted_rows: int
    rejected_rows: int
    batch_size: int  # fixed each row's batch_id at ingest; `work` claims by it too
    headers: list[str]


@dataclass(frozen=True)
class StepState:
    """A step as an earlier attempt left it, handed to the worker that claims the row.

    `started_at`, for a `started` step only: when its create was last sent. Webex's lag before a
    new person shows up in lookups runs from then, not from when the row is claimed again.
    """

    status: StepStatus
    remote_id: str | None
    attempts: int
    started_at: datetime | None = None


@dataclass(frozen=True)
class ClaimedRow:
    """A row a worker holds: what it asks for and what earlier attempts already did."""

    pk: int
    run_id: int
    row_id: int
    batch_id: int
    claim_token: str
    user: UserRow
    steps: dict[StepName, StepState]

    def step_done(self, step: StepName) -> bool:
        state = self.steps.get(step)
        return state is not None and state.status in SUCCESS_STEP_STATUSES


@dataclass(frozen=True)
class StepOutcome:
    """What one step did (or, `started`/`failed`, is doing or could not do): what is recorded."""

    step: StepName
    status: StepStatus
    entity_type: EntityType
    entity_key: str
    http_status: int | None = None
    remote_id: str | None = None
    message: str | None = None
    tracking_id: str | None = None

    @property
    def changed(self) -> bool:
        return self.status in CHANGED_STEP_STATUSES


@dataclass(frozen=True)
class Failure:
    """Why a step, a row or a location could not complete: the one shape of a failure."""

    reason: ReasonCode
    message: str
    http_status: int | None
    step: StepName


@dataclass(frozen=True)
class EntityState:
    """A shared entity as a claim attempt found it. `token` is set when the caller holds it.

    `steps` holds what provisioning recorded for each shared step (location, calling), for the
    rows that reuse the entity; `failure` why it failed, on the step where it stopped.
    """

    id: int
    status: EntityStatus
    remote_id: str | None
    calling_enabled: bool
    desired: LocationSpec | None  # what the file asks for
    steps: dict[StepName, StepOutcome]
    by_row: int | None
    failure: Failure | None
    token: str | None
