"""Reading Webex's answers: the success model, required fields, error bodies, Retry-After.

Webex answers are parsed defensively and in one place. A success must be a JSON object (or
empty) and the fields a step reads are checked before it reads them, so a surprising body becomes
an `UnexpectedResponseError` naming the method, path and `Trackingid` rather than a `KeyError`.
Error bodies come in several shapes (WEBEX_API.md, "Cross-cutting"); `read_error` takes the
message (token redacted), Webex's `errorCode` and the tracking id from any of them, and an error
body that is not JSON is simply no body. Which error of the tree a status means is decided by
`connection_client`, not here.
`Retry-After` is never trusted: seconds or an HTTP date, anything else means the default.
"""

from __future__ import annotations

import email.utils
import json as jsonlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC
from types import MappingProxyType
from typing import Any, Final, TypedDict

import httpx

from ledger.error_handling import UnexpectedResponseError
from ledger.logs import redact

JsonObject = dict[str, Any]

# The most characters of foreign text (an error body, an httpx error) a message quotes.
MESSAGE_LIMIT: Final = 500


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """An answer as it came off the wire, before it means anything: its status and reason,
    its headers (lower-case names, a repeated one's values joined by ", ", as httpx joins
    them), its body, and the URL it answered (a relative Link is read against it)."""

    status_code: int
    reason_phrase: str
    headers: Mapping[str, str]
    content: bytes
    url: str

    @classmethod
    def of(cls, response: httpx.Response) -> HttpAnswer:
        """The answer httpx read (through a transport given, or a proxy)."""
        return cls(
            response.status_code,
            response.reason_phrase,
            dict(response.headers.items()),
            response.content,
            str(response.request.url),
        )


@dataclass(frozen=True, slots=True)
class WebexResponse:
    """A successful answer. `headers` has lower-case names; `next_url` is the Link rel="next"."""

    status_code: int
    body: JsonObject | None
    tracking_id: str | None
    method: str
    path: str
    next_url: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def require_fields(self, *names: str) -> None:
        require_fields(self.body, *names, response=self)

    def require_str(self, name: str) -> str:
        return require_str(self.body, name, response=self)

    def require_list(self, key: str) -> list[JsonObject]:
        return require_list(self.body, key, response=self)


def unexpected_response(message: str, response: WebexResponse | None) -> UnexpectedResponseError:
    """The error for an answer that lacks what the caller needs, naming the call it answered."""
    if response is None:
        return UnexpectedResponseError(message)
    return UnexpectedResponseError(
        f"{response.method} {response.path}: {message}",
        http_status=response.status_code,
        tracking_id=response.tracking_id,
        method=response.method,
        path=response.path,
    )


def _with_fields(
    body: Mapping[str, Any] | None, names: tuple[str, ...], response: WebexResponse | None
) -> Mapping[str, Any]:
    if body is None:
        raise unexpected_response(f"empty body, expected {', '.join(names)}", response)
    missing = [name for name in names if body.get(name) is None]
    if missing:
        raise unexpected_response(f"response lacks {', '.join(missing)}", response)
    return body


def require_fields(
    body: Mapping[str, Any] | None, *names: str, response: WebexResponse | None = None
) -> None:
    """Check a response carries `names` (not null) before anything reads them."""
    _with_fields(body, names, response)


def require_str(
    body: Mapping[str, Any] | None, name: str, *, response: WebexResponse | None = None
) -> str:
    """A non-empty string field (ids, names): an empty id is as useless as a missing one."""
    value = _with_fields(body, (name,), response)[name]
    if not isinstance(value, str) or not value:
        raise unexpected_response(f"field {name} is not a non-empty string", response)
    return value


def require_list(
    body: Mapping[str, Any] | None, key: str, *, response: WebexResponse | None = None
) -> list[JsonObject]:
    """A list of JSON objects under `key`, as every Webex list response has."""
    items = _with_fields(body, (key,), response)[key]
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise unexpected_response(f"field {key} is not a list of objects", response)
    return items


