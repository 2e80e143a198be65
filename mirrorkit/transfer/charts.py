"""Helm charts in a bundle: ``pull-bundle --chart FILE.tgz``, pushed as Helm OCI artifacts.

A chart travels as the three blobs ``helm push`` would produce: the config
(``application/vnd.cncf.helm.config.v1+json``, the Chart.yaml metadata as
JSON), one layer (``application/vnd.cncf.helm.chart.content.v1.tar+gzip``, the
``.tgz`` byte for byte) and an OCI image manifest naming both. mirrorkit builds
the manifest itself, deterministically (no timestamp), so its digest is known
when the bundle is written and goes into the lock; push-bundle uploads the
exact bytes to ``REG/PREFIX/charts/NAME:TAG`` with mirrorkit's own registry
client (auth, retries, TLS policy), so that ``helm install
oci://REG/PREFIX/charts/NAME --version VERSION`` works offline. As Helm does,
a ``+`` in the version becomes ``_`` in the tag.

Archives are read in memory, never unpacked: a member outside the chart's
directory, a link or a device, an oversized archive or one without a
Chart.yaml is refused with a one-line error naming the file. The lock's chart
entries are untrusted on the air-gapped side and are checked here before a
byte is pushed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirrorkit.chartfile import CHART_NAME as _NAME
from mirrorkit.chartfile import CHART_SEMVER as _SEMVER
from mirrorkit.chartfile import CHART_TAG as _TAG
from mirrorkit.chartfile import MAX_CHART, oci_tag, read_chart_yaml
from mirrorkit.chartref import FILE, OCI
from mirrorkit.destinations import CHARTS_DIR, chart_repository
from mirrorkit.errors import InputError, NotFoundError
from mirrorkit.lock import Lock, LockBlob, LockChart, lock_charts  # noqa: F401 - transfer.push reads lock_charts here
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.layout import BlobStore
from mirrorkit.oci.manifests import OCI_MANIFEST, sha256_digest
from mirrorkit.refs import Ref, RegistryTarget
from mirrorkit.transfer.engine import CopyReport

MANIFEST_MEDIA_TYPE = OCI_MANIFEST
CONFIG_MEDIA_TYPE = "application/vnd.cncf.helm.config.v1+json"
CHART_MEDIA_TYPE = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
PROV_MEDIA_TYPE = "application/vnd.cncf.helm.chart.provenance.v1.prov"   # what `helm push` adds for a .prov
MAX_PROV = 1 << 20
TITLE = "org.opencontainers.image.title"
MAX_MANIFEST = 64 * 1024

# Helm's chart.Metadata fields, in its JSON order; anything else in Chart.yaml is not part of the config
_META_FIELDS = ("name", "home", "sources", "version", "description", "keywords", "maintainers", "icon",
                "apiVersion", "condition", "tags", "appVersion", "deprecated", "annotations", "kubeVersion",
                "dependencies", "type")


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=str).encode()


@dataclass(frozen=True)
class HelmChart:
    """One chart as a Helm OCI artifact: the exact bytes of its three blobs."""

    name: str
    version: str
    app_version: str
    source: str       # the file (or oci:// reference, or chart URL) it came from, for messages and the lock
    archive: bytes    # the .tgz, unchanged: the artifact's chart layer
    config: bytes
    manifest: bytes
    provenance: bytes | None = None   # the Helm provenance file (.prov), as a second layer, when there is one
    kind: str = FILE                   # chartref.FILE, OCI or REPO: where it came from

    @property
    def provenance_digest(self) -> str | None:
        return sha256_digest(self.provenance) if self.provenance is not None else None

    @property
    def tag(self) -> str:
        return oci_tag(self.version)

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha256_digest(self.config)

    @property
    def layer_digest(self) -> str:
        return sha256_digest(self.archive)

    def blobs(self) -> list[tuple[str, bytes]]:
        out = [(self.digest, self.manifest), (self.config_digest, self.config), (self.layer_digest, self.archive)]
        if self.provenance is not None:
            out.append((sha256_digest(self.provenance), self.provenance))
        return out


# --------------------------------------------------------------------------- reading a chart


def chart_metadata(meta: dict[str, Any], where: str) -> dict[str, Any]:
    """The config document: Helm's metadata fields in Helm's order, empty ones left out; checked as Helm would."""
    name, version = meta.get("name"), meta.get("version")
    if not isinstance(name, str) or not name:
        raise InputError(f"{where}: Chart.yaml has no name")
    if not _NAME.match(name) or len(name) > 128:
        raise InputError(f"{where}: chart name {name!r} cannot be an OCI repository name "
                         "(lowercase letters, digits and . _ - separators only)")
    if not isinstance(version, str) or not _SEMVER.match(version):
        raise InputError(f"{where}: chart version {version!r} is not a SemVer version (quote it in Chart.yaml)")
    if not _TAG.match(oci_tag(version)):
        raise InputError(f"{where}: chart version {version!r} cannot be an OCI tag")
    api = meta.get("apiVersion")
    if api not in ("v1", "v2"):
        raise InputError(f"{where}: Chart.yaml apiVersion must be v1 or v2, not {api!r}")
    out: dict[str, Any] = {}
    for key in _META_FIELDS:
        value = meta.get(key)
        if key == "appVersion" and isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)  # Helm accepts an unquoted number here
        if value in (None, "", [], {}, False):
            continue
        out[key] = value
    return out


def build_chart(archive: bytes, source: str, provenance: bytes | None = None, kind: str = FILE) -> HelmChart:
    """The Helm OCI artifact of a chart archive; the same bytes always give the same manifest digest.

    A provenance file becomes a second layer, as ``helm push`` makes it, so ``helm pull --verify``
    finds it at the mirror.
    """
    meta = chart_metadata(read_chart_yaml(archive, source), source)
    config = _json(meta)
    annotations = {"org.opencontainers.image.title": meta["name"],
                   "org.opencontainers.image.version": meta["version"]}
    for key, field_name in (("org.opencontainers.image.description", "description"),
                            ("org.opencontainers.image.url", "home")):
        if isinstance(meta.get(field_name), str):
            annotations[key] = meta[field_name]
    sources = meta.get("sources")
    if isinstance(sources, list) and sources and isinstance(sources[0], str):
        annotations["org.opencontainers.image.source"] = sources[0]
    layers = [{"mediaType": CHART_MEDIA_TYPE, "digest": sha256_digest(archive), "size": len(archive),
               "annotations": {TITLE: f"{meta['name']}-{meta['version']}.tgz"}}]
    if provenance is not None:
        layers.append({"mediaType": PROV_MEDIA_TYPE, "digest": sha256_digest(provenance), "size": len(provenance),
                       "annotations": {TITLE: f"{meta['name']}-{meta['version']}.tgz.prov"}})
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": sha256_digest(config), "size": len(config)},
        "layers": layers,
        "annotations": dict(sorted(annotations.items())),
    }
    app_version = meta.get("appVersion")
    return HelmChart(name=meta["name"], version=meta["version"],
                     app_version=app_version if isinstance(app_version, str) else "",
                     source=source, archive=archive, config=config, manifest=_json(manifest),
                     provenance=provenance, kind=kind)


def _layers(doc: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A Helm chart manifest's chart layer and its provenance layer (if any); anything else is refused."""
    layers = doc.get("layers")
    if not isinstance(layers, list) or not 1 <= len(layers) <= 2 or not all(isinstance(x, dict) for x in layers):
        raise InputError(f"{where}: a Helm chart has one chart layer (and at most a provenance layer)")
    chart = [x for x in layers if x.get("mediaType") == CHART_MEDIA_TYPE]
    prov = [x for x in layers if x.get("mediaType") == PROV_MEDIA_TYPE]
    if len(chart) != 1 or len(chart) + len(prov) != len(layers):
        raise InputError(f"{where}: not a Helm chart: expected one {CHART_MEDIA_TYPE} layer "
                         f"(and at most one {PROV_MEDIA_TYPE})")
    return chart[0], prov[0] if prov else None


