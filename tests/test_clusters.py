"""Real clusters' inputs: a kubectl NodeList, NVIDIADriver pools, rendered manifests, Windows-saved
values files, read-only outputs, OpenShift mirror sets, and --resolve against a real registry.

The inputs under tests/data/clusters are shaped like what users have: ``kubectl get nodes -o json``
with a control-plane node, NFD labels on some nodes only, an arm64 GH200 and an EKS node;
two NVIDIADriver pools; ``helm template`` output with several workload kinds.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from kit.images import make_image, make_index, make_layer
from kit.push import push_image
from kit.registryd import RegistryServer

from mirrorkit.cli.main import main
from mirrorkit.resolve.lookup import nearest
from mirrorkit.resolve.nodes import load_nodes_json, os_from_image

DATA = Path(__file__).parent / "data" / "clusters"
NODES = str(DATA / "nodes.json")
CRS = str(DATA / "nvidiadrivers.yaml")
RENDERED = str(DATA / "rendered.yaml")
REG = "harbor.example.com/gpu"


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def ok(*args: str, input: str | None = None) -> Result:
    res = run(*args, input=input)
    assert res.exit_code == 0, res.output
    return res


def refused(*args: str) -> str:
    """A user mistake: exit 2, one line on stderr, no traceback."""
    res = run(*args)
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def plan_json(*args: str) -> tuple[dict, str]:
    res = ok("plan", *args, "--format", "json")
    return json.loads(res.stdout), res.stderr


# -- nodes -------------------------------------------------------------------------------


def test_kubectl_node_list() -> None:
    nodes, warnings = load_nodes_json(NODES)
    assert warnings == []
    got = {n.name: (n.os, n.kernel, n.arch) for n in nodes}
    assert got == {                      # the control plane has no GPU label and is left out
        "gpu-a100-01": ("ubuntu22.04", "5.15.0-131-generic", "amd64"),
        "gpu-l40s-01": ("rhel9.4", "5.14.0-427.13.1.el9_4.x86_64", "amd64"),
        "gh200-01": ("ubuntu22.04", "6.8.0-1008-nvidia-64k", "arm64"),
        "gpu-eks-01": ("amzn2023", "6.1.97-104.177.amzn2023.x86_64", "amd64"),   # NFD's VERSION_ID: 2023
    }
    assert os_from_image("Amazon Linux 2") == ("amzn", "2")
    assert os_from_image("Ubuntu 22.04.5 LTS") == ("ubuntu", "22.04")


def test_platform_list_must_cover_every_gpu_node_arch() -> None:
    base = ("--image", "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04", "--nodes-json", NODES)
    line = refused("plan", *base, "--platform", "linux/amd64")
    assert "gh200-01" in line and "linux/arm64" in line and "--force" in line
    plan, stderr = plan_json(*base, "--platform", "linux/amd64", "--force")
    assert any("gh200-01" in w for w in plan["warnings"]) and "gh200-01" in stderr
    plan, _ = plan_json(*base, "--platform", "linux/amd64", "--platform", "linux/arm64")
    assert not any("gh200" in w for w in plan["warnings"])
    # --node specs carry an arch too
    assert "arm64" in refused("plan", *base[:2], "--node", "ubuntu22.04/6.8.0-1008-nvidia-64k/arm64",
                              "--platform", "linux/amd64")


def test_small_refusals(tmp_path: Path) -> None:
    assert "invalid registry ''" in refused("plan", "--image", "busybox:1.36", "--registry", "")
    plan = tmp_path / "plan.yaml"
    ok("plan", "--image", "busybox:1.36", "--image", "nginx:1.27", "--registry", "reg.local", "-o", str(plan))
    text = plan.read_text()
    # a plan cut off in the middle of the second image's digest
    cut = text[: text.index("source: docker.io/library/nginx:1.27")] + \
        "source: docker.io/library/nginx:1.27\n  destination: reg.local/library/nginx:1.27\n  component: extra\n" \
        "  reason: x\n  digest: sha2"
    plan.write_text(cut)
    lineno = cut.splitlines().index("- source: docker.io/library/nginx:1.27") + 1
    line = refused("rewrite-config", str(plan), "--format", "registries-conf")
    assert f"{plan}:{lineno}: images[1]" in line and "'sha2'" in line


# -- NVIDIADriver pools ------------------------------------------------------------------


def test_nvidiadriver_pools_from_node_labels() -> None:
    plan, stderr = plan_json("--version", "v24.9.2", "--nodes-json", NODES, "--nvidiadriver", CRS,
                             "--registry", REG)
    by_comp: dict[str, list[str]] = {}
    for img in plan["images"]:
        for comp in img["component"].split(","):
            by_comp.setdefault(comp, []).append(img["source"])
    assert by_comp["nvidiadriver/training"] == ["nvcr.io/nvidia/driver:550-5.15.0-131-generic-ubuntu22.04"]
    assert sorted(by_comp["nvidiadriver/inference"]) == ["nvcr.io/nvidia/driver:535.183.06-rhel9.4",
                                                         "nvcr.io/nvidia/driver:535.183.06-ubuntu22.04"]
    assert sorted(by_comp["nvidiadriver/inference/gds"]) == ["nvcr.io/nvidia/cloud-native/nvidia-fs:2.17.5-rhel9.4",
                                                             "nvcr.io/nvidia/cloud-native/nvidia-fs:2.17.5-ubuntu22.04"]
    assert by_comp["nvidiadriver/inference/manager"] == ["nvcr.io/nvidia/cloud-native/k8s-driver-manager:v0.6.10"]
    assert "nvidiadriver/inference/gdrcopy" not in by_comp         # not enabled
    assert "driver" not in by_comp                                  # ClusterPolicy's driver is not deployed
    assert "driver.manager" in by_comp                              # the operator's default manager still is
    assert any("gpu-eks-01" in w and "no NVIDIADriver" in w for w in plan["warnings"])
    assert "gpu-eks-01" in stderr
    assert [cr["metadata"]["name"] for cr in plan["nvidiadrivers"]] == ["training", "inference"]


def test_plan_config_file_names_pools_and_manifests(tmp_path: Path) -> None:
    config = tmp_path / "plan-config.yaml"
    config.write_text(f"apiVersion: mirrorkit.dev/v1alpha1\nkind: PlanConfig\nversion: v24.9.2\n"
                      f"nodesJson: {NODES}\nnvidiaDrivers: [{CRS}]\nmanifests: [{RENDERED}]\n"
                      "platforms: [linux/amd64]\nforce: true\n")
    plan, _ = plan_json("-c", str(config))
    components = {c for i in plan["images"] for c in i["component"].split(",")}
    assert {"nvidiadriver/training", "CronJob/myapp-backup/backup", "ClusterPolicy/cluster-policy/driver"} <= components
    assert any("gh200-01" in w for w in plan["warnings"])


def test_nvidiadriver_overlap_and_node_flags(tmp_path: Path) -> None:
    both = tmp_path / "both.yaml"
    both.write_text("apiVersion: nvidia.com/v1alpha1\nkind: NVIDIADriver\nmetadata: {name: everyone}\n"
                    "spec: {version: 550.90.07}\n")
    plan, _ = plan_json("--version", "v24.9.2", "--nodes-json", NODES, "--nvidiadriver", CRS,
                        "--nvidiadriver", str(both))
    assert any("gpu-a100-01" in w and "2 NVIDIADrivers (training, everyone)" in w for w in plan["warnings"])
    # --node: no labels to select by, so each CR is planned for every node
    plan, _ = plan_json("--version", "v24.9.2", "--node", "rocky9.4/5.14.0-427.el9.x86_64",
                        "--nvidiadriver", str(both))
    assert [i["source"] for i in plan["images"] if i["component"] == "nvidiadriver/everyone"] == \
        ["nvcr.io/nvidia/driver:550.90.07-rocky9.4"]
    plan, _ = plan_json("--version", "v26.7.0", "--node", "rocky9.4/5.14.0-427.el9.x86_64",
                        "--nvidiadriver", str(both))    # the release's OS-tag rules apply
    assert [i["source"] for i in plan["images"] if i["component"] == "nvidiadriver/everyone"] == \
        ["nvcr.io/nvidia/driver:550.90.07-rocky9"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("---\nkind: NVIDIADriver\nmetadata: {name: x}\nspec: {version: '550'}\n---\n"
                   "kind: NVIDIADriver\nmetadata: {name: y}\nspec:\n  usePrecompiled: true\n"
                   "  version: sha256:" + "a" * 64 + "\n")
    line = refused("plan", "--version", "v24.9.2", "--nodes-json", NODES, "--nvidiadriver", str(bad))
    assert f"{bad}:6" in line and "NVIDIADriver y" in line and "digest" in line


def test_rewrite_nvidiadriver_points_each_pool_at_the_mirror(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    ok("plan", "--version", "v24.9.2", "--nodes-json", NODES, "--nvidiadriver", CRS, "--registry", REG,
       "--mapping", "flatten", "-o", str(plan))
    out = tmp_path / "crs.yaml"
    ok("rewrite-config", str(plan), "--format", "nvidiadriver", "-o", str(out))
    docs = list(yaml.safe_load_all(out.read_text()))
    training, inference = (d["spec"] for d in docs)
    assert (training["repository"], training["image"], training["version"]) == (REG, "nvidia-driver", "550")
    assert training["usePrecompiled"] is True and training["nodeSelector"] == {"pool": "training"}
    assert (inference["repository"], inference["image"]) == (REG, "nvidia-driver")
    assert (inference["gds"]["repository"], inference["gds"]["image"]) == (REG, "nvidia-cloud-native-nvidia-fs")
    assert inference["manager"]["image"] == "nvidia-cloud-native-k8s-driver-manager"
    assert inference["gdrcopy"] == {"enabled": False, "repository": "nvcr.io/nvidia/cloud-native", "image": "gdrdrv",
                                    "version": "v2.4.1-1"}       # not deployed, not planned: left as it was
    # what the operator joins from the rewritten CRs is what the plan sends to the mirror
    data = yaml.safe_load(plan.read_text())
    wanted = {i["destination"] for i in data["images"] if i["component"].startswith("nvidiadriver/")}
    assert f"{REG}/nvidia-driver:550-5.15.0-131-generic-ubuntu22.04" in wanted
    assert f"{REG}/nvidia-cloud-native-nvidia-fs:2.17.5-rhel9.4" in wanted
    # the chart hands driver management to the CRs, and the runbook says to apply them
    values = yaml.safe_load(ok("rewrite-config", str(plan), "--format", "helm").stdout)
    assert values["driver"]["nvidiaDriverCRD"] == {"enabled": True, "deployDefaultCR": False}
    assert "repository" not in values["driver"] and values["driver"]["manager"]["image"]
    runbook = ok("runbook", str(plan)).stdout
    assert f"mirrorkit rewrite-config {plan} --format nvidiadriver -o nvidiadrivers.yaml" in runbook
    assert "kubectl apply -f nvidiadrivers.yaml" in runbook
    assert "no NVIDIADriver resources" in refused("rewrite-config", str(_plain_plan(tmp_path)), "--format",
                                                  "nvidiadriver")


def _plain_plan(tmp_path: Path) -> Path:
    path = tmp_path / "plain.yaml"
    ok("plan", "--image", "busybox:1.36", "--registry", "reg.local", "-o", str(path))
    return path


# -- manifests ---------------------------------------------------------------------------


def test_manifests_every_kind_combined_with_other_inputs(tmp_path: Path) -> None:
    extra = tmp_path / "extra.txt"
    extra.write_text("\ufeffquay.io/acme/tool:1.0\n")          # an image list saved with a BOM
    plan, stderr = plan_json("--manifests", RENDERED, "--image", "nginx:1.27", "--image-list", str(extra),
                             "--version", "v24.9.2", "--node", "ubuntu22.04/5.15.0-131-generic")
    got = {(i["component"], i["source"]) for i in plan["images"]}
    digest = "sha256:4b4c7d2a0c3f1d6d8a0f6c35f7d1f0b1a8b5e3c9d2f7a6b5c4d3e2f1a0b9c8d7"
    for comp, source in [
        ("Deployment/myapp-web/migrate", "ghcr.io/acme/migrate:1.4.0"),
        ("Deployment/myapp-web/web", "ghcr.io/acme/web:1.4.0"),
        ("Deployment/myapp-web/web", "quay.io/acme/sidecar:0.9"),                # env value
        ("DaemonSet/myapp-agent/agent", "registry.k8s.io/pause:3.9"),
        ("StatefulSet/myapp-db/postgres", f"docker.io/library/postgres@{digest}"),
        ("CronJob/myapp-backup/backup", "docker.io/acme/backup:2024.06"),
        ("Pod/debug/debugger", "docker.io/nicolaka/netshoot:v0.13"),            # ephemeral container
        ("ClusterPolicy/cluster-policy/toolkit", "nvcr.io/nvidia/k8s/container-toolkit:v1.17.0-ubuntu20.04"),
        ("extra", "docker.io/library/nginx:1.27"),
        ("extra", "quay.io/acme/tool:1.0"),
    ]:
        assert (comp, source) in got, (comp, source)
    components = {i["source"]: i["component"] for i in plan["images"]}
    # one image named by a Job and a Pod is planned once, with both components
    assert components["docker.io/library/busybox:1.36"] == "Job/myapp-hook/hook,Pod/debug/main"
    assert components["nvcr.io/nvidia/cloud-native/k8s-driver-manager:v0.7.0"].startswith("driver.manager")
    assert "nvcr.io/nvidia/driver:550.144.03-ubuntu22.04" in components        # the GPU Operator plan beside it
    assert "Deployment/myapp-web/web env IMAGE: not an image reference, skipped" in stderr
    # the ClusterPolicy's driver gets the GPU node's OS tag, as the operator appends it
    assert components["nvcr.io/nvidia/driver:550.127.05-ubuntu22.04"] == "ClusterPolicy/cluster-policy/driver"
    # from standard input, as `helm template ... | mirrorkit plan --manifests -`; without nodes the
    # OS-tagged driver cannot be named, and says so
    res = ok("plan", "--manifests", "-", "--format", "txt", input=Path(RENDERED).read_text())
    assert "ghcr.io/acme/web:1.4.0" in res.stdout.splitlines()
    assert not any("nvidia/driver:" in ln for ln in res.stdout.splitlines())
    assert "ClusterPolicy/cluster-policy/driver gets each GPU node's OS tag" in res.stderr


def test_manifests_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: ConfigMap\nmetadata: {name: a}\n---\nkind: Deployment\nmetadata: {name: w}\n"
                   "spec:\n  template:\n    spec:\n      containers:\n      - {name: c, image: 'Bad Image'}\n")
    line = refused("plan", "--manifests", str(bad))
    assert f"{bad}:10: Deployment/w/c" in line       # the image's own line, not the document's
    bad.write_text("kind: Pod\nmetadata: {name: a}\nspec:\n  containers:\n  - name: c\n\timage: x\n")
    assert f"{bad}:6" in refused("plan", "--manifests", str(bad))


# -- values files from Windows -----------------------------------------------------------

VALUES = """# site values, saved on Windows
driver:
  enabled: false   # drivers are preinstalled
