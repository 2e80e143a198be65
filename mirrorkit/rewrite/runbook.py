"""The offline install runbook, filled in with one plan's real values.

Air-gapped installs fail on the step nobody wrote down; this writes all of them
down with the site's own registry, release, nodes, bundle names and checksums,
in Markdown for people and as a shell script for the same steps.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from mirrorkit.bundle.volumes import read_checksum
from mirrorkit.destinations import operator_chart
from mirrorkit.lock import LockChart, LockInstaller
from mirrorkit.plan import Plan
from mirrorkit.refs import Ref
from mirrorkit.rewrite.comments import inert
from mirrorkit.rewrite.containerd import expressible as containerd_expressible
from mirrorkit.rewrite.crchanges import CrChange

POD_PREFIXES = (
    ("operator", "gpu-operator-", "Running"),
    ("node-feature-discovery.image", "gpu-operator-node-feature-discovery-", "Running"),
    ("driver", "nvidia-driver-daemonset-", "Running"),
    ("toolkit", "nvidia-container-toolkit-daemonset-", "Running"),
    ("devicePlugin", "nvidia-device-plugin-daemonset-", "Running"),
    ("dcgm", "nvidia-dcgm-", "Running"),
    ("dcgmExporter", "nvidia-dcgm-exporter-", "Running"),
    ("gfd", "gpu-feature-discovery-", "Running"),
    ("migManager", "nvidia-mig-manager-", "Running"),
    ("validator", "nvidia-operator-validator-", "Running"),
    ("validator", "nvidia-cuda-validator-", "Completed"),
)


@dataclass
class RunbookInput:
    plan: Plan
    dest: dict[str, Ref]
    source_name: str
    volumes: list[tuple[str, str | None]] = field(default_factory=list)
    charts: list[LockChart] = field(default_factory=list)
    namespace: str = "gpu-operator"
    insecure: tuple[str, ...] = ()
    ca_cert: str | None = None
    installer: LockInstaller | None = None     # mirrorkit's offline installer, carried in the bundle
    package_repos: list[str] = field(default_factory=list)   # OS/NAME of each package repository the bundle carries
    verify_key: str = "nvidia.pub"           # the publisher's cosign key: every runbook checks signatures with it
    pull_secret: str | None = None           # an authenticated mirror: the imagePullSecret the pods use
    site_signed: bool = False                # --platform rewrote indexes: the site signs them (push-bundle --site-key)


def _installer_lines(inp: RunbookInput) -> list[str]:
    """How to take mirrorkit's installer out of the bundle with tar alone, and install it (none: nothing)."""
    if inp.installer is None:
        return []
    from mirrorkit.installer.carry import extract_commands

    return extract_commands(inp.installer, [n for n, _ in inp.volumes] or ["bundles/gpu.tar"])


def _q(value: object) -> str:
    """A value for a shell command line: quoted, whatever it holds."""
    return shlex.quote(str(value))


def _checksum(volume: str) -> str:
    """``.sha256`` files name the volume without its folder, so check from inside the folder."""
    folder, name = str(Path(volume).parent), Path(volume).name
    return f"(cd {shlex.quote(folder)} && sha256sum -c {shlex.quote(name)}.sha256)"


def _flags(inp: RunbookInput) -> str:
    """The TLS choices the push was made with, so the printed commands work as printed."""
    out = "".join(f" --insecure {shlex.quote(h)}" for h in inp.insecure)
    return out + (f" --ca-cert {shlex.quote(inp.ca_cert)}" if inp.ca_cert else "")


def _helm_flags(inp: RunbookInput, chart: str) -> str:
    if not chart.startswith("oci://"):
        return ""
    host = chart[len("oci://"):].split("/", 1)[0]
    if host in inp.insecure:
        return " --plain-http"
    return f" --ca-file {shlex.quote(inp.ca_cert)}" if inp.ca_cert else ""


def _registry(inp: RunbookInput) -> str:
    if inp.plan.registry:
        return inp.plan.registry
    hosts = sorted({d.registry for d in inp.dest.values()})
    return hosts[0] if hosts else "REGISTRY"


SITE_KEY, SITE_PUB = "site.pem", "site.pub"


def _sig(inp: RunbookInput, shell: bool = False) -> str:
    """The keys signatures are checked with: the publisher's, and the site's when --platform rewrote indexes."""
    out = " --verify-key " + ('"$VERIFY_KEY"' if shell else shlex.quote(inp.verify_key))
    return out + (f" --verify-key {SITE_PUB}" if inp.site_signed else "")


def _push_sig(inp: RunbookInput, shell: bool = False) -> str:
    """push-bundle's keys; with rewritten indexes, the site signs them at the mirror (push-bundle --site-key)."""
    return _sig(inp, shell) + (f" --site-key {SITE_KEY}" if inp.site_signed else "")


def _mirror_host(inp: RunbookInput) -> str:
    return _registry(inp).split("/", 1)[0]


def _shell_chart(chart: str, reg: str) -> str:
    """The chart reference for a script: the registry part as ``$REGISTRY``, so one variable moves it all."""
    rest = chart.removeprefix(f"oci://{reg}")
    if chart.startswith(f"oci://{reg}/") and all(c.isalnum() or c in "._/-" for c in rest):
        return f'"oci://$REGISTRY{rest}"'
    return _q(chart)


