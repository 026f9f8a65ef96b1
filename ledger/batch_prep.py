"""A claimed batch made ready for its rows, in one call before they run (`prepare_batch`).

In order: the calling license (looked up once per batch); the batch's locations, provisioned
once per run (`locations`); the listings its rows' lookups are answered from (`listings`: the
org's people, the number inventory of each location whose rows need a number decided); each
row's own decision, read-only (`RowRunner.decide_steps`); then, per location, one request adding
every number the inventory lacks among the rows that nothing blocks (`bulk_numbers`).

Each of those rows still has its own `number` step record: `started` before the request,
`created` after it, committed here, before the row's user is created; the rows of one add are
recorded together (one wait, one transaction), each fenced by its own claim. A number the add
refused is that row's failure alone, which its own work records as pending. A row whose lookups
are its own (`RowRunner.uses_listing`) adds its number itself, as it always did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TypeVar

from ledger import action_helpers as helpers
from ledger import actions_registry as registry
from ledger.actions_row import decide_number, find_number
from ledger.bulk_numbers import NumberAdded, add_numbers
from ledger.error_handling import (
    HTTPStatusError,
    InvariantError,
    ReasonCode,
    WebexError,
)
from ledger.listings import BatchView, NumberInventory
from ledger.locations import LocationOutcome, LocationProvisioner
from ledger.logs import bind_log_context
from ledger.records import (
    SUCCESS_STEP_STATUSES,
    ClaimedRow,
    Failure,
    StepName,
    StepOutcome,
    StepStatus,
)
from ledger.row_runner import LicenseLookup, RowRunner, lookup_license
from ledger.state_store import record_rows_steps

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class PreparedBatch:
    """What a batch's rows share: the license, their locations, the listings their lookups are
    answered from, and for each row whose number was added with its location's others, its
    recorded `number` outcome or why the add refused it (by row pk); `contexts` are the rows'
    contexts as their decision left them (their lookups made, memoised)."""

    license: LicenseLookup
    locations: Mapping[str, LocationOutcome]
    view: BatchView | None = None
    numbers: Mapping[int, StepOutcome | Failure] = field(default_factory=dict)
    contexts: Mapping[int, registry.RowContext] = field(default_factory=dict)
    # Rows (pks) left without a unit of the license: the rows before them, in file order,
    # take the units left (as `ledger plan` counts them).
    no_unit: frozenset[int] = frozenset()

    def in_flight(self, row: ClaimedRow) -> bool:
        """Whether the preparation already wrote for this row (its number was added): like a
        row that started, it is finished when `work` is asked to stop, not released (the
        circuit breaker still releases it: its next request would be refused too)."""
        return row.pk in self.numbers


@dataclass(frozen=True)
class _Candidate:
    """A row whose number its location's inventory lacks, and nothing blocks."""

    row: ClaimedRow
    ctx: registry.RowContext
    phone: str


def prepare_batch(
    runner: RowRunner,
    provisioner: LocationProvisioner,
    rows: Sequence[ClaimedRow],
    calling_license: LicenseLookup | None = None,
) -> PreparedBatch:
    """Make `rows` ready to run (see the module docstring). `calling_license`: one already
    looked up for this batch (by the preflight), else it is looked up here."""
    found = calling_license or lookup_license(runner.client, runner.settings.WEBEX_CALLING_LICENSE)
    locations = provisioner.ensure(rows)
    view = batch_view(runner, rows, locations)
    if provisioner.stop.is_set() or found.license_id is None:
        return PreparedBatch(found, locations, view)
    no_unit = _allot_units(runner, rows, found, view)
    width = runner.settings.LEDGER_CONCURRENCY
    decided = _parallel(
        width, lambda row: _decide(runner, row, locations, found, view, no_unit), rows
    )
    contexts = {row.pk: ctx for row, (ctx, _) in zip(rows, decided, strict=True) if ctx}
    candidates = [candidate for _, candidate in decided if candidate is not None]
    numbers = _add_in_bulk(runner, candidates, width)
    return PreparedBatch(found, locations, view, numbers, contexts, no_unit)


