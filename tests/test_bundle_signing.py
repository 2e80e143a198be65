"""Chain of custody (issue 17): signed bundles, and a report that says only what it checked itself.

Real registries on loopback play nvcr.io and the mirror; images are signed by the test kit
in cosign's format. Bundle signatures are checked here the way ``cosign verify-blob --key``
checks them (base64-decode, verify over the raw lock bytes with the public key and the
key type's hash), with ``cryptography`` directly, never with mirrorkit's own code.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner, Result
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from kit import cosign
from kit.images import Index, make_image, make_index, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer

from mirrorkit.bundle.reader import BundleReader
from mirrorkit.cli.main import main
from mirrorkit.errors import OperationError
from mirrorkit.trust.bundlesig import check_bundle

NAMES = ("nvidia/gpu-operator:v1", "nvidia/k8s/container-toolkit:v2", "nvidia/driver:v3")


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def build() -> dict[str, Index]:
    return {name: make_index([make_image(f"{name}/{a}", [make_layer(f"{name}/{a}", 24 << 10)], ("linux", a))
                              for a in ("amd64", "arm64")]) for name in NAMES}


def private_pem(key: cosign.PrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def catalog(registry: RegistryServer) -> list[str]:
    return httpx.get(f"{registry.url}/v2/_catalog").json()["repositories"] or []


def members(tar: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(tar) as t:
        return [(m.name, t.extractfile(m).read()) for m in t.getmembers()]  # type: ignore[union-attr]


def retar(tar: Path, replace: dict[str, bytes]) -> None:
    """Rewrite a volume with some members changed, in the same order, and a fresh .sha256 beside it:
    what someone holding the media can do."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members(tar):
            data = replace.get(name, data)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    tar.write_bytes(out.getvalue())
    tar.with_name(tar.name + ".sha256").write_text(f"{hashlib.sha256(out.getvalue()).hexdigest()}  {tar.name}\n")


def cosign_verify_blob(public_pem: bytes, signature_file: Path, blob: Path) -> None:
    """What ``cosign verify-blob --key KEY --signature SIG BLOB`` does with a key: base64-decode the
    signature file, verify it over the blob's bytes (ECDSA P-256 / RSA with SHA-256, P-384 with
    SHA-384 as --signature-digest-algorithm sha384 asks, Ed25519 plain). Raises if it does not hold."""
    key = serialization.load_pem_public_key(public_pem)
    text = signature_file.read_bytes()
    assert b"\n" not in text, "cosign writes the base64 signature without a newline"
    sig, data = base64.b64decode(text, validate=True), blob.read_bytes()
    if isinstance(key, ec.EllipticCurvePublicKey):
        algo = hashes.SHA384() if key.curve.name == "secp384r1" else hashes.SHA256()
        key.verify(sig, data, ec.ECDSA(algo))
    elif isinstance(key, rsa.RSAPublicKey):
        key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(key, ed25519.Ed25519PublicKey)
        key.verify(sig, data)


def openssl_verify(public: Path, signature_file: Path, blob: Path, kind: str) -> None:
    """The same check with OpenSSL's command line, a verifier that shares no code with either side."""
    raw = signature_file.with_name(signature_file.name + ".raw")
    raw.write_bytes(base64.b64decode(signature_file.read_bytes(), validate=True))
    if kind == "ed25519":
        args = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(public), "-rawin", "-in", str(blob),
                "-sigfile", str(raw)]
    else:
        args = ["openssl", "dgst", "-sha384" if kind == "p384" else "-sha256", "-verify", str(public),
                "-signature", str(raw), str(blob)]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "Verified" in proc.stdout, proc.stdout + proc.stderr


@pytest.fixture
def world(registry_factory, tmp_path: Path):
    """Upstream with every image cosign-signed (index and platforms) under ``nvidia.pub``, a mirror, a plan."""
    up, mirror = registry_factory(), registry_factory()
    key = cosign.make_key("p256")
    for name, index in build().items():
        repo, tag = name.split(":")
        push_image(up.url, repo, tag, index)
        cosign.sign_recursive(up.url, repo, f"nvcr.io/{repo}", index, key)
    plan = tmp_path / "plan.yaml"
    args = ["plan", "--registry", f"{mirror.host}/kse", "--resolve", "-o", str(plan),
            "--source-endpoint", f"nvcr.io=http://{up.host}"]
    for name in NAMES:
        args += ["--image", f"nvcr.io/{name}"]
    assert cli(*args).exit_code == 0
    return up, mirror, plan, cosign.write_public_key(key, tmp_path / "nvidia.pub")


