"""Claims, leases and fencing on a SQLite ledger (SPEC section 6, "Workers").

The scenarios are in tests/support/claims.py: test_postgres.py runs the same ones on PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.database import Ledger
from tests.support.claims import SCENARIOS, scenario_id


@pytest.mark.parametrize("scenario", SCENARIOS, ids=scenario_id)
def test_claims_on_sqlite(sqlite_ledger: Ledger, tmp_path: Path, scenario: object) -> None:
    scenario(sqlite_ledger, tmp_path)  # type: ignore[operator]
