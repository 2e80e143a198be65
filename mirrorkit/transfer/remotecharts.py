"""Charts from where users get them: an OCI registry (``oci://``) or an HTTP Helm repository.

- ``oci://REGISTRY/REPO/CHART:VERSION`` is one more root of the copy engine (resumed,
  retried, hashed like any image), kept byte for byte, so the cosign signature NVIDIA
  made for its digest (and any referrer) still holds; those travel beside it as an
  image's do (:mod:`mirrorkit.transfer.artifacts`), and ``--verify-key`` judges them
  before anything is written.
- ``REPO_URL/CHART:VERSION``: ``REPO_URL/index.yaml`` names the version's archive and
  its sha256; the archive is downloaded (resumed) and refused unless it hashes to that
  digest; its provenance file (``URL.prov``) travels when the repository has one, and
  becomes the chart artifact's provenance layer, as ``helm push`` makes it.

Both give the same :class:`~mirrorkit.transfer.charts.HelmChart` a chart file gives, so the
bundle, the lock and push-bundle treat every chart alike.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from mirrorkit.chartfile import MAX_CHART, oci_tag
from mirrorkit.chartref import OCI, REPO, ChartRef
from mirrorkit.destinations import chart_repository
from mirrorkit.errors import AuthError, InputError, NotFoundError, OperationError
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.httpfile import HttpFiles, redact
from mirrorkit.oci.layout import BlobStore
from mirrorkit.oci.manifests import OCI_MANIFEST
from mirrorkit.refs import RegistryTarget
from mirrorkit.transfer.artifacts import Subject
from mirrorkit.transfer.charts import MAX_PROV, HelmChart, build_chart, chart_from_oci
from mirrorkit.transfer.engine import Engine, Graph, Root
from mirrorkit.transfer.sinks import StoreSink
from mirrorkit.transfer.sources import RegistrySource

MAX_INDEX = 256 << 20       # NVIDIA's helm.ngc.nvidia.com index.yaml is a few MB; a hostile one is capped


# --------------------------------------------------------------------------- HTTP Helm repositories


def _index_entry(index: Any, spec: ChartRef, where: str) -> dict[str, Any]:
    """The index entry for the chart's version (``v1.2.3`` and ``1.2.3`` name the same release)."""
    if not isinstance(index, dict) or not isinstance(index.get("entries"), dict):
        raise OperationError(f"{where}: not a Helm repository index (no 'entries')")
    versions = index["entries"].get(spec.name)
    if not isinstance(versions, list) or not versions:
        raise OperationError(f"{where}: the repository has no chart named {spec.name}")
    wanted = spec.version.removeprefix("v")
    found = [v for v in versions if isinstance(v, dict) and str(v.get("version", "")).removeprefix("v") == wanted]
    exact = [v for v in found if str(v.get("version")) == spec.version]
    if not found:
        listed = [str(v.get("version")) for v in versions[:5] if isinstance(v, dict)]
        raise OperationError(f"{where}: chart {spec.name} has no version {spec.version} "
                             f"(listed first: {', '.join(listed)})")
    return (exact or found)[0]


def _archive_url(entry: dict[str, Any], spec: ChartRef, where: str) -> str:
    urls = entry.get("urls")
    if not isinstance(urls, list) or not urls or not isinstance(urls[0], str) or not urls[0].strip():
        raise OperationError(f"{where}: {spec.name} {spec.version} has no archive URL")
    url = urllib.parse.urljoin(spec.repo_url + "/", urls[0].strip())
    if not url.startswith(("https://", "http://")):
        raise OperationError(f"{where}: {spec.name} {spec.version}: archive URL {urls[0]!r} is not http(s)")
    if spec.repo_url.startswith("https://") and url.startswith("http://"):
        raise OperationError(f"{where}: {spec.name} {spec.version}: the index sends the archive over plain HTTP "
                             f"({redact(url)}); refusing it")
    return url


