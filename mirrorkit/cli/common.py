"""Options every registry-facing command shares, and the objects they build."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from mirrorkit.errors import InputError
from mirrorkit.oci.credentials import Credentials, CredentialStore
from mirrorkit.oci.retry import RetryPolicy, parse_duration
from mirrorkit.oci.transport import Endpoints
from mirrorkit.refs import RegistryTarget


def _stack(options: list[Callable[..., Any]]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func
    return decorate


# how TLS to a registry is checked: every command that reaches one, login included
tls_options = _stack([
    click.option("--ca-cert", type=click.Path(dir_okay=False), help="Extra CA bundle to trust."),
    click.option("--certs-dir", type=click.Path(file_okay=False), metavar="DIR",
                 help="Trust DIR/HOST:PORT/*.crt per registry, instead of /etc/containers/certs.d and "
                      "/etc/docker/certs.d (default: $MIRRORKIT_CERTS_DIR)."),
])
# how long a registry may be away (a restart, a failover) before a command gives up (read by retry_from)
retry_options = _stack([
    click.option("--retry-for", metavar="DURATION",
                 help="Ride out a registry that refuses connections or answers 5xx for this long since the "
                      "last progress, e.g. 90s, 5m (default: 60s)."),
])
# where registries are reached (read by endpoints_from)
endpoint_options = _stack([
    click.option("--source-endpoint", multiple=True, metavar="NAME=URL",
                 help="Reach upstream NAME through URL, e.g. nvcr.io=http://127.0.0.1:5001."),
    click.option("--insecure", multiple=True, metavar="HOST[:PORT]",
                 help="A registry reached over plain HTTP or without TLS verification (repeatable)."),
    tls_options,
    retry_options,
])
# who to be at --registry (read by credentials_from)
credential_options = _stack([
    click.option("--username", help="User for the --registry (the password comes from --password-stdin)."),
    click.option("--password-stdin", is_flag=True, help="Read the --registry password from standard input."),
])
registry_options = _stack([endpoint_options, credential_options])


def endpoints_from(p: dict[str, Any]) -> Endpoints:
    return Endpoints.from_options(p.get("source_endpoint") or (), p.get("insecure") or (), p.get("ca_cert"),
                                  p.get("certs_dir"))


def retry_from(p: dict[str, Any]) -> RetryPolicy:
    """The one retry policy, with --retry-for as its outage budget when given."""
    text = p.get("retry_for")
    return RetryPolicy.from_env().with_budget(parse_duration(str(text)) if text else None)


def warn_unused_endpoints(endpoints: Endpoints, registries: set[str]) -> None:
    """A --source-endpoint whose name no image comes from is almost always a typo (nvcr.io vs
    nvcr.com): the images would then be fetched from the internet name, which behind a proxy
    or a mirror-only network fails later and less clearly."""
    for name in sorted(set(endpoints.overrides) - registries):
        click.echo(f"warning: --source-endpoint {name}=...: no image in the plan comes from {name} "
                   f"(they come from {', '.join(sorted(registries)) or 'nowhere'})", err=True)


def credentials_from(p: dict[str, Any], registry: RegistryTarget | None) -> CredentialStore:
    explicit: dict[str, Credentials] = {}
    if p.get("password_stdin") and not p.get("username"):
        raise InputError("--password-stdin needs --username")
    if p.get("username"):
        if registry is None:
            raise InputError("--username applies to --registry: give --registry too")
        if not p.get("password_stdin"):
            raise InputError("--username needs --password-stdin (passwords never go on the command line)")
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise InputError("--password-stdin: no password on standard input")
        explicit[registry.host] = Credentials(p["username"], password)
    return CredentialStore(explicit)


def target_from(p: dict[str, Any]) -> RegistryTarget | None:
    """None when --registry was not given; an empty --registry "" is an error, not "not given"."""
    return RegistryTarget.parse(p["registry"]) if p.get("registry") is not None else None


def apply_config(ctx: click.Context, loader: Callable[[str], dict[str, Any]],
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
