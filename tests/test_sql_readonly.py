"""`ledger sql` is read-only for real (SPEC sections 1 and 2): one statement, nothing that
writes, defines, copies or controls a transaction, on SQLite and on PostgreSQL, and bounded by
LEDGER_SQL_TIMEOUT_S. Every refusal is one line on stderr and exit 2, and the rows are still
there afterwards.
"""

from __future__ import annotations

import re
import tempfile
import uuid
from pathlib import Path

import pytest

from ledger.config import Settings, load_settings
from ledger.error_handling import UsageError
from ledger.row_rules import COLUMNS
from ledger.sql_query import read_only_statement
from tests.support.cli import LedgerEnv, assert_exit, invoke
from tests.support.csvfiles import write_csv
from tests.support.ledgers import copy_ledger
from tests.support.people import person
from tests.support.postgres import PostgresServer

ROWS = 3
ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
ENDLESS = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"


def ingest_once(folder: Path, url: str) -> None:
    """`ledger ingest` of ROWS people into the ledger at `url`, run from `folder`, with no
    setting from the shell (as the `ledger_env` fixture does for a test)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in Settings.model_fields:
            patch.delenv(name, raising=False)
        patch.chdir(folder)
        people = write_csv(folder / "users.csv", COLUMNS, [person(n) for n in range(1, ROWS + 1)])
        env = {"LEDGER_OUTPUT_DIR": str(folder / "out"), "LEDGER_LOG_FILE": str(folder / "log")}
        assert_exit(invoke("ingest", str(people), "--db", url, env=env), 0)


@pytest.fixture(scope="module")
def ingested_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ingested")
    ingest_once(folder, f"sqlite:///{folder}/l.db")
    # Copied as one file: nothing of the ingest may be left in a write-ahead log beside it.
    assert not (folder / "l.db-wal").exists(), "the ingested ledger was left with a -wal"
    return folder / "l.db"


@pytest.fixture(scope="module")
def ingested_postgres(
    postgres_server: PostgresServer,
    _postgres_ledger_template: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    url = postgres_server.create_database(template=_postgres_ledger_template)
    ingest_once(tmp_path_factory.mktemp("ingested"), url)
    return url.rsplit("/", 1)[1]


@pytest.fixture(params=ENGINES)
def ledger_url(request: pytest.FixtureRequest, ledger_env: LedgerEnv) -> str:
    """A ledger holding one run of ROWS rows, on each engine: a copy of one ingested once per
    module, so that a write that got through cannot reach another test."""
    if request.param == "sqlite":
        return copy_ledger(request.getfixturevalue("ingested_sqlite"), ledger_env.db_path)
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(template=request.getfixturevalue("ingested_postgres"))


def sql(url: str, query: str, **env: str) -> tuple[int, str, str]:
    result = invoke("sql", query, "--csv", "--db", url, env=env)
    if result.exit_code in (0, 2):
        assert_exit(result, result.exit_code)
    return result.exit_code, result.stdout, result.stderr


def row_count(url: str) -> int:
    code, out, _ = sql(url, "SELECT count(*) AS n FROM rows")
    assert code == 0
    return int(out.splitlines()[1])


def assert_refused(url: str, query: str, *, why: str = "refused") -> str:
    code, out, err = sql(url, query)
    assert code == 2, (query, out, err)
    assert len(err.splitlines()) == 1, err
    assert err.startswith("ledger: ") and why in err, err
    assert out == ""
    assert row_count(url) == ROWS, f"{query!r} changed the ledger"
    return err


def test_a_read_prints_rows(ledger_url: str) -> None:
    code, out, _ = sql(ledger_url, "SELECT row_id, email FROM v_rows ORDER BY row_id;")
    assert code == 0
    assert out.splitlines() == [
        "row_id,email",
        "1,user1@example.com",
        "2,user2@example.com",
        "3,user3@example.com",
    ]
    # A `;` or a write word in a string, a quoted name or a comment is data.
    code, out, _ = sql(
        ledger_url,
        "SELECT 'a;b' AS \"x;DELETE\", 'DELETE FROM rows' AS w -- ; DROP TABLE rows\n;"
        " /* trailing; comment */",
    )
    assert code == 0
    assert out.splitlines() == ["x;DELETE,w", "a;b,DELETE FROM rows"]
    code, out, _ = sql(ledger_url, "EXPLAIN SELECT * FROM rows")
    assert code == 0


@pytest.mark.parametrize(
    "query",
    [
        "BEGIN; SET TRANSACTION READ WRITE; DELETE FROM rows WHERE row_id > 1; COMMIT; SELECT 1",
        "SELECT 1; DELETE FROM rows",
        "SELECT ';'; DELETE FROM rows",
        "SELECT 1 /* ; */; DELETE FROM rows; -- ;",
    ],
)
def test_more_than_one_statement_is_refused(ledger_url: str, query: str) -> None:
    assert "more than one statement" in assert_refused(ledger_url, query)


def test_copy_to_program_is_refused(ledger_url: str) -> None:
    # Somewhere the database server's own user may write, were the command to run.
    marker = Path(tempfile.gettempdir()) / f"ledger-sql-{uuid.uuid4().hex}"
    try:
        for query in (
            f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
            f"COPY rows TO '{marker}'",
        ):
            assert "COPY is not a read" in assert_refused(ledger_url, query)
        assert not marker.exists()
    finally:
        marker.unlink(missing_ok=True)


@pytest.mark.parametrize(
    "query",
    [
        "CREATE TABLE notes (body TEXT)",
        "CREATE TEMP VIEW mine AS SELECT 1",
        "DROP TABLE rows",
        "DROP VIEW v_rows",
        "ALTER TABLE rows ADD COLUMN note TEXT",
        "TRUNCATE rows",
        "SELECT row_id INTO copied FROM rows",
    ],
)
def test_ddl_is_refused(ledger_url: str, query: str) -> None:
    assert_refused(ledger_url, query)
    code, _, _ = sql(ledger_url, "SELECT count(*) FROM v_rows")
    assert code == 0, "the views are still there"


@pytest.mark.parametrize(
    "query",
    [
        "WITH gone AS (DELETE FROM rows RETURNING row_id) SELECT count(*) FROM gone",
        "WITH gone AS (SELECT 1) DELETE FROM rows",
        "WITH changed AS (UPDATE rows SET status = 'ready' RETURNING 1) SELECT 1",
        "EXPLAIN DELETE FROM rows",
        "EXPLAIN ANALYZE DELETE FROM rows",
    ],
)
def test_a_write_inside_a_read_is_refused(ledger_url: str, query: str) -> None:
    assert_refused(ledger_url, query)


@pytest.mark.parametrize(
    "query",
    [
        "PRAGMA query_only = OFF",
        "ATTACH DATABASE 'other.db' AS other",
        "SET default_transaction_read_only = off",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "SELECT lo_export(1, '/tmp/ledger-lo')",
        "SELECT \"lo_export\"(1, '/tmp/ledger-lo')",
        "SELECT pg_catalog.lo_import('/etc/hostname')",
        "SELECT load_extension('evil')",
        "SELECT row_id FROM rows FOR UPDATE",
        "COMMIT",
        "SAVEPOINT s",
        "VACUUM",
        "ROLLBACK",
    ],
)
def test_settings_sessions_and_side_effects_are_refused(ledger_url: str, query: str) -> None:
    assert_refused(ledger_url, query)


def test_the_engine_refuses_a_write_the_text_check_let_through(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second guard alone: the engine's read-only mode, with the text check switched off."""
    monkeypatch.setattr("ledger.sql_query.read_only_statement", lambda query, _dialect: query)
    for query in (
        "DELETE FROM rows",
        "UPDATE rows SET status = 'ready'",
        "CREATE TABLE notes (body TEXT)",
        "SELECT 1; DELETE FROM rows",
        "BEGIN; SET TRANSACTION READ WRITE; DELETE FROM rows; COMMIT; SELECT 1",
    ):
        code, out, err = sql(ledger_url, query)
        assert code == 2, (query, out, err)
        assert len(err.splitlines()) == 1, err
    monkeypatch.undo()
    assert row_count(ledger_url) == ROWS


