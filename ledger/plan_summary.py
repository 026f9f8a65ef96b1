"""The counts of a plan: users to create, update, leave unchanged, or blocked; actions per step;
rows per blocker; and the org-level checks (locations, license units, numbers to add). Built
row by row as the plan goes; what `ledger plan` prints (its headline and check lines are
written here, plain text), records and gives as JSON.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from ledger.error_handling import ReasonCode
from ledger.plan_diff import CHANGING_ACTIONS, PlanAction, PlannedStep, PlanOutcome
from ledger.records import StepName


@dataclass(frozen=True)
class Blocker:
    """Rows blocked for one reason, and the first of them as an example."""

    rows: int
    example_row_id: int
    example_message: str


@dataclass(frozen=True)
class LicenseCheck:
    """The calling license against the users the plan would license."""

    name: str
    units_left: int | None  # None: Webex does not count this license's units
    users_to_license: int

    @property
    def short(self) -> int:
        if self.units_left is None:
            return 0
        return max(0, self.users_to_license - self.units_left)


@dataclass(frozen=True)
class LocationCounts:
    """The locations the plan's rows name, by what `work` would do to them."""

    to_create: int
    to_update: int
    to_enable_calling: int
    undefined: int


@dataclass
class PlanTally:
    """The counts of a plan, added to row by row (`add_row`) and location by location."""

    users: Counter[str] = field(default_factory=Counter)
    steps: dict[str, Counter[str]] = field(default_factory=dict)
    blockers: dict[str, Blocker] = field(default_factory=dict)
    locations: Counter[str] = field(default_factory=Counter)
    locations_to_create: list[str] = field(default_factory=list)
    numbers_to_add: int = 0
    number_locations: set[str] = field(default_factory=set)
    rows: int = 0

    def add_row(self, row_id: int, location_name: str, steps: Iterable[PlannedStep]) -> None:
        """One row's planned steps (in step order; a blocked row's last step is the block)."""
        self.rows += 1
        user = PlanAction.UNCHANGED
        for planned in steps:
            self.steps.setdefault(planned.step, Counter())[planned.action] += 1
            if planned.action == PlanAction.BLOCKED:
                user = PlanAction.BLOCKED
                self._block(planned.reason or ReasonCode.CONFLICT, row_id, planned.message)
            elif planned.step == StepName.USER:
                user = planned.action
            if planned.step == StepName.NUMBER and planned.action == PlanAction.CREATE:
                self.numbers_to_add += 1
                self.number_locations.add(location_name)
        self.users[user] += 1

    def _block(self, reason: str, row_id: int, message: str | None) -> None:
        known = self.blockers.get(reason)
        if known is None:
            self.blockers[reason] = Blocker(1, row_id, message or "")
        else:
            self.blockers[reason] = Blocker(
                known.rows + 1, known.example_row_id, known.example_message
            )

    def add_location(
        self, name: str, location: PlanAction, calling: PlanAction, failure: str | None
    ) -> None:
        """One location the plan's rows name: what its steps would do, or why it cannot be."""
        if failure is not None:
            self.locations[f"blocked:{failure}"] += 1
            return
        self.locations[f"location:{location}"] += 1
        self.locations[f"calling:{calling}"] += 1
        if location == PlanAction.CREATE:
            self.locations_to_create.append(name)

    def location_counts(self) -> LocationCounts:
        locations = self.locations
        return LocationCounts(
            to_create=locations[f"location:{PlanAction.CREATE}"],
            to_update=locations[f"location:{PlanAction.UPDATE}"],
            to_enable_calling=locations[f"calling:{PlanAction.CREATE}"],
            undefined=locations[f"blocked:{ReasonCode.LOCATION_UNDEFINED}"],
        )

    @property
    def blocked_rows(self) -> int:
        return self.users[PlanAction.BLOCKED]

    @property
    def has_changes(self) -> bool:
        return any(
            counts.get(action, 0) for counts in self.steps.values() for action in CHANGING_ACTIONS
        )

    def outcome(self) -> PlanOutcome:
        if self.blocked_rows:
            return PlanOutcome.BLOCKED
        if self.has_changes:
            return PlanOutcome.CHANGES_PENDING
        return PlanOutcome.NOTHING_TO_DO


