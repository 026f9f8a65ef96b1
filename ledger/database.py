"""Opening the ledger: engines, connection settings, migrations, and short transactions.

SQLite gets WAL (readers never block the writer), a busy timeout on every connection, and
`BEGIN IMMEDIATE` for write transactions, which take the write lock before their first read so
that two writers never deadlock upgrading a read lock. PostgreSQL needs none of that: claims use
`FOR UPDATE SKIP LOCKED` instead (see state_store).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    IntegrityError,
    NoSuchModuleError,
)
from sqlalchemy.orm import Session, sessionmaker

from ledger.error_handling import UsageError
from ledger.group_commit import GroupCommit

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Any fixed number: the PostgreSQL advisory lock that serializes migrations ("ledger" in hex).
MIGRATION_LOCK_KEY = 0x6C6564676572
_MIGRATION_LOCK = threading.Lock()
# Shipped inside the package (see pyproject.toml), so an installed `ledger` can migrate.
MIGRATIONS_DIR = str(resources.files("ledger.migrations"))
# The newest migration's revision. A ledger already there is opened without loading Alembic
# (half a second of start-up for every command); a test holds this equal to Alembic's head.
HEAD_REVISION: Final = "0004_rate_use"


@dataclass(frozen=True)
class Ledger:
    """An open ledger: its engines (SQLite writes get their own), session factories, and the
    group commit that the hot path's writes from many threads share (`group_commit`)."""

    engine: Engine
    write_engine: Engine
    sessions: sessionmaker[Session]
    write_sessions: sessionmaker[Session]
    group: GroupCommit

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A short write transaction, committed on exit, rolled back on error."""
        with self.write_sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A short write transaction on a bare connection, for the per-step hot path."""
        with self.write_engine.begin() as connection:
            yield connection

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read transaction; never takes a write lock."""
        with self.sessions() as session:
            try:
                yield session
            finally:
                session.rollback()

    def dispose(self) -> None:
        self.engine.dispose()
        if self.write_engine is not self.engine:
            self.write_engine.dispose()


def refuse_foreign_sqlite(path: Path, url: str) -> None:
    """Refuse a SQLite file that holds tables but no ledger, before anything writes to it.

    Opening it as a ledger would add the ledger's tables to someone else's database and switch
    it to WAL. It is read here read-only, which changes neither its bytes nor its mtime. An
    absent or empty file, or a database without tables, is fine to create a ledger in.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        with closing(
            sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        ) as probe:
            tables = {
                name
                for (name,) in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
    except sqlite3.DatabaseError as exc:
        detail = " ".join(str(exc).split())
        raise UsageError(f"cannot open the ledger at {shown_url(url)}: {detail}") from None
    if tables and "alembic_version" not in tables:
        raise UsageError(
            f"{path} is a SQLite database that is not a ledger ({len(tables)} other table(s)): "
            "give the ledger a file of its own"
        )


def create_private(path: Path) -> None:
    """Create `path`, empty and readable by its owner only, unless it exists.

    The ledger holds personal data (names, emails, numbers). SQLite would create it with the
    umask's mode, 0644 as a rule; an empty file is a valid empty database, and SQLite gives its
    -wal and -shm files the database file's own mode.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise UsageError(f"cannot create the ledger at {path}: {exc.strerror}") from None
    os.close(descriptor)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take over transaction control from the sqlite3 module, which would otherwise issue its own
    # deferred BEGIN and defeat BEGIN IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA synchronous = NORMAL")
    try:
        cursor.execute("PRAGMA journal_mode = WAL")
    except sqlite3.OperationalError:
        pass  # a read-only ledger keeps the mode it has
    cursor.close()


def _sqlite_begin_immediate(connection: Connection) -> None:
    # Straight to the driver: every write transaction begins here, and going through
    # SQLAlchemy's statement machinery cost as much as one of the transaction's statements.
    connection.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]


def _sqlite_on_begin(connection: Connection) -> None:
    if connection.get_execution_options().get("ledger_write"):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


def create_ledger_engine(url: str, *, read_only: bool = False, writer: bool = False) -> Engine:
    """An engine for the ledger at `url`, with the connection settings above."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(f"LEDGER_DATABASE_URL is not a database URL: {url!r}") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            folder = Path(database).expanduser().resolve().parent
            if not folder.is_dir():
                raise UsageError(f"the ledger's folder does not exist: {folder}")
            if not read_only and not parsed.query.get("uri"):
                refuse_foreign_sqlite(Path(database).expanduser(), url)
                create_private(Path(database).expanduser())
        if read_only and database and database != ":memory:":
            path = Path(database).expanduser().resolve()
            if not path.exists():
                raise UsageError(f"no ledger at {path}: run `ledger ingest FILE.csv` first")
            parsed = parsed.set(database=f"file:{path}?mode=ro", query={"uri": "true"})
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_on_connect)
        # A writer engine (SQLite only) begins every transaction IMMEDIATE without going
        # through execution options, which cost an event-dispatch layer on every statement.
        event.listen(engine, "begin", _sqlite_begin_immediate if writer else _sqlite_on_begin)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise UsageError(
            f"unsupported database {parsed.drivername!r}: the ledger is SQLite or PostgreSQL"
        )
    try:
        engine = create_engine(parsed, pool_pre_ping=True)
    except NoSuchModuleError:
        raise UsageError(f"unsupported database URL: {parsed.drivername}") from None
    except ImportError as exc:
        raise UsageError(
            f"the driver for {parsed.drivername} is not installed ({exc.name}): "
            "pip install 'ledger[postgres]'"
        ) from None
    if read_only:
        event.listen(engine, "connect", _postgres_read_only)
    return engine