def test_a_query_that_never_ends_is_stopped_at_the_timeout(ledger_url: str) -> None:
    code, out, err = sql(ledger_url, ENDLESS, LEDGER_SQL_TIMEOUT_S="0.3")
    assert code == 2, (out, err)
    assert err.splitlines() == [
        "ledger: the query exceeded LEDGER_SQL_TIMEOUT_S (0.3 s) and was stopped"
    ]
    assert out == ""


def test_the_timeout_is_30_seconds_unless_set(ledger_env: LedgerEnv) -> None:
    assert load_settings().LEDGER_SQL_TIMEOUT_S == 30


def test_the_timeout_must_be_positive(ledger_env: LedgerEnv) -> None:
    for bad in ("0", "-1", "soon"):
        result = invoke(
            "sql", "SELECT 1", "--db", ledger_env.db_url, env={"LEDGER_SQL_TIMEOUT_S": bad}
        )
        assert_exit(result, 2)
        assert "LEDGER_SQL_TIMEOUT_S" in result.stderr
        assert len(result.stderr.splitlines()) == 1


# --- reading the statement -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "query", "statement"),
    [
        ("sqlite", "SELECT 1;", "SELECT 1"),
        ("sqlite", "SELECT 1 ; -- the end", "SELECT 1 "),
        ("sqlite", "(SELECT 1) UNION (SELECT 2)", "(SELECT 1) UNION (SELECT 2)"),
        ("sqlite", "values (1)", "values (1)"),
        (
            "sqlite",
            "EXPLAIN QUERY PLAN SELECT * FROM rows",
            "EXPLAIN QUERY PLAN SELECT * FROM rows",
        ),
        ("sqlite", "SELECT [a;b], `c;d` FROM t", "SELECT [a;b], `c;d` FROM t"),
        ("sqlite", "SELECT 'it''s; fine'", "SELECT 'it''s; fine'"),
        (
            "sqlite",
            "SELECT replace(email, 'a', 'b') FROM rows",
            "SELECT replace(email, 'a', 'b') FROM rows",
        ),
        ("postgresql", "SELECT $$a; DELETE$$", "SELECT $$a; DELETE$$"),
        ("postgresql", "SELECT $q$ $$; $q$;", "SELECT $q$ $$; $q$"),
        ("postgresql", "SELECT E'\\'; DELETE'", "SELECT E'\\'; DELETE'"),
        (
            "postgresql",
            "SELECT /* a /* nested; */ comment; */ 1",
            "SELECT /* a /* nested; */ comment; */ 1",
        ),
        (
            "postgresql",
            "EXPLAIN (ANALYZE, FORMAT JSON) SELECT 1",
            "EXPLAIN (ANALYZE, FORMAT JSON) SELECT 1",
        ),
        (
            "postgresql",
            "SELECT a[1] FROM t FETCH FIRST 1 ROWS ONLY",
            "SELECT a[1] FROM t FETCH FIRST 1 ROWS ONLY",
        ),
        ("postgresql", "SELECT CASE WHEN x THEN 1 END", "SELECT CASE WHEN x THEN 1 END"),
    ],
)
def test_statements_that_only_read(dialect: str, query: str, statement: str) -> None:
    assert read_only_statement(query, dialect) == statement


