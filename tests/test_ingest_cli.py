"""`ledger ingest` the way a user runs it (SPEC sections 1, 3 and 5): through the typer app,
with a SQLite ledger, the artifacts and the log in a temporary folder. Every case checks the
exit code, that no traceback reaches the terminal, and what the ledger and
`rejected_rows.csv` then hold."""

from __future__ import annotations

import json
import logging
import sqlite3
from contextlib import closing
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import Result

from ledger.config import load_settings
from ledger.database import open_ledger
from ledger.ingest import ingest_file
from ledger.row_rules import LocationSpec, UserRow
from ledger.writers import REJECTED_COLUMNS, neutralise
from tests.support.cli import (
    LedgerEnv,
    assert_exit,
    assert_no_traceback,
    ingest,
    invoke,
    query,
    run_count,
)
from tests.support.csvfiles import read_csv, write_csv
from tests.support.people import person

HEADER = [
    "email",
    "first_name",
    "last_name",
    "display_name",
    "location_name",
    "location_time_zone",
    "location_country",
    "extension",
    "phone_number",
    "department",
    "title",
    "voicemail_enabled",
    "call_waiting_enabled",
    "voicemail_rings",
    "caller_id",
]


def write_people(
    path: Path,
    people: list[dict[str, str]],
    header: list[str] = HEADER,
    *,
    bom: bool = False,
    newline: str = "\n",
) -> Path:
    return write_csv(path, header, people, bom=bom, newline=newline)


def row_states(env: LedgerEnv) -> list[tuple[object, ...]]:
    """(row_id, status, batch_id, reason_code, reason_field) of the latest run, by row_id."""
    return query(
        env,
        "SELECT row_id, status, batch_id, reason_code, reason_field FROM rows "
        "WHERE run_id = (SELECT MAX(id) FROM runs) ORDER BY row_id",
    )


def rejected(env: LedgerEnv) -> list[tuple[str, str, str]]:
    """(row_id, reason_code, field) of each line of rejected_rows.csv."""
    return [(r["row_id"], r["reason_code"], r["field"]) for r in read_csv(env.rejected_csv)]


def assert_refused(env: LedgerEnv, result: Result, *words: str) -> None:
    """Exit 2, one line on stderr naming the problem, and nothing ingested."""
    assert_exit(result, 2)
    assert result.stderr.count("\n") == 1, result.stderr
    for word in words:
        assert word in result.stderr
    assert run_count(env) == 0
    assert not env.rejected_csv.exists()


# --- rejected rows: every reason code --------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "reason", "field"),
    [
        ({"email": ""}, "missing_field", "email"),
        ({"first_name": "", "last_name": ""}, "missing_field", "first_name"),
        ({"location_name": " "}, "missing_field", "location_name"),
        ({"extension": ""}, "missing_field", "extension"),
        ({"email": "user2@"}, "invalid_email", "email"),
        ({"email": "user 2@example.com"}, "invalid_email", "email"),
        ({"first_name": "Abcdefghijklmnopqrstuvwxyzabcde"}, "invalid_name", "first_name"),
        ({"last_name": "Smith#2"}, "invalid_name", "last_name"),
        ({"display_name": "<b>Bold</b>"}, "invalid_name", "display_name"),
        ({"phone_number": "555-0100"}, "invalid_phone", "phone_number"),
        ({"phone_number": "+1 415 555 01OO"}, "invalid_phone", "phone_number"),
        ({"extension": "7"}, "invalid_extension", "extension"),
        ({"extension": "10 01"}, "invalid_extension", "extension"),
        ({"voicemail_rings": "25"}, "invalid_value", "voicemail_rings"),
        ({"voicemail_rings": "\u00b2"}, "invalid_value", "voicemail_rings"),
        ({"voicemail_enabled": "si"}, "invalid_value", "voicemail_enabled"),
        ({"caller_id": "CUSTOM"}, "invalid_value", "caller_id"),
        ({"location_time_zone": "EST5EDT6"}, "invalid_value", "location_time_zone"),
        ({"location_country": "U.S."}, "invalid_value", "location_country"),
        ({"email": "USER1@Example.com"}, "duplicate_in_file", "email"),
        ({"phone_number": "+1 (415) 555-0101"}, "duplicate_in_file", "phone_number"),
        ({"extension": "1001"}, "duplicate_in_file", "extension"),
        ({"location_time_zone": "Europe/Paris"}, "location_conflict", "location_time_zone"),
        ({"location_country": "fr"}, "location_conflict", "location_country"),
    ],
)
def test_each_invalid_row_is_rejected_with_its_reason(
    ledger_env: LedgerEnv, bad: dict[str, str], reason: str, field: str
) -> None:
    first = person(
        1,
        values=False,
        phone_number="+14155550101",
        location_time_zone="America/New_York",
        location_country="US",
    )
    path = write_people(
        ledger_env.root / "users.csv",
        [first, person(2, values=False, **bad), person(3, values=False)],
    )
    result = ingest(ledger_env, path)
    assert_exit(result, 0)
    assert "rows: 3 · accepted: 2 · rejected: 1" in result.stdout
    assert f"rejected {reason}: 1" in result.stdout
    assert rejected(ledger_env) == [("2", reason, field)]
    assert row_states(ledger_env) == [
        (1, "ready", 1, None, None),
        (2, "rejected", None, reason, field),
        (3, "ready", 1, None, None),
    ]


