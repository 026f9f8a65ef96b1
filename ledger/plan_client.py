"""The client a plan looks Webex up with: `work`'s own client (retries, timeouts, the shared
rate limit, token renewal), made unable to write.

* **No write leaves it.** Anything but a GET raises InvariantError before it is sent: the
  lookups and decisions a plan borrows from `work` never write, and this makes sure of it.
* **A location `work` would make first holds nothing yet.** A row of a location to be created
  (its id `(known after apply)`) or whose calling is still to be enabled would be looked up,
  under `work`, in a location that by then exists and has calling, but holds no number and no
  extension. Asked about such a location (anything about a location to be created; its calling
  inventory for one to be enabled), the client answers with that empty listing itself instead
  of asking Webex about an id that does not exist yet, or for numbers of a location Webex would
  refuse to list them for.
* **What the settings step read is kept** for the plan's before → after: the lookup and decide
  of `work` give what to write, not what was there. So is what the license lookup read, for
  the units left: the plan's org checks cost no request of their own.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final

from ledger.connection_client import WebexClient
from ledger.error_handling import InvariantError
from ledger.outgoing import QueryValue
from ledger.plan_diff import AFTER_APPLY
from ledger.responses import JsonObject, WebexResponse

READ: Final = "GET"
FEATURES: Final = "/features/"
LICENSES: Final = "/licenses"
TELEPHONY: Final = "/telephony/"


class ReadOnlyClient(WebexClient):
    """A WebexClient that sends GETs only (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._empty_locations: frozenset[str] = frozenset({AFTER_APPLY})
        self._features: dict[str, JsonObject] = {}
        self._licenses: list[JsonObject] = []

    def treat_as_empty(self, location_ids: Iterable[str]) -> None:
        """Locations `work` would create or enable for calling before any of their rows."""
        with self._lock:
            self._empty_locations = frozenset({AFTER_APPLY, *location_ids})

    def licenses_read(self) -> list[JsonObject]:
        """The licenses the last listing of GET /licenses gave, over all its pages."""
        with self._lock:
            return list(self._licenses)

    def forget_features(self) -> None:
        """Drop what the settings lookups read and no plan line took (rows found blocked)."""
        with self._lock:
            self._features.clear()

    def read_feature(self, path: str) -> JsonObject | None:
        """What the last GET of this settings path answered (once: it is then forgotten)."""
        with self._lock:
            return self._features.pop(path, None)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, QueryValue] | None = None,
        json: Any = None,
        ok: Collection[int] = (200,),
        safe_to_retry: bool | None = None,
    ) -> WebexResponse:
        verb = method.upper()
        if verb != READ:
            raise InvariantError(f"a plan sends no write, yet {verb} {path} was asked for")
        location_id = (params or {}).get("locationId")
        with self._lock:
            calling_empty = path.startswith(TELEPHONY) and location_id in self._empty_locations
        empty = calling_empty or location_id == AFTER_APPLY or AFTER_APPLY in path
        if empty:
            body: JsonObject = {"items": [], "phoneNumbers": []}
            return WebexResponse(200, body, None, verb, path)
        response = super().request(
            verb, path, params=params, json=json, ok=ok, safe_to_retry=safe_to_retry
        )
        if FEATURES in path and response.body is not None:
            with self._lock:
                self._features[path] = response.body
        elif path.split("?", 1)[0].endswith(LICENSES) and response.body is not None:
            items = response.body.get("items")
            with self._lock:
                if path == LICENSES:  # a first page: a new listing
                    self._licenses = []
                if isinstance(items, list):
                    self._licenses.extend(item for item in items if isinstance(item, dict))
        return response
