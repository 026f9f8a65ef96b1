"""The per-row steps: number, user and settings, each a lookup that only reads, a pure decide,
and an apply that performs the plan's one write (registered in `actions_registry`).

Also the one write that undoes a step: deleting a user this run created (compensation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ledger import action_helpers as helpers
from ledger.actions_common import JSON, Plan, StepPending, create_once, id_of
from ledger.connection_client import WebexClient
from ledger.error_handling import ReasonCode, UnexpectedResponseError
from ledger.records import EntityType, StepName, StepOutcome, StepStatus
from ledger.row_rules import UserRow

PEOPLE_PARAMS = {"callingData": "true"}
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


@dataclass
class RowContext:
    """One row being worked: the client, the ids it depends on, and lookups memoised per row."""

    client: WebexClient
    row: UserRow
    location_id: str
    license_id: str
    settle_s: float
    max_attempts: int
    # Called with the `started` outcome just before a create is sent: the ledger records it.
    mark_started: Callable[[StepOutcome], None]
    # Steps an earlier try left `started`: their lookups must allow for Webex's lag.
    unknown_outcome: frozenset[StepName] = frozenset()
    # The person id the ledger recorded when the user step succeeded in an earlier session:
    # the truth for that row, even while the lookup by email does not show the person yet.
    user_id: str | None = None
    _person: JSON | None = None
    _person_known: bool = False
    observed: dict[str, JSON | None] = field(default_factory=dict)

    def person(self, *, settle: bool = False) -> JSON | None:
        """The person with the row's email, looked up once per row (again when settling)."""
        if self._person_known and (self._person is not None or not settle):
            return self._person
        self._person = find_person(
            self.client, self.row.email, settle_s=self.settle_s if settle else 0
        )
        self._person_known = True
        return self._person

    def forget_person(self) -> None:
        self._person_known = False
        self._person = None

    def remember_person(self, person: JSON) -> None:
        """The person this row's user step created: what the next steps look at."""
        self._person = person
        self._person_known = True

    def outcome(
        self,
        step: StepName,
        status: StepStatus,
        remote_id: str | None = None,
        *,
        http_status: int | None = None,
        tracking_id: str | None = None,
    ) -> StepOutcome:
        """What a step did for this row, recorded against the entity it names: the number in
        its location for the number step, the user (by email) for the others."""
        if step == StepName.NUMBER:
            entity_key = f"{self.location_id}:{self.row.phone_number}"
        else:
            entity_key = self.row.email
        return StepOutcome(
            step,
            status,
            EntityType(step),
            entity_key,
            http_status=http_status,
            remote_id=remote_id,
            tracking_id=tracking_id,
        )


def find_person(client: WebexClient, email: str, *, settle_s: float = 0) -> JSON | None:
    """GET /people?email=; with `settle_s`, a miss is re-checked with backoff for that long."""
    waited = 0.0
    for attempt in range(1, 64):
        response = client.request("GET", "/people", params={"email": email, **PEOPLE_PARAMS})
        items = response.require_list("items")
        for item in items:
            emails = [str(e).lower() for e in item.get("emails") or []]
            if email in emails:
                if not isinstance(item.get("id"), str):
                    raise UnexpectedResponseError("a person without an id", method="GET")
                return item
        if waited >= settle_s:
            return None
        waited += client.backoff_wait(attempt, min(2.0 ** (attempt - 1) * 0.5, settle_s - waited))
    return None


# --- number ----------------------------------------------------------------------------------


def number_applies(row: UserRow) -> bool:
    return row.phone_number is not None


def lookup_number(ctx: RowContext) -> JSON | None:
    phone = ctx.row.phone_number
    # The user step looks the person up anyway (memoised per row): a person who already has
    # this number in this location proves it is in the inventory and theirs, so a re-run
    # spends no request on the number.
    person = ctx.person(settle=StepName.USER in ctx.unknown_outcome)
    if person is not None and helpers.person_has_number(person, phone or "", ctx.location_id):
        own = helpers.number_entry_of(person, phone or "", ctx.location_id)
        ctx.observed["number"] = own
        return own
    response = ctx.client.request("GET", "/telephony/config/numbers", params={"phoneNumber": phone})
    entry = helpers.number_entry(response.require_list("phoneNumbers"), phone or "")
    ctx.observed["number"] = entry
    return entry


def decide_number(ctx: RowContext, entry: JSON | None) -> Plan:
    phone = ctx.row.phone_number or ""
    if entry is None:
        return Plan("create", body={"phoneNumbers": [phone], "state": "ACTIVE"})
    where = helpers.number_location_id(entry)
    if where is not None and where != ctx.location_id:
        return Plan(
            "pending",
            reason=ReasonCode.NUMBER_IN_USE,
            message=f"{phone} belongs to another location",
        )
    owner = helpers.number_owner_id(entry)
    if owner is not None:
        person = ctx.person(settle=bool(ctx.unknown_outcome))
        if person is None or person.get("id") != owner:
            return Plan(
                "pending",
                reason=ReasonCode.NUMBER_IN_USE,
                message=f"{phone} is assigned to someone else",
            )
    return Plan("unchanged", remote_id=phone)