def test_same_extension_in_another_location_is_not_a_duplicate(ledger_env: LedgerEnv) -> None:
    path = write_people(
        ledger_env.root / "users.csv",
        [
            person(1, values=False),
            person(2, values=False, extension="1001", location_name="Branch"),
        ],
    )
    result = ingest(ledger_env, path)
    assert_exit(result, 0)
    assert "accepted: 2 · rejected: 0" in result.stdout
    assert rejected(ledger_env) == []


MALFORMED_HEADER = b"email,first_name,location_name,extension,title\n"


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        (b"user2@example.com,Two,HQ,1002\n", "", "4 fields where the header has 5"),
        (b"user2@example.com,Two,HQ,1002,Boss,extra\n", "", "6 fields where the header has 5"),
        (b"user2@example.com,Tw\xf6,HQ,1002,Boss\n", "first_name", "not UTF-8"),
        (b"user2@example.com,Two,HQ,1002,Bo\x00ss\n", "title", "NUL"),
        (b"user2@example.com,Two,HQ,1002,\xc3\n", "title", "not UTF-8"),
    ],
)
def test_malformed_rows_are_rejected_alone(
    ledger_env: LedgerEnv, line: bytes, field: str, message: str
) -> None:
    path = ledger_env.root / "users.csv"
    path.write_bytes(
        MALFORMED_HEADER
        + b"user1@example.com,One,HQ,1001,\n"
        + line
        + b"user3@example.com,Three,HQ,1003,\n"
    )
    result = ingest(ledger_env, path)
    assert_exit(result, 0)
    assert "rejected malformed_row: 1" in result.stdout
    lines = read_csv(ledger_env.rejected_csv)
    assert [(r["row_id"], r["reason_code"], r["field"]) for r in lines] == [
        ("2", "malformed_row", field)
    ]
    assert message in lines[0]["reason_message"]
    raw = json.loads(lines[0]["raw_row_minified"])
    assert raw["email"] == "user2@example.com"
    assert [state[:2] for state in row_states(ledger_env)] == [
        (1, "ready"),
        (2, "rejected"),
        (3, "ready"),
    ]


# --- what the file may look like -------------------------------------------------------------

CONTROL_HUB_HEADER = [
    "First Name",
    "Last Name",
    "Display Name",
    "User ID/Email (Required)",
    "Extension",
    "Phone Number",
    "Location",
    "Department",
    "Title",
    "Status",  # an export column ledger does not use: kept in the raw row only
]


