"""Commands of the typer app whose module is imported only when that command is used.

Every `ledger` process pays for what `ledger.cli` imports before it parses its arguments. A
command whose module is heavy (`sim` loads the whole simulator) is registered in the app as a
stand-in: a body-less function that carries its name, its place in the listing and its one-line
help. `LazyGroup` swaps the stand-in for the real command the first time the command is looked
up (to run it, or for `ledger NAME --help`, or through `group.commands[NAME]`), and leaves it
alone while `ledger --help` lists the commands, which needs only that one line.

    class Group(LazyGroup):
        lazy = {"sim": load_sim}  # imports the simulator and builds the real command

    app = typer.Typer(cls=Group)
    app.command("sim", help=SIM_HELP)(stand_in)  # cheap: the simulator is not imported
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, ClassVar

from typer.core import TyperGroup

if TYPE_CHECKING:
    from typer import _click

# Imports a command's module and builds its click command.
Loader = Callable[[], "_click.Command"]


class LazyCommands(MutableMapping[str, "_click.Command"]):
    """A group's commands by name, in registration order. Reading a stand-in's entry builds
    its real command once and keeps it; `peek` reads without building."""

    def __init__(
        self, commands: Mapping[str, _click.Command], loaders: Mapping[str, Loader]
    ) -> None:
        self._commands = dict(commands)
        self._loaders = loaders
        self._pending = {name for name in self._commands if name in loaders}

    def peek(self, name: str) -> _click.Command | None:
        return self._commands.get(name)

    def __getitem__(self, name: str) -> _click.Command:
        if name in self._pending:
            self._commands[name] = self._loaders[name]()
            self._pending.discard(name)
        return self._commands[name]

    def __setitem__(self, name: str, command: _click.Command) -> None:
        self._commands[name] = command
        self._pending.discard(name)

    def __delitem__(self, name: str) -> None:
        del self._commands[name]
        self._pending.discard(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._commands)

    def __len__(self) -> int:
        return len(self._commands)


class LazyGroup(TyperGroup):
    """A typer group whose commands named in `lazy` are built on first use."""

    lazy: ClassVar[Mapping[str, Loader]] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands(self.commands, self.lazy)
        self._listing = False

    def list_commands(self, ctx: _click.Context) -> list[str]:
        return list(self.commands)

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        commands = self.commands
        if self._listing and isinstance(commands, LazyCommands):
            return commands.peek(cmd_name)
        return commands.get(cmd_name)

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        # The listing shows each command's one line: the stand-in has it.
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False