toolkit:
  enabled: true
  env: &toolkit_env
    - name: CONTAINERD_CONFIG
      value: "/etc/containerd/config.toml"
note: "tab\there"
"""


@pytest.fixture
def gpu_plan(tmp_path: Path) -> Path:
    path = tmp_path / "plan.yaml"
    ok("plan", "--version", "v24.9.2", "--node", "ubuntu22.04/5.15.0-131-generic", "--registry", REG,
       "-o", str(path))
    return path


@pytest.mark.parametrize("anchors", [False, True], ids=["edited-in-place", "anchors-rewritten"])
def test_values_with_bom_and_crlf(gpu_plan: Path, tmp_path: Path, anchors: bool) -> None:
    text = VALUES + ("devicePlugin:\n  env: *toolkit_env\n" if anchors else "")
    values = tmp_path / "values.yaml"
    values.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    out = tmp_path / "airgap.yaml"
    res = ok("rewrite-config", str(gpu_plan), "--format", "helm", "--values", str(values), "-o", str(out))
    data = out.read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf")
    assert data.count(b"\n") == data.count(b"\r\n") > 10                   # CRLF kept, every line
    merged = yaml.safe_load(data.decode())
    assert merged["driver"]["enabled"] is False                              # not lost to '\ufeffdriver'
    assert "\ufeffdriver" not in merged
    assert merged["toolkit"]["repository"] == f"{REG}/nvidia/k8s" and merged["note"] == "tab\there"
    assert (b"# drivers are preinstalled" in data) is (not anchors)
    assert ("could not be edited in place" in res.stderr) is anchors


def test_values_refused_with_line(gpu_plan: Path, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_bytes(b"\xef\xbb\xbfdriver:\r\n\tenabled: false\r\n")     # a tab indents: not YAML
    line = refused("rewrite-config", str(gpu_plan), "--format", "helm", "--values", str(values))
    assert f"{values}:2" in line
    values.write_bytes(b"driver:\r  enabled: false\r")
    assert "line ends" in refused("rewrite-config", str(gpu_plan), "--format", "helm", "--values", str(values))


def test_plan_with_bom_is_read(gpu_plan: Path) -> None:
    gpu_plan.write_bytes(b"\xef\xbb\xbf" + gpu_plan.read_bytes().replace(b"\n", b"\r\n"))
    assert "--set-string" in ok("rewrite-config", str(gpu_plan), "--format", "set-flags").stdout


# -- outputs -----------------------------------------------------------------------------


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A real read-only mount (tmpfs, ro): root can write anywhere else."""
    where = tmp_path / "ro"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.mark.parametrize("fmt", ["containerd", "registries-conf", "helm", "idms"])
