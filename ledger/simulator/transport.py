"""The in-process transport: httpx talks to the simulator with no socket in between."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from ledger.simulator.messages import Fault, SimRequest, SimResponse


def mock_transport(handle: Callable[[SimRequest], SimResponse | Fault]) -> httpx.MockTransport:
    """Wrap a simulator's `handle` as an `httpx.MockTransport` (sync clients).

    A hang raises `httpx.ReadTimeout` at once and a drop `httpx.RemoteProtocolError`: the errors
    a real client gets from a socket after its read timeout or a connection closed unanswered.
    Latency is slept here, outside the simulator's lock, as the socket server does.
    """

    def send(request: httpx.Request) -> httpx.Response:
        url = request.url
        sim_request = SimRequest.build(
            request.method,
            url.path,
            query=url.params.multi_items(),
            headers=dict(request.headers),
            body=request.read(),
            origin=f"{url.scheme}://{url.netloc.decode('ascii')}",
        )
        outcome = handle(sim_request)
        if outcome.delay_s > 0:
            time.sleep(outcome.delay_s)
        if isinstance(outcome, Fault):
            if outcome.kind == "hang":
                raise httpx.ReadTimeout("simulated hang: no answer in time", request=request)
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        return httpx.Response(outcome.status, headers=list(outcome.headers), content=outcome.body)

    return httpx.MockTransport(send)
