"""CSV files as a spreadsheet writes them (UTF-8, quoting only where needed), and read back.

A row is either its cells in the header's order, or a mapping {column: cell} whose missing
columns are left blank; a key that is not a column of the header is an error, so that a
misspelt column cannot vanish from a test's input unnoticed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

Cells = Sequence[str] | Mapping[str, str]


def _in_order(header: Sequence[str], row: Cells) -> Sequence[str]:
    if not isinstance(row, Mapping):
        return row
    unknown = set(row) - set(header)
    if unknown:
        raise ValueError(f"not CSV columns: {sorted(unknown)}")
    return [row.get(column, "") for column in header]


def csv_text(header: Sequence[str], rows: Iterable[Cells], *, newline: str = "\n") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(_in_order(header, row) for row in rows)
    return buffer.getvalue()


def write_csv(
    path: Path,
    header: Sequence[str],
    rows: Iterable[Cells],
    *,
    newline: str = "\n",
    bom: bool = False,
) -> Path:
    """Write a UTF-8 CSV the way a spreadsheet would (quoting only where needed)."""
    data = csv_text(header, rows, newline=newline).encode("utf-8")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def one_user_csv(path: Path) -> Path:
    """The smallest valid input: one user, with the columns a row needs."""
    return write_csv(
        path,
        ["email", "first_name", "location_name", "extension"],
        [["a@example.com", "A", "HQ", "10"]],
    )
