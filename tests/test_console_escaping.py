"""What `ledger` prints from data (the ledger, file and folder names, Webex) is shown as text:
never read as Rich markup (a location named `Lab [/x]` used to crash `status` with exit 1),
never as emoji codes, and never echoing terminal control characters (an ESC from a cell would
reach the operator's terminal)."""

from __future__ import annotations

from typer.testing import Result

from ledger.row_rules import COLUMNS
from ledger.simulator import Simulator, running_server
from tests.support.cli import LedgerEnv, assert_exit, invoke
from tests.support.csvfiles import write_csv
from tests.support.people import person

MARKUP = "[/x]"
CLEAR_SCREEN = "\x1b[2J"
CONTROL = ("\x1b", "\x07", "\x9b", "\r")


def assert_no_control_characters(result: Result) -> None:
    for text in (result.stdout, result.stderr):
        for char in CONTROL:
            assert char not in text, repr(text)


def test_ingest_and_status_show_a_file_name_as_text(ledger_env: LedgerEnv) -> None:
    # The path holds "[/x]" (its `/` separates two folders); the name holds markup that would
    # be read as a style, and control characters.
    folder = ledger_env.root / "in ["
    folder.mkdir()
    name = f"x] [bold]users {CLEAR_SCREEN}\a.csv"
    source = write_csv(folder / name, COLUMNS, [person(1), person(2)])
    shown = "x] [bold]users \\x1b[2J\\x07.csv"

    ingested = invoke("ingest", str(source), "--db", ledger_env.db_url)
    assert_exit(ingested, 0)
    assert f"in {MARKUP} [bold]users \\x1b[2J\\x07.csv" in ingested.stdout
    assert_no_control_characters(ingested)

    again = invoke("ingest", str(source), "--db", ledger_env.db_url)
    assert_exit(again, 0)
    assert "already ingested" in again.stdout
    assert_no_control_characters(again)

    status = invoke("status", "--db", ledger_env.db_url)
    assert_exit(status, 0)
    first = status.stdout.splitlines()[0]
    assert first.startswith(f"run 1 · {shown} · started "), first
    assert_no_control_characters(status)


def test_work_and_status_with_markup_in_a_location_and_the_output_folder(
    ledger_env: LedgerEnv,
) -> None:
    # No values for "Lab [/x]": its row ends pending location_undefined, naming the location.
    rows = [person(1, location=f"Lab {MARKUP}", values=False), person(2)]
    source = write_csv(ledger_env.root / "users.csv", COLUMNS, rows)
    out_dir = ledger_env.root / f"out {MARKUP}"
    env = {"LEDGER_OUTPUT_DIR": str(out_dir)}
    assert_exit(invoke("ingest", str(source), "--db", ledger_env.db_url, env=env), 0)

    with running_server(Simulator()) as base_url:
        env |= {"WEBEX_BASE_URL": base_url, "WEBEX_ACCESS_TOKEN": "a-token-for-the-simulator"}
        worked = invoke("work", "--db", ledger_env.db_url, "--quiet", env=env)

    assert_exit(worked, 0)
    assert f"artifacts in {out_dir}" in worked.stdout
    assert (out_dir / "pending_rows.csv").is_file()

    status = invoke("status", "--db", ledger_env.db_url)
    assert_exit(status, 0)
    assert f"Lab {MARKUP}" in status.stdout
    assert "location_undefined" in status.stdout


def test_export_to_a_folder_named_like_markup(ledger_env: LedgerEnv) -> None:
    source = write_csv(ledger_env.root / "users.csv", COLUMNS, [person(1)])
    assert_exit(invoke("ingest", str(source), "--db", ledger_env.db_url), 0)
    folder = ledger_env.root / f"export {MARKUP} :smile:"

    result = invoke("export", "--db", ledger_env.db_url, "--out", str(folder))

    assert_exit(result, 0)
    assert f"→ {folder}" in result.stdout
    assert (folder / "checkpoint.json").is_file()


def test_sql_shows_markup_emoji_codes_and_control_characters_as_text(
    ledger_env: LedgerEnv,
) -> None:
    source = write_csv(ledger_env.root / "users.csv", COLUMNS, [person(1)])
    assert_exit(invoke("ingest", str(source), "--db", ledger_env.db_url), 0)

    result = invoke(
        "sql",
        f"SELECT '{MARKUP}' AS \"[b]{MARKUP}\", ':smile:' AS e, "
        "'a' || char(27) || '[2J' || char(155) || 'b' AS esc",
        "--db",
        ledger_env.db_url,
    )

    assert_exit(result, 0)
    assert f"[b]{MARKUP}" in result.stdout
    assert MARKUP in result.stdout
    assert ":smile:" in result.stdout
    assert "a\\x1b[2J\\x9bb" in result.stdout
    assert_no_control_characters(result)


def test_a_failure_line_does_not_echo_control_characters(ledger_env: LedgerEnv) -> None:
    source = write_csv(ledger_env.root / "users.csv", COLUMNS, [person(1)])
    assert_exit(invoke("ingest", str(source), "--db", ledger_env.db_url), 0)

    bad_query = invoke("sql", f"SELECT {CLEAR_SCREEN}", "--db", ledger_env.db_url)
    assert_exit(bad_query, 2)
    assert len(bad_query.stderr.splitlines()) == 1
    assert_no_control_characters(bad_query)

    missing = ledger_env.root / f"gone {MARKUP} {CLEAR_SCREEN}" / "ledger.db"
    no_ledger = invoke("status", "--db", f"sqlite:///{missing}")
    assert_exit(no_ledger, 2)
    assert f"gone {MARKUP} \\x1b[2J" in no_ledger.stderr
    assert_no_control_characters(no_ledger)
