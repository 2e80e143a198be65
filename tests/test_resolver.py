"""The resolver against every shipped release: the images the operator will pull, and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirrorkit.errors import InputError
from mirrorkit.plan import Plan, plan_from_dict, render
from mirrorkit.refs import Ref, RegistryTarget
from mirrorkit.resolve.catalog import known_releases, load_release
from mirrorkit.resolve.nodes import load_nodes_json, parse_node_spec
from mirrorkit.resolve.ostag import os_tag
from mirrorkit.resolve.resolver import PlanRequest, resolve

DATA = Path(__file__).parent / "data"
UBUNTU = parse_node_spec("ubuntu22.04/5.15.0-131-generic")

# facts read from each release's chart values.yaml and NFD subchart (driver version, toolkit,
# device plugin, NFD appVersion, dcgm-exporter)
RELEASES = {
    "v1.9.0": ("470.82.01", "nvcr.io/nvidia/k8s/container-toolkit:1.7.2-ubuntu18.04", "nvcr.io/nvidia/k8s-device-plugin:v0.10.0-ubi8", "v0.8.2", "nvcr.io/nvidia/k8s/dcgm-exporter:2.3.1-2.6.0-ubuntu20.04"),  # noqa: E501
    "v22.9.2": ("525.60.13", "nvcr.io/nvidia/k8s/container-toolkit:v1.11.0-ubuntu20.04", "nvcr.io/nvidia/k8s-device-plugin:v0.13.0-ubi8", "v0.10.1", "nvcr.io/nvidia/k8s/dcgm-exporter:3.1.3-3.1.2-ubuntu20.04"),  # noqa: E501
    "v23.3.2": ("525.105.17", "nvcr.io/nvidia/k8s/container-toolkit:v1.13.0-ubuntu20.04", "nvcr.io/nvidia/k8s-device-plugin:v0.14.0-ubi8", "v0.12.1", "nvcr.io/nvidia/k8s/dcgm-exporter:3.1.7-3.1.4-ubuntu20.04"),  # noqa: E501
    "v23.6.2": ("535.104.05", "nvcr.io/nvidia/k8s/container-toolkit:v1.13.4-ubuntu20.04", "nvcr.io/nvidia/k8s-device-plugin:v0.14.1-ubi8", "v0.13.1", "nvcr.io/nvidia/k8s/dcgm-exporter:3.1.8-3.1.5-ubuntu20.04"),  # noqa: E501
    "v23.9.2": ("550.54.14", "nvcr.io/nvidia/k8s/container-toolkit:v1.14.6-ubuntu20.04", "nvcr.io/nvidia/k8s-device-plugin:v0.14.5-ubi8", "v0.14.2", "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.0-3.2.0-ubuntu22.04"),  # noqa: E501
    "v24.3.0": ("550.54.15", "nvcr.io/nvidia/k8s/container-toolkit:v1.15.0-ubuntu20.04", "nvcr.io/nvidia/k8s-device-plugin:v0.15.0-ubi8", "v0.15.4", "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.5-3.4.1-ubuntu22.04"),  # noqa: E501
    "v24.6.2": ("550.90.07", "nvcr.io/nvidia/k8s/container-toolkit:v1.16.2-ubuntu20.04", "nvcr.io/nvidia/k8s-device-plugin:v0.16.2-ubi8", "v0.16.3", "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.7-3.5.0-ubuntu22.04"),  # noqa: E501
    "v24.9.2": ("550.144.03", "nvcr.io/nvidia/k8s/container-toolkit:v1.17.4-ubuntu20.04", "nvcr.io/nvidia/k8s-device-plugin:v0.17.0", "v0.16.6", "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04"),  # noqa: E501
    "v25.3.4": ("580.82.07", "nvcr.io/nvidia/k8s/container-toolkit:v1.17.8-ubuntu20.04", "nvcr.io/nvidia/k8s-device-plugin:v0.17.4", "v0.17.3", "nvcr.io/nvidia/k8s/dcgm-exporter:4.3.1-4.4.0-ubuntu22.04"),  # noqa: E501
    "v25.10.1": ("580.105.08", "nvcr.io/nvidia/k8s/container-toolkit:v1.18.1", "nvcr.io/nvidia/k8s-device-plugin:v0.18.1", "v0.18.2", "nvcr.io/nvidia/k8s/dcgm-exporter:4.4.2-4.7.0-distroless"),  # noqa: E501
    "v26.3.3": ("580.126.20", "nvcr.io/nvidia/k8s/container-toolkit:v1.19.1", "nvcr.io/nvidia/k8s-device-plugin:v0.19.3", "v0.18.3", "nvcr.io/nvidia/k8s/dcgm-exporter:4.5.3-4.8.2-distroless"),  # noqa: E501
    "v26.7.0": ("595.91.07", "nvcr.io/nvidia/k8s/container-toolkit:v1.20.0", "nvcr.io/nvidia/k8s-device-plugin:v0.20.0", "v0.19.0", "nvcr.io/nvidia/k8s/dcgm-exporter:4.6.0-4.8.3-distroless"),  # noqa: E501
}

SEED_000 = """
docker.io/kubesphere/node-feature-discovery:v0.14.2
nvcr.io/nvidia/cloud-native/dcgm:3.3.0-1-ubuntu22.04
nvcr.io/nvidia/cloud-native/gpu-operator-validator:v23.9.2
nvcr.io/nvidia/cloud-native/k8s-cc-manager:v0.1.1
nvcr.io/nvidia/cloud-native/k8s-driver-manager:v0.6.5
nvcr.io/nvidia/cloud-native/k8s-kata-manager:v0.1.2
nvcr.io/nvidia/cloud-native/k8s-mig-manager:v0.6.0-ubuntu20.04
nvcr.io/nvidia/cloud-native/vgpu-device-manager:v0.2.4
nvcr.io/nvidia/cuda:12.3.2-base-ubi8
nvcr.io/nvidia/gpu-feature-discovery:v0.8.2-ubi8
nvcr.io/nvidia/gpu-operator:v23.9.2
nvcr.io/nvidia/k8s-device-plugin:v0.14.5-ubi8
nvcr.io/nvidia/k8s/container-toolkit:v1.14.6-ubuntu20.04
nvcr.io/nvidia/k8s/dcgm-exporter:3.3.0-3.2.0-ubuntu22.04
nvcr.io/nvidia/kubevirt-gpu-device-plugin:v1.2.4
""".split()  # noqa: SIM905 - kept in the guide's one-per-line form


def plan_for(version: str, **kw) -> Plan:
    kw.setdefault("nodes", [UBUNTU])
    return resolve(PlanRequest(image_list=load_release(version, kw.pop("flavor", "helm")), **kw))


def sources(plan: Plan) -> set[str]:
    return {i.source for i in plan.images}


def test_every_required_release_is_shipped() -> None:
    assert set(RELEASES) <= set(known_releases())
    assert known_releases()[0] == "v1.9.0" and known_releases()[-1] == "v26.7.0"


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_release_default_images(release: str) -> None:
    driver, toolkit, device_plugin, nfd, exporter = RELEASES[release]
    plan = plan_for(release)
    got = sources(plan)
    assert f"nvcr.io/nvidia/driver:{driver}-ubuntu22.04" in got
    assert {toolkit, device_plugin, exporter} <= got
    assert f"nvcr.io/nvidia/gpu-operator:{release}" in got
    nfd_refs = [s for s in got if "/nfd/node-feature-discovery:" in s]
    assert len(nfd_refs) == 1 and nfd_refs[0].endswith(f":{nfd}")
    assert any("cuda-sample:vectoradd" in s for s in got)
    # sandbox operands stay out unless sandboxWorkloads.enabled
    assert not any("kubevirt-gpu-device-plugin" in s or "vgpu-device-manager" in s for s in got)
    for img in plan.images:
        Ref.parse(img.source)
        assert img.reason


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_release_all_components_superset(release: str) -> None:
    enabled = sources(plan_for(release))
    everything = plan_for(release, components="all")
    # v1.9.0 switches on everything it has; later releases ship operands off by default
    assert enabled < sources(everything) if release != "v1.9.0" else enabled == sources(everything)
    # the vGPU manager placeholder is reported, never invented
    assert not any("vgpu-manager:" in s for s in sources(everything))
    if load_release(release).component("vgpuManager"):
        assert any("vgpuManager" in w for w in everything.warnings)


def test_components_all_names_why_off() -> None:
    plan = plan_for("v23.9.2", components="all")
    gds = next(i for i in plan.images if i.component == "gds")
    assert gds.source == "nvcr.io/nvidia/cloud-native/nvidia-fs:2.17.5-ubuntu22.04"
    assert "gds.enabled=False" in gds.reason


@pytest.mark.parametrize(("release", "os_id", "version", "expected"), [
    ("v23.9.2", "rhel", "9.4", "rhel9.4"),
    ("v25.10.1", "rocky", "9.4", "rocky9.4"),
    ("v26.3.3", "rocky", "9.4", "rocky9"),
    ("v26.3.3", "rhel", "9.4", "rhel9.4"),
    ("v26.3.3", "rhel", "10.0", "rhel10"),
    ("v26.3.3", "ol", "9.3", "ol9.3"),
    ("v26.7.0", "rhel", "9.4", "rhel9"),
    ("v26.7.0", "ol", "9.3", "ol9"),
    ("v26.7.0", "rhcos", "4.14", "rhcos4.14"),
    ("v26.7.0", "ubuntu", "24.04", "ubuntu24.04"),
    ("v1.9.0", "centos", "7", "centos7"),
])
def test_os_tag_rules(release: str, os_id: str, version: str, expected: str) -> None:
    assert os_tag(release, os_id, version) == expected
    node = parse_node_spec(f"{os_id}{version}/5.14.0-427.13.1.el9_4.x86_64")
    driver = [i for i in plan_for(release, nodes=[node]).images if i.component == "driver"]
    assert driver[0].source.endswith(f"-{expected}")


def test_precompiled_one_image_per_distinct_kernel() -> None:
    nodes = [parse_node_spec(s) for s in (
        "ubuntu22.04/5.15.0-131-generic", "ubuntu22.04/5.15.0-140-generic",
        "ubuntu22.04/5.15.0-131-generic/arm64")]
    plan = plan_for("v24.9.2", nodes=nodes, precompiled=True, driver_branch="550")
    drivers = sorted(i.source for i in plan.images if i.component == "driver")
    assert drivers == ["nvcr.io/nvidia/driver:550-5.15.0-131-generic-ubuntu22.04",
                       "nvcr.io/nvidia/driver:550-5.15.0-140-generic-ubuntu22.04"]
    reasons = {i.reason for i in plan.images if i.component == "driver"}
    assert "precompiled driver for kernel 5.15.0-140-generic on ubuntu22.04" in reasons
    assert plan.driver == {"precompiled": True, "version": "550"}


def test_precompiled_branch_defaults_to_the_release_driver_branch() -> None:
    plan = plan_for("v23.9.2", precompiled=True)
    assert "nvcr.io/nvidia/driver:550-5.15.0-131-generic-ubuntu22.04" in sources(plan)


def test_runtime_compiled_ignores_kernels() -> None:
    nodes = [parse_node_spec("ubuntu22.04/5.15.0-131-generic"), parse_node_spec("ubuntu22.04/6.8.0-1-generic")]
    plan = plan_for("v24.9.2", nodes=nodes)
    assert [i.source for i in plan.images if i.component == "driver"] == [
        "nvcr.io/nvidia/driver:550.144.03-ubuntu22.04"]


def test_precompiled_needs_kernel_and_a_release_that_has_it() -> None:
    with pytest.raises(InputError, match="kernel"):
        plan_for("v24.9.2", nodes=[parse_node_spec("ubuntu22.04")], precompiled=True)
    with pytest.raises(InputError, match="v23.3.0"):
        plan_for("v22.9.2", precompiled=True)


def test_driver_needs_nodes() -> None:
    with pytest.raises(InputError, match="--node"):
        plan_for("v23.9.2", nodes=[])
    plan = plan_for("v23.9.2", nodes=[], values={"driver": {"enabled": False}})
    assert not any(i.component == "driver" for i in plan.images)


def test_nodes_json_counts_only_gpu_nodes() -> None:
    nodes, warnings = load_nodes_json(DATA / "nodes.json")
    assert [n.name for n in nodes] == ["gpu-a", "gpu-b", "gpu-c"]
    assert warnings == []
    c = nodes[2]
    assert (c.os, c.kernel, c.arch) == ("ubuntu22.04", "5.15.0-131-generic", "arm64")
    plan = plan_for("v23.9.2", nodes=nodes, precompiled=True, driver_branch="535")
    assert sorted(i.source for i in plan.images if i.component == "driver") == [
        "nvcr.io/nvidia/driver:535-5.15.0-131-generic-ubuntu22.04",
        "nvcr.io/nvidia/driver:535-5.15.0-140-generic-ubuntu22.04"]


def test_nodes_json_without_gpu_labels_takes_every_node(tmp_path: Path) -> None:
    f = tmp_path / "n.json"
    f.write_text('{"items": [{"metadata": {"name": "n1"}, "status": {"nodeInfo": {'
                 '"osImage": "Red Hat Enterprise Linux 9.4 (Plow)", "kernelVersion": '
                 '"5.14.0-427.13.1.el9_4.x86_64", "architecture": "amd64"}}}]}')
    nodes, warnings = load_nodes_json(f)
    assert [(n.os_id, n.os_version) for n in nodes] == [("rhel", "9.4")]
    assert "treating every node" in warnings[0]


def test_values_override_versions_repositories_and_switches() -> None:
    values = {
        "driver": {"version": "535.161.08", "repository": "my.mirror/nvidia"},
        "toolkit": {"enabled": False},
        "dcgm": {"enabled": True},
        "devicePlugin": {"version": "v0.15.0"},
        "node-feature-discovery": {"image": {"repository": "my.mirror/nfd", "tag": "v0.15.0"}},
        "nfd": {"enabled": True},
    }
    got = sources(plan_for("v23.9.2", values=values))
    assert "my.mirror/nvidia/driver:535.161.08-ubuntu22.04" in got
    assert not any("container-toolkit" in s for s in got)
    assert "nvcr.io/nvidia/cloud-native/dcgm:3.3.0-1-ubuntu22.04" in got
    assert "nvcr.io/nvidia/k8s-device-plugin:v0.15.0" in got
    assert "my.mirror/nfd:v0.15.0" in got
    no_nfd = sources(plan_for("v23.9.2", values={"nfd": {"enabled": False}}))
    assert not any("node-feature-discovery" in s for s in no_nfd)


def test_values_use_precompiled_takes_branch_from_driver_version() -> None:
    values = {"driver": {"usePrecompiled": True, "version": "535"}}
    got = sources(plan_for("v24.3.0", values=values))
    assert "nvcr.io/nvidia/driver:535-5.15.0-131-generic-ubuntu22.04" in got


def test_sandbox_workloads_bring_sandbox_operands() -> None:
    got = sources(plan_for("v23.9.2", values={"sandboxWorkloads": {"enabled": True}}))
    assert "nvcr.io/nvidia/kubevirt-gpu-device-plugin:v1.2.4" in got
    assert "nvcr.io/nvidia/cloud-native/vgpu-device-manager:v0.2.4" in got
    assert "nvcr.io/nvidia/cloud-native/k8s-driver-manager:v0.6.2" in got  # vfioManager's
    assert not any("kata-manager" in s for s in got)  # kataManager.enabled is false


def test_sandbox_mode_picks_one_device_plugin() -> None:
    kubevirt = sources(plan_for("v26.7.0", values={"sandboxWorkloads": {"enabled": True}}))
    kata = sources(plan_for("v26.7.0", values={"sandboxWorkloads": {"enabled": True, "mode": "kata"}}))
    assert any("kubevirt-gpu-device-plugin" in s for s in kubevirt)
    assert not any("nvidia-sandbox-device-plugin" in s for s in kubevirt)
    assert any("nvidia-sandbox-device-plugin" in s for s in kata)
    assert not any("kubevirt-gpu-device-plugin" in s for s in kata)


def test_vgpu_manager_enabled_without_repository_is_an_error() -> None:
    values = {"sandboxWorkloads": {"enabled": True}, "vgpuManager": {"enabled": True}}
    with pytest.raises(InputError, match="vgpuManager"):
        plan_for("v23.9.2", values=values)
    values["vgpuManager"].update(repository="site.local/nvidia", version="550.54.16")
    got = sources(plan_for("v23.9.2", values=values))
    assert "site.local/nvidia/vgpu-manager:550.54.16-ubuntu22.04" in got


def test_kubesphere_extension_config_is_unwrapped() -> None:
    values = {"gpu-operator": {"driver": {"version": "550-5.15.0-131-generic"}, "dcgm": {"enabled": True}}}
    got = sources(plan_for("v23.9.2", values=values))
    assert "nvcr.io/nvidia/driver:550-5.15.0-131-generic-ubuntu22.04" in got
    assert any("/dcgm:" in s for s in got)


def test_kubesphere_flavor_reproduces_seed_000() -> None:
    plan = plan_for("v23.9.2", flavor="kubesphere", precompiled=True, driver_branch="550",
                    include_sample=False)
    expected = set(SEED_000) | {"nvcr.io/nvidia/driver:550-5.15.0-131-generic-ubuntu22.04"}
    assert sources(plan) == expected
    dcgm = next(i for i in plan.images if i.component == "dcgm")
    assert "offline guide" in dcgm.reason


def test_os_alias_serves_rocky_from_centos_image() -> None:
    node = parse_node_spec("rocky8.5/4.18.0-348.el8.x86_64")
    plan = plan_for("v1.9.0", nodes=[node], os_aliases={"rocky8.5": "centos8"},
                    registry=RegistryTarget.parse("homelab.net/nvcr.io"), mapping="prefix")
    driver = next(i for i in plan.images if i.component == "driver")
    assert driver.source == "nvcr.io/nvidia/driver:470.82.01-centos8"
    assert driver.destination == "homelab.net/nvcr.io/nvidia/driver:470.82.01-rocky8.5"
    assert "centos8" in driver.reason and "rocky8.5" in driver.reason


def test_digest_pinned_driver_gets_no_suffix() -> None:
    digest = "sha256:" + "1" * 64
    plan = plan_for("v23.9.2", values={"driver": {"version": digest}})
    assert f"nvcr.io/nvidia/driver@{digest}" in sources(plan)


def test_mixed_os_versions_warn_about_cluster_policy() -> None:
    nodes = [parse_node_spec("ubuntu22.04/5.15.0-131-generic"), parse_node_spec("ubuntu20.04/5.4.0-1-generic")]
    plan = plan_for("v23.9.2", nodes=nodes)
    assert {"nvcr.io/nvidia/driver:550.54.14-ubuntu22.04", "nvcr.io/nvidia/driver:550.54.14-ubuntu20.04"} <= \
        sources(plan)
    assert any("nvidiaDriverCRD" in w for w in plan.warnings)


def test_validator_and_node_status_exporter_share_one_entry() -> None:
    plan = plan_for("v23.9.2", components="all")
    entries = [i for i in plan.images if i.source.endswith("gpu-operator-validator:v23.9.2")]
    assert len(entries) == 1 and entries[0].component == "validator,nodeStatusExporter"


def test_extras_only_plan_without_release() -> None:
    plan = resolve(PlanRequest(extras=[("busybox:1.36", "--image")],
                               registry=RegistryTarget.parse("reg.local:5000/mirror")))
    assert [(i.source, i.destination) for i in plan.images] == [
        ("docker.io/library/busybox:1.36", "reg.local:5000/mirror/library/busybox:1.36")]


def test_plan_round_trips_through_yaml_and_json() -> None:
    import json

    import yaml

    plan = plan_for("v23.9.2", registry=RegistryTarget.parse("reg.local/kse"))
    again = plan_from_dict(yaml.safe_load(render(plan, "yaml")), "plan.yaml")
    assert [vars(i) for i in again.images] == [vars(i) for i in plan.images]
    doc = json.loads(render(plan, "json"))
    first = doc["images"][0]
    assert {"source", "destination", "digest", "component", "reason"} <= set(first)
    assert first["digest"] is None
    txt = [ln for ln in render(plan, "txt").splitlines() if not ln.startswith("# packages ")]
    assert txt == sorted(txt) and len(txt) == len(set(txt))
