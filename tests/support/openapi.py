"""Check requests and responses against the official Webex OpenAPI files.

The simulator must never be the only thing the client was checked against, so tests validate
what is sent to and answered by it against `webex-openapi/` (found beside the repository as
`../shared/webex-openapi/`, or at `$WEBEX_OPENAPI_DIR`). When the files are absent, every test
that needs them is skipped, naming the folders it looked in: never failed, and never passed
without the check it exists for.

    validate_request(method, url_path, query, json_body)
    validate_response(method, url_path, status, json_body)
    contract_event_hooks()   httpx event hooks that validate every exchange of a client

Operations come from `webex-admin.json` (People, Licenses) and `webex-device.json` (Locations),
matched by path template; bodies are validated with openapi-schema-validator (OAS 3.0) after
inlining `$ref`s. Paths that those files do not hold (`/telephony/...`, the calling settings under
`/people/{id}/features/...`) are checked against the derived endpoint catalog: the method and
path must exist, and every query key and top-level body key must be one it lists. The catalog
has no response schemas, so for those only the operation's existence is checked.

Strict but true to the files: a key the files do not describe is an error (an object schema
with `properties` and no `additionalProperties` is read as closed), a field they mark required
must be there, a query key must be a declared parameter. The one allowance: the continuation
keys Webex writes into `Link: rel="next"` URLs (`max`, `start`, `cursor`) are accepted on list
operations, since a client follows those URLs exactly as given and the files cannot list them.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from openapi_schema_validator import OAS30ReadValidator, OAS30WriteValidator, oas30_format_checker

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_DIR_ENV = "WEBEX_OPENAPI_DIR"
OFFICIAL_FILES = ("webex-admin.json", "webex-device.json")
CATALOG_FILE = "derived-endpoint-catalog.wxc_sdk.json"
PAGING_KEYS = frozenset({"max", "start", "cursor"})
HTTP_METHODS = ("get", "put", "post", "delete", "patch")

# Known defect of webex-device.json: its `Location` component (used by the GET /locations and
# GET /locations/{locationId} answers) is the *workspace-location* schema (displayName,
# countryCode, cityName, numeric latitude, `address` a string, ...). The `example` objects of
# those same operations show the real shape, and this schema is written from them: it replaces
# the component wherever webex-device.json refers to it. Only `id` and `name` are required, as
# the examples differ in which of the other fields they carry (one has no preferredLanguage).
LOCATION_FROM_EXAMPLES: dict[str, Any] = {
    "type": "object",
    "required": ["id", "name"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "orgId": {"type": "string"},
        "address": {
            "type": "object",
            "properties": {
                key: {"type": "string"}
                for key in ("address1", "address2", "city", "state", "postalCode", "country")
            },
        },
        "timeZone": {"type": "string"},
        "preferredLanguage": {"type": "string"},
        "latitude": {"type": "string"},
        "longitude": {"type": "string"},
        "notes": {"type": "string"},
    },
}
_DEFECTIVE_REF = ("webex-device.json", "#/components/schemas/Location")


def spec_dir_candidates() -> list[Path]:
    """Where the webex-openapi directory is looked for, in order."""
    candidates = []
    if os.environ.get(SPEC_DIR_ENV):
        candidates.append(Path(os.environ[SPEC_DIR_ENV]))
    candidates += [
        REPO_ROOT.parent / "shared" / "webex-openapi",
        REPO_ROOT.parent / "webex-openapi",
    ]
    return candidates


def find_spec_dir() -> Path | None:
    """The webex-openapi directory: $WEBEX_OPENAPI_DIR, or beside the repository."""
    for candidate in spec_dir_candidates():
        if all((candidate / name).is_file() for name in (*OFFICIAL_FILES, CATALOG_FILE)):
            return candidate
    return None


@dataclass(frozen=True)
class Operation:
    """One operation of an official file, with its `$ref`s inlined."""

    source: str
    method: str
    template: str
    parameters: tuple[dict[str, Any], ...]
    request_schema: dict[str, Any] | None
    request_required: bool
    responses: dict[str, dict[str, Any]]

    @property
    def name(self) -> str:
        return f"{self.method} {self.template} ({self.source})"

    @property
    def paginated(self) -> bool:
        """A list operation: its 200 answer declares a Link header."""
        headers = self.responses.get("200", {}).get("headers", {})
        return "Link" in headers


@dataclass(frozen=True)
class CatalogEndpoint:
    """One endpoint of the derived catalog: only its keys are known, not their schemas."""

    method: str
    template: str
    query: frozenset[str]
    body: frozenset[str]
    paginated: bool

    @property
    def name(self) -> str:
        return f"{self.method} {self.template} ({CATALOG_FILE})"


def _segments(template: str) -> tuple[str, ...]:
    return tuple(part for part in template.strip("/").split("/") if part)


def _matches(template: str, path: str) -> int | None:
    """How many literal segments match, or None when the template does not fit the path."""
    wanted, given = _segments(template), _segments(path)
    if len(wanted) != len(given):
        return None
    literal = 0
    for expected, actual in zip(wanted, given, strict=True):
        if expected.startswith("{") and expected.endswith("}"):
            continue
        if expected != actual:
            return None
        literal += 1
    return literal


class _RefInliner:
    """Inlines local `$ref`s of one document; a cycle is left open (accepts anything)."""

    def __init__(self, source: str, document: dict[str, Any]) -> None:
        self.source = source
        self.document = document

    def resolve(self, node: Any, trail: tuple[str, ...] = ()) -> Any:
        if isinstance(node, list):
            return [self.resolve(item, trail) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            if (self.source, ref) == _DEFECTIVE_REF:
                return copy.deepcopy(LOCATION_FROM_EXAMPLES)
            if ref in trail:
                return {}
            target: Any = self.document
            for part in ref.removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            return self.resolve(target, (*trail, ref))
        return {key: self.resolve(value, trail) for key, value in node.items()}


def _closed(schema: Any) -> Any:
    """A copy where every object schema with `properties` and no `additionalProperties` is
    closed, so that a key the files do not describe fails validation."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: _closed(value) for key, value in schema.items() if key != "example"}
    composed = any(key in schema for key in ("allOf", "anyOf", "oneOf"))
    if "properties" in schema and "additionalProperties" not in schema and not composed:
        result["additionalProperties"] = False
    return result


