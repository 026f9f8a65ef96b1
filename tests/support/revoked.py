"""A simulator whose token is revoked right after `work`'s preflight read: the circuit
breaker's case, now that a token refused from the start stops `work` before any row.

    sim = RevokedAfterPreflight(clock=jobs.time.monotonic)       # in-process, 401 after it
    with running_revoked_simulator() as handle: ...              # on a socket (support/system)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, Literal

from ledger.simulator.core import Simulator
from ledger.simulator.messages import Fault, SimRequest, SimResponse
from ledger.simulator.server import serve
from tests.support.system import TOKEN, SimHandle


class RevokedAfterPreflight(Simulator):
    """Answers the first GET /v1/licenses, then every request with `status` (until the test
    sets other faults: the revocation happens once)."""

    def __init__(self, *, status: Literal[401, 403] = 401, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._status = status
        self._revoked = False
        self._revoke_lock = threading.Lock()

    def handle(self, request: SimRequest) -> SimResponse | Fault:
        answer = super().handle(request)
        if request.method == "GET" and request.path == "/v1/licenses":
            with self._revoke_lock:
                if not self._revoked:
                    self._revoked = True
                    self.set_faults(self.faults.model_copy(update={"auth_failure": self._status}))
        return answer


@contextlib.contextmanager
def running_revoked_simulator() -> Iterator[SimHandle]:
    """Like support/system.running_simulator, with the token revoked after the preflight."""
    sim = RevokedAfterPreflight(token=TOKEN)
    handle = SimHandle(sim, serve(sim))
    try:
        yield handle
    finally:
        handle.close()
