"""The explicit route table of the simulated Webex API, and the matcher over it.

Every path here was checked against the official OpenAPI files (People, Licenses, Locations) or
the derived endpoint catalog (`/telephony/...`, `/people/{id}/features/...`). A path that is
not in the table answers 404 `No static resource hydra/v1/...`, which is what Webex answers for
an invented path, including `/telephony/config/people/{id}/...` settings paths.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ledger.simulator import features, locations, people
from ledger.simulator.bodies import Call, Reply, paginate

Handler = Callable[[Call], Reply]


@dataclass(frozen=True, slots=True)
class Route:
    """One method + path template, its handler, and whether it is a write (for write faults)."""

    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Handler

    @property
    def write(self) -> bool:
        """POST, PUT, PATCH and DELETE may change state."""
        return self.method != "GET"

    @property
    def name(self) -> str:
        """`METHOD /v1/template`: the key under which requests are counted."""
        return f"{self.method} {self.template}"


def _route(method: str, template: str, handler: Handler) -> Route:
    regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return Route(method, template, re.compile(f"^{regex}$"), handler)


def list_licenses(call: Call) -> Reply:
    """GET /licenses: consumedUnits counts the people holding each license."""
    store = call.store
    records = list(store.licenses.values())
    page, link = paginate(call, records, default_max=1000, max_cap=1000)
    items = [
        {
            "id": record.id,
            "name": record.name,
            "totalUnits": record.total_units,
            "consumedUnits": store.consumed_units(record.id),
            "consumedByUsers": store.consumed_units(record.id),
            "consumedByWorkspaces": 0,
        }
        for record in page
    ]
    return Reply(200, {"items": items}, link)


_PERSON = "/v1/people/{personId}"
_FEATURES = _PERSON + "/features"
_CALLING_LOCATION = "/v1/telephony/config/locations/{locationId}"

ROUTES: tuple[Route, ...] = (
    _route("GET", "/v1/licenses", list_licenses),
    _route("GET", "/v1/locations", locations.list_locations),
    _route("POST", "/v1/locations", locations.create_location),
    _route("GET", "/v1/locations/{locationId}", locations.get_location),
    _route("PUT", "/v1/locations/{locationId}", locations.update_location),
    _route("GET", "/v1/telephony/config/locations", locations.list_calling_locations),
    _route("POST", "/v1/telephony/config/locations", locations.enable_calling),
    _route("GET", _CALLING_LOCATION, locations.get_calling_location),
    _route("POST", _CALLING_LOCATION + "/numbers", locations.add_numbers),
    _route("GET", "/v1/telephony/config/numbers", locations.list_numbers),
    _route("GET", "/v1/people", people.list_people),
    _route("POST", "/v1/people", people.create_person),
    _route("GET", _PERSON, people.get_person),
    _route("PUT", _PERSON, people.replace_person),
    _route("DELETE", _PERSON, people.delete_person),
    _route("GET", _FEATURES + "/voicemail", features.get_voicemail),
    _route("PUT", _FEATURES + "/voicemail", features.put_voicemail),
    _route("GET", _FEATURES + "/callerId", features.get_caller_id),
    _route("PUT", _FEATURES + "/callerId", features.put_caller_id),
    _route("GET", _FEATURES + "/callWaiting", features.get_call_waiting),
    _route("PUT", _FEATURES + "/callWaiting", features.put_call_waiting),
)


@dataclass(frozen=True, slots=True)
class Match:
    """The result of matching a request: a route with its parameters, or why there is none."""

    route: Route | None
    params: dict[str, str]
    path_known: bool


def match(method: str, path: str) -> Match:
    """Find the route; `path_known` tells a wrong method (405) from an unknown path (404)."""
    path_known = False
    for route in ROUTES:
        found = route.pattern.match(path)
        if found is None:
            continue
        if route.method == method:
            return Match(route, found.groupdict(), True)
        path_known = True
    return Match(None, {}, path_known)
