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


def test_a_settled_location_is_reported_without_a_write(tmp_path: Path) -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Connection

    from ledger.config import load_settings
    from ledger.error_handling import ReasonCode
    from ledger.ingest import ingest_file
    from ledger.records import Failure, StepName

    csv_path = tmp_path / "users.csv"
    write_csv(
        csv_path,
        ["email", "first_name", "location_name", "extension"],
        [["a@example.com", "Ann", "HQ", "1001"], ["b@example.com", "Bob", "Annex", "1002"]],
    )
    settings = load_settings(
        LEDGER_DATABASE_URL=f"sqlite:///{tmp_path}/l.db", LEDGER_OUTPUT_DIR=tmp_path / "out"
    )
    ledger = open_ledger(settings.LEDGER_DATABASE_URL)
    commits: list[int] = []

    def seen(_connection: Connection) -> None:
        commits.append(1)

    try:
        run = ingest_file(ledger, csv_path, settings).run
        ready = claim_entity(ledger, run.id, "location", "HQ", lease_s=60.0)
        update_entity(ledger, ready, remote_id="L1", done=True)
        failed = claim_entity(ledger, run.id, "location", "Annex", lease_s=60.0)
        refused = Failure(ReasonCode.FORBIDDEN, "not a full admin", 403, StepName.LOCATION)
        update_entity(ledger, failed, failure=refused)
        event.listen(ledger.write_engine, "commit", seen)
        try:
            again = claim_entity(ledger, run.id, "location", "HQ", lease_s=60.0)
            failed_again = claim_entity(ledger, run.id, "location", "Annex", lease_s=60.0)
        finally:
            event.remove(ledger.write_engine, "commit", seen)
        assert commits == []  # read, not written
        assert (again.status, again.remote_id, again.token) == ("ready", "L1", None)
        assert failed_again.status == "failed" and failed_again.token is None
        assert failed_again.failure is not None and failed_again.failure.http_status == 403

        new = claim_entity(ledger, run.id, "location", "Elsewhere", lease_s=60.0)
        assert new.status == "claimed" and new.token is not None  # a new one is still taken
    finally:
        ledger.dispose()