def test_control_hub_export_headers_are_accepted(ledger_env: LedgerEnv) -> None:
    path = write_csv(
        ledger_env.root / "export.csv",
        CONTROL_HUB_HEADER,
        [
            [
                "Ana",
                "García",
                "Ana G.",
                "Ana@Example.com",
                "2001",
                "+34 91 123 45 67",
                "Madrid",
                "Sales",
                "Director",
                "Active",
            ],
            ["Bo", "Li", "", "bo@example.com", "2002", "", "Madrid", "", "", "Active"],
        ],
    )
    result = ingest(ledger_env, path)
    assert_exit(result, 0)
    assert "accepted: 2 · rejected: 0" in result.stdout
    (normalized, raw), _ = query(
        ledger_env, "SELECT normalized_json, raw_json FROM rows ORDER BY row_id"
    )
    assert json.loads(normalized) == {
        "email": "ana@example.com",
        "first_name": "Ana",
        "last_name": "García",
        "display_name": "Ana G.",
        "location_name": "Madrid",
        "extension": "2001",
        "phone_number": "+34911234567",
        "department": "Sales",
        "title": "Director",
    }
    assert json.loads(raw)["Status"] == "Active"
    assert json.loads(raw)["User ID/Email (Required)"] == "Ana@Example.com"
    headers = json.loads(query(ledger_env, "SELECT headers_json FROM runs")[0][0])
    assert headers == CONTROL_HUB_HEADER


def test_bom_and_crlf(ledger_env: LedgerEnv) -> None:
    path = write_people(
        ledger_env.root / "users.csv",
        [person(1, values=False), person(2, values=False)],
        bom=True,
        newline="\r\n",
    )
    assert path.read_bytes().startswith(b"\xef\xbb\xbfemail,")
    result = ingest(ledger_env, path)
    assert_exit(result, 0)
    assert "accepted: 2 · rejected: 0" in result.stdout
    headers = json.loads(query(ledger_env, "SELECT headers_json FROM runs")[0][0])
    assert headers[0] == "email"
    raw = json.loads(query(ledger_env, "SELECT raw_json FROM rows WHERE row_id = 2")[0][0])
    assert raw["email"] == "user2@example.com"
    assert raw["caller_id"] == ""  # no stray carriage return at the end of the line


def test_quoted_newlines_stay_in_their_cell_and_rows_keep_their_numbers(
    ledger_env: LedgerEnv,
) -> None:
    path = write_people(
        ledger_env.root / "users.csv",
        [
            person(1, values=False, title="Head of\nSales\r\nEMEA"),
            person(2, values=False, email="nope"),
            person(3, values=False),
        ],
    )
    result = ingest(ledger_env, path)
    assert_exit(result, 0)
    assert rejected(ledger_env) == [("2", "invalid_email", "email")]
    normalized = json.loads(
        query(ledger_env, "SELECT normalized_json FROM rows WHERE row_id = 1")[0][0]
    )
    assert normalized["title"] == "Head of\nSales\r\nEMEA"
    assert [state[:2] for state in row_states(ledger_env)] == [
        (1, "ready"),
        (2, "rejected"),
        (3, "ready"),
    ]


def test_a_100000_character_field(ledger_env: LedgerEnv) -> None:
    huge = "x" * 100_000
    path = write_people(
        ledger_env.root / "users.csv",
        [
            person(1, values=False, department=huge),
            person(2, values=False),
            person(3, values=False, notes=huge),
        ],
        header=[*HEADER, "notes"],
    )
    result = ingest(ledger_env, path)
    assert_exit(result, 0)
    assert rejected(ledger_env) == [("1", "invalid_value", "department")]
    line = read_csv(ledger_env.rejected_csv)[0]
    assert json.loads(line["raw_row_minified"])["department"] == huge
    # A column ledger does not use may be as long as it likes: kept, not judged.
    raw = json.loads(query(ledger_env, "SELECT raw_json FROM rows WHERE row_id = 3")[0][0])
    assert raw["notes"] == huge
    assert row_states(ledger_env)[2][:2] == (3, "ready")


