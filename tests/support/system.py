"""The system tests' world: the simulator on a real socket, `ledger` as a subprocess.

The simulator runs in a thread of the test process (`SimHandle`), listening on 127.0.0.1; its
admin endpoints (`/_sim/state`, `/_sim/faults`) are called over that socket. `ledger` runs as
a child process (`python -m ledger.cli ...`) configured only through its environment, in a
working directory of its own (so no `.env` of the developer's is read). What the tests then
check is in support/system_checks.py.

    # The simulator up, a workspace pointed at it, the CSV ingested by `ledger ingest`:
    with ingested(running_simulator(faults), csv_path, root, BATCH_SIZE=50) as (sim, ws, env):
        with in_background(ws, env, "work") as process:  # killed if the test fails
            ...
"""

from __future__ import annotations

import contextlib
import csv
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from ledger.config import Settings
from ledger.simulator.core import Simulator
from ledger.simulator.faults import FaultConfig
from ledger.simulator.server import SimServer, serve

TOKEN = "system-test-token"
PYTHON = sys.executable
CONFIG_VARIABLES = frozenset(Settings.model_fields)
EXIT_OK, EXIT_INTERRUPTED = 0, 4
POLL_S = 0.1


# --- the simulator -------------------------------------------------------------------------


@dataclass
class SimHandle:
    """A simulator served on 127.0.0.1 by a thread of this process."""

    sim: Simulator
    server: SimServer
    admin: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.admin = httpx.Client(base_url=self.server.origin, timeout=30)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def state(self) -> dict[str, Any]:
        """GET /_sim/state over the socket."""
        response = self.admin.get("/_sim/state")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def put_faults(self, config: FaultConfig) -> None:
        """PUT /_sim/faults: replace the whole fault configuration."""
        response = self.admin.put("/_sim/faults", json=config.model_dump())
        response.raise_for_status()
        if response.json() != config.model_dump():
            raise AssertionError(f"the simulator answered other faults: {response.json()}")

    def patch_faults(self, **fields: object) -> None:
        """PATCH /_sim/faults: change only these fault settings."""
        response = self.admin.patch("/_sim/faults", json=fields)
        response.raise_for_status()

    def close(self) -> None:
        self.admin.close()
        self.server.stop()


@contextlib.contextmanager
def running_simulator(faults: FaultConfig | None = None) -> Iterator[SimHandle]:
    """The simulator on a free port of 127.0.0.1 for the `with` block (token: TOKEN)."""
    sim = Simulator(faults=faults, token=TOKEN)
    handle = SimHandle(sim, serve(sim))
    try:
        yield handle
    finally:
        handle.close()


@contextlib.contextmanager
def faults_for_a_while(
    sim: SimHandle,
    *,
    when: Callable[[], bool],
    seconds: float,
    on: Mapping[str, object],
    off: Mapping[str, object],
) -> Iterator[None]:
    """PATCH the faults `on` as soon as `when()` holds (polled every 0.1 s), and `off` again
    `seconds` later or when the block ends, whichever comes first. Tied to the run's progress
    rather than to the clock, the faults meet a fast run as surely as a slow one."""
    done = threading.Event()

    def switch() -> None:
        while not done.wait(POLL_S):
            if when():
                sim.patch_faults(**on)
                done.wait(seconds)
                sim.patch_faults(**off)
                return

    thread = threading.Thread(target=switch, name="faults-for-a-while", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


# --- ledger as a subprocess ----------------------------------------------------------------


@dataclass(frozen=True)
class Workspace:
    """Where one ledger lives: its working directory, database, artifacts and log."""

    root: Path
    db_name: str = "ledger.db"

    @property
    def db_path(self) -> Path:
        return self.root / self.db_name

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.db_path}"

    @property
    def out_dir(self) -> Path:
        return self.root / "out"

    @property
    def log_file(self) -> Path:
        return self.root / "ledger.log"


