"""Runbooks and configs that work as printed (issue 17): signature steps kept, NVIDIADriver changes carried,
CRs exported from a cluster cleaned, and every mirrorkit line the upgrade prints accepted by the CLI."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml
from click.testing import CliRunner, Result
from kit import cosign

from mirrorkit.cli.main import main

DATA = Path(__file__).parent / "data" / "clusters"
NODES = str(DATA / "nodes.json")
REG = "harbor.site.local/gpu"


def cli(*args: str) -> Result:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 0, res.output
    return res


def crs(path: Path, version: str, manager: str = "v0.6.10", extra: str = "") -> Path:
    """One RHEL pool (NVIDIADriver ``inference``) at ``version``, as the issue's example."""
    path.write_text(f"""apiVersion: nvidia.com/v1alpha1
kind: NVIDIADriver
metadata:
  name: inference
spec:
  driverType: gpu
  image: nvcr.io/nvidia/driver
  version: {version}
  nodeSelector:
    pool: inference
  manager:
    repository: nvcr.io/nvidia/cloud-native
    image: k8s-driver-manager
    version: {manager}
{extra}""")
    return path


def pool_plans(tmp: Path) -> tuple[Path, Path]:
    old, new = tmp / "old.yaml", tmp / "new.yaml"
    cli("plan", "--version", "v24.9.2", "--nodes-json", NODES, "--nvidiadriver",
        str(crs(tmp / "old-crs.yaml", "550.127.08")), "--registry", REG, "-o", str(old))
    cli("plan", "--version", "v24.9.2", "--nodes-json", NODES, "--nvidiadriver",
        str(crs(tmp / "new-crs.yaml", "550.144.03")), "--registry", REG, "-o", str(new))
    return old, new


def test_upgrade_runbook_carries_the_nvidiadriver_change(tmp_path: Path) -> None:
    old, new = pool_plans(tmp_path)
    md = cli("runbook", str(new), "--upgrade-from", str(old)).stdout
    assert "driver:550.127.08-rhel9.4" in md or "550.127.08" in md          # §1 shows the change
    assert "no driver pod restarts" not in md
    assert "NVIDIADriver inference: version 550.127.08 → 550.144.03" in md
    assert f"mirrorkit rewrite-config {new} --format nvidiadriver -o nvidiadrivers.yaml" in md
    assert "kubectl apply -f nvidiadrivers.yaml" in md
    assert md.index("helm upgrade --wait") < md.index("kubectl apply -f nvidiadrivers.yaml")
    assert "`inference` (pool=inference)" in md and "cordon" in md
    # prune is told what the cluster runs, and keeps it
    assert "--in-use in-use.yaml" in md and "nvidiadrivers.nvidia.com" in md
    sh = cli("runbook", str(new), "--upgrade-from", str(old), "--format", "shell").stdout
    assert "kubectl apply -f nvidiadrivers.yaml" in sh and "--format nvidiadriver" in sh
    assert "gpu-driver-upgrade-state" in sh


def test_a_removed_pool_is_deleted_and_said(tmp_path: Path) -> None:
    old, _ = pool_plans(tmp_path)
    plain = tmp_path / "plain.yaml"
    cli("plan", "--version", "v24.9.2", "--nodes-json", NODES, "--registry", REG, "-o", str(plain))
    md = cli("runbook", str(plain), "--upgrade-from", str(old)).stdout
    assert "kubectl delete nvidiadrivers.nvidia.com inference" in md and "no longer planned" in md


def test_precompiled_upgrade_says_driver_pods_restart_when_the_manager_changes(tmp_path: Path) -> None:
    plans = []
    for name, manager in (("old", "v0.6.10"), ("new", "v0.7.0")):
        path, values = tmp_path / f"{name}.yaml", tmp_path / f"{name}-values.yaml"
        values.write_text(f"driver:\n  manager:\n    version: {manager}\n")
        cli("plan", "--version", "v24.9.2", "--node", "ubuntu22.04/5.15.0-131-generic", "--precompiled",
            "--driver-branch", "550", "--values", str(values), "--registry", REG, "-o", str(path))
        plans.append(path)
    md = cli("runbook", str(plans[1]), "--upgrade-from", str(plans[0])).stdout
    assert "no driver pod restarts" not in md and "Neither the driver image" not in md
    assert "driver.manager v0.6.10 → v0.7.0" in md and "cordon" in md