def _allot_units(
    runner: RowRunner, rows: Sequence[ClaimedRow], found: LicenseLookup, view: BatchView
) -> frozenset[int]:
    """The rows left without a unit when the units left are fewer than the batch's rows: the
    units go in file order to the rows whose user may need one (not listed holding the
    license, no user recorded). Webex's own count decides again with the next batch."""
    left, license_id = found.units_left, found.license_id
    if left is None or license_id is None or found.problem or left >= len(rows):
        return frozenset()
    people = view.people
    short: set[int] = set()
    for row in sorted(rows, key=lambda claimed: claimed.row_id):
        user = row.steps.get(StepName.USER)
        if user is not None and user.status in SUCCESS_STEP_STATUSES:
            continue  # a user recorded by an earlier success holds the license
        if runner.uses_listing(row) and people is not None:
            person = people.get(row.user.email)
            if person is not None and registry.holds_license(person, license_id):
                continue
        if left > 0:
            left -= 1
        else:
            short.add(row.pk)
    return frozenset(short)


def batch_view(
    runner: RowRunner, rows: Sequence[ClaimedRow], locations: Mapping[str, LocationOutcome]
) -> BatchView:
    """The listings the batch's lookups are answered from; reads only (`ledger plan` too).

    The people are listed when some row may use them, within as many pages as those rows
    (each would otherwise cost a lookup); a location's number inventory when one of its rows
    has a number to decide that its listed person does not already hold."""
    listings = runner.listings
    listed = [
        row for row in rows if runner.uses_listing(row) and _location_id(locations, row) is not None
    ]
    people = listings.people(budget_pages=len(listed)) if listed else None
    wanted: dict[str, None] = {}
    for row in listed:
        phone, location_id = row.user.phone_number, _location_id(locations, row)
        if phone is None or location_id is None or row.step_done(StepName.NUMBER):
            continue
        person = people.get(row.user.email) if people is not None else None
        if person is None or not helpers.person_has_number(person, phone, location_id):
            wanted[location_id] = None
    width = runner.settings.LEDGER_CONCURRENCY
    read = _parallel(width, listings.inventory, wanted)
    inventories = {
        location_id: inventory
        for location_id, inventory in zip(wanted, read, strict=True)
        if inventory is not None
    }
    return BatchView(people, inventories, listings.remember_person)


def _location_id(locations: Mapping[str, LocationOutcome], row: ClaimedRow) -> str | None:
    location = locations.get(row.user.location_name)
    if location is None or location.failure is not None or location.busy:
        return None
    return location.location_id


def _decide(
    runner: RowRunner,
    row: ClaimedRow,
    locations: Mapping[str, LocationOutcome],
    calling_license: LicenseLookup,
    view: BatchView,
    no_unit: frozenset[int],
) -> tuple[registry.RowContext | None, _Candidate | None]:
    """A row's decision, made here for a row with a number to decide whose lookups the
    listings answer: its context (kept for its work, lookups memoised), and the row as a
    candidate of its location's bulk add when its number is missing from the inventory and
    nothing blocks it. Reads only; any doubt leaves the number to the row's own work."""
    location_id = _location_id(locations, row)
    phone = row.user.phone_number
    license_id = calling_license.license_id
    if location_id is None or phone is None or license_id is None:
        return None, None
    if not runner.uses_listing(row) or row.step_done(StepName.NUMBER):
        return None, None
    if view.inventory(location_id) is None:
        return None, None
    ctx = runner.context(row, location_id, license_id, mark_started=runner.recorder(row), view=view)
    with bind_log_context(batch_id=row.batch_id, row_id=row.row_id, entity_key=row.user.email):
        try:
            runner.check_license(ctx, calling_license, unit=row.pk not in no_unit)
            decision = runner.decide_steps(row, ctx)
        except (registry.StepPending, WebexError, InvariantError):
            return ctx, None  # blocked, or a lookup failed: the row's own work finds out again
    plan = decision.plans.get(StepName.NUMBER)
    if plan is None or plan.action != "create":
        return ctx, None
    return ctx, _Candidate(row, ctx, phone)


