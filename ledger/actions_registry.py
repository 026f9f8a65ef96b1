"""The steps of a row, declared as data (SPEC section 4).

Every step is a `StepSpec`: whether it applies to a row, its entity key, a `lookup` that only
reads Webex, a pure `decide` that turns what the lookup saw into a `Plan` (create, update,
unchanged, or pending with a reason), and an `apply` that performs the plan's one write and
checks its success condition. `ledger plan` can run lookup + decide alone; `work` runs all three.

Creates are where duplicates come from, so a create is always preceded by a lookup, including
when an earlier try's outcome is unknown: the step is recorded `started` (committed) before the
POST, and a lookup that misses after such a try is re-checked for a while, because Webex can
take time to show a new person in the lookup by email.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ledger import action_helpers as helpers
from ledger.connection_client import WebexClient
from ledger.data_pipeline import LocationSpec, UserRow
from ledger.error_handling import (
    WEBEX_EXTENSION_UNAVAILABLE,
    WEBEX_LOCATION_NOT_CALLING,
    HTTPStatusError,
    ReasonCode,
    RetryableError,
    RetryExhaustedError,
    UnexpectedResponseError,
)
from ledger.records import SHARED_STEPS, EntityType, StepName, StepStatus

JSON = dict[str, Any]
Action = Literal["create", "update", "unchanged", "pending"]
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


@dataclass(frozen=True)
class Plan:
    """What a step would do, from what its lookup saw."""

    action: Action
    remote_id: str | None = None
    body: JSON | None = None
    reason: ReasonCode | None = None
    message: str | None = None
    writes: tuple[tuple[str, str, JSON], ...] = ()  # settings: (method, path, body) each


@dataclass(frozen=True)
class Applied:
    """What a step did: `status` is created / updated / unchanged."""

    status: StepStatus
    remote_id: str | None
    http_status: int | None = None
    tracking_id: str | None = None
    message: str | None = None


class StepPending(Exception):
    """A step cannot complete for a reason that is not an HTTP error (pending with `reason`)."""

    def __init__(self, reason: ReasonCode, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.http_status = http_status


@dataclass
class RowContext:
    """One row being worked: the client, the ids it depends on, and lookups memoised per row."""

    client: WebexClient
    row: UserRow
    location_id: str
    license_id: str
    settle_s: float
    max_attempts: int
    # Called with the step name just before a create is sent: the ledger records `started`.
    mark_started: Callable[[str], None]
    # Steps an earlier try left `started`: their lookups must allow for Webex's lag.
    unknown_outcome: frozenset[str] = frozenset()
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


# --- location and calling (shared per run) ---------------------------------------------------


@dataclass
class LocationContext:
    client: WebexClient
    spec: LocationSpec
    settle_s: float
    max_attempts: int
    mark_started: Callable[[str], None]
    unknown_outcome: frozenset[str] = frozenset()


def lookup_location(ctx: LocationContext) -> JSON | None:
    items = list(
        ctx.client.paginate(
            "/locations", params={"name": ctx.spec.name, "max": 100}, items_key="items"
        )
    )
    return helpers.exact_location(items, ctx.spec.name)


def decide_location(ctx: LocationContext, remote: JSON | None) -> Plan:
    if remote is None:
        missing = ctx.spec.missing_to_create()
        if missing:
            return Plan(
                "pending",
                reason=ReasonCode.LOCATION_UNDEFINED,
                message=f"location {ctx.spec.name!r} does not exist and no row gives its "
                f"{', '.join(missing)}",
            )
        return Plan("create", body=helpers.location_create_body(ctx.spec))
    remote_id = _id_of(remote)
    changes = helpers.location_changes(ctx.spec, remote)
    if changes is None:
        return Plan("unchanged", remote_id=remote_id)
    return Plan("update", remote_id=remote_id, body=changes)


def apply_location(ctx: LocationContext, plan: Plan) -> Applied:
    if plan.action == "update" and plan.remote_id and plan.body is not None:
        response = ctx.client.request(
            "PUT", f"/locations/{plan.remote_id}", json=plan.body, ok=(200, 204)
        )
        return Applied(
            StepStatus.UPDATED, plan.remote_id, response.status_code, response.tracking_id
        )
    if plan.action != "create" or plan.body is None:
        return Applied(StepStatus.UNCHANGED, plan.remote_id)
    body = plan.body

    def send() -> Applied:
        response = ctx.client.request("POST", "/locations", json=body, ok=(200, 201))
        return Applied(
            StepStatus.CREATED,
            response.require_str("id"),
            response.status_code,
            response.tracking_id,
        )

    def find() -> str | None:
        found = lookup_location(ctx)
        return None if found is None else _id_of(found)

    return create_once(
        ctx.client, "location", ctx.mark_started, send, find, ctx.max_attempts, ctx.settle_s
    )


def lookup_calling(ctx: LocationContext, location_id: str) -> JSON | None:
    """The location's calling config, or None when it is not enabled (404 with 5620)."""
    try:
        return ctx.client.request("GET", f"/telephony/config/locations/{location_id}").body
    except HTTPStatusError as error:
        if error.http_status == 404 and error.error_code in (WEBEX_LOCATION_NOT_CALLING, None):
            return None
        raise


