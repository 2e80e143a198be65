"""An authenticated mirror: the imagePullSecret the pods need, and the chart values that name it.

The Secret (``kubernetes.io/dockerconfigjson``) is built from the credentials mirrorkit already
has for the mirror (``mirrorkit login``, ``REGISTRY_AUTH_FILE``, containers ``auth.json``,
``~/.docker/config.json``): the password is never on a command line or in a log, only in the
file written (mode 0600), which the runbook applies and removes.

The GPU Operator chart takes a list of Secret *names* per operand (``<operand>.imagePullSecrets``),
the NFD subchart the Kubernetes form (``[{name: ...}]``), and an NVIDIADriver its own
``spec.imagePullSecrets`` (names).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import yaml

from mirrorkit.errors import InputError
from mirrorkit.oci.credentials import CredentialStore

# chart sections (v23.9 and later) with an imagePullSecrets list of names
OPERANDS = ("operator", "validator", "driver", "toolkit", "devicePlugin", "dcgm", "dcgmExporter", "gfd",
            "migManager", "nodeStatusExporter", "gds", "gdrcopy", "vgpuManager", "vgpuDeviceManager",
            "vfioManager", "sandboxDevicePlugin", "kataManager", "ccManager")
NFD = "node-feature-discovery"


def secret_values(values: dict[str, Any], name: str) -> None:
    """Name the Secret in every operand section the overlay sets (and for the operator and validator)."""
    for key in OPERANDS:
        if key in values or key in ("operator", "validator"):
            values.setdefault(key, {})["imagePullSecrets"] = [name]
    if NFD in values:
        values[NFD]["imagePullSecrets"] = [{"name": name}]


def pull_secret(name: str, namespace: str, hosts: list[str], store: CredentialStore) -> str:
    """The Secret manifest for ``hosts`` (each mirror host the images land on)."""
    auths: dict[str, dict[str, str]] = {}
    for host in hosts:
        creds = store.get(host)
        if creds is None:
            raise InputError(f"no credentials for {host}: run 'mirrorkit login {host}' (it reads the password "
                             "from standard input) or give REGISTRY_AUTH_FILE")
        if creds.identity_token:
            raise InputError(f"{host}: the stored credential is an identity token, which a kubelet cannot use; "
                             "log in with a user and password (or a robot account)")
        auths[host] = {"auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
    config = base64.b64encode(json.dumps({"auths": auths}, sort_keys=True).encode()).decode()
    doc = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
           "metadata": {"name": name, "namespace": namespace}, "data": {".dockerconfigjson": config}}
    return ("# imagePullSecret for the mirror, written by mirrorkit rewrite-config: it holds a password.\n"
            "# kubectl apply -f this file, then delete it.\n" + yaml.safe_dump(doc, sort_keys=False))
