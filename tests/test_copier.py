"""The copier end to end on real registries and real skopeo: plan -> pull-bundle -> push-bundle -> verify.

An "upstream" registry plays nvcr.io (reached with --source-endpoint), a "private" one
is the air-gapped side. Images are built by the tests: OCI indexes sharing a base
layer, a Docker manifest list, a single-platform manifest.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner, Result
from kit.images import Image, Index, make_image, make_index, make_layer, unique_blobs
from kit.push import push_image
from kit.registryd import RegistryServer

from mirrorkit.cli.main import main

ARCHES = ("amd64", "arm64")
PRIVATE_PREFIX = "kse"


def build(version: str = "1") -> dict[str, Image | Index]:
    base = {a: make_layer(f"ubi8/{a}", 48 << 10) for a in ARCHES}
    dbase = {a: make_layer(f"ubi8/{a}", 48 << 10, docker=True) for a in ARCHES}

    def oci(name: str, own: str) -> Index:
        return make_index([make_image(f"{name}/{a}/{own}", [base[a], make_layer(f"{name}/{a}/{own}", 16 << 10)],
                                      ("linux", a)) for a in ARCHES])

    return {
        "nvidia/gpu-operator:v23.9.2": oci("gpu-operator", version),
        "nvidia/cloud-native/gpu-operator-validator:v23.9.2": oci("validator", "1"),
        "nvidia/k8s-device-plugin:v0.14.5-ubi8": make_index([
            make_image(f"dp/{a}", [dbase[a], make_layer(f"dp/{a}", 8 << 10, docker=True)], ("linux", a), docker=True)
            for a in ARCHES]),
        "nvidia/cloud-native/k8s-driver-manager:v0.6.5": make_image(
            "driver-manager", [base["amd64"], make_layer("driver-manager", 4 << 10)]),
    }


def seed(reg: RegistryServer, images: dict[str, Image | Index]) -> None:
    for name, content in images.items():
        repo, tag = name.split(":")
        push_image(reg.url, repo, tag, content)


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def make_plan(tmp: Path, upstream: RegistryServer, private: RegistryServer, *extra: str, name: str = "plan") -> Path:
    out = tmp / f"{name}.yaml"
    args = ["plan", "--registry", f"{private.host}/{PRIVATE_PREFIX}", "--resolve",
            "--source-endpoint", f"nvcr.io=http://{upstream.host}", "-o", str(out), *extra]
    for ref in build():
        args += ["--image", f"nvcr.io/{ref}"]
    res = cli(*args)
    assert res.exit_code == 0, res.output
    return out


def pull(plan: Path, out: Path, upstream: RegistryServer, *extra: str) -> dict:
    res = cli("pull-bundle", str(plan), "-o", str(out), "--source-endpoint", f"nvcr.io=http://{upstream.host}",
              "--format", "json", *extra)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def push(private: RegistryServer, *paths: Path, expect: int = 0) -> Result:
    res = cli("push-bundle", *map(str, paths), "--insecure", private.host, "--format", "json")
    assert res.exit_code == expect, res.output
    return res


def catalog(reg: RegistryServer) -> list[str]:
    return httpx.get(f"{reg.url}/v2/_catalog").json()["repositories"] or []


def registry_digest(reg: RegistryServer, repo: str, tag: str) -> str:
    r = httpx.get(f"{reg.url}/v2/{repo}/manifests/{tag}", headers={"Accept": ", ".join([
        "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"])})
    r.raise_for_status()
    import hashlib
    return "sha256:" + hashlib.sha256(r.content).hexdigest()


@pytest.fixture
def pair(registry_factory):
    upstream, private = registry_factory(), registry_factory()
    seed(upstream, build())
    return upstream, private


def test_round_trip_digest_for_digest(tmp_path: Path, pair) -> None:
    upstream, private = pair
    plan = make_plan(tmp_path, upstream, private)
    bundle = tmp_path / "gpu.tar"
    report = pull(plan, bundle, upstream)
    images = build()
    expected_unique = sum(b.size for b in unique_blobs(images.values()).values())
    expected_unique += sum(len(c.manifest) if isinstance(c, Image) else len(c.data) for c in images.values())
    expected_unique += sum(len(i.manifest) for c in images.values() if isinstance(c, Index) for i in c.images)
    assert report["images"] == 4 and report["unique_bytes"] == expected_unique
    assert report["bytes_saved_by_sharing"] > 0
    # every blob stored once in the tar, named by its digest
    with tarfile.open(bundle) as tar:
        names = [m.name for m in tar.getmembers() if m.name.startswith("blobs/sha256/") and m.isfile()]
    assert len(names) == len(set(names))
    assert (tmp_path / "gpu.tar.sha256").is_file() and (tmp_path / "gpu.lock.yaml").is_file()

    res = push(private, bundle)
    rep = json.loads(res.stdout)
    assert rep["images_pushed"] == 4 and rep["verified"] == 4 and rep["problems"] == []
    for name, content in images.items():
        repo, tag = name.split(":")
        assert registry_digest(private, f"{PRIVATE_PREFIX}/{repo}", tag) == content.digest

    res = cli("verify", str(plan), "--insecure", private.host)
    assert res.exit_code == 0, res.output
    assert "4 of 4 images present" in res.stderr

    # no-change reruns do nothing
    again = pull(plan, bundle, upstream)
    assert again["up_to_date"] is True
    rep2 = json.loads(push(private, bundle).stdout)
    assert rep2["images_pushed"] == 0 and rep2["bytes_uploaded"] == 0 and rep2["images_skipped"] == 4


def test_pinned_rerun_walks_no_manifest_and_a_new_pin_pulls_again(tmp_path: Path, pair,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan that pins every digest the lock was written from is up to date without reading a manifest
    (content addressing: the same digests name the same blobs); a changed pin is not."""
    from mirrorkit.transfer.engine import Engine

    upstream, private = pair
    plan = make_plan(tmp_path, upstream, private)
    bundle = tmp_path / "gpu.tar"
    pull(plan, bundle, upstream)
    before = bundle.read_bytes()
    walk = Engine.walk

    def no_walk(self: Engine, roots: list) -> list:
        raise AssertionError("a pinned, unchanged plan must not walk manifests")

    monkeypatch.setattr(Engine, "walk", no_walk)
    assert pull(plan, bundle, upstream)["up_to_date"] is True
    assert bundle.read_bytes() == before
    monkeypatch.setattr(Engine, "walk", walk)
    # one image changes upstream and a new plan pins it: pulled again
    push_image(upstream.url, "nvidia/gpu-operator", "v23.9.2", build("2")["nvidia/gpu-operator:v23.9.2"])
    plan2 = make_plan(tmp_path, upstream, private, name="plan2")
    again = pull(plan2, bundle, upstream)
    assert again["up_to_date"] is False and again["copied"] == 4 - again["reused"]
    assert bundle.read_bytes() != before
    # and a plan restricted to one platform is another bundle, not the same one
    plan3 = make_plan(tmp_path, upstream, private, "--platform", "linux/amd64", name="plan3")
    assert pull(plan3, bundle, upstream)["up_to_date"] is False