def test_blank_lines_are_not_rows(ledger_env: LedgerEnv) -> None:
    path = ledger_env.root / "users.csv"
    path.write_text(
        "\nemail,first_name,location_name,extension\n\na@x.com,A,HQ,10\n\n\nb@x.com,B,HQ,11\n\n",
        encoding="utf-8",
    )
    result = ingest(ledger_env, path)
    assert_exit(result, 0)
    assert [state[:3] for state in row_states(ledger_env)] == [(1, "ready", 1), (2, "ready", 1)]


# --- formula-looking cells -------------------------------------------------------------------


def test_formula_cells_are_neutralised_in_rejected_rows(ledger_env: LedgerEnv) -> None:
    # The only cells of rejected_rows.csv that come from the file unwrapped are the header
    # names that `field` and the message quote: a hostile header must not run as a formula.
    formula_header = '=HYPERLINK("http://evil.example","x")'
    path = ledger_env.root / "users.csv"
    path.write_bytes(
        b"email,first_name,location_name,extension,"
        + formula_header.replace('"', '""').join('""').encode()
        + b"\nuser1@example.com,One,HQ,1001,ok\nuser2@example.com,Two,HQ,1002,b\x00d\n"
    )
    result = ingest(ledger_env, path)
    assert_exit(result, 0)
    line = read_csv(ledger_env.rejected_csv)[0]
    assert line["reason_code"] == "malformed_row"
    assert line["field"] == "'" + formula_header
    assert line["reason_message"].startswith("'=HYPERLINK(")
    assert line["raw_row_minified"].startswith("{")


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+2", "'=1+2"),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("+14155550100", "+14155550100"),
        ("+1 415 555 0100", "'+1 415 555 0100"),
        ("+", "'+"),
        ("plain", "plain"),
        (None, ""),
        (12, "12"),
    ],
)
def test_neutralise(cell: object, written: str) -> None:
    assert neutralise(cell) == written


def test_formula_cells_of_the_input_are_neutralised_in_the_retry_file(
    ledger_env: LedgerEnv,
) -> None:
    path = write_people(
        ledger_env.root / "users.csv",
        [
            person(
                1, values=False, email="=1+2", department="@SUM(A1)", phone_number="+14155550100"
            ),
            person(2, values=False, phone_number="+14155550102", title="-cmd"),
        ],
    )
    assert_exit(ingest(ledger_env, path), 0)
    assert_exit(invoke("export", "--db", ledger_env.db_url), 0)
    lines = read_csv(ledger_env.out_dir / "retry_rows.csv")
    assert len(lines) == 1
    assert lines[0]["email"] == "'=1+2"
    assert lines[0]["department"] == "'@SUM(A1)"
    assert lines[0]["phone_number"] == "+14155550100"
    assert lines[0]["reason_code"] == "invalid_email"


# --- files refused whole ---------------------------------------------------------------------


