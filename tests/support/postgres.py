"""A throw-away PostgreSQL cluster for tests: `initdb` in a temporary folder, a free port on
127.0.0.1 plus a unix socket in that folder, fsync off, stopped and deleted at the end.

The server binaries are found on PATH or under /usr/lib/postgresql/*/bin; tests are skipped
with the reason when they are absent. `initdb` refuses to run as root, so as root the cluster
belongs to an unprivileged user (`postgres` if it exists, else `nobody`) and every server
command runs through `runuser`. A session killed before its teardown leaves its cluster
running: the next session stops it (each cluster's folder names the pid of its session).

The fixtures (`postgres_server`, `postgres_url`, `postgres_ledger_url`) are in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 30
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "50",
    "shared_buffers": "16MB",
}


def find_server_binaries() -> Path | None:
    """The folder holding `initdb` and `pg_ctl`, newest version first, or None."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda folder: int(folder.parent.name) if folder.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(versions)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def unprivileged_user() -> str | None:
    """The user to run the server as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root and neither `postgres` nor `nobody` exists")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresServer:
    """A running cluster; `url(database)` gives a SQLAlchemy URL for one of its databases."""

    bin_dir: Path
    root: Path
    port: int
    user: str | None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = START_TIMEOUT_S) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(
            command,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
            raise RuntimeError(
                f"{args[0]} failed ({done.returncode}): {done.stderr.strip()}\n{log[-2000:]}"
            )

    def start(self) -> None:
        self._run(
            "initdb",
            "--pgdata",
            str(self.data_dir),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        )
        self.socket_dir.mkdir()
        if self.user is not None:
            record = pwd.getpwnam(self.user)
            os.chown(self.socket_dir, record.pw_uid, record.pw_gid)
        for attempt in range(3):
            try:
                self._pg_ctl_start()
                return
            except RuntimeError:
                # Another process may have taken the free port between probe and start.
                if attempt == 2:
                    raise
                self.port = free_port()

    def _pg_ctl_start(self) -> None:
        options = " ".join(
            [f"-p {self.port}", f"-k {self.socket_dir}"]
            + [f"-c {name}={value}" for name, value in SERVER_SETTINGS.items()]
        )
        self._run(
            "pg_ctl",
            "start",
            "--pgdata",
            str(self.data_dir),
            "--log",
            str(self.log_file),
            "--wait",
            "--timeout",
            str(START_TIMEOUT_S),
            "--options",
            options,
            timeout=START_TIMEOUT_S + 5,
        )

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run(
                "pg_ctl", "stop", "--pgdata", str(self.data_dir), "--mode", "immediate", "--wait"
            )

    def create_database(self, *, template: str | None = None) -> str:
        """A new database (empty, or a copy of `template`); returns its SQLAlchemy URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        copy = f' TEMPLATE "{template}"' if template else ""
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"{copy}')  # type: ignore[arg-type]
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of `url` (made by `create_database`), closing what still uses it.

        Each test's copy is dropped when it ends: a hundred copies left to the session's end
        made deleting the cluster take most of a minute."""
        import psycopg

        name = url.rsplit("/", 1)[-1]
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


ROOT_PREFIX = "ledger-pg-"
OWNER_FILE = "owner.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphans(bin_dir: Path, user: str | None) -> None:
    """Stop and delete clusters whose test session died without its teardown (killed)."""
    for root in Path(tempfile.gettempdir()).glob(f"{ROOT_PREFIX}*"):
        try:
            owner = int((root / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being set up
        if _alive(owner):
            continue
        orphan = PostgresServer(bin_dir=bin_dir, root=root, port=0, user=user)
        try:
            orphan.stop()
        except (RuntimeError, subprocess.TimeoutExpired):
            continue  # leave what cannot be stopped cleanly
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[PostgresServer]:
    """A running cluster for the `with` block; skips the calling test when there can be none."""
    bin_dir = find_server_binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed: pip install 'ledger[postgres]'")
    user = unprivileged_user()
    if user is not None and shutil.which("runuser") is None:
        pytest.skip("running as root and `runuser` is missing: initdb refuses root")
    # Not under pytest's tmp_path: its parent folders are private to root, and the server
    # runs as another user who must reach its own folder.
    reap_orphans(bin_dir, user)
    root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX))
    (root / OWNER_FILE).write_text(str(os.getpid()))
    server = PostgresServer(bin_dir=bin_dir, root=root, port=free_port(), user=user)
    try:
        if user is not None:
            record = pwd.getpwnam(user)
            os.chown(root, record.pw_uid, record.pw_gid)
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


def migrated_template(server: PostgresServer) -> str:
    """The name of a new database migrated to head, for others to be copied from."""
    from ledger.database import open_ledger

    url = server.create_database()
    open_ledger(url).dispose()
    return url.rsplit("/", 1)[1]