def _containerd_lines(inp: RunbookInput, src: str) -> list[str]:
    """The containerd step: hosts.toml (and the mirror's CA) copied without overwriting a site's own files."""
    ca = f" --ca-file {shlex.quote(inp.ca_cert)} --node-certs-dir /etc/containerd/certs.d" if inp.ca_cert else ""
    return [f"mirrorkit rewrite-config {shlex.quote(src)} --format containerd{ca} -o certs.d",
            "# on every node: copy certs.d/* to /etc/containerd/certs.d/, refusing to overwrite a site's own",
            "# hosts.toml (merge such a file by hand: its [host] entries and ours can live in one file):",
            "for f in $(cd certs.d && find . -type f); do t=/etc/containerd/certs.d/$f; "
            "if [ -e \"$t\" ] && ! cmp -s \"certs.d/$f\" \"$t\"; then echo \"$t exists: merge it by hand\"; "
            "exit 1; fi; done",
            "cp -r certs.d/. /etc/containerd/certs.d/",
            "# containerd's CRI registry config needs config_path = \"/etc/containerd/certs.d\" "
            "(then: systemctl restart containerd)"]


def _crio_ca_lines(inp: RunbookInput) -> list[str]:
    if not inp.ca_cert:
        return []
    host = _mirror_host(inp)
    return [f"# CRI-O / podman nodes trust the mirror's CA from /etc/containers/certs.d/{host}/:",
            f"install -D -m 0644 {shlex.quote(inp.ca_cert)} {shlex.quote(f'/etc/containers/certs.d/{host}/ca.crt')}"]


def _pull_secret_lines(inp: RunbookInput, src: str, namespace: str) -> list[str]:
    """An authenticated mirror: the Secret (credentials read from the credential store, never argv)."""
    if not inp.pull_secret:
        return []
    name = shlex.quote(inp.pull_secret)
    return [f"mirrorkit rewrite-config {shlex.quote(src)} --format pull-secret --pull-secret {name} "
            f"--namespace {namespace} -o pull-secret.yaml   # from your mirrorkit login / auth.json",
            f"kubectl create namespace {namespace} --dry-run=client -o yaml | kubectl apply -f -",
            "kubectl apply -f pull-secret.yaml && rm -f pull-secret.yaml"]


def _policy_lines(inp: RunbookInput, src: str, shell: bool = False) -> list[str]:
    sig = _sig(inp, shell)
    reg = ' --registry "$REGISTRY"' if shell else ""
    site = " --site-signed" if inp.site_signed else ""
    return [f"mirrorkit rewrite-config {shlex.quote(src)} --format kyverno{reg}{sig}{site} -o verify-images.yaml",
            "if kubectl get crd clusterpolicies.kyverno.io >/dev/null 2>&1; then kubectl apply -f verify-images.yaml; "
            "else echo 'Kyverno is not installed: verify-images.yaml not applied' >&2; fi"]


def _components(plan: Plan) -> set[str]:
    return {c for i in plan.images for c in i.component.split(",")}


def _sample(inp: RunbookInput) -> str | None:
    for img in inp.plan.images:
        if img.component == "cuda-sample":
            return str(inp.dest[img.source])
    return None


def _chart_ref(inp: RunbookInput) -> tuple[str, str]:
    return operator_chart(inp.charts, inp.plan.registry, inp.plan.release)


def driver_package_steps(inp: RunbookInput) -> list[str]:
    """Runtime-compiled nodes (plan ``packages:``): serve the carried kernel packages, point the driver at them."""
    if not inp.plan.packages:
        return []
    src = inp.source_name
    kernels = ", ".join(sorted({f"{p.get('os')} {p.get('kernel')}" for p in inp.plan.packages}))
    if not inp.package_repos:
        # no step that would exit 2: say what the connected side must do first
        return ["### Driver packages", "",
                f"These nodes compile the driver at run time ({kernels}), and this "
                + ("bundle carries none of their kernel packages." if inp.volumes else "is a plan, not a bundle."),
                "Pull the bundle with `--package-source OS=FILE` (an apt sources file or a yum .repo file the",
                "connected side reaches), or give the driver a package repository the nodes reach.", ""]
    return ["### Driver packages: the carried partial mirror", "",
            f"These nodes compile the driver at run time ({kernels}). The bundle carries exactly their kernel",
            f"packages ({', '.join(inp.package_repos)}) with the distribution's own signed metadata. Write",
            "them out, serve the folder with any web server the nodes reach, and point the driver at it; the",
            "image's own apt/dnf checks the distribution's signatures with the keys it already has.", "", "```sh",
            f"mirrorkit push-bundle {shlex.quote(src)} --packages-dir /srv/gpu-packages",
            f"mirrorkit verify {shlex.quote(src)} --packages-dir /srv/gpu-packages",
            "# serve /srv/gpu-packages, e.g. at http://packages.local/gpu (nginx, Nexus raw, S3)",
            f"mirrorkit rewrite-config {shlex.quote(src)} --format driver-repo --package-url "
            "http://packages.local/gpu -o driver-repo.yaml   # add --package-ca CA.pem for https",
            f"kubectl apply -n {inp.namespace} -f driver-repo.yaml",
            "# driver-repo.values.yaml holds driver.repoConfig.configMapName (and driver.certConfig.name):",
            "#   pass it to helm with -f, or use rewrite-config --format helm --package-url ...", "```", ""]


def markdown(inp: RunbookInput) -> str:
    """The install runbook: its sections in order, each filled in from this plan."""
    sections = (_header, _carry, _load, _point, _signatures, _driver, _mig, _check, _uninstall)
    return "\n".join(line for section in sections for line in section(inp))


def _bundle_args(inp: RunbookInput) -> str:
    return " ".join(shlex.quote(n) for n, _ in inp.volumes) or "bundles/gpu.tar"