def test_more_than_max_rows_is_refused_with_nothing_ingested(ledger_env: LedgerEnv) -> None:
    path = write_people(
        ledger_env.root / "users.csv", [person(n, values=False) for n in range(1, 5)]
    )
    result = ingest(ledger_env, path, MAX_ROWS="3")
    assert_refused(ledger_env, result, "MAX_ROWS=3", "nothing ingested")
    assert (ledger_env.root / "l.db").exists()  # the ledger was opened, and holds no run
    assert query(ledger_env, "SELECT COUNT(*) FROM rows") == [(0,)]
    assert query(ledger_env, "SELECT COUNT(*) FROM entities") == [(0,)]
    assert query(ledger_env, "SELECT COUNT(*) FROM events") == [(0,)]
    # Exactly MAX_ROWS is fine.
    result = ingest(ledger_env, path, MAX_ROWS="4")
    assert_exit(result, 0)
    assert run_count(ledger_env) == 1


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"email,first_name,extension\na@x.com,A,10\n", ("location_name",)),
        (b"first_name,location_name,extension\nA,HQ,10\n", ("email",)),
        (b"email,location_name,extension\na@x.com,HQ,10\n", ("first_name",)),
        (b"email,first_name,location_name\na@x.com,A,HQ\n", ("extension or phone_number",)),
        (b"email,E-mail,first_name,location_name,extension\n", ("both mean email",)),
        ("email,first_name,location_name,extension\n".encode("utf-16"), ("UTF-16",)),
        ("email,first_name,location_name,extension\n".encode("utf-16-le"), ("UTF-16",)),
        (b"\xe9mail,first_name,location_name,extension\n", ("not UTF-8",)),
        (b"", ("no header row",)),
        (b"\r\n\r\n", ("no header row",)),
    ],
    ids=[
        "no-location",
        "no-email",
        "no-name",
        "no-extension-or-phone",
        "two-email-columns",
        "utf-16",
        "utf-16-le-no-bom",
        "latin-1-header",
        "empty",
        "blank-lines-only",
    ],
)
def test_unreadable_files_are_refused(
    ledger_env: LedgerEnv, content: bytes, words: tuple[str, ...]
) -> None:
    path = ledger_env.root / "users.csv"
    path.write_bytes(content)
    assert_refused(ledger_env, ingest(ledger_env, path), *words)


def test_a_file_that_does_not_exist(ledger_env: LedgerEnv) -> None:
    result = ingest(ledger_env, ledger_env.root / "absent.csv")
    assert_refused(ledger_env, result, "no such file", "absent.csv")


def test_a_directory_is_not_a_csv(ledger_env: LedgerEnv) -> None:
    assert_refused(ledger_env, ingest(ledger_env, ledger_env.root), "not a regular file")


def test_a_header_without_rows_is_an_empty_run(ledger_env: LedgerEnv) -> None:
    path = write_people(ledger_env.root / "users.csv", [])
    result = ingest(ledger_env, path)
    assert_exit(result, 0)
    assert "rows: 0 · accepted: 0 · rejected: 0" in result.stdout
    assert read_csv(ledger_env.rejected_csv) == []


# --- the same file twice ---------------------------------------------------------------------


def snapshot(env: LedgerEnv) -> list[list[tuple[object, ...]]]:
    return [
        query(env, f"SELECT * FROM {table} ORDER BY id")
        for table in ("runs", "rows", "entities", "events")
    ]


def test_reingesting_the_same_bytes_reuses_the_run(ledger_env: LedgerEnv) -> None:
    path = write_people(
        ledger_env.root / "users.csv",
        [person(1, values=False), person(2, values=False, email="bad")],
    )
    first = ingest(ledger_env, path)
    assert_exit(first, 0)
    assert "as run 1" in first.stdout
    before = snapshot(ledger_env)
    rejected_before = ledger_env.rejected_csv.read_bytes()

    copy = ledger_env.root / "renamed.csv"
    copy.write_bytes(path.read_bytes())
    for again in (path, copy):
        result = ingest(ledger_env, again, BATCH_SIZE="1")
        assert_exit(result, 0)
        assert "already ingested as run 1: nothing changed" in result.stdout
        assert "rejected invalid_email: 1" in result.stdout
        assert snapshot(ledger_env) == before
        assert ledger_env.rejected_csv.read_bytes() == rejected_before

    changed = write_people(
        ledger_env.root / "changed.csv", [person(1, values=False), person(3, values=False)]
    )
    result = ingest(ledger_env, changed)
    assert_exit(result, 0)
    assert "as run 2" in result.stdout
    assert run_count(ledger_env) == 2


# --- batches and the rejected file -----------------------------------------------------------


