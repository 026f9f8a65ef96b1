"""The steps of a row, declared as data (SPEC section 4), and every call `work` makes to Webex.

A row runs the shared steps first (`SHARED_STEPS`: its location and the location's calling,
done once per location per run, `actions_shared`), then its own steps (`ROW_STEPS`: number,
user, settings, `actions_row`). Every per-row step is a `StepSpec`: whether it applies to a
row, a `lookup` that only reads Webex, a pure `decide` that turns what the lookup saw into a
`Plan` (create, update, unchanged, or pending with a reason), and an `apply` that performs the
plan's one write, checks its success condition and returns the `StepOutcome` to record (each
context knows its step's entity type and key). `ledger plan` can run lookup + decide alone;
`work` runs all three.

Creates are where duplicates come from, so a create is always preceded by a lookup, including
when an earlier try's outcome is unknown: the step is recorded `started` (committed) before the
POST, and a lookup that misses after such a try is re-checked for a while, because Webex can
take time to show a new person in the lookup by email (`actions_common.create_once`). What such
a lookup finds goes through the step's own decide like any lookup's find: a person Webex created
without its calling part is completed by an update, never recorded as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ledger.actions_common import JSON, Plan, StepPending, failure_of
from ledger.actions_row import (
    RowContext,
    apply_number,
    apply_user,
    decide_number,
    decide_user,
    delete_person,
    extension_taken,
    holds_license,
    lookup_number,
    lookup_user,
    number_applies,
)
from ledger.actions_settings import (
    apply_settings,
    settings_applies,
    settings_decide,
    settings_lookup,
)
from ledger.actions_shared import (
    LocationContext,
    find_license,
    provision_calling,
    provision_location,
)
from ledger.records import SHARED_STEPS, StepName, StepOutcome
from ledger.row_rules import UserRow

__all__ = [
    "JSON",
    "ROW_STEPS",
    "SHARED_STEPS",
    "LocationContext",
    "Plan",
    "RowContext",
    "StepPending",
    "StepSpec",
    "blocked_before_writes",
    "delete_person",
    "failure_of",
    "find_license",
    "holds_license",
    "provision_calling",
    "provision_location",
    "steps_for",
]


@dataclass(frozen=True)
class StepSpec:
    """A per-row step, as data. `lookup` only reads; `decide` is pure; `apply` writes.

    Every step is looked up and decided before the row's first write, so that a row blocked
    for a reason a lookup can see changes nothing, except a step whose lookup reads what an
    earlier step writes (`reads_after`): it is decided before the first write only when that
    step writes nothing, else when its turn comes.
    """

    name: StepName
    applies: Callable[[UserRow], bool]
    lookup: Callable[[RowContext], Any]
    decide: Callable[[RowContext, Any], Plan]
    apply: Callable[[RowContext, Plan], StepOutcome]
    reads_after: StepName | None = None


def _always(_row: UserRow) -> bool:
    return True


ROW_STEPS: tuple[StepSpec, ...] = (
    StepSpec(StepName.NUMBER, number_applies, lookup_number, decide_number, apply_number),
    StepSpec(StepName.USER, _always, lookup_user, decide_user, apply_user),
    # The settings of a person the user step creates or updates (a calling user only then)
    # can only be read once it has.
    StepSpec(
        StepName.SETTINGS,
        settings_applies,
        settings_lookup,
        settings_decide,
        apply_settings,
        reads_after=StepName.USER,
    ),
)


def blocked_before_writes(ctx: RowContext, plans: Mapping[StepName, Plan]) -> Plan | None:
    """A pending plan for what the steps' own lookups do not see but a write before the user's
    would expose: the row's extension held by someone else in the location, when the row's
    number must be added first (else the user's own create or update finds out, first)."""
    number, user = plans.get(StepName.NUMBER), plans.get(StepName.USER)
    if number is None or number.action != "create":
        return None
    if user is None or user.action not in ("create", "update"):
        return None
    return extension_taken(ctx, ctx.person(settle_s=ctx.settle_for(StepName.USER)))


def steps_for(row: UserRow) -> list[StepName]:
    """The steps a row needs, in order: what `success` requires."""
    return [*SHARED_STEPS, *(spec.name for spec in ROW_STEPS if spec.applies(row))]
