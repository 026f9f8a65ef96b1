"""What a plan says about one step of one row, field by field: pure, no I/O.

A step's plan is one of four actions (`PlanAction`): `create`, `update`, `unchanged`, or
`blocked` with the reason code `work` would record. A create lists every field it would send
(before: empty); an update only the fields whose value would change (before → after); a value
only Webex can give (the id of something not created yet) reads `(known after apply)`. Values
are shown as text: strings as they are, booleans as `true`/`false`, lists and objects as compact
JSON; nested objects are flattened into dotted names (`address.city`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ledger.error_handling import ReasonCode
from ledger.records import StepName
from ledger.row_rules import UserRow

AFTER_APPLY = "(known after apply)"
PLAN_COLUMNS = ("row_id", "step", "action", "field", "before", "after", "reason_code", "message")


class PlanAction(StrEnum):
    """What `work` would do to a step of a row."""

    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    BLOCKED = "blocked"


CHANGING_ACTIONS = frozenset({PlanAction.CREATE, PlanAction.UPDATE})


class PlanOutcome(StrEnum):
    """How a plan ended: `incomplete` until it went through every ready row (a plan stopped by
    an interrupt, the circuit breaker or a crash stays so), then what it found."""

    INCOMPLETE = "incomplete"
    NOTHING_TO_DO = "nothing_to_do"
    CHANGES_PENDING = "changes_pending"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class FieldChange:
    """One field a step would write: its value now (`before`) and after `work`."""

    field: str
    before: str
    after: str


@dataclass(frozen=True)
class PlannedStep:
    """What `work` would do to one step of one row."""

    row_pk: int
    row_id: int
    step: StepName
    action: PlanAction
    changes: tuple[FieldChange, ...] = ()
    reason: ReasonCode | None = None
    message: str | None = None

    def lines(self) -> Iterator[tuple[str | None, str | None, str | None]]:
        """(field, before, after) of each line: one per field, or one without a field."""
        if not self.changes:
            yield None, None, None
        for change in self.changes:
            yield change.field, change.before, change.after


def shown(value: object) -> str:
    """A value as the plan shows it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def flattened(value: Mapping[str, Any], prefix: str = "") -> dict[str, object]:
    """Nested objects as dotted names; lists and scalars as they are."""
    flat: dict[str, object] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            flat |= flattened(item, f"{name}.")
        else:
            flat[name] = item
    return flat


def created(body: Mapping[str, Any], *, prefix: str = "") -> tuple[FieldChange, ...]:
    """Every field a create sends, then its id, known only once Webex made it."""
    fields = [
        FieldChange(name, "", shown(value)) for name, value in flattened(body, prefix).items()
    ]
    return (*fields, FieldChange(f"{prefix}id", "", AFTER_APPLY))


def changed(
    remote: Mapping[str, Any] | None, body: Mapping[str, Any], *, prefix: str = ""
) -> tuple[FieldChange, ...]:
    """The fields of an update's `body` whose value differs from `remote`'s (before → after).

    A field the body sends as it already is (a PUT sends the whole object back) is left out.
    """
    now = flattened(remote or {}, prefix)
    return tuple(
        FieldChange(name, shown(now.get(name)), shown(value))
        for name, value in flattened(body, prefix).items()
        if now.get(name) != value
    )


def settings_after_apply(row: UserRow) -> tuple[FieldChange, ...]:
    """The settings a row names, for a user whose settings can only be read once the user step
    has written (a user about to be created or completed): their values now are not known."""
    named: list[tuple[str, object]] = [
        ("voicemail.enabled", row.voicemail_enabled),
        ("voicemail.sendUnansweredCalls.numberOfRings", row.voicemail_rings),
        ("callWaiting.enabled", row.call_waiting_enabled),
        ("callerId.selected", row.caller_id),
    ]
    return tuple(
        FieldChange(name, AFTER_APPLY, shown(value)) for name, value in named if value is not None
    )
