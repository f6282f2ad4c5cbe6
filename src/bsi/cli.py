"""The ``bsi`` command: one entry point, subcommands per job.

This is the CLI adapter: it parses arguments, calls the application code and
turns every :class:`~bsi.errors.BsiError` into a message on stderr and exit
code 2. Nothing below it prints or exits.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from bsi import __version__
from bsi.errors import BsiError

COMMANDS: dict[str, tuple[str, str]] = {
    "sim": ("bsi.commands.demo", "sim_command"),
    "demo": ("bsi.commands.demo", "demo_command"),
}
"""Commands: each one's module and function."""
GROUPS: dict[str, tuple[str, str]] = {
    "apple": ("bsi.commands.apple", "apple_app"),
    "keys": ("bsi.commands.supplements", "keys_app"),
    "supplement": ("bsi.commands.supplements", "supplement_app"),
    "agent": ("bsi.commands.agent", "agent_app"),
    "admin": ("bsi.commands.admin", "admin_app"),
}
"""Groups of commands: each one's module and typer app."""

SERVER_COMMANDS = ("serve", "db", "api-key")
"""Commands of :mod:`bsi.commands.server`, listed and loaded by :class:`_Commands`."""


class _Commands(TyperGroup):
    """bsi's commands, each loaded from its module when it is asked for.

    A command brings its own libraries: ``bsi agent``, started on a device at
    every boot and timer, never loads the server's (pydantic, the database, the
    web framework), the publisher's or the Apple fleet's, and starts in about half
    the time. ``bsi --help`` loads them all, for their one-line help.
    (``Any``: typer's own copy of click's ``Context`` and ``Command``, not importable.)
    """

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *super().list_commands(ctx), *GROUPS, *SERVER_COMMANDS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in SERVER_COMMANDS:
            from bsi.commands.server import server_commands

            return server_commands().get_command(ctx, cmd_name)
        if cmd_name in GROUPS:
            group = typer.main.get_group(_load(*GROUPS[cmd_name]))
            group.name = cmd_name
            return group
        if cmd_name in COMMANDS:
            one = typer.Typer()
            one.command(cmd_name)(_load(*COMMANDS[cmd_name]))
            return typer.main.get_group(one).get_command(ctx, cmd_name)
        return super().get_command(ctx, cmd_name)


def _load(module: str, attribute: str) -> Any:
    return getattr(importlib.import_module(module), attribute)


app = typer.Typer(
    name="bsi",
    help="Background Security Improvements for any fleet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=_Commands,
)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print bsi's version.")] = False,
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit


@app.command(
    "tuf-client",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def tuf_client(context: typer.Context) -> None:
    """The TUF conformance suite's client CLI (init / refresh / download; exit 0 or 1).

    Run 'bsi tuf-client --help' for its options.
    """
    from bsi.trust.conformance_client import tuf_client_main

    raise typer.Exit(tuf_client_main(context.args))


def main() -> None:
    """Console-script entry: run the app, turning bsi's errors into exit code 2."""
    try:
        app()
    except OSError as error:
        Console(stderr=True, soft_wrap=True).print(
            f"[red]error:[/red] {escape(str(error))}", highlight=False
        )
        sys.exit(2)
    except BsiError as error:
        Console(stderr=True, soft_wrap=True).print(
            f"[red]error:[/red] {escape(str(error))}", highlight=False
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
