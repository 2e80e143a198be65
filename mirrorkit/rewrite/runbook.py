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
from mirrorkit.lock import LockChart
from mirrorkit.plan import Plan
from mirrorkit.refs import Ref
from mirrorkit.rewrite.comments import inert
from mirrorkit.rewrite.containerd import expressible as containerd_expressible

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
    return ["### Driver packages: the carried partial mirror", "",
            f"These nodes compile the driver at run time ({kernels}). The bundle carries exactly their kernel",
            "packages with the distribution's own signed metadata (when pulled with `--package-source`). Write",
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
    plan, reg = inp.plan, _registry(inp)
    comps = _components(plan)
    kubesphere = plan.flavor == "kubesphere"
    src = inp.source_name
    lines = [f"# Offline install: NVIDIA GPU Operator {plan.release or ''} ({plan.flavor or 'images'})", ""]
    lines += ["Written by `mirrorkit runbook` from this plan; every value below is this site's.", "",
              f"- private registry: `{reg}`", f"- images: {len(plan.images)}"]
    for node in plan.nodes:
        lines.append(f"- GPU node: {node.get('name') or 'node'} — {node['os']}, kernel {node.get('kernel') or '?'}, "
                     f"{node['arch']}")
    if plan.driver:
        kind = "precompiled" if plan.driver.get("precompiled") else "compiled on the node at start-up"
        lines.append(f"- driver: `{plan.driver.get('version')}` ({kind})")
    lines += ["", "## 1. Carry the bundle across the air gap", ""]
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
    bundle_args = " ".join(shlex.quote(n) for n, _ in inp.volumes) or "bundles/gpu.tar"
    lines += ["## 2. Load the private registry", "", "```sh",
              f"mirrorkit push-bundle {bundle_args} --registry {shlex.quote(reg)}{_flags(inp)}",
              f"mirrorkit verify {shlex.quote(inp.volumes[0][0]) if inp.volumes else shlex.quote(src)} "
              f"--registry {shlex.quote(reg)}{_flags(inp)}",
              "```", "",
              "`push-bundle` refuses a damaged bundle before pushing anything and verifies every image afterwards;",
              "`verify` must print every image present with the expected digest (exit 0) before you go on.", ""]
    lines += ["## 3. Point the cluster at the mirror", ""]
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
        lines += ["```sh", f"mirrorkit rewrite-config {shlex.quote(src)} --format helm -o values-airgap.yaml",
                  f"helm install --wait gpu-operator {_q(chart)} --version {_q(version)}{_helm_flags(inp, chart)} \\",
                  f"  -n {_q(inp.namespace)} --create-namespace -f values-airgap.yaml", "```", ""]
        if chart.startswith("nvidia/"):
            lines += [f"The chart itself must be available offline: carry `gpu-operator-{inert(version)}.tgz`",
                      "and install from the file, or bundle it with `pull-bundle --chart`.", ""]
    lines += ["Nodes that keep upstream names (`nvcr.io/...`) in other manifests can redirect pulls at the runtime:",
              "", "```sh"]
    if containerd_expressible(plan, inp.dest):
        lines += [f"mirrorkit rewrite-config {shlex.quote(src)} --format containerd -o certs.d",
                  "# copy certs.d/* to /etc/containerd/certs.d/ on every node; containerd's CRI registry config needs",
                  "#   config_path = \"/etc/containerd/certs.d\"   (then: systemctl restart containerd)"]
    else:
        # a command that would exit 2 has no place in a runbook
        lines += ["# containerd hosts.toml can only add a path prefix, not this plan's mapping: point the",
                  "# manifests themselves at the mirror (or plan again with --mapping prefix)"]
    lines += [f"mirrorkit rewrite-config {shlex.quote(src)} --format registries-conf -o mirror.conf  # CRI-O / podman",
              "```", ""]
    # signatures are checked offline before the push, and enforced in the cluster afterwards
    lines += ["### Signatures: verified on this side, enforced in the cluster", "",
              "NVIDIA signs its images with cosign; the bundle carries the signatures. With NVIDIA's public key",
              "(`nvidia.pub`), check every image offline before it is pushed, check the mirror, and make the",
              "cluster refuse anything unsigned:", "", "```sh",
              f"mirrorkit push-bundle {bundle_args} --registry {shlex.quote(reg)}{_flags(inp)} --verify-key nvidia.pub",
              f"mirrorkit verify {shlex.quote(src)} --registry {shlex.quote(reg)}{_flags(inp)} --verify-key nvidia.pub",
              f"mirrorkit rewrite-config {shlex.quote(src)} --format kyverno --verify-key nvidia.pub "
              "-o verify-images.yaml",
              "kubectl apply -f verify-images.yaml          # Kyverno ClusterPolicy",
              f"mirrorkit rewrite-config {shlex.quote(src)} --format containers-policy --verify-key nvidia.pub "
              "-o containers-policy",
              "# CRI-O / podman nodes: policy.json -> /etc/containers/,",
              "#   registries.d/* -> /etc/containers/registries.d/, keys/* -> /etc/containers/keys/", "```", ""]
    lines += ["## 4. Driver", ""]
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
    if "migManager" in comps:
        lines += ["## 5. MIG (A100, A30, H100 ...)", "",
                  "Choose the strategy at install time (`mig.strategy=single` exposes one kind of slice as",
                  "`nvidia.com/gpu`; `mixed` exposes each profile as its own resource), then label the nodes:", "",
                  "```sh", "helm upgrade gpu-operator ... --reuse-values --set mig.strategy=mixed",
                  "kubectl label node <node> nvidia.com/mig.config=all-1g.5gb --overwrite", "```", "",
                  "The MIG manager applies the layout and the node reports `nvidia.com/mig.config.state=success`.",
                  ""]
    lines += ["## 6. Check the installation", "", "```sh", f"kubectl get pods -n {inp.namespace}", "```", "",
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
    lines += ["## 7. Uninstall", ""]
    if kubesphere:
        lines += ["KubeSphere Marketplace → the installed **NVIDIA GPU Operator** → **Uninstall**.", ""]
    else:
        lines += ["```sh", f"helm uninstall gpu-operator -n {inp.namespace}",
                  "kubectl delete crd clusterpolicies.nvidia.com nvidiadrivers.nvidia.com --ignore-not-found", "```",
                  ""]
    return "\n".join(lines)


def shell(inp: RunbookInput) -> str:
    """The same steps as a script: variables at the top, stops at the first failure."""
    plan, reg = inp.plan, _registry(inp)
    bundle_args = " ".join(shlex.quote(n) for n, _ in inp.volumes) or "bundles/gpu.tar"
    chart, version = _chart_ref(inp)
    fmt = "kubesphere" if plan.flavor == "kubesphere" else "helm"
    out = "extension-config.yaml" if fmt == "kubesphere" else "values-airgap.yaml"
    lines = ["#!/usr/bin/env bash",
             f"# Offline install of NVIDIA GPU Operator {inert(plan.release)} — written by mirrorkit runbook.",
             "set -euo pipefail", f"REGISTRY={shlex.quote(reg)}", f"NAMESPACE={shlex.quote(inp.namespace)}", ""]
    for name, _ in inp.volumes:
        lines.append(_checksum(name))
    first = shlex.quote(inp.volumes[0][0]) if inp.volumes else shlex.quote(inp.source_name)
    lines += [f"mirrorkit push-bundle {bundle_args} --registry \"$REGISTRY\"{_flags(inp)}",
              f"mirrorkit verify {first} --registry \"$REGISTRY\"{_flags(inp)}",
              f"mirrorkit rewrite-config {shlex.quote(inp.source_name)} --format {fmt} --registry \"$REGISTRY\" "
              f"-o {out}"]
    if fmt == "helm":
        lines += [f"helm install --wait gpu-operator {_q(chart)} --version {_q(version)}{_helm_flags(inp, chart)} "
                  "-n \"$NAMESPACE\" "
                  f"--create-namespace -f {out}", "kubectl get pods -n \"$NAMESPACE\""]
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


def _driver_section(up: UpgradeInput) -> list[str]:
    plan = up.new.plan
    nodes = [(f"{n['name']}: " if n.get("name") else "") + f"{n['os']}, kernel {n.get('kernel') or '?'}"
             for n in plan.nodes]
    lines = ["## 6. The driver upgrade: what the nodes will do", ""]
    if not up.driver_changes:
        lines += ["The driver image does not change: no driver pod restarts for it. The other operands roll as",
                  "DaemonSets (RollingUpdate) once `helm upgrade` has changed them.", ""]
    else:
        lines += ["The driver changes (" + "; ".join(up.driver_changes) + "). The driver DaemonSet uses",
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
              f"mirrorkit push-bundle {bundle_args} --registry {shlex.quote(reg)}{_flags(inp)}",
              f"mirrorkit verify {shlex.quote(first)} --registry {shlex.quote(reg)}{_flags(inp)}", "```", "",
              "## 4. CRDs first: Helm does not upgrade them", "",
              "`helm upgrade` leaves the CRDs of the installed release in place, and the new operator needs",
              "its own. Apply them from the new chart before upgrading:", "", "```sh", *_crd_lines(up), "```", "",
              "## 5. Upgrade the release with values pointing at the mirror", ""]
    if plan.flavor == "kubesphere":
        lines += ["```sh", f"mirrorkit rewrite-config {shlex.quote(src)} --format kubesphere -o extension-config.yaml",
                  "```", "", f"KubeSphere Marketplace → **NVIDIA GPU Operator** → **Upgrade** to `{plan.release}`;",
                  "replace the extension config with `extension-config.yaml`.", ""]
    else:
        lines += ["```sh", f"mirrorkit rewrite-config {shlex.quote(src)} --format helm -o values-airgap.yaml",
                  f"helm upgrade --wait gpu-operator {_q(chart)} --version {_q(version)}{_helm_flags(inp, chart)} \\",
                  f"  -n {_q(inp.namespace)} -f values-airgap.yaml", "```", "",
                  "Give the values file whole (not `--reuse-values`): the old values name the old images.", ""]
    lines += _driver_section(up)
    lines += ["## 7. After: every new image is in the mirror and the operands run it", "", "```sh",
              f"mirrorkit verify {shlex.quote(src)} --registry {shlex.quote(reg)}{_flags(inp)}",
              f"kubectl get pods -n {inp.namespace}",
              "kubectl get clusterpolicies.nvidia.com -o jsonpath='{.items[0].status.state}'   # ready", "```", "",
              "## 8. Later: take the old release out of the mirror", "", "```sh",
              f"mirrorkit prune --registry {shlex.quote(reg)} --keep {shlex.quote(src)} "
              f"--drop {shlex.quote(up.old_source)}{_flags(inp)}",
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
             "set -euo pipefail", f"REGISTRY={shlex.quote(reg)}", f"NAMESPACE={shlex.quote(inp.namespace)}", "",
             f"mirrorkit verify {shlex.quote(up.old_source)} --registry \"$REGISTRY\"{_flags(inp)}",
             _checksum(first),
             f"mirrorkit push-bundle {bundle_args} --registry \"$REGISTRY\"{_flags(inp)}",
             f"mirrorkit verify {shlex.quote(first)} --registry \"$REGISTRY\"{_flags(inp)}",
             f"mirrorkit rewrite-config {shlex.quote(inp.source_name)} --format {fmt} --registry \"$REGISTRY\" "
             f"-o {out}"]
    if fmt == "helm":
        lines += _crd_lines(up)
        lines += [f"helm upgrade --wait gpu-operator {_q(chart)} --version {_q(version)}{_helm_flags(inp, chart)} "
                  f"-n \"$NAMESPACE\" -f {out}"]
    else:
        lines += ["echo " + _q(f"Upgrade the KubeSphere extension to {plan.release} with {out} as its config.")]
    if up.driver_changes:
        lines += ["kubectl get nodes -L nvidia.com/gpu-driver-upgrade-state   # driver pods roll node by node"]
    lines += [f"mirrorkit verify {shlex.quote(inp.source_name)} --registry \"$REGISTRY\"{_flags(inp)}",
              "kubectl get pods -n \"$NAMESPACE\""]
    return "\n".join(lines) + "\n"
