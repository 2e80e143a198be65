"""``mirrorkit login REGISTRY``: store a verified login where podman and skopeo look for it."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import click

from mirrorkit.cli.common import source_endpoint_option, tls_options
from mirrorkit.errors import InputError, MirrorkitError, OperationError

EPILOG = """
\b
Examples:
  # the private registry, password from a file or a secret store (never on the command line)
  mirrorkit login harbor.example.com --username admin --password-stdin < harbor-password.txt
\b
  # a login for one namespace only (the key harbor.example.com/gpu), into a chosen file
  mirrorkit login harbor.example.com/gpu -u robot --authfile ./auth.json
\b
  # a registry with a private CA, and one on plain HTTP
  mirrorkit login registry.local:5000 -u admin --ca-cert ca.pem
  mirrorkit login 10.0.0.5:5000 -u admin --insecure
\b
  # an upstream reached through a mirror: checked there, saved under nvcr.io
  mirrorkit login nvcr.io -u '$oauthtoken' --password-stdin --source-endpoint nvcr.io=https://mirror.local:5000
"""


@click.command("login", epilog=EPILOG)
@click.argument("registry", metavar="HOST[:PORT][/NAMESPACE]")
@click.option("-u", "--username", help="User name (asked for when not given).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (else: a prompt).")
@click.option("--authfile", type=click.Path(dir_okay=False),
              help="Write here (default: the first writable of $REGISTRY_AUTH_FILE, "
                   "$XDG_RUNTIME_DIR/containers/auth.json or /run/containers/$UID/auth.json, "
                   "$XDG_CONFIG_HOME/containers/auth.json).")
# a flag here, not HOST list: login names one registry; -u and --password-stdin ask when not given
@click.option("--insecure", is_flag=True, help="Reach the registry over plain HTTP or without TLS verification.")
@source_endpoint_option
@tls_options
def login_command(registry: str, **p: Any) -> None:
    """Check a login against REGISTRY, then save it in the containers auth file (as podman login does)."""
    from mirrorkit.oci.credentials import Credentials
    from mirrorkit.oci.login import login, login_key
    from mirrorkit.oci.transport import Endpoints

    host, _ = login_key(registry)
    # --source-endpoint: the login is checked at the endpoint and saved under the upstream's name, where
    # pull-bundle and mirror look for it (a login saved under the endpoint's HOST:PORT is found there too)
    endpoints = Endpoints.from_options(p.get("source_endpoint") or (), (host,) if p["insecure"] else (),
                                       p.get("ca_cert"), p.get("certs_dir"))
    # without a terminal there is nothing to hide the typing from: getpass would only add a Python
    # GetPassWarning, so the answers are read as lines (what a script pipes in)
    terminal = sys.stdin.isatty()
    try:
        username = p.get("username") or click.prompt("Username", err=True)
        if p["password_stdin"]:
            password = sys.stdin.readline().rstrip("\r\n")
        elif terminal:
            password = click.prompt("Password", hide_input=True, err=True)
        else:
            click.echo("Password: ", err=True, nl=False)
            password = sys.stdin.readline().rstrip("\r\n")
    except click.Abort:
        password = ""
    if not password and not terminal and not p["password_stdin"]:
        raise InputError("no password given: pipe it in with --password-stdin (there is no terminal to ask on)")
    if not password:
        raise InputError("no password given" + (" on standard input" if p["password_stdin"] else ""))
    try:
        path, checked = login(registry, Credentials(username, password), endpoints,
                              Path(p["authfile"]) if p.get("authfile") else None)
    except MirrorkitError as exc:
        # the shared hint names hosts (--insecure HOST, as the other commands take it); login's flag is bare
        kind = InputError if isinstance(exc, InputError) else OperationError
        raise kind(re.sub(r"--insecure \S+", "--insecure", str(exc))) from None
    if checked:
        click.echo(f"Login succeeded: {registry} saved in {path}", err=True)
    else:
        click.echo(f"warning: {host} did not ask for credentials, so they could not be checked; "
                   f"saved in {path}", err=True)
