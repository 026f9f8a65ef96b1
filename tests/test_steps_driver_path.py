"""The step-record hot path runs its group's statements through the driver (`driver_sql`),
not through SQLAlchemy's per-execution parameter processing. What it stores must be what the
SQLAlchemy path (a write made alone) stores, value for value and, on SQLite, where datetimes
are text compared as text, byte for byte.

Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Boolean, bindparam, create_engine, select, text, update
from sqlalchemy.engine import Connection

from ledger.database import Ledger, open_ledger
from ledger.models import Base, Row
from ledger.records import ClaimedRow, StepOutcome, as_utc
from ledger.state_store import claim_batch, finish_row, record_steps, steps
from ledger.state_store.driver_sql import Dialect
from tests.support.ledgers import make_run

LEASE_S = 60.0
# Microseconds 0: the text SQLite stores still carries them (".000000").
AT = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
LATER = AT + timedelta(seconds=1, microseconds=250_001)
EMAIL = "someone@example.com"
ODD_ID = 'LOC-"quoted"\\ élan ✓'


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/l.db"
    else:
        url = request.getfixturevalue("postgres_ledger_url")
    opened = open_ledger(url)
    yield opened
    opened.dispose()


def first_outcomes(row: ClaimedRow) -> tuple[StepOutcome, ...]:
    return (
        StepOutcome("location", "unchanged", "location", "HQ", 200, ODD_ID),
        StepOutcome("user", "started", "user", EMAIL),
    )


def second_outcomes(row: ClaimedRow) -> tuple[StepOutcome, ...]:
    # A failure over `started` keeps `started` and its time; the number is new.
    return (
        StepOutcome("user", "failed", "user", EMAIL, 500, None, "boom", "TRK-1"),
        StepOutcome("number", "created", "number", "HQ:1", 201, "NUM-1", None, "TRK-2"),
        StepOutcome("user", "created", "user", EMAIL, 200, "PERSON-1"),
    )


def stored(connection: Connection, pk: int) -> dict[str, Any]:
    """Everything the writes left of row `pk` (its claim token: whether it has one), raw."""
    by_pk = {"pk": pk}
    row = connection.execute(
        text(
            "SELECT status, reason_code, reason_message, reason_step, http_status, "
            "claim_token IS NULL, claimed_by, lease_expires_at, updated_at, finished_at "
            "FROM rows WHERE id = :pk"
        ),
        by_pk,
    ).one()
    step_rows = connection.execute(
        text(
            "SELECT step, entity_type, entity_key, status, attempts, http_status, remote_id, "
            "message, tracking_id, updated_at FROM steps WHERE row_pk = :pk ORDER BY step"
        ),
        by_pk,
    ).all()
    events = connection.execute(
        text("SELECT kind, step, detail_json, at FROM events WHERE row_pk = :pk ORDER BY id"),
        by_pk,
    ).all()
    return {"row": tuple(row), "steps": [tuple(s) for s in step_rows], "events": events}


def test_a_group_stores_what_a_write_alone_stores(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = make_run(ledger, tmp_path, rows=4)
    grouped, alone = claim_batch(ledger, run.id, "w1", limit=2, lease_s=LEASE_S)
    now = [AT]
    monkeypatch.setattr(steps, "utcnow", lambda: now[0])

    # The group path (a thread alone still commits through the group's writer) ...
    record_steps(ledger, grouped, first_outcomes(grouped), lease_s=LEASE_S)
    # ... and the path a write takes when its group could not be written.
    steps.STEP_WRITER.write_one(steps._StepWrite(ledger, alone, first_outcomes(alone), LEASE_S))
    now[0] = LATER
    record_steps(ledger, grouped, second_outcomes(grouped), lease_s=None)
    steps.STEP_WRITER.write_one(steps._StepWrite(ledger, alone, second_outcomes(alone), None))
    with ledger.engine.connect() as connection:
        assert stored(connection, grouped.pk) == stored(connection, alone.pk)
        before_finish = stored(connection, grouped.pk)

    finish_row(
        ledger, grouped, status="success", required_steps=("location", "user", "number", "user")
    )
    steps.STEP_WRITER.write_one(
        steps._FinishWrite(
            ledger, alone, "success", None, None, None, None, ("location", "user", "number")
        )
    )
    with ledger.engine.connect() as connection:
        after = stored(connection, grouped.pk)
        assert after == stored(connection, alone.pk)

    # And what they store is what was asked.
    assert [s[3] for s in before_finish["steps"]] == ["unchanged", "created", "created"]
    user_step = before_finish["steps"][2]
    assert user_step[4] == 1 and user_step[6] == "PERSON-1"
    assert after["row"][0] == "success"
    details = [json.loads(e[2]) for e in after["events"]]
    assert details[1] == {"http_status": 200, "remote_id": ODD_ID}  # after the claim's
    assert details[-1] == {"reason_code": None}


def test_datetimes_written_by_a_group_read_back_and_compare_as_sqlalchemy_binds(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = make_run(ledger, tmp_path, rows=2)
    (row,) = claim_batch(ledger, run.id, "w1", limit=1, lease_s=LEASE_S)
    monkeypatch.setattr(steps, "utcnow", lambda: LATER)
    record_steps(ledger, row, first_outcomes(row), lease_s=LEASE_S)
    lease_end = LATER + timedelta(seconds=LEASE_S)

    with ledger.read() as session:
        found = session.get_one(Row, row.pk)
        assert as_utc(found.updated_at) == LATER
        assert found.lease_expires_at is not None
        assert as_utc(found.lease_expires_at) == lease_end

        def leases(condition: Any) -> list[int]:
            return list(session.scalars(select(Row.id).where(Row.id == row.pk, condition)))

        tick = timedelta(microseconds=1)
        assert leases(Row.lease_expires_at == lease_end) == [row.pk]
        assert leases(Row.lease_expires_at > lease_end - tick) == [row.pk]
        assert leases(Row.lease_expires_at < lease_end + tick) == [row.pk]
        assert leases(Row.lease_expires_at > lease_end) == []
        assert leases(Row.lease_expires_at < lease_end) == []
        assert leases(Row.updated_at == LATER) == [row.pk]

    if ledger.is_sqlite:  # the very text SQLAlchemy writes for a datetime
        with ledger.engine.connect() as connection:
            raw = connection.execute(
                text("SELECT updated_at, lease_expires_at FROM rows WHERE id = :pk"),
                {"pk": row.pk},
            ).one()
        assert tuple(raw) == ("2031-05-06 07:08:10.250001", "2031-05-06 07:09:10.250001")


@pytest.mark.parametrize(
    "value",
    [None, 0, 201, -3, "", "PERSON-1", 'q"uote\\back', "élan ✓ \U0001f600", "\n\t", True, 1.5],
)
def test_event_details_are_the_json_an_event_stores(value: object) -> None:
    assert steps._json(value) == json.dumps(value)


def test_a_statement_needing_a_conversion_the_driver_lacks_is_refused() -> None:
    engine = create_engine("sqlite://")
    dialect = Dialect(engine.dialect)
    entities = Base.metadata.tables["entities"]
    converted = update(entities).values(calling_enabled=bindparam("b_on", type_=Boolean))
    with pytest.raises(TypeError, match="b_on"):
        dialect.statement(converted, ["b_on"])
    unnamed = update(entities).values(remote_id=bindparam("b_remote_id"))
    with pytest.raises(TypeError, match="no value given"):
        dialect.statement(unnamed, ["b_other"])
    engine.dispose()
