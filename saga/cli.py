"""The `saga` command: one entry point for the local stack, the database and operations.

Subcommands live beside what they operate and are imported only when called, so `saga --help`
stays fast and a function image never imports the local stack.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command
_COMMANDS = {
    "dev": "localstack.commands:dev",
    "infra": "localstack.infra:infra_command",
    "db-init": "functions.schemas:db_init",
    "docs": "functions.docs:docs",
    "replay": "saga.replay.command:replay",
    "parked": "functions.parked:parked",
    "resume": "functions.resume:resume",
    "versions": "functions.versions:versions",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command


@click.group(cls=_LazyGroup)
def main() -> None:
    """knative-saga: orchestrated order saga on Knative, Kafka and PostgreSQL."""
