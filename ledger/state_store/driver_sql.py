"""Core statements compiled once per dialect and run by the database driver with plain tuples.

SQLAlchemy prepares every parameter set of every execution anew (a dict per set, a processor
per value, a new execution context), which costs more than the database's own work for the
small statements of the step-record hot path. A `DriverStatement` is compiled once per dialect
to SQL with positional parameters; each execution hands the driver one tuple per row, in an
order the caller names once (`names`), with the statement's own constants filled in.

A bound value that SQLAlchemy would convert reaches the driver as the caller gives it; the only
conversion allowed is of datetimes, which the caller makes once per transaction with
`Dialect.datetime` (SQLAlchemy's own processor, so SQLite stores byte for byte the same text).
Any other converted bind is refused when the statement is compiled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import Dialect as SADialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

Row = tuple[Any, ...]


class DriverStatement:
    """A statement compiled for one dialect; `run` executes it for many rows at once."""

    __slots__ = ("_constants", "_order", "sql")

    def __init__(self, sql: str, order: Sequence[int], constants: Row) -> None:
        self.sql = sql
        self._constants = constants
        # itemgetter of one index gives the item, not a 1-tuple.
        self._order: Callable[[Row], Any] = (
            itemgetter(*order) if len(order) > 1 else (lambda row: tuple(row[i] for i in order))
        )

    def run(self, connection: Connection, rows: Sequence[Row]) -> int:
        """Execute for every row (one `executemany`); the rows it matched or inserted in all."""
        order = self._order
        constants = self._constants
        if constants:
            driver_rows = [order(row + constants) for row in rows]
        else:
            driver_rows = [order(row) for row in rows]
        cursor = connection.connection.cursor()
        try:
            if len(driver_rows) == 1:
                cursor.execute(self.sql, driver_rows[0])
            else:
                cursor.executemany(self.sql, driver_rows)
            return int(cursor.rowcount)
        finally:
            cursor.close()


class Dialect:
    """The statements of one dialect, compiled on first use, and its datetime conversion."""

    def __init__(self, dialect: SADialect) -> None:
        self.name = dialect.name
        # Compiled with positional parameters, whatever the driver's default style.
        dialect_class: Any = type(dialect)
        self._compiler_dialect: SADialect = (
            dialect if dialect.positional else dialect_class(paramstyle="format")
        )
        processor = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
        self.datetime: Callable[[datetime | None], Any] = processor or _same
        self._compiled: dict[tuple[int, tuple[str, ...]], DriverStatement] = {}
        self._lock = threading.Lock()

    def statement(
        self, statement: ClauseElement, names: Sequence[str], *, insert: bool = False
    ) -> DriverStatement:
        """`statement` compiled for this dialect, taking each row's values in `names`' order.

        For an INSERT, `names` are its columns (and nothing else is inserted).
        """
        key = (id(statement), tuple(names))
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compile(statement, names, insert=insert)
            with self._lock:
                self._compiled[key] = compiled
        return compiled

    def _compile(
        self, statement: ClauseElement, names: Sequence[str], *, insert: bool
    ) -> DriverStatement:
        dialect = self._compiler_dialect
        kwargs: dict[str, Any] = {"column_keys": list(names)} if insert else {}
        compiled = statement.compile(dialect=dialect, for_executemany=True, **kwargs)
        if not isinstance(compiled, SQLCompiler):  # pragma: no cover - DML compiles to SQL
            raise TypeError(f"not a SQL statement: {statement!r}")
        positions = compiled.positiontup
        if positions is None:  # pragma: no cover - the dialect above is positional
            raise TypeError(f"{dialect.name}: statement compiled without positional parameters")
        index = {name: place for place, name in enumerate(names)}
        constants: list[Any] = []
        order: list[int] = []
        for name in positions:
            bind = compiled.binds[name]
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None and not isinstance(bind.type, DateTime):
                raise TypeError(f"{name}: {bind.type!r} needs a conversion the driver lacks")
            if name in index:
                order.append(index[name])
            elif bind.callable is None and not bind.required:  # a constant of the statement
                order.append(len(names) + len(constants))
                value = bind.effective_value
                constants.append(value if processor is None else processor(value))
            else:
                raise TypeError(f"{name}: no value given for this parameter")
        return DriverStatement(compiled.string, order, tuple(constants))


def _same(value: Any) -> Any:
    return value


_DIALECTS: dict[tuple[str, str], Dialect] = {}


def dialect_of(connection: Connection) -> Dialect:
    """The `Dialect` of `connection`'s database (one per dialect name, made once)."""
    dialect = connection.dialect
    key = (dialect.name, dialect.driver)
    found = _DIALECTS.get(key)
    if found is None:
        found = _DIALECTS.setdefault(key, Dialect(dialect))
    return found