def _header(inp: RunbookInput) -> list[str]:
    """Title, and the site's values at a glance."""
    plan, reg = inp.plan, _registry(inp)
    lines = [f"# Offline install: NVIDIA GPU Operator {plan.release or ''} ({plan.flavor or 'images'})", ""]
    lines += ["Written by `mirrorkit runbook` from this plan; every value below is this site's.", "",
              f"- private registry: `{reg}`", f"- images: {len(plan.images)}"]
    for node in plan.nodes:
        lines.append(f"- GPU node: {node.get('name') or 'node'} — {node['os']}, kernel {node.get('kernel') or '?'}, "
                     f"{node['arch']}")
    if plan.driver:
        kind = "precompiled" if plan.driver.get("precompiled") else "compiled on the node at start-up"
        lines.append(f"- driver: `{plan.driver.get('version')}` ({kind})")
    return lines


def _carry(inp: RunbookInput) -> list[str]:
    """1. Carry the bundle across the air gap: the volumes and how to check each."""
    src = inp.source_name
    lines = ["", "## 1. Carry the bundle across the air gap", ""]
    if inp.volumes:
        lines.append("Copy these files, each with its `.sha256` beside it:")
        lines.append("")
        for name, digest in inp.volumes:
            lines.append(f"- `{name}`" + (f" — sha256 `{digest}`" if digest else ""))
        lines += ["", "On arrival, check every volume (each one can be checked on its own):", "", "```sh"]
        lines += [_checksum(name) for name, _ in inp.volumes]
        lines += ["```", ""]
    else:
        lines += [f"Pull the bundle on the connected side: `mirrorkit pull-bundle {src} -o bundles/gpu.tar`,",
                  "then carry `bundles/gpu.tar`, `bundles/gpu.tar.sha256` and `bundles/gpu.lock.yaml`.", ""]
    if inp.installer is not None:
        kit = inp.installer
        lines += ["### Install mirrorkit on the air-gapped host (no package index needed)", "",
                  f"The bundle carries mirrorkit {kit.version}'s offline installer (CPython "
                  f"{', '.join(kit.pythons)} on {', '.join(kit.platforms)}); `tar` and `sha256sum` take it out:",
                  "", "```sh", *_installer_lines(inp), "export PATH=/opt/mirrorkit/bin:$PATH", "```", "",
                  "`install.sh` checks every file against `SHA256SUMS`; when the system Python is older than 3.11",
                  "it names the package to install (RHEL 8/9: `dnf install python3.11`; Ubuntu 22.04:",
                  "`apt install python3.11 python3.11-venv`).", ""]
    return lines


def _load(inp: RunbookInput) -> list[str]:
    """2. Load the private registry: push-bundle, then verify."""
    reg, src, bundle_args = _registry(inp), inp.source_name, _bundle_args(inp)
    lines = ["## 2. Load the private registry", "", "```sh",
              f"mirrorkit push-bundle {bundle_args} --registry {shlex.quote(reg)}{_flags(inp)}{_push_sig(inp)}",
              f"mirrorkit verify {shlex.quote(inp.volumes[0][0]) if inp.volumes else shlex.quote(src)} "
              f"--registry {shlex.quote(reg)}{_flags(inp)}{_sig(inp)}",
              "```", "",
              "`push-bundle` refuses a damaged bundle before pushing anything and verifies every image afterwards;",
              "`verify` must print every image present with the expected digest (exit 0) before you go on.",
              f"`--verify-key {inert(inp.verify_key)}` (NVIDIA's cosign public key) checks every image's signature",
              "offline before the push, and at the mirror the digest each reference resolves to.", ""]
    if inp.site_signed:
        lines += ["`--platform` kept several platforms, so the tags name indexes no publisher signed: the site signs",
                  f"them at the mirror with its own key (`{SITE_KEY}`, e.g. `openssl genpkey -algorithm EC -pkeyopt",
                  f"ec_paramgen_curve:P-256 -out {SITE_KEY}`, public half `openssl pkey -in {SITE_KEY} -pubout -out",
                  f"{SITE_PUB}`), after checking their platform manifests, and the policies list `{SITE_PUB}` too.", ""]
    return lines


