"""`ledger status` and `ledger retry` (SPEC section 1) on ledgers with rows in every outcome,
and `ledger status --json` polled from another process while a worker process writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from ledger.database import Ledger, open_ledger
from ledger.models import Event, Row
from ledger.state_store import save_worker_stats
from ledger.status import run_status
from tests.support.cli import LedgerEnv, assert_exit, invoke
from tests.support.ledgers import (
    EXTENSION_IN_USE,
    NUMBER_IN_USE,
    MixedRun,
    build_mixed_run,
    finish,
    work_rows,
)


def statuses(ledger: Ledger, run_id: int) -> dict[int, tuple[str, str | None]]:
    """row_id → (status, reason_code)."""
    with ledger.read() as session:
        found = session.execute(
            select(Row.row_id, Row.status, Row.reason_code).where(Row.run_id == run_id)
        )
        return {row_id: (status, code) for row_id, status, code in found}


def retried_events(ledger: Ledger, run_id: int) -> dict[int, str]:
    """row_id → the previous reason recorded by each `retried` event."""
    with ledger.read() as session:
        found = session.execute(
            select(Row.row_id, Event.detail_json)
            .join(Row, Row.id == Event.row_pk)
            .where(Event.run_id == run_id, Event.kind == "retried")
            .order_by(Event.id)
        )
        return {row_id: json.loads(detail)["previous_reason"] for row_id, detail in found}


def status_json(env: LedgerEnv, *args: str) -> Any:
    result = invoke("status", "--db", env.db_url, "--json", *args)
    assert_exit(result, 0)
    assert result.stdout.count("\n") == 1, "--json prints exactly one line"
    return json.loads(result.stdout)


# --- ledger retry ----------------------------------------------------------------------------


def test_retry_by_reason_changes_only_those_rows(ledger_env: LedgerEnv, mixed: MixedRun) -> None:
    before = statuses(mixed.ledger, mixed.run.id)
    result = invoke("retry", "--db", ledger_env.db_url, "--reason", "extension_in_use")
    assert_exit(result, 0)
    assert "2 pending row(s) are ready again" in result.stdout
    after = statuses(mixed.ledger, mixed.run.id)
    changed = {row_id for row_id in after if after[row_id] != before[row_id]}
    assert changed == {4, 11}
    assert after[4] == after[11] == ("ready", None)
    assert after[8] == ("pending", "number_in_use")
    assert retried_events(mixed.ledger, mixed.run.id) == {
        4: "extension_in_use",
        11: "extension_in_use",
    }


def test_retry_by_row_changes_only_that_row(ledger_env: LedgerEnv, mixed: MixedRun) -> None:
    before = statuses(mixed.ledger, mixed.run.id)
    result = invoke("retry", "--db", ledger_env.db_url, "--row", "8")
    assert_exit(result, 0)
    assert "1 pending row(s) are ready again" in result.stdout
    after = statuses(mixed.ledger, mixed.run.id)
    assert {row_id for row_id in after if after[row_id] != before[row_id]} == {8}
    assert after[8] == ("ready", None)
    assert retried_events(mixed.ledger, mixed.run.id) == {8: "number_in_use"}


def test_retry_all_makes_every_pending_row_ready_and_no_other(
    ledger_env: LedgerEnv, mixed: MixedRun
) -> None:
    before = statuses(mixed.ledger, mixed.run.id)
    assert_exit(invoke("retry", "--db", ledger_env.db_url), 0)
    after = statuses(mixed.ledger, mixed.run.id)
    assert {row_id for row_id in after if after[row_id] != before[row_id]} == set(mixed.pending)
    assert set(retried_events(mixed.ledger, mixed.run.id)) == set(mixed.pending)


@pytest.mark.parametrize("reason", ["no_such_reason", "invalid_email", "duplicate_in_file"])
def test_retry_refuses_a_code_that_is_no_pending_reason(
    ledger_env: LedgerEnv, mixed: MixedRun, reason: str
) -> None:
    before = statuses(mixed.ledger, mixed.run.id)
    result = invoke("retry", "--db", ledger_env.db_url, "--reason", reason)
    assert_exit(result, 2)
    assert result.stderr.count("\n") == 1
    assert reason in result.stderr
    assert statuses(mixed.ledger, mixed.run.id) == before


def test_rejected_rows_are_never_made_ready(ledger_env: LedgerEnv, mixed: MixedRun) -> None:
    for args in (["--row", "3"], ["--row", "7", "--row", "12"], []):
        assert_exit(invoke("retry", "--db", ledger_env.db_url, *args), 0)
    after = statuses(mixed.ledger, mixed.run.id)
    assert {row_id: after[row_id] for row_id in mixed.rejected} == {
        row_id: ("rejected", code) for row_id, code in mixed.rejected.items()
    }
    assert not set(retried_events(mixed.ledger, mixed.run.id)) & set(mixed.rejected)


def test_retried_rows_are_claimed_and_worked_again(ledger_env: LedgerEnv, mixed: MixedRun) -> None:
    assert_exit(invoke("retry", "--db", ledger_env.db_url, "--row", "4"), 0)
    work_rows(mixed.ledger, mixed.run, {4: "success"})
    assert statuses(mixed.ledger, mixed.run.id)[4] == ("success", None)


# --- ledger status ---------------------------------------------------------------------------


def test_status_json_counts(ledger_env: LedgerEnv, mixed: MixedRun) -> None:
    save_worker_stats(
        mixed.ledger, mixed.run.id, "w1", requests=100, retries=5, throttled=3, wait_s=12.5
    )
    save_worker_stats(
        mixed.ledger, mixed.run.id, "w2", requests=50, retries=1, throttled=0, wait_s=0.25
    )
    status = status_json(ledger_env)
    assert status["run_id"] == mixed.run.id
    assert status["file_name"] == "users.csv"
    assert status["input_hash"] == mixed.run.input_hash
    assert status["rows"] == {
        "ready": 2,
        "claimed": 1,
        "success": 6,
        "pending": 3,
        "rejected": 3,
        "total": 15,
    }
    # Success rows: 6 times location, calling, user; row 1 has a number; row 2 names a setting;
    # pending rows 4 and 11 failed at user, row 8 at number.
    assert status["steps"] == {
        "location": {"unchanged": 9},
        "calling": {"unchanged": 9},
        "number": {"created": 1, "failed": 1},
        "user": {"created": 6, "failed": 2},
        "settings": {"updated": 1, "skipped": 5},
    }
    assert status["pending_reasons"] == [
        {
            "reason_code": "extension_in_use",
            "count": 2,
            "example_row_id": 4,
            "example_message": EXTENSION_IN_USE.message,
        },
        {
            "reason_code": "number_in_use",
            "count": 1,
            "example_row_id": 8,
            "example_message": NUMBER_IN_USE.message,
        },
    ]
    assert status["requests"] == {"requests": 150, "retries": 6, "throttled": 3, "wait_s": 12.75}
    # All 9 finished rows were finished a moment ago: 9 rows in the last minute.
    throughput = status["throughput"]
    assert throughput["window_s"] == 60
    assert throughput["finished_in_window"] == 9
    assert throughput["rows_per_s"] == pytest.approx(9 / 60, abs=1e-3)
    assert throughput["eta_s"] == pytest.approx(3 / (9 / 60), abs=0.1)
    assert [(w["worker_id"], w["rows"]) for w in status["workers"]] == [("worker-a", 1)]
    assert status["expired_leases"] == 0
    assert status["checkpoint"] == {"last_completed_batch_id": 1, "last_completed_row_id": 5}


def test_status_later_has_no_rate_and_sees_the_expired_lease(mixed: MixedRun) -> None:
    now = run_status(mixed.ledger, mixed.run).as_of
    later = run_status(mixed.ledger, mixed.run, now=now + timedelta(minutes=5))
    assert later.throughput.finished_in_window == 0
    assert later.throughput.rows_per_s is None
    assert later.throughput.eta_s is None
    assert later.workers == ()
    assert later.expired_leases == 1
    assert later.rows.claimed == 1


def test_status_of_a_finished_run_has_nothing_left(ledger_env: LedgerEnv) -> None:
    built = build_mixed_run(ledger_env, keep_claimed=False)
    try:
        work_rows(built.ledger, built.run, {9: "success", 14: "success", 15: EXTENSION_IN_USE})
        status = run_status(built.ledger, built.run)
    finally:
        built.ledger.dispose()
    assert (status.rows.ready, status.rows.claimed) == (0, 0)
    assert status.rows.finished == status.rows.total == 15
    assert status.throughput.eta_s == 0.0
    assert status.checkpoint.last_completed_batch_id == 3
    assert status.pending_reasons[0].count == 3  # extension_in_use: rows 4, 11, 15


def test_status_of_another_run(ledger_env: LedgerEnv, mixed: MixedRun) -> None:
    second = ledger_env.root / "second.csv"
    second.write_text("email,first_name,location_name,extension\nx@example.com,X,HQ,2001\n")
    assert_exit(invoke("ingest", str(second), "--db", ledger_env.db_url), 0)
    latest = status_json(ledger_env)
    assert (latest["run_id"], latest["rows"]["total"]) == (mixed.run.id + 1, 1)
    first = status_json(ledger_env, "--run", str(mixed.run.id))
    assert (first["run_id"], first["rows"]["total"]) == (mixed.run.id, 15)


def test_status_summary_for_people(ledger_env: LedgerEnv, mixed: MixedRun) -> None:
    result = invoke("status", "--db", ledger_env.db_url)
    assert_exit(result, 0)
    text = result.stdout
    assert f"run {mixed.run.id} · users.csv" in text
    assert "12/15 finished (80.0%)" in text
    assert "6 success · 3 pending · 3 rejected · 2 ready · 1 in flight" in text
    assert "9 rows in the last minute" in text
    assert "checkpoint batch 1 (row 5)" in text
    assert "worker-a holds 1" in text
    assert "extension_in_use" in text and "row 4: the extension belongs" in text
    assert "next      `ledger work` works the 3 row(s) still to do" in text


def test_status_says_what_to_do_next_at_each_stage(ledger_env: LedgerEnv) -> None:
    from ledger.console import next_step

    built = build_mixed_run(ledger_env, keep_claimed=False)
    try:
        before = run_status(built.ledger, built.run)
        work_rows(built.ledger, built.run, {9: "success", 14: "success", 15: EXTENSION_IN_USE})
        finished = run_status(built.ledger, built.run)
    finally:
        built.ledger.dispose()
    assert next_step(before).startswith("`ledger work` works the 3 row(s) still to do")
    assert next_step(finished) == (
        "4 row(s) pending: fix what their reasons say (pending_rows.csv), "
        "then `ledger retry` and `ledger work`"
    )
    no_pending = finished.model_copy(
        update={"rows": finished.rows.model_copy(update={"pending": 0})}
    )
    # retry_rows.csv holds the input's own columns: the file that ingests again.
    assert "3 row(s) were rejected at ingest: correct them in retry_rows.csv" in next_step(
        no_pending
    )
    all_done = no_pending.model_copy(
        update={"rows": no_pending.rows.model_copy(update={"rejected": 0})}
    )
    assert next_step(all_done) == "nothing left to do: every row succeeded"


def test_status_without_a_ledger_or_run_exits_2(ledger_env: LedgerEnv) -> None:
    missing = invoke("status", "--db", f"sqlite:///{ledger_env.root}/missing.db")
    assert_exit(missing, 2)
    assert missing.stderr.count("\n") == 1
    assert not (ledger_env.root / "missing.db").exists(), "status must not create a ledger"

    (ledger_env.root / "empty.db").write_bytes(b"")
    not_a_ledger = invoke("status", "--db", f"sqlite:///{ledger_env.root}/empty.db", "--json")
    assert_exit(not_a_ledger, 2)
    assert not_a_ledger.stdout == ""
    assert not_a_ledger.stderr.count("\n") == 1

    open_ledger(ledger_env.db_url).dispose()  # a ledger with no run yet
    no_run = invoke("status", "--db", ledger_env.db_url, "--json")
    assert_exit(no_run, 2)
    assert "no run" in no_run.stderr and no_run.stderr.count("\n") == 1


def test_status_of_an_unknown_run_exits_2(ledger_env: LedgerEnv, mixed: MixedRun) -> None:
    result = invoke("status", "--db", ledger_env.db_url, "--run", "99")
    assert_exit(result, 2)
    assert "no run 99" in result.stderr


# --- status while a worker writes ------------------------------------------------------------

# A worker process of its own: claims rows, records a step, leaves them pending, puts them
# back to ready, and again, until told to stop. It prints once it has committed a first time.
WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ledger.database import open_ledger
    from ledger.error_handling import ReasonCode
    from ledger.records import StepOutcome
    from ledger.state_store import claim_batch, finish_row, record_step, retry_rows

    url, run_id, stop = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    ledger = open_ledger(url)
    commits = 0
    deadline = time.monotonic() + 120
    while not stop.exists() and time.monotonic() < deadline:
        rows = claim_batch(ledger, run_id, "writer", 3, 30.0)
        commits += 1
        if not rows:
            commits += retry_rows(ledger, run_id, reasons=["conflict"]) > 0
            continue
        for row in rows:
            failed = StepOutcome("user", "failed", "user", row.user.email, http_status=409)
            record_step(ledger, row, failed)
            finish_row(
                ledger, row, status="pending", reason_code=ReasonCode.CONFLICT,
                reason_message="busy", reason_step="user", http_status=409,
            )
            commits += 2
        if commits <= 10:
            print("writing", flush=True)
    print(commits, flush=True)
    """
)


