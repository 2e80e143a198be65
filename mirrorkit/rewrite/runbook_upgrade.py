"""The upgrade runbook (``runbook PLAN --upgrade-from OLD``), filled in with both releases' real values.

An upgrade goes wrong in the steps a fresh install never has: CRDs Helm will not upgrade, NVIDIADriver
resources `helm upgrade` leaves alone, driver pods that only move node by node, and an old release to
prune once nothing runs it. This writes those steps down, in Markdown and as a shell script.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from mirrorkit.destinations import operator_chart
from mirrorkit.plan import Plan
from mirrorkit.rewrite.comments import inert
from mirrorkit.rewrite.crchanges import CrChange
from mirrorkit.rewrite.runbook import RunbookInput
from mirrorkit.rewrite.runbook_parts import (
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
    _, version = chart_ref(up.new)
    if up.new.charts or not up.new.plan.release:
        return None
    return f"helm pull nvidia/gpu-operator --version {quoted(version)}   # writes gpu-operator-{inert(version)}.tgz"


def _pull_line(up: UpgradeInput) -> str:
    first, _ = _new_bundle(up)
    _, version = chart_ref(up.new)
    line = f"mirrorkit pull-bundle {shlex.quote(up.new.source_name)} -o {shlex.quote(first)}"
    if up.old_is_bundle:
        line += f" --since {shlex.quote(up.old_source)}"
    if _chart_fetch(up):
        line += f" --chart {quoted(f'gpu-operator-{version}.tgz')}"
    return line


def _crd_lines(up: UpgradeInput) -> list[str]:
    chart, version = _upgrade_chart(up)
    folder = f"chart-{version}"
    return [f"helm pull {quoted(chart)} --version {quoted(version)}{helm_flags(up.new, chart)} "
            f"--untar -d {quoted(folder)}",
            f"kubectl apply --server-side --force-conflicts -f {quoted(f'{folder}/gpu-operator/crds/')}",
            f"kubectl apply --server-side --force-conflicts -f "
            f"{quoted(f'{folder}/gpu-operator/charts/node-feature-discovery/crds/')}"]


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
    reg, src = registry_of(inp), inp.source_name
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
             "```sh", f"mirrorkit verify {shlex.quote(up.old_source)} --registry {shlex.quote(reg)}{tls_flags(inp)}",
             f"kubectl get pods -n {inp.namespace}", "```", "",
             "## 3. Carry only what is new", "", "On the connected side:", "", "```sh",
             *([fetch] if (fetch := _chart_fetch(up)) else []), _pull_line(up), "```", ""]
    if up.old_is_bundle:
        lines += [f"`--since` leaves out every blob `{up.old_source}` carried already: the mirror has them.", ""]
    else:
        lines += [f"`{up.old_source}` is a plan, not a bundle: `--since` needs the previous bundle or its lock.",
                  "Without one, take an inventory of the mirror on the air-gapped side",
                  f"(`mirrorkit inventory --registry {shlex.quote(reg)}{tls_flags(inp)} -o inventory.json`), carry it",
                  "out and add `--have inventory.json` to the line above.", ""]
    lines += ["On the air-gapped side:", "", "```sh", checksum_line(first),
              f"mirrorkit push-bundle {bundle_args} --registry {shlex.quote(reg)}{tls_flags(inp)}{push_sig_flags(inp)}",
              f"mirrorkit verify {shlex.quote(first)} --registry {shlex.quote(reg)}{tls_flags(inp)}{sig_flags(inp)}",
              "```", "",
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
                  "```sh", *policy_lines(inp, src), "```", "",
                  "```sh", f"mirrorkit rewrite-config {shlex.quote(src)} --format helm{secret} -o values-airgap.yaml",
                  f"helm upgrade --wait gpu-operator {quoted(chart)} --version {quoted(version)}"
                  f"{helm_flags(inp, chart)} \\",
                  f"  -n {quoted(inp.namespace)} -f values-airgap.yaml", "```", "",
                  "Give the values file whole (not `--reuse-values`): the old values name the old images.", ""]
    lines += _cr_section(up)
    lines += _driver_section(up)
    lines += ["## 7. After: every new image is in the mirror and the operands run it", "", "```sh",
              f"mirrorkit verify {shlex.quote(src)} --registry {shlex.quote(reg)}{tls_flags(inp)}{sig_flags(inp)}",
              f"kubectl get pods -n {inp.namespace}",
              "kubectl get clusterpolicies.nvidia.com -o jsonpath='{.items[0].status.state}'   # ready", "```", "",
              "## 8. Later: take the old release out of the mirror", "",
              "Only once every pool runs the new driver. Prune keeps whatever the cluster still names: give it",
              "what runs now (pods, NVIDIADriver resources and the ClusterPolicy), taken just before:", "", "```sh",
              *_in_use_lines(),
              f"mirrorkit prune --registry {shlex.quote(reg)} --keep {shlex.quote(src)} "
              f"--drop {shlex.quote(up.old_source)} --in-use in-use.yaml{tls_flags(inp)}",
              "```", "",
              "That is a dry run; add `--apply` once it lists what you expect, then run the registry's",
              "garbage collection (prune prints how).", ""]
    return "\n".join(lines)


def upgrade_shell(up: UpgradeInput) -> str:
    """The air-gapped steps of the upgrade as a script; the connected-side pull is a comment."""
    inp, plan = up.new, up.new.plan
    reg = registry_of(inp)
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
             f"mirrorkit verify {shlex.quote(up.old_source)} --registry \"$REGISTRY\"{tls_flags(inp)}",
             checksum_line(first),
             f"mirrorkit push-bundle {bundle_args} --registry \"$REGISTRY\"{tls_flags(inp)}{push_sig_flags(inp, True)}",
             f"mirrorkit verify {shlex.quote(first)} --registry \"$REGISTRY\"{tls_flags(inp)}{sig_flags(inp, True)}",
             *policy_lines(inp, inp.source_name, shell=True),
             f"mirrorkit rewrite-config {shlex.quote(inp.source_name)} --format {fmt} --registry \"$REGISTRY\""
             f"{f' --pull-secret {shlex.quote(inp.pull_secret)}' if inp.pull_secret and fmt == 'helm' else ''} "
             f"-o {out}"]
    if fmt == "helm":
        lines += _crd_lines(up)
        lines += [f"helm upgrade --wait gpu-operator {shell_chart(chart, reg)} --version {quoted(version)}"
                  f"{helm_flags(inp, chart)} -n \"$NAMESPACE\" -f {out}"]
    else:
        lines += ["echo " + quoted(f"Upgrade the KubeSphere extension to {plan.release} with {out} as its config.")]
    if plan.nvidiadrivers:      # helm upgrade leaves the NVIDIADriver resources alone
        lines += [f"mirrorkit rewrite-config {shlex.quote(inp.source_name)} --format nvidiadriver "
                  "--registry \"$REGISTRY\" -o nvidiadrivers.yaml", "kubectl apply -f nvidiadrivers.yaml"]
    lines += [f"kubectl delete nvidiadrivers.nvidia.com {shlex.quote(c.name)}"
              for c in up.cr_changes if c.kind == "removed"]
    if up.driver_changes or any(c.kind == "changed" for c in up.cr_changes):
        lines += ["kubectl get nodes -L nvidia.com/gpu-driver-upgrade-state   # driver pods roll node by node"]
    lines += [f"mirrorkit verify {shlex.quote(inp.source_name)} --registry \"$REGISTRY\"{tls_flags(inp)}"
              f"{sig_flags(inp, True)}",
              "kubectl get pods -n \"$NAMESPACE\"",
              "# later, once every pool runs the new driver (a dry run; add --apply):",
              *(f"# {line}" for line in _in_use_lines()),
              "# " + inert(f"mirrorkit prune --registry \"$REGISTRY\" --keep {shlex.quote(inp.source_name)} "
                           f"--drop {shlex.quote(up.old_source)} --in-use in-use.yaml{tls_flags(inp)}")]
    return "\n".join(lines) + "\n"
