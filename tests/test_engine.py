"""The engine copies any manifest-graph root, whatever its media type, on real registries.

The signing work hands the engine artifacts to carry beside each image: cosign
signature manifests (tagged ``sha256-<hex>.sig``, small non-image layers) and
OCI referrers (a ``subject`` and an ``artifactType``, no tag). Here the engine
copies such roots registry to registry and into a blob store and back, and
skopeo reads both sides.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from kit.faultproxy import Fault, FaultProxy
from kit.images import Blob, make_image, make_layer
from kit.push import push_blob, push_image, push_manifest
from kit.registryd import RegistryServer

from mirrorkit.errors import RegistryError
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.credentials import CredentialStore
from mirrorkit.oci.layout import BlobStore
from mirrorkit.oci.retry import RetryPolicy
from mirrorkit.oci.transport import Endpoints
from mirrorkit.refs import Ref
from mirrorkit.transfer.engine import Engine, Root
from mirrorkit.transfer.sinks import Holders, RegistrySink, StoreSink
from mirrorkit.transfer.sources import LayoutSource, RegistrySource

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def blob(data: bytes, media_type: str) -> Blob:
    return Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), media_type, data)


def manifest(config: Blob, layers: list[Blob], **extra: object) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
           "layers": [{"mediaType": b.media_type, "digest": b.digest, "size": b.size} for b in layers], **extra}
    return json.dumps(doc, separators=(",", ":")).encode()


def seed_artifacts(reg: RegistryServer, repo: str, subject: str, subject_size: int) -> list[tuple[str, str | None]]:
    """A cosign-style signature (tagged) and an OCI referrer (untagged) of ``subject``."""
    payload = blob(json.dumps({"critical": {"identity": {"docker-reference": f"nvcr.io/{repo}"},
                                            "image": {"docker-manifest-digest": subject}}}).encode(),
                   "application/vnd.dev.cosign.simplesigning.v1+json")
    sig_config = blob(b"{}", "application/vnd.oci.image.config.v1+json")
    empty = blob(b"{}", "application/vnd.oci.empty.v1+json")
    sbom = blob(b'{"spdxVersion":"SPDX-2.3"}', "application/spdx+json")
    for b in (payload, sig_config, empty, sbom):
        push_blob(reg.url, repo, b)
    sig = manifest(sig_config, [payload])
    sig_doc = json.loads(sig)
    sig_doc["layers"][0]["annotations"] = {"dev.cosignproject.cosign/signature": "MEUCIQ..."}
    sig = json.dumps(sig_doc, separators=(",", ":")).encode()
    tag = f"sha256-{subject[7:]}.sig"
    push_manifest(reg.url, repo, tag, sig, OCI_MANIFEST)
    ref = manifest(empty, [sbom], artifactType="application/spdx+json",
                   subject={"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size})
    digest = "sha256:" + hashlib.sha256(ref).hexdigest()
    push_manifest(reg.url, repo, digest, ref, OCI_MANIFEST)
    return [("sha256:" + hashlib.sha256(sig).hexdigest(), tag), (digest, None)]


def raw(reg: RegistryServer, ref: str) -> bytes:
    res = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reg.host}/{ref}"],
                         capture_output=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout


def test_signature_and_referrer_roots_are_copied_exactly(registry_factory, tmp_path: Path) -> None:
    up, down, other = registry_factory(), registry_factory(), registry_factory()
    image = make_image("signed", [make_layer("signed", 8 << 10)])
    push_image(up.url, "nvidia/signed", "v1", image)
    artifacts = seed_artifacts(up, "nvidia/signed", image.digest, len(image.manifest))
    client = RegistryClient(Endpoints(insecure={up.host, down.host, other.host}),
                            CredentialStore(explicit={}, files=[]), retry=RetryPolicy(backoff=0.05))
    with client:
        src = RegistrySource(client, Ref.parse(f"{up.host}/nvidia/signed:v1"))
        sink = RegistrySink(client, Ref.parse(f"{down.host}/kse/nvidia/signed:v1"), Holders(), tmp_path / "spool")
        roots = [Root(src, sink, image.digest, tags=("v1",), digest=image.digest)]
        roots += [Root(src, sink, digest, tags=(tag,) if tag else (), digest=digest) for digest, tag in artifacts]
        Engine(jobs=2, policy=client.retry).copy(roots)
        # registry -> registry: exact bytes, by tag and by digest
        for digest, tag in artifacts:
            assert raw(down, f"kse/nvidia/signed@{digest}") == raw(up, f"nvidia/signed@{digest}")
            if tag:
                assert raw(down, f"kse/nvidia/signed:{tag}") == raw(up, f"nvidia/signed:{tag}")

        # registry -> blob store -> registry (a bundle's path), the referrer by digest only
        store = BlobStore(tmp_path / "store")
        graphs = Engine(jobs=2, policy=client.retry).copy(
            [Root(src, StoreSink(store), d, digest=d) for d, _ in artifacts])
        assert all(store.has(d) for g in graphs for d, _ in g.blobs)
        back = RegistrySink(client, Ref.parse(f"{other.host}/kse/nvidia/signed:v1"), Holders(), tmp_path / "spool2")
        Engine(jobs=2, policy=client.retry).copy(
            [Root(LayoutSource(store), back, d, tags=(t,) if t else (), digest=d) for d, t in artifacts])
    for digest, _ in artifacts:
        assert raw(other, f"kse/nvidia/signed@{digest}") == raw(up, f"nvidia/signed@{digest}")


def test_a_manifest_refused_for_missing_blobs_is_retried_a_bounded_number_of_rounds(registry_factory,
                                                                                    tmp_path: Path) -> None:
    """Only the manifest PUTs run under the retry policy; on MANIFEST_BLOB_UNKNOWN the blobs are copied
    again outside it (a HEAD each: they are there) and the PUT is tried again, ``attempts`` rounds in all."""
    up, down = registry_factory(), registry_factory()
    image = make_image("refused", [make_layer("refused", 4 << 10)])
    push_image(up.url, "nvidia/refused", "v1", image)
    unknown = json.dumps({"errors": [{"code": "MANIFEST_BLOB_UNKNOWN", "message": "blob unknown to registry"}]})
    with FaultProxy(down.host, [Fault("status", method="PUT", path="/manifests/", status=400,
                                      body=unknown.encode(), times=100)]) as proxy:
        client = RegistryClient(Endpoints(insecure={up.host, proxy.host}), CredentialStore(explicit={}, files=[]),
                                retry=RetryPolicy(attempts=3, backoff=0.01, sleep=lambda _: None))
        with client:
            src = RegistrySource(client, Ref.parse(f"{up.host}/nvidia/refused:v1"))
            sink = RegistrySink(client, Ref.parse(f"{proxy.host}/kse/nvidia/refused:v1"), Holders(),
                                tmp_path / "spool")
            with pytest.raises(RegistryError, match="MANIFEST_BLOB_UNKNOWN.*refused 3 times"):
                Engine(jobs=1, policy=client.retry).copy([Root(src, sink, image.digest, tags=("v1",),
                                                               digest=image.digest)])
        blobs = len(image.layers) + 1
        assert len(proxy.hits("PUT", "/manifests/")) == 3                 # one PUT a round, three rounds
        assert len(proxy.hits("HEAD", "/blobs/")) == blobs * 3            # the first copy, then once a round
        assert len(proxy.hits("POST", "/blobs/uploads/")) == blobs        # uploaded once: there since
