"""What the simulator's own tests share: the org they talk to and how they build requests."""

from __future__ import annotations

from typing import Any

import httpx

BASE = "http://sim.local/v1"
AUTH = {"Authorization": "Bearer test-token"}
ADDRESS = {
    "address1": "100 Congress Ave",
    "city": "Austin",
    "state": "TX",
    "postalCode": "78701",
    "country": "US",
}


def location_body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "timeZone": "America/Chicago",
        "preferredLanguage": "en_us",
        "announcementLanguage": "en_us",
        "address": dict(ADDRESS),
    }


def create_location(api: httpx.Client, name: str, *, calling: bool = True) -> str:
    response = api.post("/locations", json=location_body(name))
    assert response.status_code == 201, response.text
    location_id: str = response.json()["id"]
    if calling:
        enabled = api.post(
            "/telephony/config/locations", json={"id": location_id, **location_body(name)}
        )
        assert enabled.status_code == 201, enabled.text
    return location_id


def license_id(api: httpx.Client, name: str = "Webex Calling - Professional") -> str:
    items = api.get("/licenses").json()["items"]
    return next(str(item["id"]) for item in items if item["name"] == name)


def person_body(email: str, location_id: str, license: str, **extra: Any) -> dict[str, Any]:
    return {
        "emails": [email],
        "firstName": "Ana",
        "lastName": "Alvarez",
        "displayName": "Ana Alvarez",
        "locationId": location_id,
        "licenses": [license],
        **extra,
    }


def add_numbers(api: httpx.Client, location_id: str, *numbers: str) -> httpx.Response:
    return api.post(
        f"/telephony/config/locations/{location_id}/numbers",
        json={"phoneNumbers": list(numbers), "state": "ACTIVE"},
    )


def create_user(api: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return api.post("/people", params={"callingData": "true"}, json=body)


LOCATION = location_body("Austin HQ")


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
