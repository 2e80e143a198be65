"""diff between plans and locks, and the upgrade runbook built on it (every mirrorkit line it prints is accepted)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from pathlib import Path

import yaml
from click.testing import CliRunner, Result
from kit import cosign

from mirrorkit.cli.main import main
from mirrorkit.plan import render
from mirrorkit.refs import RegistryTarget
from mirrorkit.resolve.catalog import load_release
from mirrorkit.resolve.nodes import parse_node_spec
from mirrorkit.resolve.resolver import PlanRequest, resolve

REG = "harbor.site.local/gpu"


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def write_plan(path: Path, release: str, driver: str) -> Path:
    plan = resolve(PlanRequest(image_list=load_release(release, "helm"), driver_version=driver,
                               nodes=[parse_node_spec("ubuntu22.04/5.15.0-131-generic")],
                               registry=RegistryTarget.parse(REG)))
    path.write_text(render(plan, "yaml"))
    return path


def fake_digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def write_lock(path: Path, plan_path: Path, moved: str | None = None) -> Path:
    """A bundle lock for the plan: every image with a digest (``moved``'s differs), as pull-bundle writes."""
    plan = yaml.safe_load(plan_path.read_text())
    images, blobs = [], []
    for img in plan["images"]:
        digest = fake_digest(img["source"] + ("moved" if img["source"] == moved else ""))
        images.append({"source": img["source"], "destination": img["destination"], "digest": digest,
                       "media_type": "application/vnd.oci.image.index.v1+json", "platforms": ["linux/amd64"]})
        blobs.append({"digest": digest, "size": 512})
    lock = {"apiVersion": "mirrorkit.dev/v1alpha1", "kind": "BundleLock", "id": "test-" + path.stem,
            "created": "2026-01-01T00:00:00Z", "generator": "test", "images": images, "blobs": blobs, "plan": plan}
    path.write_text(yaml.safe_dump(lock, sort_keys=False))
    return path


def test_diff_json_between_releases(tmp_path: Path) -> None:
    old = write_plan(tmp_path / "old.yaml", "v23.9.2", "550.127.05")
    new = write_plan(tmp_path / "new.yaml", "v24.9.2", "570.86.15")
    res = cli("diff", str(old), str(new), "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert set(data) == {"added", "removed", "changed"}
    assert "nvcr.io/nvidia/driver:570.86.15-ubuntu22.04" in data["added"]
    assert "nvcr.io/nvidia/driver:550.127.05-ubuntu22.04" in data["removed"]
    assert {"component": "driver", "from": "550.127.05", "to": "570.86.15"} in data["changed"]
    assert {"component": "operator", "from": "v23.9.2", "to": "v24.9.2"} in data["changed"]
    assert all(set(c) == {"component", "from", "to"} for c in data["changed"])
    text = cli("diff", str(old), str(new)).stdout
    assert "driver" in text and "550.127.05 \u2192 570.86.15" in text
    assert cli("diff", str(old), str(new), "--exit-code").exit_code == 1


def test_diff_sees_a_digest_moving_under_the_same_tag(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.yaml", "v23.9.2", "550.127.05")
    moved = "nvcr.io/nvidia/gpu-operator:v23.9.2"
    a, b = write_lock(tmp_path / "a.lock.yaml", plan), write_lock(tmp_path / "b.lock.yaml", plan, moved=moved)
    data = json.loads(cli("diff", str(a), str(b), "--format", "json").stdout)
    assert data == {"added": [], "removed": [], "changed": [
        {"component": "operator", "from": f"{moved}@{fake_digest(moved)}",
         "to": f"{moved}@{fake_digest(moved + 'moved')}"}]}
    same = cli("diff", str(plan), str(a), "--exit-code")
    assert same.exit_code == 0 and same.stdout == "no differences\n"


def test_diff_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Plan\napiVersion: nope\n")
    res = cli("diff", str(bad), str(bad))
    assert res.exit_code == 2 and "bad.yaml" in res.output and "Traceback" not in res.output


def _mirrorkit_lines(text: str) -> list[list[str]]:
    """Every mirrorkit command in the text: whole lines of code blocks and scripts, and inline `mirrorkit ...`."""
    found = []
    for line in text.splitlines():
        line = line.strip().removeprefix("# Connected side, before the trip: ")
        if line.startswith("mirrorkit "):
            found.append(line.rstrip(" \\"))
        found += re.findall(r"`(mirrorkit [^`]+)`", line)
    return [shlex.split(c.replace('"$REGISTRY"', REG).replace('"$VERIFY_KEY"', "nvidia.pub"), comments=True)[1:]
            for c in found]


def _accepts(args: list[str]) -> None:
    """Parse the line exactly as the CLI would (options, choices, paths that must exist), without running it."""
    ctx = main.make_context("mirrorkit", list(args), resilient_parsing=True)
    command = main.get_command(ctx, args[0])
    assert command is not None, args
    command.make_context(args[0], list(args[1:]), parent=ctx)


def test_upgrade_runbook_steps_and_every_mirrorkit_line_is_accepted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cosign.write_public_key(cosign.make_key("p256"), tmp_path / "nvidia.pub")
    old_plan = write_plan(tmp_path / "old.yaml", "v23.9.2", "550.127.05")
    old = write_lock(tmp_path / "gpu-v23.9.2.lock.yaml", old_plan)
    write_plan(tmp_path / "new.yaml", "v24.9.2", "570.86.15")
    md = cli("runbook", "new.yaml", "--upgrade-from", old.name, "--insecure", "harbor.site.local")
    assert md.exit_code == 0, md.output
    text = md.stdout
    assert "Upgrade: NVIDIA GPU Operator v23.9.2 → v24.9.2" in text
    assert "550.127.05 → 570.86.15" in text
    assert f"--since {old.name}" in text
    assert "Helm does not upgrade them" in text and "gpu-operator/crds/" in text
    assert text.index("kubectl apply --server-side") < text.index("helm upgrade --wait gpu-operator")
    assert "-f values-airgap.yaml" in text and "--reuse-values`" in text
    assert "maxParallelUpgrades: 1" in text and "nvidia.com/gpu-driver-upgrade-state" in text
    assert "drain:" in text and "gpuPodDeletion" in text
    assert text.index(f"mirrorkit verify {old.name}") < text.index("helm upgrade")
    assert text.index("mirrorkit verify new.yaml") > text.index("helm upgrade")
    sh = cli("runbook", "new.yaml", "--upgrade-from", old.name, "--format", "shell")
    assert sh.exit_code == 0 and sh.stdout.startswith("#!/usr/bin/env bash")

    lines = _mirrorkit_lines(text) + _mirrorkit_lines(sh.stdout)
    assert {a[0] for a in lines} >= {"diff", "verify", "pull-bundle", "push-bundle", "rewrite-config", "prune"}
    os.makedirs("bundles")
    Path("bundles/gpu-operator-v24.9.2.tar").write_bytes(b"")
    Path("in-use.yaml").write_text("")              # the runbook's kubectl get … -o yaml > in-use.yaml
    for args in lines:
        _accepts(args)
        if args[0] in ("diff", "rewrite-config"):            # these need no registry: run them for real
            res = cli(*args)
            assert res.exit_code == 0, (args, res.output)
    assert Path("values-airgap.yaml").read_text().count("570.86.15") == 1


def test_upgrade_from_a_plan_explains_the_inventory_route(tmp_path: Path) -> None:
    old = write_plan(tmp_path / "old.yaml", "v24.9.2", "550.127.05")
    new = write_plan(tmp_path / "new.yaml", "v24.9.2", "550.127.05")
    text = cli("runbook", str(new), "--upgrade-from", str(old)).stdout
    assert "pull-bundle" in text.split("```sh")[2] and "--since" not in text.split("```sh")[2].split("```")[0]
    inventory = [a for a in _mirrorkit_lines(text) if a[0] == "inventory"]
    assert inventory == [["inventory", "--registry", REG, "-o", "inventory.json"]]
    _accepts(inventory[0])
    assert "--have inventory.json" in text and "no differences" in text
    assert "Neither the driver image nor the driver manager (its init container) changes" in text


def test_any_volume_or_the_lock_names_every_volume_of_a_split_bundle(tmp_path: Path) -> None:
    from mirrorkit.bundle.volumes import bundle_volumes

    names = ["gpu.001.tar", "gpu.002.tar", "gpu.003.tar", "gpu.lock.yaml", "gpu2.001.tar", "gpu.001.tar.sha256"]
    for name in names:
        (tmp_path / name).write_text("")
    expected = [tmp_path / n for n in ("gpu.001.tar", "gpu.002.tar", "gpu.003.tar")]
    for given in ("gpu.002.tar", "gpu.lock.yaml"):
        assert bundle_volumes(tmp_path / given) == expected


def test_bundle_volumes_finds_the_names_the_writer_gives_past_999_volumes(tmp_path: Path) -> None:
    from mirrorkit.bundle.volumes import bundle_volumes, volume_paths

    written = volume_paths(tmp_path / "gpu.tar", 1001, split=True)
    assert written[-1].name == "gpu.1000.tar"
    for path in written:
        path.write_text("")
    (tmp_path / "gpu.lock.yaml").write_text("")
    assert bundle_volumes(tmp_path / "gpu.1000.tar") == written
    assert bundle_volumes(tmp_path / "gpu.lock.yaml") == written
