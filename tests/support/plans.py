"""`ledger plan` and `ledger work` through the CLI against the simulator on a socket, and what
each said it did, in one vocabulary so that they can be compared.

    org = PlanOrg(ledger_env, sim, base_url)     # a CSV ingested, the simulator serving
    result = org.plan()                           # `ledger plan --quiet`
    org.planned_actions()   # Counter {(step, action): rows} from plan.csv
    org.work()                                    # `ledger work --quiet`
    org.worked_actions()    # the same from the ledger's step records (failed = blocked)
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from typer.testing import Result

from ledger.row_rules import COLUMNS
from ledger.simulator import Simulator
from tests.support.cli import LedgerEnv, assert_exit, invoke
from tests.support.csvfiles import read_csv, write_csv

TOKEN = "plan-test-token"
FAST = {"MAX_RETRIES": "1", "RETRY_BACKOFF_S": "0.01", "REQUEST_TIMEOUT_S": "5"}
WORKED_AS = {
    "created": "create",
    "updated": "update",
    "unchanged": "unchanged",
    "failed": "blocked",
}


@dataclass
class PlanOrg:
    """One ledger (`db`, its own file) of a CSV, and the simulated org it is planned against."""

    env: LedgerEnv
    sim: Simulator
    base_url: str
    db: str = "l.db"
    extra: dict[str, str] | None = None
    url: str | None = None  # another ledger than the SQLite file `db` (PostgreSQL)

    @property
    def db_url(self) -> str:
        return self.url or f"sqlite:///{self.env.root / self.db}"

    @property
    def variables(self) -> dict[str, str]:
        return {
            **FAST,
            "WEBEX_BASE_URL": self.base_url,
            "WEBEX_ACCESS_TOKEN": TOKEN,
            **(self.extra or {}),
        }

    def ingest(self, rows: Sequence[dict[str, str]], name: str = "users.csv") -> None:
        path = write_csv(self.env.root / name, COLUMNS, rows)
        assert_exit(invoke("ingest", str(path), "--db", self.db_url, env=self.variables), 0)

    def plan(self, *options: str) -> Result:
        return invoke("plan", "--db", self.db_url, "--quiet", *options, env=self.variables)

    def work(self) -> Result:
        result = invoke("work", "--db", self.db_url, "--quiet", env=self.variables)
        assert_exit(result, 0)
        return result

    def plan_lines(self, folder: Path | None = None) -> list[dict[str, str]]:
        return read_csv((folder or self.env.out_dir) / "plan.csv")

    def planned_actions(self) -> Counter[tuple[str, str]]:
        """Rows per (step, action) in plan.csv: a step of a row counts once, however many
        fields it changes."""
        steps = {(line["row_id"], line["step"]): line["action"] for line in self.plan_lines()}
        return Counter((step, action) for (_row, step), action in steps.items())

    def planned_blocks(self) -> dict[int, tuple[str, str]]:
        """(step, reason_code) per blocked row, as planned."""
        return {
            int(line["row_id"]): (line["step"], line["reason_code"])
            for line in self.plan_lines()
            if line["action"] == "blocked"
        }

    def worked_actions(self) -> Counter[tuple[str, str]]:
        """Rows per (step, what `work` did), in the plan's words: each step a row completed,
        and the step a pending row stopped at (`blocked`)."""
        with closing(sqlite3.connect(self.env.root / self.db)) as db:
            done = db.execute(
                "SELECT step, status, count(*) FROM steps "
                "WHERE status IN ('created', 'updated', 'unchanged') GROUP BY step, status"
            ).fetchall()
            stopped = db.execute(
                "SELECT reason_step, count(*) FROM rows WHERE status = 'pending' "
                "GROUP BY reason_step"
            ).fetchall()
        worked = Counter({(step, WORKED_AS[status]): count for step, status, count in done})
        return worked + Counter({(step, "blocked"): count for step, count in stopped})

    def worked_blocks(self) -> dict[int, tuple[str, str]]:
        """(step, reason_code) per pending row, as `work` recorded them."""
        with closing(sqlite3.connect(self.env.root / self.db)) as db:
            found = db.execute(
                "SELECT row_id, reason_step, reason_code FROM rows WHERE status = 'pending'"
            )
            return {row_id: (step, reason) for row_id, step, reason in found}

    def lines_of(self, row_id: int, step: str) -> dict[str, dict[str, str]]:
        """The plan's lines for one step of one row, by field ('' for a line without one)."""
        return {
            line["field"]: line
            for line in self.plan_lines()
            if line["row_id"] == str(row_id) and line["step"] == step
        }
