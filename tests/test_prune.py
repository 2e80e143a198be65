"""prune against a real docker-registry with deletes enabled, then its own garbage-collect and a real containerd.

Two driver indexes share their amd64 manifest; the kept one has a cosign-style
signature tag beside it; one image is in both plans; the site has a tag of its
own in a planned repository and a repository no plan names. After --apply and
garbage-collect, everything kept is byte-identical and pullable, the rest is gone.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner, Result
from kit.containerd import DEFAULT_BINARY, DEFAULT_CTR, Containerd, write_hosts_toml
from kit.images import Image, Index, make_image, make_index, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer, free_port

from mirrorkit.cli.main import main
from mirrorkit.plan import Plan, PlanImage

ACCEPT = ", ".join(["application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.docker.distribution.manifest.v2+json"])
PREFIX = "kse"


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def images() -> dict[str, Image | Index]:
    shared = make_image("driver/amd64", [make_layer("base/amd64", 24 << 10), make_layer("drv/amd64", 8 << 10)])
    old_arm = make_image("driver/arm64/old", [make_layer("base/arm64", 24 << 10), make_layer("drv/old", 96 << 10)],
                         ("linux", "arm64"))
    new_arm = make_image("driver/arm64/new", [make_layer("base/arm64", 24 << 10), make_layer("drv/new", 8 << 10)],
                         ("linux", "arm64"))
    old, new = make_index([shared, old_arm]), make_index([shared, new_arm])
    sig = {name: make_image(f"sig/{name}", [make_layer(f"sig/{name}", 200)]) for name in ("old", "new")}
    return {
        "nvidia/driver:old": old, "nvidia/driver:new": new,
        f"nvidia/driver:sha256-{old.digest[7:]}.sig": sig["old"],
        f"nvidia/driver:sha256-{new.digest[7:]}.sig": sig["new"],
        "nvidia/gpu-operator:v1": make_image("op/v1", [make_layer("base/amd64", 24 << 10),
                                                       make_layer("op/v1", 128 << 10)]),
        "nvidia/gpu-operator:v2": make_image("op/v2", [make_layer("base/amd64", 24 << 10),
                                                       make_layer("op/v2", 8 << 10)]),
        "nvidia/gpu-operator:site-pinned": make_image("op/site", [make_layer("op/site", 4 << 10)]),
        "nvidia/toolkit:v1": make_image("tk", [make_layer("tk", 8 << 10)]),
        "nvidia/toolkit:alias": make_image("tk", [make_layer("tk", 8 << 10)]),   # same manifest, second tag
        "nvidia/unplanned:x": make_image("un", [make_layer("un", 8 << 10)]),
    }


def write_plan(path: Path, registry: str, refs: list[str]) -> Path:
    plan = Plan(images=[PlanImage(source=f"nvcr.io/{r}", destination=f"{registry}/{r}",
                                  component=r.split("/")[-1].split(":")[0], reason="test") for r in refs],
                registry=registry)
    path.write_text(yaml.safe_dump(plan.to_dict(), sort_keys=False))
    return path


def raw(reg: RegistryServer, repo: str, ref: str) -> httpx.Response:
    return httpx.get(f"{reg.url}/v2/{PREFIX}/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})


@pytest.fixture
def seeded(registry_factory: Callable[..., RegistryServer], tmp_path: Path):
    reg = registry_factory()
    content = images()
    for name, item in content.items():
        repo, tag = name.split(":")
        push_image(reg.url, f"{PREFIX}/{repo}", tag, item)
    target = f"{reg.host}/{PREFIX}"
    old = write_plan(tmp_path / "old.yaml", target,
                     ["nvidia/driver:old", "nvidia/gpu-operator:v1", "nvidia/toolkit:v1", "nvidia/toolkit:alias"])
    new = write_plan(tmp_path / "new.yaml", target,
                     ["nvidia/driver:new", "nvidia/gpu-operator:v2", "nvidia/toolkit:v1"])
    return reg, content, old, new


def test_prune_dry_run_then_apply_keeps_everything_kept_byte_for_byte(seeded, tmp_path: Path) -> None:
    reg, content, old, new = seeded
    target = f"{reg.host}/{PREFIX}"
    args = ["prune", "--registry", target, "--keep", str(new), "--drop", str(old), "--insecure", reg.host]
    dry = cli(*args, "--format", "json")
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)
    old_idx, new_idx = content["nvidia/driver:old"], content["nvidia/driver:new"]
    assert isinstance(old_idx, Index) and isinstance(new_idx, Index)
    old_sig = f"sha256-{old_idx.digest[7:]}.sig"
    assert plan["applied"] is False
    assert {(t["repository"].split("/", 2)[2], t["tag"]) for t in plan["tags"]} == {
        ("nvidia/driver", "old"), ("nvidia/driver", old_sig), ("nvidia/gpu-operator", "v1")}
    assert {m["digest"] for m in plan["manifests"]} == {
        old_idx.digest, old_idx.images[1].digest, content[f"nvidia/driver:{old_sig}"].digest,
        content["nvidia/gpu-operator:v1"].digest}
    # the shared amd64 manifest, and the manifest the alias tag shares with the kept toolkit:v1
    # and the alias tag itself: distribution 2.x deletes a tag only with its manifest, which stays, so the
    # dry run lists it as kept rather than promise what --apply cannot do
    assert {m["digest"] for m in plan["kept"]} == {old_idx.images[0].digest, content["nvidia/toolkit:v1"].digest,
                                                   "alias"}
    assert plan["also_kept"] == [f"{target}/nvidia/toolkit:v1"]
    assert raw(reg, "nvidia/driver", "old").status_code == 200, "a dry run deletes nothing"
    text = cli(*args)
    assert "would delete 3 tags and 4 manifests" in text.stdout and "dry run" in text.stdout

    before = reg.storage_bytes()
    kept = {name: raw(reg, *name.split(":")).content for name in content
            if name.split(":")[1] not in ("old", "v1", old_sig, "alias") or name == "nvidia/toolkit:v1"}
    kept_children = {i.digest: i.manifest for i in new_idx.images}
    applied = cli(*args, "--apply")
    assert applied.exit_code == 0, applied.output
    # what the dry run listed is what --apply deleted: the alias stays (distribution 2.8 deletes no tag by
    # itself), and both runs said so
    assert "deleted 3 tags and 4 manifests" in applied.stdout
    assert f"{target}/nvidia/toolkit:alias" in applied.stdout and "points at a manifest a kept image" in applied.stdout
    assert "docker-registry garbage-collect" in applied.stdout
    reg.garbage_collect()
    assert reg.storage_bytes() < before - (200 << 10), "garbage collection freed the dropped layers"

    for name, data in kept.items():
        got = raw(reg, *name.split(":"))
        assert got.status_code == 200 and got.content == data, name
    for digest, data in kept_children.items():
        assert raw(reg, "nvidia/driver", digest).content == data
    for repo, ref in [("nvidia/driver", "old"), ("nvidia/driver", old_sig), ("nvidia/gpu-operator", "v1"),
                      ("nvidia/driver", old_idx.digest), ("nvidia/driver", old_idx.images[1].digest)]:
        assert raw(reg, repo, ref).status_code == 404, (repo, ref)
    for layer in (content["nvidia/gpu-operator:v1"].layers[1], old_idx.images[1].layers[1]):
        assert httpx.head(f"{reg.url}/v2/{PREFIX}/nvidia/gpu-operator/blobs/{layer.digest}").status_code == 404

    for name in (DEFAULT_BINARY, DEFAULT_CTR):
        assert shutil.which(name), f"{name} is not installed (Debian package 'containerd')"
    hosts = tmp_path / "certs.d"
    write_hosts_toml(hosts, "nvcr.io", reg.url, PREFIX, server=f"http://127.0.0.1:{free_port()}")
    with Containerd() as ctd:
        for ref in ("nvidia/driver:new", "nvidia/gpu-operator:v2", "nvidia/toolkit:v1"):
            ctd.pull(f"nvcr.io/{ref}", hosts_dir=hosts, all_platforms=True)
            assert ctd.image_digest(f"nvcr.io/{ref}") == content[ref].digest


def test_dropping_only_what_is_kept_is_refused(seeded) -> None:
    reg, _, old, new = seeded
    res = cli("prune", "--registry", f"{reg.host}/{PREFIX}", "--keep", str(old), "--keep", str(new),
              "--drop", str(old), "--insecure", reg.host)
    assert res.exit_code == 2
    assert f"{reg.host}/{PREFIX}/nvidia/driver:old" in res.output and "overlap" in res.output
    assert "Traceback" not in res.output


def test_plan_for_another_registry_is_refused_unless_named(seeded, tmp_path: Path) -> None:
    reg, _, _, new = seeded
    other = write_plan(tmp_path / "other.yaml", "mirror.example:5000/kse", ["nvidia/driver:old"])
    res = cli("prune", "--registry", f"{reg.host}/{PREFIX}", "--keep", str(new), "--drop", str(other),
              "--insecure", reg.host)
    assert res.exit_code == 2
    assert "other.yaml" in res.output and "mirror.example:5000/kse" in res.output
    assert raw(reg, "nvidia/driver", "old").status_code == 200


def test_registry_refusing_deletes_gives_one_line(registry_factory, tmp_path: Path) -> None:
    reg = registry_factory(delete=False)
    push_image(reg.url, f"{PREFIX}/nvidia/toolkit", "v1", make_image("tk", [make_layer("tk", 1 << 10)]))
    target = f"{reg.host}/{PREFIX}"
    keep = write_plan(tmp_path / "keep.yaml", target, ["nvidia/other:v1"])
    drop = write_plan(tmp_path / "drop.yaml", target, ["nvidia/toolkit:v1"])
    res = cli("prune", "--registry", target, "--keep", str(keep), "--drop", str(drop), "--insecure", reg.host,
              "--apply")
    assert res.exit_code == 1, res.output
    assert "refuses deletes" in res.output and "405" in res.output
    assert len(res.stderr.strip().splitlines()) == 1
    assert raw(reg, "nvidia/toolkit", "v1").status_code == 200


# -- what the cluster still runs, charts, and no --keep (issue 17, findings 8 and 9) ---------------------------

def _lock(path: Path, registry: str, images: dict[str, tuple[str, str]], charts: dict[str, str]) -> Path:
    """A lock for ``images`` (ref -> (component, digest)) and charts (tag -> manifest digest)."""
    plan = Plan(images=[PlanImage(source=f"nvcr.io/{r}", destination=f"{registry}/{r}", component=c, reason="t")
                        for r, (c, _) in images.items()], registry=registry)
    blobs = sorted({d for _, d in images.values()} | set(charts.values()))
    lock = {"apiVersion": "mirrorkit.dev/v1alpha1", "kind": "BundleLock", "id": path.stem, "created": "",
            "generator": "test", "plan": plan.to_dict(), "blobs": [{"digest": d, "size": 1} for d in blobs],
            "images": [{"source": f"nvcr.io/{r}", "destination": f"{registry}/{r}", "digest": d,
                        "media_type": "application/vnd.oci.image.manifest.v1+json"} for r, (_, d) in images.items()],
            "charts": [{"name": "gpu-operator", "version": tag, "tag": tag, "digest": d, "config": d, "layer": d,
                        "repository": f"{registry}/charts/gpu-operator"} for tag, d in charts.items()]}
    path.write_text(yaml.safe_dump(lock, sort_keys=False))
    return path


def test_prune_keeps_what_the_cluster_runs_and_takes_charts(registry_factory, tmp_path: Path) -> None:
    reg = registry_factory()
    target = f"{reg.host}/{PREFIX}"
    content = {name: make_image(name, [make_layer(name, 1024)]) for name in (
        "nvidia/driver:550.127.08-rhel9.4", "nvidia/driver:550.144.03-rhel9.4", "nvidia/gpu-operator:v1",
        "nvidia/gpu-operator:v2", "charts/gpu-operator:v1.0.0", "charts/gpu-operator:v2.0.0")}
    for name, item in content.items():
        repo, tag = name.split(":")
        push_image(reg.url, f"{PREFIX}/{repo}", tag, item)
    comp = {"driver": "nvidiadriver/inference", "gpu-operator": "operator"}

    def images(*names: str) -> dict[str, tuple[str, str]]:
        return {n: (comp[n.split("/")[1].split(":")[0]], content[n].digest) for n in names}

    old = _lock(tmp_path / "old.lock.yaml", target,
                images("nvidia/driver:550.127.08-rhel9.4", "nvidia/gpu-operator:v1"),
                {"v1.0.0": content["charts/gpu-operator:v1.0.0"].digest})
    new = _lock(tmp_path / "new.lock.yaml", target,
                images("nvidia/driver:550.144.03-rhel9.4", "nvidia/gpu-operator:v2"),
                {"v2.0.0": content["charts/gpu-operator:v2.0.0"].digest})
    args = ["prune", "--registry", target, "--keep", str(new), "--drop", str(old), "--insecure", reg.host,
            "--format", "json"]

    def tags(res: Result) -> set[str]:
        assert res.exit_code == 0, res.output
        return {f"{t['repository'].split('/', 2)[2]}:{t['tag']}" for t in json.loads(res.stdout)["tags"]}

    # prune cannot see the cluster: the pool's old driver may still run (helm upgrade never touched its CR)
    res = cli(*args)
    assert tags(res) == {"nvidia/gpu-operator:v1", "charts/gpu-operator:v1.0.0"}     # the old chart goes too
    in_use = json.loads(res.stdout)["in_use"]
    assert [i["image"] for i in in_use] == [f"{target}/nvidia/driver:550.127.08-rhel9.4"]
    assert "prune cannot tell whether a pool still runs them" in res.stdout
    # told what runs: a live NVIDIADriver still names 550.127.08, so it stays ...
    live = tmp_path / "in-use.yaml"
    live.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [
        {"kind": "NVIDIADriver", "metadata": {"name": "inference"},
         "spec": {"image": "driver", "repository": f"{target}/nvidia", "version": "550.127.08"}},
        {"kind": "Pod", "spec": {"containers": [{"image": f"{target}/nvidia/gpu-operator:v2"}]}}]}))
    res = cli(*args, "--in-use", str(live))
    assert tags(res) == {"nvidia/gpu-operator:v1", "charts/gpu-operator:v1.0.0"}
    assert "NVIDIADriver names driver 550.127.08" in json.loads(res.stdout)["in_use"][0]["why"]
    # ... and once it names 550.144.03, the old driver goes
    live.write_text(live.read_text().replace("550.127.08", "550.144.03"))
    res = cli(*args, "--in-use", str(live))
    assert tags(res) == {"nvidia/gpu-operator:v1", "charts/gpu-operator:v1.0.0", "nvidia/driver:550.127.08-rhel9.4"}
    applied = cli(*args, "--in-use", str(live), "--apply")
    assert json.loads(applied.stdout)["deleted"] == {"tags": 3, "manifests": 3}
    assert raw(reg, "charts/gpu-operator", "v1.0.0").status_code == 404
    assert raw(reg, "charts/gpu-operator", "v2.0.0").status_code == 200
    # without --keep: a warning, not silence
    res = CliRunner().invoke(main, ["prune", "--registry", target, "--drop", str(new), "--insecure", reg.host])
    assert res.exit_code == 0 and "warning: no --keep" in res.stderr