def test_verify_reports_missing_and_different(tmp_path: Path, pair, registry_factory) -> None:
    upstream, private = pair
    plan = make_plan(tmp_path, upstream, private)
    res = cli("verify", str(plan), "--insecure", private.host, "--format", "json")
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["passed"] is False and len(doc["missing"]) == 4
    # one image present with other content
    other = build("2")["nvidia/gpu-operator:v23.9.2"]
    push_image(private.url, f"{PRIVATE_PREFIX}/nvidia/gpu-operator", "v23.9.2", other)
    doc = json.loads(cli("verify", str(plan), "--insecure", private.host, "--format", "json").stdout)
    assert len(doc["different"]) == 1 and "gpu-operator" in doc["different"][0]


def test_differential_bundle_since(tmp_path: Path, pair, registry_factory) -> None:
    upstream, private = pair
    plan = make_plan(tmp_path, upstream, private)
    first = tmp_path / "gpu.tar"
    pull(plan, first, upstream)
    push(private, first)
    # one image changes upstream
    new = build("2")
    push_image(upstream.url, "nvidia/gpu-operator", "v23.9.2", new["nvidia/gpu-operator:v23.9.2"])
    plan2 = make_plan(tmp_path, upstream, private, name="plan2")
    second = tmp_path / "gpu-next.tar"
    rep = pull(plan2, second, upstream, "--since", str(tmp_path / "gpu.lock.yaml"))
    assert rep["omitted_bytes"] > 0
    with tarfile.open(second) as tar:
        carried = {m.name for m in tar.getmembers() if m.name.startswith("blobs/sha256/")}
    new_layers = {b.digest[7:] for b in unique_blobs([new["nvidia/gpu-operator:v23.9.2"]]).values()}
    old_layers = {b.digest[7:] for b in unique_blobs(build().values()).values()}
    assert {f"blobs/sha256/{d}" for d in new_layers - old_layers} <= carried
    assert not {f"blobs/sha256/{d}" for d in old_layers} & carried

    # into an empty registry the differential bundle is refused before anything is pushed
    empty = registry_factory()
    res = cli("push-bundle", str(second), "--registry", f"{empty.host}/{PRIVATE_PREFIX}", "--insecure", empty.host)
    assert res.exit_code == 1 and "depends on" in res.stderr
    assert catalog(empty) == []

    rep = json.loads(push(private, second).stdout)
    assert rep["images_pushed"] == 1 and rep["problems"] == []
    assert registry_digest(private, f"{PRIVATE_PREFIX}/nvidia/gpu-operator", "v23.9.2") == \
        new["nvidia/gpu-operator:v23.9.2"].digest