def _postgres_read_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    cursor.close()
    dbapi_connection.commit()


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR)
    config.attributes["connection"] = connection
    return config


def _scripts() -> Any:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR)
    return ScriptDirectory.from_config(config)


def head_revision() -> str | None:
    """The newest migration, as Alembic reads it from the migration scripts."""
    head: str | None = _scripts().get_current_head()
    return head


def known_revisions() -> frozenset[str]:
    """Every schema revision this version of ledger knows, from the first to head."""
    return frozenset(script.revision for script in _scripts().walk_revisions())


def current_revision(connection: Connection) -> str | None:
    """The ledger's schema revision (Alembic's `alembic_version`), or None when it has none."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    versions = list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
    return str(versions[0]) if len(versions) == 1 else None


def _refuse_newer(current: str | None, url: str) -> None:
    # Alembic would fail with "Can't locate revision": the ledger was migrated by a newer
    # ledger, and an older one must neither write to it nor misread it.
    if current is not None and current not in known_revisions():
        raise UsageError(
            f"the ledger at {shown_url(url)} was written by a newer ledger (schema {current}): "
            "upgrade ledger to use it"
        )


def migrate(engine: Engine) -> None:
    """Bring the ledger's schema to the newest migration; a no-op when it is there already.

    Workers started together on an empty ledger all get here: one migrates while the others
    wait for its lock (SQLite's write lock, a PostgreSQL advisory lock), then find it done.
    """
    url = engine.url.render_as_string(hide_password=False)  # shown_url() hides it
    with engine.connect() as connection:
        current = current_revision(connection)
    if current == HEAD_REVISION:
        return
    from alembic import command

    head = head_revision()
    _refuse_newer(current, url)
    # Alembic's `context` is process-global: one migration at a time in this process too.
    with _MIGRATION_LOCK, engine.execution_options(ledger_write=True).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        current = current_revision(connection)
        if current == head:
            return
        _refuse_newer(current, url)
        command.upgrade(_alembic_config(connection), "head")


def shown_url(url: str) -> str:
    """The URL for a message: never with its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "the configured URL"


def _check_schema(engine: Engine, url: str) -> None:
    """A read-only ledger cannot be migrated: refuse one that is not at head."""
    with engine.connect() as connection:
        current = current_revision(connection)
    if current == HEAD_REVISION:
        return
    head = head_revision()
    if current is None:
        raise UsageError(f"no ledger at {shown_url(url)}: run `ledger ingest FILE.csv` first")
    _refuse_newer(current, url)
    if current != head:
        raise UsageError(
            f"the ledger at {shown_url(url)} has schema {current}, this version needs {head}: "
            "run `ledger ingest` (or any command that writes) to upgrade it"
        )


def open_ledger(url: str, *, read_only: bool = False) -> Ledger:
    """Open (and, unless read-only, create or upgrade) the ledger at `url`."""
    engine = create_ledger_engine(url, read_only=read_only)
    try:
        if read_only:
            _check_schema(engine, url)
        else:
            migrate(engine)
    except IntegrityError:
        engine.dispose()
        raise  # a migration that breaks a constraint is ledger's bug, not the user's
    except DatabaseError as exc:
        # Cannot connect, not a database ("file is not a database"), no permission to create
        # tables (PostgreSQL 15+ on `public`), locked, read-only...
        engine.dispose()
        detail = " ".join(str(exc.orig).split())
        raise UsageError(f"cannot open the ledger at {shown_url(url)}: {detail}") from None
    except UsageError:
        engine.dispose()
        raise
    write_engine = engine
    if engine.dialect.name == "sqlite" and not read_only:
        write_engine = create_ledger_engine(url, writer=True)
    return Ledger(
        engine=engine,
        write_engine=write_engine,
        sessions=sessionmaker(engine, expire_on_commit=False),
        write_sessions=sessionmaker(write_engine, expire_on_commit=False),
        group=GroupCommit(write_engine),
    )
