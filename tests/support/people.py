"""The CSV row of a person, as the tests' inputs hold them.

person(1)                               user1@example.com in HQ, with HQ's location values
person(2, "Branch", values=False)       in Branch, with no location values
person(3, values=False, email="bad")    any cell overridden
"""

from __future__ import annotations

# The values of a location as the simulator seeds one by default (seeding.DEFAULT_ADDRESS and
# add_location's defaults): a seeded "HQ" agrees with rows that carry these.
HQ_VALUES = {
    "location_time_zone": "America/Chicago",
    "location_preferred_language": "en_us",
    "location_announcement_language": "en_us",
    "location_address1": "100 Main St",
    "location_city": "Austin",
    "location_state": "TX",
    "location_postal_code": "78701",
    "location_country": "US",
}


def person(n: int, location: str = "HQ", *, values: bool = True, **cells: str) -> dict[str, str]:
    """A valid CSV row for user n in `location` (with the HQ values unless `values=False`)."""
    row = {
        "email": f"user{n}@example.com",
        "first_name": "User",
        "last_name": f"Number{n}",
        "location_name": location,
        "extension": str(1000 + n),
    }
    if values:
        row |= HQ_VALUES
    return row | cells


def phone(n: int) -> str:
    return f"+1512555{n:04d}"
