"""The runbooks' printed commands, run as printed against a private-CA, htpasswd mirror (issue 17).

An upstream on loopback plays nvcr.io and registry.k8s.io (a v23.9.2 release, every image
signed); the mirror serves TLS with a CA the test makes and wants a login. The install
runbook is written for the bundle, and every ``mirrorkit`` line in it runs as printed
(credentials from ``REGISTRY_AUTH_FILE``, as the runbook's login would leave them); the
node-side lines run too, with ``/etc/containerd/certs.d`` relocated to a folder of the
test's. A real containerd then pulls the upstream names and the mirror's own names through
the result. Then the upgrade runbook (a new driver version) the same way.
"""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
from pathlib import Path

import yaml
from click.testing import CliRunner
from kit import cosign
from kit.containerd import Containerd
from kit.images import make_image, make_index, make_layer
from kit.push import push_image
from kit.tls import make_ca
from test_admission import endpoints, signed_release

from mirrorkit.cli.main import main
from mirrorkit.plan import load_plan, render
from mirrorkit.refs import Ref, RegistryTarget
from mirrorkit.resolve.catalog import load_release
from mirrorkit.resolve.nodes import parse_node_spec
from mirrorkit.resolve.resolver import PlanRequest, resolve

USER, PASSWORD = "alice", "s3cret-Pa55"
NODE_DIR = "/etc/containerd/certs.d"


def mirrorkit(*args: str) -> str:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 0, (args, res.output)
    assert PASSWORD not in res.output
    return res.stdout


