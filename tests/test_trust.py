"""Keys, cosign signature checks and artifact discovery against a real registry."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from kit import cosign
from kit.images import GPU_OPERATOR_REFS, gpu_operator_like_set
from kit.push import push_image

from mirrorkit.errors import InputError
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.transport import Endpoints
from mirrorkit.refs import Ref
from mirrorkit.trust import keys as trust_keys
from mirrorkit.trust.cosign import OTHER_DIGEST, OTHER_KEY, TAMPERED, UNSIGNED
from mirrorkit.trust.discover import fetch_small_blob, find_artifacts
from mirrorkit.trust.verify import verify_signatures


@pytest.mark.parametrize("kind", ["p256", "p384", "rsa", "ed25519"])
def test_every_key_type_verifies_what_it_signed(kind: str, tmp_path: Path) -> None:
    key = cosign.make_key(kind)
    pub = trust_keys.load_key(cosign.write_public_key(key, tmp_path / "k.pub"))
    body = cosign.payload("nvcr.io/nvidia/x", "sha256:" + "a" * 64)
    assert pub.verifies(cosign.sign_bytes(key, body), body)
    assert not pub.verifies(cosign.sign_bytes(key, body), body + b" ")
    assert pub.fingerprint.startswith("sha256:") and len(pub.fingerprint) == 71


def test_fingerprint_is_sha256_of_der_spki(tmp_path: Path) -> None:
    import hashlib

    from cryptography.hazmat.primitives import serialization

    key = cosign.make_key("p256")
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    pub = trust_keys.load_key(cosign.write_public_key(key, tmp_path / "k.pub"))
    assert pub.fingerprint == "sha256:" + hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize("content, message", [
    (b"not a key", "not a PEM public key"),
    (b"", "not a PEM public key"),
])
def test_unreadable_key_is_one_line_input_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pub"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        trust_keys.load_key(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    with pytest.raises(InputError, match="cannot read key file"):
        trust_keys.load_key(tmp_path / "missing.pub")


def test_unsupported_curve_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP521R1())
    path = cosign.write_public_key(key, tmp_path / "k.pub")
    with pytest.raises(InputError, match="secp521r1 is not supported"):
        trust_keys.load_key(path)


def _client(registry) -> RegistryClient:
    return RegistryClient(Endpoints(insecure={registry.host}))


def test_discovery_and_verdicts_against_a_registry(registry, tmp_path: Path) -> None:
    images = gpu_operator_like_set([GPU_OPERATOR_REFS[n] for n in (0, 1, 2, 4, 5)], layer_size=512)
    key, other = cosign.make_key("p256"), cosign.make_key("ed25519")
    pub = trust_keys.load_key(cosign.write_public_key(key, tmp_path / "k.pub"))
    digests = {}
    for ref, index in images.items():
        repo, tag = ref.split(":")
        push_image(registry.url, repo, tag, index)
        digests[repo] = index
    repos = list(digests)
    good, unsigned, foreign, wrong, tampered = repos
    cosign.sign_recursive(registry.url, good, f"nvcr.io/{good}", digests[good], key)
    cosign.sbom_referrer(registry.url, good, digests[good], {"spdxVersion": "SPDX-2.3", "name": good})
    cosign.attest(registry.url, good, digests[good].digest, {"predicate": {}})
    cosign.sign(registry.url, foreign, f"nvcr.io/{foreign}", digests[foreign].digest, other)
    cosign.sign(registry.url, wrong, f"nvcr.io/{wrong}", digests[wrong].digest, key,
                claims=digests[good].digest)
    cosign.sign(registry.url, tampered, f"nvcr.io/{tampered}", digests[tampered].digest, key, tamper=True)

    with _client(registry) as client:
        ref = Ref.parse(f"{registry.host}/{good}")
        found = find_artifacts(client, ref, [digests[good].digest, *(i.digest for i in digests[good].images)])
        assert sorted(a.tag or "" for a in found) == sorted(
            [cosign.tag_for(digests[good].digest), cosign.tag_for(digests[good].digest, "att"),
             cosign.tag_for(digests[good].digest, ""), ""]
            + [cosign.tag_for(i.digest) for i in digests[good].images])
        referrer = next(a for a in found if a.tag is None)
        assert referrer.artifact_type == cosign.SPDX and referrer.subject == digests[good].digest
        assert next(a for a in found if a.tag and a.tag.endswith(".sig")).artifact_type == cosign.SIMPLE_SIGNING
        assert find_artifacts(client, Ref.parse(f"{registry.host}/{unsigned}"), [digests[unsigned].digest]) == []

        def fetch_manifest(name: str, reference: str) -> bytes | None:
            r = Ref.parse(name)
            return client.manifest_digest(r.with_tag(reference)) and client.get_manifest(r, reference).data

        def fetch_blob(name: str, digest: str) -> bytes:
            return fetch_small_blob(client, Ref.parse(name), digest)

        subjects = [(f"{registry.host}/{r}", digests[r].digest) for r in repos]
        subjects += [(f"{registry.host}/{good}", i.digest) for i in digests[good].images]
        result = verify_signatures(fetch_manifest, fetch_blob, subjects, [pub])
    by_repo = {v.name.split("/", 1)[1]: v for v in result.verdicts if v.digest in
               {d.digest for d in digests.values()}}
    assert by_repo[good].verified and by_repo[good].identity == f"nvcr.io/{good}"
    assert by_repo[good].key_fingerprint == pub.fingerprint
    assert by_repo[unsigned].reason == UNSIGNED
    assert by_repo[foreign].reason == OTHER_KEY
    assert by_repo[wrong].reason == OTHER_DIGEST
    assert by_repo[tampered].reason in (OTHER_KEY, TAMPERED)
    assert not result.passed and len(result.failures) == 4
    assert all(v.verified for v in result.verdicts if v.name.endswith(good))


def _lock_text(extra: str) -> str:
    from mirrorkit.lock import Lock, LockBlob, LockImage
    from mirrorkit.plan import Plan

    blob = "sha256:" + "b" * 64
    image = LockImage("nvcr.io/nvidia/x:1", None, blob, "application/vnd.oci.image.manifest.v1+json")
    lock = Lock(id="x", created="", generator="t", plan=Plan(images=[]), images=[image], blobs=[LockBlob(blob, 3)])
    return lock.dumps() + extra


def test_lock_artifacts_and_verifications_round_trip() -> None:
    from mirrorkit.lock import LockArtifact, LockVerification, loads_lock

    art = LockArtifact("sha256:" + "a" * 64, "sha256:" + "b" * 64, "application/vnd.oci.image.manifest.v1+json",
                       cosign.SIMPLE_SIGNING, "sha256-" + "a" * 64 + ".sig", "nvcr.io/nvidia/x:1", "m.local/x:1")
    ver = LockVerification("sha256:" + "a" * 64, "sha256:" + "c" * 64, "nvcr.io/nvidia/x", "2026-01-01T00:00:00Z")
    lock = loads_lock(_lock_text(""), "old.lock.yaml")
    assert lock.artifacts == [] and lock.verifications == []          # locks without them still load
    assert "artifacts:" not in lock.dumps() and "verifications:" not in lock.dumps()
    lock.artifacts, lock.verifications = [art], [ver]
    again = loads_lock(lock.dumps(), "new.lock.yaml")
    assert again.artifacts == [art] and again.verifications == [ver]


@pytest.mark.parametrize("extra, message", [
    ("artifacts: [{subject: 'sha256:zz', digest: 'sha256:" + "b" * 64 + "', media_type: m, tag: null, source: s}]",
     "subject"),
    ("artifacts: [{subject: 'sha256:" + "a" * 64 + "', digest: 'sha256:" + "d" * 64
     + "', media_type: m, tag: null, source: s}]", "not carried by the lock"),
    ("artifacts: [{subject: 'sha256:" + "a" * 64 + "', digest: 'sha256:" + "b" * 64
     + "', media_type: m, tag: '../x', source: s}]", "invalid tag"),
    ("verifications: {a: 1}", "'verifications' must be a list"),
    ("artifacts: [{subject: 'sha256:" + "a" * 64 + "', digest: 'sha256:" + "b" * 64
     + "', media_type: m, tag: null, source: elsewhere}]", "not an image of this lock"),
])
def test_lock_refuses_bad_artifacts(extra: str, message: str) -> None:
    from mirrorkit.lock import loads_lock

    with pytest.raises(InputError, match=message):
        loads_lock(_lock_text(extra), "bad.lock.yaml")


class _NoTagList(httpx.BaseTransport):
    """The real registry, except that it refuses to list tags (as some do for pull-only tokens)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path.endswith("/tags/list"):
            return httpx.Response(403, json={"errors": [{"code": "DENIED"}]})
        return self.inner.handle_request(request)


def test_discovery_without_a_tag_list_asks_for_each_tag(registry) -> None:
    [(name, index)] = gpu_operator_like_set([GPU_OPERATOR_REFS[0]], layer_size=256).items()
    repo, tag = name.split(":")
    push_image(registry.url, repo, tag, index)
    key = cosign.make_key("p256")
    sigs = cosign.sign_recursive(registry.url, repo, f"nvcr.io/{repo}", index, key)
    referrer, fallback = cosign.sbom_referrer(registry.url, repo, index, {"name": "x"})
    digests = [index.digest, *(i.digest for i in index.images)]
    ref = Ref.parse(f"{registry.host}/{repo}")
    with _client(registry) as client:
        listed = find_artifacts(client, ref, digests)
    transport = _NoTagList()
    with RegistryClient(Endpoints(insecure={registry.host}), transport=transport) as client:
        probed = find_artifacts(client, ref, digests)
    assert any(p.endswith("/tags/list") for p in transport.paths)
    assert sorted(a.digest for a in probed) == sorted(a.digest for a in listed) == sorted(
        [*(s.digest for s in sigs), referrer.digest, fallback.digest])