def test_batch_ids_count_accepted_rows_in_row_order(ledger_env: LedgerEnv) -> None:
    people = [
        person(1, values=False),
        person(2, values=False, email="bad"),
        person(3, values=False),
        person(4, values=False),
        person(5, values=False),
        person(6, values=False, extension="1"),
        person(7, values=False),
        person(8, values=False, email="user7@example.com"),
    ]
    path = write_people(ledger_env.root / "users.csv", people)
    result = ingest(ledger_env, path, BATCH_SIZE="2")
    assert_exit(result, 0)
    assert [(row_id, batch) for row_id, _, batch, _, _ in row_states(ledger_env)] == [
        (1, 1),
        (2, None),
        (3, 1),
        (4, 2),
        (5, 2),
        (6, None),
        (7, 3),
        (8, None),
    ]
    assert query(ledger_env, "SELECT batch_size FROM runs") == [(2,)]


def test_default_batch_size_is_500(ledger_env: LedgerEnv) -> None:
    path = write_people(
        ledger_env.root / "users.csv", [person(n, values=False) for n in range(1, 503)]
    )
    assert_exit(ingest(ledger_env, path), 0)
    assert query(
        ledger_env,
        "SELECT batch_id, COUNT(*), MIN(row_id), MAX(row_id) FROM rows "
        "GROUP BY batch_id ORDER BY batch_id",
    ) == [(1, 500, 1, 500), (2, 2, 501, 502)]


def test_rejected_rows_csv_has_exactly_the_spec_columns(ledger_env: LedgerEnv) -> None:
    row = person(2, values=False, email="not-an-email", title='He said "hi", twice')
    path = write_people(ledger_env.root / "users.csv", [person(1, values=False), row])
    result = ingest(ledger_env, path)
    assert_exit(result, 0)
    assert f"rejected rows: {ledger_env.rejected_csv}" in result.stdout
    text = ledger_env.rejected_csv.read_text(encoding="utf-8")
    assert text.splitlines()[0] == (
        "timestamp,row_id,reason_code,reason_message,field,raw_row_minified"
    )
    assert tuple(text.splitlines()[0].split(",")) == REJECTED_COLUMNS
    (line,) = read_csv(ledger_env.rejected_csv)
    assert line["row_id"] == "2"
    assert line["reason_code"] == "invalid_email"
    assert line["field"] == "email"
    assert "not-an-email" in line["reason_message"]
    stamp = line["timestamp"]
    assert stamp.endswith("Z")
    assert datetime.fromisoformat(stamp.replace("Z", "+00:00")).utcoffset() is not None
    # raw_row_minified: compact JSON keyed by the file's own headers, every cell as read.
    expected = {column: row.get(column, "") for column in HEADER}
    assert line["raw_row_minified"] == json.dumps(
        expected, ensure_ascii=False, separators=(",", ":")
    )


def test_ingest_file_core_reports_what_the_cli_prints(tmp_path: Path) -> None:
    path = write_people(
        tmp_path / "users.csv",
        [
            person(1, values=False, location_time_zone="Europe/Madrid"),
            person(2, values=False, email="bad"),
            person(3, values=False, email="worse"),
            person(4, values=False, extension="1"),
            person(5, values=False, location_name="Branch", location_country="es"),
        ],
    )
    settings = load_settings(LEDGER_OUTPUT_DIR=tmp_path / "out")
    ledger = open_ledger(f"sqlite:///{tmp_path}/l.db")
    try:
        report = ingest_file(ledger, path, settings)
        again = ingest_file(ledger, path, settings)
    finally:
        ledger.dispose()
    assert not report.reused
    assert again.reused
    assert again.run == report.run
    assert report.rejected_by_reason == {"invalid_email": 2, "invalid_extension": 1}
    assert report.rejected_file == tmp_path / "out" / "rejected_rows.csv"
    assert (report.run.total_rows, report.run.accepted_rows, report.run.rejected_rows) == (5, 2, 3)
    assert report.run.file_name == "users.csv"
    assert report.run.headers == HEADER
    with closing(sqlite3.connect(tmp_path / "l.db")) as connection:
        entities = connection.execute(
            "SELECT entity_type, entity_key, status, desired_json FROM entities ORDER BY id"
        ).fetchall()
    assert [(kind, key, status) for kind, key, status, _ in entities] == [
        ("location", "Branch", "new"),
        ("location", "HQ", "new"),
    ]
    assert json.loads(entities[0][3])["country"] == "ES"
    assert json.loads(entities[1][3])["time_zone"] == "Europe/Madrid"