@pytest.mark.parametrize(
    ("dialect", "query", "why"),
    [
        ("sqlite", "", "no statement"),
        ("sqlite", " ; ", "no statement"),
        ("sqlite", "SELECT 1;;", "more than one statement"),
        ("sqlite", "SELECT 'unterminated", "does not end"),
        ("sqlite", "SELECT 1 /* open", "does not end"),
        # SQLite has no dollar quoting, E-strings or nested comments: the `;` is outside.
        ("sqlite", "SELECT $$; DELETE FROM rows; $$", "more than one statement"),
        ("sqlite", "SELECT 'a\\'; DELETE FROM rows; --'", "more than one statement"),
        ("sqlite", "SELECT /* a /* b */ ; DELETE FROM rows; */ 1", "more than one statement"),
        ("postgresql", "SELECT 'a\\'; DELETE FROM rows; --'", "more than one statement"),
        ("postgresql", "SELECT [a;b] FROM t", "more than one statement"),
        ("postgresql", "SELECT $x$ never closed", "does not end"),
        ("postgresql", "SELECT U&\"lo\\005fexport\"(1, '/tmp/x')", "Unicode escapes"),
        ("postgresql", "TABLE rows", "TABLE is not a read"),
        ("postgresql", "SHOW ALL", "SHOW is not a read"),
        ("postgresql", "EXPLAIN (ANALYZE) EXECUTE q", "EXECUTE is not a read"),
        ("postgresql", "SELECT dblink_exec('dbname=x', 'DELETE FROM rows')", "dblink_exec"),
        ("postgresql", "SELECT pg_advisory_lock(1)", "pg_advisory_lock"),
        ("postgresql", "SELECT nextval('rows_id_seq')", "nextval"),
    ],
)
def test_statements_that_are_refused(dialect: str, query: str, why: str) -> None:
    with pytest.raises(UsageError, match=re.escape(why)) as refused:
        read_only_statement(query, dialect)
    assert str(refused.value).startswith("refused: ")


def test_every_documented_query_is_accepted() -> None:
    docs = Path(__file__).resolve().parents[1]
    text = (docs / "docs" / "sql.md").read_text(encoding="utf-8")
    text += (docs / "README.md").read_text(encoding="utf-8")
    queries = [
        match.group(1)
        for match in re.finditer(r'^ledger sql (?:--\S+ (?:\S+ )?)*"(.+)"', text, re.MULTILINE)
        if match.group(1) != "SELECT …"
    ]
    assert len(queries) >= 20
    for query in queries:
        for dialect in ("sqlite", "postgresql"):
            assert read_only_statement(query, dialect) == query
