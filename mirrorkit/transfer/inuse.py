"""What the cluster still names, so prune never deletes it (``prune --in-use FILE``).

The file is ``kubectl get pods,nvidiadrivers.nvidia.com,clusterpolicies.nvidia.com -A -o yaml``
(or JSON, or several documents): a pod names its images whole (``spec.containers[].image``,
init containers, and ``status.containerStatuses[].imageID`` with the digest it runs); an
NVIDIADriver or ClusterPolicy names ``repository``/``image``/``version``, to which the operator
appends each node's OS tag (and kernel), so a tag ``<version>-...`` of that image counts as
named. A plain list of references, one a line, works too. Matching is generous on purpose:
an image the cluster might still pull is kept; the cost of a wrong keep is some disk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mirrorkit.errors import InputError, ReferenceFormatError
from mirrorkit.refs import Ref

MAX_FILE = 64 << 20


@dataclass
class InUse:
    refs: set[str] = field(default_factory=set)                     # registry/repository:tag or @digest
    digests: set[str] = field(default_factory=set)
    versions: set[tuple[str, str]] = field(default_factory=set)      # (image name, version) from CR specs

    def names(self, ref: Ref, digest: str | None = None) -> str | None:
        """Why the cluster still needs ``ref`` (None when nothing names it)."""
        if str(ref) in self.refs:
            return f"a pod runs {ref}"
        if digest and digest in self.digests:
            return f"a pod runs {ref.name}@{digest}"
        last = ref.repository.rsplit("/", 1)[-1]
        for image, version in self.versions:
            if image == last and ref.tag and (ref.tag == version or ref.tag.startswith(version + "-")):
                return f"a ClusterPolicy or NVIDIADriver names {image} {version}"
        return None


def _walk(node: Any, out: InUse) -> None:
    if isinstance(node, dict):
        image, version = node.get("image"), node.get("version")
        if isinstance(image, str) and isinstance(version, str) and version:
            out.versions.add((image.rsplit("/", 1)[-1], version))   # image may be a full path (NVIDIADriver)
        elif isinstance(image, str) and image:
            _reference(image, out)
        image_id = node.get("imageID")
        if isinstance(image_id, str) and "sha256:" in image_id:
            out.digests.add("sha256:" + image_id.rsplit("sha256:", 1)[1])
        for value in node.values():
            _walk(value, out)
    elif isinstance(node, list):
        for value in node:
            _walk(value, out)


def _reference(text: str, out: InUse) -> None:
    try:
        ref = Ref.parse(text)
    except ReferenceFormatError:
        return
    out.refs.add(str(ref))
    if ref.digest:
        out.digests.add(ref.digest)


def load_in_use(path: str) -> InUse:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_FILE:
            raise InputError(f"--in-use {path}: larger than {MAX_FILE} bytes")
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--in-use {path}: cannot read it ({exc})") from None
    out = InUse()
    try:
        docs: list[Any] = [json.loads(text)] if text.lstrip().startswith("{") else list(yaml.safe_load_all(text))
    except (ValueError, yaml.YAMLError):
        docs = []
    if docs and all(isinstance(d, (dict, list)) or d is None for d in docs):
        for doc in docs:
            _walk(doc, out)
        return out
    for n, line in enumerate(text.splitlines(), 1):   # a plain list of references
        line = line.strip()
        if line and not line.startswith("#"):
            try:
                Ref.parse(line)
            except ReferenceFormatError as exc:
                raise InputError(f"{path}:{n}: {exc}") from None
            _reference(line, out)
    return out
