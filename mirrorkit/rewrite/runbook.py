"""The offline install runbook, filled in with one plan's real values.

Air-gapped installs fail on the step nobody wrote down; this writes all of them
down with the site's own registry, release, nodes, bundle names and checksums,
in Markdown for people and as a shell script for the same steps. (The upgrade runbook: runbook_upgrade.py.)
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from mirrorkit.bundle.volumes import read_checksum
from mirrorkit.lock import LockChart, LockInstaller
from mirrorkit.plan import Plan
from mirrorkit.refs import Ref
from mirrorkit.rewrite.comments import inert
from mirrorkit.rewrite.containerd import expressible as containerd_expressible
from mirrorkit.rewrite.runbook_parts import (
    SITE_KEY,
    SITE_PUB,
    chart_ref,
    checksum_line,
    helm_flags,
    policy_lines,
    push_sig_flags,
    quoted,
    registry_of,
    shell_chart,
    sig_flags,
    tls_flags,
)

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


def _mirror_host(inp: RunbookInput) -> str:
    return registry_of(inp).split("/", 1)[0]


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


def _components(plan: Plan) -> set[str]:
    return {c for i in plan.images for c in i.component.split(",")}


def _sample(inp: RunbookInput) -> str | None:
    for img in inp.plan.images:
        if img.component == "cuda-sample":
            return str(inp.dest[img.source])
    return None


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
    plan, reg = inp.plan, registry_of(inp)
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
        lines += [checksum_line(name) for name, _ in inp.volumes]
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
    reg, src, bundle_args = registry_of(inp), inp.source_name, _bundle_args(inp)
    lines = ["## 2. Load the private registry", "", "```sh",
              f"mirrorkit push-bundle {bundle_args} --registry {shlex.quote(reg)}{tls_flags(inp)}{push_sig_flags(inp)}",
              f"mirrorkit verify {shlex.quote(inp.volumes[0][0]) if inp.volumes else shlex.quote(src)} "
              f"--registry {shlex.quote(reg)}{tls_flags(inp)}{sig_flags(inp)}",
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
        chart, version = chart_ref(inp)
        secret = f" --pull-secret {shlex.quote(inp.pull_secret)}" if inp.pull_secret else ""
        lines += ["```sh", *_pull_secret_lines(inp, src, quoted(inp.namespace)),
                  f"mirrorkit rewrite-config {shlex.quote(src)} --format helm{secret} -o values-airgap.yaml",
                  f"helm install --wait gpu-operator {quoted(chart)} --version {quoted(version)}"
                  f"{helm_flags(inp, chart)} \\",
                  f"  -n {quoted(inp.namespace)} --create-namespace -f values-airgap.yaml", "```", ""]
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
              *policy_lines(inp, src),
              f"mirrorkit rewrite-config {shlex.quote(src)} --format containers-policy{sig_flags(inp)}"
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
    plan, reg = inp.plan, registry_of(inp)
    bundle_args = " ".join(shlex.quote(n) for n, _ in inp.volumes) or "bundles/gpu.tar"
    chart, version = chart_ref(inp)
    fmt = "kubesphere" if plan.flavor == "kubesphere" else "helm"
    out = "extension-config.yaml" if fmt == "kubesphere" else "values-airgap.yaml"
    src = shlex.quote(inp.source_name)
    lines = ["#!/usr/bin/env bash",
             f"# Offline install of NVIDIA GPU Operator {inert(plan.release)} — written by mirrorkit runbook.",
             "set -euo pipefail", f"REGISTRY={shlex.quote(reg)}", f"NAMESPACE={shlex.quote(inp.namespace)}",
             f"VERIFY_KEY=${{VERIFY_KEY:-{shlex.quote(inp.verify_key)}}}   # NVIDIA's cosign public key", ""]
    for name, _ in inp.volumes:
        lines.append(checksum_line(name))
    first = shlex.quote(inp.volumes[0][0]) if inp.volumes else src
    if inp.installer is not None:
        lines += ["if ! command -v mirrorkit >/dev/null; then   # mirrorkit from the bundle's offline installer",
                  *(f"  {line.split('  #')[0].rstrip()}" for line in _installer_lines(inp)),
                  "  export PATH=/opt/mirrorkit/bin:$PATH", "fi"]
    secret = f" --pull-secret {shlex.quote(inp.pull_secret)}" if inp.pull_secret and fmt == "helm" else ""
    lines += [f"mirrorkit push-bundle {bundle_args} --registry \"$REGISTRY\"{tls_flags(inp)}"
              f"{push_sig_flags(inp, True)}",
              f"mirrorkit verify {first} --registry \"$REGISTRY\"{tls_flags(inp)}{sig_flags(inp, True)}",
              *policy_lines(inp, inp.source_name, shell=True),
              *_pull_secret_lines(inp, inp.source_name, '"$NAMESPACE"'),
              f"mirrorkit rewrite-config {src} --format {fmt} --registry \"$REGISTRY\"{secret} -o {out}"]
    if fmt == "helm":
        lines += [f"helm install --wait gpu-operator {shell_chart(chart, reg)} --version {quoted(version)}"
                  f"{helm_flags(inp, chart)} -n \"$NAMESPACE\" --create-namespace -f {out}"]
        if plan.nvidiadrivers:
            lines += [f"mirrorkit rewrite-config {src} --format nvidiadriver --registry \"$REGISTRY\" "
                      "-o nvidiadrivers.yaml", "kubectl apply -f nvidiadrivers.yaml"]
        lines += ["kubectl get pods -n \"$NAMESPACE\""]
    else:
        lines += ["echo " + quoted(f"Paste {out} into the KubeSphere extension config of NVIDIA GPU Operator "
                                f"{plan.release}.")]
    return "\n".join(lines) + "\n"


def volumes_of(paths: list[Path]) -> list[tuple[str, str | None]]:
    """Each volume with the digest its ``.sha256`` file gives (read capped and checked), if it has one."""
    return [(str(p), read_checksum(p)) for p in paths]