def test_unwritable_outputs_are_one_line_errors(gpu_plan: Path, read_only_dir: Path, tmp_path: Path,
                                                fmt: str) -> None:
    afile = tmp_path / "a-file"
    afile.write_text("x")
    for target in (read_only_dir / "out", afile / "out"):
        line = refused("rewrite-config", str(gpu_plan), "--format", fmt, "-o", str(target))
        assert str(target) in line
    assert list(read_only_dir.iterdir()) == [] and afile.read_text() == "x"


# -- registries.conf, idms, runbook ------------------------------------------------------


@pytest.mark.parametrize("release", [True, False], ids=["gpu-operator", "image-set"])
def test_flatten_registries_conf_and_runbook_commands_all_run(tmp_path: Path, release: bool) -> None:
    plan = tmp_path / "plan.yaml"
    what = ("--version", "v24.9.2", "--node", "ubuntu22.04/5.15.0-131-generic") if release else \
        ("--image", "nvcr.io/nvidia/gpu-operator:v24.9.2")
    ok("plan", *what, "--registry", REG, "--mapping", "flatten", "-o", str(plan))
    conf = ok("rewrite-config", str(plan), "--format", "registries-conf").stdout
    assert f'prefix = "nvcr.io/nvidia/gpu-operator"\nlocation = "{REG}/nvidia-gpu-operator"' in conf
    runbook = ok("runbook", str(plan)).stdout
    commands = [ln for ln in runbook.splitlines() if ln.startswith("mirrorkit rewrite-config")]
    assert commands and not any("--format containerd" in c for c in commands)
    assert any("--format helm" in c for c in commands) is release
    for command in commands:                 # every command the runbook gives must work
        args = shlex.split(command.split("  #")[0])[1:]
        out = args.index("-o")
        args[out + 1] = str(tmp_path / args[out + 1])
        if "--verify-key" in args:          # the runbook names the publisher's key the user saved beside it
            args[args.index("--verify-key") + 1] = str(_public_key(tmp_path / "nvidia.pub"))
        ok(*args)


