"""prune: take the images of old plans out of the private registry, and nothing a kept image needs.

A mirror only grows: every upgrade adds a release and nothing leaves. Deleting by
hand is dangerous because registries share content: two driver tags can point at
indexes that share a platform manifest, a kept image's cosign signature sits
beside it as one more tag, and a site may have tagged something itself. So the
work is a mark-and-sweep over the repositories the dropped plans name, and only
those: everything reachable from a tag nobody drops (kept images, the site's own
tags), from a kept lock's digests, or as an artifact of something kept, is
protected; what the dropped tags reach, minus that, is deleted. A dry run is the
default; ``--apply`` deletes tags first, then manifests by digest (the only
deletion distribution 2.x implements: a tag goes with its manifest). Deleting
manifests frees no disk until the registry's own garbage collection runs, so the
result always says how to run it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from mirrorkit.destinations import destination_map
from mirrorkit.errors import InputError, NotFoundError, OperationError, UnsupportedError
from mirrorkit.lock import Lock, LockArtifact, LockChart, lock_charts
from mirrorkit.oci import manifests
from mirrorkit.oci.client import RegistryClient
from mirrorkit.plan import Plan
from mirrorkit.refs import Ref, RegistryTarget
from mirrorkit.transfer.charts import destination as chart_destination
from mirrorkit.transfer.inuse import InUse

ARTIFACT_TAG = re.compile(r"^sha256-([0-9a-f]{64})\.(sig|att|sbom)$")
GC_STEPS = (
    "deleting manifests frees no disk: run the registry's garbage collection now",
    "  distribution (docker-registry / registry:2), best with the registry read-only or stopped:",
    "    docker-registry garbage-collect /etc/docker/registry/config.yml",
    "    (in the registry:2 container: registry garbage-collect /etc/docker/registry/config.yml)",
    "  Harbor: Administration > Clean Up > Garbage Collection > GC Now",
)


@dataclass(frozen=True)
class Source:
    """One --keep or --drop argument, loaded."""

    path: str
    plan: Plan
    lock: Lock | None


@dataclass(frozen=True)
class Item:
    repository: str   # registry/repository
    reference: str    # a tag or a digest
    kind: str         # tag, index, manifest, artifact
    image: str        # the dropped (or kept) destination it belongs to, or why it is kept

    def to_dict(self, key: str) -> dict[str, str]:
        return {"repository": self.repository, key: self.reference, "kind": self.kind, "image": self.image}


@dataclass
class PruneResult:
    registry: str
    tags: list[Item] = field(default_factory=list)
    manifests: list[Item] = field(default_factory=list)
    kept: list[Item] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    overlap: list[str] = field(default_factory=list)
    spared: list[tuple[str, str]] = field(default_factory=list)    # (destination, why the cluster needs it)
    applied: bool = False
    deleted_tags: int = 0
    deleted_manifests: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "registry": self.registry, "applied": self.applied,
            "tags": [t.to_dict("tag") for t in self.tags],
            "manifests": [m.to_dict("digest") for m in self.manifests],
            "kept": [k.to_dict("digest") for k in self.kept],
            "also_kept": self.overlap, "absent": self.absent,
            "in_use": [{"image": d, "why": w} for d, w in self.spared],
            "deleted": {"tags": self.deleted_tags, "manifests": self.deleted_manifests},
            "notes": self.notes, "garbage_collect": list(GC_STEPS),
        }


def _destinations(src: Source, target: RegistryTarget, mapping: str | None) -> dict[str, Ref]:
    """source -> where it was pushed; a lock's charts too (``chart:NAME`` -> ``charts/NAME:TAG``)."""
    if src.plan.registry and RegistryTarget.parse(src.plan.registry) != target:
        raise InputError(f"{src.path}: planned for registry {src.plan.registry}, not {target}; "
                         f"give --registry {src.plan.registry} to prune there")
    pairs = [(i.source, i.destination) for i in (src.lock.images if src.lock else src.plan.images)]
    out = destination_map(src.plan, pairs, target, mapping)
    for chart in _charts(src):
        out[f"chart:{chart.name}:{chart.tag}"] = chart_destination(chart, target)
    return out


