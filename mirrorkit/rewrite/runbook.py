"""The offline install runbook, filled in with one plan's real values.

Air-gapped installs fail on the step nobody wrote down; this writes all of them
down with the site's own registry, release, nodes, bundle names and checksums,
in Markdown for people and as a shell script for the same steps.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from mirrorkit.plan import Plan
from mirrorkit.refs import Ref
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
    charts: list[dict] = field(default_factory=list)
    namespace: str = "gpu-operator"
    insecure: tuple[str, ...] = ()
    ca_cert: str | None = None


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
    from mirrorkit.copy.charts import chart_repository
    from mirrorkit.refs import RegistryTarget

    for chart in inp.charts:
        if chart.get("name") != "gpu-operator":
            continue
        repository = chart_repository(RegistryTarget.parse(inp.plan.registry), "gpu-operator") \
            if inp.plan.registry else chart.get("repository")
        if repository:
            return f"oci://{repository}", str(chart.get("version", inp.plan.release))
    return "nvidia/gpu-operator", inp.plan.release or ""


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
                  f"helm install --wait gpu-operator {chart} --version {version}{_helm_flags(inp, chart)} \\",
                  f"  -n {inp.namespace} --create-namespace -f values-airgap.yaml", "```", ""]
        if chart.startswith("nvidia/"):
            lines += ["The chart itself must be available offline: carry `gpu-operator-"
                      f"{version}.tgz` and install from the file, or bundle it with `pull-bundle --chart`.", ""]
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
             f"# Offline install of NVIDIA GPU Operator {plan.release} — written by mirrorkit runbook.",
             "set -euo pipefail", f"REGISTRY={shlex.quote(reg)}", f"NAMESPACE={shlex.quote(inp.namespace)}", ""]
    for name, _ in inp.volumes:
        lines.append(_checksum(name))
    first = shlex.quote(inp.volumes[0][0]) if inp.volumes else shlex.quote(inp.source_name)
    lines += [f"mirrorkit push-bundle {bundle_args} --registry \"$REGISTRY\"{_flags(inp)}",
              f"mirrorkit verify {first} --registry \"$REGISTRY\"{_flags(inp)}",
              f"mirrorkit rewrite-config {shlex.quote(inp.source_name)} --format {fmt} --registry \"$REGISTRY\" "
              f"-o {out}"]
    if fmt == "helm":
        lines += [f"helm install --wait gpu-operator {chart} --version {version}{_helm_flags(inp, chart)} "
                  "-n \"$NAMESPACE\" "
                  f"--create-namespace -f {out}", "kubectl get pods -n \"$NAMESPACE\""]
    else:
        lines += [f"echo 'Paste {out} into the KubeSphere extension config of NVIDIA GPU Operator {plan.release}.'"]
    return "\n".join(lines) + "\n"


def volumes_of(paths: list[Path]) -> list[tuple[str, str | None]]:
    out = []
    for p in paths:
        sha = p.with_name(p.name + ".sha256")
        digest = None
        if sha.is_file():
            digest = sha.read_text().split()[0] if sha.read_text().split() else None
        out.append((str(p), digest))
    return out
