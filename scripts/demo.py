#!/usr/bin/env python3
"""``make demo``: mirrorkit's main job end to end, on loopback only, with no internet.

It starts two real ``docker-registry`` servers on 127.0.0.1: an "upstream"
standing in for nvcr.io and registry.k8s.io, seeded with small synthetic
multi-arch images named exactly like GPU Operator v23.9.2's for seed 000's
cluster (Ubuntu 22.04, kernel 5.15.0-131-generic, precompiled 550 drivers) and
signed the way ``cosign sign --key --recursive`` signs them, with a key the demo
makes (the private half never touches the disk), and a "private" one behind the
air gap. It runs the installed ``mirrorkit`` through plan -> pull-bundle
--verify-key --sign-key (the lock signed with a site key the demo writes as PEM) ->
(air gap) -> push-bundle --bundle-key --verify-key -> verify --verify-key ->
rewrite-config (every cluster-side format, the signature policies included) ->
runbook; then a real containerd pulls the nvcr.io names from the private
registry through the emitted hosts.toml; last, ``report --bundle-key --verify-key``
writes the approver's HTML record and ``diff`` compares two releases' plans. Every process it starts
is stopped. The mirrorkit commands run in the output folder, so the commands
shown are exactly the ones that ran.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the test kit (images, registries, cosign) lives with the tests

from kit.cosign import make_key, sign_recursive, write_public_key  # noqa: E402
from kit.images import Index, gpu_operator_like_set  # noqa: E402
from kit.push import push_image  # noqa: E402
from kit.registryd import RegistryServer  # noqa: E402

from mirrorkit.refs import Ref  # noqa: E402

OUT = Path(os.environ.get("MIRRORKIT_DEMO_OUT") or ROOT / "bundles" / "demo").resolve()
MIRRORKIT = str(Path(sys.executable).parent / "mirrorkit")
NODE = ["--node", "ubuntu22.04/5.15.0-131-generic", "--driver-branch", "550", "--precompiled"]
PLAN_ARGS = ["--version", "v23.9.2", *NODE]
BUNDLE = "gpu-operator-v23.9.2.tar"
KEY = "demo-cosign.pub"
SITE_KEY, SITE_PUB = "site-bundle.pem", "site-bundle.pub"   # the site's own key: it signs the bundle's lock


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def run(args: list[str]) -> subprocess.CompletedProcess:
    """Run mirrorkit in OUT (relative paths: what is shown is what ran) and print what it says."""
    shown = " ".join(shlex.quote(a) for a in ["mirrorkit", *args])
    print(f"$ {shown}", flush=True)
    proc = subprocess.run([MIRRORKIT, *args], text=True, capture_output=True, cwd=OUT, check=False)
    if proc.stdout.strip():
        print(proc.stdout.rstrip())
    if proc.stderr.strip():
        print(proc.stderr.rstrip())
    if proc.returncode != 0:
        raise SystemExit(f"demo failed: mirrorkit exited {proc.returncode}")
    return proc


def seed_and_sign(upstream: RegistryServer, sources: list[str]) -> None:
    """Push the synthetic images, then sign each index and its platform manifests (cosign --recursive)."""
    refs = [Ref.parse(s) for s in sources]
    content = gpu_operator_like_set([(r.repository, r.tag) for r in refs], layer_size=256 << 10)
    key = make_key("p256")
    write_public_key(key, OUT / KEY)
    signatures = 0
    for ref in refs:
        index: Index = content[f"{ref.repository}:{ref.tag}"]
        push_image(upstream.url, ref.repository, ref.tag, index)
        signatures += len(sign_recursive(upstream.url, ref.repository, f"{ref.registry}/{ref.repository}",
                                         index, key))
        print(f"  seeded and signed {ref}  (linux/amd64 + linux/arm64)")
    print(f"  {signatures} cosign signatures (sha256-<hex>.sig) under the demo key; "
          f"its public half is {KEY}")


def site_key() -> None:
    """The connected site's bundle-signing key pair (PEM), as ``openssl genpkey`` would write it."""
    from cryptography.hazmat.primitives import serialization

    key = make_key("p256")
    (OUT / SITE_KEY).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    write_public_key(key, OUT / SITE_PUB)
    print(f"  the site's bundle-signing key: {SITE_KEY} (its public half {SITE_PUB} goes across separately)")


