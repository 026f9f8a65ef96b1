"""The simulator in-process, with chosen requests answered from a script.

    scripted = Scripted(sim)
    scripted.on("POST", r"^/v1/locations$", error(403, "not a full admin"), repeat=True)
    scripted.on("POST", r"^/v1/people", read_timeout(), after=True)  # applied, no answer
    job.work(scripted.transport()); scripted.count("POST", "/people")

`Scripted` answers chosen requests with exact sequences (a 429 with a given Retry-After, a
timeout after a create was applied, ...) and counts every request the client sent, including
those the simulator never saw.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx

from ledger.simulator import Simulator

Answer = Callable[[httpx.Request], httpx.Response]


def error(code: int, message: str = "scripted error", **headers: str) -> Answer:
    """An answer with Webex's usual error body."""

    def answer(request: httpx.Request) -> httpx.Response:
        body = {"message": message, "errors": [{"description": message}], "trackingId": "SCRIPT"}
        return httpx.Response(code, json=body, headers={"Trackingid": "SCRIPT", **headers})

    return answer


def read_timeout() -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("scripted: no answer in time", request=request)

    return answer


def dropped() -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("scripted: server disconnected", request=request)

    return answer


@dataclass
class Rule:
    method: str
    pattern: re.Pattern[str]
    answers: list[Answer]
    after: bool  # forward first (the simulator applies the request), then answer this instead
    repeat: bool  # keep answering the last answer once the others were used
    hook: Callable[[httpx.Request], None] | None = None
    used: int = 0


@dataclass(frozen=True)
class SentRequest:
    """A request as the client sent it (whether the simulator or the script answered it)."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    body: Any


@dataclass
class Scripted:
    """The simulator in-process, with chosen requests answered from a script."""

    sim: Simulator
    sent: list[tuple[str, str]] = field(default_factory=list)
    log: list[SentRequest] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._inner = self.sim.transport()

    def on(
        self,
        method: str,
        pattern: str,
        *answers: Answer,
        after: bool = False,
        repeat: bool = False,
        hook: Callable[[httpx.Request], None] | None = None,
    ) -> Rule:
        """Answer `method` requests whose path+query matches `pattern` (re.search, unquoted)."""
        rule = Rule(method.upper(), re.compile(pattern), list(answers), after, repeat, hook)
        self.rules.append(rule)
        return rule

    def count(self, method: str, pattern: str = "") -> int:
        compiled = re.compile(pattern)
        with self._lock:
            return sum(1 for m, target in self.sent if m == method and compiled.search(target))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        target = unquote(request.url.raw_path.decode("ascii"))
        chosen: tuple[Rule, Answer | None] | None = None
        content = request.read()
        body = json.loads(content) if content else None
        sent = SentRequest(
            request.method, request.url.path, tuple(request.url.params.multi_items()), body
        )
        with self._lock:
            self.sent.append((request.method, target))
            self.log.append(sent)
            for rule in self.rules:
                if rule.method != request.method or not rule.pattern.search(target):
                    continue
                if rule.used < len(rule.answers):
                    chosen = (rule, rule.answers[rule.used])
                elif rule.repeat and rule.answers:
                    chosen = (rule, rule.answers[-1])
                elif rule.hook is not None and not rule.answers and rule.used == 0:
                    chosen = (rule, None)
                else:
                    continue
                rule.used += 1
                break
        if chosen is None:
            return self._inner.handle_request(request)
        rule, answer = chosen
        if rule.after or answer is None:
            response = self._inner.handle_request(request)
            if rule.hook is not None:
                rule.hook(request)
            if answer is None:
                return response
        return answer(request)


# The org-wide listing of people a batch reads (GET /people without email), not a row's lookup.
PEOPLE_LISTING = r"^/v1/people\?callingData=true&max="


def endless_listing() -> Answer:
    """Pages of people that never end (each links to the next): an org with more people than a
    batch may read in pages, so that each row's lookup is its own (see `ledger.listings`)."""

    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("cursor", "0"))
        item = {"id": f"OTHER{page}", "emails": [f"other{page}@example.com"], "displayName": "O"}
        following = request.url.copy_set_param("cursor", str(page + 1))
        return httpx.Response(
            200, json={"items": [item]}, headers={"Link": f'<{following}>; rel="next"'}
        )

    return answer


def looked_up_row_by_row(scripted: Scripted) -> Scripted:
    """Make the org too large to list: every row then looks its person up by email, with the
    faults a test scripts on that lookup."""
    scripted.on("GET", PEOPLE_LISTING, endless_listing(), repeat=True)
    return scripted
