"""The simulator's own endpoints, outside /v1: observe the org, reset it, change the faults.

    GET   /_sim/state            counts per email and location name, writes (applied and
                                 attempted), token refreshes, requests per route
    POST  /_sim/reset            empty org, counters and log (faults are kept)
    GET   /_sim/faults           the fault configuration in force
    PUT   /_sim/faults           replace it (absent fields take their defaults)
    PATCH /_sim/faults           change only the fields sent
    GET   /_sim/requests?limit=  the most recent /v1 requests with their outcome

They need no token and never meet a fault: a test or an operator must be able to look at a
simulator that is busy failing on purpose.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pydantic import ValidationError

from ledger.simulator.faults import FaultConfig
from ledger.simulator.messages import SimRequest, SimResponse

if TYPE_CHECKING:
    from ledger.simulator.core import Simulator

_JSON = (("Content-Type", "application/json"),)


def _reply(status: int, body: object) -> SimResponse:
    return SimResponse(status, _JSON, json.dumps(body, separators=(",", ":")).encode())


def _message(status: int, text: str) -> SimResponse:
    return _reply(status, {"message": text})


def handle_admin(sim: Simulator, request: SimRequest) -> SimResponse:
    """Serve one admin request."""
    key = (request.method, request.path.rstrip("/"))
    if key == ("GET", "/_sim/state"):
        return _reply(200, sim.state_snapshot())
    if key == ("POST", "/_sim/reset"):
        sim.reset()
        return _reply(200, {"reset": True})
    if key == ("GET", "/_sim/faults"):
        return _reply(200, sim.faults.model_dump())
    if key in (("PUT", "/_sim/faults"), ("PATCH", "/_sim/faults")):
        return _change_faults(sim, request)
    if key == ("GET", "/_sim/requests"):
        return _recent_requests(sim, request)
    return _message(404, f"No simulator endpoint {request.method} {request.path}.")


def _change_faults(sim: Simulator, request: SimRequest) -> SimResponse:
    try:
        given = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return _message(400, "The body is not valid JSON.")
    if not isinstance(given, dict):
        return _message(400, "The body must be a JSON object of fault settings.")
    merged = {**sim.faults.model_dump(), **given} if request.method == "PATCH" else given
    try:
        config = FaultConfig.model_validate(merged)
    except ValidationError as error:
        details = [
            {"field": ".".join(str(part) for part in item["loc"]), "message": item["msg"]}
            for item in error.errors()
        ]
        return _reply(400, {"message": "Invalid fault settings.", "errors": details})
    sim.set_faults(config)
    return _reply(200, config.model_dump())


def _recent_requests(sim: Simulator, request: SimRequest) -> SimResponse:
    raw = request.query_value("limit") or "100"
    if not raw.isdigit():
        return _message(400, "limit must be a non-negative integer.")
    limit = int(raw)
    log = sim.request_log
    recent = log[-limit:] if limit else []
    items = [
        {
            "method": entry.method,
            "path": entry.path,
            "route": entry.route,
            "query": [list(pair) for pair in entry.query],
            "status": entry.status,
            "trackingId": entry.tracking_id,
        }
        for entry in recent
    ]
    return _reply(200, {"items": items, "total": sim.total_requests})
