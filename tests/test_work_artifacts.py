"""The artifacts `ledger work` writes as it goes and when it stops (SPEC sections 1, 5): a
folder that cannot take them no longer ends in exit 0, and LEDGER_REFRESH_S paces them."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing

from typer.testing import Result

from ledger.row_rules import COLUMNS
from ledger.simulator import Simulator, running_server
from tests.support.cli import LedgerEnv, assert_exit, invoke
from tests.support.csvfiles import read_csv, write_csv
from tests.support.people import person
from tests.support.work import TOKEN

ROWS = 8


def ingested(env: LedgerEnv, batch_size: int = 2) -> None:
    path = write_csv(env.root / "users.csv", COLUMNS, [person(n) for n in range(1, ROWS + 1)])
    env_vars = {"BATCH_SIZE": str(batch_size)}
    assert_exit(invoke("ingest", str(path), "--db", env.db_url, env=env_vars), 0)


def work(env: LedgerEnv, **settings: str) -> Result:
    with running_server(Simulator(token=TOKEN)) as base_url:
        variables = {"WEBEX_BASE_URL": base_url, "WEBEX_ACCESS_TOKEN": TOKEN, **settings}
        return invoke("work", "--db", env.db_url, "--quiet", env=variables)


def statuses(env: LedgerEnv) -> dict[str, int]:
    with closing(sqlite3.connect(env.root / "l.db")) as db:
        return dict(db.execute("SELECT status, count(*) FROM rows GROUP BY status"))


def test_work_whose_artifacts_cannot_be_written_exits_2_naming_the_folder(
    ledger_env: LedgerEnv,
) -> None:
    ingested(ledger_env)
    shutil.rmtree(ledger_env.out_dir)
    ledger_env.out_dir.write_text("a file where the folder was", encoding="utf-8")

    result = work(ledger_env, LEDGER_REFRESH_S="0")

    assert_exit(result, 2)
    lines = [line for line in result.stderr.splitlines() if str(ledger_env.out_dir) in line]
    assert len(lines) == 1, result.stderr
    assert "cannot write the artifacts" in lines[0] and "File exists" in lines[0]
    assert "ledger export --out" in lines[0]
    # The run itself is done and safe in the ledger; the artifacts can be written elsewhere.
    assert statuses(ledger_env) == {"success": ROWS}
    elsewhere = ledger_env.root / "elsewhere"
    assert_exit(invoke("export", "--db", ledger_env.db_url, "--out", str(elsewhere)), 0)
    assert {line["row_id"] for line in read_csv(elsewhere / "results.csv")} == {
        str(n) for n in range(1, ROWS + 1)
    }
