"""mirrorkit runbook: the steps filled in with the plan's real values, as Markdown and as a script."""

from __future__ import annotations

import subprocess
from pathlib import Path

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
    from mirrorkit.cli.rewrite import _volumes_for

    assert [p.name for p in _volumes_for(lock)] == ["gpu.000.tar", "gpu.001.tar"]


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
    from mirrorkit.plan import load_plan
    from mirrorkit.rewrite.runbook import RunbookInput, markdown

    plan = load_plan(write_plan(tmp_path))
    dest = destination_map(plan, [(i.source, i.destination) for i in plan.images], None, None)
    charts = [{"name": "gpu-operator", "version": "v23.9.2", "repository": "old.local/charts/gpu-operator"}]
    text = markdown(RunbookInput(plan=plan, dest=dest, source_name="gpu.tar", charts=charts))
    assert f"helm install --wait gpu-operator oci://{REG}/charts/gpu-operator --version v23.9.2" in text
    assert "carry `gpu-operator-v23.9.2.tgz`" not in text


def test_checksum_step_works_from_anywhere(tmp_path: Path) -> None:
    import hashlib

    from mirrorkit.rewrite.runbook import _checksum

    folder = tmp_path / "usb"
    folder.mkdir()
    vol = folder / "gpu.tar"
    vol.write_bytes(b"bundle bytes")
    (folder / "gpu.tar.sha256").write_text(f"{hashlib.sha256(b'bundle bytes').hexdigest()}  gpu.tar\n")
    ok = subprocess.run(["bash", "-c", _checksum(str(vol))], cwd="/", capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    vol.write_bytes(b"tampered")
    bad = subprocess.run(["bash", "-c", _checksum(str(vol))], cwd="/", capture_output=True, text=True, check=False)
    assert bad.returncode != 0


def test_runbook_carries_the_tls_choices(tmp_path: Path) -> None:
    text = run("runbook", str(write_plan(tmp_path)), "--insecure", "harbor.site.local", "--format", "shell")
    assert "mirrorkit push-bundle bundles/gpu.tar --registry \"$REGISTRY\" --insecure harbor.site.local" in text
    text = run("runbook", str(write_plan(tmp_path)), "--ca-cert", "/etc/pki/mirror.crt")
    assert "--ca-cert /etc/pki/mirror.crt" in text