def _point(inp: RunbookInput) -> list[str]:
    """3. Point the cluster at the mirror: KubeSphere, Helm, or the runtime's own redirection."""
    plan, src = inp.plan, inp.source_name
    kubesphere = plan.flavor == "kubesphere"
    lines = ["## 3. Point the cluster at the mirror", ""]
    if kubesphere:
        lines += ["```sh", f"mirrorkit rewrite-config {shlex.quote(src)} --format kubesphere -o extension-config.yaml",
                  "```", "",
                  "The KubeSphere extension ignores `global.imageRegistry`; this file spells out every image.", "",
                  "1. KubeSphere Marketplace → **NVIDIA GPU Operator** → **Install**, pick version "
                  f"`{plan.release}`, **Next**.",
                  "2. **Extension Config**: replace it with `extension-config.yaml`, **Start Installation**.",
                  "3. **Next**, select the GPU clusters, **Next**.",
                  "4. **Differential Configuration**: keep the same image settings per cluster; install.", ""]
    elif plan.release is None:
        # no GPU Operator release: there are no chart values to write (--format helm would exit 2)
        lines += ["This plan is an image set, not a GPU Operator release: point its workloads at the mirrored",
                  "names (the plan's `destination` fields), or redirect pulls at the runtime as below.", ""]
    else:
        chart, version = _chart_ref(inp)
        secret = f" --pull-secret {shlex.quote(inp.pull_secret)}" if inp.pull_secret else ""
        lines += ["```sh", *_pull_secret_lines(inp, src, _q(inp.namespace)),
                  f"mirrorkit rewrite-config {shlex.quote(src)} --format helm{secret} -o values-airgap.yaml",
                  f"helm install --wait gpu-operator {_q(chart)} --version {_q(version)}{_helm_flags(inp, chart)} \\",
                  f"  -n {_q(inp.namespace)} --create-namespace -f values-airgap.yaml", "```", ""]
        if chart.startswith("nvidia/"):
            lines += [f"The chart itself must be available offline: carry `gpu-operator-{inert(version)}.tgz`",
                      "and install from the file, or bundle it with `pull-bundle --chart`.", ""]
    lines += ["Nodes that keep upstream names (`nvcr.io/...`) in other manifests can redirect pulls at the runtime:",
              "", "```sh"]
    if containerd_expressible(plan, inp.dest):
        lines += _containerd_lines(inp, src)
    else:
        # a command that would exit 2 has no place in a runbook
        lines += ["# containerd hosts.toml can only add a path prefix, not this plan's mapping: point the",
                  "# manifests themselves at the mirror (or plan again with --mapping prefix)"]
    lines += [f"mirrorkit rewrite-config {shlex.quote(src)} --format registries-conf -o mirror.conf  # CRI-O / podman",
              *_crio_ca_lines(inp), "```", ""]
    if inp.ca_cert:
        lines += [f"The mirror's certificate is signed by a private CA (`{inert(inp.ca_cert)}`): every node needs",
                  f"it, in `/etc/containerd/certs.d/{inert(_mirror_host(inp))}/ca.crt` for containerd (the",
                  "`certs.d` folder above carries it) and in `/etc/containers/certs.d/` for CRI-O and podman.", ""]
    return lines


def _signatures(inp: RunbookInput) -> list[str]:
    """Signatures: verified on this side (step 2), enforced in the cluster."""
    src = inp.source_name
    lines = ["### Signatures: verified on this side, enforced in the cluster", "",
              "NVIDIA signs its images with cosign; the bundle carries the signatures, and step 2 checked them",
              f"under `{inert(inp.verify_key)}` before the push and at the mirror. Make the cluster refuse anything",
              "unsigned as well (Kyverno; CRI-O/podman nodes check on their own):", "", "```sh",
              *_policy_lines(inp, src),
              f"mirrorkit rewrite-config {shlex.quote(src)} --format containers-policy{_sig(inp)}"
              f"{' --site-signed' if inp.site_signed else ''} "
              "-o containers-policy",
              "# CRI-O / podman nodes: policy.json -> /etc/containers/,",
              "#   registries.d/* -> /etc/containers/registries.d/, keys/* -> /etc/containers/keys/", "```", ""]
    return lines


def _driver(inp: RunbookInput) -> list[str]:
    """4. Driver: NVIDIADriver resources, precompiled, compiled on the node, or none."""
    plan, src, comps = inp.plan, inp.source_name, _components(inp.plan)
    lines = ["## 4. Driver", ""]
    if plan.nvidiadrivers:
        names = ", ".join(str((cr.get("metadata") or {}).get("name")) for cr in plan.nvidiadrivers)
        lines += [f"Each node pool runs its own driver, from the NVIDIADriver resources ({names}). The Helm",
                  "values above set `driver.nvidiaDriverCRD.enabled=true` and `deployDefaultCR=false`; after the",
                  "install, apply the resources pointing at the mirror:", "", "```sh",
                  f"mirrorkit rewrite-config {shlex.quote(src)} --format nvidiadriver -o nvidiadrivers.yaml",
                  "kubectl apply -f nvidiadrivers.yaml", "```", ""]
    elif plan.driver.get("precompiled"):
        branch = plan.driver.get("version")
        lines += [f"Precompiled drivers: one image per kernel (`{branch}-<kernel>-<os>`), no kernel",
                  "headers needed on the nodes. A node that boots another kernel needs its own image: plan and bundle",
                  "again before upgrading kernels.", ""]
    elif "driver" in comps:
        lines += ["The driver is compiled on each node when its pod starts and needs the kernel headers for the",
                  "running kernel. Air-gapped, that means a local package repository (apt or dnf mirror) the",
                  "driver container can reach: set `driver.repoConfig.configMapName` to a ConfigMap holding the",
                  "repository file. Precompiled drivers (`--precompiled`) avoid this.", ""]
    else:
        lines += ["The plan carries no driver image (`driver.enabled: false`): the nodes must have the NVIDIA",
                  "driver installed already.", ""]
    lines += driver_package_steps(inp)
    return lines


def _mig(inp: RunbookInput) -> list[str]:
    """5. MIG, when the plan carries the MIG manager."""
    comps = _components(inp.plan)
    lines: list[str] = []
    if "migManager" in comps:
        lines += ["## 5. MIG (A100, A30, H100 ...)", "",
                  "Choose the strategy at install time (`mig.strategy=single` exposes one kind of slice as",
                  "`nvidia.com/gpu`; `mixed` exposes each profile as its own resource), then label the nodes:", "",
                  "```sh", "helm upgrade gpu-operator ... --reuse-values --set mig.strategy=mixed",
                  "kubectl label node <node> nvidia.com/mig.config=all-1g.5gb --overwrite", "```", "",
                  "The MIG manager applies the layout and the node reports `nvidia.com/mig.config.state=success`.",
                  ""]
    return lines


