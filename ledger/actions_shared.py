"""The shared steps, done once per location per run: the location and its calling; and the
calling license every row's user step needs (looked up once per batch)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ledger import action_helpers as helpers
from ledger.actions_common import JSON, Plan, StepPending, completed, create_once, id_of
from ledger.connection_client import WebexClient
from ledger.error_handling import WEBEX_LOCATION_NOT_CALLING, HTTPStatusError, ReasonCode
from ledger.records import EntityType, StepName, StepOutcome, StepStatus
from ledger.row_rules import LocationSpec


@dataclass
class LocationContext:
    client: WebexClient
    spec: LocationSpec
    max_attempts: int
    # Called with the `started` outcome just before a create is sent: the ledger records it.
    mark_started: Callable[[StepOutcome], None]

    def outcome(
        self,
        step: StepName,
        status: StepStatus,
        remote_id: str | None = None,
        *,
        http_status: int | None = None,
        tracking_id: str | None = None,
    ) -> StepOutcome:
        """What a shared step did, recorded against the location it provisions."""
        return StepOutcome(
            step,
            status,
            EntityType.LOCATION,
            self.spec.name,
            http_status=http_status,
            remote_id=remote_id,
            tracking_id=tracking_id,
        )


# --- location --------------------------------------------------------------------------------


def lookup_location(ctx: LocationContext) -> JSON | None:
    items = list(
        ctx.client.paginate(
            "/locations", params={"name": ctx.spec.name, "max": 100}, items_key="items"
        )
    )
    return helpers.exact_location(items, ctx.spec.name)


def get_location(ctx: LocationContext, location_id: str) -> JSON | None:
    """The location by id (what enabling calling needs when no lookup by name ran)."""
    return ctx.client.request("GET", f"/locations/{location_id}").body


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
    remote_id = id_of(remote)
    changes = helpers.location_changes(ctx.spec, remote)
    if changes is None:
        return Plan("unchanged", remote_id=remote_id)
    return Plan("update", remote_id=remote_id, body=changes)


def apply_location(ctx: LocationContext, plan: Plan) -> StepOutcome:
    if plan.action == "update" and plan.remote_id and plan.body is not None:
        return _update_location(ctx, plan)
    if plan.action != "create" or plan.body is None:
        return ctx.outcome(StepName.LOCATION, StepStatus.UNCHANGED, plan.remote_id)
    body = plan.body

    def send() -> StepOutcome:
        response = ctx.client.request("POST", "/locations", json=body, ok=(200, 201))
        return ctx.outcome(
            StepName.LOCATION,
            StepStatus.CREATED,
            response.require_str("id"),
            http_status=response.status_code,
            tracking_id=response.tracking_id,
        )

    started = ctx.outcome(StepName.LOCATION, StepStatus.STARTED)
    created = create_once(
        ctx.client, started, ctx.mark_started, send, lambda: lookup_location(ctx), ctx.max_attempts
    )
    if created.found is None:
        return created.outcome
    # Found after a create whose answer did not give it: compared with the file like any
    # location found by its name, and completed by an update where it differs.
    plan = decide_location(ctx, created.found)
    return completed(created, plan, lambda update: _update_location(ctx, update))


def _update_location(ctx: LocationContext, plan: Plan) -> StepOutcome:
    """PUT /locations/{id} with the file's values."""
    response = ctx.client.request(
        "PUT", f"/locations/{plan.remote_id}", json=plan.body, ok=(200, 204)
    )
    return ctx.outcome(
        StepName.LOCATION,
        StepStatus.UPDATED,
        plan.remote_id,
        http_status=response.status_code,
        tracking_id=response.tracking_id,
    )


def provision_location(ctx: LocationContext) -> tuple[StepOutcome, JSON | None]:
    """The location step: look it up, then create or update it as the file asks. Gives its
    outcome and the location as the lookup found it (None: it did not exist)."""
    remote = lookup_location(ctx)
    plan = decide_location(ctx, remote)
    if plan.action == "pending":
        raise StepPending(plan.reason or ReasonCode.LOCATION_UNDEFINED, plan.message or "")
    return apply_location(ctx, plan), remote


