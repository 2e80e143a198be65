"""The command line: parse options, call one library function, print.

Every command keeps the same conventions: ``-o/--output``, ``--format`` where
output has several forms, human summaries on stderr, exit 0 on success, 1 when
something was checked and failed, 2 for bad input — always as one line, never a
traceback for a user's mistake.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import click

from mirrorkit import __version__
from mirrorkit.errors import MirrorkitError

# name -> (module, attribute). A command's module is imported only when that command runs:
# push-bundle need not load the resolver, nor plan the registry client (click's lazy-loading pattern).
COMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("mirrorkit.cli.plan", "command"),
    "releases": ("mirrorkit.cli.plan", "releases_command"),
    "pull-bundle": ("mirrorkit.cli.copy", "pull_bundle_command"),
    "push-bundle": ("mirrorkit.cli.copy", "push_bundle_command"),
    "verify": ("mirrorkit.cli.copy", "verify_command"),
    "mirror": ("mirrorkit.cli.copy", "mirror_command"),
    "inventory": ("mirrorkit.cli.copy", "inventory_command"),
    "rewrite-config": ("mirrorkit.cli.rewrite", "rewrite_config_command"),
    "runbook": ("mirrorkit.cli.rewrite", "runbook_command"),
    # day two: what changed between releases, what the mirror can drop, what a bundle holds
    "diff": ("mirrorkit.cli.day2", "diff_command"),
    "prune": ("mirrorkit.cli.day2", "prune_command"),
    "report": ("mirrorkit.cli.day2", "report_command"),
    "login": ("mirrorkit.cli.login", "login_command"),
    # mirrorkit itself across the gap
    "offline-installer": ("mirrorkit.cli.installer", "offline_installer_command"),
    "serve": ("mirrorkit.cli.serve", "serve_command"),
}


class _Group(click.Group):
    """Turns mirrorkit's exceptions into one-line errors and exit codes; loads commands on use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute = COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        from mirrorkit.interrupt import handling_ctrl_c

        try:
            with handling_ctrl_c():
                return super().invoke(ctx)
        except MirrorkitError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mirrorkit")
def main() -> None:
    """Carry the NVIDIA GPU Operator, and any other image set, into an air-gapped cluster.

    \b
    plan -> pull-bundle -> (air gap) -> push-bundle -> rewrite-config -> install
    """


def write_output(text: str, output: str | None) -> None:
    """Write to a file atomically (temp name, then rename) or to stdout."""
    if output is None or output == "-":
        click.echo(text, nl=False)
        return
    from mirrorkit.files import write_atomic

    write_atomic(Path(output), text)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
