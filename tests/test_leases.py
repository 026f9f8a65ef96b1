"""The heartbeat keeps a live worker's claims: rows and the shared locations it provisions."""

from __future__ import annotations

import time
from pathlib import Path

from ledger.batch_iterator import LeaseKeeper
from ledger.database import open_ledger
from ledger.state_store import claim_entity, update_entity
from tests.support.csvfiles import write_csv


def test_a_held_location_outlives_its_lease_while_the_heartbeat_beats(tmp_path: Path) -> None:
    from ledger.config import load_settings
    from ledger.ingest import ingest_file

    csv_path = tmp_path / "users.csv"
    write_csv(
        csv_path,
        ["email", "first_name", "location_name", "extension"],
        [["a@example.com", "Ann", "HQ", "1001"]],
    )
    settings = load_settings(
        LEDGER_DATABASE_URL=f"sqlite:///{tmp_path}/l.db", LEDGER_OUTPUT_DIR=tmp_path / "out"
    )
    ledger = open_ledger(settings.LEDGER_DATABASE_URL)
    try:
        run = ingest_file(ledger, csv_path, settings).run
        mine = claim_entity(ledger, run.id, "location", "HQ", lease_s=1.0)
        assert mine.token is not None

        with LeaseKeeper(ledger, lease_s=1.0) as keeper:
            keeper.hold(mine.token)
            time.sleep(2.0)  # two leases long: without the heartbeat it would have expired
            other = claim_entity(ledger, run.id, "location", "HQ", lease_s=1.0)
            assert other.token is None and other.status == "claimed"
            keeper.drop(mine.token)

        time.sleep(1.2)  # no heartbeat now: the lease runs out and another worker may take it
        taken = claim_entity(ledger, run.id, "location", "HQ", lease_s=1.0)
        assert taken.token is not None and taken.token != mine.token
        done = update_entity(ledger, taken, remote_id="L1", done=True)
        assert done.status == "ready"
    finally:
        ledger.dispose()
