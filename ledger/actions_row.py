"""The per-row steps number and user (settings: `actions_settings`), each a lookup that only
reads, a pure decide, and an apply that performs the plan's one write (registered in
`actions_registry`); and the context they share while one row is worked.

Also the one write that undoes a step: deleting a user this run created (compensation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ledger import action_helpers as helpers
from ledger.actions_common import JSON, Created, Plan, completed, create_once, id_of
from ledger.connection_client import WebexClient
from ledger.error_handling import (
    HTTPStatusError,
    ReasonCode,
    RetryableError,
    RetryExhaustedError,
    UnexpectedResponseError,
)
from ledger.listings import BatchView, NumberInventory
from ledger.new_user_defaults import NewUserDefaults
from ledger.records import EntityType, StepName, StepOutcome, StepStatus
from ledger.row_rules import UserRow

PEOPLE_PARAMS = {"callingData": "true"}


@dataclass
class RowContext:
    """One row being worked: the client, the ids it depends on, and lookups memoised per row."""

    client: WebexClient
    row: UserRow
    location_id: str
    license_id: str
    # After a create whose outcome is unknown, how long a lookup miss is re-checked.
    settle_s: float
    max_attempts: int
    # Called with the `started` outcome just before a create is sent: the ledger records it.
    mark_started: Callable[[StepOutcome], None]
    # Steps an earlier try left `started` (their create's outcome is unknown), each with how
    # long its lookups must still allow for Webex's lag: LOOKUP_SETTLE_S from when that create
    # was sent, so a create sent long ago is decided by one lookup.
    unknown_outcome: dict[StepName, float] = field(default_factory=dict)
    # The person id the ledger recorded when the user step succeeded in an earlier session:
    # the truth for that row, even while the lookup by email does not show the person yet.
    user_id: str | None = None
    # The person this row's user step created in this session (what compensation deletes).
    created_id: str | None = None
    # The listings of the row's batch (people, number inventories) that answer its lookups
    # instead of a request each; None: every lookup is the row's own (see listings).
    view: BatchView | None = None
    # Whether the user step created the person in this session and the create's own answer
    # gave it: its settings are Webex's defaults, so a write that needs no current value is
    # sent without reading them.
    fresh_person: bool = False
    # What a user created now starts with, as this worker read it (`new_user_defaults`).
    new_user_defaults: NewUserDefaults | None = None
    _person: JSON | None = None
    _person_known: bool = False
    _settled_s: float = 0.0
    _own_lookup: bool = False
    observed: dict[str, JSON | None] = field(default_factory=dict)

    def settle_for(self, step: StepName) -> float:
        """How long a lookup for `step` must allow for lag (0 unless its outcome is unknown)."""
        return self.unknown_outcome.get(step, 0.0)

    def person(self, *, settle_s: float = 0.0) -> JSON | None:
        """The row's person, looked up once per row (a miss again when asked to settle longer).

        From the batch's listing of people where it has one (a person missing from it is
        created: a create answered "already exists" looks up again, this time the row's own),
        else by the recorded id where the user step succeeded before (exact, and without the
        lag of the lookup by email), else by email.
        """
        if self._person_known and (self._person is not None or settle_s <= self._settled_s):
            return self._person
        people = self.view.people if self.view is not None else None
        if people is not None and not self._own_lookup and settle_s <= 0:
            found = people.get(self.row.email)
            self._person, self._person_known, self._settled_s = found, True, 0.0
            return found
        found = None
        if self.user_id is not None:
            found = get_person(self.client, self.user_id, self.row.email)
        if found is None:
            found = find_person(self.client, self.row.email, settle_s=settle_s)
        self._person, self._person_known, self._settled_s = found, True, settle_s
        return found

    def forget_person(self) -> None:
        """Look the person up again, by the row's own lookup (no longer the listing's)."""
        self._person_known = False
        self._person = None
        self._settled_s = 0.0
        self._own_lookup = True

    def remember_person(self, person: JSON) -> None:
        """The person as this row's user step left it: what the next steps look at."""
        self._person = person
        self._person_known = True
        if self.view is not None and self.view.remember is not None:
            self.view.remember(person)

    def inventory(self) -> NumberInventory | None:
        """The number inventory of the row's location, where the batch listed it."""
        return self.view.inventory(self.location_id) if self.view is not None else None

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