def _charts(src: Source) -> list[LockChart]:
    return lock_charts(src.lock, src.path) if src.lock and src.lock.charts else []


def _spared(drop: list[Source], target: RegistryTarget, mapping: str | None,
            in_use: InUse | None) -> tuple[dict[str, str], list[str]]:
    """Dropped destinations the cluster may still run: destination -> why; and notes.

    With ``in_use`` (what the cluster names now), exactly those. Without it prune cannot
    see the cluster: ``helm upgrade`` never touches NVIDIADriver resources, so a pool can
    still run a dropped release's driver; those images are kept and the note says why.
    """
    spared: dict[str, str] = {}
    unknown = 0
    for src in drop:
        dests = _destinations(src, target, mapping)
        digests = {i.source: i.digest for i in src.plan.images if i.digest}
        if src.lock:
            digests.update({i.source: i.digest for i in src.lock.images})
        components = {i.source: i.component for i in src.plan.images}
        for source, ref in dests.items():
            if in_use is not None:
                why = in_use.names(ref, digests.get(source))
                if why:
                    spared[str(ref)] = why
            elif any(c.startswith("nvidiadriver/") for c in components.get(source, "").split(",")):
                spared[str(ref)] = "an NVIDIADriver resource may still name it (prune cannot see the cluster)"
                unknown += 1
    notes = []
    if unknown:
        notes.append(f"kept {unknown} image(s) the dropped NVIDIADriver resources name: helm upgrade does not "
                     "change those resources, and without --in-use prune cannot tell whether a pool still runs "
                     "them; give --in-use FILE (kubectl get pods,nvidiadrivers.nvidia.com,clusterpolicies.nvidia.com "
                     "-A -o yaml) to prune them")
    return spared, notes


def _artifacts(src: Source) -> list[LockArtifact]:
    """The lock's signature/SBOM/attestation artifacts, if any."""
    return src.lock.artifacts if src.lock else []


class _Repo:
    """One repository's tags and manifest graph, read once."""

    def __init__(self, client: RegistryClient, name: Ref) -> None:
        self.client, self.ref = client, name
        self.tags: dict[str, str] = {}
        self.children: dict[str, list[str]] = defaultdict(list)
        self.kinds: dict[str, str] = {}
        self.artifacts: dict[str, set[str]] = defaultdict(set)   # subject -> artifact manifests
        try:
            tags = client.list_tags(name.registry, name.repository)
        except NotFoundError:
            tags = []
        for tag in sorted(tags):
            digest = self.load(tag)
            if digest:
                self.tags[tag] = digest
                match = ARTIFACT_TAG.match(tag)
                if match:
                    self.artifacts[f"sha256:{match.group(1)}"].add(digest)
                    self.kinds[digest] = "artifact"

    def load(self, reference: str) -> str | None:
        """Read a manifest (by tag or digest) into the graph; its digest, or None if absent."""
        try:
            manifest = self.client.get_manifest(self.ref, reference)
        except NotFoundError:
            return None
        digest = manifest.digest
        if digest in self.kinds:
            return digest
        doc = manifests.parse(manifest.data, f"{self.ref.name}:{reference}")
        index = manifests.is_index(doc, manifest.media_type)
        self.kinds[digest] = "index" if index else "manifest"
        if index:
            for child in manifests.children(doc, f"{self.ref.name}@{digest}"):
                self.children[digest].append(child.digest)
                self.kinds.setdefault(child.digest, "manifest")
        subject = doc.get("subject")
        if isinstance(subject, dict) and isinstance(subject.get("digest"), str):
            self.artifacts[subject["digest"]].add(digest)
            self.kinds[digest] = "artifact"
        return digest

    def closure(self, roots: dict[str, str]) -> dict[str, str]:
        """digest -> the root it was reached from: children and artifacts included."""
        out: dict[str, str] = {}
        stack = list(roots.items())
        while stack:
            digest, why = stack.pop()
            if digest in out:
                continue
            out[digest] = why
            stack += [(d, why) for d in self.children.get(digest, [])]
            stack += [(d, why) for d in self.artifacts.get(digest, set())]
        return out