READERS = 4


def test_status_json_in_a_subprocess_while_another_process_writes(
    ledger_env: LedgerEnv, mixed: MixedRun
) -> None:
    stop = ledger_env.root / "stop-writer"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, ledger_env.db_url, str(mixed.run.id), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ledger_env.root,
    )
    readers: list[subprocess.Popen[str]] = []
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "writing"
        # Several readers at once, each a process of its own, while the writer commits.
        command = [sys.executable, "-m", "ledger.cli", "status", "--json", "--db"]
        readers = [
            subprocess.Popen(
                [*command, ledger_env.db_url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ledger_env.root,
                env=os.environ.copy(),
            )
            for _ in range(READERS)
        ]
        seen = []
        for reader in readers:
            out, err = reader.communicate(timeout=60)
            assert reader.returncode == 0, err
            assert err == "", err  # no "database is locked", no warning
            status = json.loads(out)
            assert status["rows"]["total"] == 15
            assert (status["rows"]["success"], status["rows"]["rejected"]) == (6, 3)
            seen.append(status["as_of"])
    finally:
        stop.touch()
        for reader in readers:  # after a failure above, none is left running or unread
            if reader.poll() is None:
                reader.kill()
            reader.communicate()
        out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert "locked" not in err
    commits = int(out.split()[-1])
    assert commits > 10, "the writer kept writing while status read"
    assert len(seen) == READERS


def test_retry_reason_codes_match_the_error_tree() -> None:
    # The codes `ledger retry --reason` accepts are exactly the pending ones of SPEC section 5.
    from ledger.error_handling import PENDING_REASONS

    assert {str(code) for code in PENDING_REASONS} == {
        "retry_exhausted",
        "bad_request",
        "auth_invalid",
        "forbidden",
        "not_found",
        "conflict",
        "number_in_use",
        "extension_in_use",
        "location_move_required",
        "location_undefined",
        "license_unavailable",
        "unexpected_response",
        "assertion_failure",
        "half_applied",
        "dependency_failed",
    }


# --- PostgreSQL ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_status_and_export_on_postgres(ledger_env: LedgerEnv, postgres_url: str) -> None:
    """The same counts as on SQLite, and one snapshot (REPEATABLE READ) per status/export."""
    from ledger.reports import snapshot

    built = build_mixed_run(ledger_env, db_url=postgres_url)
    try:
        status = status_json(ledger_env, "--db", postgres_url)
        assert status["rows"] == {
            "ready": 2,
            "claimed": 1,
            "success": 6,
            "pending": 3,
            "rejected": 3,
            "total": 15,
        }
        assert [r["reason_code"] for r in status["pending_reasons"]] == [
            "extension_in_use",
            "number_in_use",
        ]
        assert status["throughput"]["finished_in_window"] == 9
        assert [(w["worker_id"], w["rows"]) for w in status["workers"]] == [("worker-a", 1)]
        assert status["checkpoint"] == {"last_completed_batch_id": 1, "last_completed_row_id": 5}

        with snapshot(built.ledger) as session:
            before = run_status_counts(session, built.run.id)
            finish(built.ledger, built.in_flight[0], "success")  # committed meanwhile
            assert run_status_counts(session, built.run.id) == before
        assert run_status(built.ledger, built.run).rows.success == 7

        first, second = ledger_env.root / "a", ledger_env.root / "b"
        for folder in (first, second):
            assert_exit(invoke("export", "--db", postgres_url, "--out", str(folder)), 0)
        for name in ("results.csv", "pending_rows.csv", "rejected_rows.csv", "checkpoint.json"):
            assert (first / name).read_bytes() == (second / name).read_bytes()
        checkpoint = json.loads((first / "checkpoint.json").read_text())
        assert checkpoint["last_completed_batch_id"] == 2
    finally:
        built.ledger.dispose()


def run_status_counts(session: Any, run_id: int) -> dict[str, int]:
    found = session.execute(
        select(Row.status, func.count()).where(Row.run_id == run_id).group_by(Row.status)
    )
    return {status: count for status, count in found}