def test_have_inventory_leaves_out_what_the_registry_holds(tmp_path: Path, pair) -> None:
    upstream, private = pair
    plan = make_plan(tmp_path, upstream, private)
    first = tmp_path / "gpu.tar"
    pull(plan, first, upstream)
    push(private, first)
    inv = tmp_path / "inventory.json"
    res = cli("inventory", "--registry", f"{private.host}/{PRIVATE_PREFIX}", "--insecure", private.host, "-o", str(inv))
    assert res.exit_code == 0, res.output
    doc = json.loads(inv.read_text())
    assert len(doc["repositories"]) == 4
    rep = pull(plan, tmp_path / "again.tar", upstream, "--have", str(inv))
    assert rep["omitted_bytes"] > 0
    with tarfile.open(tmp_path / "again.tar") as tar:
        carried = {m.name[13:] for m in tar.getmembers() if m.name.startswith("blobs/sha256/") and m.isfile()}
    layer_digests = {d[7:] for d in doc["blobs"]}
    assert not carried & layer_digests


def test_split_volumes_in_any_order(tmp_path: Path, pair, registry_factory) -> None:
    upstream, private = pair
    plan = make_plan(tmp_path, upstream, private)
    rep = pull(plan, tmp_path / "gpu.tar", upstream, "--split", "100kB")
    vols = [Path(v) for v in rep["volumes"]]
    assert len(vols) >= 3
    for v in vols:
        assert Path(f"{v}.sha256").is_file()
    out = json.loads(push(private, *reversed(vols)).stdout)
    assert out["images_pushed"] == 4 and out["problems"] == []


def test_corrupted_blob_refused_before_any_push(tmp_path: Path, pair) -> None:
    upstream, private = pair
    plan = make_plan(tmp_path, upstream, private)
    bundle = tmp_path / "gpu.tar"
    pull(plan, bundle, upstream)
    with tarfile.open(bundle) as tar:
        member = next(m for m in tar.getmembers() if m.name.startswith("blobs/sha256/") and m.size > 1000)
    data = bytearray(bundle.read_bytes())
    data[member.offset_data + 100] ^= 0xFF
    bundle.write_bytes(bytes(data))
    res = cli("push-bundle", str(bundle), "--insecure", private.host)
    assert res.exit_code == 2, res.output
    assert member.name.split("/")[-1][:12] in res.stderr or "sha256" in res.stderr
    assert catalog(private) == []


