"""`ledger sql`: one read-only statement over the ledger, bounded by LEDGER_SQL_TIMEOUT_S.

A query typed by an operator (or pasted from somewhere) must never change the ledger, on either
engine, whoever the database URL's user is. Two guards stand between the text and the data,
each enough on its own for the common cases, so that neither has to be perfect:

1. The text is read first (`read_only_statement`). It must be one statement (a single trailing
   `;` is allowed) that begins with SELECT, WITH, VALUES or EXPLAIN of those, with no word
   that writes, defines, copies, sets or controls a transaction (INSERT, UPDATE, DELETE, INTO,
   COPY, SET, BEGIN, COMMIT, PRAGMA, ATTACH, ...) and no call of a function that acts outside
   the transaction (`lo_export`, `dblink_exec`, `set_config`, `load_extension`, ...). Strings,
   quoted names and comments are skipped the way each engine reads them, so a `;` or a DELETE
   inside a string literal is data. Anything it cannot read (an unterminated string) is refused.
2. The engine enforces read-only itself:
   - SQLite: the file is opened read-only (`ledger.database`), `PRAGMA query_only` is on, and
     an authorizer lets the statement read tables and call functions and nothing else; the
     sqlite3 module runs one statement per call.
   - PostgreSQL: the session's transactions are read-only by default (`ledger.database`) and
     the query runs in a `BEGIN READ ONLY` transaction. It is sent as a prepared statement
     (the extended protocol), which holds exactly one statement, so it cannot COMMIT and start
     a read-write transaction of its own.

The time bound is `SET LOCAL statement_timeout` on PostgreSQL and, on SQLite, a progress handler
that interrupts the statement once the deadline has passed.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ledger.database import Ledger
from ledger.error_handling import UsageError

ALLOWED = "SELECT, WITH … SELECT, VALUES or EXPLAIN of those"
_FIRST_WORDS = frozenset({"SELECT", "WITH", "VALUES"})
_EXPLAIN_OPTIONS = frozenset({"ANALYZE", "ANALYSE", "VERBOSE", "QUERY", "PLAN"})
# Words that only a statement that writes, defines, copies, changes a setting or controls a
# transaction contains, on either engine. None of them is needed by a read (CASE ... END, FETCH
# FIRST and replace() are reads, so END, FETCH and REPLACE are not here; REPLACE INTO has INTO).
_WRITE_WORDS = frozenset(
    """
    INSERT UPDATE DELETE MERGE UPSERT INTO CREATE DROP ALTER TRUNCATE RENAME GRANT REVOKE
    COPY ATTACH DETACH PRAGMA VACUUM REINDEX CLUSTER REFRESH IMPORT LOAD REASSIGN SECURITY
    BEGIN COMMIT ROLLBACK SAVEPOINT RELEASE SET RESET LOCK SHARE CALL DO EXECUTE PREPARE
    DEALLOCATE DECLARE LISTEN NOTIFY UNLISTEN DISCARD CHECKPOINT
    """.split()
)
# Functions that act outside the read-only transaction: files on the server, other sessions,
# settings, sequences, extensions. A read never needs them.
_SIDE_EFFECT_FUNCTIONS = frozenset(
    {
        "set_config",
        "setval",
        "nextval",
        "lowrite",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_promote",
        "pg_switch_wal",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "load_extension",
        "writefile",
        "edit",
    }
)
_SIDE_EFFECT_PREFIXES = (
    "lo_",
    "dblink",
    "pg_file_",
    "pg_advisory",
    "pg_create_",
    "pg_drop_",
    "pg_replication_",
    "pg_logical_",
    "pg_stat_reset",
    "pg_backup_",
    "pg_wal_replay_",
)

_WORD = re.compile(r"[^\W\d][\w$]*")
_NUMBER = re.compile(r"\d+(?:\.\d*)?")
_DOLLAR_TAG = re.compile(r"\$(?:[^\W\d]\w*)?\$")
_SQLITE_STEPS_PER_CHECK = 1000
_QUERY_CANCELED = "57014"  # PostgreSQL's SQLSTATE for a statement_timeout


@dataclass(frozen=True)
class QueryResult:
    columns: tuple[str, ...]
    rows: tuple[tuple[object, ...], ...]


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "name" (a quoted identifier), "semicolon" or "symbol"
    text: str
    start: int


def _refused(reason: str) -> UsageError:
    return UsageError(f"refused: {reason}; `ledger sql` runs one read-only statement ({ALLOWED})")


def read_only_statement(query: str, dialect: str) -> str:
    """The statement of `query` without its trailing `;`, if it is one read-only statement.

    `dialect` is `sqlite` or `postgresql`: their quoting differs. Raises UsageError otherwise.
    """
    tokens = _tokens(query, dialect)
    semicolons = [token for token in tokens if token.kind == "semicolon"]
    if semicolons and (len(semicolons) > 1 or tokens[-1] is not semicolons[0]):
        raise _refused("more than one statement")
    if semicolons:
        tokens = tokens[:-1]
        query = query[: semicolons[0].start]
    if not tokens:
        raise _refused("no statement")
    for token in tokens:
        if token.kind == "word" and token.text.upper() in _WRITE_WORDS:
            raise _refused(f"{token.text.upper()} is not a read")
        if token.kind in ("word", "name") and _acts_outside(token.text.lower()):
            raise _refused(f"{token.text} acts outside the read-only transaction")
    _check_first_word(tokens)
    return query


def _acts_outside(name: str) -> bool:
    return name in _SIDE_EFFECT_FUNCTIONS or name.startswith(_SIDE_EFFECT_PREFIXES)


def _check_first_word(tokens: list[_Token]) -> None:
    index = _skip_symbols(tokens, 0, "(")
    first = tokens[index].text.upper() if index < len(tokens) else ""
    if first == "EXPLAIN":
        index += 1
        if index < len(tokens) and tokens[index].text == "(":
            index = _after_parentheses(tokens, index)
        while index < len(tokens) and tokens[index].text.upper() in _EXPLAIN_OPTIONS:
            index += 1
        index = _skip_symbols(tokens, index, "(")
        explained = tokens[index].text.upper() if index < len(tokens) else ""
        if explained not in _FIRST_WORDS:
            raise _refused(f"EXPLAIN {explained or 'of nothing'} is not a read")
    elif first not in _FIRST_WORDS:
        raise _refused(f"{first or tokens[0].text} is not a read")


def _skip_symbols(tokens: list[_Token], index: int, symbol: str) -> int:
    while index < len(tokens) and tokens[index].text == symbol:
        index += 1
    return index


def _after_parentheses(tokens: list[_Token], index: int) -> int:
    depth = 0
    for position in range(index, len(tokens)):
        text = tokens[position].text if tokens[position].kind == "symbol" else ""
        depth += (text == "(") - (text == ")")
        if depth == 0:
            return position + 1
    raise _refused("unbalanced parentheses")


def _tokens(query: str, dialect: str) -> list[_Token]:
    """Words, quoted names, `;` and other symbols of `query`; strings and comments skipped."""
    postgres = dialect == "postgresql"
    tokens: list[_Token] = []
    index = 0
    end = len(query)
    while index < end:
        char = query[index]
        pair = query[index : index + 2]
        if char.isspace():
            index += 1
        elif pair == "--":
            newline = query.find("\n", index)
            index = end if newline < 0 else newline + 1
        elif pair == "/*":
            index = _block_comment_end(query, index, nested=postgres)
        elif char == "'":
            backslashes = postgres and _is_escape_string(tokens, index)
            index = _quoted_end(query, index, "'", backslashes=backslashes)
        elif char == '"' or (not postgres and char in "`["):
            closing = "]" if char == "[" else char
            stop = _quoted_end(query, index, closing, backslashes=False)
            tokens.append(_Token("name", query[index + 1 : stop - 1], index))
            index = stop
        elif postgres and char == "$" and (tag := _DOLLAR_TAG.match(query, index)):
            found = query.find(tag.group(), tag.end())
            if found < 0:
                raise _refused("a dollar-quoted string does not end")
            index = found + len(tag.group())
        elif word := _WORD.match(query, index):
            if word.group().lower() == "u" and query[word.end() : word.end() + 2] in ("&'", '&"'):
                raise _refused("Unicode escapes (U&'…') are not supported")
            tokens.append(_Token("word", word.group(), index))
            index = word.end()
        elif number := _NUMBER.match(query, index):
            index = number.end()
        else:
            tokens.append(_Token("semicolon" if char == ";" else "symbol", char, index))
            index += 1
    return tokens


def _is_escape_string(tokens: list[_Token], quote: int) -> bool:
    """PostgreSQL's E'…' (backslash escapes): an E right before the quote."""
    if not tokens:
        return False
    last = tokens[-1]
    return last.kind == "word" and last.text in ("E", "e") and last.start + 1 == quote


