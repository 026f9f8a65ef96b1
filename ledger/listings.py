"""The org as this worker read it in pages: its people, and each location's number inventory.

A batch's lookups are answered from listings read once, instead of one request per row:

* **People**: `GET /people?callingData=true&max=100`, the whole org in pages (100 is the
  documented cap of `max` with callingData). Org-wide rather than per location: a listing by
  `locationId` (capped at 50 a page) shows only calling users, so the people directory sync
  made without calling, whom a run must update, would each cost a refused create and a lookup.
  Measured with the work benchmark (3,000 rows, 20 locations): in an org already holding
  21,000 people, a third of the rows' users among them without calling, 2.20 requests a row
  org-wide against 2.87 per location (997 creates refused, then looked up); in an empty org
  one page against one per location.
* **Numbers**: `GET /telephony/config/numbers?locationId=`, offset-paged by 2000: every number
  and extension of the location, with its owner.

Both are read once per worker session and kept, each read again once older than
`LISTING_MAX_AGE_S` (what the org may have changed meanwhile is bounded by that age). The people
listing is read only while it costs no more pages than the batch has rows to answer (a lookup
by email is one request a row): an org too large for that is looked up row by row.

A listing is a snapshot, and Webex lags: a person created a moment ago may be missing from it.
Missing is therefore never proof: a create answered "already exists" falls back to the lookup
(`actions_common.create_once`), and a row whose earlier create's outcome is unknown, that was
retried, or that has a recorded person id is looked up row by row (`RowRunner.uses_listing`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ledger import action_helpers as helpers
from ledger.actions_common import JSON
from ledger.connection_client import WebexClient
from ledger.error_handling import UnexpectedResponseError, WebexError

logger = logging.getLogger(__name__)

# The documented cap of GET /people's `max` with callingData=true.
PEOPLE_PAGE_MAX = 100
# GET /telephony/config/numbers pages by `start`/`max`; 2000 is its default and largest page.
NUMBERS_PAGE_MAX = 2000
# How long a listing answers lookups before it is read again.
LISTING_MAX_AGE_S = 300.0
# The most pages a location's number inventory is read in (bounded, never a hang).
NUMBERS_MAX_PAGES = 100


@dataclass(frozen=True)
class NumberInventory:
    """A location's numbers and extensions as listed: each entry by its number, and the entries
    that carry each extension (a number's owner's extension, or an extension without number)."""

    location_id: str
    by_number: Mapping[str, JSON]
    by_extension: Mapping[str, tuple[JSON, ...]]
    read_at: float

    @classmethod
    def of(cls, location_id: str, entries: Iterable[JSON], read_at: float) -> NumberInventory:
        by_number: dict[str, JSON] = {}
        by_extension: dict[str, list[JSON]] = {}
        for entry in entries:
            number = helpers.compact_number(_text(entry.get("phoneNumber")))
            if number:
                by_number[number] = entry
            extension = _text(entry.get("extension"))
            if extension:
                by_extension.setdefault(extension, []).append(entry)
        extensions = {key: tuple(found) for key, found in by_extension.items()}
        return cls(location_id, by_number, extensions, read_at)

    def number(self, phone_number: str) -> JSON | None:
        """The entry of a number in this location, or None when the location lacks it."""
        return self.by_number.get(phone_number)

    def extension_owners(self, extension: str) -> list[str]:
        """Who holds `extension` in this location (person ids, possibly none)."""
        owners = (helpers.number_owner_id(entry) for entry in self.by_extension.get(extension, ()))
        return [owner for owner in owners if owner is not None]

    def with_numbers(self, numbers: Iterable[str]) -> NumberInventory:
        """This inventory once `numbers` were added to the location (unassigned)."""
        by_number = dict(self.by_number)
        for number in numbers:
            by_number.setdefault(
                number, {"phoneNumber": number, "location": {"id": self.location_id}}
            )
        return NumberInventory(self.location_id, by_number, self.by_extension, self.read_at)


@dataclass(frozen=True)
class BatchView:
    """What a batch's lookups are answered from: the org's people by email (None: not listed,
    look up row by row) and the number inventories read for the batch's locations."""

    people: Mapping[str, JSON] | None = None
    inventories: Mapping[str, NumberInventory] = field(default_factory=dict)
    remember: Callable[[JSON], None] | None = None

    def inventory(self, location_id: str) -> NumberInventory | None:
        return self.inventories.get(location_id)


@dataclass
class _People:
    by_email: dict[str, JSON]
    read_at: float