def test_interrupted_push_completes_uploading_only_the_rest(tmp_path: Path, pair) -> None:
    upstream, private = pair
    plan = make_plan(tmp_path, upstream, private)
    bundle = tmp_path / "gpu.tar"
    pull(plan, bundle, upstream)
    # a first push that got as far as one image's blobs
    content = build()["nvidia/gpu-operator:v23.9.2"]
    push_image(private.url, f"{PRIVATE_PREFIX}/nvidia/gpu-operator", "partial", content)
    rep = json.loads(push(private, bundle).stdout)
    assert rep["blobs_skipped"] >= 4 and rep["problems"] == []


def test_one_platform_plan_tags_the_platform_manifest_itself(tmp_path: Path, pair) -> None:
    upstream, private = pair
    plan = make_plan(tmp_path, upstream, private, "--platform", "linux/amd64")
    bundle = tmp_path / "amd64.tar"
    pull(plan, bundle, upstream)
    lock = (tmp_path / "amd64.lock.yaml").read_text()
    # the lock says what the bundle holds, not what the upstream offers
    held = {i["source"]: i for i in yaml.safe_load(lock)["images"]}
    assert "the tag names that platform's manifest" in held["nvcr.io/nvidia/gpu-operator:v23.9.2"]["note"]
    assert held["nvcr.io/nvidia/gpu-operator:v23.9.2"]["platforms"] == ["linux/amd64"]
    assert held["nvcr.io/nvidia/cloud-native/k8s-driver-manager:v0.6.5"]["platforms"] == ["linux/amd64"]
    content = build()["nvidia/gpu-operator:v23.9.2"]
    [amd64] = [i for i in content.images if i.platform == ("linux", "amd64")]
    assert held["nvcr.io/nvidia/gpu-operator:v23.9.2"]["digest"] == amd64.digest
    assert held["nvcr.io/nvidia/gpu-operator:v23.9.2"]["planned_digest"] == content.digest
    push(private, bundle)
    # the tag names the published amd64 manifest (its signature still holds), not a one-entry index
    assert registry_digest(private, f"{PRIVATE_PREFIX}/nvidia/gpu-operator", "v23.9.2") == amd64.digest


