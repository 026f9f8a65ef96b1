"""What a new user's voicemail is taken to hold: learnt once per location, and each user given
a copy of its own (a change made to one user's is nobody else's)."""

from __future__ import annotations

import copy
from typing import Any

from ledger.new_user_defaults import NewUserDefaults
from ledger.simulator.state import default_voicemail


def test_each_user_gets_a_voicemail_default_of_its_own() -> None:
    defaults = NewUserDefaults()
    seen: dict[str, Any] = default_voicemail()
    defaults.learn_voicemail("L-1", seen)
    seen["sendUnansweredCalls"]["numberOfRings"] = 9  # the answer read, changed later

    first = defaults.voicemail("L-1")
    assert first == default_voicemail()
    assert first is not None
    first["sendUnansweredCalls"]["numberOfRings"] = 7
    first["notifications"]["enabled"] = True
    first["enabled"] = False

    second = defaults.voicemail("L-1")
    assert second == default_voicemail()
    assert defaults.voicemail("L-2") is None


def test_a_voicemail_that_may_hold_the_users_own_values_is_not_learnt() -> None:
    defaults = NewUserDefaults()
    own = copy.deepcopy(default_voicemail())
    own["notifications"] = {"enabled": True, "destination": "ana@example.com"}
    defaults.learn_voicemail("L-1", own)
    assert defaults.voicemail("L-1") is None
    defaults.learn_voicemail("L-1", {"enabled": True, "aliases": ["x"]})
    assert defaults.voicemail("L-1") is None