class OrgListings:
    """The listings one worker session keeps (see the module docstring). Thread-safe: batches
    may be prepared while an earlier batch's rows still run."""

    def __init__(
        self,
        client: WebexClient,
        *,
        max_age_s: float = LISTING_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.max_age_s = max_age_s
        self.clock = clock
        # `_lock` guards the state and is held only briefly; `_reading` lets one thread at a
        # time read the people in pages, while rows go on remembering the ones they wrote.
        self._lock = threading.Lock()
        self._reading = threading.Lock()
        self._people: _People | None = None
        # The page budget a listing of the people last ran out of (None: never).
        self._people_too_large_at: int | None = None
        self._inventories: dict[str, NumberInventory] = {}

    def people(self, budget_pages: int) -> Mapping[str, JSON] | None:
        """The org's people by (lower-case) email, read again once old; None when the org has
        more people than `budget_pages` pages hold, or the listing failed."""
        with self._reading:
            with self._lock:
                now = self.clock()
                held = self._people
                if held is not None and now - held.read_at < self.max_age_s:
                    return held.by_email
                too_large = self._people_too_large_at
                if too_large is not None and budget_pages <= too_large:
                    return None
            try:
                by_email = self._read_people(budget_pages)
            except WebexError as error:
                logger.warning(
                    f"people not listed, looked up row by row: {error.message}",
                    extra={"event": "listing_failed", "http_status": error.http_status},
                )
                return None
            with self._lock:
                if by_email is None:
                    self._people_too_large_at = budget_pages
                else:
                    self._people = _People(by_email, now)
        if by_email is None:
            logger.info(
                f"the org has more than {budget_pages * PEOPLE_PAGE_MAX} people: looked up "
                "row by row",
                extra={"event": "listing_too_large"},
            )
        return by_email

    def _read_people(self, budget_pages: int) -> dict[str, JSON] | None:
        by_email: dict[str, JSON] = {}
        url: str = "/people"
        params: dict[str, str | int] | None = {"callingData": "true", "max": PEOPLE_PAGE_MAX}
        seen: set[str] = set()
        for _ in range(max(1, budget_pages)):
            page = self.client.request("GET", url, params=params)
            items = page.require_list("items")
            for item in items:
                if not isinstance(item.get("id"), str) or not item["id"]:
                    raise _unexpected(page.path, "a person without an id")
                for email in item.get("emails") or []:
                    by_email[str(email).lower()] = item
            if not items or page.next_url is None:
                return by_email
            if page.next_url in seen:
                raise _unexpected(page.path, "Link next points back to a page read")
            seen.add(page.next_url)
            url, params = page.next_url, None
        return None

    def remember_person(self, person: JSON) -> None:
        """A person as this worker created or updated it: what the listing shows from now on."""
        with self._lock:
            if self._people is None:
                return
            for email in person.get("emails") or []:
                self._people.by_email[str(email).lower()] = person

    def inventory(self, location_id: str) -> NumberInventory | None:
        """The location's number inventory, read again once old; None when it cannot be read
        (each row then looks its number up itself)."""
        with self._lock:
            held = self._inventories.get(location_id)
            now = self.clock()
            if held is not None and now - held.read_at < self.max_age_s:
                return held
        try:
            entries = list(
                self.client.paginate_offset(
                    "/telephony/config/numbers",
                    params={"locationId": location_id},
                    items_key="phoneNumbers",
                    page_size=NUMBERS_PAGE_MAX,
                    max_pages=NUMBERS_MAX_PAGES,
                )
            )
        except WebexError as error:
            logger.warning(
                f"number inventory not listed, looked up row by row: {error.message}",
                extra={"event": "listing_failed", "http_status": error.http_status},
            )
            return None
        inventory = NumberInventory.of(location_id, entries, now)
        with self._lock:
            self._inventories[location_id] = inventory
        return inventory

    def numbers_added(self, location_id: str, numbers: Iterable[str]) -> NumberInventory | None:
        """Note numbers this worker added to a location; the inventory as it now stands."""
        with self._lock:
            held = self._inventories.get(location_id)
            if held is None:
                return None
            updated = held.with_numbers(numbers)
            self._inventories[location_id] = updated
            return updated

    def forget_inventory(self, location_id: str) -> None:
        """Read the location's inventory again next time (after an add whose answer was lost)."""
        with self._lock:
            self._inventories.pop(location_id, None)


def _unexpected(path: str, message: str) -> UnexpectedResponseError:
    return UnexpectedResponseError(f"GET {path}: {message}", method="GET", path=path)


def _text(value: object) -> str:
    return str(value) if value is not None else ""