def plan_prune(client: RegistryClient, target: RegistryTarget, keep: list[Source], drop: list[Source],
               mapping: str | None = None, in_use: InUse | None = None) -> PruneResult:
    """What ``--apply`` would delete, read from the registry; deletes nothing.

    The listing is exactly what ``apply_prune`` deletes: a dropped tag whose manifest a
    kept image still needs is listed as kept (distribution 2.x deletes a tag only with its
    manifest, so such a tag would stay anyway), and what the cluster may still run stays.
    """
    if not drop:
        raise InputError("prune: give at least one --drop PLAN|LOCK|BUNDLE")
    kept_dests = {str(d): (s, src) for src in keep for s, d in _destinations(src, target, mapping).items()}
    spared, notes = _spared(drop, target, mapping, in_use)
    dropped = {str(d): (s, src) for src in drop for s, d in _destinations(src, target, mapping).items()
               if str(d) not in spared}
    result = PruneResult(registry=str(target), notes=notes)
    result.spared = sorted((d, w) for d, w in spared.items() if d not in kept_dests)
    if not keep:
        result.notes.append("no --keep: only tags the --drop inputs do not name protect shared content; give "
                            "--keep with the release you run now")
    result.overlap = sorted(set(dropped) & set(kept_dests))
    if not dropped and spared:
        return result
    if dropped and set(dropped) <= set(kept_dests):
        raise InputError("prune: every image the --drop inputs name is also named by a --keep, so nothing "
                         "would go; overlap: " + ", ".join(result.overlap))
    by_repo: dict[str, list[Ref]] = defaultdict(list)
    for dest in dropped:
        by_repo[Ref.parse(dest).name].append(Ref.parse(dest))
    kept_digests = _lock_digests(keep, target, mapping)
    drop_digests = _lock_digests(drop, target, mapping)
    for name, found in _lock_digests(drop, target, mapping, only=set(spared)).items():
        for digest, dest in found.items():            # what the cluster may still run is kept, not dropped
            kept_digests[name].setdefault(digest, f"in use: {dest}")
            drop_digests.get(name, {}).pop(digest, None)
    for name in sorted(by_repo):
        repo = _Repo(client, Ref.parse(name))
        dropped_tags = {r.tag for r in by_repo[name] if str(r) not in kept_dests and r.tag}
        protected_roots = {d: f"tagged {name}:{t}" for t, d in repo.tags.items()
                           if t not in dropped_tags and not ARTIFACT_TAG.match(t)}
        for digest, why in kept_digests.get(name, {}).items():
            if repo.load(digest):
                protected_roots.setdefault(digest, why)
        drop_roots = {d: f"{name}:{t}" for t, d in repo.tags.items() if t in dropped_tags}
        for digest, why in drop_digests.get(name, {}).items():
            if digest not in drop_roots and repo.load(digest):
                drop_roots[digest] = why
        for ref in by_repo[name]:
            if str(ref) not in kept_dests and ref.tag not in repo.tags:
                result.absent.append(str(ref))
        protected = repo.closure(protected_roots)
        doomed = repo.closure(drop_roots)
        for digest in doomed:
            if digest in protected:
                result.kept.append(Item(name, digest, repo.kinds.get(digest, "manifest"),
                                        f"needed: {protected[digest]}"))
        gone = [d for d in doomed if d not in protected]
        order = {"index": 0, "manifest": 1, "artifact": 2}
        gone.sort(key=lambda d: (order.get(repo.kinds.get(d, "manifest"), 1), d))
        result.manifests += [Item(name, d, repo.kinds.get(d, "manifest"), doomed[d]) for d in gone]
        for tag, digest in sorted(repo.tags.items()):
            match = ARTIFACT_TAG.match(tag)
            if tag in dropped_tags and digest in protected:
                # the manifest stays for a kept image, and distribution 2.x deletes a tag only with its
                # manifest: listing it would make the dry run promise what --apply cannot do
                result.kept.append(Item(name, tag, "tag", f"points at a manifest a kept image needs: "
                                                          f"{protected[digest]}"))
            elif tag in dropped_tags or (match and f"sha256:{match.group(1)}" in gone) or \
                    (match and digest in gone):
                result.tags.append(Item(name, tag, "tag", doomed.get(digest, f"{name}:{tag}")))
    result.kept.sort(key=lambda i: (i.repository, i.reference))
    return result