def _check(inp: RunbookInput) -> list[str]:
    """6. Check the installation: the pods to expect and a validation workload."""
    comps = _components(inp.plan)
    lines = ["## 6. Check the installation", "", "```sh", f"kubectl get pods -n {inp.namespace}", "```", "",
              "A healthy cluster shows (one per GPU node for daemonsets):", "", "```"]
    for comp, prefix, state in POD_PREFIXES:
        if comp in comps:
            lines.append(f"{prefix}xxxxx   {'1/1' if state == 'Running' else '0/1'}   {state}")
    lines += ["```", ""]
    sample = _sample(inp)
    if sample:
        lines += ["Run the validation workload from the mirror:", "", "```sh",
                  "cat <<EOF | kubectl apply -f -", "apiVersion: v1", "kind: Pod", "metadata:",
                  "  name: cuda-vectoradd", "spec:", "  restartPolicy: OnFailure", "  containers:",
                  "  - name: cuda-vectoradd", f"    image: \"{sample}\"", "    resources:", "      limits:",
                  "        nvidia.com/gpu: 1", "EOF", "kubectl logs pod/cuda-vectoradd   # ends with: Test PASSED",
                  "```", ""]
    return lines


def _uninstall(inp: RunbookInput) -> list[str]:
    """7. Uninstall."""
    kubesphere = inp.plan.flavor == "kubesphere"
    lines = ["## 7. Uninstall", ""]
    if kubesphere:
        lines += ["KubeSphere Marketplace → the installed **NVIDIA GPU Operator** → **Uninstall**.", ""]
    else:
        lines += ["```sh", f"helm uninstall gpu-operator -n {inp.namespace}",
                  "kubectl delete crd clusterpolicies.nvidia.com nvidiadrivers.nvidia.com --ignore-not-found", "```",
                  ""]
    return lines


def shell(inp: RunbookInput) -> str:
    """The same steps as a script: variables at the top, stops at the first failure."""
    plan, reg = inp.plan, _registry(inp)
    bundle_args = " ".join(shlex.quote(n) for n, _ in inp.volumes) or "bundles/gpu.tar"
    chart, version = _chart_ref(inp)
    fmt = "kubesphere" if plan.flavor == "kubesphere" else "helm"
    out = "extension-config.yaml" if fmt == "kubesphere" else "values-airgap.yaml"
    src = shlex.quote(inp.source_name)
    lines = ["#!/usr/bin/env bash",
             f"# Offline install of NVIDIA GPU Operator {inert(plan.release)} — written by mirrorkit runbook.",
             "set -euo pipefail", f"REGISTRY={shlex.quote(reg)}", f"NAMESPACE={shlex.quote(inp.namespace)}",
             f"VERIFY_KEY=${{VERIFY_KEY:-{shlex.quote(inp.verify_key)}}}   # NVIDIA's cosign public key", ""]
    for name, _ in inp.volumes:
        lines.append(_checksum(name))
    first = shlex.quote(inp.volumes[0][0]) if inp.volumes else src
    if inp.installer is not None:
        lines += ["if ! command -v mirrorkit >/dev/null; then   # mirrorkit from the bundle's offline installer",
                  *(f"  {line.split('  #')[0].rstrip()}" for line in _installer_lines(inp)),
                  "  export PATH=/opt/mirrorkit/bin:$PATH", "fi"]
    secret = f" --pull-secret {shlex.quote(inp.pull_secret)}" if inp.pull_secret and fmt == "helm" else ""
    lines += [f"mirrorkit push-bundle {bundle_args} --registry \"$REGISTRY\"{_flags(inp)}{_push_sig(inp, True)}",
              f"mirrorkit verify {first} --registry \"$REGISTRY\"{_flags(inp)}{_sig(inp, True)}",
              *_policy_lines(inp, inp.source_name, shell=True),
              *_pull_secret_lines(inp, inp.source_name, '"$NAMESPACE"'),
              f"mirrorkit rewrite-config {src} --format {fmt} --registry \"$REGISTRY\"{secret} -o {out}"]
    if fmt == "helm":
        lines += [f"helm install --wait gpu-operator {_shell_chart(chart, reg)} --version {_q(version)}"
                  f"{_helm_flags(inp, chart)} -n \"$NAMESPACE\" --create-namespace -f {out}"]
        if plan.nvidiadrivers:
            lines += [f"mirrorkit rewrite-config {src} --format nvidiadriver --registry \"$REGISTRY\" "
                      "-o nvidiadrivers.yaml", "kubectl apply -f nvidiadrivers.yaml"]
        lines += ["kubectl get pods -n \"$NAMESPACE\""]
    else:
        lines += ["echo " + _q(f"Paste {out} into the KubeSphere extension config of NVIDIA GPU Operator "
                                f"{plan.release}.")]
    return "\n".join(lines) + "\n"


def volumes_of(paths: list[Path]) -> list[tuple[str, str | None]]:
    """Each volume with the digest its ``.sha256`` file gives (read capped and checked), if it has one."""
    return [(str(p), read_checksum(p)) for p in paths]


# ---- upgrade runbook (runbook PLAN --upgrade-from OLD) ----------------------------------------------

# The GPU Operator chart's defaults for driver.upgradePolicy (values.yaml of NVIDIA/gpu-operator, v23.9 on).
UPGRADE_POLICY_DEFAULTS = """driver:
  upgradePolicy:
    autoUpgrade: true          # the operator upgrades driver pods node by node
    maxParallelUpgrades: 1     # nodes upgraded at once (0 = no limit)
    maxUnavailable: 25%        # GPU nodes that may be unavailable at once
    waitForCompletion:
      timeoutSeconds: 0        # wait for pods matching podSelector to finish (0 = forever)
      podSelector: ""
    gpuPodDeletion:
      force: false             # also delete GPU pods no controller manages
      timeoutSeconds: 300
      deleteEmptyDir: false
    drain:
      enable: false            # true: kubectl-drain the whole node, not only its GPU pods
      force: false
      podSelector: ""
      timeoutSeconds: 300
      deleteEmptyDir: false"""
