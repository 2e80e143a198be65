"""A Kyverno ClusterPolicy that admits the mirrored images only with a valid cosign signature.

Kyverno (like cosign) reads signatures from the image's own repository, where
push-bundle and mirror put them byte for byte, and a key-based cosign check binds the
signature to the manifest digest, not to a name: a signature NVIDIA made for
``nvcr.io/nvidia/x`` therefore verifies at ``mirror/prefix/nvidia/x`` with no identity
remapping (containers-policy needs ``exactRepository`` for that). The transparency
log and SCT checks are off: an air-gapped cluster cannot reach Rekor, and NVIDIA's
key-based signatures carry no bundle.

How to turn the log off differs by Kyverno version (read from each release's ClusterPolicy
CRD and image verifier): 1.10 checks no log when ``keys.rekor`` is absent, and its schema
knows neither ``rekor.ignoreTlog`` nor ``ctlog``; from 1.11 an absent ``rekor`` means the
public Rekor, so ``ignoreTlog: true`` is needed, and 1.11 still requires ``rekor.url``
(present, and unused once the log is ignored). No one document does both, hence
``KYVERNO_FORMS``: ``1.11`` (the default) validates on 1.11 to 1.19, ``1.10`` on 1.10.
"""

from __future__ import annotations

from typing import Any

import yaml

from mirrorkit.plan import Plan
from mirrorkit.refs import Ref
from mirrorkit.trust.keys import PublicKey

POLICY_NAME = "mirrorkit-verify-images"
KYVERNO_FORMS = ("1.11", "1.10")
PUBLIC_REKOR = "https://rekor.sigstore.dev"


def repositories(dest: dict[str, Ref]) -> list[str]:
    """The mirrored repositories, each once, sorted."""
    return sorted({ref.name for ref in dest.values()})


def image_references(dest: dict[str, Ref]) -> list[str]:
    """Tag and digest patterns per repository: ``repo*`` alone would also match ``repo-other``."""
    return [pattern for name in repositories(dest) for pattern in (f"{name}:*", f"{name}@*")]


def key_entry(key: PublicKey, form: str = KYVERNO_FORMS[0]) -> dict[str, Any]:
    """One attestor entry: the key, and the transparency log turned off the way ``form``'s Kyverno reads it."""
    entry: dict[str, Any] = {"publicKeys": key.pem.strip(), "signatureAlgorithm": "sha256"}
    if form != "1.10":
        entry["rekor"] = {"url": PUBLIC_REKOR, "ignoreTlog": True}
        entry["ctlog"] = {"ignoreSCT": True}
    return {"keys": entry}


def cluster_policy(plan: Plan, dest: dict[str, Ref], keys: list[PublicKey], *, name: str = POLICY_NAME,
                   action: str = "Enforce", form: str = KYVERNO_FORMS[0]) -> dict[str, Any]:
    if form not in KYVERNO_FORMS:
        raise ValueError(form)
    entries = [key_entry(key, form) for key in keys]
    return {
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {"name": name, "annotations": {
            "policies.kyverno.io/title": "Verify mirrored image signatures",
            "policies.kyverno.io/description": (
                f"Images mirrored by mirrorkit{' for GPU Operator ' + plan.release if plan.release else ''} "
                "must carry a cosign signature under one of these keys."),
            "mirrorkit.dev/key-fingerprints": ",".join(k.fingerprint for k in keys)}},
        "spec": {
            "validationFailureAction": action,
            "background": False,
            "webhookTimeoutSeconds": 30,
            "rules": [{
                "name": "verify-cosign-signatures",
                "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                "verifyImages": [{
                    "type": "Cosign",
                    "imageReferences": image_references(dest),
                    "mutateDigest": True,
                    "verifyDigest": True,
                    "required": True,
                    "attestors": [{"count": 1, "entries": entries}],
                }],
            }],
        },
    }


class _Dumper(yaml.SafeDumper):
    """PEM keys as literal blocks, as people write them in policies."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def kyverno_policy(plan: Plan, dest: dict[str, Ref], keys: list[PublicKey], form: str = KYVERNO_FORMS[0],
                   name: str | None = None) -> str:
    versions = "Kyverno 1.10 only" if form == "1.10" else "Kyverno 1.11 and later (1.10: --kyverno-version 1.10)"
    header = ("# Kyverno ClusterPolicy written by mirrorkit rewrite-config: every pod image from the mirror\n"
              "# must carry a valid cosign signature under one of the keys (any one is enough).\n"
              f"# For {versions}; no transparency log is consulted (the cluster is air-gapped).\n")
    return header + yaml.dump(cluster_policy(plan, dest, keys, form=form, name=name or POLICY_NAME), Dumper=_Dumper,
                              sort_keys=False,
                              width=120)
