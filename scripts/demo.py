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
registry through the emitted hosts.toml. A second plan covers a Rocky Linux 8.9 node
whose driver is compiled at run time: a signed dnf repository built with the test kit
(rpmbuild, rpmsign, createrepo_c) -> pull-bundle --package-source -> push-bundle
--packages-dir -> verify --packages-dir -> rewrite-config --format driver-repo -> the
real dnf downloading the kernel packages from that partial mirror, signature checks on.
With the private registry stopped too, ``mirrorkit serve`` answers for the bundle and
containerd pulls through it; serve stops on SIGTERM. Last, ``report --bundle-key
--verify-key`` writes the approver's HTML record and ``diff`` compares two releases' plans. Every process it starts
is stopped. The mirrorkit commands run in the output folder, so the commands
shown are exactly the ones that ran.
"""

from __future__ import annotations

import gzip
import io
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the test kit (images, registries, cosign) lives with the tests

from kit import daemon, dnfroot, pgpkey, rpmrepo  # noqa: E402
from kit.cosign import PrivateKey, make_key, sign_recursive, write_public_key  # noqa: E402
from kit.images import OCI_LAYER_GZIP, Blob, Index, gpu_operator_like_set, make_image, sha256_digest  # noqa: E402
from kit.push import push_image  # noqa: E402
from kit.registryd import RegistryServer  # noqa: E402
from kit.serveproc import URL_LINE  # noqa: E402

from mirrorkit.refs import Ref  # noqa: E402

OUT = Path(os.environ.get("MIRRORKIT_DEMO_OUT") or ROOT / "bundles" / "demo").resolve()
MIRRORKIT = str(Path(sys.executable).parent / "mirrorkit")
NODE = ["--node", "ubuntu22.04/5.15.0-131-generic", "--driver-branch", "550", "--precompiled"]
PLAN_ARGS = ["--version", "v23.9.2", *NODE]
BUNDLE = "gpu-operator-v23.9.2.tar"
KEY = "demo-cosign.pub"
SITE_KEY, SITE_PUB = "site-bundle.pem", "site-bundle.pub"   # the site's own key: it signs the bundle's lock
# A Rocky Linux 8.9 node whose driver is compiled at run time: its kernel is one the test dnf repository has.
ROCKY_KERNEL = f"{rpmrepo.KERNEL_A}.x86_64"
ROCKY_PLAN_ARGS = ["--version", "v23.9.2", "--node", f"rocky8.9/{ROCKY_KERNEL}"]
ROCKY_BUNDLE = "gpu-operator-v23.9.2-rocky8.9.tar"
ROCKY_KEY = "rocky-archive.asc"     # the distribution's OpenPGP key (the test repository's, here)


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


def seed_and_sign(upstream: RegistryServer, sources: list[str]) -> PrivateKey:
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
    return key


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
    work = Path(tempfile.mkdtemp(prefix="mirrorkit-demo-"))   # the test repository and image roots
    try:
        return demo(started, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def demo(started: float, work: Path) -> int:
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
        key = seed_and_sign(upstream, sources)

        say("3. plan --resolve: pin every image to its digest, platforms and size")
        run(["plan", *PLAN_ARGS, *target, "--resolve", *endpoint, "-o", "plan.yaml"])

        say("4. pull-bundle --verify-key --sign-key (connected side): nothing unsigned gets in; "
            "one bundle, every blob once, signatures carried, the lock signed by the site")
        demo_chart()
        site_key()
        run(["pull-bundle", "plan.yaml", "-o", BUNDLE, "--chart", "gpu-operator-v23.9.2.tgz",
             "--verify-key", KEY, "--sign-key", SITE_KEY, *endpoint])

        say("5. a Rocky Linux 8.9 node compiles its driver at run time: its kernel packages travel too, "
            "with the distribution's own signatures")
        repo, image_root = rocky_world(upstream, key, work)
        try:
            run(["plan", *ROCKY_PLAN_ARGS, *target, "--resolve", *endpoint, "-o", "plan-rocky8.9.yaml"])
            need = rocky_need()
            print(f"  plan-rocky8.9.yaml: the {need['os']} node's driver will install {' '.join(need['names'])} "
                  f"(no precompiled image: built at run time in {need['driver_image']})")
            run(["pull-bundle", "plan-rocky8.9.yaml", "-o", ROCKY_BUNDLE, "--package-source", "rocky=rocky.repo",
                 "--verify-key", KEY, *endpoint])
        finally:
            repo.stop()
        upstream.stop()

        say("6. (air gap: the upstream and the package repository are stopped) push-bundle --bundle-key "
            "--verify-key: the lock's signature first, then image signatures checked offline from the bundle, "
            "every byte verified, pushed, registry verified")
        run(["push-bundle", BUNDLE, "--insecure", private.host, "--bundle-key", SITE_PUB, "--verify-key", KEY])

        say("7. verify --verify-key: the preflight before installing, signatures read at the mirror")
        run(["verify", BUNDLE, "--insecure", private.host, "--verify-key", KEY])

        say("8. rewrite-config: Helm values, KubeSphere extension config, --set flags, hosts.toml, "
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

        say("9. runbook: the offline install steps with this plan's real values")
        run(["runbook", BUNDLE, "-o", "RUNBOOK.md"])
        run(["runbook", BUNDLE, "--format", "shell", "-o", "install.sh"])

        say("10. a real containerd pulls the upstream names from the private registry through the emitted hosts.toml")
        node_pull(sources)

        say("11. the Rocky node's far side: images into the registry, the packages as a partial mirror for any "
            "web server, the driver's repo files pointing at it, and the real dnf checking every signature")
        rocky_far_side(private.host, image_root, work)

    say("12. no registry at all: mirrorkit serve answers for the bundle itself, read-only, verified first")
    serve_pull(next(s for s in sources if "/gpu-operator:" in s))

    say("13. report: the record of what crosses the gap, for whoever approves the media")
    run(["report", BUNDLE, "--bundle-key", SITE_PUB, "--verify-key", KEY, "-o", "report.html"])

    say("14. diff: what the next release changes (plans only, no registry needed)")
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


def rocky_world(upstream: RegistryServer, key: PrivateKey, work: Path) -> tuple[rpmrepo.TestRepo, Path]:
    """The connected side's Rocky sources: a signed dnf repository on loopback and the driver image.

    The repository is real rpm-md (rpmbuild, rpmsign, createrepo_c, a detached ``repomd.xml.asc``)
    shaped like Rocky's BaseOS and AppStream; the driver image carries the rpmdb the closure is
    computed against (what its own dnf will see as installed), and is signed like the others.
    """
    archive = pgpkey.make_key(work / "gnupg", "Demo Rocky Archive")
    other = pgpkey.make_key(work / "gnupg-other", "Unused")
    repo = rpmrepo.build(work / "www", archive, other).start()
    shutil.copyfile(archive.public_armored, OUT / ROCKY_KEY)
    repo.repo_file(OUT / "rocky.repo", key=OUT / ROCKY_KEY)
    print(f"  a signed dnf repository on 127.0.0.1:{repo.port} plays Rocky 8's BaseOS and AppStream: "
          f"{len(repo.rpms)} rpms made by rpmbuild, signed by rpmsign, indexed by createrepo_c, "
          f"repomd.xml.asc by {archive.fingerprint[-16:]} ({ROCKY_KEY})")
    installed = [repo.rpms[spec.nevra] for spec in repo.specs if spec.name in rpmrepo.INSTALLED]
    image_root = rpmrepo.make_image_root(work / "driver-image", installed)
    driver = next(line for line in run_quiet(["plan", *ROCKY_PLAN_ARGS, "--format", "txt"]).split()
                  if "/driver:" in line)
    ref = Ref.parse(driver)
    image = make_image("rocky-driver", [image_layer(image_root)])
    push_image(upstream.url, ref.repository, ref.tag, image)
    sign_recursive(upstream.url, ref.repository, f"{ref.registry}/{ref.repository}", image, key)
    print(f"  seeded and signed {driver}  (its rpmdb lists {', '.join(rpmrepo.INSTALLED)})")
    print("  rocky.repo, the .repo file the site already uses:")
    for line in (OUT / "rocky.repo").read_text().splitlines()[:7]:
        print(f"    {line}")
    return repo, image_root


def run_quiet(args: list[str]) -> str:
    """A mirrorkit command whose output the demo reads but does not show."""
    return subprocess.run([MIRRORKIT, *args], text=True, capture_output=True, cwd=OUT, check=True).stdout


def image_layer(root: Path) -> Blob:
    """One gzip layer holding every file under ``root`` (the driver image's filesystem)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            info = tarfile.TarInfo(str(path.relative_to(root)))
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    plain = buf.getvalue()
    return Blob.of(gzip.compress(plain, mtime=0), OCI_LAYER_GZIP, sha256_digest(plain))


def rocky_far_side(private_host: str, image_root: Path, work: Path) -> None:
    """push-bundle --packages-dir, verify it, a static web server over it, driver-repo, the real dnf."""
    import yaml

    run(["push-bundle", ROCKY_BUNDLE, "--insecure", private_host, "--verify-key", KEY, "--packages-dir", "packages"])
    run(["verify", ROCKY_BUNDLE, "--insecure", private_host, "--packages-dir", "packages"])
    web = rpmrepo.StaticServer(OUT / "packages")     # what nginx (or Nexus raw, S3) is on the far side
    try:
        print(f"  (a plain static web server on 127.0.0.1:{web.port} serves packages/, as nginx would)")
        run(["rewrite-config", ROCKY_BUNDLE, "--format", "driver-repo", "--package-url", f"{web.url}/",
             "-o", "driver-repo.yaml"])
        configmap = next(d for d in yaml.safe_load_all((OUT / "driver-repo.yaml").read_text())
                         if d and d.get("kind") == "ConfigMap")
        keys = sorted(configmap["data"])
        print(f"  ConfigMap {configmap['metadata']['name']} (mounted into /etc/yum.repos.d): {', '.join(keys)}; "
              f"{keys[1]}:")
        for line in configmap["data"][keys[1]].splitlines():
            print(f"    {line}")
        (OUT / "dnf.log").write_text("")
        got = dnfroot.dnf_download(image_root, configmap["data"], rocky_need()["names"], work / "dnf", "8.9",
                                   echo=lambda argv, output: show_dnf(argv, output, work / "dnf"))
    finally:
        web.stop()
    print(f"  dnf downloaded {len(got)} packages, rpm signatures and repomd.xml.asc checked: {' '.join(got)}")


def rocky_need() -> dict:
    """The Rocky plan's one package need (os, kernel, names, driver image)."""
    import yaml

    (need,) = yaml.safe_load((OUT / "plan-rocky8.9.yaml").read_text())["packages"]
    return dict(need)


def show_dnf(argv: list[str], output: str, folder: Path) -> None:
    """Print one real dnf run, its paths relative to its folder (the driver image's copy is ``root``):
    for the install, the packages asked for and the downloads; the whole output goes to dnf.log."""
    shown = [a for a in argv if not a.startswith("--setopt=cachedir")]
    command = " ".join(shlex.quote(a) for a in shown).replace(f"{folder}/", "")
    print(f"$ (in {folder.name}/) {command}")
    with (OUT / "dnf.log").open("a") as log:
        log.write(f"$ {command}\n{output}\n")
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    if "install" in argv:
        asked = lines[:next((i for i, line in enumerate(lines) if line.startswith("Installing dependencies")),
                            len(lines))]
        fetched = lines[next((i for i, line in enumerate(lines) if line.startswith("Downloading Packages")),
                             len(lines)):]
        fetched = fetched[:next((i + 1 for i, line in enumerate(fetched) if line == "Complete!"), len(fetched))]
        lines = [*asked, f"... (the dependencies, {len(lines) - len(asked) - len(fetched)} more lines in dnf.log)",
                 *fetched]
    for line in lines:
        print(f"  {line}")


def serve_pull(source: str) -> None:
    """mirrorkit serve on a free port, hosts.toml for it, a real containerd pull through it, SIGTERM."""
    from kit.containerd import Containerd

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    args = ["serve", BUNDLE, "--addr", f"127.0.0.1:{port}", "--bundle-key", SITE_PUB]
    print(f"$ mirrorkit {' '.join(args)} &", flush=True)
    log_path = OUT / "serve.log"
    proc, log = daemon.start([MIRRORKIT, *args], log_path, OUT)
    try:
        deadline = time.monotonic() + 60
        while not URL_LINE.search(log_path.read_text(errors="replace")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"demo failed: serve did not start:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.05)
        announced = log_path.read_text(errors="replace")
        print(announced.rstrip())
        host = f"127.0.0.1:{port}"
        run(["rewrite-config", BUNDLE, "--format", "containerd", "--registry", f"{host}/kse", "--insecure", host,
             "-o", "certs.d-serve"])
        with Containerd() as ctrd:
            ctrd.pull(source, hosts_dir=OUT / "certs.d-serve", platform="linux/amd64")
            print(f"  ctr pulled {source} through mirrorkit serve  {ctrd.image_digest(source)[:19]}...")
        requests = log_path.read_text(errors="replace")[len(announced):].splitlines()
        print(f"  serve's access log, {len(requests)} requests, e.g.:")
        for line in [r for r in requests if "/manifests/" in r][:2]:
            print(f"    {line}")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        print(f"  serve stopped on SIGTERM: exit {code} in {time.monotonic() - sent:.1f} s")
    finally:
        daemon.stop(proc, log)


if __name__ == "__main__":
    sys.exit(main())
