"""Every command of the typer app, and every one of its options, says what it does."""

from __future__ import annotations

import pytest
import typer

from ledger.cli import app
from tests.support.cli import assert_exit, invoke

GROUP = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)  # type: ignore[attr-defined]
SPEC_COMMANDS = {"ingest", "work", "export", "status", "retry", "sql", "sim", "demo"}


def squeeze(text: str) -> str:
    """The help as words: wrapping and the panels' borders do not matter."""
    return " ".join(text.replace("│", " ").split())


def test_top_level_help_lists_every_command() -> None:
    result = invoke("--help")
    assert_exit(result, 0)
    words = squeeze(result.stdout)
    assert "Provision Webex Calling in bulk" in words
    for name in COMMANDS:
        assert name in words


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help(name: str) -> None:
    command = GROUP.commands[name]  # type: ignore[attr-defined]
    description = (command.help or "").strip()
    assert description, f"`ledger {name}` has no help text"
    result = invoke(name, "--help")
    assert_exit(result, 0)
    shown = squeeze(result.stdout)
    assert f"Usage: ledger {name}" in shown
    first_words = " ".join(squeeze(description).split()[:4])
    assert first_words in shown


@pytest.mark.parametrize("name", COMMANDS)
def test_every_parameter_has_help(name: str) -> None:
    command = GROUP.commands[name]  # type: ignore[attr-defined]
    undocumented = [
        param.name
        for param in command.params
        if param.name != "help" and not (getattr(param, "help", None) or "").strip()
    ]
    assert undocumented == [], f"`ledger {name}` parameters without help: {undocumented}"


def test_every_spec_command_exists() -> None:
    assert SPEC_COMMANDS <= set(COMMANDS)


def lost_help_words(name: str) -> list[str]:
    """Words of the parameters' help that `ledger NAME --help` does not show."""
    command = GROUP.commands[name]  # type: ignore[attr-defined]
    shown = squeeze(invoke(name, "--help", env={"COLUMNS": "200"}).stdout)
    lost = []
    for param in command.params:
        text = squeeze(getattr(param, "help", None) or "")
        if text and text not in shown:
            lost.append(f"{param.name}: {text!r}")
    return lost


@pytest.mark.parametrize("name", COMMANDS)
def test_parameter_help_is_shown_whole(name: str) -> None:
    # Rich markup would take a `[default: …]` in a help text for a tag and drop it.
    assert lost_help_words(name) == []