def apply_number(ctx: RowContext, plan: Plan) -> StepOutcome:
    if plan.action != "create" or plan.body is None:
        return ctx.outcome(StepName.NUMBER, StepStatus.UNCHANGED, plan.remote_id)
    # Adding a number that is already there is ignored by Webex: safe to resend.
    response = ctx.client.request(
        "POST",
        f"/telephony/config/locations/{ctx.location_id}/numbers",
        json=plan.body,
        ok=(200, 201, 204),
        safe_to_retry=True,
    )
    return ctx.outcome(
        StepName.NUMBER,
        StepStatus.CREATED,
        ctx.row.phone_number,
        http_status=response.status_code,
        tracking_id=response.tracking_id,
    )


# --- user ------------------------------------------------------------------------------------


def lookup_user(ctx: RowContext) -> JSON | None:
    return ctx.person(settle=StepName.USER in ctx.unknown_outcome)


def decide_user(ctx: RowContext, person: JSON | None) -> Plan:
    if person is None:
        return Plan(
            "create", body=helpers.person_create_body(ctx.row, ctx.location_id, ctx.license_id)
        )
    person_id = id_of(person)
    if helpers.needs_location_move(person, ctx.location_id):
        return Plan(
            "pending",
            remote_id=person_id,
            reason=ReasonCode.LOCATION_MOVE_REQUIRED,
            message=f"{ctx.row.email} is a calling user in another location",
        )
    changes = helpers.person_changes(ctx.row, ctx.location_id, ctx.license_id, person)
    if changes is None:
        return Plan("unchanged", remote_id=person_id)
    return Plan("update", remote_id=person_id, body=changes)


def apply_user(ctx: RowContext, plan: Plan) -> StepOutcome:
    if plan.action == "update" and plan.remote_id and plan.body is not None:
        response = ctx.client.request(
            "PUT", f"/people/{plan.remote_id}", params=PEOPLE_PARAMS, json=plan.body
        )
        return ctx.outcome(
            StepName.USER,
            StepStatus.UPDATED,
            plan.remote_id,
            http_status=response.status_code,
            tracking_id=response.tracking_id,
        )
    if plan.action != "create" or plan.body is None:
        return ctx.outcome(StepName.USER, StepStatus.UNCHANGED, plan.remote_id)
    body = plan.body

    def send() -> StepOutcome:
        response = ctx.client.request("POST", "/people", params=PEOPLE_PARAMS, json=body)
        return ctx.outcome(
            StepName.USER,
            StepStatus.CREATED,
            response.require_str("id"),
            http_status=response.status_code,
            tracking_id=response.tracking_id,
        )

    def find() -> str | None:
        ctx.forget_person()
        person = ctx.person(settle=True)
        return None if person is None else id_of(person)

    started = ctx.outcome(StepName.USER, StepStatus.STARTED)
    created = create_once(
        ctx.client, started, ctx.mark_started, send, find, ctx.max_attempts, ctx.settle_s
    )
    ctx.remember_person({"id": created.remote_id, **body})
    return created


# --- settings --------------------------------------------------------------------------------


def settings_applies(row: UserRow) -> bool:
    return row.names_settings()


SettingsObserved = dict[str, JSON]


def lookup_settings(ctx: RowContext, person_id: str) -> SettingsObserved:
    row = ctx.row
    seen: SettingsObserved = {}
    if row.voicemail_enabled is not None or row.voicemail_rings is not None:
        seen["voicemail"] = _get_object(ctx, f"/people/{person_id}/features/voicemail")
    if row.call_waiting_enabled is not None:
        seen["callWaiting"] = _get_object(ctx, f"/people/{person_id}/features/callWaiting")
    if row.caller_id is not None:
        seen["callerId"] = _get_object(ctx, f"/people/{person_id}/features/callerId")
    return seen


def _get_object(ctx: RowContext, path: str) -> JSON:
    body = ctx.client.request("GET", path).body
    if body is None:
        raise UnexpectedResponseError(f"GET {path}: empty body", method="GET", path=path)
    return body


def decide_settings(ctx: RowContext, person_id: str, seen: SettingsObserved) -> Plan:
    writes: list[tuple[str, str, JSON]] = []
    if "voicemail" in seen:
        change = helpers.voicemail_changes(ctx.row, seen["voicemail"])
        if change is not None:
            body = {key: value for key, value in change.items() if key in VOICEMAIL_PUT_KEYS}
            writes.append(("PUT", f"/people/{person_id}/features/voicemail", body))
    if "callWaiting" in seen:
        change = helpers.call_waiting_changes(ctx.row, seen["callWaiting"])
        if change is not None:
            writes.append(("PUT", f"/people/{person_id}/features/callWaiting", change))
    if "callerId" in seen:
        current = seen["callerId"]
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


# --- the license, compensation ---------------------------------------------------------------


def holds_license(person: JSON | None, license_id: str) -> bool:
    """Whether a looked-up person already holds the license (and so needs no new unit)."""
    licenses = person.get("licenses") if person is not None else None
    return isinstance(licenses, list) and license_id in licenses


def delete_person(client: WebexClient, person_id: str) -> None:
    """Delete a user this run created (compensation); one already gone counts as deleted."""
    client.request("DELETE", f"/people/{person_id}", ok=(200, 204, 404))
