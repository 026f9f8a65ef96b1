"""The settings step of a row: the calling settings the row names (voicemail, call waiting,
caller ID), read, compared and written only where they differ (registered in `actions_registry`).

For a person the user step created a moment ago (`RowContext.fresh_person`), a write that needs
no current value is sent without reading first, per the PUT bodies of the official files:
call waiting's PUT is `{enabled}` alone, and caller ID's needs only `selected` (a caller ID of
DIRECT_LINE is still read first for a row without a number, whose person Webex does not offer
it). Voicemail's PUT requires `notifications` and `transferToNumber`, whose current values a
write must send back: for a user created now they are what the first user this worker created
in that location showed (`new_user_defaults`); for any other person they are read.
"""

from __future__ import annotations

from ledger import action_helpers as helpers
from ledger.actions_common import JSON, Plan, StepPending, id_of
from ledger.actions_row import RowContext
from ledger.error_handling import ReasonCode, UnexpectedResponseError
from ledger.records import StepName, StepOutcome, StepStatus
from ledger.row_rules import UserRow

VOICEMAIL_PUT_KEYS = (
    "notifications",
    "transferToNumber",
    "enabled",
    "sendAllCalls",
    "sendBusyCalls",
    "sendUnansweredCalls",
    "emailCopyOfMessage",
    "messageStorage",
    "faxMessage",
)

# What the settings lookup saw, per endpoint the row names; None: not read (written blind).
SettingsObserved = dict[str, JSON | None]


def settings_applies(row: UserRow) -> bool:
    return row.names_settings()


def lookup_settings(ctx: RowContext, person_id: str) -> SettingsObserved:
    row = ctx.row
    fresh = ctx.fresh_person
    seen: SettingsObserved = {}
    if row.voicemail_enabled is not None or row.voicemail_rings is not None:
        seen["voicemail"] = _voicemail(ctx, person_id)
    if row.call_waiting_enabled is not None:
        seen["callWaiting"] = None if fresh else _read(ctx, person_id, "callWaiting")
    if row.caller_id is not None:
        offered = row.caller_id != "DIRECT_LINE" or row.phone_number is not None
        seen["callerId"] = None if fresh and offered else _read(ctx, person_id, "callerId")
    return seen


def _voicemail(ctx: RowContext, person_id: str) -> JSON:
    """The person's voicemail: for a user created now, what the first user this worker created
    in that location showed (`new_user_defaults`); otherwise (and for that first user) read."""
    defaults = ctx.new_user_defaults if ctx.fresh_person else None
    if defaults is not None:
        known = defaults.voicemail(ctx.location_id)
        if known is not None:
            return known
    seen = _read(ctx, person_id, "voicemail")
    if defaults is not None:
        defaults.learn_voicemail(ctx.location_id, seen)
    return seen


def _read(ctx: RowContext, person_id: str, feature: str) -> JSON:
    return _get_object(ctx, f"/people/{person_id}/features/{feature}")


def _get_object(ctx: RowContext, path: str) -> JSON:
    body = ctx.client.request("GET", path).body
    if body is None:
        raise UnexpectedResponseError(f"GET {path}: empty body", method="GET", path=path)
    return body


def decide_settings(ctx: RowContext, person_id: str, seen: SettingsObserved) -> Plan:
    writes: list[tuple[str, str, JSON]] = []
    voicemail = seen.get("voicemail")
    if voicemail is not None:
        change = helpers.voicemail_changes(ctx.row, voicemail)
        if change is not None:
            body = {key: value for key, value in change.items() if key in VOICEMAIL_PUT_KEYS}
            writes.append(("PUT", f"/people/{person_id}/features/voicemail", body))
    if "callWaiting" in seen:
        change = helpers.call_waiting_changes(ctx.row, seen["callWaiting"] or {})
        if change is not None:
            writes.append(("PUT", f"/people/{person_id}/features/callWaiting", change))
    if "callerId" in seen:
        current = seen["callerId"] or {}
        allowed = current.get("types")
        if isinstance(allowed, list) and ctx.row.caller_id not in allowed:
            return Plan(
                "pending",
                remote_id=person_id,
                reason=ReasonCode.BAD_REQUEST,
                message=f"caller ID {ctx.row.caller_id} is not allowed for this user "
                f"(allowed: {', '.join(map(str, allowed))})",
            )
        change = helpers.caller_id_changes(ctx.row, current)
        if change is not None:
            writes.append(("PUT", f"/people/{person_id}/features/callerId", change))
    if not writes:
        return Plan("unchanged", remote_id=person_id)
    return Plan("update", remote_id=person_id, writes=tuple(writes))


def apply_settings(ctx: RowContext, plan: Plan) -> StepOutcome:
    last_status: int | None = None
    tracking: str | None = None
    for method, path, body in plan.writes:
        response = ctx.client.request(method, path, json=body, ok=(200, 204))
        last_status, tracking = response.status_code, response.tracking_id
    status = StepStatus.UPDATED if plan.writes else StepStatus.UNCHANGED
    return ctx.outcome(
        StepName.SETTINGS, status, plan.remote_id, http_status=last_status, tracking_id=tracking
    )


def settings_lookup(ctx: RowContext) -> tuple[str, SettingsObserved]:
    """The settings step's lookup: the person's id, then the features the row names."""
    person_id = ctx.user_id
    if person_id is None:
        person = ctx.person()
        if person is None:
            raise StepPending(ReasonCode.NOT_FOUND, f"{ctx.row.email} was not found for settings")
        person_id = id_of(person)
    return person_id, lookup_settings(ctx, person_id)


def settings_decide(ctx: RowContext, seen: tuple[str, SettingsObserved]) -> Plan:
    return decide_settings(ctx, seen[0], seen[1])
