"""retry_rows.csv reads back as it was written (SPEC section 5, README "Fixing and retrying").

Export puts a `'` before every cell a spreadsheet would execute; re-ingesting the retry file, as
the README advises, must see the cells without it. Otherwise `+1 512 555 0199` comes back as
`'+1 512 555 0199` (rejected `invalid_phone`) and `-Bo` as `'-Bo` (accepted, wrong).
"""

from __future__ import annotations

import csv
import json
import tracemalloc

import pytest

from ledger.cells import neutralise, restore
from ledger.row_rules import NAME_MAX
from tests.support.cli import LedgerEnv, assert_exit, ingest, invoke, query
from tests.support.csvfiles import read_csv, write_csv

# `=notes` and `-tag` are columns ledger does not use: kept in the raw row, and in the retry
# file's header, where a spreadsheet would execute them too.
HEADER = [
    "email",
    "first_name",
    "last_name",
    "display_name",
    "location_name",
    "extension",
    "phone_number",
    "title",
    "voicemail_rings",
    "=notes",
    "-tag",
]
ROWS = [
    # 1: accepted; 2 repeats it (rejected duplicate_in_file), so that the retry file holds a
    # row which, ingested alone, is accepted with exactly row 1's normalized values.
    ["bo@example.com", "-Bo", "Ng", "", "HQ", "", "+1 512 555 0199", "@lead", "", "=1+2", "-x"],
    ["BO@example.com", "-Bo", "Ng", "", "HQ", "", "+1 512 555 0199", "@lead", "", "=1+2", "-x"],
    ["cy@example.com", "=Cy", "Li", "", "HQ", "", "-555", "", "", "+SUM(A1)", ""],
    ["di@example.com", "Di", "X" * (NAME_MAX + 1), "", "HQ", "1003", "", "\tcmd", "", "", "@"],
    ["ed@example.com", "Ed", "Ko", "+Boss", "-Lab", "1004", "", "-cmd", "99", "\r-1", "'-q"],
]


def rows_of_run(env: LedgerEnv, run: int) -> list[tuple[int, str, str | None, str | None, str]]:
    """(row_id, status, reason_code, normalized_json, raw_json) of a run, by row_id."""
    return query(
        env,
        "SELECT row_id, status, reason_code, normalized_json, raw_json FROM rows "
        "WHERE run_id = ? ORDER BY row_id",
        run,
    )


def test_reingesting_the_retry_file_gives_back_the_same_rows(ledger_env: LedgerEnv) -> None:
    # CRLF line ends, so that the csv module quotes the cell holding a carriage return.
    users = write_csv(ledger_env.root / "users.csv", HEADER, ROWS, newline="\r\n")
    assert_exit(ingest(ledger_env, users), 0)
    original = rows_of_run(ledger_env, 1)
    assert [(row[1], row[2]) for row in original] == [
        ("ready", None),
        ("rejected", "duplicate_in_file"),
        ("rejected", "invalid_phone"),
        ("rejected", "invalid_name"),
        ("rejected", "invalid_value"),
    ]
    first_rejected = read_csv(ledger_env.rejected_csv)
    assert_exit(invoke("export", "--db", ledger_env.db_url), 0)
    retry_file = ledger_env.out_dir / "retry_rows.csv"
    with retry_file.open(encoding="utf-8", newline="") as handle:
        written = list(csv.reader(handle))
    # The file is still safe to open in a spreadsheet, header included.
    assert written[0] == [neutralise(name) for name in HEADER] + ["reason_code"]
    assert written[0][-3:-1] == ["'=notes", "'-tag"]
    assert written[1][1] == "'-Bo"

    assert_exit(ingest(ledger_env, retry_file), 0)
    again = rows_of_run(ledger_env, 2)
    # The duplicate, now alone, is accepted as row 1 was: same normalized values.
    assert again[0][1:3] == ("ready", None)
    assert json.loads(str(again[0][3])) == json.loads(str(original[0][3]))
    # The others are rejected for the same reasons, on the same fields.
    second_rejected = read_csv(ledger_env.rejected_csv)
    assert [(line["reason_code"], line["field"]) for line in second_rejected] == [
        (line["reason_code"], line["field"]) for line in first_rejected[1:]
    ]
    # And every row reads back cell for cell, under the file's own headers.
    for before, after in zip(original[1:], again, strict=True):
        raw_after = json.loads(after[4])
        assert raw_after.pop("reason_code") == before[2]
        assert raw_after == json.loads(before[4])


@pytest.mark.parametrize(
    "cell",
    [
        "=1+2",
        "-Bo",
        "+1 512 555 0199",
        "+15125550199",
        "@x",
        "\tx",
        "\r-1",
        "'-q",
        "''=x",
        "'",
        "'plain",
        "O'Brien",
        "plain",
        "",
        "-",
        "'+15125550199",
    ],
)
def test_restore_undoes_neutralise(cell: str) -> None:
    assert restore(neutralise(cell)) == cell


def test_the_retry_file_is_written_as_it_is_read_not_built_in_memory(
    ledger_env: LedgerEnv,
) -> None:
    # A narrow file with a wide header: every short row becomes a line of 5,000 cells in the
    # retry file, a file of several megabytes. Building it in memory first cost twice its size
    # and more; streaming it costs about one line.
    header = ["email", "first_name", "location_name", "extension"] + [
        f"c{index}" for index in range(5000)
    ]
    path = ledger_env.root / "wide.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(",".join(header) + "\n")
        for index in range(1000):
            handle.write(f"user{index}@example.com,A,HQ,{1000 + index}\n")  # malformed_row
    assert_exit(ingest(ledger_env, path), 0)
    assert_exit(invoke("export", "--db", ledger_env.db_url), 0)  # the first one warms caches
    tracemalloc.start()
    try:
        assert_exit(invoke("export", "--db", ledger_env.db_url), 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = (ledger_env.out_dir / "retry_rows.csv").stat().st_size
    assert size > 5_000_000
    assert peak < size / 2, (peak, size)