def get_person(client: WebexClient, person_id: str, email: str) -> JSON | None:
    """GET /people/{id}: the person a row recorded, or None when gone or no longer that email."""
    try:
        person = client.request("GET", f"/people/{person_id}", params=PEOPLE_PARAMS).body
    except HTTPStatusError as error:
        if error.http_status == 404:
            return None
        raise
    if person is None or person.get("id") != person_id:
        raise UnexpectedResponseError(f"GET /people/{{id}} did not give person {person_id}")
    emails = [str(e).lower() for e in person.get("emails") or []]
    return person if email in emails else None


# --- number ----------------------------------------------------------------------------------


def number_applies(row: UserRow) -> bool:
    return row.phone_number is not None


def lookup_number(ctx: RowContext) -> JSON | None:
    phone = ctx.row.phone_number
    # The user step looks the person up anyway (memoised per row): a person who already has
    # this number in this location proves it is in the inventory and theirs, so a re-run
    # spends no request on the number.
    person = ctx.person(settle_s=ctx.settle_for(StepName.USER))
    if person is not None and helpers.person_has_number(person, phone or "", ctx.location_id):
        own = helpers.number_entry_of(person, phone or "", ctx.location_id)
        ctx.observed["number"] = own
        return own
    return _inventory_entry(ctx)


def _inventory_entry(ctx: RowContext) -> JSON | None:
    """The number's entry: from the location's inventory where the batch listed it (a number
    missing from it is added; one in another location is then refused by name, see
    `bulk_numbers`), else by its own lookup, which also finds it in another location. A number
    the listing shows held by someone else is looked up again before the row is blocked: the
    listing may be minutes old (its holder may have been given another number since)."""
    phone = ctx.row.phone_number or ""
    inventory = ctx.inventory()
    entry = inventory.number(phone) if inventory is not None else None
    if inventory is None or _held_by_another(ctx, helpers.number_owner_id(entry or {})):
        entry = find_number(ctx.client, phone)
    ctx.observed["number"] = entry
    return entry


def _held_by_another(ctx: RowContext, owner: str | None) -> bool:
    if owner is None:
        return False
    person = ctx.person(settle_s=ctx.settle_for(StepName.USER))
    return person is None or person.get("id") != owner


def find_number(client: WebexClient, phone: str) -> JSON | None:
    """GET /telephony/config/numbers?phoneNumber=: the number's entry in whichever location."""
    response = client.request("GET", "/telephony/config/numbers", params={"phoneNumber": phone})
    return helpers.number_entry(response.require_list("phoneNumbers"), phone)


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
        person = ctx.person(settle_s=ctx.settle_for(StepName.USER))
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
    try:
        response = ctx.client.request(
            "POST",
            f"/telephony/config/locations/{ctx.location_id}/numbers",
            json=plan.body,
            ok=(200, 201, 204),
            safe_to_retry=True,
        )
    except (RetryExhaustedError, RetryableError, UnexpectedResponseError) as error:
        # The answer was lost or garbled, not the write: the number's own lookup (not a listing
        # read before the write) tells whether it is there now, and free for this row's person.
        found = find_number(ctx.client, ctx.row.phone_number or "")
        ctx.observed["number"] = found
        if found is None or decide_number(ctx, found).action != "unchanged":
            raise
        outcome = ctx.outcome(StepName.NUMBER, StepStatus.CREATED, ctx.row.phone_number)
        return replace(outcome, message=f"added; the answer was lost ({error.message})")
    return ctx.outcome(
        StepName.NUMBER,
        StepStatus.CREATED,
        ctx.row.phone_number,
        http_status=response.status_code,
        tracking_id=response.tracking_id,
    )


