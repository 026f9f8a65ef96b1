"""`atomic_write_csv` skips `neutralise` for the cells it would leave alone: what it writes is
still, byte for byte, every cell through `neutralise`, and a line holding a carriage return
quoted whole."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ledger.cells import neutralise
from ledger.writers import atomic_write_csv

CELLS: list[object] = [
    None,
    "",
    0,
    7,
    -3,
    1.5,
    -1.5,
    True,
    False,
    "plain",
    "=SUM(A1)",
    "+14155550100",
    "+1 415",
    "-x",
    "@me",
    "\tx",
    "\rx",
    "a\rb",
    "a\nb",
    "'=x",
    "''-x",
    "'plain",
    'say "hi", then',
    "ñandú",
]


def expected(columns: list[str], lines: list[list[object]]) -> str:
    """The definition: every cell through `neutralise`; a line with a `\\r` quoted whole."""
    text = io.StringIO()
    plain = csv.writer(text, lineterminator="\n")
    quoting = csv.writer(text, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for line in [columns, *lines]:
        cells = [neutralise(cell) for cell in line]
        (quoting if any("\r" in cell for cell in cells) else plain).writerow(cells)
    return text.getvalue()


def test_every_cell_is_written_as_neutralise_gives_it(tmp_path: Path) -> None:
    columns = ["a", "=b", "c"]
    lines = [
        [CELLS[i % len(CELLS)], CELLS[(i * 7) % len(CELLS)], CELLS[i]] for i in range(len(CELLS))
    ]
    path = tmp_path / "out.csv"

    count = atomic_write_csv(path, columns, iter(lines))

    assert count == len(lines)
    assert path.read_bytes().decode("utf-8") == expected(columns, lines)


def test_one_column_and_empty_lines_are_written_as_the_csv_module_writes_them(
    tmp_path: Path,
) -> None:
    for columns, lines in (
        (["only"], [[""], [None], ["x"], [0], ["a,b"], ['"'], ["\r"], ["-1"]]),
        (["a", "b"], [["", ""], [None, None], ["", "x,"], [" ", "\t"]]),
    ):
        path = tmp_path / "out.csv"
        atomic_write_csv(path, columns, iter(lines))
        assert path.read_bytes().decode("utf-8") == expected(columns, lines)