UPGRADE_STATES = ("upgrade-required", "cordon-required", "wait-for-jobs-required", "pod-deletion-required",
                  "drain-required", "pod-restart-required", "validation-required", "uncordon-required",
                  "upgrade-done")


@dataclass
class UpgradeInput:
    new: RunbookInput
    old_plan: Plan
    old_source: str
    old_is_bundle: bool           # a lock or bundle: usable as pull-bundle --since
    changes: str                  # mirrorkit diff's text
    driver_changes: list[str] = field(default_factory=list)
    added: int = 0
    cr_changes: list[CrChange] = field(default_factory=list)


def _new_bundle(up: UpgradeInput) -> tuple[str, str]:
    """The differential bundle's first volume and the argument list for push-bundle."""
    if up.new.volumes:
        return up.new.volumes[0][0], " ".join(shlex.quote(n) for n, _ in up.new.volumes)
    name = f"bundles/gpu-operator-{up.new.plan.release or 'next'}.tar"
    return name, name


def _upgrade_chart(up: UpgradeInput) -> tuple[str, str]:
    """The new chart where the air-gapped side can reach it: the mirror's ``charts/`` when the bundle
    carries it (the upgrade runbook has pull-bundle carry it), else the upstream name."""
    return operator_chart(up.new.charts, up.new.plan.registry, up.new.plan.release, carried=True)


def _chart_fetch(up: UpgradeInput) -> str | None:
    """Connected side: fetch the new chart so pull-bundle can carry it (None when the bundle has it)."""
    _, version = _chart_ref(up.new)
    if up.new.charts or not up.new.plan.release:
        return None
    return f"helm pull nvidia/gpu-operator --version {_q(version)}   # writes gpu-operator-{inert(version)}.tgz"


def _pull_line(up: UpgradeInput) -> str:
    first, _ = _new_bundle(up)
    _, version = _chart_ref(up.new)
    line = f"mirrorkit pull-bundle {shlex.quote(up.new.source_name)} -o {shlex.quote(first)}"
    if up.old_is_bundle:
        line += f" --since {shlex.quote(up.old_source)}"
    if _chart_fetch(up):
        line += f" --chart {_q(f'gpu-operator-{version}.tgz')}"
    return line


def _crd_lines(up: UpgradeInput) -> list[str]:
    chart, version = _upgrade_chart(up)
    folder = f"chart-{version}"
    return [f"helm pull {_q(chart)} --version {_q(version)}{_helm_flags(up.new, chart)} --untar -d {_q(folder)}",
            f"kubectl apply --server-side --force-conflicts -f {_q(f'{folder}/gpu-operator/crds/')}",
            f"kubectl apply --server-side --force-conflicts -f "
            f"{_q(f'{folder}/gpu-operator/charts/node-feature-discovery/crds/')}"]


def _cr_section(up: UpgradeInput) -> list[str]:
    """NVIDIADriver CRs: helm upgrade leaves them alone, so they are re-emitted and applied here."""
    src = shlex.quote(up.new.source_name)
    if not up.new.plan.nvidiadrivers and not up.cr_changes:
        return []
    lines = ["### NVIDIADriver resources: `helm upgrade` does not touch them", "",
             "The chart runs with `deployDefaultCR: false`, so each pool's driver only changes when its",
             "NVIDIADriver resource is applied again. Re-emit them pointing at the mirror and apply them",
             "(after `helm upgrade`, so the new operator reconciles them):", "", "```sh"]
    if up.new.plan.nvidiadrivers:
        lines += [f"mirrorkit rewrite-config {src} --format nvidiadriver -o nvidiadrivers.yaml",
                  "kubectl apply -f nvidiadrivers.yaml"]
    lines += [f"kubectl delete nvidiadrivers.nvidia.com {shlex.quote(c.name)}   # gone from the new plan"
              for c in up.cr_changes if c.kind == "removed"]
    lines += ["kubectl get nvidiadrivers.nvidia.com   # each one: STATUS ready", "```", ""]
    if not up.cr_changes:
        return lines + ["No pool's driver changes: applying them again restarts nothing.", ""]
    lines += ["What each pool's nodes go through:", ""]
    for c in up.cr_changes:
        if c.kind == "changed":
            lines.append(f"- `{inert(c.name)}` ({inert(c.pool)}): {inert('; '.join(c.fields))}. Each node of the pool "
                         "goes through the driver upgrade below (cordon, GPU pods deleted, driver pod restarted on "
                         "the new image, validation, uncordon).")
        elif c.kind == "added":
            lines.append(f"- `{inert(c.name)}` ({inert(c.pool)}): a new pool; its nodes get a driver pod once the "
                         "resource is applied.")
        else:
            lines.append(f"- `{inert(c.name)}` ({inert(c.pool)}): no longer planned; deleting the resource removes "
                         "its driver pods, and those nodes have no driver until another NVIDIADriver selects them.")
    return lines + [""]