def fetch_repo_chart(files: HttpFiles, spec: ChartRef, work: Path) -> HelmChart:
    """Read the index, download the archive (resumed), check its digest, fetch its ``.prov`` if any."""
    where = redact(f"{spec.repo_url}/index.yaml")
    raw = files.fetch_bytes(f"{spec.repo_url}/index.yaml", MAX_INDEX)
    try:
        index = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise OperationError(f"{where}:{line} not a readable Helm repository index") from None
    entry = _index_entry(index, spec, where)
    digest = entry.get("digest")
    if not isinstance(digest, str) or len(digest.removeprefix("sha256:")) != 64:
        raise OperationError(f"{where}: {spec.name} {spec.version} has no sha256 digest in the index; "
                             "refusing an archive that cannot be checked")
    url = _archive_url(entry, spec, where)
    dest = work / "charts" / f"{spec.name}-{oci_tag(spec.version)}.tgz"
    files.download(url, dest, sha256=digest, limit=MAX_CHART)   # a mismatch is refused there, in one line
    archive = dest.read_bytes()
    try:
        provenance: bytes | None = files.fetch_bytes(url + ".prov", MAX_PROV)
    except (NotFoundError, AuthError):   # no .prov (object stores answer 403 for a missing object)
        provenance = None
    chart = build_chart(archive, redact(url), provenance, kind=REPO)
    if chart.name != spec.name or chart.version.removeprefix("v") != spec.version.removeprefix("v"):
        raise OperationError(f"{redact(url)}: the archive is chart {chart.name} {chart.version}, the index says "
                             f"{spec.name} {spec.version}")
    return chart


# --------------------------------------------------------------------------- OCI registries


def oci_roots(client: RegistryClient, store: BlobStore, specs: list[ChartRef]) -> list[Root]:
    sink = StoreSink(store)
    roots = []
    for spec in specs:
        assert spec.ref is not None
        # artifact=True: a chart is always carried whole (never left out of a differential bundle), and not
        # counted as an image
        roots.append(Root(RegistrySource(client, spec.ref), sink, spec.ref.reference, label=spec.text,
                          artifact=True))
    return roots


def copy_oci_charts(engine: Engine, client: RegistryClient, store: BlobStore,
                    specs: list[ChartRef]) -> tuple[list[HelmChart], list[Graph]]:
    """Each ``oci://`` chart through the engine into the store, then read back and checked as a Helm chart."""
    if not specs:
        return [], []
    graphs = engine.walk(oci_roots(client, store, specs))
    for g, spec in zip(graphs, specs, strict=True):
        if g.error:
            raise OperationError(f"{spec.text}: {g.error}")
        if len(g.nodes) != 1 or g.top.media_type not in (OCI_MANIFEST, ""):
            raise InputError(f"{spec.text}: not a Helm chart (the registry holds {g.top.media_type or 'a manifest'} "
                             f"{g.digest} there)")
        for digest, size in g.blobs:
            if size > MAX_CHART:
                raise InputError(f"{spec.text}: blob {digest} of {size} bytes is larger than a chart may be")
    engine.copy_blobs(graphs)
    engine.put_manifests(graphs)
    failed = [f"{g.root.label}: {g.error}" for g in graphs if g.error]
    if failed:
        raise OperationError("; ".join(failed))
    out = []
    for g, spec in zip(graphs, specs, strict=True):
        assert spec.ref is not None

        def read(digest: str, limit: int, g: Graph = g) -> bytes:
            if all(d != digest for d, _ in g.blobs) or store.size(digest) > limit:
                raise InputError(f"{g.root.label}: blob {digest} is not one the manifest names within the limits")
            return store.read(digest)

        out.append(chart_from_oci(g.top.data, read, spec.text, spec.name, spec.ref.reference))
    return out, graphs


def chart_subject(chart: HelmChart, spec: ChartRef, registry: str | None) -> Subject:
    """A chart from a registry as signatures see it: its own digest, signed and carried."""
    assert spec.ref is not None
    target = RegistryTarget.parse(registry) if registry else None
    dest = chart_repository(target, chart.name) if target else None
    return Subject(spec.text, dest, spec.ref, (chart.digest,), (chart.digest,))


def fetch_chart_archive(spec: ChartRef, client: RegistryClient, files: HttpFiles, work: Path) -> bytes:
    """The chart's ``.tgz`` alone (``plan --chart``): from a registry (digest checked by the client) or a
    Helm repository (digest checked against its index)."""
    if spec.kind == REPO:
        return fetch_repo_chart(files, spec, work).archive
    ref = spec.ref
    if spec.kind != OCI or ref is None:
        raise InputError(f"--chart {spec.text}: not a remote chart")
    top = client.get_manifest(ref)

    def read(digest: str, limit: int) -> bytes:
        return client.get_small_blob(ref, digest, limit)

    return chart_from_oci(top.data, read, spec.text, spec.name, ref.reference).archive


__all__ = ["chart_subject", "copy_oci_charts", "fetch_chart_archive", "fetch_repo_chart"]
