"""Helpers both runbooks use (install: runbook.py, upgrade: runbook_upgrade.py).

The two runbooks print the same commands with the same flags; building those pieces in one
place keeps the install and upgrade steps from drifting apart (a TLS flag or a verify key
forgotten in one of them is a command that fails on the air-gapped side).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from mirrorkit.destinations import operator_chart

if TYPE_CHECKING:
    from mirrorkit.rewrite.runbook import RunbookInput


def quoted(value: object) -> str:
    """A value for a shell command line: quoted, whatever it holds."""
    return shlex.quote(str(value))


def checksum_line(volume: str) -> str:
    """``.sha256`` files name the volume without its folder, so check from inside the folder."""
    folder, name = str(Path(volume).parent), Path(volume).name
    return f"(cd {shlex.quote(folder)} && sha256sum -c {shlex.quote(name)}.sha256)"


def tls_flags(inp: RunbookInput) -> str:
    """The TLS choices the push was made with, so the printed commands work as printed."""
    out = "".join(f" --insecure {shlex.quote(h)}" for h in inp.insecure)
    return out + (f" --ca-cert {shlex.quote(inp.ca_cert)}" if inp.ca_cert else "")


def helm_flags(inp: RunbookInput, chart: str) -> str:
    if not chart.startswith("oci://"):
        return ""
    host = chart[len("oci://"):].split("/", 1)[0]
    if host in inp.insecure:
        return " --plain-http"
    return f" --ca-file {shlex.quote(inp.ca_cert)}" if inp.ca_cert else ""


def registry_of(inp: RunbookInput) -> str:
    if inp.plan.registry:
        return inp.plan.registry
    hosts = sorted({d.registry for d in inp.dest.values()})
    return hosts[0] if hosts else "REGISTRY"


SITE_KEY, SITE_PUB = "site.pem", "site.pub"


def sig_flags(inp: RunbookInput, shell: bool = False) -> str:
    """The keys signatures are checked with: the publisher's, and the site's when --platform rewrote indexes."""
    out = " --verify-key " + ('"$VERIFY_KEY"' if shell else shlex.quote(inp.verify_key))
    return out + (f" --verify-key {SITE_PUB}" if inp.site_signed else "")


def push_sig_flags(inp: RunbookInput, shell: bool = False) -> str:
    """push-bundle's keys; with rewritten indexes, the site signs them at the mirror (push-bundle --site-key)."""
    return sig_flags(inp, shell) + (f" --site-key {SITE_KEY}" if inp.site_signed else "")


def shell_chart(chart: str, reg: str) -> str:
    """The chart reference for a script: the registry part as ``$REGISTRY``, so one variable moves it all."""
    rest = chart.removeprefix(f"oci://{reg}")
    if chart.startswith(f"oci://{reg}/") and all(c.isalnum() or c in "._/-" for c in rest):
        return f'"oci://$REGISTRY{rest}"'
    return quoted(chart)


def policy_lines(inp: RunbookInput, src: str, shell: bool = False) -> list[str]:
    sig = sig_flags(inp, shell)
    reg = ' --registry "$REGISTRY"' if shell else ""
    site = " --site-signed" if inp.site_signed else ""
    return [f"mirrorkit rewrite-config {shlex.quote(src)} --format kyverno{reg}{sig}{site} -o verify-images.yaml",
            "if kubectl get crd clusterpolicies.kyverno.io >/dev/null 2>&1; then kubectl apply -f verify-images.yaml; "
            "else echo 'Kyverno is not installed: verify-images.yaml not applied' >&2; fi"]


def chart_ref(inp: RunbookInput) -> tuple[str, str]:
    return operator_chart(inp.charts, inp.plan.registry, inp.plan.release)

