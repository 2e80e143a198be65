"""Signatures travel with the images and are verified on both sides of the gap (issue 9).

Real registries on loopback: an "upstream" plays nvcr.io, a "private" one the mirror.
Images are signed by the test kit in cosign's format with keys made by cryptography;
mirrorkit is the verifier (Debian's skopeo has sigstore verification compiled out), and
skopeo is only used to read raw manifests back from the mirror.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner, Result
from kit import cosign
from kit.faultproxy import Fault, FaultProxy
from kit.images import Index, make_image, make_index, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer

from mirrorkit.cli.main import main

PREFIX = "kse"
ARCHES = ("amd64", "arm64")
NAMES = ("nvidia/gpu-operator:v1", "nvidia/k8s/container-toolkit:v2", "nvidia/cloud-native/dcgm:v3",
         "nvidia/driver:v4", "nvidia/cuda:v5")


def build(seed: str = "s") -> dict[str, Index]:
    base = {a: make_layer(f"{seed}/base/{a}", 2048) for a in ARCHES}
    return {name: make_index([make_image(f"{seed}/{name}/{a}", [base[a], make_layer(f"{seed}/{name}/{a}", 1024)],
                                         ("linux", a)) for a in ARCHES]) for name in NAMES}


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def endpoint(up: RegistryServer) -> list[str]:
    return ["--source-endpoint", f"nvcr.io=http://{up.host}"]


def make_plan(tmp: Path, up: RegistryServer, private: RegistryServer, names: tuple[str, ...] = NAMES,
              *extra: str) -> Path:
    out = tmp / "plan.yaml"
    args = ["plan", "--registry", f"{private.host}/{PREFIX}", "--resolve", *endpoint(up), "-o", str(out), *extra]
    for name in names:
        args += ["--image", f"nvcr.io/{name}"]
    res = cli(*args)
    assert res.exit_code == 0, res.output
    return out


def raw(registry: RegistryServer, repo: str, reference: str) -> bytes:
    """What cosign (or a cluster) would read at the mirror, through skopeo."""
    out = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{registry.host}/{repo}:{reference}" if not reference.startswith("sha256:")
                          else f"docker://{registry.host}/{repo}@{reference}"],
                         capture_output=True, check=True, timeout=60)
    return out.stdout


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def signed(registry_factory, tmp_path: Path):
    """``signed(names)``: upstream with those images signed recursively, an SBOM referrer and an attestation."""
    def make(names: tuple[str, ...] = NAMES):
        up, private = registry_factory(), registry_factory()
        images = {n: i for n, i in build().items() if n in names}
        key = cosign.make_key("p256")
        for name, index in images.items():
            repo, tag = name.split(":")
            push_image(up.url, repo, tag, index)
            cosign.sign_recursive(up.url, repo, f"nvcr.io/{repo}", index, key)
        repo0 = NAMES[0].split(":")[0]
        referrer, fallback = cosign.sbom_referrer(up.url, repo0, images[NAMES[0]], {"spdxVersion": "SPDX-2.3"})
        att = cosign.attest(up.url, repo0, images[NAMES[0]].digest, {"predicate": {"builder": "nvidia"}})
        pub = cosign.write_public_key(key, tmp_path / "nvidia.pub")
        return up, private, images, pub, (referrer, fallback, att)
    return make


def test_signed_images_survive_pull_and_push_byte_for_byte(signed, tmp_path: Path) -> None:
    up, private, images, pub, (referrer, fallback, att) = signed()
    plan = make_plan(tmp_path, up, private)
    bundle = tmp_path / "gpu.tar"
    res = cli("pull-bundle", str(plan), "-o", str(bundle), *endpoint(up), "--verify-key", str(pub),
              "--format", "json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    # 5 images x (index + 2 platforms) signatures, plus the SBOM referrer, its fallback index and the attestation
    assert report["artifacts"] == 5 * 3 + 3
    lock = yaml.safe_load((tmp_path / "gpu.lock.yaml").read_text())
    assert {a["digest"] for a in lock["artifacts"]} >= {referrer.digest, fallback.digest, att.digest}
    assert {v["subject"] for v in lock["verifications"]} == {i.digest for i in images.values()}
    assert all(v["key_fingerprint"].startswith("sha256:") and v["identity"].startswith("nvcr.io/nvidia/")
               for v in lock["verifications"])

    up.stop()  # the air gap: push-bundle verifies from the bundle alone
    res = cli("push-bundle", str(bundle), "--insecure", private.host, "--verify-key", str(pub), "--format", "json")
    assert res.exit_code == 0, res.output
    pushed = json.loads(res.stdout)
    assert pushed["artifacts_pushed"] == 18 and len(pushed["verifications"]) == 5

    for artifact in lock["artifacts"]:
        repo = f"{PREFIX}/{artifact['source'].split('/', 1)[1].split(':')[0]}"
        got = raw(private, repo, artifact["tag"] or artifact["digest"])
        assert digest_of(got) == artifact["digest"], artifact
    # the SBOM referrer keeps its subject; the fallback tag index lists it where a referrers client looks
    doc = json.loads(raw(private, f"{PREFIX}/nvidia/gpu-operator", referrer.digest))
    assert doc["subject"]["digest"] == images[NAMES[0]].digest and doc["artifactType"] == cosign.SPDX
    idx = json.loads(raw(private, f"{PREFIX}/nvidia/gpu-operator", cosign.tag_for(images[NAMES[0]].digest, "")))
    assert [m["digest"] for m in idx["manifests"]] == [referrer.digest]

    # verify --verify-key reads the signatures at the mirror itself
    res = cli("verify", str(bundle), "--insecure", private.host, "--verify-key", str(pub))
    assert res.exit_code == 0, res.output
    assert "5 of 5 image digests carry a valid signature" in res.stderr


def test_verify_key_refuses_every_bad_image_and_writes_nothing(registry_factory, tmp_path: Path) -> None:
    up, private = registry_factory(), registry_factory()
    images = build("bad")
    key, other = cosign.make_key("ed25519"), cosign.make_key("p384")
    repos = [n.split(":")[0] for n in NAMES]
    for name, index in images.items():
        repo, tag = name.split(":")
        push_image(up.url, repo, tag, index)
    good, unsigned, foreign, wrong, tampered = repos
    digest = {r: images[n].digest for r, n in zip(repos, NAMES, strict=True)}
    cosign.sign(up.url, good, f"nvcr.io/{good}", digest[good], key)
    cosign.sign(up.url, foreign, f"nvcr.io/{foreign}", digest[foreign], other)
    cosign.sign(up.url, wrong, f"nvcr.io/{wrong}", digest[wrong], key, claims=digest[good])
    cosign.sign(up.url, tampered, f"nvcr.io/{tampered}", digest[tampered], key, tamper=True)
    pub = cosign.write_public_key(key, tmp_path / "k.pub")
    plan = make_plan(tmp_path, up, private)

    bundle = tmp_path / "bad.tar"
    res = cli("pull-bundle", str(plan), "-o", str(bundle), *endpoint(up), "--verify-key", str(pub))
    assert res.exit_code == 1
    message = res.stderr
    for repo, reason in [(unsigned, "unsigned"), (foreign, "signed by another key"),
                         (wrong, "payload names another digest"), (tampered, "signed by another key")]:
        assert f"nvcr.io/{repo}:" in message and reason in message.split(f"nvcr.io/{repo}:", 1)[1].split(";")[0]
    assert f"nvcr.io/{good}:" not in message
    assert "4 of 5" in message and "Traceback" not in res.output
    assert not bundle.exists() and not (tmp_path / "bad.lock.yaml").exists()

    # carried without a key, refused offline on the air-gapped side before anything is pushed
    res = cli("pull-bundle", str(plan), "-o", str(bundle), *endpoint(up))
    assert res.exit_code == 0, res.output
    up.stop()
    res = cli("push-bundle", str(bundle), "--insecure", private.host, "--verify-key", str(pub))
    assert res.exit_code == 1 and "4 of 5 image digests" in res.stderr
    assert (httpx.get(f"{private.url}/v2/_catalog").json()["repositories"] or []) == []
    # a second key that signed the foreign image makes that one pass: any of the keys will do
    pub2 = cosign.write_public_key(other, tmp_path / "other.pub")
    res = cli("push-bundle", str(bundle), "--insecure", private.host, "--verify-key", str(pub), "--verify-key",
              str(pub2))
    assert res.exit_code == 1 and "3 of 5 image digests" in res.stderr


def test_unreadable_key_is_a_one_line_usage_error(signed, tmp_path: Path) -> None:
    up, private, _, _, _ = signed(NAMES[:1])
    plan = make_plan(tmp_path, up, private, NAMES[:1])
    bad = tmp_path / "bad.pub"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    for args in (["pull-bundle", str(plan), "-o", str(tmp_path / "x.tar"), *endpoint(up)],
                 ["verify", str(plan), "--insecure", private.host]):
        res = cli(*args, "--verify-key", str(bad))
        assert res.exit_code == 2, res.output
        assert len(res.stderr.strip().splitlines()) == 1 and str(bad) in res.stderr
    res = cli("pull-bundle", str(plan), "-o", str(tmp_path / "x.tar"), *endpoint(up), "--verify-key",
              str(tmp_path / "missing.pub"))
    assert res.exit_code == 2 and "missing.pub" in res.stderr


def test_one_platform_keeps_the_published_signature_under_the_tag(signed, tmp_path: Path) -> None:
    up, private, images, pub, _ = signed(NAMES[:2])
    plan = make_plan(tmp_path, up, private, NAMES[:2], "--platform", "linux/amd64")
    bundle = tmp_path / "amd64.tar"
    res = cli("pull-bundle", str(plan), "-o", str(bundle), *endpoint(up), "--verify-key", str(pub))
    assert res.exit_code == 0, res.output
    assert "signature does not cover" not in res.stderr
    lock = yaml.safe_load((tmp_path / "amd64.lock.yaml").read_text())
    assert all("the tag names that platform's manifest" in i["note"] for i in lock["images"])
    amd = {i.digest for n in NAMES[:2] for i in images[n].images if i.platform == ("linux", "amd64")}
    assert {i["digest"] for i in lock["images"]} == amd
    assert {v["subject"] for v in lock["verifications"]} == amd
    assert {a["subject"] for a in lock["artifacts"]} == amd     # the original index's signature is not carried
    up.stop()
    res = cli("push-bundle", str(bundle), "--insecure", private.host, "--verify-key", str(pub))
    assert res.exit_code == 0, res.output
    [platform] = [i for i in images[NAMES[0]].images if i.platform == ("linux", "amd64")]
    assert digest_of(raw(private, f"{PREFIX}/nvidia/gpu-operator", "v1")) == platform.digest
    sig = raw(private, f"{PREFIX}/nvidia/gpu-operator", cosign.tag_for(platform.digest))
    assert digest_of(sig) == next(a["digest"] for a in lock["artifacts"] if a["subject"] == platform.digest)
    res = cli("verify", str(bundle), "--insecure", private.host, "--verify-key", str(pub))
    assert res.exit_code == 0, res.output


def test_no_signatures_carries_nothing_and_a_re_sign_is_a_change(signed, tmp_path: Path) -> None:
    up, private, images, _, _ = signed(NAMES[:1])
    plan = make_plan(tmp_path, up, private, NAMES[:1])
    bundle = tmp_path / "n.tar"
    res = cli("pull-bundle", str(plan), "-o", str(bundle), *endpoint(up), "--no-signatures", "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["artifacts"] == 0
    assert "artifacts" not in yaml.safe_load((tmp_path / "n.lock.yaml").read_text())
    first = json.loads(cli("pull-bundle", str(plan), "-o", str(bundle), *endpoint(up), "--format", "json").stdout)
    assert first["up_to_date"] is False and first["artifacts"] == 3 + 3
    assert json.loads(cli("pull-bundle", str(plan), "-o", str(bundle), *endpoint(up), "--format",
                          "json").stdout)["up_to_date"] is True
    repo = NAMES[0].split(":")[0]
    resigned = cosign.sign(up.url, repo, f"nvcr.io/{repo}", images[NAMES[0]].digest, cosign.make_key("p256"))
    again = json.loads(cli("pull-bundle", str(plan), "-o", str(bundle), *endpoint(up), "--format", "json").stdout)
    assert again["up_to_date"] is False
    assert resigned.digest in {a["digest"] for a in yaml.safe_load((tmp_path / "n.lock.yaml").read_text())["artifacts"]}


def test_mirror_carries_and_checks_signatures(signed, tmp_path: Path) -> None:
    up, private, images, pub, _ = signed(NAMES[:2])
    extra = build("unsigned")[NAMES[2]]
    push_image(up.url, *NAMES[2].split(":"), extra)
    args = ["--insecure", private.host, *endpoint(up), "--verify-key", str(pub), "--format", "json"]
    plan = make_plan(tmp_path, up, private, NAMES[:3])
    res = cli("mirror", str(plan), *args)
    assert res.exit_code == 1 and f"nvcr.io/{NAMES[2]}" in res.stderr and "unsigned" in res.stderr
    assert (httpx.get(f"{private.url}/v2/_catalog").json()["repositories"] or []) == []
    plan = make_plan(tmp_path, up, private, NAMES[:2])
    res = cli("mirror", str(plan), *args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["artifacts"] == 2 * 3 + 3
    for name in NAMES[:2]:
        repo = name.split(":")[0]
        for digest in [images[name].digest, *(i.digest for i in images[name].images)]:
            upstream = raw(up, repo, cosign.tag_for(digest))
            assert raw(private, f"{PREFIX}/{repo}", cosign.tag_for(digest)) == upstream


def test_an_artifact_blob_cut_mid_body_is_resumed_not_failed(signed, tmp_path: Path) -> None:
    """Artifacts travel through the engine: a cut blob download continues with Range, like a layer's."""
    up, private, images, pub, (referrer, fallback, att) = signed((NAMES[0],))
    plan = make_plan(tmp_path, up, private, (NAMES[0],))
    layer = att.blobs[-1]
    cut = layer.size // 2
    assert cut > 0
    with FaultProxy(up.host, [Fault("drop", method="GET", path=f"/blobs/{layer.digest}$", after=cut)]) as proxy:
        res = cli("pull-bundle", str(plan), "-o", str(tmp_path / "gpu.tar"), "--source-endpoint",
                  f"nvcr.io=http://{proxy.host}", "--verify-key", str(pub), "--format", "json")
        gets = proxy.hits("GET", f"/blobs/{layer.digest}$")
    assert res.exit_code == 0, res.output
    assert len(gets) == 2 and gets[1].byte_range == f"bytes={cut}-{layer.size - 1}", gets
    lock = yaml.safe_load((tmp_path / "gpu.lock.yaml").read_text())
    assert att.digest in {a["digest"] for a in lock["artifacts"]}
    assert layer.digest in {b["digest"] for b in lock["blobs"]}


