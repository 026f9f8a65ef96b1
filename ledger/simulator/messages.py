"""The simulator's transport-independent request and answer types.

The core never sees a socket or an httpx object: the in-process transport and the socket server
both translate to and from these, so the same routes and the same faults run in both modes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

QueryPairs = tuple[tuple[str, str], ...]
HeaderPairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class SimRequest:
    """One HTTP request as the core sees it.

    `path` is the URL path as sent (`/v1/people/...` or `/_sim/state`), `query` the decoded query
    pairs in order (Webex repeats no key we rely on, but a multi-dict keeps that honest),
    `headers` has lower-case names, and `origin` (`scheme://host[:port]`) is what absolute URLs
    in `Link` headers are built on, so that a client can follow them exactly as given.
    """

    method: str
    path: str
    query: QueryPairs = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    origin: str = "http://sim.local"

    @classmethod
    def build(
        cls,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        origin: str = "http://sim.local",
    ) -> SimRequest:
        """Normalize the parts (upper-case method, lower-case header names, query as pairs)."""
        pairs = tuple(query.items()) if isinstance(query, Mapping) else tuple(query)
        lowered = {name.lower(): value for name, value in (headers or {}).items()}
        return cls(method.upper(), path, pairs, lowered, body, origin.rstrip("/"))

    def header(self, name: str) -> str | None:
        """The header's value, looked up case-insensitively."""
        return self.headers.get(name.lower())

    def query_value(self, name: str) -> str | None:
        """The first value given for a query key, or None."""
        for key, value in self.query:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class SimResponse:
    """An answer to send: status, headers, body bytes, and how long to wait before sending it."""

    status: int
    headers: HeaderPairs
    body: bytes = b""
    delay_s: float = 0.0

    def header(self, name: str) -> str | None:
        """The header's value, looked up case-insensitively."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def json(self) -> object:
        """The body decoded as JSON (None for an empty body)."""
        return json.loads(self.body) if self.body else None


FaultKind = Literal["hang", "drop"]


@dataclass(frozen=True, slots=True)
class Fault:
    """No HTTP answer at all: the transport hangs (`hang`) or closes the connection (`drop`).

    In socket mode a hang really sleeps `hang_s` and then closes; in-process it raises
    `httpx.ReadTimeout` at once, since there is no client timeout to wait for.
    """

    kind: FaultKind
    delay_s: float = 0.0
    hang_s: float = 0.0
