"""The settings Webex gives a calling user it has just created, as this worker read them: the
current value a settings write of the next user created there sends back, so that user's
write needs no read of its own (SPEC section 4).

Voicemail's PUT carries the whole object (`notifications` and `transferToNumber` are
required), so a write needs the current values of what the row does not name. A user created
a moment ago holds Webex's defaults for a new user of that location, the same for each: the
first such user's voicemail is read as before, and what it shows answers for the next users
this worker creates in that location. A default that names an address or a number
(a notification destination, an e-mail copy's address) could be the user's own: then every
new user's voicemail is read, as before.

Only users whose create was answered with their id are answered from here (`fresh_person`):
a person found after a create whose outcome was unknown, or found existing, is read.
"""

from __future__ import annotations

import threading

from ledger.action_helpers import JSON, json_copy

# String values a default may hold and still be the same for every new user: choices, not
# addresses.
SHARED_STRING_KEYS = frozenset({"greeting", "storageType"})


class NewUserDefaults:
    """Per location id, the voicemail a user created there starts with (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._voicemail: dict[str, JSON] = {}

    def voicemail(self, location_id: str) -> JSON | None:
        """A copy of what a new user's voicemail holds in that location, None if not known."""
        with self._lock:
            known = self._voicemail.get(location_id)
        return json_copy(known) if known is not None else None

    def learn_voicemail(self, location_id: str, seen: JSON) -> None:
        """Keep what a new user's voicemail showed, unless it may hold the user's own values."""
        if not same_for_every_user(seen):
            return
        with self._lock:
            self._voicemail.setdefault(location_id, json_copy(seen))


def same_for_every_user(value: object, key: str = "") -> bool:
    """Whether a settings object holds only switches, counts and choices (no address, number
    or name, which could be the user's own)."""
    if isinstance(value, dict):
        return all(same_for_every_user(item, str(name)) for name, item in value.items())
    if isinstance(value, list):
        return not value
    if isinstance(value, str):
        return key in SHARED_STRING_KEYS
    return value is None or isinstance(value, bool | int | float)
