"""Which packages each runtime-compiled node's driver installs, as the plan lists them (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mirrorkit.cli.main import main
from mirrorkit.errors import InputError
from mirrorkit.packages.needs import NodeNeed, need_from_dict, need_to_dict, plan_needs
from mirrorkit.plan import plan_from_dict

DATA = Path(__file__).parent / "data" / "clusters"
KV_U = "5.15.0-131-generic"
KV_R8 = "4.18.0-372.9.1.el8.x86_64"
KV_R9 = "5.14.0-427.13.1.el9_4.x86_64"


def plan(*args: str) -> tuple[dict, str]:
    res = CliRunner().invoke(main, ["plan", "--version", "v24.9.2", "--format", "json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout), res.stderr


def test_ubuntu_and_rpm_names_per_node() -> None:
    data, _ = plan("--node", f"ubuntu22.04/{KV_U}", "--node", f"rocky8.6/{KV_R8}", "--node", f"rhel9.4/{KV_R9}")
    by_os = {p["os"]: p for p in data["packages"]}
    u = by_os["ubuntu22.04"]
    assert (u["family"], u["kernel"], u["arch"]) == ("apt", KV_U, "amd64")
    assert u["names"] == [f"linux-headers-{KV_U}", f"linux-image-{KV_U}"]
    assert u["optional"] == [f"linux-modules-{KV_U}"]
    assert u["download_only"] == [f"linux-image-{KV_U}", f"linux-modules-{KV_U}"]
    assert u["driver_image"].endswith("-ubuntu22.04")
    assert by_os["rocky8.6"]["names"] == ["elfutils-libelf", "elfutils-libelf-devel", f"kernel-headers-{KV_R8}",
                                          f"kernel-devel-{KV_R8}", f"kernel-core-{KV_R8}"]
    assert by_os["rhel9.4"]["names"][-1] == f"kernel-{KV_R9}"
    assert by_os["rocky8.6"]["family"] == "rpm"


def test_precompiled_nodes_and_no_driver_packages_list_none() -> None:
    data, _ = plan("--node", f"ubuntu22.04/{KV_U}", "--precompiled", "--driver-branch", "550")
    assert "packages" not in data
    data, _ = plan("--node", f"ubuntu22.04/{KV_U}", "--no-driver-packages")
    assert "packages" not in data


def test_txt_lists_packages_as_comments() -> None:
    res = CliRunner().invoke(main, ["plan", "--version", "v24.9.2", "--node", f"ubuntu22.04/{KV_U}",
                                    "--format", "txt"])
    assert res.exit_code == 0
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("# packages")]
    assert lines == [f"# packages ubuntu22.04 {KV_U} amd64: linux-headers-{KV_U} linux-image-{KV_U} "
                     f"(linux-modules-{KV_U} optional)"]


def test_os_alias_takes_the_image_family_and_node_os() -> None:
    data, _ = plan("--node", f"rocky8.6/{KV_R8}", "--os-alias", "rocky8.6=centos8")
    (need,) = data["packages"]
    assert need["os"] == "rocky8.6" and need["family"] == "rpm"
    assert need["driver_image"].endswith("-centos8")


def test_nvidiadriver_pools_only_compiled_pools() -> None:
    data, _ = plan("--nodes-json", str(DATA / "nodes.json"), "--nvidiadriver", str(DATA / "nvidiadrivers.yaml"))
    got = {(p["os"], p["kernel"], p["arch"], tuple(p["nodes"])) for p in data["packages"]}
    # the training pool (gpu-a100-01) is precompiled: it needs nothing; the EKS node is in no pool
    assert got == {("rhel9.4", KV_R9, "amd64", ("gpu-l40s-01",)),
                   ("ubuntu22.04", "6.8.0-1008-nvidia-64k", "arm64", ("gh200-01",))}


def test_node_without_kernel_warns() -> None:
    data, stderr = plan("--node", "ubuntu22.04")
    assert "packages" not in data
    assert any("no kernel version" in w for w in data["warnings"])


def test_same_kernel_nodes_merge_and_round_trip() -> None:
    nodes = [NodeNeed("ubuntu22.04", "ubuntu", "22.04", KV_U, "amd64", n, "img:1") for n in ("a", "b", "a")]
    (need,) = plan_needs(nodes).needs
    assert need.nodes == ("a", "b")
    assert need_from_dict(need_to_dict(need), "x") == need
    assert plan_needs([NodeNeed("rhcos4.14", "rhcos", "4.14", "5.14.0", "amd64")]).needs == []


@pytest.mark.parametrize("bad, match", [
    ({"os": "ubuntu22.04", "family": "deb", "kernel": KV_U, "arch": "amd64", "names": ["a"]}, "family"),
    ({"os": "ubuntu22.04", "family": "apt", "kernel": "../x", "arch": "amd64", "names": ["a"]}, "kernel"),
    ({"os": "ubuntu22.04", "family": "apt", "kernel": KV_U, "arch": "amd64", "names": ["a b"]}, "names"),
    ({"os": "/etc", "family": "apt", "kernel": KV_U, "arch": "amd64", "names": ["a"]}, "'os'"),
])
def test_hostile_package_needs_refused(bad: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        need_from_dict(bad, "plan.yaml: packages[0]")


def test_plans_with_and_without_packages_load() -> None:
    data, _ = plan("--node", f"ubuntu22.04/{KV_U}")
    assert plan_from_dict(data, "p").packages == data["packages"]
    del data["packages"]
    assert plan_from_dict(data, "p").packages == []
    data["packages"] = [{"os": "ubuntu22.04\nx", "family": "apt", "kernel": KV_U, "arch": "amd64"}]
    with pytest.raises(InputError, match="one-line"):
        plan_from_dict(data, "p")


def test_runbook_gains_the_package_steps(tmp_path: Path) -> None:
    data, _ = plan("--node", f"ubuntu22.04/{KV_U}")
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    res = CliRunner().invoke(main, ["runbook", str(path), "--registry", "harbor.local/gpu"])
    assert res.exit_code == 0, res.output
    # a plan carries no packages yet: the runbook says how to carry them, and prints no step that would exit 2
    assert "--package-source OS=FILE" in res.stdout and "--packages-dir" not in res.stdout
    assert f"ubuntu22.04 {KV_U}" in res.stdout
    data, _ = plan("--node", f"ubuntu22.04/{KV_U}", "--no-driver-packages")
    path.write_text(json.dumps(data))
    assert "--package-source" not in CliRunner().invoke(main, ["runbook", str(path), "--registry", "r.local"]).stdout


def test_helm_values_gain_repo_config_with_package_url(tmp_path: Path) -> None:
    data, _ = plan("--node", f"ubuntu22.04/{KV_U}", "--registry", "harbor.local/gpu")
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    res = CliRunner().invoke(main, ["rewrite-config", str(path), "--format", "helm", "--package-url",
                                    "http://pk.local/gpu", "--package-ca", str(ca)])
    assert res.exit_code == 0, res.output
    import yaml

    values = yaml.safe_load(res.stdout)
    assert values["driver"]["repoConfig"] == {"configMapName": "mirrorkit-driver-repos"}
    assert values["driver"]["certConfig"] == {"name": "mirrorkit-driver-ca"}
    res = CliRunner().invoke(main, ["rewrite-config", str(path), "--format", "helm", "--package-url",
                                    "http://user:pw@pk.local"])
    assert res.exit_code == 2 and "credentials" in res.output and "pw" not in res.output
    res = CliRunner().invoke(main, ["rewrite-config", str(path), "--format", "driver-repo", "--package-url",
                                    "http://pk.local"])
    assert res.exit_code == 2 and "needs the bundle" in res.output
