"""A token with whitespace inside it is a configuration error (SPEC section 2).

A token wrapped across two lines by a paste used to be taken as is: its second half went into
the Authorization header, and from the HTTP library's error message into pending_rows.csv,
`status --json` and the ledger, past the point where masking stops.
"""

from __future__ import annotations

import pytest

from ledger.config import load_settings
from tests.support.cli import LedgerEnv, assert_exit, invoke
from tests.support.csvfiles import one_user_csv

FIRST_HALF = "NmQ1YzFirstHalf0042"
SECOND_HALF = "SECONDhalfOfTheToken77"


def users_csv(env: LedgerEnv) -> str:
    return str(one_user_csv(env.root / "users.csv"))


@pytest.mark.parametrize("inside", ["\n", "\r\n", " ", "\t"], ids=["lf", "crlf", "space", "tab"])
def test_a_token_with_whitespace_inside_is_refused_without_showing_it(
    ledger_env: LedgerEnv, inside: str
) -> None:
    result = invoke(
        "ingest",
        users_csv(ledger_env),
        "--db",
        ledger_env.db_url,
        env={"WEBEX_ACCESS_TOKEN": FIRST_HALF + inside + SECOND_HALF},
    )
    assert_exit(result, 2)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "WEBEX_ACCESS_TOKEN" in lines[0]
    for half in (FIRST_HALF, SECOND_HALF):
        assert half not in result.output
    assert not (ledger_env.root / "l.db").exists()  # refused before touching the ledger


def test_a_token_with_whitespace_inside_is_refused_from_dotenv(ledger_env: LedgerEnv) -> None:
    (ledger_env.root / ".env").write_text(
        f'WEBEX_ACCESS_TOKEN="{FIRST_HALF} {SECOND_HALF}"\n', encoding="utf-8"
    )
    result = invoke("ingest", users_csv(ledger_env), "--db", ledger_env.db_url)
    assert_exit(result, 2)
    assert "WEBEX_ACCESS_TOKEN" in result.stderr
    for half in (FIRST_HALF, SECOND_HALF):
        assert half not in result.output


def test_whitespace_around_the_token_is_dropped(
    ledger_env: LedgerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `WEBEX_ACCESS_TOKEN=$(cat token-file)` style values: the surrounding whitespace is not
    # part of the token.
    token = f" {FIRST_HALF}\n"
    result = invoke(
        "ingest",
        users_csv(ledger_env),
        "--db",
        ledger_env.db_url,
        env={"WEBEX_ACCESS_TOKEN": token},
    )
    assert_exit(result, 0)
    monkeypatch.setenv("WEBEX_ACCESS_TOKEN", token)
    secret = load_settings().WEBEX_ACCESS_TOKEN
    assert secret is not None
    assert secret.get_secret_value() == FIRST_HALF
