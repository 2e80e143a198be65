"""offline-installer: mirrorkit, its dependencies' wheels and an install.sh, for a host with no package index."""

from __future__ import annotations

from pathlib import Path

import click

PLATFORM = click.option("--platform", "platforms", multiple=True, type=click.Choice(("x86_64", "aarch64")),
                        help="Only wheels for this machine (repeatable; default: x86_64 and aarch64).")
PYTHON = click.option("--python", "pythons", multiple=True, metavar="3.X",
                      help="Only wheels for this CPython (repeatable; default: 3.11, 3.12 and 3.13).")


@click.command("offline-installer", epilog="""
\b
Examples:
  mirrorkit offline-installer -o mirrorkit-installer/
  mirrorkit offline-installer -o mk-x86/ --platform x86_64 --python 3.11
  # behind the gap, with no network:
  sh mirrorkit-installer/install.sh --prefix /opt/mirrorkit
""")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@PLATFORM
@PYTHON
@click.option("--wheel", type=click.Path(dir_okay=False, exists=True),
              help="mirrorkit's own wheel (default: built from the sources this mirrorkit runs from).")
@click.option("--find-links", type=click.Path(file_okay=False, exists=True), metavar="DIR",
              help="Take the dependency wheels from this folder only (a local wheelhouse), not from the package index.")
def offline_installer_command(output: str, platforms: tuple[str, ...], pythons: tuple[str, ...],
                              wheel: str | None, find_links: str | None) -> None:
    """Everything needed to install this mirrorkit where there is no package index: wheels, SHA256SUMS,
    install.sh (which checks the sums, finds a Python 3.11+ and installs into a virtual environment)."""
    from mirrorkit.installer.build import build_installer
    from mirrorkit.progress import human

    built = build_installer(Path(output), list(platforms), list(pythons), Path(wheel) if wheel else None,
                            log=lambda msg: click.echo(msg, err=True),
                            find_links=Path(find_links) if find_links else None)
    wheels = sum(1 for rel in built.files if rel.startswith("wheels/"))
    lines = [f"wrote {output}: mirrorkit {built.version}, {wheels} wheels, {human(built.size)} "
             f"(CPython {', '.join(built.pythons)} on {', '.join(built.platforms)})"]
    lines += [f"  {p}: {human(built.size_for(p))}" for p in built.platforms]
    lines.append(f"  install with: sh {Path(output) / 'install.sh'} --prefix /opt/mirrorkit")
    click.echo("\n".join(lines), err=True)
