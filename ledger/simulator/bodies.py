"""Reading untrusted request bodies and queries, and Webex-style pagination.

Routes read every field through these helpers so a wrong type is a 400 in the endpoint's own
error shape, never a Python exception inside the simulator.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar
from urllib.parse import urlencode

from ledger.simulator.errors import ApiError, bad_request
from ledger.simulator.messages import HeaderPairs, SimRequest
from ledger.simulator.state import OrgStore

T = TypeVar("T")
ErrorFactory = Callable[[str], ApiError]
PAGING_KEYS = frozenset({"start", "max", "cursor"})


@dataclass(slots=True)
class Reply:
    """What a route answers: status, a JSON-able body (None for no body) and extra headers."""

    status: int
    body: object = None
    headers: HeaderPairs = ()


@dataclass(slots=True)
class Call:
    """One routed request: the org, the request, its path parameters, and what it changed."""

    store: OrgStore
    request: SimRequest
    params: dict[str, str]
    now: float
    lookup_delay_s: float = 0.0
    changed: bool = field(default=False)

    def json_body(self, error: ErrorFactory = bad_request) -> dict[str, object]:
        """The body as a JSON object, or a 400 in the given shape."""
        try:
            value = json.loads(self.request.body) if self.request.body else None
        except (ValueError, UnicodeDecodeError):
            raise error("The request body is not valid JSON.") from None
        if not isinstance(value, dict):
            raise error("The request body must be a JSON object.")
        return value

    def flag(self, name: str) -> bool:
        """A boolean query parameter (`true`, case-insensitive)."""
        value = self.request.query_value(name)
        return value is not None and value.lower() == "true"


def opt_str(
    body: dict[str, object], key: str, error: ErrorFactory = bad_request, *, max_len: int = 1024
) -> str | None:
    """A string field, None when absent or null."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise error(f"Field '{key}' must be a string.")
    if len(value) > max_len:
        raise error(f"Field '{key}' is longer than {max_len} characters.")
    return value


def opt_bool(body: dict[str, object], key: str, error: ErrorFactory = bad_request) -> bool | None:
    """A boolean field, None when absent or null."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise error(f"Field '{key}' must be true or false.")
    return value


def opt_obj(
    body: dict[str, object], key: str, error: ErrorFactory = bad_request
) -> dict[str, object] | None:
    """A nested object field, None when absent or null."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise error(f"Field '{key}' must be an object.")
    return value


def opt_list(body: dict[str, object], key: str, error: ErrorFactory = bad_request) -> list[object]:
    """A list field, empty when absent or null."""
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise error(f"Field '{key}' must be an array.")
    return value


def str_list(body: dict[str, object], key: str, error: ErrorFactory = bad_request) -> list[str]:
    """A list-of-strings field, empty when absent."""
    items = opt_list(body, key, error)
    if not all(isinstance(item, str) for item in items):
        raise error(f"Field '{key}' must be an array of strings.")
    return [item for item in items if isinstance(item, str)]


def query_int(call: Call, name: str, default: int, *, low: int, high: int | None = None) -> int:
    """An integer query parameter; out of range or not a number is a 400."""
    raw = call.request.query_value(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"Query parameter '{name}' must be an integer.") from None
    if value < low:
        raise bad_request(f"Query parameter '{name}' must be at least {low}.")
    return value if high is None else min(value, high)


def paginate(
    call: Call,
    items: Sequence[T],
    *,
    default_max: int,
    max_cap: int,
    style: Literal["start", "cursor"] = "start",
) -> tuple[list[T], HeaderPairs]:
    """One page of `items` and, when more follow, a `Link: <absolute url>; rel="next"` header.

    People pages use an opaque `cursor` (as Webex does) so that a client must follow the link
    rather than compute offsets; the other lists use `start`.
    """
    size = query_int(call, "max", default_max, low=1, high=max_cap)
    start = _cursor_start(call) if style == "cursor" else query_int(call, "start", 0, low=0)
    page = list(items[start : start + size])
    if start + size >= len(items):
        return page, ()
    following = start + size
    pairs = [(k, v) for k, v in call.request.query if k not in PAGING_KEYS]
    pairs.append(("max", str(size)))
    if style == "cursor":
        token = base64.urlsafe_b64encode(f"start={following}".encode()).decode().rstrip("=")
        pairs.append(("cursor", token))
    else:
        pairs.append(("start", str(following)))
    url = f"{call.request.origin}{call.request.path}?{urlencode(pairs)}"
    return page, (("Link", f'<{url}>; rel="next"'),)


def _cursor_start(call: Call) -> int:
    token = call.request.query_value("cursor")
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        name, _, number = text.partition("=")
        if name != "start" or not number.isdigit():
            raise ValueError(text)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad_request("The cursor is not valid.") from None