def ledger_env(ws: Workspace, base_url: str, **overrides: object) -> dict[str, str]:
    """The environment of a `ledger` child: the parent's minus every SPEC variable, plus ours.

    Defaults suit a simulator on localhost: a 1 s request timeout (hangs end fast), short
    backoffs, a 3 s lease. `overrides` (SPEC names) win; None removes a variable.
    """
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    values: dict[str, object] = {
        "WEBEX_BASE_URL": base_url,
        "WEBEX_ACCESS_TOKEN": TOKEN,
        "LEDGER_DATABASE_URL": ws.db_url,
        "LEDGER_OUTPUT_DIR": ws.out_dir,
        "LEDGER_LOG_FILE": ws.log_file,
        "REQUEST_TIMEOUT_S": 1,
        "RETRY_BACKOFF_S": 0.05,
        "RETRY_AFTER_DEFAULT_S": 0.2,
        "RETRY_AFTER_CAP_S": 2,
        "LOOKUP_SETTLE_S": 3,
        "LEDGER_LEASE_S": 3,
        "BATCH_SIZE": 250,
        "LEDGER_CONCURRENCY": 16,
        **overrides,
    }
    for name, value in values.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def ledger_command(*args: str) -> list[str]:
    return [PYTHON, "-m", "ledger.cli", *args]


def run_ledger(
    ws: Workspace, env: Mapping[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `ledger ARGS` to its end in the workspace; stdout and stderr captured."""
    ws.root.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        ledger_command(*args),
        cwd=ws.root,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_ledger(
    ws: Workspace, env: Mapping[str, str], *args: str, tag: str = "work"
) -> subprocess.Popen[bytes]:
    """Start `ledger ARGS` in the background; output goes to files (no pipe can fill up)."""
    ws.root.mkdir(parents=True, exist_ok=True)
    stdout = (ws.root / f"{tag}.stdout").open("ab")
    stderr = (ws.root / f"{tag}.stderr").open("ab")
    try:
        return subprocess.Popen(
            ledger_command(*args), cwd=ws.root, env=dict(env), stdout=stdout, stderr=stderr
        )
    finally:
        stdout.close()
        stderr.close()


@contextlib.contextmanager
def in_background(
    ws: Workspace, env: Mapping[str, str], *args: str, tag: str = "work"
) -> Iterator[subprocess.Popen[bytes]]:
    """`start_ledger` for the `with` block; a process still running at its end (the test
    failed, or left it to be stopped) is killed and reaped."""
    process = start_ledger(ws, env, *args, tag=tag)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n"
        f"--- stderr\n{result.stderr[-3000:]}"
    )


def expect_exit(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert "Traceback" not in result.stderr, describe(result)
    assert result.returncode == code, describe(result)


def ingest(ws: Workspace, env: Mapping[str, str], csv_path: Path) -> None:
    expect_exit(run_ledger(ws, env, "ingest", str(csv_path)), EXIT_OK)


class Ingested(NamedTuple):
    sim: SimHandle
    ws: Workspace
    env: dict[str, str]


@contextlib.contextmanager
def ingested(
    simulator: AbstractContextManager[SimHandle],
    csv_path: Path,
    root: Path,
    **settings: object,
) -> Iterator[Ingested]:
    """The set-up every system test starts from: `simulator` running, a workspace in `root`
    whose environment points `ledger` at it (`settings` as in `ledger_env`), and `csv_path`
    ingested there by `ledger ingest`."""
    with simulator as sim:
        ws = Workspace(root)
        env = ledger_env(ws, sim.base_url, **settings)
        ingest(ws, env, csv_path)
        yield Ingested(sim, ws, env)


# --- the input and the wait ----------------------------------------------------------------


def write_subset_csv(source: Path, target: Path, row_ids: set[int]) -> int:
    """Copy the header and the rows with these row_ids (1-based, in file order) to `target`."""
    with source.open(encoding="utf-8", newline="") as handle:
        lines = list(csv.reader(handle))
    kept = [line for row_id, line in enumerate(lines[1:], start=1) if row_id in row_ids]
    with target.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(lines[0])
        writer.writerows(kept)
    return len(kept)


def wait_for(predicate: Any, timeout: float, interval: float = POLL_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
