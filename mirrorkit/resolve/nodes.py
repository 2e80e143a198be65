"""Facts about the cluster's GPU nodes, from flags or ``kubectl get nodes -o json``.

The operator reads a node's OS from NFD's ``system-os_release`` labels and its
kernel from ``kernel-version.full``; mirrorkit reads the same labels first so it
computes the same image tags the operator will, and only falls back to the
kubelet's ``nodeInfo`` strings when NFD has not labelled the node yet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirrorkit.errors import NodeSpecError
from mirrorkit.yamlio import load_json

OS_ID_LABEL = "feature.node.kubernetes.io/system-os_release.ID"
OS_VERSION_LABEL = "feature.node.kubernetes.io/system-os_release.VERSION_ID"
KERNEL_LABEL = "feature.node.kubernetes.io/kernel-version.full"
GPU_LABELS = (
    ("nvidia.com/gpu.present", "true"),
    ("feature.node.kubernetes.io/pci-10de.present", "true"),
)
ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64", "amd64": "amd64", "arm64": "arm64",
                "ppc64le": "ppc64le", "s390x": "s390x"}
_OS_RE = re.compile(r"^([a-z][a-z_-]*?)-?(\d+(?:\.\d+)*)$")
_KERNEL_RE = re.compile(r"^[0-9][A-Za-z0-9._+~-]*$")

# osImage prefixes -> os-release ID, for nodes that NFD has not labelled
_OS_IMAGE = (
    ("red hat enterprise linux coreos", "rhcos"),
    ("red hat enterprise linux", "rhel"),
    ("rocky linux", "rocky"),
    ("almalinux", "almalinux"),
    ("centos stream", "centos"),
    ("centos", "centos"),
    ("ubuntu", "ubuntu"),
    ("debian", "debian"),
    ("suse linux enterprise server", "sles"),
    ("sles", "sles"),
    ("opensuse leap", "opensuse-leap"),
    ("oracle linux", "ol"),
    ("amazon linux", "amzn"),
    ("talos", "talos"),
)


@dataclass(frozen=True, order=True)
class Node:
    """One GPU node as the operator sees it: os-release ID and VERSION_ID, kernel, arch."""

    os_id: str
    os_version: str
    kernel: str | None = None
    arch: str = "amd64"
    name: str = ""
    # the node's labels (kubectl JSON only), for NVIDIADriver nodeSelectors; None: not known (--node)
    labels: tuple[tuple[str, str], ...] | None = field(default=None, compare=False)

    def selected_by(self, selector: dict[str, str]) -> bool:
        """Whether a nodeSelector picks this node; a node without known labels is picked by every one."""
        if self.labels is None:
            return True
        have = dict(self.labels)
        return all(have.get(k) == v for k, v in selector.items())

    @property
    def os(self) -> str:
        return f"{self.os_id}{self.os_version}"

    def describe(self) -> str:
        return f"{self.name + ': ' if self.name else ''}{self.os}/{self.kernel or '?'}/{self.arch}"


def _arch(value: str, where: str) -> str:
    arch = ARCH_ALIASES.get(value.strip().lower())
    if not arch:
        raise NodeSpecError(f"{where}: unknown architecture {value!r} "
                            f"(use one of {', '.join(sorted(set(ARCH_ALIASES.values())))})")
    return arch


def _kernel(value: str, where: str) -> str:
    if not _KERNEL_RE.match(value):
        raise NodeSpecError(f"{where}: invalid kernel version {value!r}")
    return value


def split_os(text: str, where: str = "--node") -> tuple[str, str]:
    """``ubuntu22.04`` -> (``ubuntu``, ``22.04``)."""
    m = _OS_RE.match(text.strip().lower())
    if not m:
        raise NodeSpecError(f"{where}: invalid OS {text!r}: expected ID and VERSION_ID as in "
                            "ubuntu22.04, rhel9.4, rocky8.5, rhcos4.14")
    return m.group(1), m.group(2)


def parse_node_spec(spec: str) -> Node:
    """``OS/KERNEL[/ARCH]``, e.g. ``rhel9.4/5.14.0-427.13.1.el9_4.x86_64/amd64``."""
    where = f"--node {spec!r}"
    parts = spec.strip().split("/")
    if not parts[0] or len(parts) > 3:
        raise NodeSpecError(f"{where}: expected OS/KERNEL[/ARCH], e.g. ubuntu22.04/5.15.0-131-generic")
    os_id, os_version = split_os(parts[0], where)
    kernel = _kernel(parts[1], where) if len(parts) > 1 and parts[1] else None
    arch = _arch(parts[2], where) if len(parts) > 2 else "amd64"
    return Node(os_id, os_version, kernel, arch)


def os_from_image(os_image: str) -> tuple[str, str] | None:
    """Best effort from ``status.nodeInfo.osImage`` (``Ubuntu 22.04.5 LTS``)."""
    text = os_image.strip().lower()
    for prefix, os_id in _OS_IMAGE:
        if text.startswith(prefix):
            rest = text[len(prefix):]
            if os_id == "rhcos":
                m = re.search(r"(\d)(\d+)\.\d+", rest)
                return (os_id, f"{m.group(1)}.{m.group(2)}") if m else None
            if os_id == "sles":
                m = re.search(r"(\d+)(?:\s*sp(\d+))?", rest)
                if not m:
                    return None
                return os_id, m.group(1) + (f".{m.group(2)}" if m.group(2) else "")
            if os_id == "amzn":
                # NFD's VERSION_ID is the major only: 2023 for "Amazon Linux 2023.5.20240708"
                m = re.search(r"(\d+)", rest)
                return (os_id, m.group(1)) if m else None
            m = re.search(r"(\d+(?:\.\d+)?)", rest)
            if not m:
                return None
            return os_id, m.group(1)
    return None


def _is_gpu(labels: dict[str, Any]) -> bool:
    return any(str(labels.get(k, "")).lower() == v for k, v in GPU_LABELS)


def nodes_from_kubectl(data: Any, source: str) -> tuple[list[Node], list[str]]:
    """GPU nodes from ``kubectl get nodes -o json`` output, and warnings."""
    if isinstance(data, dict) and data.get("kind") == "Node":
        items = [data]
    elif isinstance(data, dict) and isinstance(data.get("items"), list):
        items = data["items"]
    else:
        raise NodeSpecError(f"{source}: not the output of 'kubectl get nodes -o json' "
                            "(expected an object with 'items')")
    warnings: list[str] = []
    labelled = [i for i in items if isinstance(i, dict) and _is_gpu(_labels(i))]
    if not labelled:
        warnings.append(f"{source}: no node carries nvidia.com/gpu.present=true or "
                        "feature.node.kubernetes.io/pci-10de.present=true; treating every node "
                        "as a GPU node")
        labelled = [i for i in items if isinstance(i, dict)]
    nodes = [_node_from_item(i, source, n) for n, i in enumerate(labelled)]
    if not nodes:
        raise NodeSpecError(f"{source}: no nodes in the file")
    return nodes, warnings


def _labels(item: dict[str, Any]) -> dict[str, Any]:
    labels = (item.get("metadata") or {}).get("labels") or {}
    return labels if isinstance(labels, dict) else {}


def _node_from_item(item: dict[str, Any], source: str, index: int) -> Node:
    meta = item.get("metadata") or {}
    name = str(meta.get("name") or f"items[{index}]")
    where = f"{source}: node {name}"
    labels = _labels(item)
    info = (item.get("status") or {}).get("nodeInfo") or {}
    if not isinstance(info, dict):
        raise NodeSpecError(f"{where}: status.nodeInfo must be an object")
    os_id = str(labels.get(OS_ID_LABEL) or "").lower()
    os_version = str(labels.get(OS_VERSION_LABEL) or "")
    if not (os_id and os_version):
        parsed = os_from_image(str(info.get("osImage") or ""))
        if not parsed:
            raise NodeSpecError(f"{where}: cannot tell the OS: no NFD os_release labels and "
                                f"osImage {info.get('osImage')!r} is not recognised")
        os_id, os_version = parsed
    kernel = str(labels.get(KERNEL_LABEL) or info.get("kernelVersion") or "") or None
    if kernel:
        _kernel(kernel, where)
    arch = _arch(str(info.get("architecture") or "amd64"), where)
    return Node(os_id, os_version, kernel, arch, name,
                tuple(sorted((str(k), str(v)) for k, v in labels.items())))


def load_nodes_json(path: str | Path) -> tuple[list[Node], list[str]]:
    return nodes_from_kubectl(load_json(path, "nodes JSON"), str(path))