def parse_retry_after(value: str | None, *, now: float, default: float) -> float | None:
    """Seconds asked for by a Retry-After header (None if absent). Never trusts its shape."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else default
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _descriptions(items: object) -> str | None:
    if not isinstance(items, list):
        return None
    texts = [
        text
        for item in items
        if isinstance(item, Mapping) and (text := _text(item.get("description")))
    ]
    return "; ".join(dict.fromkeys(texts)) or None


def webex_error_message(body: object) -> str | None:
    """The human message of any Webex error body shape (WEBEX_API.md, "Cross-cutting")."""
    if not isinstance(body, Mapping):
        return None
    error = body.get("error")
    inner = error.get("message") if isinstance(error, Mapping) else None
    return (
        _text(body.get("message"))
        or _descriptions(body.get("errors"))
        or _text(inner)
        or _descriptions(inner)
        or _text(body.get("errorMessage"))
    )


def _as_int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def webex_error_code(body: object, headers: Mapping[str, str]) -> int | None:
    """Webex's numeric errorCode from the body, else from `Cisco-Spark-Error-Codes`."""
    candidates: list[object] = []
    if isinstance(body, Mapping):
        candidates.append(body.get("errorCode"))
        for listed in (body.get("errors"), _nested_messages(body)):
            if isinstance(listed, list):
                candidates.extend(
                    item.get(name)
                    for item in listed
                    if isinstance(item, Mapping)
                    for name in ("errorCode", "code")
                )
    candidates.extend(headers.get("cisco-spark-error-codes", "").split(","))
    return next((code for item in candidates if (code := _as_int(item)) is not None), None)


def _nested_messages(body: Mapping[str, Any]) -> object:
    error = body.get("error")
    return error.get("message") if isinstance(error, Mapping) else None


def _lenient_json(response: HttpAnswer) -> object:
    """The parsed body of an error answer, or None: a body that is not JSON is no body."""
    try:
        return jsonlib.loads(response.content) if response.content else None
    except ValueError:
        return None


def _tracking_id(headers: Mapping[str, str], body: object) -> str | None:
    """Webex's `Trackingid` header (lower-case `headers`), else the body's `trackingId`."""
    from_body = body.get("trackingId") if isinstance(body, Mapping) else None
    return headers.get("trackingid") or _text(from_body)


class ErrorFields(TypedDict):
    """The structured fields of the `WebexError` raised for an HTTP answer."""

    http_status: int
    error_code: int | None
    tracking_id: str | None
    method: str
    path: str


def read_error(response: HttpAnswer, method: str, path: str) -> tuple[str, ErrorFields]:
    """The message (token redacted) and structured fields of an answer with an error status."""
    status = response.status_code
    body = _lenient_json(response)
    reason = response.reason_phrase
    detail = (webex_error_message(body) or reason)[:MESSAGE_LIMIT]
    message = f"{method} {path} answered {status} {reason}".rstrip()
    if detail and detail != reason:
        message = f"{message}: {redact(detail)}"
    fields = ErrorFields(
        http_status=status,
        error_code=webex_error_code(body, response.headers),
        tracking_id=_tracking_id(response.headers, body),
        method=method,
        path=path,
    )
    return message, fields


def read_success(response: HttpAnswer, method: str, path: str) -> WebexResponse:
    """The `WebexResponse` of an expected status; a body that is not a JSON object is refused."""
    headers: Mapping[str, str] = MappingProxyType(response.headers)
    status = response.status_code
    body: JsonObject | None = None
    if status != 204 and response.content.strip():
        problem = None
        try:
            parsed = jsonlib.loads(response.content)
        except ValueError:
            problem, parsed = "a body that is not JSON", None
        if problem is None and not isinstance(parsed, dict):
            problem = "a JSON body that is not an object"
        if problem is not None or not isinstance(parsed, dict):
            raise UnexpectedResponseError(
                f"{method} {path} answered {status} with {problem}",
                http_status=status,
                tracking_id=headers.get("trackingid"),
                method=method,
                path=path,
            )
        body = parsed
    return WebexResponse(
        status_code=status,
        body=body,
        tracking_id=_tracking_id(headers, body),
        method=method,
        path=path,
        next_url=_next_url(response),
        headers=headers,
    )


def _next_url(response: HttpAnswer) -> str | None:
    link = response.headers.get("link")
    if link is None:
        return None
    # The Link header read as httpx reads it.
    links = httpx.Response(response.status_code, headers=[("link", link)]).links
    url = links.get("next", {}).get("url")
    if not url:
        return None
    try:
        absolute = httpx.URL(url).is_absolute_url
    except httpx.InvalidURL:
        return url  # request() refuses it with an UnexpectedResponseError
    return url if absolute else str(httpx.URL(response.url).join(url))