def chart_from_oci(manifest: bytes, read: Any, source: str, name: str, tag: str) -> HelmChart:
    """A chart fetched from a registry, kept byte for byte (its signatures cover these exact bytes).

    ``read(digest, limit)`` returns a blob's verified bytes. The manifest must be a Helm
    chart, its config must name the chart and tag asked for, and its archive must pass
    the guarded reader, as a chart file would.
    """
    where = f"{source} ({sha256_digest(manifest)})"
    try:
        doc = json.loads(manifest)
    except (ValueError, RecursionError):
        raise InputError(f"{where}: manifest is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2 \
            or doc.get("mediaType", MANIFEST_MEDIA_TYPE) != MANIFEST_MEDIA_TYPE:
        raise InputError(f"{where}: not a Helm chart (expected an OCI image manifest, got {doc.get('mediaType')!r})"
                         if isinstance(doc, dict) else f"{where}: not a Helm chart")
    config_desc = doc.get("config")
    if not isinstance(config_desc, dict) or config_desc.get("mediaType") != CONFIG_MEDIA_TYPE:
        raise InputError(f"{where}: not a Helm chart (its config is not {CONFIG_MEDIA_TYPE})")
    chart_desc, prov_desc = _layers(doc, where)
    config = read(str(config_desc.get("digest")), MAX_MANIFEST)
    archive = read(str(chart_desc.get("digest")), MAX_CHART)
    provenance = read(str(prov_desc.get("digest")), MAX_PROV) if prov_desc else None
    try:
        meta = json.loads(config)
    except (ValueError, RecursionError):
        raise InputError(f"{where}: chart config is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("name") != name or not isinstance(meta.get("version"), str) \
            or oci_tag(meta["version"]) != tag:
        raise InputError(f"{where}: the registry holds chart {meta.get('name') if isinstance(meta, dict) else '?'!r} "
                         f"version {meta.get('version') if isinstance(meta, dict) else '?'!r}, not {name}:{tag}")
    archived = chart_metadata(read_chart_yaml(archive, where), where)
    if archived["name"] != name or archived["version"] != meta["version"]:
        raise InputError(f"{where}: the archive's Chart.yaml is {archived['name']} {archived['version']}, "
                         f"the config says {name} {meta['version']}")
    app_version = meta.get("appVersion")
    return HelmChart(name=name, version=meta["version"], app_version=app_version if isinstance(app_version, str)
                     else "", source=source, archive=archive, config=config, manifest=manifest,
                     provenance=provenance, kind=OCI)


def load_chart(path: str | Path) -> HelmChart:
    """Read ``FILE.tgz`` (never unpacked) into its Helm OCI artifact."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_CHART:
            raise InputError(f"{p}: chart archive is {size} bytes, larger than the {MAX_CHART} allowed")
        if not p.is_file():
            raise InputError(f"{p}: not a file (give a packaged chart, FILE.tgz)")
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{p}: chart not found") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read chart: {exc.strerror or exc}") from None
    return build_chart(data, str(p))


def load_charts(paths: list[Path]) -> list[HelmChart]:
    """Every ``--chart`` file; the same chart twice is kept once, two charts for one name:tag are refused."""
    return unique_charts([load_chart(path) for path in paths])


def unique_charts(found: list[HelmChart]) -> list[HelmChart]:
    """The same chart twice is kept once; two different charts for one name:tag are refused."""
    out: dict[tuple[str, str], HelmChart] = {}
    for chart in found:
        other = out.get((chart.name, chart.tag))
        if other is not None and other.digest != chart.digest:
            raise InputError(f"{chart.source} and {other.source} are both chart {chart.name}:{chart.tag} with "
                             "different content")
        out.setdefault((chart.name, chart.tag), chart)
    return list(out.values())


# --------------------------------------------------------------------------- pull-bundle side


def lock_entries(charts: list[HelmChart], registry: str | None) -> list[dict[str, Any]]:
    """The lock's ``charts`` list: what each chart is, digest for digest, and where it goes."""
    target = RegistryTarget.parse(registry) if registry else None
    out = []
    for c in charts:
        entry: dict[str, Any] = {
            "name": c.name, "version": c.version, "app_version": c.app_version, "tag": c.tag,
            "source": Path(c.source).name if c.kind == FILE else c.source,
            "repository": chart_repository(target, c.name) if target else None,
            "digest": c.digest, "media_type": MANIFEST_MEDIA_TYPE,
            "config": c.config_digest, "layer": c.layer_digest,
            "blobs": [c.config_digest, c.layer_digest]}
        # newer, optional fields: absent for a chart file, so older locks and readers stay as they were
        if c.kind != FILE:
            entry["kind"] = c.kind
        if c.provenance_digest:
            entry["provenance"] = c.provenance_digest
            entry["blobs"].append(c.provenance_digest)
        out.append(entry)
    return out


def add_to_bundle(store: BlobStore, lock: Lock, charts: list[HelmChart], registry: str | None) -> int:
    """Put the charts' blobs into the store, the lock's blobs and ``charts``, and the layout's index.json.

    Returns the bytes added. Chart blobs are always carried (never left out of a
    differential bundle): they are small, and push-bundle skips what the
    registry already holds.
    """
    carried = {b.digest for b in lock.blobs}
    added = 0
    for chart in charts:
        for digest, data in chart.blobs():
            store.add_bytes(data)
            if digest not in carried:
                carried.add(digest)
                lock.blobs.append(LockBlob(digest, len(data)))
                added += len(data)
    lock.omitted = [b for b in lock.omitted if b.digest not in carried]
    lock.blobs.sort(key=lambda b: b.digest)
    lock.charts = lock_entries(charts, registry)
    index_path = store.root / "index.json"
    try:
        index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    except ValueError:
        index = {}
    entries = [e for e in index.get("manifests", []) if isinstance(e, dict)]
    for chart, entry in zip(charts, lock.charts, strict=True):
        entries.append({"mediaType": MANIFEST_MEDIA_TYPE, "digest": chart.digest, "size": len(chart.manifest),
                        "annotations": {"org.opencontainers.image.ref.name": f"{CHARTS_DIR}/{chart.name}:{chart.tag}",
                                        "dev.mirrorkit.destination": entry["repository"] or ""}})
    store.write_index(entries)
    return added


# --------------------------------------------------------------------------- push-bundle side


@dataclass
class ChartPushResult:
    pushed: int = 0
    skipped: int = 0
    transfer: CopyReport = field(default_factory=CopyReport)     # the charts' engine run
    verified: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def destination(chart: LockChart, registry: RegistryTarget | None) -> Ref:
    """``--registry`` wins over the repository recorded at pull time, as for images."""
    if registry is not None:
        return Ref(registry.host, registry.join(f"{CHARTS_DIR}/{chart.name}"), chart.tag)
    if not chart.repository:
        raise InputError(f"chart {chart.name} has no destination in the bundle: give --registry HOST[:PORT][/PREFIX]")
    return Ref.parse(f"{chart.repository}:{chart.tag}")


def pending(client: RegistryClient, charts: list[LockChart], registry: RegistryTarget | None) -> list[LockChart]:
    """Charts the registry does not hold digest for digest at their tag."""
    return [c for c in charts if client.manifest_digest(destination(c, registry)) != c.digest]


def check_manifest(chart: LockChart, data: bytes, sizes: dict[str, int]) -> None:
    """A carried chart manifest must be the Helm artifact the lock describes, before any of it is pushed."""
    where = f"chart {chart.name}:{chart.tag} manifest {chart.digest}"
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise InputError(f"{where}: not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise InputError(f"{where}: not an OCI image manifest")
    if doc.get("mediaType", MANIFEST_MEDIA_TYPE) != MANIFEST_MEDIA_TYPE:
        raise InputError(f"{where}: media type {doc.get('mediaType')!r} is not {MANIFEST_MEDIA_TYPE}")
    config = doc.get("config")
    chart_desc, prov_desc = _layers(doc, where)
    if (prov_desc is None) != (chart.provenance is None):
        raise InputError(f"{where}: its provenance layer is not what the lock says")
    checks = [(config, CONFIG_MEDIA_TYPE, chart.config), (chart_desc, CHART_MEDIA_TYPE, chart.layer)]
    if prov_desc is not None and chart.provenance is not None:
        checks.append((prov_desc, PROV_MEDIA_TYPE, chart.provenance))
    for desc, media, digest in checks:
        if not isinstance(desc, dict) or desc.get("mediaType") != media:
            raise InputError(f"{where}: expected a {media} descriptor")
        if desc.get("digest") != digest or desc.get("size") != sizes[digest]:
            raise InputError(f"{where}: descriptor {desc.get('digest')!r} ({desc.get('size')!r} bytes) is not "
                             f"{digest} ({sizes[digest]} bytes) as the lock says")


def read_checked(reader: Any, charts: list[LockChart]) -> dict[str, bytes]:
    """Every pending chart's blobs read from the bundle (hash checked) and its manifest checked; nothing pushed."""
    sizes = reader.lock.blob_sizes()
    blobs: dict[str, bytes] = {}
    for chart in charts:
        for digest in (chart.digest, chart.config, chart.layer, *([chart.provenance] if chart.provenance else [])):
            if digest not in blobs:
                limit = MAX_MANIFEST if digest == chart.digest else MAX_CHART
                blobs[digest] = reader.read_small(digest, limit=limit)
        check_manifest(chart, blobs[chart.digest], sizes)
        config = blobs[chart.config]
        try:
            meta = json.loads(config)
        except (ValueError, RecursionError):
            raise InputError(f"chart {chart.name}:{chart.tag}: config {chart.config} is not valid JSON") from None
        if not isinstance(meta, dict) or meta.get("name") != chart.name or not isinstance(meta.get("version"), str) \
                or oci_tag(meta["version"]) != chart.tag:
            raise InputError(f"chart {chart.name}:{chart.tag}: config {chart.config} names another chart")
    return blobs


def push_charts(client: RegistryClient, charts: list[LockChart], blobs: dict[str, bytes],
                registry: RegistryTarget | None) -> ChartPushResult:
    """Through the copy engine: config and layer where missing, then the manifest (exact bytes) at its tag."""
    import tempfile

    from mirrorkit.transfer.engine import Engine, Root
    from mirrorkit.transfer.sinks import Holders, RegistrySink
    from mirrorkit.transfer.sources import MemorySource

    result = ChartPushResult()
    if not charts:
        return result
    source = MemorySource(blobs, "bundle charts")
    holders = Holders()
    with tempfile.TemporaryDirectory(prefix="mirrorkit-charts-") as scratch:
        roots = []
        for chart in charts:
            dest = destination(chart, registry)
            sink = RegistrySink(client, dest, holders, Path(scratch))
            roots.append(Root(source, sink, chart.digest, tags=(chart.tag,), digest=chart.digest,
                              label=f"chart {chart.name}:{chart.tag}"))
        engine = Engine(jobs=2, policy=client.retry)
        engine.copy(roots)
    result.pushed = len(charts)
    result.transfer = engine.report
    return result


def verify_charts(client: RegistryClient, charts: list[LockChart], registry: RegistryTarget | None,
                  result: ChartPushResult) -> None:
    """Fetch each chart's manifest by tag and compare digests; differences become problems."""
    for chart in charts:
        dest = destination(chart, registry)
        try:
            got = client.get_manifest(dest)
        except NotFoundError:
            result.problems.append(f"{dest}: chart not in the registry")
            continue
        if got.digest != chart.digest:
            result.problems.append(f"{dest}: registry has {got.digest}, expected {chart.digest}")
        else:
            result.verified.append(f"{dest}@{got.digest}")


def push_chart_artifacts(client: RegistryClient, source: Any, charts: list[LockChart], carried: list[Any],
                         registry: RegistryTarget | None) -> tuple[int, int]:
    """The signatures and referrers of charts fetched from a registry, into each chart's destination
    repository (where ``cosign verify`` looks), through the engine; returns (manifests, blobs) written."""
    import tempfile

    from mirrorkit.transfer.artifacts import artifact_root, check_graphs
    from mirrorkit.transfer.engine import Engine
    from mirrorkit.transfer.sinks import Holders, RegistrySink

    where = {c.source: destination(c, registry) for c in charts if c.kind == OCI}
    if not carried:
        return 0, 0
    holders = Holders()
    with tempfile.TemporaryDirectory(prefix="mirrorkit-charts-") as scratch:
        sinks: dict[str, RegistrySink] = {}
        roots = []
        for art in carried:
            dest = where.get(art.source)
            if dest is None:
                raise InputError(f"artifact {art.digest} belongs to {art.source}, which the lock does not list")
            sink = sinks.setdefault(dest.name, RegistrySink(client, dest, holders, Path(scratch)))
            roots.append(artifact_root(source, sink, art, art.source))
        engine = Engine(jobs=2, policy=client.retry)
        graphs = engine.walk(roots)
        check_graphs(graphs)
        engine.copy_blobs(graphs)
        engine.put_manifests(graphs)
        check_graphs(graphs)
    return len(graphs), engine.report.blobs_copied
