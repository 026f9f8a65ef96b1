"""`ledger sql`: one query over a ledger opened read-only, its errors as one line."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ledger.database import Ledger
from ledger.error_handling import UsageError


@dataclass(frozen=True)
class QueryResult:
    columns: tuple[str, ...]
    rows: tuple[tuple[object, ...], ...]


def run_query(ledger: Ledger, query: str) -> QueryResult:
    """The columns and rows `query` returns; a failed query is a UsageError."""
    try:
        with ledger.read() as session:
            result = session.connection().execute(text(query))
            if not result.returns_rows:
                raise UsageError("the query returned no rows to show")
            return QueryResult(tuple(result.keys()), tuple(tuple(row) for row in result))
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise UsageError(f"query failed: {detail}") from None