def _lock_digests(sources: list[Source], target: RegistryTarget, mapping: str | None,
                  only: set[str] | None = None) -> dict[str, dict[str, str]]:
    """repository name -> {digest: destination}: what locks (and resolved plans) say was pushed
    (``only``: just these destinations)."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for src in sources:
        dests = _destinations(src, target, mapping)
        if only is not None:
            dests = {s: d for s, d in dests.items() if str(d) in only}
        digests = {i.source: i.digest for i in src.plan.images if i.digest}
        if src.lock:
            digests.update({i.source: i.digest for i in src.lock.images})
        digests.update({f"chart:{c.name}:{c.tag}": c.digest for c in _charts(src)})
        for source, digest in digests.items():
            if source in dests:
                out[dests[source].name][digest] = str(dests[source])
        by_subject = {d: dests[s] for s, d in digests.items() if s in dests}
        for art in _artifacts(src):
            dest = by_subject.get(art.subject)
            if dest is not None:
                out[dest.name][art.digest] = f"artifact of {dest}"
    return out


def apply_prune(client: RegistryClient, result: PruneResult) -> PruneResult:
    """Delete what plan_prune listed: tags first, then manifests by digest (indexes before their children)."""
    tag_deletes = True
    for item in result.tags:
        ref = Ref.parse(item.repository)
        try:
            if client.delete_manifest(ref.registry, ref.repository, item.reference):
                result.deleted_tags += 1
        except UnsupportedError:
            # distribution 2.x deletes no tag on its own: the tag goes with its manifest below
            tag_deletes = False
            break
    for n, item in enumerate(result.manifests):
        ref = Ref.parse(item.repository)
        try:
            if client.delete_manifest(ref.registry, ref.repository, item.reference):
                result.deleted_manifests += 1
        except UnsupportedError as exc:
            raise OperationError(
                f"{result.registry} refuses deletes ({str(exc).split(': ', 1)[-1]}): enable them "
                "(docker-registry: storage.delete.enabled: true; Harbor: a robot or user with delete "
                f"permission) and run prune --apply again; {n} of {len(result.manifests)} manifests deleted"
            ) from None
    if not tag_deletes:
        gone = {(m.repository, m.reference) for m in result.manifests}
        still = []
        for item in result.tags:
            ref = Ref.parse(item.repository)
            digest = client.manifest_digest(ref.with_tag(item.reference))
            if digest is None:
                result.deleted_tags += 1
            elif (item.repository, digest) not in gone:
                still.append(f"{item.repository}:{item.reference}")
        if still:
            result.notes.append("the registry deletes no tag on its own and these point at manifests a kept "
                                "image needs, so they stay: " + ", ".join(still))
    result.applied = True
    return result


def render(result: PruneResult, fmt: str) -> str:
    import json

    if fmt == "json":
        return json.dumps(result.to_dict(), indent=2) + "\n"
    lines = []
    verb = "deleted" if result.applied else "would delete"
    for item in result.tags:
        lines.append(f"  tag       {item.repository}:{item.reference}")
    for item in result.manifests:
        lines.append(f"  {item.kind:<9} {item.repository}@{item.reference}  ({item.image})")
    for item in result.kept:
        sep = ":" if item.kind == "tag" else "@"
        lines.append(f"  keep      {item.repository}{sep}{item.reference}  ({item.image})")
    for dest in result.overlap:
        lines.append(f"  keep      {dest}  (also named by a --keep)")
    for dest in result.absent:
        lines.append(f"  absent    {dest}  (not in the registry)")
    for dest, why in result.spared:
        lines.append(f"  keep      {dest}  ({why})")
    if result.applied:
        head = (f"{verb} {result.deleted_tags} tags and {result.deleted_manifests} manifests in "
                f"{result.registry}")
    else:
        head = (f"{verb} {len(result.tags)} tags and {len(result.manifests)} manifests in {result.registry} "
                "(dry run: nothing deleted; --apply deletes)")
    tail = [f"note: {n}" for n in result.notes]
    if result.applied:
        tail += list(GC_STEPS)
    return "\n".join([head, *lines, *tail]) + "\n"
