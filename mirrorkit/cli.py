"""The command line: parse options, call one library function, print.

Every command keeps the same conventions: ``-o/--output``, ``--format`` where
output has several forms, human summaries on stderr, exit 0 on success, 1 when
something was checked and failed, 2 for bad input — always as one line, never a
traceback for a user's mistake.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mirrorkit import __version__
from mirrorkit.errors import MirrorkitError


class _Group(click.Group):
    """Turns mirrorkit's exceptions into one-line errors and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
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


def _apply_config(ctx: click.Context, loader: Callable[[str], dict[str, Any]],
                  params: dict[str, Any]) -> dict[str, Any]:
    """Values from -c FILE fill in every option the command line left at its default."""
    path = params.pop("config", None)
    if not path:
        return params
    for name, value in loader(path).items():
        source = ctx.get_parameter_source(name)
        if source in (None, click.core.ParameterSource.DEFAULT):
            params[name] = value
    return params


from mirrorkit.commands import copy as _copy  # noqa: E402
from mirrorkit.commands import plan as _plan  # noqa: E402
from mirrorkit.commands import rewrite as _rewrite  # noqa: E402

main.add_command(_plan.command)
main.add_command(_plan.releases_command)
for _command in (_copy.pull_bundle_command, _copy.push_bundle_command, _copy.verify_command,
                 _copy.mirror_command, _copy.inventory_command, _rewrite.rewrite_config_command,
                 _rewrite.runbook_command):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