def _quoted_end(query: str, start: int, closing: str, *, backslashes: bool) -> int:
    """The index after the quote that closes the one at `start` (a doubled quote is data)."""
    index = start + 1
    while index < len(query):
        char = query[index]
        if backslashes and char == "\\":
            index += 2
        elif char == closing:
            if closing != "]" and query[index + 1 : index + 2] == closing:
                index += 2
            else:
                return index + 1
        else:
            index += 1
    raise _refused("a string or quoted name does not end")


def _block_comment_end(query: str, start: int, *, nested: bool) -> int:
    """The index after the comment at `start`; PostgreSQL's comments nest, SQLite's do not."""
    depth = 0
    index = start
    while index < len(query):
        pair = query[index : index + 2]
        if pair == "/*" and (nested or depth == 0):
            depth += 1
            index += 2
        elif pair == "*/":
            depth -= 1
            index += 2
            if depth == 0:
                return index
        else:
            index += 1
    raise _refused("a comment does not end")


# --- running it ------------------------------------------------------------------------------


def run_query(ledger: Ledger, query: str, *, timeout_s: float) -> QueryResult:
    """The columns and rows of `query`, run read-only for at most `timeout_s` seconds.

    A refused statement, a failed query and one that ran out of time are UsageErrors.
    """
    if timeout_s <= 0:
        raise ValueError("the query timeout must be positive")
    dialect = ledger.engine.dialect.name
    statement = read_only_statement(query, dialect)
    driver_error: type[Exception] = ledger.engine.dialect.loaded_dbapi.Error
    guard = _SqliteGuard(timeout_s)
    try:
        with ledger.engine.connect() as connection:
            driver = connection.connection.driver_connection
            try:
                if dialect == "sqlite":
                    return _run_on_sqlite(driver, statement, guard)
                return _run_on_postgres(driver, statement, timeout_s)
            except driver_error as exc:
                raise _failed(exc, guard, timeout_s) from None
            finally:
                # The statement may have changed the session (set_config is refused, but the
                # connection is not worth trusting again): it is closed, not pooled.
                connection.invalidate()
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise UsageError(f"query failed: {detail}") from None


