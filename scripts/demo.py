#!/usr/bin/env python3
"""``make demo``: mirrorkit's main job end to end, on loopback only, with no internet.

It starts two real ``docker-registry`` servers on 127.0.0.1: an "upstream"
standing in for nvcr.io and registry.k8s.io, seeded with small synthetic
multi-arch images named exactly like GPU Operator v23.9.2's for seed 000's
cluster (Ubuntu 22.04, kernel 5.15.0-131-generic, precompiled 550 drivers), and
a "private" one behind the air gap. It runs the installed ``mirrorkit`` through
plan -> pull-bundle -> push-bundle -> verify, then a real containerd pulls the
nvcr.io names from the private registry. Every process it starts is stopped.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the test kit (images, registries) lives with the tests

from kit.images import gpu_operator_like_set  # noqa: E402
from kit.push import push_image  # noqa: E402
from kit.registryd import RegistryServer  # noqa: E402

from mirrorkit.refs import Ref  # noqa: E402

OUT = Path(os.environ.get("MIRRORKIT_DEMO_OUT") or ROOT / "bundles" / "demo")
MIRRORKIT = str(Path(sys.executable).parent / "mirrorkit")
PLAN_ARGS = ["--version", "v23.9.2", "--node", "ubuntu22.04/5.15.0-131-generic",
             "--driver-branch", "550", "--precompiled"]


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def run(args: list[str], **kw) -> subprocess.CompletedProcess:
    shown = " ".join(shlex.quote(a) for a in ["mirrorkit", *args])
    print(f"$ {shown}", flush=True)
    proc = subprocess.run([MIRRORKIT, *args], text=True, capture_output=True, **kw)
    if proc.stdout.strip():
        print(proc.stdout.rstrip())
    if proc.stderr.strip():
        print(proc.stderr.rstrip())
    if proc.returncode != 0:
        raise SystemExit(f"demo failed: mirrorkit exited {proc.returncode}")
    return proc


def seed(upstream: RegistryServer, sources: list[str]) -> None:
    refs = [Ref.parse(s) for s in sources]
    content = gpu_operator_like_set([(r.repository, r.tag) for r in refs], layer_size=256 << 10)
    for ref in refs:
        push_image(upstream.url, ref.repository, ref.tag, content[f"{ref.repository}:{ref.tag}"])
        print(f"  seeded {ref}  (linux/amd64 + linux/arm64)")


def main() -> int:
    if shutil.which("docker-registry") is None:
        print("docker-registry is missing: run 'make demo', which installs it", file=sys.stderr)
        return 2
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    say("1. plan: which images does GPU Operator v23.9.2 need on seed 000's cluster?")
    listed = run(["plan", *PLAN_ARGS, "--registry", "dockerhub.kubekey.local/kse", "--format", "txt"])
    sources = listed.stdout.split()

    with RegistryServer() as upstream, RegistryServer() as private:
        endpoint = ["--source-endpoint", f"nvcr.io=http://{upstream.host}",
                    "--source-endpoint", f"registry.k8s.io=http://{upstream.host}"]
        target = ["--registry", f"{private.host}/kse"]
        say(f"2. an 'upstream' registry on {upstream.host} plays nvcr.io and registry.k8s.io; "
            f"the private registry is {private.host}")
        seed(upstream, sources)

        say("3. plan --resolve: pin every image to its digest, platforms and size")
        plan_file = OUT / "plan.yaml"
        run(["plan", *PLAN_ARGS, *target, "--resolve", *endpoint, "-o", str(plan_file)])

        say("4. pull-bundle (connected side): one bundle, every blob once, a lock and a .sha256")
        bundle = OUT / "gpu-operator-v23.9.2.tar"
        chart = demo_chart()
        run(["pull-bundle", str(plan_file), "-o", str(bundle), "--chart", str(chart), *endpoint])
        upstream.stop()

        say("5. (air gap) push-bundle: verify every byte, push, verify the registry")
        run(["push-bundle", str(bundle), "--insecure", private.host])

        say("6. verify: the preflight before installing")
        run(["verify", str(bundle), "--insecure", private.host])

        say("7. rewrite-config: values for Helm, the KubeSphere extension config, --set flags, hosts.toml")
        run(["rewrite-config", str(bundle), "--format", "helm", "-o", str(OUT / "values-airgap.yaml")])
        run(["rewrite-config", str(bundle), "--format", "kubesphere", "--service-monitor",
             "-o", str(OUT / "extension-config.yaml")])
        run(["rewrite-config", str(bundle), "--format", "set-flags", "-o", str(OUT / "helm-install.sh")])
        run(["rewrite-config", str(bundle), "--format", "containerd", "--insecure", private.host,
             "-o", str(OUT / "certs.d")])
        run(["rewrite-config", str(bundle), "--format", "registries-conf", "--insecure", private.host,
             "-o", str(OUT / "registries.conf")])

        say("8. runbook: the offline install steps with this plan's real values")
        run(["runbook", str(bundle), "-o", str(OUT / "RUNBOOK.md")])
        run(["runbook", str(bundle), "--format", "shell", "-o", str(OUT / "install.sh")])

        say("9. a real containerd pulls the upstream names from the private registry through the emitted hosts.toml")
        node_pull(sources)
    say("done: every process the demo started is stopped")
    print(f"  outputs in {OUT}:")
    for path in sorted(OUT.iterdir()):
        print(f"    {path.name}")
    return 0


def demo_chart() -> Path:
    """A stand-in gpu-operator chart (the demo has no internet to fetch NVIDIA's)."""
    import io
    import tarfile

    files = {
        "gpu-operator/Chart.yaml": b"apiVersion: v2\nname: gpu-operator\nversion: v23.9.2\nappVersion: v23.9.2\n"
                                   b"description: stand-in chart built by mirrorkit's demo\n",
        "gpu-operator/values.yaml": b"# the real chart's values would be here\n",
    }
    path = OUT / "gpu-operator-v23.9.2.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return path


def node_pull(sources: list[str]) -> None:
    from kit.containerd import Containerd

    with Containerd() as ctrd:
        for source in sources:
            ctrd.pull(source, hosts_dir=OUT / "certs.d", platform="linux/amd64")
            print(f"  ctr pulled {source}  {ctrd.image_digest(source)[:19]}...")


if __name__ == "__main__":
    sys.exit(main())
