"""A call on its way out: the request as Webex receives it, and the hop that carries it.

`WebexClient` (`ledger.connection_client`) decides what to send and what an answer means; this
module turns a call into what goes on the wire (the base's path prefix, the query as httpx
writes it, a JSON or form body, the fixed headers) and sends it: over the lean keep-alive wire
(`ledger.keepalive`), or through httpx when a transport is given (tests, rehearsals) or the
environment routes Webex through a proxy. httpx's exceptions come out as httpx raises them.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

import httpx

from ledger.keepalive import KeepAliveWire, proxied
from ledger.responses import HttpAnswer

QueryValue = str | int | float | bool | None

_HEADERS: Final = (("Accept", "application/json"), ("User-Agent", "ledger"))


def request_headers(token: str | None) -> list[tuple[str, str]]:
    """The headers of every request, with `token` as bearer if given."""
    return [*_HEADERS, ("Authorization", f"Bearer {token}")] if token else list(_HEADERS)


def request_body(
    json: Any, form: Mapping[str, str] | None, headers: list[tuple[str, str]]
) -> bytes | None:
    """The request body (JSON, or the refresh grant's form), its Content-Type added."""
    if form is not None:
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        return urlencode(list(form.items())).encode("ascii")
    if json is None:
        return None
    headers.append(("Content-Type", "application/json"))
    return jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


def _query_text(value: QueryValue) -> str:
    """A query value as httpx writes it: booleans as `true`/`false`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class RequestHop:
    """Carries requests to one base URL (see the module docstring). Thread-safe."""

    def __init__(
        self,
        base_url: httpx.URL,
        *,
        timeout_s: float,
        connections: int,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._prefix = base_url.path.rstrip("/")  # "/v1": every relative path goes under it
        self._origin = f"{base_url.scheme}://{base_url.netloc.decode('ascii')}"
        self._wire: KeepAliveWire | None = None
        self._http: httpx.Client | None = None
        if transport is None and not proxied(base_url):
            self._wire = KeepAliveWire(base_url, timeout_s=timeout_s, max_idle=connections)
        else:
            self._http = httpx.Client(
                timeout=httpx.Timeout(timeout_s),
                limits=httpx.Limits(
                    max_connections=connections, max_keepalive_connections=connections
                ),
                transport=transport,
                follow_redirects=False,  # a redirect would carry the token to wherever it points
            )

    def close(self) -> None:
        if self._wire is not None:
            self._wire.close()
        if self._http is not None:
            self._http.close()

    def origin_form(self, target: str, params: Mapping[str, QueryValue] | None) -> str:
        """The request target as sent: the base's path prefix, the path and the query.
        `target` is relative to the base, or an absolute URL on its host (a Link next page)."""
        if target.startswith("/"):
            target = self._prefix + target
        else:
            parts = urlsplit(target)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if params:
            query = urlencode(
                [(name, _query_text(value)) for name, value in params.items()], quote_via=quote
            )
            target = f"{target}{'&' if '?' in target else '?'}{query}"
        return target

    def send(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> HttpAnswer:
        """One exchange for an origin-form `target`; raises httpx's transport exceptions."""
        if self._wire is not None:
            return self._wire.send(method, target, headers, body)
        assert self._http is not None
        request = httpx.Request(method, self._origin + target, headers=headers, content=body)
        return HttpAnswer.of(self._http.send(request))
