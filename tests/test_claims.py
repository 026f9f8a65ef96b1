"""Claims, leases and fencing on a SQLite ledger (SPEC section 6, "Workers").

The scenarios are in tests/support/claims.py: test_postgres.py runs the same ones on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.database import Ledger, open_ledger
from tests.support.claims import SCENARIOS, scenario_id


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = open_ledger(f"sqlite:///{tmp_path}/l.db")
    yield opened
    opened.dispose()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=scenario_id)
def test_claims_on_sqlite(ledger: Ledger, tmp_path: Path, scenario: object) -> None:
    scenario(ledger, tmp_path)  # type: ignore[operator]