def test_install_script_keeps_the_signature_steps_and_uses_registry(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    cli("plan", "--version", "v24.9.2", "--node", "ubuntu22.04/5.15.0-131-generic", "--registry", REG,
        "-o", str(plan))
    lock = tmp_path / "gpu.lock.yaml"
    data = yaml.safe_load(plan.read_text())
    d = "sha256:" + "1" * 64
    lock.write_text(yaml.safe_dump({
        "apiVersion": "mirrorkit.dev/v1alpha1", "kind": "BundleLock", "id": "x", "created": "2026-01-01T00:00:00Z",
        "generator": "test", "plan": data, "blobs": [{"digest": d, "size": 1}],
        "images": [{"source": i["source"], "destination": i["destination"], "digest": d,
                    "media_type": "application/vnd.oci.image.manifest.v1+json"} for i in data["images"]],
        "charts": [{"name": "gpu-operator", "version": "v24.9.2", "tag": "v24.9.2", "digest": d, "config": d,
                    "layer": d, "repository": f"{REG}/charts/gpu-operator"}]}))
    sh = cli("runbook", str(lock), "--format", "shell").stdout
    assert 'helm install --wait gpu-operator "oci://$REGISTRY/charts/gpu-operator"' in sh
    assert REG not in sh.split("REGISTRY=", 1)[1].split("\n", 1)[1]          # only the variable names it
    pushes = [line for line in sh.splitlines() if line.startswith(("mirrorkit push-bundle", "mirrorkit verify"))]
    assert pushes and all('--verify-key "$VERIFY_KEY"' in line for line in pushes)
    assert "--format kyverno" in sh and "kubectl apply -f verify-images.yaml" in sh
    assert sh.index("verify-images.yaml") < sh.index("helm install")
    # every mirrorkit line parses, and the ones that need no registry run
    (tmp_path / "nvidia.pub").write_bytes(cosign.public_pem(cosign.make_key("p256")))
    for line in sh.splitlines():
        if line.startswith("mirrorkit rewrite-config"):
            args = shlex.split(line.replace('"$REGISTRY"', REG).replace('"$VERIFY_KEY"', str(tmp_path / "nvidia.pub")))
            args[args.index("-o") + 1] = str(tmp_path / args[args.index("-o") + 1])
            cli(*args[1:])


def test_nvidiadriver_crs_exported_from_a_cluster_lose_server_set_fields(tmp_path: Path) -> None:
    exported = crs(tmp_path / "exported.yaml", "550.144.03", extra="""status:
  state: ready
""")
    text = exported.read_text().replace("  name: inference\n", """  name: inference
  resourceVersion: "48213"
  uid: 0b9c7a52-1f3e-4c1e-9a59-2a8b7f0e6c11
  creationTimestamp: "2026-03-01T10:00:00Z"
  generation: 3
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{"spec":{"image":"nvcr.io/nvidia/driver"}}'
    team: gpu
""")
    exported.write_text(text)
    plan = tmp_path / "plan.yaml"
    cli("plan", "--version", "v24.9.2", "--nodes-json", NODES, "--nvidiadriver", str(exported), "--registry", REG,
        "-o", str(plan))
    out = cli("rewrite-config", str(plan), "--format", "nvidiadriver").stdout
    [doc] = [d for d in yaml.safe_load_all(out) if d]
    assert "status" not in doc and "nvcr.io" not in out
    assert doc["metadata"] == {"name": "inference", "annotations": {"team": "gpu"}}
    assert doc["spec"]["version"] == "550.144.03" and doc["spec"]["image"] == "driver"


# -- unknown keys in plans and locks (finding 6) -----------------------------------------------------------

def _refused(*args: str) -> str:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    return lines[0]


def test_a_typo_in_a_plan_or_lock_is_refused_with_its_line_and_the_nearest_key(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    cli("plan", "--image", "nvcr.io/nvidia/driver:550.127.08-ubuntu22.04", "--image", "busybox:1.36",
        "--registry", REG, "-o", str(plan))
    text = plan.read_text()
    typo = tmp_path / "typo.yaml"
    typo.write_text(text.replace("  component: extra\n", "  component: extra\n  digset: sha256:" + "a" * 64 + "\n", 1))
    line = typo.read_text().splitlines().index("  digset: sha256:" + "a" * 64) + 1
    err = _refused("rewrite-config", str(typo), "--format", "idms")
    assert f"{typo}:{line}: images[0]: unknown key 'digset'; did you mean 'digest'?" in err
    top = tmp_path / "top.yaml"
    top.write_text(text.replace("registry:", "regsitry: x\nregistry:", 1))
    assert "unknown key 'regsitry'; did you mean 'registry'?" in _refused("diff", str(top), str(plan))
    # a lock: its own levels and the plan inside it
    d = "sha256:" + "1" * 64
    data = yaml.safe_load(text)
    lock = {"apiVersion": "mirrorkit.dev/v1alpha1", "kind": "BundleLock", "id": "x", "created": "", "generator": "t",
            "plan": data, "blobs": [{"digest": d, "size": 1}],
            "images": [{"source": i["source"], "destination": i["destination"], "digest": d,
                        "media_type": "application/vnd.oci.image.manifest.v1+json"} for i in data["images"]]}
    bad = tmp_path / "bad.lock.yaml"
    lock["images"][1]["planed_digest"] = d
    bad.write_text(yaml.safe_dump(lock, sort_keys=False))
    line = next(n for n, t in enumerate(bad.read_text().splitlines(), 1) if "planed_digest" in t)
    assert f"{bad}:{line}: images[1]: unknown key 'planed_digest'; did you mean 'planned_digest'?" \
        in _refused("diff", str(bad), str(plan))
    del lock["images"][1]["planed_digest"]
    lock["plan"]["images"][0]["compnent"] = "x"
    bad.write_text(yaml.safe_dump(lock, sort_keys=False))
    assert "plan.images[0]: unknown key 'compnent'; did you mean 'component'?" in _refused("diff", str(bad),
                                                                                           str(plan))


def test_diff_and_plan_summary_name_extra_images_by_repository(tmp_path: Path) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    res = CliRunner().invoke(main, ["plan", "--image", "docker.io/library/nginx:1.25", "--image", "quay.io/a/b:v1",
                                    "--image", "registry.k8s.io/pause:3.9", "--registry", REG, "-o", str(old)])
    assert res.exit_code == 0 and "extra" not in res.stderr, res.output
    assert "docker.io/library/nginx" in res.stderr and "quay.io/a/b" in res.stderr
    cli("plan", "--image", "docker.io/library/nginx:1.27", "--image", "quay.io/a/b:v2", "--image",
        "registry.k8s.io/pause:3.10", "--registry", REG, "-o", str(new))
    text = cli("diff", str(old), str(new)).stdout
    assert "extra" not in text
    assert any(line.split() == ["docker.io/library/nginx", "1.25", "→", "1.27"] for line in text.splitlines())
    assert any(line.split() == ["quay.io/a/b", "v1", "→", "v2"] for line in text.splitlines())
    assert any(line.split() == ["registry.k8s.io/pause", "3.9", "→", "3.10"] for line in text.splitlines())


def test_mirror_sets_are_named_after_the_release_or_by_name(tmp_path: Path) -> None:
    names = []
    for release in ("v23.9.2", "v24.9.2"):
        plan = tmp_path / f"{release}.yaml"
        cli("plan", "--version", release, "--node", "ubuntu22.04/5.15.0-131-generic", "--registry", REG,
            "-o", str(plan))
        docs = list(yaml.safe_load_all(cli("rewrite-config", str(plan), "--format", "idms").stdout))
        names.append({d["metadata"]["name"] for d in docs})
    assert names == [{"mirrorkit-gpu-operator-v23.9.2"}, {"mirrorkit-gpu-operator-v24.9.2"}]   # they coexist
    docs = list(yaml.safe_load_all(cli("rewrite-config", str(plan), "--format", "idms", "--name", "site-gpu").stdout))
    assert {d["metadata"]["name"] for d in docs} == {"site-gpu"}
    res = CliRunner().invoke(main, ["rewrite-config", str(plan), "--format", "idms", "--name", "Bad_Name"])
    assert res.exit_code == 2 and "not a Kubernetes object name" in res.output


CLUSTER_POLICY = """apiVersion: nvidia.com/v1
kind: ClusterPolicy
metadata:
  name: cluster-policy
spec:
  operator: {defaultRuntime: containerd}
  toolkit: {enabled: true, repository: nvcr.io/nvidia/k8s, image: container-toolkit, version: v1.17.0}
  dcgm: {enabled: false, repository: nvcr.io/nvidia/cloud-native, image: dcgm, version: 3.3.9-1-ubuntu22.04}
  dcgmExporter: {repository: nvcr.io/nvidia/k8s, image: dcgm-exporter, version: 3.3.9-3.6.1-ubuntu22.04}
  kataManager: {repository: nvcr.io/nvidia/cloud-native, image: k8s-kata-manager, version: v0.2.2}
  ccManager: {enabled: false, repository: nvcr.io/nvidia/cloud-native, image: k8s-cc-manager, version: v0.1.1}
  sandboxWorkloads: {enabled: false}
  sandboxDevicePlugin: {enabled: true, repository: nvcr.io/nvidia, image: kubevirt-gpu-device-plugin, version: v1.2.10}
  vfioManager: {repository: nvcr.io/nvidia, image: cuda, version: 12.6.3-base-ubi9}
  migManager:
    enabled: false
    repository: nvcr.io/nvidia/cloud-native
    image: k8s-mig-manager
    version: v0.10.0-ubuntu20.04
"""


def test_plan_manifests_skips_every_disabled_operand(tmp_path: Path) -> None:
    manifests = tmp_path / "rendered.yaml"
    manifests.write_text(CLUSTER_POLICY)
    plan = yaml.safe_load(cli("plan", "--manifests", str(manifests), "--registry", REG, "--format", "json").stdout)
    sources = sorted(i["source"] for i in plan["images"])
    assert sources == ["nvcr.io/nvidia/k8s/container-toolkit:v1.17.0",
                       "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04"]


def test_a_manifest_error_names_the_image_line(tmp_path: Path) -> None:
    manifests = tmp_path / "rendered.yaml"
    manifests.write_text("""apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  template:
    spec:
      containers:
      - name: ok
        image: nginx:1.27
      - name: sidecar
        env:
        - {name: A, value: b}
        image: "bad image"
""")
    err = _refused("plan", "--manifests", str(manifests), "--registry", REG)
    assert f"{manifests}:14: Deployment/app/sidecar" in err, err
    manifests.write_text(CLUSTER_POLICY.replace("version: v1.17.0}", "version: 'bad tag'}"))
    err = _refused("plan", "--manifests", str(manifests), "--registry", REG)
    assert f"{manifests}:7:" in err and "toolkit" in err, err


# -- private CA and authenticated mirrors; what containerd and registries.conf redirect (11, 13) ------------

def _image_plan(tmp: Path, registry: str = "mirror.site:5000/kse") -> Path:
    plan = tmp / "plan.yaml"
    cli("plan", "--image", "nvcr.io/nvidia/gpu-operator:v24.9.2", "--image", "registry.k8s.io/nfd/nfd:v0.16.6",
        "--registry", registry, "-o", str(plan))
    return plan


def test_containerd_carries_the_ca_and_never_overwrites_a_sites_hosts_toml(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    plan = _image_plan(tmp_path)
    Path("pki").mkdir()
    Path("pki/ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    res = CliRunner().invoke(main, ["rewrite-config", str(plan), "--format", "containerd", "--ca-file", "pki/ca.crt",
                                    "-o", "certs.d"])
    assert res.exit_code == 0, res.output
    assert "every pull from nvcr.io, registry.k8s.io goes to the mirror" in res.stderr
    assert Path("certs.d/mirror.site:5000/ca.crt").read_text() == Path("pki/ca.crt").read_text()
    for upstream in ("nvcr.io", "registry.k8s.io", "mirror.site:5000"):
        assert 'ca = "/etc/containerd/certs.d/mirror.site:5000/ca.crt"' in \
            Path(f"certs.d/{upstream}/hosts.toml").read_text()
    # a relative path that is not here cannot be a node path: containerd would resolve it against the host folder
    err = _refused("rewrite-config", str(plan), "--format", "containerd", "--ca-file", "ca-pr/ca.crt", "-o", "x")
    assert "must be absolute" in err
    # a site's own hosts.toml is refused, not overwritten
    site = Path("site/nvcr.io")
    site.mkdir(parents=True)
    (site / "hosts.toml").write_text('server = "https://nvcr.io"\n[host."https://site-cache"]\n')
    err = _refused("rewrite-config", str(plan), "--format", "containerd", "-o", "site")
    assert "was not written by mirrorkit" in err and not Path("site/registry.k8s.io").exists()
    # registries.conf has no CA setting: it says where CRI-O/podman want it
    res = CliRunner().invoke(main, ["rewrite-config", str(plan), "--format", "registries-conf", "--ca-file",
                                    "pki/ca.crt"])
    assert res.exit_code == 0 and "/etc/containers/certs.d/mirror.site:5000/ca.crt" in res.stderr
    assert "# registries.conf cannot name a CA" in res.stdout


def test_pull_secret_comes_from_the_credential_store_and_the_values_name_it(tmp_path: Path, monkeypatch) -> None:
    import base64
    import json

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "none.json"))
    plan = _image_plan(tmp_path)
    err = _refused("rewrite-config", str(plan), "--format", "pull-secret", "--pull-secret", "mirror-pull")
    assert "no credentials for mirror.site:5000" in err and "mirrorkit login" in err
    secret_word = "Pa55-w0rd-xyz"
    (tmp_path / "auth.json").write_text(json.dumps({"auths": {"mirror.site:5000": {
        "auth": base64.b64encode(f"robot:{secret_word}".encode()).decode()}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))
    res = CliRunner().invoke(main, ["rewrite-config", str(plan), "--format", "pull-secret", "--pull-secret",
                                    "mirror-pull", "--namespace", "gpu", "-o", "secret.yaml"])
    assert res.exit_code == 0 and secret_word not in res.output
    assert Path("secret.yaml").stat().st_mode & 0o777 == 0o600
    doc = yaml.safe_load(Path("secret.yaml").read_text())
    assert doc["metadata"] == {"name": "mirror-pull", "namespace": "gpu"}
    config = json.loads(base64.b64decode(doc["data"][".dockerconfigjson"]))
    assert base64.b64decode(config["auths"]["mirror.site:5000"]["auth"]).decode() == f"robot:{secret_word}"
    release = tmp_path / "release.yaml"
    cli("plan", "--version", "v24.9.2", "--node", "ubuntu22.04/5.15.0-131-generic", "--registry",
        "mirror.site:5000/kse", "-o", str(release))
    values = yaml.safe_load(cli("rewrite-config", str(release), "--format", "helm", "--pull-secret",
                                "mirror-pull").stdout)
    for operand in ("operator", "driver", "toolkit", "devicePlugin", "validator"):
        assert values[operand]["imagePullSecrets"] == ["mirror-pull"], operand
    assert values["node-feature-discovery"]["imagePullSecrets"] == [{"name": "mirror-pull"}]
