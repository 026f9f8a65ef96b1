"""Fidelity: the simulator, and the requests our tests send it, against the official OpenAPI files.

Also tests the contract helper itself: it must reject what the files do not document, or it
would prove nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

import tests.support.openapi as contract_module
from ledger.simulator import Simulator
from ledger.simulator.routes import ROUTES
from tests.support.openapi import (
    LOCATION_FROM_EXAMPLES,
    CatalogEndpoint,
    Operation,
    contract_event_hooks,
    find_spec_dir,
    load_contract,
    validate_request,
    validate_response,
)
from tests.support.simulator import AUTH, BASE


def test_skips_with_a_reason_when_the_files_are_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contract_module, "find_spec_dir", lambda: None)
    with pytest.raises(pytest.skip.Exception, match="webex-openapi files not found"):
        load_contract()


def test_contract_hooks_skip_naming_the_folders_when_the_files_are_absent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A client with the hooks must not quietly go unchecked: the test that made it is skipped.
    monkeypatch.setattr(contract_module, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setenv(contract_module.SPEC_DIR_ENV, str(tmp_path / "elsewhere"))
    with pytest.raises(pytest.skip.Exception) as skipped:
        contract_event_hooks()
    reason = str(skipped.value)
    assert "webex-openapi files not found" in reason
    for folder in ("elsewhere", "shared/webex-openapi", "webex-openapi"):
        assert str(tmp_path / folder) in reason


def test_the_checked_client_is_skipped_not_unchecked_when_the_files_are_absent(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setattr(contract_module, "find_spec_dir", lambda: None)
    with pytest.raises(pytest.skip.Exception, match="webex-openapi files not found"):
        request.getfixturevalue("api")


def test_location_schema_from_examples_fixes_the_spec_defect() -> None:
    load_contract()  # skips when the files are absent
    directory = find_spec_dir()
    assert directory is not None
    device = json.loads((directory / "webex-device.json").read_text(encoding="utf-8"))
    # The defect is still there: the component is the workspace-location schema.
    assert "countryCode" in device["components"]["schemas"]["Location"]["required"]
    assert set(LOCATION_FROM_EXAMPLES["required"]) == {"id", "name"}
    for path in ("/locations", "/locations/{locationId}"):
        example = device["paths"][path]["get"]["responses"]["200"]["content"]["application/json"][
            "example"
        ]
        validate_response("GET", "/v1" + path.replace("{locationId}", "L1"), 200, example)
    with pytest.raises(AssertionError, match="'name' is a required property"):
        validate_response("GET", "/v1/locations/L1", 200, {"id": "L1"})


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "complaint"),
    [
        ("GET", "/v1/people/x/settings", None, None, "no such operation"),
        ("GET", "/v1/telephony/config/people/x/voicemail", None, None, "no such operation"),
        ("POST", "/v1/people", None, {"emails": ["a@b.c"], "fristName": "A"}, "fristName"),
        ("POST", "/v1/people", None, {"displayName": "A"}, "'emails' is a required"),
        ("PUT", "/v1/people/x", None, {"emails": ["a@b.c"]}, "'displayName' is a required"),
        ("GET", "/v1/people", {"mail": "a@b.c"}, None, "'mail'"),
        ("GET", "/v1/people", {"callingData": "yes"}, None, "is not a boolean"),
        ("POST", "/v1/locations", None, {"name": "A", "timeZone": "UTC"}, "required"),
        ("GET", "/v1/licenses", None, {"x": 1}, "takes no request body"),
        ("PUT", "/v1/people/x/features/callerId", None, {"selectd": "X"}, "selectd"),
        ("GET", "/v1/telephony/config/numbers", {"number": "+1"}, None, "'number'"),
    ],
)
def test_the_contract_rejects_what_the_files_do_not_document(
    method: str, path: str, query: dict[str, Any] | None, body: Any, complaint: str
) -> None:
    with pytest.raises(AssertionError, match=re.escape(complaint)):
        validate_request(method, path, query, body)


def test_the_contract_rejects_undocumented_answers() -> None:
    with pytest.raises(AssertionError, match="status 201 is not documented"):
        validate_response("POST", "/v1/people", 201, {"id": "x"})
    with pytest.raises(AssertionError, match="without a body"):
        validate_response("PUT", "/v1/locations/L1", 204, {"id": "x"})
    with pytest.raises(AssertionError, match="totalUnits"):
        validate_response("GET", "/v1/licenses", 200, {"items": [{"totalUnits": "many"}]})
    validate_response("GET", "/v1/licenses", 503, {"errorMessage": "later"})  # not described


def test_link_continuation_keys_are_allowed_on_list_operations_only() -> None:
    validate_request("GET", "/v1/people?max=2&cursor=abc&callingData=true")
    validate_request("GET", "/v1/telephony/config/numbers", {"start": 0, "max": 10})
    with pytest.raises(AssertionError, match="'start'"):
        validate_request("GET", "/v1/people/x", {"start": 0})


def test_every_simulator_route_is_an_operation_of_the_files() -> None:
    contract = load_contract()
    for route in ROUTES:
        concrete = re.sub(r"\{\w+\}", "ID", route.template)
        operation = contract.find(route.method, concrete)
        official = not route.template.startswith(("/v1/telephony", "/v1/people/{personId}/f"))
        assert isinstance(operation, Operation if official else CatalogEndpoint), route.name
        assert re.sub(r"\{\w+\}", "{}", operation.template) == re.sub(
            r"\{\w+\}", "{}", route.template.removeprefix("/v1")
        )


def test_every_route_answers_as_the_files_say() -> None:
    """One scenario through every route, with every exchange validated by the event hooks."""
    sim = Simulator()
    hooks = contract_event_hooks()
    address = {
        "address1": "1 Main St",
        "address2": "Suite 5",
        "city": "Austin",
        "state": "TX",
        "postalCode": "78701",
        "country": "US",
    }
    site = {
        "name": "Austin HQ",
        "timeZone": "America/Chicago",
        "preferredLanguage": "en_us",
        "announcementLanguage": "en_us",
        "address": address,
    }
    with httpx.Client(
        transport=sim.transport(), base_url=BASE, headers=AUTH, event_hooks=hooks
    ) as api:
        license = api.get("/licenses").json()["items"][0]["id"]
        location_id = api.post("/locations", json={**site, "notes": "HQ"}).json()["id"]
        api.get("/locations", params={"name": "austin", "max": 10})
        api.get(f"/locations/{location_id}")
        api.put(
            f"/locations/{location_id}",
            json={"name": "Austin HQ", "timeZone": "America/Chicago", "address": address},
        )
        api.get(f"/telephony/config/locations/{location_id}")  # 404 5620
        api.post("/telephony/config/locations", json={"id": location_id, **site})
        api.get("/telephony/config/locations", params={"name": "Austin"})
        api.get(f"/telephony/config/locations/{location_id}")
        api.post(
            f"/telephony/config/locations/{location_id}/numbers",
            json={"phoneNumbers": ["+15125550100"], "state": "ACTIVE"},
        )
        person = api.post(
            "/people",
            params={"callingData": "true"},
            json={
                "emails": ["ana@example.com"],
                "firstName": "Ana",
                "lastName": "Alvarez",
                "displayName": "Ana Alvarez",
                "locationId": location_id,
                "licenses": [license],
                "extension": "1001",
                "phoneNumbers": [{"type": "work", "value": "+15125550100"}],
                "department": "Sales",
                "title": "Agent",
            },
        ).json()
        api.post("/people", json={"emails": ["ana@example.com"], "displayName": "Dup"})  # 409
        api.get("/people", params={"email": "ana@example.com", "callingData": "true"})
        api.get(
            "/telephony/config/numbers",
            params={"locationId": location_id, "phoneNumber": "+15125550100"},
        )
        shown = api.get(f"/people/{person['id']}", params={"callingData": "true"}).json()
        writable = {
            k: v
            for k, v in shown.items()
            if k not in {"id", "created", "lastModified", "type", "orgId"}
        }
        writable["phoneNumbers"] = [{"type": "work", "value": "+15125550100"}]
        api.put(f"/people/{person['id']}", params={"callingData": "true"}, json=writable)
        for feature, change in (
            ("voicemail", {"enabled": False}),
            ("callerId", {"selected": "LOCATION_NUMBER"}),
            ("callWaiting", {"enabled": False}),
        ):
            api.get(f"/people/{person['id']}/features/{feature}")
            api.put(f"/people/{person['id']}/features/{feature}", json=change)
        api.delete(f"/people/{person['id']}")
        api.get(f"/people/{person['id']}")  # 404
    exercised = set(sim.requests_by_route())
    assert exercised == {route.name for route in ROUTES}