def _add_in_bulk(
    runner: RowRunner, candidates: Sequence[_Candidate], width: int
) -> dict[int, StepOutcome | Failure]:
    """Each location's missing numbers in one request (split above its cap): every row's step
    recorded `started` first and its outcome after. Gives each row's outcome or failure."""
    by_location: dict[str, list[_Candidate]] = {}
    for candidate in candidates:
        by_location.setdefault(candidate.ctx.location_id, []).append(candidate)
    outcomes: dict[int, StepOutcome | Failure] = {}
    for done in _parallel(
        width, lambda group: _add_for_location(runner, group, width), by_location.values()
    ):
        outcomes.update(done)
    return outcomes


def _add_for_location(
    runner: RowRunner, group: list[_Candidate], width: int
) -> dict[int, StepOutcome | Failure]:
    location_id = group[0].ctx.location_id
    ledger, lease_s = runner.ledger, runner.settings.LEDGER_LEASE_S
    # Every row's `started`, committed (together) before the add is sent.
    started = [(c.row, [c.ctx.outcome(StepName.NUMBER, StepStatus.STARTED)]) for c in group]
    lost = record_rows_steps(ledger, started, lease_s=lease_s)
    # A row whose claim was lost belongs to another worker now: its number is not this one's.
    sending = [candidate for candidate in group if candidate.row.pk not in lost]
    if not sending:
        return {}
    listings = runner.listings

    def reread() -> NumberInventory | None:
        listings.forget_inventory(location_id)
        return listings.inventory(location_id)

    with bind_log_context(step=StepName.NUMBER):
        results = add_numbers(runner.client, location_id, [c.phone for c in sending], reread=reread)
    added = [number for number, result in results.items() if isinstance(result, NumberAdded)]
    listings.numbers_added(location_id, added)
    logger.info(
        f"{len(added)} of {len(sending)} numbers added to the location in bulk",
        extra={"event": "numbers_added", "rows": len(sending)},
    )
    created: dict[int, StepOutcome] = {}
    refused: list[tuple[_Candidate, WebexError]] = []
    for candidate in sending:
        result = results[candidate.phone]
        if isinstance(result, NumberAdded):
            created[candidate.row.pk] = _created(candidate, result)
        else:
            refused.append((candidate, result))
    # Every added row's `created`, committed together.
    lost = record_rows_steps(
        ledger,
        [(c.row, [created[c.row.pk]]) for c in sending if c.row.pk in created],
        lease_s=lease_s,
    )
    outcomes: dict[int, StepOutcome | Failure] = {
        pk: outcome for pk, outcome in created.items() if pk not in lost
    }
    failures = _parallel(width, lambda pair: _refusal(pair[0].ctx, pair[0].phone, pair[1]), refused)
    for (candidate, _), failure in zip(refused, failures, strict=True):
        outcomes[candidate.row.pk] = failure
    return outcomes


def _created(candidate: _Candidate, result: NumberAdded) -> StepOutcome:
    """The row's number outcome after the add made it: `created`."""
    outcome = candidate.ctx.outcome(
        StepName.NUMBER,
        StepStatus.CREATED,
        candidate.phone,
        http_status=result.http_status,
        tracking_id=result.tracking_id,
    )
    if result.message is not None:
        outcome = replace(outcome, message=result.message)
    return outcome


def _refusal(ctx: registry.RowContext, phone: str, error: WebexError) -> Failure:
    """Why the add refused a row's number. A refusal of the number itself is checked by its own
    lookup, which names the usual cause: the number is in another location, or someone's."""
    failure = registry.failure_of(error, StepName.NUMBER)
    if not isinstance(error, HTTPStatusError) or error.http_status not in (400, 409):
        return failure
    try:
        plan = decide_number(ctx, find_number(ctx.client, phone))
    except WebexError:
        return failure
    if plan.action == "pending":
        return Failure(
            plan.reason or ReasonCode.NUMBER_IN_USE, plan.message or "", None, StepName.NUMBER
        )
    return failure


def _parallel(width: int, work: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """`work` over `items`, up to `width` at a time, results in order."""
    listed = list(items)
    if len(listed) <= 1:
        return [work(item) for item in listed]
    with ThreadPoolExecutor(max_workers=max(1, min(width, len(listed)))) as pool:
        return list(pool.map(work, listed))