def _driver_section(up: UpgradeInput) -> list[str]:
    plan = up.new.plan
    nodes = [(f"{n['name']}: " if n.get("name") else "") + f"{n['os']}, kernel {n.get('kernel') or '?'}"
             for n in plan.nodes]
    lines = ["## 6. The driver upgrade: what the nodes will do", ""]
    changes = up.driver_changes + [c.describe() for c in up.cr_changes if c.kind == "changed"]
    if not changes:
        lines += ["Neither the driver image nor the driver manager (its init container) changes, and no",
                  "NVIDIADriver pool changes: no driver pod restarts. The other operands roll as DaemonSets",
                  "(RollingUpdate) once `helm upgrade` has changed them.", ""]
    else:
        lines += ["The driver pods change (" + "; ".join(changes) + "). The driver DaemonSet uses",
                  "`OnDelete`, so the operator's upgrade controller replaces driver pods itself, following",
                  "`driver.upgradePolicy` (the chart's defaults below; set yours in the values before `helm upgrade`):",
                  "", "```yaml", UPGRADE_POLICY_DEFAULTS, "```", "",
                  f"Each GPU node in turn ({'; '.join(nodes) or 'every GPU node'}), at most `maxParallelUpgrades`",
                  "at once and never more than `maxUnavailable` unavailable:", "",
                  "1. the node is cordoned: no new pods are scheduled on it;",
                  "2. pods matching `waitForCompletion.podSelector` are waited for;",
                  "3. the GPU pods on the node are deleted (`gpuPodDeletion`); with `drain.enable` the node is",
                  "   drained as well;",
                  "4. the driver pod restarts with the new image"
                  + (" (precompiled: the `<branch>-<kernel>-<os>` tag of that node's kernel);"
                     if plan.driver.get("precompiled") else ", compiling the driver for the running kernel;"),
                  "5. the validator checks the driver, and the node is uncordoned.", "",
                  "Follow it on the node label `nvidia.com/gpu-driver-upgrade-state` ("
                  + " → ".join(f"`{s}`" for s in UPGRADE_STATES) + "):", "",
                  "```sh", "kubectl get nodes -L nvidia.com/gpu-driver-upgrade-state", "```", "",
                  "With `autoUpgrade: false` nothing happens by itself: drain each node and delete its",
                  "`nvidia-driver-daemonset` pod to move it to the new driver.", ""]
    return lines


def _in_use_lines() -> list[str]:
    return ["kubectl get pods,nvidiadrivers.nvidia.com,clusterpolicies.nvidia.com -A -o yaml > in-use.yaml"]


def upgrade_markdown(up: UpgradeInput) -> str:
    inp, plan = up.new, up.new.plan
    reg, src = _registry(inp), inp.source_name
    first, bundle_args = _new_bundle(up)
    chart, version = _upgrade_chart(up)
    old_release = up.old_plan.release or "the installed release"
    lines = [f"# Upgrade: NVIDIA GPU Operator {old_release} → {plan.release or ''}", "",
             "Written by mirrorkit's runbook command from the two releases; every value below is this site's.", "",
             f"- private registry: `{reg}`", f"- from: `{up.old_source}` ({old_release})",
             f"- to: `{src}` ({plan.release}, {len(plan.images)} images)", "",
             "## 1. What changes", "", "```", up.changes.rstrip(), "```", "",
             f"Check it again at any time: `mirrorkit diff {shlex.quote(up.old_source)} {shlex.quote(src)}`.", "",
             "## 2. Before: the installed release is healthy and its images are all in the mirror", "",
             "```sh", f"mirrorkit verify {shlex.quote(up.old_source)} --registry {shlex.quote(reg)}{_flags(inp)}",
             f"kubectl get pods -n {inp.namespace}", "```", "",
             "## 3. Carry only what is new", "", "On the connected side:", "", "```sh",
             *([fetch] if (fetch := _chart_fetch(up)) else []), _pull_line(up), "```", ""]
    if up.old_is_bundle:
        lines += [f"`--since` leaves out every blob `{up.old_source}` carried already: the mirror has them.", ""]
    else:
        lines += [f"`{up.old_source}` is a plan, not a bundle: `--since` needs the previous bundle or its lock.",
                  "Without one, take an inventory of the mirror on the air-gapped side",
                  f"(`mirrorkit inventory --registry {shlex.quote(reg)}{_flags(inp)} -o inventory.json`), carry it",
                  "out and add `--have inventory.json` to the line above.", ""]
    lines += ["On the air-gapped side:", "", "```sh", _checksum(first),
              f"mirrorkit push-bundle {bundle_args} --registry {shlex.quote(reg)}{_flags(inp)}{_push_sig(inp)}",
              f"mirrorkit verify {shlex.quote(first)} --registry {shlex.quote(reg)}{_flags(inp)}{_sig(inp)}", "```", "",
              "`--verify-key` checks every new image's signature before the push, and at the mirror.", "",
              "## 4. CRDs first: Helm does not upgrade them", "",
              "`helm upgrade` leaves the CRDs of the installed release in place, and the new operator needs",
              "its own. Apply them from the new chart before upgrading:", "", "```sh", *_crd_lines(up), "```", "",
              "## 5. Upgrade the release with values pointing at the mirror", ""]
    if plan.flavor == "kubesphere":
        lines += ["```sh", f"mirrorkit rewrite-config {shlex.quote(src)} --format kubesphere -o extension-config.yaml",
                  "```", "", f"KubeSphere Marketplace → **NVIDIA GPU Operator** → **Upgrade** to `{plan.release}`;",
                  "replace the extension config with `extension-config.yaml`.", ""]
    else:
        secret = f" --pull-secret {shlex.quote(inp.pull_secret)}" if inp.pull_secret else ""
        lines += ["The signature policy first, so the new images are admitted only with a valid signature:", "",
                  "```sh", *_policy_lines(inp, src), "```", "",
                  "```sh", f"mirrorkit rewrite-config {shlex.quote(src)} --format helm{secret} -o values-airgap.yaml",
                  f"helm upgrade --wait gpu-operator {_q(chart)} --version {_q(version)}{_helm_flags(inp, chart)} \\",
                  f"  -n {_q(inp.namespace)} -f values-airgap.yaml", "```", "",
                  "Give the values file whole (not `--reuse-values`): the old values name the old images.", ""]
    lines += _cr_section(up)
    lines += _driver_section(up)
    lines += ["## 7. After: every new image is in the mirror and the operands run it", "", "```sh",
              f"mirrorkit verify {shlex.quote(src)} --registry {shlex.quote(reg)}{_flags(inp)}{_sig(inp)}",
              f"kubectl get pods -n {inp.namespace}",
              "kubectl get clusterpolicies.nvidia.com -o jsonpath='{.items[0].status.state}'   # ready", "```", "",
              "## 8. Later: take the old release out of the mirror", "",
              "Only once every pool runs the new driver. Prune keeps whatever the cluster still names: give it",
              "what runs now (pods, NVIDIADriver resources and the ClusterPolicy), taken just before:", "", "```sh",
              *_in_use_lines(),
              f"mirrorkit prune --registry {shlex.quote(reg)} --keep {shlex.quote(src)} "
              f"--drop {shlex.quote(up.old_source)} --in-use in-use.yaml{_flags(inp)}",
              "```", "",
              "That is a dry run; add `--apply` once it lists what you expect, then run the registry's",
              "garbage collection (prune prints how).", ""]
    return "\n".join(lines)