def pull(up: RegistryServer, plan: Path, out: Path, *extra: str) -> Result:
    res = cli("pull-bundle", str(plan), "-o", str(out), "--source-endpoint", f"nvcr.io=http://{up.host}", *extra)
    assert res.exit_code == 0, res.output
    return res


# ---- finding 1: the report states only what it checked ----------------------------------------------

def test_a_forged_lock_is_never_reported_as_verified(world, tmp_path: Path) -> None:
    up, _, plan, pub = world
    bundle = tmp_path / "forged.tar"
    pull(up, plan, bundle, "--no-signatures")
    fingerprint = "sha256:" + hashlib.sha256(serialization.load_pem_public_key(pub.read_bytes()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()
    lock = yaml.safe_load(dict(members(bundle))["bundle.yaml"])
    lock["verifications"] = [{"subject": i["digest"], "key_fingerprint": fingerprint, "identity": i["source"],
                              "verified_at": "2026-01-01T00:00:00Z"} for i in lock["images"]]
    retar(bundle, {"bundle.yaml": yaml.safe_dump(lock, sort_keys=False).encode()})

    out = tmp_path / "forged.html"
    res = cli("report", str(bundle), "-o", str(out))
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "Bundle verified" not in text and "verdict ok" not in text and "signed, verified" not in text
    assert "<span class='red'>not signed</span>" in text
    assert text.count("recorded at pull time (2026-01-01T00:00:00Z)") == 3
    assert text.count("a record in the lock, not checked by this report") == 3
    data = json.loads(cli("report", str(bundle), "--format", "json").stdout)
    assert [i["signature"] for i in data["images"]] == ["absent"] * 3
    assert all(i["recorded"]["key_fingerprint"] == fingerprint for i in data["images"])
    assert data["authenticated"] is False and data["lock_signature"]["state"] == "absent"
    md = cli("report", str(bundle), "--format", "markdown").stdout
    assert "**NOT SIGNED**" in md and "recorded at pull time" in md and "Bundle verified" not in md
    # checking is what makes "verified": under the very key the forged record names, nothing holds
    res = cli("report", str(bundle), "--verify-key", str(pub), "--format", "json")
    assert res.exit_code == 1 and "3 of 3 images lack a valid signature" in res.stderr
    assert [i["signature"] for i in json.loads(res.stdout)["images"]] == ["absent"] * 3


def test_carried_signatures_are_present_verified_or_invalid_as_checked(world, tmp_path: Path) -> None:
    up, _, plan, pub = world
    bundle = tmp_path / "gpu.tar"
    pull(up, plan, bundle)                                   # signatures carried, no --verify-key at pull
    data = json.loads(cli("report", str(bundle), "--format", "json").stdout)
    assert [i["signature"] for i in data["images"]] == ["present"] * 3
    assert all(i["recorded"] is None for i in data["images"])
    html = cli("report", str(bundle)).stdout
    assert html.count("signatures present, not verified") >= 3 and "unsigned" not in html

    res = cli("report", str(bundle), "--verify-key", str(pub), "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [i["signature"] for i in data["images"]] == ["verified"] * 3
    assert {i["key_fingerprint"] for i in data["images"]} == set(data["keys"])

    other = cosign.write_public_key(cosign.make_key("ed25519"), tmp_path / "other.pub")
    out = tmp_path / "wrong.html"
    res = cli("report", str(bundle), "--verify-key", str(other), "-o", str(out))
    assert res.exit_code == 1 and "3 of 3 images lack a valid signature" in res.stderr
    assert "signature INVALID" in out.read_text()      # the report is written all the same
    data = json.loads(cli("report", str(bundle), "--verify-key", str(other), "--format", "json").stdout)
    assert [i["signature"] for i in data["images"]] == ["invalid"] * 3


# ---- signed bundles --------------------------------------------------------------------------------

def test_a_signed_bundle_verifies_as_cosign_verify_blob_would(world, tmp_path: Path) -> None:
    up, _, plan, _ = world
    for kind in ("p256", "ed25519", "p384", "rsa"):     # one upstream for every key type: a faster test
        key = cosign.make_key(kind)
        pem = private_pem(key, tmp_path / f"{kind}.pem")
        pub = cosign.write_public_key(key, tmp_path / f"{kind}.pub")
        bundle = tmp_path / f"gpu-{kind}.tar"
        res = pull(up, plan, bundle, "--sign-key", str(pem), "--format", "json")
        signing = json.loads(res.stdout)["signing"]
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        assert signing["key_fingerprint"] == "sha256:" + hashlib.sha256(der).hexdigest()
        lock, sig = tmp_path / f"gpu-{kind}.lock.yaml", tmp_path / f"gpu-{kind}.lock.yaml.sig"
        inside = dict(members(bundle))
        # the same lock and signature inside the bundle and beside it; the lock records who signed, and when
        assert inside["bundle.yaml"] == lock.read_bytes() and inside["bundle.yaml.sig"] == sig.read_bytes()
        assert [n for n, _ in members(bundle)][:5] == ["bundle.yaml", "volume.yaml", "oci-layout", "index.json",
                                                       "bundle.yaml.sig"]
        assert yaml.safe_load(lock.read_text())["signing"] == signing
        cosign_verify_blob(cosign.public_pem(key), sig, lock)
        openssl_verify(pub, sig, lock, kind)
        edited = tmp_path / "edited.yaml"
        edited.write_bytes(lock.read_bytes().replace(b"nvidia/driver", b"nvidia/drivex"))
        with pytest.raises(InvalidSignature):            # one changed byte and it no longer holds
            cosign_verify_blob(cosign.public_pem(key), sig, edited)
        res = cli("report", str(bundle), "--bundle-key", str(pub), "--format", "json")
        assert res.exit_code == 0, res.output
        data = json.loads(res.stdout)
        assert data["lock_signature"] == {"state": "verified", "key_fingerprint": signing["key_fingerprint"],
                                          "key_type": signing["key_type"], "signed_at": signing["signed_at"]}
        assert data["authenticated"] is True, kind
    # an unpacked bundle folder carries its signature as a file beside bundle.yaml
    folder = tmp_path / "unpacked"
    with tarfile.open(bundle) as t:
        t.extractall(folder, filter="data")
    assert check_bundle(folder, [pub]).signer.key_type == "rsa-2048"
    with BundleReader([folder]) as reader:
        assert reader.verify().complete and reader.lock_signature == sig.read_bytes()
    (folder / "bundle.yaml.sig").unlink()
    with pytest.raises(OperationError, match="the bundle is not signed"):
        check_bundle(folder, [pub])
    html = cli("report", str(bundle), "--bundle-key", str(pub)).stdout
    assert "Bundle verified" in html and "verdict ok" in html and signing["signed_at"] in html


def test_push_bundle_accepts_a_signed_bundle_and_refuses_every_other(world, tmp_path: Path) -> None:
    up, mirror, plan, _ = world
    site, stranger = cosign.make_key("p256"), cosign.make_key("ed25519")
    pem, pub = private_pem(site, tmp_path / "site.pem"), cosign.write_public_key(site, tmp_path / "site.pub")
    signed = tmp_path / "signed" / "gpu.tar"
    unsigned = tmp_path / "unsigned" / "gpu.tar"
    foreign = tmp_path / "foreign" / "gpu.tar"
    for path in (signed, unsigned, foreign):
        path.parent.mkdir()
    pull(up, plan, signed, "--sign-key", str(pem), "--split", "64KiB")
    pull(up, plan, unsigned)
    pull(up, plan, foreign, "--sign-key", str(private_pem(stranger, tmp_path / "stranger.pem")))
    volumes = sorted(signed.parent.glob("gpu.*.tar"))
    assert len(volumes) > 1 and all(dict(members(v))["bundle.yaml.sig"] for v in volumes)
    up.stop()

    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for v in volumes:
        (tampered / v.name).write_bytes(v.read_bytes())
        (tampered / (v.name + ".sha256")).write_bytes((v.parent / (v.name + ".sha256")).read_bytes())
    changed = dict(members(volumes[0]))["bundle.yaml"].replace(f"{mirror.host}/kse".encode(), b"evil.example/kse")
    for v in sorted(tampered.glob("gpu.*.tar")):
        retar(v, {"bundle.yaml": changed})

    push = ["push-bundle", "--insecure", mirror.host, "--bundle-key", str(pub)]
    cases = [([str(p) for p in sorted(tampered.glob("gpu.*.tar"))], "the lock was changed after it was signed"),
             ([str(unsigned)], "the bundle is not signed"),
             ([str(foreign)], "signed by another key")]
    for paths, message in cases:
        res = cli(*push[:1], *paths, *push[1:])
        assert res.exit_code == 1, (paths, res.output)
        assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert catalog(mirror) == [], "nothing pushed"
    for command in (["verify", str(unsigned), "--insecure", mirror.host],
                    ["report", str(foreign)], ["diff", str(unsigned), str(volumes[0])],
                    # serve refuses before it listens: nothing of an unchecked bundle is ever served
                    ["serve", str(unsigned), "--addr", "127.0.0.1:0"], ["serve", str(foreign), "--addr", "127.0.0.1:0"],
                    ["serve", *map(str, sorted(tampered.glob("gpu.*.tar"))), "--addr", "127.0.0.1:0"]):
        res = cli(*command, "--bundle-key", str(pub))
        assert res.exit_code == 1 and "Traceback" not in res.output, (command, res.output)
        assert "listening" not in res.output.lower(), res.output

    res = cli("push-bundle", *map(str, volumes), "--insecure", mirror.host, "--bundle-key", str(pub))
    assert res.exit_code == 0, res.output
    assert "signature verified" in res.stderr and len(catalog(mirror)) == 3
    # the lock beside the bundle is checked with its .sig beside it, as cosign verify-blob would
    res = cli("diff", str(signed.parent / "gpu.lock.yaml"), str(volumes[1]), "--bundle-key", str(pub), "--exit-code")
    assert res.exit_code == 0, res.output
    res = cli("verify", str(volumes[0]), "--insecure", mirror.host, "--bundle-key", str(pub))
    assert res.exit_code == 0, res.output


def test_a_signature_out_of_place_or_a_bad_sign_key_is_refused(world, tmp_path: Path) -> None:
    up, _, plan, _ = world
    key = cosign.make_key("p256")
    pem = private_pem(key, tmp_path / "site.pem")
    bundle = tmp_path / "gpu.tar"
    pull(up, plan, bundle, "--sign-key", str(pem))
    items = members(bundle)
    moved = [items[0], items[4], *items[1:4], *items[5:]]     # the signature must come right after index.json
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in moved:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    bundle.write_bytes(out.getvalue())
    (tmp_path / "gpu.tar.sha256").unlink()
    res = cli("report", str(bundle), "--bundle-key", str(cosign.write_public_key(key, tmp_path / "site.pub")))
    assert res.exit_code == 2 and "entry 2 must be volume.yaml" in res.stderr
    public = cosign.write_public_key(key, tmp_path / "not-private.pem")
    res = cli("pull-bundle", str(plan), "-o", str(tmp_path / "x.tar"), "--sign-key", str(public))
    assert res.exit_code == 2 and "not a PEM private key" in res.stderr and not (tmp_path / "x.tar").exists()


def chart_tgz(path: Path) -> Path:
    """A minimal packaged Helm chart (what ``helm package`` writes: NAME/Chart.yaml in a gzip'd tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, text in (("gpu-operator/Chart.yaml", "apiVersion: v2\nname: gpu-operator\nversion: v23.9.2\n"),
                           ("gpu-operator/values.yaml", "operator:\n  version: v23.9.2\n")):
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            t.addfile(info, io.BytesIO(text.encode()))
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    return path


def test_report_shows_charts_the_differential_banner_and_an_approval_block(world, tmp_path: Path) -> None:
    up, _, plan, _ = world
    first, second = tmp_path / "first.tar", tmp_path / "second.tar"
    pull(up, plan, first, "--no-signatures")
    pull(up, plan, second, "--since", str(first), "--chart", str(chart_tgz(tmp_path / "gpu-operator.tgz")))
    lock = yaml.safe_load((tmp_path / "second.lock.yaml").read_text())
    first_id = yaml.safe_load((tmp_path / "first.lock.yaml").read_text())["id"]
    data = json.loads(cli("report", str(second), "--format", "json").stdout)
    assert data["charts"] == [{"name": "gpu-operator", "version": "v23.9.2", "tag": "v23.9.2",
                               "digest": lock["charts"][0]["digest"], "repository": lock["charts"][0]["repository"]}]
    carried = sum(b["size"] for b in lock["blobs"])
    assert data["differential"]["carried_bytes"] == carried and data["differential"]["omitted_bytes"] > 0
    assert first_id in data["differential"]["needs"][0]
    assert data["created"] == lock["created"] and data["generator"] == lock["generator"]
    html = cli("report", str(second)).stdout
    assert f"Differential: needs bundle {first_id}" in html and "<h2>Helm charts</h2>" in html
    assert lock["charts"][0]["digest"] in html and "<h2>Approval</h2>" in html
    assert all(f"<th>{field}</th>" in html for field in ("reviewer", "date", "decision"))
    md = cli("report", str(second), "--format", "markdown").stdout
    assert "## Helm charts" in md and "| reviewer | |" in md and f"needs bundle {first_id}" in md
