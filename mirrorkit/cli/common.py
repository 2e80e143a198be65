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
    click.option("--ca-cert", multiple=True, metavar="[HOST[:PORT]=]FILE",
                 help="Extra CA bundle to trust: for every registry, or with HOST= for that registry only "
                      "(repeatable: every bundle given is trusted)."),
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
source_endpoint_option = click.option(
    "--source-endpoint", multiple=True, metavar="NAME=URL",
    help="Reach upstream NAME through URL, e.g. nvcr.io=http://127.0.0.1:5001 (credentials stored under NAME, "
         "else under the URL's HOST:PORT, are used there).")
# how registries are reached (read by endpoints_from)
insecure_options = _stack([
    click.option("--insecure", multiple=True, metavar="HOST[:PORT]",
                 help="A registry reached over plain HTTP or without TLS verification (repeatable)."),
    tls_options,
    retry_options,
])
# commands that contact a source (plan --resolve, pull-bundle, mirror) also take --source-endpoint
endpoint_options = _stack([source_endpoint_option, insecure_options])
# who to be (read by credentials_from): at --registry, or at pull-bundle's one source registry
credential_options = _stack([
    click.option("--username", help="User for the registry the command logs in to: --registry, or for pull-bundle "
                                    "the plan's source registry (the password comes from --password-stdin)."),
    click.option("--password-stdin", is_flag=True, help="Read that registry's password from standard input."),
])
registry_options = _stack([endpoint_options, credential_options])
# commands that only contact the private registry: push-bundle, verify, inventory, prune
destination_options = _stack([insecure_options, credential_options])


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


def credentials_from(p: dict[str, Any], registry: RegistryTarget | None,
                     sources: set[str] | None = None) -> CredentialStore:
    """``--username``/``--password-stdin`` for ``registry``; with ``sources`` (pull-bundle) for the one
    source registry the plan pulls from."""
    explicit: dict[str, Credentials] = {}
    if p.get("password_stdin") and not p.get("username"):
        raise InputError("--password-stdin needs --username")
    if p.get("username"):
        host = registry.host if registry is not None else None
        if sources is not None:
            if len(sources) != 1:
                raise InputError(f"--username: the plan pulls from {', '.join(sorted(sources))}; log in to each "
                                 "with 'mirrorkit login HOST' instead")
            host = next(iter(sources))
        if host is None:
            raise InputError("--username applies to --registry: give --registry too")
        if not p.get("password_stdin"):
            raise InputError("--username needs --password-stdin (passwords never go on the command line)")
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise InputError("--password-stdin: no password on standard input")
        explicit[host] = Credentials(p["username"], password)
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


# --bundle-key: the lock signature (pull-bundle --sign-key) is checked before anything else of a bundle is read
bundle_key_option = click.option(
    "--bundle-key", "bundle_keys", multiple=True, metavar="KEY.pub", type=click.Path(dir_okay=False),
    help="PEM public key the bundle's lock must be signed with (pull-bundle --sign-key); checked before "
         "anything else is read: an unsigned bundle, another key or a lock changed after signing stops the "
         "command (exit 1). Repeatable: any one of the keys will do.")


def check_bundle_keys(paths: Any, keys: tuple[str, ...] | list[str]) -> Any:
    """With --bundle-key: the bundle's lock signature, checked (mirrorkit.trust.bundlesig); else None."""
    if not keys:
        return None
    from mirrorkit.trust.bundlesig import check_bundle

    signed = check_bundle(paths, list(keys))
    click.echo(f"lock signed by {signed.signer.fingerprint} ({signed.signer.key_type})"
               + (f" at {signed.signed_at}" if signed.signed_at else "") + ": signature verified", err=True)
    return signed