class Contract:
    """The loaded files: official operations and catalog endpoints."""

    def __init__(self, directory: Path) -> None:
        self.operations: list[Operation] = []
        for name in OFFICIAL_FILES:
            document = json.loads((directory / name).read_text(encoding="utf-8"))
            inliner = _RefInliner(name, document)
            for template, item in document["paths"].items():
                shared = item.get("parameters", [])
                for method in HTTP_METHODS:
                    if method in item:
                        self.operations.append(
                            self._operation(name, method, template, item[method], shared, inliner)
                        )
        catalog = json.loads((directory / CATALOG_FILE).read_text(encoding="utf-8"))
        self.catalog = [
            CatalogEndpoint(
                entry["method"].upper(),
                entry["path"],
                frozenset(entry["query"]),
                frozenset(entry["body"]),
                bool(entry["paginated"]),
            )
            for entry in catalog["endpoints"]
        ]

    @staticmethod
    def _operation(
        source: str,
        method: str,
        template: str,
        raw: dict[str, Any],
        shared: list[Any],
        inliner: _RefInliner,
    ) -> Operation:
        parameters = tuple(inliner.resolve(p) for p in [*shared, *raw.get("parameters", [])])
        body = inliner.resolve(raw.get("requestBody")) or {}
        schema = body.get("content", {}).get("application/json", {}).get("schema")
        return Operation(
            source=source,
            method=method.upper(),
            template=template,
            parameters=parameters,
            request_schema=_closed(schema) if schema is not None else None,
            request_required=bool(body.get("required")),
            responses={
                str(status): _closed(inliner.resolve(response))
                for status, response in raw.get("responses", {}).items()
            },
        )

    def find(self, method: str, path: str) -> Operation | CatalogEndpoint:
        """The operation for a method and a concrete path; AssertionError naming it if none."""
        method = method.upper()
        path, _ = _split(path, None)
        best: tuple[int, Operation] | None = None
        for operation in self.operations:
            score = _matches(operation.template, path)
            if operation.method == method and score is not None:
                if best is None or score > best[0]:
                    best = (score, operation)
        if best is not None:
            return best[1]
        found: tuple[int, CatalogEndpoint] | None = None
        for endpoint in self.catalog:
            score = _matches(endpoint.template, path)
            if endpoint.method == method and score is not None:
                if found is None or score > found[0]:
                    found = (score, endpoint)
        if found is not None:
            return found[1]
        raise AssertionError(f"{method} {path}: no such operation in the Webex OpenAPI files")

    def validate_request(
        self, method: str, url_path: str, query: Mapping[str, Any] | None, json_body: Any
    ) -> None:
        path, pairs = _split(url_path, query)
        operation = self.find(method, path)
        if isinstance(operation, CatalogEndpoint):
            allowed = operation.query | (PAGING_KEYS if operation.paginated else frozenset())
            _keys_allowed(operation.name, "query key", (key for key, _ in pairs), allowed)
            if json_body is not None:
                if not isinstance(json_body, dict):
                    raise AssertionError(f"{operation.name}: the body must be a JSON object")
                _keys_allowed(operation.name, "body key", json_body, operation.body)
            return
        _check_query(operation, pairs)
        if operation.request_schema is None:
            if json_body is not None:
                raise AssertionError(f"{operation.name}: takes no request body")
            return
        if json_body is None:
            if operation.request_required:
                raise AssertionError(f"{operation.name}: a request body is required")
            return
        _validate(OAS30WriteValidator, operation.request_schema, json_body, operation.name)

    def validate_response(self, method: str, url_path: str, status: int, json_body: Any) -> None:
        path, _ = _split(url_path, None)
        operation = self.find(method, path)
        if isinstance(operation, CatalogEndpoint):
            return
        response = operation.responses.get(str(status)) or operation.responses.get("default")
        if response is None:
            raise AssertionError(f"{operation.name}: status {status} is not documented")
        content = response.get("content") or {}
        schema = content.get("application/json", {}).get("schema")
        if schema is None:
            if 200 <= status < 300 and json_body is not None:
                raise AssertionError(f"{operation.name}: {status} is documented without a body")
            return
        _validate(OAS30ReadValidator, schema, json_body, f"{operation.name} -> {status}")