def test_a_differential_compressed_bundle_still_carries_and_pushes_its_artifacts(signed, tmp_path: Path) -> None:
    """``--since`` leaves out image blobs the earlier bundle carried, never an artifact's: the artifacts are
    roots of the push's own engine run, read from the compressed stream with the images."""
    up, private, images, pub, (referrer, fallback, att) = signed(NAMES[:2])
    first, second = tmp_path / "a.tar", tmp_path / "b.tar.zst"
    res = cli("pull-bundle", str(make_plan(tmp_path, up, private, NAMES[:1])), "-o", str(first), *endpoint(up),
              "--format", "json")
    assert res.exit_code == 0, res.output
    res = cli("pull-bundle", str(make_plan(tmp_path, up, private, NAMES[:2])), "-o", str(second), *endpoint(up),
              "--since", str(first), "--compress", "zstd", "--verify-key", str(pub), "--format", "json")
    assert res.exit_code == 0, res.output
    lock = yaml.safe_load((tmp_path / "b.lock.yaml").read_text())
    carried = {b["digest"] for b in lock["blobs"]}
    assert att.blobs[-1].digest in carried and referrer.digest in carried
    up.stop()
    assert cli("push-bundle", str(first), "--insecure", private.host).exit_code == 0
    res = cli("push-bundle", str(second), "--insecure", private.host, "--verify-key", str(pub), "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["artifacts_pushed"] == len(lock["artifacts"]) == 2 * 3 + 3
    for artifact in lock["artifacts"]:
        repo = f"{PREFIX}/{artifact['source'].split('/', 1)[1].split(':')[0]}"
        assert digest_of(raw(private, repo, artifact["tag"] or artifact["digest"])) == artifact["digest"]
