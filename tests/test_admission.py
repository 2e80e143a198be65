"""Signature admission after --platform (issue 17, finding 2): what the cluster checks must be signed.

An upstream on loopback plays nvcr.io and registry.k8s.io, every image a two-platform
index signed recursively by the test kit (cosign's format, keys from cryptography). The
plan is a real GPU Operator release restricted by ``--platform``. The test then reads
the rewritten Helm values, resolves each reference at the mirror as a kubelet would, and
checks the signature of the digest it resolves to with ``cryptography`` directly: not
with mirrorkit's verifier.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import yaml
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kit import cosign
from kit.images import Index, make_image, make_index, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer

from mirrorkit.cli.main import main
from mirrorkit.plan import load_plan, render
from mirrorkit.refs import Ref, RegistryTarget
from mirrorkit.resolve.catalog import load_release
from mirrorkit.resolve.nodes import parse_node_spec
from mirrorkit.resolve.resolver import PlanRequest, resolve

PREFIX = "kse"
ACCEPT = ", ".join(["application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.docker.distribution.manifest.v2+json"])


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def signed_release(tmp: Path, up: RegistryServer, private: RegistryServer, platforms: list[str],
                   arches: tuple[str, ...] = ("amd64", "arm64"),
                   key: cosign.PrivateKey | None = None) -> tuple[Path, Path, dict[str, Index]]:
    """A v23.9.2 plan restricted to ``platforms``; every image upstream an index signed recursively."""
    plan = resolve(PlanRequest(image_list=load_release("v23.9.2", "helm"),
                               nodes=[parse_node_spec("ubuntu22.04/5.15.0-131-generic")], precompiled=False,
                               registry=RegistryTarget.parse(f"{private.host}/{PREFIX}")))
    plan.platforms = platforms
    key = key or cosign.make_key("p256")
    images: dict[str, Index] = {}
    for img in plan.images:
        ref = Ref.parse(img.source)
        index = make_index([make_image(f"{img.source}/{a}", [make_layer(f"{img.source}/{a}", 512)], ("linux", a))
                            for a in arches])
        push_image(up.url, ref.repository, ref.tag or "latest", index)
        cosign.sign_recursive(up.url, ref.repository, ref.name, index, key)
        images[img.source] = index
    path = tmp / "plan.yaml"
    path.write_text(render(plan, "yaml"))
    return path, cosign.write_public_key(key, tmp / "nvidia.pub"), images


def endpoints(up: RegistryServer) -> list[str]:
    return ["--source-endpoint", f"nvcr.io=http://{up.host}", "--source-endpoint", f"registry.k8s.io=http://{up.host}"]


def pull_and_push(tmp: Path, up: RegistryServer, private: RegistryServer, plan: Path, pub: Path) -> Path:
    bundle = tmp / "gpu.tar"
    res = cli("pull-bundle", str(plan), "-o", str(bundle), *endpoints(up), "--verify-key", str(pub))
    assert res.exit_code == 0, res.output
    res = cli("push-bundle", str(bundle), "--insecure", private.host, "--verify-key", str(pub))
    assert res.exit_code == 0, res.output
    return bundle


def values_references(values: Any) -> list[tuple[str, str, str]]:
    """(repository path, image, version-or-tag) for every image the Helm values name."""
    out: list[tuple[str, str, str]] = []
    if isinstance(values, dict):
        if isinstance(values.get("repository"), str) and isinstance(values.get("image"), str) \
                and "version" in values:
            out.append((values["repository"], values["image"], str(values["version"])))
        elif isinstance(values.get("repository"), str) and "tag" in values:      # the NFD subchart's form
            repo, _, image = values["repository"].rpartition("/")
            out.append((repo, image, str(values["tag"])))
        for v in values.values():
            out += values_references(v)
    return out


def resolve_at_mirror(http: httpx.Client, private: RegistryServer, repository: str, reference: str) -> str | None:
    resp = http.get(f"{private.url}/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT})
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    return "sha256:" + hashlib.sha256(resp.content).hexdigest()


def signature_holds(http: httpx.Client, private: RegistryServer, repository: str, digest: str,
                    pub: ec.EllipticCurvePublicKey) -> bool:
    """cosign's check, written out: the .sig manifest's layer is a payload naming ``digest``, signed by the key."""
    tag = digest.replace(":", "-") + ".sig"
    resp = http.get(f"{private.url}/v2/{repository}/manifests/{tag}", headers={"Accept": ACCEPT})
    if resp.status_code == 404:
        return False
    for layer in resp.json()["layers"]:
        body = http.get(f"{private.url}/v2/{repository}/blobs/{layer['digest']}").content
        signature = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
        try:
            pub.verify(signature, body, ec.ECDSA(hashes.SHA256()))
        except Exception:
            continue
        if json.loads(body)["critical"]["image"]["docker-manifest-digest"] == digest:
            return True
    return False


def test_one_platform_tags_resolve_to_signed_manifests_and_the_policy_is_written(registry_factory,
                                                                                 tmp_path: Path) -> None:
    up, private = registry_factory(), registry_factory()
    plan, pub, images = signed_release(tmp_path, up, private, ["linux/amd64"])
    bundle = pull_and_push(tmp_path, up, private, plan, pub)
    res = cli("verify", str(bundle), "--insecure", private.host, "--verify-key", str(pub))
    assert res.exit_code == 0, res.output
    policy = tmp_path / "policy.yaml"
    res = cli("rewrite-config", str(bundle), "--format", "kyverno", "--verify-key", str(pub), "-o", str(policy))
    assert res.exit_code == 0, res.output
    res = cli("rewrite-config", str(bundle), "--format", "helm", "-o", str(tmp_path / "values.yaml"))
    assert res.exit_code == 0, res.output

    refs = values_references(yaml.safe_load((tmp_path / "values.yaml").read_text()))
    lock_dests = [Ref.parse(i.destination) for i in load_plan(plan).images if i.destination]
    key = serialization.load_pem_public_key(pub.read_bytes())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    amd64 = {i.digest for idx in images.values() for i in idx.images if i.platform == ("linux", "amd64")}
    checked = 0
    with httpx.Client(timeout=30) as http:
        for repository, image, version in refs:
            full = f"{repository}/{image}"
            assert full.startswith(f"{private.host}/{PREFIX}/"), full
            repo_path = full.removeprefix(f"{private.host}/")
            # the operator appends the node's OS tag to driver-type images: the tags it will ask for
            tags = [version] if resolve_at_mirror(http, private, repo_path, version) else \
                [d.tag for d in lock_dests if d.repository == repo_path and d.tag and d.tag.startswith(version + "-")]
            assert tags, f"{full}:{version} resolves to nothing at the mirror"
            for tag in tags:
                digest = resolve_at_mirror(http, private, repo_path, tag)
                assert digest in amd64, f"{full}:{tag} resolves to {digest}, not a published amd64 manifest"
                assert signature_holds(http, private, repo_path, digest, key), f"{full}:{tag} ({digest}) unsigned"
                checked += 1
    assert checked >= 10        # operator, driver, manager, toolkit, plugin, dcgm, gfd, mig, nfd, validator…


def test_several_platforms_are_refused_unless_a_site_key_signs_the_rewritten_indexes(registry_factory,
                                                                                     tmp_path: Path) -> None:
    up, private = registry_factory(), registry_factory()
    plan, pub, images = signed_release(tmp_path, up, private, ["linux/amd64", "linux/arm64"],
                                       arches=("amd64", "arm64", "ppc64le"))
    site = cosign.make_key("p256")
    site_pem = tmp_path / "site.pem"
    site_pem.write_bytes(site.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    site_pub = cosign.write_public_key(site, tmp_path / "site.pub")
    for fmt in ("kyverno", "containers-policy"):       # from the plan alone: it cannot tell the platforms
        res = CliRunner().invoke(main, ["rewrite-config", str(plan), "--format", fmt, "--verify-key", str(pub)])
        assert res.exit_code == 2 and "cannot pass signature admission" in res.output, res.output
    bundle = pull_and_push(tmp_path, up, private, plan, pub)
    # no combination of the publisher's keys can admit an index --platform rewrote: refused, and verify fails
    for fmt in ("kyverno", "containers-policy"):
        res = CliRunner().invoke(main, ["rewrite-config", str(bundle), "--format", fmt, "--verify-key", str(pub),
                                        "-o", str(tmp_path / fmt)])
        assert res.exit_code == 2, res.output
        assert "12 image(s) cannot pass signature admission" in res.output and "rewritten" in res.output
        assert not (tmp_path / fmt).exists()
    res = CliRunner().invoke(main, ["verify", str(bundle), "--insecure", private.host, "--verify-key", str(pub)])
    assert res.exit_code == 1 and "rewrote this index" in res.output, res.output
    # unless the site signs them, having checked their platform manifests
    res = CliRunner().invoke(main, ["push-bundle", str(bundle), "--insecure", private.host, "--site-key",
                                    str(site_pem)])
    assert res.exit_code == 2 and "--site-key needs --verify-key" in res.output
    res = cli("push-bundle", str(bundle), "--insecure", private.host, "--verify-key", str(pub), "--site-key",
              str(site_pem))
    assert res.exit_code == 0 and "signed 12 rewritten index(es) with the site key" in res.output, res.output
    # the runbook prints these very steps for such a bundle
    book = cli("runbook", str(bundle), "--insecure", private.host).stdout
    assert "--site-key site.pem" in book and "--site-signed" in book and "--verify-key site.pub" in book
    keys = ["--verify-key", str(pub), "--verify-key", str(site_pub)]
    assert cli("verify", str(bundle), "--insecure", private.host, *keys).exit_code == 0
    res = CliRunner().invoke(main, ["rewrite-config", str(bundle), "--format", "kyverno", "--verify-key", str(pub),
                                    "--site-signed"])
    assert res.exit_code == 2 and "one more --verify-key" in res.output
    policy = cli("rewrite-config", str(bundle), "--format", "kyverno", *keys, "--site-signed")
    assert policy.exit_code == 0
    assert policy.stdout.count("BEGIN PUBLIC KEY") == 2

    # every reference the Helm values name resolves at the mirror to a digest signed by one of the policy's keys
    values = yaml.safe_load(cli("rewrite-config", str(bundle), "--format", "helm").stdout)
    lock_dests = [Ref.parse(i.destination) for i in load_plan(plan).images if i.destination]
    nvidia, site_key = (serialization.load_pem_public_key(p.read_bytes()) for p in (pub, site_pub))
    assert isinstance(nvidia, ec.EllipticCurvePublicKey) and isinstance(site_key, ec.EllipticCurvePublicKey)
    upstream = {idx.digest for idx in images.values()}
    checked = 0
    with httpx.Client(timeout=30) as http:
        for repository, image, version in values_references(values):
            repo_path = f"{repository}/{image}".removeprefix(f"{private.host}/")
            tags = [version] if resolve_at_mirror(http, private, repo_path, version) else \
                [d.tag for d in lock_dests if d.repository == repo_path and d.tag and d.tag.startswith(version + "-")]
            for tag in tags:
                digest = resolve_at_mirror(http, private, repo_path, tag)
                assert digest and digest not in upstream            # a rewritten index ...
                assert not signature_holds(http, private, repo_path, digest, nvidia)
                assert signature_holds(http, private, repo_path, digest, site_key)   # ... signed by the site
                checked += 1
    assert checked >= 10