# --- calling ---------------------------------------------------------------------------------


def lookup_calling(ctx: LocationContext, location_id: str) -> JSON | None:
    """The location's calling config, or None when it is not enabled (404 with 5620)."""
    try:
        return ctx.client.request("GET", f"/telephony/config/locations/{location_id}").body
    except HTTPStatusError as error:
        if error.http_status == 404 and error.error_code in (WEBEX_LOCATION_NOT_CALLING, None):
            return None
        raise


def apply_calling(ctx: LocationContext, location_id: str, remote_location: JSON) -> StepOutcome:
    body = helpers.calling_enable_body(location_id, ctx.spec, remote_location)

    def send() -> StepOutcome:
        response = ctx.client.request(
            "POST", "/telephony/config/locations", json=body, ok=(200, 201)
        )
        return ctx.outcome(
            StepName.CALLING,
            StepStatus.CREATED,
            location_id,
            http_status=response.status_code,
            tracking_id=response.tracking_id,
        )

    def find() -> JSON | None:
        # The calling config of a location has nothing to compare: enabled is all there is.
        found = lookup_calling(ctx, location_id)
        return None if found is None else {**found, "id": location_id}

    started = ctx.outcome(StepName.CALLING, StepStatus.STARTED)
    return create_once(ctx.client, started, ctx.mark_started, send, find, ctx.max_attempts).outcome


def provision_calling(
    ctx: LocationContext, location_id: str, location: StepOutcome, remote: JSON | None
) -> StepOutcome:
    """The calling step: enable calling in the location unless it already is.

    `location` is what the location step did (now or in an earlier session), `remote` the
    location as its lookup found it this time (None when no lookup ran or it did not exist).
    """
    # A location created a moment ago is not a calling location yet, and the file gave every
    # value enabling needs: no lookup and no GET of the location.
    just_created = remote is None and location.status == StepStatus.CREATED
    if not just_created and lookup_calling(ctx, location_id) is not None:
        return ctx.outcome(StepName.CALLING, StepStatus.UNCHANGED, location_id)
    if remote is None and not just_created:
        remote = get_location(ctx, location_id)
    return apply_calling(ctx, location_id, remote or {})


# --- the license -----------------------------------------------------------------------------


def find_license(client: WebexClient, wanted: str) -> tuple[str | None, str, int | None]:
    """The calling license by name or id: (its id, "", units left) or, when no unit is left,
    (its id, why, 0); (None, why, None) when the org has no such license. Units left are
    counted over every subscription that holds it (None when Webex does not count them).

    An org often holds several subscriptions under one license name: the first with units left
    is taken. An exhausted license still has its id returned, because users who already hold
    it need no new unit (a re-run, or a resumed row, must not fail for want of one).
    """
    items = list(client.paginate("/licenses", items_key="items"))
    units = license_units_left(items, wanted)
    exhausted: tuple[str, str] | None = None
    for item in items:
        if item.get("id") == wanted or item.get("name") == wanted:
            license_id = id_of(item)
            total, consumed = item.get("totalUnits"), item.get("consumedUnits")
            if isinstance(total, int) and isinstance(consumed, int) and consumed >= total:
                if exhausted is None:
                    why = f"license {wanted!r} has no units left ({consumed}/{total})"
                    exhausted = (license_id, why)
                continue
            return license_id, "", units
    if exhausted is not None:
        return exhausted[0], exhausted[1], 0
    return None, f"no license named {wanted!r} in this org", None


def license_units_left(licenses: Iterable[JSON], wanted: str) -> int | None:
    """Units left of the calling license (by name or id) among `licenses` (GET /licenses),
    over every subscription that holds it; None when Webex does not count its units."""
    left: int | None = None
    for item in licenses:
        if item.get("id") != wanted and item.get("name") != wanted:
            continue
        total, consumed = item.get("totalUnits"), item.get("consumedUnits")
        if isinstance(total, int) and isinstance(consumed, int):
            left = (left or 0) + max(0, total - consumed)
    return left