def _failed(exc: Exception, guard: _SqliteGuard, timeout_s: float) -> UsageError:
    if guard.expired or getattr(exc, "sqlstate", None) == _QUERY_CANCELED:
        return UsageError(
            f"the query exceeded LEDGER_SQL_TIMEOUT_S ({timeout_s:g} s) and was stopped"
        )
    if guard.denied:
        return _refused(f"{guard.denied} is not a read")
    detail = (str(exc).splitlines() or [type(exc).__name__])[0]
    return UsageError(f"query failed: {detail}")


def _result(cursor: Any) -> QueryResult:
    if cursor.description is None:
        raise UsageError("the query returned no rows to show")
    columns = tuple(str(column[0]) for column in cursor.description)
    return QueryResult(columns, tuple(tuple(row) for row in cursor.fetchall()))


def _run_on_postgres(driver: Any, statement: str, timeout_s: float) -> QueryResult:
    driver.rollback()  # a transaction's mode is set before it begins
    driver.read_only = True  # BEGIN READ ONLY
    try:
        with driver.cursor() as cursor:
            cursor.execute(f"SET LOCAL statement_timeout = {max(1, round(timeout_s * 1000))}")
            # How the statement was read above: backslashes are data outside E'…'.
            cursor.execute("SET LOCAL standard_conforming_strings = on")
            # prepare=True sends it with the extended protocol: one statement, never more.
            cursor.execute(statement, prepare=True)
            return _result(cursor)
    finally:
        driver.rollback()


_SQLITE_WRITES = {
    sqlite3.SQLITE_INSERT: "INSERT",
    sqlite3.SQLITE_UPDATE: "UPDATE",
    sqlite3.SQLITE_DELETE: "DELETE",
    sqlite3.SQLITE_PRAGMA: "PRAGMA",
    sqlite3.SQLITE_ATTACH: "ATTACH",
    sqlite3.SQLITE_DETACH: "DETACH",
    sqlite3.SQLITE_TRANSACTION: "a transaction",
    sqlite3.SQLITE_SAVEPOINT: "a savepoint",
}


class _SqliteGuard:
    """The deadline and the authorizer of one SQLite query, and what each stopped."""

    _READS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE})

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self._clock = clock
        self._deadline = 0.0
        self.expired = False
        self.denied: str | None = None

    def start(self) -> None:
        self._deadline = self._clock() + self.timeout_s

    def progress(self) -> int:
        """Called by SQLite every few thousand steps: non-zero interrupts the statement."""
        if self._clock() > self._deadline:
            self.expired = True
            return 1
        return 0

    def authorize(
        self, action: int, arg1: str | None, arg2: str | None, _db: str | None, _view: str | None
    ) -> int:
        if action in self._READS:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION and not _acts_outside((arg2 or "").lower()):
            return sqlite3.SQLITE_OK
        if self.denied is None:
            what = arg2 if action == sqlite3.SQLITE_FUNCTION else _SQLITE_WRITES.get(action)
            self.denied = what or "this statement"
        return sqlite3.SQLITE_DENY


def _run_on_sqlite(driver: Any, statement: str, guard: _SqliteGuard) -> QueryResult:
    driver.execute("PRAGMA query_only = ON")
    # Waiting for a lock counts against the same bound as running.
    busy_ms = max(1, min(round(guard.timeout_s * 1000), 2**31 - 1))
    driver.execute(f"PRAGMA busy_timeout = {busy_ms}")
    driver.set_authorizer(guard.authorize)
    guard.start()
    driver.set_progress_handler(guard.progress, _SQLITE_STEPS_PER_CHECK)
    try:
        return _result(driver.execute(statement))
    finally:
        driver.set_progress_handler(None, 0)
        driver.set_authorizer(None)