def apply_calling(ctx: LocationContext, location_id: str, remote_location: JSON) -> Applied:
    body = helpers.calling_enable_body(location_id, ctx.spec, remote_location)

    def send() -> Applied:
        response = ctx.client.request(
            "POST", "/telephony/config/locations", json=body, ok=(200, 201)
        )
        return Applied(StepStatus.CREATED, location_id, response.status_code, response.tracking_id)

    def find() -> str | None:
        return None if lookup_calling(ctx, location_id) is None else location_id

    return create_once(ctx.client, "calling", ctx.mark_started, send, find, ctx.max_attempts, 0)


# --- the create protocol ----------------------------------------------------------------------


def create_once(
    client: WebexClient,
    step: str,
    mark_started: Callable[[str], None],
    send: Callable[[], Applied],
    find: Callable[[], str | None],
    max_attempts: int,
    settle_s: float,
) -> Applied:
    """Create something exactly once although a create's outcome can be unknown.

    Before each POST the step is recorded `started`. A failure that may have been applied (a
    timeout, a 5xx, a dropped connection) and Webex's "400 but created" are followed by a
    lookup; only a lookup that still misses lets the create be sent again, at most
    `max_attempts` times in all.
    """
    last: RetryableError | None = None
    for attempt in range(1, max_attempts + 1):
        mark_started(step)
        try:
            return send()
        except HTTPStatusError as error:
            if error.http_status != 400 or error.error_code == WEBEX_EXTENSION_UNAVAILABLE:
                raise
            found = find()
            if found is not None:
                return Applied(
                    StepStatus.CREATED,
                    found,
                    error.http_status,
                    error.tracking_id,
                    "created although Webex answered 400",
                )
            raise
        except UnexpectedResponseError as error:
            # A 2xx without the fields it must carry: the create happened, its id is unknown.
            found = find()
            if found is not None:
                return Applied(
                    StepStatus.CREATED,
                    found,
                    error.http_status,
                    error.tracking_id,
                    "created; the answer lacked the id",
                )
            raise
        except RetryableError as error:
            last = error
            found = find()
            if found is not None:
                return Applied(
                    StepStatus.CREATED,
                    found,
                    None,
                    error.tracking_id,
                    f"created; the answer was lost ({error.message})",
                )
            if attempt < max_attempts:
                client.backoff_wait(attempt, getattr(error, "retry_after", None))
    if last is None:
        raise UnexpectedResponseError(f"{step}: no create attempt was made")
    raise RetryExhaustedError(last, max_attempts)


def _id_of(item: JSON) -> str:
    value = item.get("id")
    if not isinstance(value, str) or not value:
        raise UnexpectedResponseError("an item without an id")
    return value


# --- number ----------------------------------------------------------------------------------


def number_applies(row: UserRow) -> bool:
    return row.phone_number is not None


def lookup_number(ctx: RowContext) -> JSON | None:
    phone = ctx.row.phone_number
    # The user step looks the person up anyway (memoised per row): a person who already has
    # this number in this location proves it is in the inventory and theirs, so a re-run
    # spends no request on the number.
    person = ctx.person(settle="user" in ctx.unknown_outcome)
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


def apply_number(ctx: RowContext, plan: Plan) -> Applied:
    if plan.action != "create" or plan.body is None:
        return Applied(StepStatus.UNCHANGED, plan.remote_id)
    # Adding a number that is already there is ignored by Webex: safe to resend.
    response = ctx.client.request(
        "POST",
        f"/telephony/config/locations/{ctx.location_id}/numbers",
        json=plan.body,
        ok=(200, 201, 204),
        safe_to_retry=True,
    )
    return Applied(
        StepStatus.CREATED, ctx.row.phone_number, response.status_code, response.tracking_id
    )


# --- user ------------------------------------------------------------------------------------


def lookup_user(ctx: RowContext) -> JSON | None:
    return ctx.person(settle="user" in ctx.unknown_outcome)


def decide_user(ctx: RowContext, person: JSON | None) -> Plan:
    if person is None:
        return Plan(
            "create", body=helpers.person_create_body(ctx.row, ctx.location_id, ctx.license_id)
        )
    person_id = _id_of(person)
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