def printed(text: str) -> list[str]:
    """The command lines of the runbook's code blocks, in order."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if inside and line.strip() and not line.lstrip().startswith("#"):
            out.append(line.rstrip())
    return out


def run_printed(lines: list[str], cwd: Path, node_dir: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """mirrorkit lines through the CLI, node-side shell lines (cp, install, for) through bash."""
    ran = []
    for line in lines:
        line = line.replace(NODE_DIR, str(node_dir))
        if line.startswith("mirrorkit ") and not line.startswith(tuple(f"mirrorkit {s}" for s in skip)):
            mirrorkit(*shlex.split(line, comments=True)[1:])
            ran.append(line.split()[1])
        elif line.startswith(("for f in", "cp -r certs.d")):
            subprocess.run(["bash", "-c", line], cwd=cwd, check=True, timeout=30)
            ran.append(line.split()[0])
    return ran


def test_install_and_upgrade_runbooks_run_as_printed_with_a_private_ca_and_a_login(
        registry_factory, tmp_path: Path, monkeypatch) -> None:
    ca = make_ca(tmp_path / "pki")
    up = registry_factory()
    mirror = registry_factory(auth=True, tls_cert=ca.cert, tls_key=ca.key)
    monkeypatch.chdir(tmp_path)
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {mirror.host: {
        "auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    ca_file = Path("ca.crt")
    ca_file.write_bytes(ca.ca_cert.read_bytes())          # relative, as a user would give it

    key = cosign.make_key("p256")
    plan, pub, _ = signed_release(tmp_path, up, mirror, ["linux/amd64"], arches=("amd64",), key=key)
    Path("nvidia.pub").write_bytes(pub.read_bytes())
    Path("bundles").mkdir()
    mirrorkit("pull-bundle", str(plan), "-o", "bundles/gpu.tar", *endpoints(up), "--verify-key", "nvidia.pub")

    text = mirrorkit("runbook", "bundles/gpu.tar", "--ca-cert", "ca.crt", "--pull-secret", "mirror-pull")
    node = tmp_path / "node-certs.d"
    node.mkdir()
    ran = run_printed(printed(text), tmp_path, node)
    assert {"push-bundle", "verify", "rewrite-config", "for", "cp"} <= set(ran), ran
    # the emitted files: CA on the node, values and Secret for the login, a policy
    host = mirror.host
    assert (node / host / "ca.crt").read_bytes() == ca.ca_cert.read_bytes()
    hosts_toml = (node / "nvcr.io" / "hosts.toml").read_text()
    assert f'ca = "{node}/{host}/ca.crt"' in hosts_toml
    values = yaml.safe_load(Path("values-airgap.yaml").read_text())
    assert values["operator"]["imagePullSecrets"] == ["mirror-pull"]
    assert values["node-feature-discovery"]["imagePullSecrets"] == [{"name": "mirror-pull"}]
    secret = Path("pull-secret.yaml")          # kubectl applies and removes it; there is no cluster here
    assert secret.stat().st_mode & 0o777 == 0o600
    doc = yaml.safe_load(secret.read_text())
    assert doc["kind"] == "Secret" and doc["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(base64.b64decode(doc["data"][".dockerconfigjson"]))
    assert base64.b64decode(config["auths"][host]["auth"]).decode() == f"{USER}:{PASSWORD}"
    assert Path("verify-images.yaml").exists()

    lock = yaml.safe_load(Path("bundles/gpu.lock.yaml").read_text())
    operator = next(i for i in lock["images"] if "gpu-operator:" in i["source"])
    with Containerd() as ctd:
        user = f"{USER}:{PASSWORD}"       # what the kubelet takes from the imagePullSecret
        for name in (operator["source"], operator["destination"]):      # upstream name, and the mirror's own
            ctd.run_ctr("images", "pull", "--snapshotter", ctd.snapshotter, "--hosts-dir", str(node),
                        "--user", user, name)
            assert ctd.image_digest(name) == operator["digest"]

        # upgrade: the same release with a new driver; the printed steps again (pull-bundle is the
        # connected side's and needs the upstream endpoints, so it runs with them)
        new = resolve(PlanRequest(image_list=load_release("v23.9.2", "helm"), driver_version="550.144.03",
                                  nodes=[parse_node_spec("ubuntu22.04/5.15.0-131-generic")], precompiled=False,
                                  registry=RegistryTarget.parse(f"{mirror.host}/kse")))
        new.platforms = ["linux/amd64"]
        new_plan = tmp_path / "plan-new.yaml"
        new_plan.write_text(render(new, "yaml"))
        driver = next(i for i in new.images if i.component == "driver")
        _sign_new_driver(up, driver.source, key)
        up_text = mirrorkit("runbook", str(new_plan), "--upgrade-from", "bundles/gpu.tar", "--ca-cert", "ca.crt",
                            "--pull-secret", "mirror-pull")
        assert "--verify-key nvidia.pub" in up_text and "--format kyverno" in up_text
        pull = next(line for line in printed(up_text) if line.startswith("mirrorkit pull-bundle"))
        args = shlex.split(pull)[1:]
        if "--chart" in args:                  # the chart comes from helm pull, which this test has no use for
            i = args.index("--chart")
            del args[i:i + 2]
        mirrorkit(*args, *endpoints(up))
        Path("in-use.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [
            {"kind": "Pod", "spec": {"containers": [{"image": operator["destination"]}]}}]}))
        ran = run_printed(printed(up_text), tmp_path, node, skip=("pull-bundle",))
        assert ran.count("verify") >= 3 and "push-bundle" in ran and "prune" in ran
        new_lock = next(Path("bundles").glob("gpu-operator-*.lock.yaml"))
        moved = next(i for i in yaml.safe_load(new_lock.read_text())["images"] if i["source"] == driver.source)
        ctd.run_ctr("images", "pull", "--snapshotter", ctd.snapshotter, "--hosts-dir", str(node), "--user", user,
                    driver.source)
        assert ctd.image_digest(driver.source) == moved["digest"]
    assert load_plan(new_plan).release == "v23.9.2"


def _sign_new_driver(up, source: str, key: cosign.PrivateKey) -> None:
    """The new driver tag upstream, signed under the same key as the rest."""
    ref = Ref.parse(source)
    index = make_index([make_image(f"{source}/{a}", [make_layer(f"{source}/{a}", 512)], ("linux", a))
                        for a in ("amd64",)])
    push_image(up.url, ref.repository, ref.tag or "latest", index)
    cosign.sign_recursive(up.url, ref.repository, ref.name, index, key)