@dataclass(frozen=True)
class PlanSummary:
    """What a finished (or stopped) plan found, for people and for machines."""

    run_id: int
    outcome: PlanOutcome
    tally: PlanTally
    license: LicenseCheck | None

    def headline(self) -> str:
        """`Plan: 1,204 users to create, 310 to update, 19,486 unchanged, 42 blocked; 3
        locations to create` (and locations to update or enable for calling, numbers to add,
        where there are any)."""
        tally = self.tally
        if tally.rows == 0:
            return f"Plan: no ready rows in run {self.run_id}: nothing to do"
        users = tally.users
        line = (
            f"Plan: {_count(users[PlanAction.CREATE], 'user')} to create, "
            f"{users[PlanAction.UPDATE]:,} to update, {users[PlanAction.UNCHANGED]:,} "
            f"unchanged, {users[PlanAction.BLOCKED]:,} blocked; "
        )
        locations = tally.location_counts()
        line += f"{_count(locations.to_create, 'location')} to create"
        if locations.to_update:
            line += f", {locations.to_update:,} to update"
        if locations.to_enable_calling:
            line += f", {locations.to_enable_calling:,} to enable for calling"
        if tally.numbers_to_add:
            line += f"; {_count(tally.numbers_to_add, 'number')} to add"
        return line

    def org_checks(self) -> list[str]:
        """The org-level checks, a line each: the license, the locations, the numbers."""
        tally = self.tally
        lines = []
        check = self.license
        if check is not None:
            left = "not counted" if check.units_left is None else f"{check.units_left:,} left"
            verdict = f"{check.short:,} short" if check.short else "enough"
            lines.append(
                f"license    {check.name!r}: {check.users_to_license:,} user(s) to license, "
                f"units {left}: {verdict}"
            )
        locations = tally.location_counts()
        line = (
            f"locations  {locations.to_create:,} to create, {locations.to_update:,} to update, "
            f"{locations.to_enable_calling:,} to enable for calling"
        )
        if locations.undefined:
            line += f", {locations.undefined:,} undefined (no row gives its values)"
        lines.append(line)
        lines.append(
            f"numbers    {tally.numbers_to_add:,} to add to the inventories of "
            f"{_count(len(tally.number_locations), 'location')}"
        )
        return lines

    def as_dict(self) -> dict[str, object]:
        tally = self.tally
        locations = tally.location_counts()
        return {
            "run_id": self.run_id,
            "outcome": str(self.outcome),
            "rows": tally.rows,
            "users": {action: tally.users.get(action, 0) for action in PlanAction},
            "steps": {
                step: {action: counts.get(action, 0) for action in PlanAction}
                for step in StepName
                if (counts := tally.steps.get(step)) is not None
            },
            "blocked": {
                reason: {
                    "rows": blocker.rows,
                    "example_row_id": blocker.example_row_id,
                    "example_message": blocker.example_message,
                }
                for reason, blocker in sorted(tally.blockers.items())
            },
            "locations": {
                "to_create": locations.to_create,
                "to_update": locations.to_update,
                "to_enable_calling": locations.to_enable_calling,
                "undefined": locations.undefined,
                "names_to_create": sorted(tally.locations_to_create),
            },
            "license": None
            if self.license is None
            else {
                "name": self.license.name,
                "units_left": self.license.units_left,
                "users_to_license": self.license.users_to_license,
                "short": self.license.short,
            },
            "numbers": {
                "to_add": tally.numbers_to_add,
                "locations": len(tally.number_locations),
            },
        }


def _count(number: int, singular: str) -> str:
    return f"{number:,} {singular if number == 1 else singular + 's'}"
