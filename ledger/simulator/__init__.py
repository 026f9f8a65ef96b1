"""A local Webex-compatible server: the rehearsal target for operators and the project's test bed.

It speaks the subset of the Webex API that `ledger` uses, with Webex's paths, bodies, status
codes, error shapes and quirks, keeps its org in memory, and injects faults on demand. Run it
in-process (`Simulator().transport()` for an `httpx.Client`) or on a socket
(`running_server(sim)` in tests, `ledger sim` for operators).
"""

from ledger.simulator.core import LoggedRequest, Simulator
from ledger.simulator.errors import ApiError
from ledger.simulator.faults import PROFILES, FaultConfig
from ledger.simulator.messages import Fault, SimRequest, SimResponse
from ledger.simulator.sample import SampleSummary, write_sample_csv
from ledger.simulator.server import SimServer, running_server, serve
from ledger.simulator.tokens import OAuthClient

__all__ = [
    "PROFILES",
    "ApiError",
    "Fault",
    "FaultConfig",
    "LoggedRequest",
    "OAuthClient",
    "SampleSummary",
    "SimRequest",
    "SimResponse",
    "SimServer",
    "Simulator",
    "running_server",
    "serve",
    "write_sample_csv",
]