def test_the_example_file_ingests_without_rejections(ledger_env: LedgerEnv) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "users.csv"
    result = ingest(ledger_env, example)
    assert_exit(result, 0)
    assert "rows: 12 · accepted: 12 · rejected: 0" in result.stdout
    users = [
        UserRow.model_validate_json(line)
        for (line,) in query(ledger_env, "SELECT normalized_json FROM rows ORDER BY row_id")
    ]
    assert len({user.location_name for user in users}) == 3
    assert any(user.phone_number is None for user in users)  # extension only
    assert any(user.phone_number and user.extension for user in users)
    assert any(user.names_settings() for user in users)
    assert any(not user.names_settings() for user in users)
    locations = [
        LocationSpec.model_validate_json(line)
        for (line,) in query(ledger_env, "SELECT desired_json FROM entities")
    ]
    assert [spec.missing_to_create() for spec in locations] == [[], [], []]


# --- a ledger or output folder that cannot be used -------------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("sqlite:///{root}/users.csv", ("cannot open the ledger", "not a database")),
        ("sqlite:///{root}/missing/l.db", ("folder does not exist",)),
        ("postgresql+psycopg://ops:hunter2@127.0.0.1:1/ledger", ("cannot open the ledger",)),
        ("mysql://ops@db.example/ledger", ("SQLite or PostgreSQL",)),
        ("not a url", ("not a database URL",)),
    ],
    ids=["not-a-database", "no-folder", "server-down", "mysql", "garbage"],
)
def test_an_unusable_ledger_is_one_line_and_exit_2(
    ledger_env: LedgerEnv, url: str, words: tuple[str, ...]
) -> None:
    path = write_people(ledger_env.root / "users.csv", [person(1, values=False)])
    result = invoke("ingest", str(path), "--db", url.format(root=ledger_env.root))
    assert_exit(result, 2)
    assert len(result.stderr.splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr
    assert "hunter2" not in result.output  # a password in the URL is never shown


def test_reading_an_empty_file_as_a_ledger_is_refused(ledger_env: LedgerEnv) -> None:
    (ledger_env.root / "empty.db").write_bytes(b"")
    result = invoke("export", "--db", f"sqlite:///{ledger_env.root}/empty.db")
    assert_exit(result, 2)
    assert "no ledger at" in result.stderr


def test_an_output_folder_that_is_a_file_is_refused_before_ingesting(
    ledger_env: LedgerEnv,
) -> None:
    path = write_people(ledger_env.root / "users.csv", [person(1, values=False)])
    blocker = ledger_env.root / "blocker"
    blocker.write_text("not a folder", encoding="utf-8")
    result = ingest(ledger_env, path, LEDGER_OUTPUT_DIR=str(blocker / "out"))
    assert_exit(result, 2)
    assert "LEDGER_OUTPUT_DIR" in result.stderr
    assert run_count(ledger_env) == 0  # so that fixing the folder and ingesting again works
    assert_exit(ingest(ledger_env, path), 0)
    assert run_count(ledger_env) == 1


def test_an_internal_error_is_one_line_with_the_traceback_in_the_log(
    ledger_env: LedgerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("ledger.ingest.ingest_file", broken)
    # As in a real `ledger ingest`: no logging handlers anywhere (pytest adds its own).
    monkeypatch.setattr(logging.root, "handlers", [])
    path = write_people(ledger_env.root / "users.csv", [person(1, values=False)])
    result = ingest(ledger_env, path)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"ledger: internal error (RuntimeError); details in {ledger_env.log_file}"
    ]
    assert "Traceback" in ledger_env.log_file.read_text(encoding="utf-8")
    assert_no_traceback(result)
