"""Configuration (SPEC section 2): defaults, `.env`, bad values, and the token kept secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.config import DEFAULT_CONCURRENCY, Settings, load_settings
from ledger.error_handling import ConfigError
from tests.support.cli import LedgerEnv, assert_exit, invoke
from tests.support.csvfiles import write_csv

TOKEN = "NmQ1Yz-very-secret-token-0042"

SPEC_DEFAULTS = {
    "WEBEX_ACCESS_TOKEN": None,
    "WEBEX_BASE_URL": "https://webexapis.com/v1",
    "WEBEX_CALLING_LICENSE": "Webex Calling - Professional",
    "LEDGER_DATABASE_URL": "sqlite:///ledger.db",
    "LEDGER_OUTPUT_DIR": Path("out"),
    "LEDGER_LOG_FILE": Path("ledger.log"),
    "BATCH_SIZE": 500,
    "MAX_ROWS": 50_000,
    "MAX_BATCHES": 0,
    "MAX_RETRIES": 5,
    "REQUEST_TIMEOUT_S": 30,
    "LEDGER_CONCURRENCY": DEFAULT_CONCURRENCY,
    "CIRCUIT_BREAKER_THRESHOLD": 0.8,
    "ENABLE_SAFE_COMPENSATION": False,
}


@pytest.fixture
def empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory without a `.env`, so only the defaults apply."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("name", "default"), SPEC_DEFAULTS.items())
def test_spec_defaults(empty_folder: Path, name: str, default: object) -> None:
    assert getattr(load_settings(), name) == default


def test_concurrency_default_is_a_sane_number(empty_folder: Path) -> None:
    assert 1 <= load_settings().LEDGER_CONCURRENCY <= 256


def test_environment_is_read(empty_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_SIZE", "25")
    monkeypatch.setenv("ENABLE_SAFE_COMPENSATION", "true")
    monkeypatch.setenv("CIRCUIT_BREAKER_THRESHOLD", "0.5")
    monkeypatch.setenv("LEDGER_OUTPUT_DIR", "artifacts")
    settings = load_settings()
    assert settings.BATCH_SIZE == 25
    assert settings.ENABLE_SAFE_COMPENSATION is True
    assert settings.CIRCUIT_BREAKER_THRESHOLD == 0.5
    assert settings.LEDGER_OUTPUT_DIR == Path("artifacts")


def test_dotenv_in_the_working_directory_is_read(
    empty_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (empty_folder / ".env").write_text(
        f"BATCH_SIZE=7\nMAX_RETRIES=2\nWEBEX_ACCESS_TOKEN={TOKEN}\nSOMETHING_ELSE=ignored\n",
        encoding="utf-8",
    )
    settings = load_settings()
    assert settings.BATCH_SIZE == 7
    assert settings.MAX_RETRIES == 2
    assert settings.WEBEX_ACCESS_TOKEN is not None
    assert settings.WEBEX_ACCESS_TOKEN.get_secret_value() == TOKEN
    # The environment wins over the file.
    monkeypatch.setenv("BATCH_SIZE", "9")
    assert load_settings().BATCH_SIZE == 9


def test_token_never_shows_in_repr_str_or_dump(empty_folder: Path) -> None:
    settings = Settings(WEBEX_ACCESS_TOKEN=TOKEN)  # type: ignore[arg-type]
    assert settings.WEBEX_ACCESS_TOKEN is not None
    assert settings.WEBEX_ACCESS_TOKEN.get_secret_value() == TOKEN
    for text in (
        repr(settings),
        str(settings),
        f"{settings}",
        settings.model_dump_json(),
        str(settings.model_dump()),
        repr(settings.WEBEX_ACCESS_TOKEN),
    ):
        assert TOKEN not in text
        assert "NmQ1" not in text


def test_settings_are_frozen(empty_folder: Path) -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.BATCH_SIZE = 1  # type: ignore[misc]


BAD_VALUES = [
    ("BATCH_SIZE", "abc"),
    ("BATCH_SIZE", "0"),
    ("BATCH_SIZE", "-5"),
    ("BATCH_SIZE", "2.5"),
    ("MAX_ROWS", "0"),
    ("MAX_ROWS", "lots"),
    ("MAX_BATCHES", "-1"),
    ("MAX_RETRIES", "21"),
    ("MAX_RETRIES", "five"),
    ("REQUEST_TIMEOUT_S", "0"),
    ("REQUEST_TIMEOUT_S", "-1"),
    ("REQUEST_TIMEOUT_S", "soon"),
    ("REQUEST_TIMEOUT_S", "nan"),
    ("LEDGER_CONCURRENCY", "0"),
    ("CIRCUIT_BREAKER_THRESHOLD", "1.5"),
    ("CIRCUIT_BREAKER_THRESHOLD", "0"),
    ("ENABLE_SAFE_COMPENSATION", "maybe"),
    ("WEBEX_BASE_URL", ""),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_bad_value_is_a_config_error_naming_the_variable(
    empty_folder: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert name in message
    assert "\n" not in message


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_bad_value_via_the_cli_exits_2_with_one_line(
    ledger_env: LedgerEnv, name: str, value: str
) -> None:
    path = write_csv(
        ledger_env.root / "users.csv",
        ["email", "first_name", "location_name", "extension"],
        [["a@x.com", "A", "HQ", "10"]],
    )
    result = invoke(
        "ingest",
        str(path),
        "--db",
        ledger_env.db_url,
        env={name: value, "WEBEX_ACCESS_TOKEN": TOKEN},
    )
    assert_exit(result, 2)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ledger: ")
    assert name in lines[0]
    assert TOKEN not in result.output
    assert not (ledger_env.root / "l.db").exists()  # refused before touching the ledger


def test_bad_value_in_dotenv_via_the_cli(ledger_env: LedgerEnv) -> None:
    (ledger_env.root / ".env").write_text("MAX_ROWS=-3\n", encoding="utf-8")
    result = invoke("ingest", "whatever.csv", "--db", ledger_env.db_url)
    assert_exit(result, 2)
    assert "MAX_ROWS" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_dotenv_values_reach_the_cli(ledger_env: LedgerEnv) -> None:
    (ledger_env.root / ".env").write_text("BATCH_SIZE=1\n", encoding="utf-8")
    path = write_csv(
        ledger_env.root / "users.csv",
        ["email", "first_name", "location_name", "extension"],
        [["a@x.com", "A", "HQ", "10"], ["b@x.com", "B", "HQ", "11"]],
    )
    assert_exit(invoke("ingest", str(path), "--db", ledger_env.db_url), 0)
    result = invoke(
        "sql", "SELECT row_id, batch_id FROM v_rows", "--csv", "--db", ledger_env.db_url
    )
    assert_exit(result, 0)
    assert result.stdout.splitlines() == ["row_id,batch_id", "1,1", "2,2"]
