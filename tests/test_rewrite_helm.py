"""rewrite-config for Helm, KubeSphere and --set: the emitted values make the operator pull only mirrored images."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mirrorkit.cli.main import main
from mirrorkit.destinations import destination_map
from mirrorkit.plan import render
from mirrorkit.refs import RegistryTarget
from mirrorkit.resolve.catalog import known_releases, load_release
from mirrorkit.resolve.nodes import parse_node_spec
from mirrorkit.resolve.resolver import PlanRequest, resolve
from mirrorkit.rewrite import helm

REGISTRY = "dockerhub.kubekey.local/kse"
NODES = {
    "ubuntu": [parse_node_spec("ubuntu22.04/5.15.0-131-generic"), parse_node_spec("ubuntu22.04/5.15.0-140-generic")],
    "rhel": [parse_node_spec("rhel9.4/5.14.0-427.13.1.el9_4.x86_64")],
}


def make_plan(release: str, flavor: str = "helm", nodes: str = "ubuntu", **kw):
    return resolve(PlanRequest(image_list=load_release(release, flavor), nodes=NODES[nodes],
                               registry=RegistryTarget.parse(REGISTRY), **kw))


def overlay_for(plan, **kw) -> helm.Overlay:
    dest = destination_map(plan, [(i.source, i.destination) for i in plan.images], None, None)
    return helm.image_overlay(plan, dest, **kw)


def operator_pulls(release: str, flavor: str, values: dict, nodes: str) -> set[str]:
    """Every image the operator deploys with these values on these nodes, by its own rules."""
    plan = resolve(PlanRequest(image_list=load_release(release, flavor), nodes=NODES[nodes], values=values,
                               include_sample=False))
    return {i.source for i in plan.images}


CASES = [(r, "helm", pre, nodes) for r in known_releases() for pre in (False, True) for nodes in ("ubuntu", "rhel")
         if not (pre and r in ("v1.9.0", "v22.9.2"))]
CASES += [("v23.9.2", "kubesphere", pre, "ubuntu") for pre in (False, True)]


@pytest.mark.parametrize(("release", "flavor", "precompiled", "nodes"), CASES)
def test_emitted_values_pull_only_mirrored_images(release: str, flavor: str, precompiled: bool, nodes: str) -> None:
    plan = make_plan(release, flavor, nodes, precompiled=precompiled, driver_branch="550" if precompiled else None)
    mirrored = {i.destination for i in plan.images}
    overlay = overlay_for(plan)
    build = helm.kubesphere_config if flavor == "kubesphere" else helm.helm_values
    values, _ = build(overlay, {})
    pulled = operator_pulls(release, flavor, values, nodes)
    assert pulled, "the operator must deploy something"
    assert pulled <= mirrored, sorted(pulled - mirrored)
    assert all(p.startswith(REGISTRY + "/") for p in pulled)


def test_components_all_switches_nothing_on_but_covers_it_when_enabled() -> None:
    plan = make_plan("v24.9.2", components="all")
    values, _ = helm.helm_values(overlay_for(plan), {})
    assert "enabled" not in yaml.safe_dump(values)
    user = {"gds": {"enabled": True}, "dcgm": {"enabled": True}}
    merged, _ = helm.helm_values(overlay_for(plan), user)
    pulled = operator_pulls("v24.9.2", "helm", merged, "ubuntu")
    assert any("nvidia-fs" in p for p in pulled)
    assert pulled <= {i.destination for i in plan.images}


def test_driver_version_has_no_os_suffix_and_precompiled_is_flagged() -> None:
    values = helm.helm_values(overlay_for(make_plan("v23.9.2", precompiled=True, driver_branch="550")), {})[0]
    assert values["driver"]["version"] == "550" and values["driver"]["usePrecompiled"] is True
    values = helm.helm_values(overlay_for(make_plan("v23.9.2")), {})[0]
    assert values["driver"]["version"] == "550.54.14" and "usePrecompiled" not in values["driver"]
    assert values["node-feature-discovery"]["image"] == {
        "repository": f"{REGISTRY}/nfd/node-feature-discovery", "tag": "v0.14.2"}


def test_os_alias_plan_makes_the_operator_find_the_retagged_driver() -> None:
    node = [parse_node_spec("rocky8.5/4.18.0-348.el8.x86_64")]
    plan = resolve(PlanRequest(image_list=load_release("v1.9.0"), nodes=node, os_aliases={"rocky8.5": "centos8"},
                               registry=RegistryTarget.parse("homelab.net/nvcr.io")))
    values, _ = helm.helm_values(overlay_for(plan), {})
    pulled = {i.source for i in resolve(PlanRequest(image_list=load_release("v1.9.0"), nodes=node, values=values,
                                                    include_sample=False)).images}
    assert "homelab.net/nvcr.io/nvidia/driver:470.82.01-rocky8.5" in pulled
    assert pulled <= {i.destination for i in plan.images}


def test_kubesphere_shape_matches_seed_000() -> None:
    plan = make_plan("v23.9.2", "kubesphere", precompiled=True, driver_branch="550")
    config, _ = helm.kubesphere_config(overlay_for(plan), {})
    assert list(config) == ["gpu-operator"]
    inner = config["gpu-operator"]
    assert inner["validator"] == {"repository": f"{REGISTRY}/nvidia/cloud-native", "image": "gpu-operator-validator",
                                  "version": "v23.9.2"}
    assert inner["toolkit"]["repository"] == f"{REGISTRY}/nvidia/k8s"
    assert inner["node-feature-discovery"]["image"]["repository"] == f"{REGISTRY}/kubesphere/node-feature-discovery"
    assert inner["vfioManager"]["driverManager"]["repository"] == f"{REGISTRY}/nvidia/cloud-native"
    assert "global" not in inner


def test_merge_keeps_every_unrelated_setting(tmp_path: Path) -> None:
    user = {"mig": {"strategy": "mixed"},
            "driver": {"enabled": True, "version": "535.104.05", "rdma": {"enabled": True}},
            "toolkit": {"env": [{"name": "CONTAINERD_CONFIG", "value": "/etc/containerd/config.toml"}]},
            "daemonsets": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}}
    plan = make_plan("v23.9.2", values=user)
    merged, changed = helm.helm_values(overlay_for(plan), user)
    assert merged["mig"] == {"strategy": "mixed"}
    assert merged["driver"]["rdma"] == {"enabled": True} and merged["driver"]["enabled"] is True
    assert merged["toolkit"]["env"] == user["toolkit"]["env"]
    assert merged["daemonsets"] == user["daemonsets"]
    assert merged["driver"]["version"] == "535.104.05"
    assert "driver.repository" in changed and "driver.version" not in changed and "mig.strategy" not in changed
    ks, changed_ks = helm.kubesphere_config(overlay_for(plan), {"gpu-operator": user, "other": 1})
    assert ks["other"] == 1 and ks["gpu-operator"]["mig"] == {"strategy": "mixed"}
    assert all(k.startswith("gpu-operator.") for k in changed_ks)


def test_pin_digests_only_where_the_operator_accepts_them() -> None:
    plan = make_plan("v23.9.2")
    for n, img in enumerate(plan.images):
        img.digest = "sha256:" + f"{n:02d}" * 32
    overlay = overlay_for(plan, pin=True)
    v = overlay.values
    assert v["devicePlugin"]["version"].startswith("sha256:")
    assert v["validator"]["version"].startswith("sha256:")
    assert v["operator"]["version"] == "v23.9.2"
    assert v["driver"]["version"] == "550.54.14"
    assert v["driver"]["manager"]["version"] == "v0.6.5"
    assert v["node-feature-discovery"]["image"]["tag"] == "v0.14.2"
    notes = "\n".join(overlay.notes)
    for path in ("operator:", "driver:", "driver.manager:", "node-feature-discovery.image:"):
        assert path in notes
    pulled = operator_pulls("v23.9.2", "helm", helm.helm_values(overlay, {})[0], "ubuntu")
    mirrored_names = {i.destination.split(":")[0].split("@")[0] for i in plan.images}
    assert {p.split("@")[0].rsplit(":", 1)[0] if "@" not in p else p.split("@")[0] for p in pulled} <= mirrored_names
    assert any("@sha256:" in p for p in pulled)


def test_set_flags_round_trip_through_a_shell() -> None:
    plan = make_plan("v23.9.2", precompiled=True, driver_branch="550")
    overlay = overlay_for(plan, service_monitor=True)
    text = helm.set_flags(overlay, version="v23.9.2")
    argv = shlex.split(text.replace("\\\n", " "))
    assert argv[:4] == ["helm", "install", "--wait", "gpu-operator"]
    sets = {}
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag.startswith("--set"):
            key, _, val = value.partition("=")
            sets[key] = (flag, val)
    assert sets["driver.version"] == ("--set-string", "550")
    assert sets["driver.usePrecompiled"] == ("--set", "true")
    assert sets["dcgmExporter.serviceMonitor.honorLabels"] == ("--set", "true")
    assert sets["dcgmExporter.serviceMonitor.additionalLabels"] == ("--set-json", "{}")
    assert sets["node-feature-discovery.image.repository"][1] == f"{REGISTRY}/nfd/node-feature-discovery"


def test_cli_helm_kubesphere_set_flags(tmp_path: Path) -> None:
    plan = make_plan("v23.9.2", precompiled=True, driver_branch="550")
    pf = tmp_path / "plan.yaml"
    pf.write_text(render(plan, "yaml"))
    user = tmp_path / "values.yaml"
    user.write_text("mig:\n  strategy: mixed\n")
    out = tmp_path / "values-airgap.yaml"
    res = CliRunner().invoke(main, ["rewrite-config", str(pf), "--format", "helm", "--values", str(user),
                                    "-o", str(out)])
    assert res.exit_code == 0, res.output
    doc = yaml.safe_load(out.read_text())
    assert doc["mig"] == {"strategy": "mixed"} and doc["driver"]["usePrecompiled"] is True
    assert "changed driver.repository" in res.stderr
    res = CliRunner().invoke(main, ["rewrite-config", str(pf), "--format", "kubesphere"])
    assert res.exit_code == 0 and "gpu-operator:" in res.stdout
    res = CliRunner().invoke(main, ["rewrite-config", str(pf), "--format", "set-flags", "--registry", "other.local/x"])
    assert res.exit_code == 0 and "other.local/x/nvidia" in res.stdout and REGISTRY not in res.stdout


def test_cli_rewrite_needs_a_release_for_helm(tmp_path: Path) -> None:
    plan = resolve(PlanRequest(extras=[("busybox:1.36", "--image")], registry=RegistryTarget.parse("r.local")))
    pf = tmp_path / "plan.yaml"
    pf.write_text(render(plan, "yaml"))
    res = CliRunner().invoke(main, ["rewrite-config", str(pf), "--format", "helm"])
    assert res.exit_code == 2 and "no GPU Operator release" in res.stderr


def test_merge_refuses_a_values_file_with_the_wrong_shape() -> None:
    import pytest as _pytest

    from mirrorkit.errors import InputError

    plan = make_plan("v23.9.2")
    with _pytest.raises(InputError, match="driver is int"):
        helm.helm_values(overlay_for(plan), {"driver": 5})


def test_the_correctness_check_catches_a_component_left_unmirrored() -> None:
    plan = make_plan("v23.9.2")
    overlay = overlay_for(plan)
    del overlay.values["node-feature-discovery"]
    values, _ = helm.helm_values(overlay, {})
    leaked = operator_pulls("v23.9.2", "helm", values, "ubuntu") - {i.destination for i in plan.images}
    assert leaked == {"registry.k8s.io/nfd/node-feature-discovery:v0.14.2"}