def upgrade_shell(up: UpgradeInput) -> str:
    """The air-gapped steps of the upgrade as a script; the connected-side pull is a comment."""
    inp, plan = up.new, up.new.plan
    reg = _registry(inp)
    first, bundle_args = _new_bundle(up)
    chart, version = _upgrade_chart(up)
    fmt = "kubesphere" if plan.flavor == "kubesphere" else "helm"
    out = "extension-config.yaml" if fmt == "kubesphere" else "values-airgap.yaml"
    lines = ["#!/usr/bin/env bash",
             f"# Upgrade NVIDIA GPU Operator {inert(up.old_plan.release)} -> {inert(plan.release)}, "
             "written by mirrorkit runbook.",
             *([f"# Connected side, before the trip: {inert(fetch.split('   #')[0])}"]
               if (fetch := _chart_fetch(up)) else []),
             f"# Connected side, before the trip: {inert(_pull_line(up))}",
             "set -euo pipefail", f"REGISTRY={shlex.quote(reg)}", f"NAMESPACE={shlex.quote(inp.namespace)}",
             f"VERIFY_KEY=${{VERIFY_KEY:-{shlex.quote(inp.verify_key)}}}   # NVIDIA's cosign public key", "",
             f"mirrorkit verify {shlex.quote(up.old_source)} --registry \"$REGISTRY\"{_flags(inp)}",
             _checksum(first),
             f"mirrorkit push-bundle {bundle_args} --registry \"$REGISTRY\"{_flags(inp)}{_push_sig(inp, True)}",
             f"mirrorkit verify {shlex.quote(first)} --registry \"$REGISTRY\"{_flags(inp)}{_sig(inp, True)}",
             *_policy_lines(inp, inp.source_name, shell=True),
             f"mirrorkit rewrite-config {shlex.quote(inp.source_name)} --format {fmt} --registry \"$REGISTRY\""
             f"{f' --pull-secret {shlex.quote(inp.pull_secret)}' if inp.pull_secret and fmt == 'helm' else ''} "
             f"-o {out}"]
    if fmt == "helm":
        lines += _crd_lines(up)
        lines += [f"helm upgrade --wait gpu-operator {_shell_chart(chart, reg)} --version {_q(version)}"
                  f"{_helm_flags(inp, chart)} -n \"$NAMESPACE\" -f {out}"]
    else:
        lines += ["echo " + _q(f"Upgrade the KubeSphere extension to {plan.release} with {out} as its config.")]
    if plan.nvidiadrivers:      # helm upgrade leaves the NVIDIADriver resources alone
        lines += [f"mirrorkit rewrite-config {shlex.quote(inp.source_name)} --format nvidiadriver "
                  "--registry \"$REGISTRY\" -o nvidiadrivers.yaml", "kubectl apply -f nvidiadrivers.yaml"]
    lines += [f"kubectl delete nvidiadrivers.nvidia.com {shlex.quote(c.name)}"
              for c in up.cr_changes if c.kind == "removed"]
    if up.driver_changes or any(c.kind == "changed" for c in up.cr_changes):
        lines += ["kubectl get nodes -L nvidia.com/gpu-driver-upgrade-state   # driver pods roll node by node"]
    lines += [f"mirrorkit verify {shlex.quote(inp.source_name)} --registry \"$REGISTRY\"{_flags(inp)}"
              f"{_sig(inp, True)}",
              "kubectl get pods -n \"$NAMESPACE\"",
              "# later, once every pool runs the new driver (a dry run; add --apply):",
              *(f"# {line}" for line in _in_use_lines()),
              "# " + inert(f"mirrorkit prune --registry \"$REGISTRY\" --keep {shlex.quote(inp.source_name)} "
                           f"--drop {shlex.quote(up.old_source)} --in-use in-use.yaml{_flags(inp)}")]
    return "\n".join(lines) + "\n"