def _public_key(path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    path.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def test_idms_from_resolved_lock_like_plan(gpu_plan: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(gpu_plan.read_text())
    res = ok("rewrite-config", str(gpu_plan), "--format", "idms")
    docs = list(yaml.safe_load_all(res.stdout))
    assert [d["kind"] for d in docs] == ["ImageTagMirrorSet"] and "no digests" in res.stderr
    for n, img in enumerate(data["images"]):
        img["digest"] = f"sha256:{n:064x}"
    data["resolved"] = True
    gpu_plan.write_text(yaml.safe_dump(data))
    docs = list(yaml.safe_load_all(ok("rewrite-config", str(gpu_plan), "--format", "idms").stdout))
    assert [d["kind"] for d in docs] == ["ImageDigestMirrorSet", "ImageTagMirrorSet"]
    entries = {e["source"]: e for e in docs[0]["spec"]["imageDigestMirrors"]}
    assert entries["nvcr.io/nvidia/gpu-operator"] == {"source": "nvcr.io/nvidia/gpu-operator",
                                                      "mirrors": [f"{REG}/nvidia/gpu-operator"],
                                                      "mirrorSourcePolicy": "NeverContactSource"}
    assert entries["registry.k8s.io/nfd/node-feature-discovery"]["mirrors"] == [f"{REG}/nfd/node-feature-discovery"]
    assert {e["source"] for e in docs[1]["spec"]["imageTagMirrors"]} == set(entries)


# -- --resolve against a real registry ---------------------------------------------------


def test_nearest() -> None:
    have = ["5.15.0-133-generic", "5.15.0-130-generic", "5.15.0-91-generic", "6.8.0-40-generic"]
    assert nearest("5.15.0-131-generic", have) == ["5.15.0-130-generic", "5.15.0-133-generic"]
    assert nearest("5.15.0-9-generic", have) == ["5.15.0-91-generic"]
    assert nearest("7.0.0-1-generic", have) == ["6.8.0-40-generic"]


def test_resolve_reports_every_missing_image_with_nearest_kernels(registry: RegistryServer, tmp_path: Path) -> None:
    base = make_layer("drv/base", 4 << 10)
    for kernel in ("5.15.0-130-generic", "5.15.0-133-generic", "5.15.0-91-generic"):
        push_image(registry.url, "nvidia/driver", f"550-{kernel}-ubuntu22.04",
                   make_image(f"drv/{kernel}", [base, make_layer(f"drv/{kernel}", 1 << 10)]))
    push_image(registry.url, "nvidia/driver", "550-5.15.0-131-generic-ubuntu20.04",       # other OS: not near
               make_image("drv/2004", [base]))
    # a multi-arch image without arm64, and one with it
    amd = make_index([make_image("tool/amd64", [base], ("linux", "amd64"))])
    both = make_index([make_image(f"dp/{a}", [make_layer(f"dp/{a}", 1 << 10)], ("linux", a))
                       for a in ("amd64", "arm64")])
    push_image(registry.url, "nvidia/tool", "1.0", amd)
    push_image(registry.url, "nvidia/plugin", "1.0", both)
    endpoint = ("--source-endpoint", f"nvcr.io={registry.url}", "--source-endpoint", f"registry.k8s.io={registry.url}")
    res = run("plan", "--node", "ubuntu22.04/5.15.0-131-generic", "--node", "ubuntu22.04/5.15.0-90-generic",
              "--version", "v24.9.2", "--precompiled", "--driver-branch", "550", "--components", "enabled",
              "--no-sample", "--resolve", *endpoint, "--format", "json")
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    err = res.stderr
    head = err.splitlines()[0]
    assert head.startswith("error: ") and "images cannot be resolved" in head
    assert "no 550-5.15.0-131-generic-ubuntu22.04; nearest: 5.15.0-130-generic, 5.15.0-133-generic" in err
    assert "no 550-5.15.0-90-generic-ubuntu22.04; nearest: 5.15.0-91-generic" in err
    # every other missing image is in the same report, not only the first
    assert "nvcr.io/nvidia/gpu-operator:v24.9.2" in err and "k8s-device-plugin" in err
    plan, stderr = plan_json("--nodes-json", NODES, "--image", "nvcr.io/nvidia/tool:1.0",
                             "--image", "nvcr.io/nvidia/plugin:1.0", "--resolve", *endpoint)
    arch = [w for w in plan["warnings"] if "linux/arm64" in w]
    assert len(arch) == 1 and "nvcr.io/nvidia/tool:1.0" in arch[0] and "gh200-01" in arch[0]
