"""mirrorkit runbook: the steps filled in with the plan's real values, as Markdown and as a script."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from mirrorkit.cli.main import main
from mirrorkit.plan import render
from mirrorkit.refs import RegistryTarget
from mirrorkit.resolve.catalog import load_release
from mirrorkit.resolve.nodes import parse_node_spec
from mirrorkit.resolve.resolver import PlanRequest, resolve

REG = "harbor.site.local/gpu"


def write_plan(tmp: Path, flavor: str = "helm", precompiled: bool = True) -> Path:
    plan = resolve(PlanRequest(image_list=load_release("v23.9.2", flavor),
                               nodes=[parse_node_spec("ubuntu22.04/5.15.0-131-generic")], precompiled=precompiled,
                               driver_branch="550" if precompiled else None, registry=RegistryTarget.parse(REG)))
    path = tmp / "plan.yaml"
    path.write_text(render(plan, "yaml"))
    return path


def run(*args: str) -> str:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


def test_markdown_runbook_for_helm(tmp_path: Path) -> None:
    text = run("runbook", str(write_plan(tmp_path)))
    assert "NVIDIA GPU Operator v23.9.2" in text
    assert f"--registry {REG}" in text and "mirrorkit push-bundle" in text and "mirrorkit verify" in text
    assert "helm install --wait gpu-operator nvidia/gpu-operator --version v23.9.2" in text
    assert "-f values-airgap.yaml" in text
    assert "Precompiled drivers" in text and "550-<kernel>-<os>" in text
    assert "nvidia.com/mig.config" in text and "mig.strategy" in text
    assert f'image: "{REG}/nvidia/k8s/cuda-sample:vectoradd-cuda11.7.1-ubuntu20.04"' in text
    assert "nvidia-driver-daemonset-" in text and "nvidia-cuda-validator-xxxxx   0/1   Completed" in text
    assert "helm uninstall gpu-operator" in text


def test_runtime_compiled_driver_needs_a_package_repository(tmp_path: Path) -> None:
    text = run("runbook", str(write_plan(tmp_path, precompiled=False)))
    assert "kernel headers" in text and "driver.repoConfig.configMapName" in text


def test_kubesphere_runbook_has_extension_steps(tmp_path: Path) -> None:
    text = run("runbook", str(write_plan(tmp_path, flavor="kubesphere")))
    assert "KubeSphere Marketplace" in text and "--format kubesphere" in text
    assert "helm install" not in text and "Uninstall" in text


def test_runbook_names_the_bundle_volumes_and_checksums(tmp_path: Path) -> None:
    plan = write_plan(tmp_path)
    lock = tmp_path / "gpu.lock.yaml"
    lock.write_text(plan.read_text())  # only the name matters for finding volumes here
    for name in ("gpu.000.tar", "gpu.001.tar"):
        (tmp_path / name).write_bytes(b"x")
        (tmp_path / f"{name}.sha256").write_text(f"{'ab' * 32}  {name}\n")
    (tmp_path / "other.tar").write_bytes(b"y")
    from mirrorkit.bundle.volumes import bundle_volumes

    assert [p.name for p in bundle_volumes(lock)] == ["gpu.000.tar", "gpu.001.tar"]
    text = run("runbook", str(lock))
    assert f"`{tmp_path / 'gpu.001.tar'}` — sha256 `{'ab' * 32}`" in text


def test_shell_runbook_is_valid_bash(tmp_path: Path) -> None:
    out = tmp_path / "install.sh"
    run("runbook", str(write_plan(tmp_path)), "--format", "shell", "-o", str(out))
    text = out.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert f"REGISTRY={REG}" in text and "helm install" in text
    proc = subprocess.run(["bash", "-n", str(out)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_runbook_installs_the_bundled_chart_from_the_registry(tmp_path: Path) -> None:
    from mirrorkit.destinations import destination_map
    from mirrorkit.lock import LockChart
    from mirrorkit.plan import load_plan
    from mirrorkit.rewrite.runbook import RunbookInput, markdown

    plan = load_plan(write_plan(tmp_path))
    dest = destination_map(plan, [(i.source, i.destination) for i in plan.images], None, None)
    d = "sha256:" + "0" * 64
    charts = [LockChart("gpu-operator", "v23.9.2", d, d, d, "old.local/charts/gpu-operator", "v23.9.2")]
    text = markdown(RunbookInput(plan=plan, dest=dest, source_name="gpu.tar", charts=charts))
    assert f"helm install --wait gpu-operator oci://{REG}/charts/gpu-operator --version v23.9.2" in text
    assert "carry `gpu-operator-v23.9.2.tgz`" not in text


def test_checksum_step_works_from_anywhere(tmp_path: Path) -> None:
    import hashlib

    from mirrorkit.destinations import destination_map
    from mirrorkit.plan import load_plan
    from mirrorkit.rewrite.runbook import RunbookInput, markdown

    folder = tmp_path / "usb"
    folder.mkdir()
    vol = folder / "gpu.tar"
    vol.write_bytes(b"bundle bytes")
    (folder / "gpu.tar.sha256").write_text(f"{hashlib.sha256(b'bundle bytes').hexdigest()}  gpu.tar\n")
    plan = load_plan(str(write_plan(tmp_path)))
    dest = destination_map(plan, [(i.source, i.destination) for i in plan.images], None, None)
    text = markdown(RunbookInput(plan=plan, dest=dest, source_name="plan.yaml", volumes=[(str(vol), None)]))
    [step] = [line for line in text.splitlines() if "sha256sum -c" in line]     # the runbook's own line
    ok = subprocess.run(["bash", "-c", step], cwd="/", capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    vol.write_bytes(b"tampered")
    bad = subprocess.run(["bash", "-c", step], cwd="/", capture_output=True, text=True, check=False)
    assert bad.returncode != 0


def test_runbook_carries_the_tls_choices(tmp_path: Path) -> None:
    text = run("runbook", str(write_plan(tmp_path)), "--insecure", "harbor.site.local", "--format", "shell")
    assert "mirrorkit push-bundle bundles/gpu.tar --registry \"$REGISTRY\" --insecure harbor.site.local" in text
    text = run("runbook", str(write_plan(tmp_path)), "--ca-cert", "/etc/pki/mirror.crt")
    assert "--ca-cert /etc/pki/mirror.crt" in text


# ---- hostile plans and locks: refused with exit 2, or written inert ---------------------------------

HOSTILE = "v23.9.2\n'; rm -rf / #"


def _lock_file(tmp: Path, plan_path: Path, chart: dict | None = None) -> Path:
    """A bundle lock embedding the plan (and, given, one chart entry) as pull-bundle would write it."""
    import yaml

    d = "sha256:" + "1" * 64
    data = {"apiVersion": "mirrorkit.dev/v1alpha1", "kind": "BundleLock", "id": "b1", "created": "", "generator": "",
            "depends_on": [], "images": [], "blobs": [{"digest": d, "size": 1}], "omitted": [],
            "charts": [chart] if chart else [], "plan": yaml.safe_load(plan_path.read_text())}
    path = tmp / "gpu.lock.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _chart(version: str, tag: str | None = None, repository: str = f"{REG}/charts/gpu-operator") -> dict:
    d = "sha256:" + "1" * 64
    return {"name": "gpu-operator", "version": version, "tag": tag or version, "repository": repository,
            "digest": d, "config": d, "layer": d, "media_type": "application/vnd.oci.image.manifest.v1+json"}


def _edit_plan(path: Path, **fields: object) -> Path:
    import yaml

    data = yaml.safe_load(path.read_text())
    data.update(fields)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _refused(*args: str) -> str:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(res.stderr.strip().splitlines()) == 1, res.stderr
    return res.stderr


@pytest.mark.parametrize(("field", "value", "message"), [
    ("release", HOSTILE, "'release'"),
    ("release", "v23.9.2'; rm -rf /", "not a GPU Operator release"),
    ("flavor", "helm\nrm -rf /", "'flavor'"),
    ("flavor", "openshift", "not one of helm, kubesphere"),
    ("registry", "harbor.site.local\n[[registry]]", "'registry'"),
    ("registry", "harbor.site.local/gpu'; rm -rf /", "'registry'"),
    ("generator", "mirrorkit\x1b[2J", "'generator'"),
    ("warnings", ["ok", "two\nlines"], "'warnings[1]'"),
    ("nodes", [{"name": "gpu-1\n- evil", "os": "ubuntu22.04", "arch": "amd64"}], "nodes[0].name"),
    ("nodes", [{"name": "gpu-1", "kernel": "5.15.0-1-generic"}], "nodes[0].os"),
])
@pytest.mark.parametrize("in_lock", [False, True])
def test_hostile_plan_fields_are_refused(tmp_path: Path, field: str, value: object, message: str,
                                         in_lock: bool) -> None:
    source = _edit_plan(write_plan(tmp_path), **{field: value})
    if in_lock:
        source = _lock_file(tmp_path, source)
    for fmt in ("shell", "markdown"):
        err = _refused("runbook", str(source), "--format", fmt)
        assert str(source) in err and message in err, err
    for fmt in ("containerd", "registries-conf", "idms", "helm"):
        assert message in _refused("rewrite-config", str(source), "--format", fmt, "-o", str(tmp_path / "out"))


@pytest.mark.parametrize(("chart", "message"), [
    (_chart("1.0.0\n'; rm -rf /", tag="1.0.0"), "invalid chart version"),
    (_chart("v23.9.2", tag="v23.9.2'; rm -rf /"), "invalid chart tag"),
    (_chart("v23.9.2", repository="reg.local/charts/gpu-operator\n#"), "'repository'"),
    (_chart("v23.9.2", repository="reg.local/charts/gpu-operator --post-renderer=/tmp/x"), "chart repository"),
    ({**_chart("v23.9.2"), "name": "gpu-operator; rm -rf /"}, "invalid chart name"),
])
def test_hostile_chart_entries_are_refused(tmp_path: Path, chart: dict, message: str) -> None:
    lock = _lock_file(tmp_path, write_plan(tmp_path), chart)
    err = _refused("runbook", str(lock), "--format", "shell")
    assert f"{lock}: charts[0]" in err and message in err, err
    assert message in _refused("rewrite-config", str(lock), "--format", "set-flags")


def _run_inert(script: str, tmp: Path) -> Path:
    """Run a written runbook with every command it calls stubbed; a stub ``rm`` leaves a mark if it ever runs."""
    stubs = tmp / "stubs"
    stubs.mkdir()
    mark = tmp / "INJECTED"
    for name in ("mirrorkit", "helm", "kubectl", "sha256sum"):
        (stubs / name).write_text("#!/bin/sh\nexit 0\n")
    for name in ("rm", "touch", "id"):
        (stubs / name).write_text(f"#!/bin/sh\necho \"$0 $*\" >> {mark}\n")
    for p in stubs.iterdir():
        p.chmod(0o755)
    path = tmp / "install.sh"
    path.write_text(script)
    proc = subprocess.run([shutil.which("bash") or "bash", str(path)], capture_output=True, text=True, check=False,
                          cwd=tmp, env={"PATH": str(stubs)})
    assert proc.returncode == 0, proc.stderr
    assert not mark.exists(), mark.read_text()
    return path


@pytest.mark.parametrize("flavor", ["helm", "kubesphere"])
def test_shell_runbook_quotes_every_value(tmp_path: Path, flavor: str) -> None:
    """Values that got past the reader anyway (a Plan built in code, odd file names) stay inert in the script."""
    from mirrorkit.destinations import destination_map
    from mirrorkit.lock import LockChart
    from mirrorkit.plan import load_plan
    from mirrorkit.rewrite.runbook import RunbookInput, shell
    from mirrorkit.rewrite.runbook_upgrade import UpgradeInput, upgrade_shell

    plan = load_plan(write_plan(tmp_path, flavor=flavor))
    dest = destination_map(plan, [(i.source, i.destination) for i in plan.images], None, None)
    plan.release = "v1'; touch x; echo '\nrm -rf / #"
    d = "sha256:" + "0" * 64
    charts = [LockChart("gpu-operator", "v1", d, d, d, "reg.local/charts/gpu-operator", "v1$(id)'\nrm -rf /")]
    volume = str(tmp_path / "gpu'$(rm -rf x)\nrm -rf y.tar")
    inp = RunbookInput(plan=plan, dest=dest, source_name="b'; rm -rf /.tar", charts=charts,
                       volumes=[(volume, None)], namespace="gpu'; rm -rf /")
    _run_inert(shell(inp), tmp_path)
    up = UpgradeInput(new=RunbookInput(plan=plan, dest=dest, source_name="new'\nrm -rf /.tar", namespace="n",
                                       volumes=[(str(tmp_path / "up" / "v'\nrm -rf z.tar"), None)]),
                      old_plan=plan, old_source="old'; rm -rf /", old_is_bundle=True, changes="")
    (tmp_path / "up").mkdir()
    _run_inert(upgrade_shell(up), tmp_path / "up")


@pytest.mark.parametrize("fmt", ["containerd", "registries-conf", "idms", "nvidiadriver", "helm"])
def test_a_lock_whose_plan_has_an_image_without_destination_is_refused(tmp_path: Path, fmt: str) -> None:
    """The lock's images and its plan's images both go through destination_map: none is left unplaced."""
    import yaml

    plan_path = write_plan(tmp_path)
    data = yaml.safe_load(plan_path.read_text())
    del data["registry"]
    data["images"][0]["destination"] = None
    plan_path.write_text(yaml.safe_dump(data, sort_keys=False))
    lock = _lock_file(tmp_path, plan_path)
    err = _refused("rewrite-config", str(lock), "--format", fmt, "-o", str(tmp_path / "out"))
    assert "has no destination" in err


def test_config_headers_keep_a_hostile_release_inside_the_comment(tmp_path: Path) -> None:
    """Writers handed a Plan built in code (not read and checked) still cannot be made to write a line."""
    from mirrorkit.destinations import destination_map
    from mirrorkit.plan import load_plan
    from mirrorkit.rewrite.containerd import containerd_hosts
    from mirrorkit.rewrite.helm import image_overlay
    from mirrorkit.rewrite.idms import mirror_sets
    from mirrorkit.rewrite.registries_conf import registries_conf
    from mirrorkit.rewrite.valuesfile import rewrite_values

    plan = load_plan(write_plan(tmp_path))
    dest = destination_map(plan, [(i.source, i.destination) for i in plan.images], None, None)
    plan.release = "v23.9.2\n[[registry]] # INJECTED\nlocation = 'evil'\r\nINJECTED: 1"
    texts = [registries_conf(plan, dest), mirror_sets(plan, dest)[0], *containerd_hosts(plan, dest).values(),
             rewrite_values(image_overlay(plan, dest), plan.release, "helm", None).text]
    for text in texts:
        assert "\r" not in text
        for line in text.splitlines():
            assert "INJECTED" not in line or line.startswith("#"), text