def _split(url_path: str, query: Mapping[str, Any] | None) -> tuple[str, list[tuple[str, str]]]:
    """Path relative to /v1, and the query pairs from the URL plus those given."""
    parts = urlsplit(url_path)
    path = parts.path
    if path.startswith("/v1/") or path == "/v1":
        path = path[3:] or "/"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    for key, value in (query or {}).items():
        pairs.append((key, str(value).lower() if isinstance(value, bool) else str(value)))
    return path, pairs


def _keys_allowed(name: str, what: str, keys: Iterable[str], allowed: frozenset[str]) -> None:
    unknown = sorted(set(keys) - allowed)
    if unknown:
        raise AssertionError(f"{name}: {what}(s) {unknown} not in {sorted(allowed)}")


def _check_query(operation: Operation, pairs: list[tuple[str, str]]) -> None:
    declared = {p["name"]: p for p in operation.parameters if p.get("in") == "query"}
    allowed = frozenset(declared) | (PAGING_KEYS if operation.paginated else frozenset())
    _keys_allowed(operation.name, "query key", (key for key, _ in pairs), allowed)
    given = dict(pairs)
    for name, parameter in declared.items():
        if parameter.get("required") and name not in given:
            raise AssertionError(f"{operation.name}: required query key {name!r} missing")
        if name in given and "schema" in parameter:
            value = _coerce(given[name], parameter["schema"], operation.name, name)
            _validate(OAS30WriteValidator, parameter["schema"], value, f"{operation.name} ?{name}")


def _coerce(raw: str, schema: dict[str, Any], name: str, key: str) -> Any:
    """A query string value as the type its schema declares."""
    kind = schema.get("type")
    try:
        if kind == "boolean":
            if raw not in ("true", "false"):
                raise ValueError(raw)
            return raw == "true"
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
    except ValueError:
        raise AssertionError(f"{name}: query key {key!r}={raw!r} is not a {kind}") from None
    return raw


def _validate(validator_class: Any, schema: dict[str, Any], instance: Any, name: str) -> None:
    validator = validator_class(schema, format_checker=oas30_format_checker)
    problems = sorted(validator.iter_errors(instance), key=lambda error: list(error.path))
    if problems:
        shown = "; ".join(
            f"at {'/'.join(str(p) for p in error.path) or '(root)'}: {error.message}"
            for error in problems[:5]
        )
        raise AssertionError(f"{name}: {shown}")


@functools.cache
def _load(directory: Path) -> Contract:
    return Contract(directory)


def load_contract() -> Contract:
    """The contract, loaded once per session; skips the calling test if the files are absent."""
    directory = find_spec_dir()
    if directory is None:
        looked = ", ".join(str(candidate) for candidate in spec_dir_candidates())
        pytest.skip(
            f"webex-openapi files not found: looked in {looked} "
            f"(set ${SPEC_DIR_ENV} to the folder holding them)"
        )
    return _load(directory)


def validate_request(
    method: str,
    url_path: str,
    query: Mapping[str, Any] | None = None,
    json_body: Any = None,
) -> None:
    """Assert that a request is one the Webex API documents (see the module docstring)."""
    load_contract().validate_request(method, url_path, query, json_body)


def validate_response(method: str, url_path: str, status: int, json_body: Any = None) -> None:
    """Assert that an answer has a documented status and, where a schema exists, its shape."""
    load_contract().validate_response(method, url_path, status, json_body)


def contract_event_hooks() -> dict[str, list[Any]]:
    """httpx `event_hooks` validating every request and answer of a client against the files.

    `httpx.Client(..., event_hooks=contract_event_hooks())`: a request or an answer the files do
    not document fails the test at the call that made it. Without the files, the calling test
    is skipped (see `load_contract`); a test whose requests are wrong on purpose, or that needs
    no contract, uses a client without these hooks.
    """
    contract = load_contract()

    def check(response: httpx.Response) -> None:
        request = response.request
        sent = json.loads(request.content) if request.content else None
        contract.validate_request(request.method, str(request.url), None, sent)
        response.read()
        received = response.json() if response.content else None
        contract.validate_response(request.method, str(request.url), response.status_code, received)

    return {"request": [], "response": [check]}
