"""``policy.json`` and a ``registries.d`` file: CRI-O and podman nodes check cosign signatures at the mirror.

Each mirrored repository gets a ``sigstoreSigned`` requirement whose
``signedIdentity`` is ``exactRepository`` naming the upstream repository: the payload's
``docker-reference`` must be ``nvcr.io/nvidia/x``, whatever the node pulls, so a
signature NVIDIA made there verifies when the node pulls ``mirror/prefix/nvidia/x``.
``remapIdentity`` would not do for the Helm values: it compares like
``matchRepoDigestOrExact``, and a pull by *tag* then needs a signature naming that very
tag, while cosign's payload names the bare repository; the operator, the driver (whose
OS suffix the operator appends), driver.manager and NFD are pulled by tag.
``exactRepository`` protects tag and digest pulls alike; the signature still binds the
manifest digest. The ``registries.d`` file turns on
``use-sigstore-attachments`` for the mirror, so signatures are read from the
``sha256-<hex>.sig`` tags push-bundle put beside each image.

Written as a folder, because the three parts are installed in three places:

    policy.json                     -> /etc/containers/policy.json
    registries.d/mirrorkit.yaml     -> /etc/containers/registries.d/mirrorkit.yaml
    keys/<name>.pub                 -> /etc/containers/keys/<name>.pub  (the keyPath(s) policy.json names)
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from mirrorkit.refs import Ref
from mirrorkit.trust.keys import PublicKey

KEY_DIR = "/etc/containers/keys"


def key_file_name(key: PublicKey) -> str:
    return f"mirrorkit-{key.fingerprint.removeprefix('sha256:')[:16]}.pub"


def _requirement(source: Ref, mirror: Ref, key_paths: list[str]) -> dict[str, Any]:
    req: dict[str, Any] = {"type": "sigstoreSigned"}
    if len(key_paths) == 1:
        req["keyPath"] = key_paths[0]
    else:
        req["keyPaths"] = key_paths
    req["signedIdentity"] = {"type": "exactRepository", "dockerRepository": source.name}
    return req


def policy(sources: dict[str, Ref], dest: dict[str, Ref], keys: list[PublicKey],
           key_dir: str = KEY_DIR, default: str = "insecureAcceptAnything") -> dict[str, Any]:
    """``sources``/``dest``: plan source -> upstream ref / mirror ref. Images of other registries keep ``default``."""
    key_paths = [f"{key_dir.rstrip('/')}/{key_file_name(k)}" for k in keys]
    scopes: dict[str, list[dict[str, Any]]] = {}
    for source, mirror in sorted(dest.items(), key=lambda kv: kv[1].name):
        scopes.setdefault(mirror.name, [_requirement(sources[source], mirror, key_paths)])
    return {"default": [{"type": default}], "transports": {"docker": scopes}}


def registries_d(dest: dict[str, Ref]) -> dict[str, Any]:
    """Sigstore attachments for every mirror host (and prefix) the images land on."""
    scopes = sorted({ref.registry for ref in dest.values()})
    return {"docker": {scope: {"use-sigstore-attachments": True} for scope in scopes}}


def containers_policy_files(sources: dict[str, Ref], dest: dict[str, Ref], keys: list[PublicKey],
                            key_dir: str = KEY_DIR) -> dict[str, str]:
    """Relative path -> text for the output folder."""
    files = {
        "policy.json": json.dumps(policy(sources, dest, keys, key_dir), indent=2) + "\n",
        "registries.d/mirrorkit.yaml": "# Read cosign signatures from the mirror (written by mirrorkit)\n"
                                        + yaml.safe_dump(registries_d(dest), sort_keys=False),
    }
    for key in keys:
        files[f"keys/{key_file_name(key)}"] = key.pem
    return files