# --- user ------------------------------------------------------------------------------------


def lookup_user(ctx: RowContext) -> JSON | None:
    return ctx.person(settle_s=ctx.settle_for(StepName.USER))


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


def extension_taken(ctx: RowContext, person: JSON | None) -> Plan | None:
    """Pending `extension_in_use` when the row's extension belongs to someone else in its
    location, else None: free as the location's inventory lists it, or by
    GET /telephony/config/numbers?locationId=&extension=.

    Only asked where a write would otherwise come before the user's own write (the row's
    number must be added first): elsewhere the user's create or update finds out by itself.
    """
    extension = ctx.row.extension
    if extension is None:
        return None
    person_id = None if person is None else id_of(person)
    if person is not None and helpers.person_has_extension(person, extension, ctx.location_id):
        return None
    inventory = ctx.inventory()
    owners = inventory.extension_owners(extension) if inventory is not None else []
    # Held by someone else as the listing saw it, or not listed: asked of Webex itself before
    # the row is blocked (the listing may be minutes old).
    if inventory is None or any(owner != person_id for owner in owners):
        response = ctx.client.request(
            "GET",
            "/telephony/config/numbers",
            params={"locationId": ctx.location_id, "extension": extension},
        )
        owners = [
            owner
            for entry in response.require_list("phoneNumbers")
            if str(entry.get("extension") or "") == extension
            and (owner := helpers.number_owner_id(entry)) is not None
        ]
    if any(owner != person_id for owner in owners):
        return Plan(
            "pending",
            remote_id=person_id,
            reason=ReasonCode.EXTENSION_IN_USE,
            message=f"extension {extension} is assigned to someone else in the location",
        )
    return None


def apply_user(ctx: RowContext, plan: Plan) -> StepOutcome:
    if plan.action == "update" and plan.remote_id and plan.body is not None:
        return _update_person(ctx, plan)
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

    def find() -> JSON | None:
        ctx.forget_person()
        return ctx.person(settle_s=ctx.settle_s)

    started = ctx.outcome(StepName.USER, StepStatus.STARTED)
    created = create_once(ctx.client, started, ctx.mark_started, send, find, ctx.max_attempts)
    if created.outcome.status == StepStatus.CREATED:
        ctx.created_id = created.outcome.remote_id
    if created.found is None:
        ctx.fresh_person = True
        ctx.remember_person({"id": created.outcome.remote_id, **body})
        return created.outcome
    return _complete_person(ctx, created)


def _complete_person(ctx: RowContext, created: Created) -> StepOutcome:
    """A person found after a create whose answer did not give it is compared with the row,
    never taken on trust: Webex's "400 but created" can leave it without its calling part (no
    location, license, extension or number), which an update then completes."""
    found = created.found or {}
    return completed(created, decide_user(ctx, found), lambda plan: _update_person(ctx, plan))


def _update_person(ctx: RowContext, plan: Plan) -> StepOutcome:
    """PUT /people/{id}: the whole person back, with the row's values."""
    if plan.remote_id is None or plan.body is None:
        raise UnexpectedResponseError("an update of a person without its id or body")
    response = ctx.client.request(
        "PUT", f"/people/{plan.remote_id}", params=PEOPLE_PARAMS, json=plan.body
    )
    ctx.remember_person({**plan.body, "id": plan.remote_id})
    return ctx.outcome(
        StepName.USER,
        StepStatus.UPDATED,
        plan.remote_id,
        http_status=response.status_code,
        tracking_id=response.tracking_id,
    )


# --- the license, compensation ---------------------------------------------------------------


def holds_license(person: JSON | None, license_id: str) -> bool:
    """Whether a looked-up person already holds the license (and so needs no new unit)."""
    licenses = person.get("licenses") if person is not None else None
    return isinstance(licenses, list) and license_id in licenses


def delete_person(client: WebexClient, person_id: str) -> None:
    """Delete a user this run created (compensation); one already gone counts as deleted."""
    client.request("DELETE", f"/people/{person_id}", ok=(200, 204, 404))