def main() -> int:
    if shutil.which("docker-registry") is None:
        print("docker-registry is missing: run 'make demo', which installs it", file=sys.stderr)
        return 2
    started = time.monotonic()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"(every mirrorkit command runs in {OUT})")
    say("1. plan: which images does GPU Operator v23.9.2 need on seed 000's cluster?")
    listed = run(["plan", *PLAN_ARGS, "--registry", "dockerhub.kubekey.local/kse", "--format", "txt"])
    sources = listed.stdout.split()

    with RegistryServer() as upstream, RegistryServer() as private:
        endpoint = ["--source-endpoint", f"nvcr.io=http://{upstream.host}",
                    "--source-endpoint", f"registry.k8s.io=http://{upstream.host}"]
        target = ["--registry", f"{private.host}/kse"]
        say(f"2. an 'upstream' registry on {upstream.host} plays nvcr.io and registry.k8s.io, "
            f"its images signed with cosign; the private registry is {private.host}")
        seed_and_sign(upstream, sources)

        say("3. plan --resolve: pin every image to its digest, platforms and size")
        run(["plan", *PLAN_ARGS, *target, "--resolve", *endpoint, "-o", "plan.yaml"])

        say("4. pull-bundle --verify-key --sign-key (connected side): nothing unsigned gets in; "
            "one bundle, every blob once, signatures carried, the lock signed by the site")
        demo_chart()
        site_key()
        run(["pull-bundle", "plan.yaml", "-o", BUNDLE, "--chart", "gpu-operator-v23.9.2.tgz",
             "--verify-key", KEY, "--sign-key", SITE_KEY, *endpoint])
        upstream.stop()

        say("5. (air gap: the upstream is stopped) push-bundle --bundle-key --verify-key: the lock's signature "
            "first, then image signatures checked offline from the bundle, every byte verified, pushed, "
            "registry verified")
        run(["push-bundle", BUNDLE, "--insecure", private.host, "--bundle-key", SITE_PUB, "--verify-key", KEY])

        say("6. verify --verify-key: the preflight before installing, signatures read at the mirror")
        run(["verify", BUNDLE, "--insecure", private.host, "--verify-key", KEY])

        say("7. rewrite-config: Helm values, KubeSphere extension config, --set flags, hosts.toml, "
            "registries.conf, and the signature policies (Kyverno, containers policy.json)")
        run(["rewrite-config", BUNDLE, "--format", "helm", "-o", "values-airgap.yaml"])
        run(["rewrite-config", BUNDLE, "--format", "kubesphere", "--service-monitor",
             "-o", "extension-config.yaml"])
        run(["rewrite-config", BUNDLE, "--format", "set-flags", "-o", "helm-install.sh"])
        run(["rewrite-config", BUNDLE, "--format", "containerd", "--insecure", private.host, "-o", "certs.d"])
        run(["rewrite-config", BUNDLE, "--format", "registries-conf", "--insecure", private.host,
             "-o", "registries.conf"])
        run(["rewrite-config", BUNDLE, "--format", "kyverno", "--verify-key", KEY, "-o", "verify-images.yaml"])
        run(["rewrite-config", BUNDLE, "--format", "containers-policy", "--verify-key", KEY,
             "-o", "containers-policy"])

        say("8. runbook: the offline install steps with this plan's real values")
        run(["runbook", BUNDLE, "-o", "RUNBOOK.md"])
        run(["runbook", BUNDLE, "--format", "shell", "-o", "install.sh"])

        say("9. a real containerd pulls the upstream names from the private registry through the emitted hosts.toml")
        node_pull(sources)

    say("10. report: the record of what crosses the gap, for whoever approves the media")
    run(["report", BUNDLE, "--bundle-key", SITE_PUB, "--verify-key", KEY, "-o", "report.html"])

    say("11. diff: what the next release changes (plans only, no registry needed)")
    run(["plan", "--version", "v23.9.2", *NODE, "-o", "plan-v23.9.2.yaml"])
    run(["plan", "--version", "v24.9.2", *NODE, "-o", "plan-v24.9.2.yaml"])
    run(["diff", "plan-v23.9.2.yaml", "plan-v24.9.2.yaml"])

    say(f"done in {time.monotonic() - started:.0f} s: every process the demo started is stopped")
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