def test_mirror_registry_to_registry(tmp_path: Path, pair) -> None:
    upstream, private = pair
    plan = make_plan(tmp_path, upstream, private)
    res = cli("mirror", str(plan), "--source-endpoint", f"nvcr.io=http://{upstream.host}", "--insecure",
              private.host, "--format", "json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["copied"] == 4 and rep["verified"] == 4
    for name, content in build().items():
        repo, tag = name.split(":")
        assert registry_digest(private, f"{PRIVATE_PREFIX}/{repo}", tag) == content.digest
    again = json.loads(cli("mirror", str(plan), "--source-endpoint", f"nvcr.io=http://{upstream.host}",
                           "--insecure", private.host, "--format", "json").stdout)
    assert again["copied"] == 0 and again["skipped"] == 4


def test_one_source_with_two_destinations_is_pushed_verified_and_mirrored_to_both(tmp_path: Path, pair,
                                                                                   registry_factory) -> None:
    """Rocky 8.5 and 8.6 nodes both served by the centos8 driver: one source, two tags at the mirror."""
    upstream, private = pair
    plan = make_plan(tmp_path, upstream, private)
    doc = yaml.safe_load(plan.read_text())
    one = next(i for i in doc["images"] if i["source"].endswith("k8s-driver-manager:v0.6.5"))
    tags = ("470.82.01-rocky8.5", "470.82.01-rocky8.6")
    one.update(destination=one["destination"].rsplit(":", 1)[0] + ":" + tags[0], target_tag=tags[0])
    doc["images"].append({**one, "destination": one["destination"].rsplit(":", 1)[0] + ":" + tags[1],
                          "target_tag": tags[1]})
    plan.write_text(yaml.safe_dump(doc, sort_keys=False))
    digest = build()["nvidia/cloud-native/k8s-driver-manager:v0.6.5"].digest
    repo = f"{PRIVATE_PREFIX}/nvidia/cloud-native/k8s-driver-manager"

    bundle = tmp_path / "gpu.tar"
    pull(plan, bundle, upstream)
    rep = json.loads(push(private, bundle).stdout)
    assert rep["images_pushed"] == 5 and rep["verified"] == 5
    assert [registry_digest(private, repo, t) for t in tags] == [digest, digest]
    res = cli("verify", str(bundle), "--insecure", private.host, "--format", "json")
    assert res.exit_code == 0 and len(json.loads(res.stdout)["ok"]) == 5
    # another image under the second tag: verify notices (a map keyed by source checked one tag twice)
    push_image(private.url, repo, tags[1], build()["nvidia/gpu-operator:v23.9.2"])
    res = cli("verify", str(bundle), "--insecure", private.host, "--format", "json")
    assert res.exit_code == 1 and len(json.loads(res.stdout)["different"]) == 1
    assert tags[1] in json.loads(res.stdout)["different"][0]
    other = registry_factory()
    res = cli("mirror", str(plan), "--source-endpoint", f"nvcr.io=http://{upstream.host}", "--registry",
              f"{other.host}/{PRIVATE_PREFIX}", "--insecure", other.host, "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["verified"] == 5
    assert [registry_digest(other, repo, t) for t in tags] == [digest, digest]


def test_containerd_pulls_upstream_names_from_the_private_registry(tmp_path: Path, pair) -> None:
    """The node's view: after push-bundle, containerd resolves nvcr.io/... through hosts.toml."""
    from kit.containerd import Containerd, write_hosts_toml
    from kit.registryd import free_port

    upstream, private = pair
    plan = make_plan(tmp_path, upstream, private)
    bundle = tmp_path / "gpu.tar"
    pull(plan, bundle, upstream)
    push(private, bundle)
    upstream.stop()  # the air gap: nothing but the private registry is reachable now
    hosts = tmp_path / "certs.d"
    write_hosts_toml(hosts, "nvcr.io", f"http://{private.host}", PRIVATE_PREFIX,
                     server=f"http://127.0.0.1:{free_port()}")
    with Containerd() as ctrd:
        for name, content in build().items():
            ref = f"nvcr.io/{name}"
            ctrd.pull(ref, hosts_dir=hosts, platform="linux/amd64")
            assert ctrd.image_digest(ref) == content.digest
        assert sorted(ctrd.images()) == sorted(f"nvcr.io/{n}" for n in build())


def test_push_to_a_registry_with_credentials_from_stdin(tmp_path: Path, registry_factory) -> None:
    upstream, locked = registry_factory(), registry_factory(auth=True)
    seed(upstream, build())
    plan = make_plan(tmp_path, upstream, locked)
    bundle = tmp_path / "gpu.tar"
    pull(plan, bundle, upstream)
    res = CliRunner().invoke(main, ["push-bundle", str(bundle), "--insecure", locked.host])
    assert res.exit_code == 1 and "credentials" in res.stderr
    res = CliRunner().invoke(main, ["push-bundle", str(bundle), "--insecure", locked.host,
                                    "--registry", f"{locked.host}/{PRIVATE_PREFIX}", "--username", "alice",
                                    "--password-stdin", "--format", "json"], input="s3cret-Pa55\n")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["verified"] == 4
    assert "s3cret-Pa55" not in res.output
    res = CliRunner().invoke(main, ["push-bundle", str(bundle), "--registry", locked.host, "--username", "alice"])
    assert res.exit_code == 2 and "--password-stdin" in res.stderr