def apply_user(ctx: RowContext, plan: Plan) -> Applied:
    if plan.action == "update" and plan.remote_id and plan.body is not None:
        response = ctx.client.request(
            "PUT", f"/people/{plan.remote_id}", params=PEOPLE_PARAMS, json=plan.body
        )
        return Applied(
            StepStatus.UPDATED, plan.remote_id, response.status_code, response.tracking_id
        )
    if plan.action != "create" or plan.body is None:
        return Applied(StepStatus.UNCHANGED, plan.remote_id)
    body = plan.body

    def send() -> Applied:
        response = ctx.client.request("POST", "/people", params=PEOPLE_PARAMS, json=body)
        return Applied(
            StepStatus.CREATED,
            response.require_str("id"),
            response.status_code,
            response.tracking_id,
        )

    def find() -> str | None:
        ctx.forget_person()
        person = ctx.person(settle=True)
        return None if person is None else _id_of(person)

    applied = create_once(
        ctx.client, "user", ctx.mark_started, send, find, ctx.max_attempts, ctx.settle_s
    )
    ctx._person = {"id": applied.remote_id, **body}
    ctx._person_known = True
    return applied


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


def apply_settings(ctx: RowContext, plan: Plan) -> Applied:
    last_status: int | None = None
    tracking: str | None = None
    for method, path, body in plan.writes:
        response = ctx.client.request(method, path, json=body, ok=(200, 204))
        last_status, tracking = response.status_code, response.tracking_id
    status = StepStatus.UPDATED if plan.writes else StepStatus.UNCHANGED
    return Applied(status, plan.remote_id, last_status, tracking)


# --- the registry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StepSpec:
    """A per-row step, as data. `lookup` only reads; `decide` is pure; `apply` writes."""

    name: StepName
    entity_type: EntityType
    applies: Callable[[UserRow], bool]
    entity_key: Callable[[RowContext], str]
    lookup: Callable[[RowContext], Any]
    decide: Callable[[RowContext, Any], Plan]
    apply: Callable[[RowContext, Plan], Applied]


def _always(_row: UserRow) -> bool:
    return True


def _settings_lookup(ctx: RowContext) -> tuple[str, SettingsObserved]:
    person_id = ctx.user_id
    if person_id is None:
        person = ctx.person()
        if person is None:
            raise StepPending(ReasonCode.NOT_FOUND, f"{ctx.row.email} was not found for settings")
        person_id = _id_of(person)
    return person_id, lookup_settings(ctx, person_id)


def _settings_decide(ctx: RowContext, seen: tuple[str, SettingsObserved]) -> Plan:
    return decide_settings(ctx, seen[0], seen[1])


ROW_STEPS: tuple[StepSpec, ...] = (
    StepSpec(
        name=StepName.NUMBER,
        entity_type=EntityType.NUMBER,
        applies=number_applies,
        entity_key=lambda ctx: f"{ctx.location_id}:{ctx.row.phone_number}",
        lookup=lookup_number,
        decide=decide_number,
        apply=apply_number,
    ),
    StepSpec(
        name=StepName.USER,
        entity_type=EntityType.USER,
        applies=_always,
        entity_key=lambda ctx: ctx.row.email,
        lookup=lookup_user,
        decide=decide_user,
        apply=apply_user,
    ),
    StepSpec(
        name=StepName.SETTINGS,
        entity_type=EntityType.SETTINGS,
        applies=settings_applies,
        entity_key=lambda ctx: ctx.row.email,
        lookup=_settings_lookup,
        decide=_settings_decide,
        apply=apply_settings,
    ),
)


def steps_for(row: UserRow) -> list[StepName]:
    """The steps a row needs, in order: what `success` requires."""
    return [*SHARED_STEPS, *(spec.name for spec in ROW_STEPS if spec.applies(row))]


def find_license(client: WebexClient, wanted: str) -> tuple[str | None, str]:
    """The calling license by name or id: (its id, "") or, when no unit is left, (its id, why);
    (None, why) when the org has no such license.

    An org often holds several subscriptions under one license name: the first with units left
    is taken. An exhausted license still has its id returned, because users who already hold
    it need no new unit (a re-run, or a resumed row, must not fail for want of one).
    """
    exhausted: tuple[str, str] | None = None
    for item in client.paginate("/licenses", items_key="items"):
        if item.get("id") == wanted or item.get("name") == wanted:
            license_id = _id_of(item)
            total, consumed = item.get("totalUnits"), item.get("consumedUnits")
            if isinstance(total, int) and isinstance(consumed, int) and consumed >= total:
                if exhausted is None:
                    why = f"license {wanted!r} has no units left ({consumed}/{total})"
                    exhausted = (license_id, why)
                continue
            return license_id, ""
    if exhausted is not None:
        return exhausted
    return None, f"no license named {wanted!r} in this org"


def holds_license(person: JSON | None, license_id: str) -> bool:
    """Whether a looked-up person already holds the license (and so needs no new unit)."""
    licenses = person.get("licenses") if person is not None else None
    return isinstance(licenses, list) and license_id in licenses
