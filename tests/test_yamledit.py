"""rewrite-config --values edits the user's file in place: comments and layout stay."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from mirrorkit.cli.main import main
from mirrorkit.rewrite.yamledit import edit_values, leaf_changes
from mirrorkit.yamlio import parse_yaml

NODE = "ubuntu22.04/5.15.0-131-generic"

SITE_VALUES = """\
# Site values for the GPU cluster -- reviewed by ops, ticket OPS-1234
operator:
  # keep the operator on the infra nodes
  defaultRuntime: containerd
  repository: nvcr.io/nvidia   # upstream
  version: v23.9.2

driver:
  enabled: true
  # 550 branch: certified with our A100s
  version: "550.54.15"
  rdma:
    enabled: false

# toolkit settings
toolkit:
  env:
    - name: CONTAINERD_CONFIG
      value: /etc/containerd/config.toml
dcgmExporter:
    serviceMonitor:           # four-space indentation here, as some files have
        enabled: true
"""


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def rewrite(tmp: Path, text: str, fmt: str = "helm", flavor: str = "helm") -> tuple[Result, str]:
    values = tmp / "values.yaml"
    values.write_text(text)
    plan = tmp / "plan.yaml"
    res = cli("plan", "--version", "v23.9.2", "--flavor", flavor, "--node", NODE, "--registry", "harbor.local/gpu",
              *(["--values", str(values)] if text.strip() else []), "-o", str(plan))
    assert res.exit_code == 0, res.output
    res = cli("rewrite-config", str(plan), "--format", fmt, "--values", str(values), "-o", str(tmp / "out.yaml"))
    assert res.exit_code == 0, res.output
    return res, (tmp / "out.yaml").read_text()


def fresh(tmp: Path, fmt: str = "helm", flavor: str = "helm") -> dict:
    """The same merge written afresh (the path taken when a file cannot be edited in place)."""
    plan = tmp / "plan.yaml"
    res = cli("rewrite-config", str(plan), "--format", fmt, "--values", str(tmp / "values.yaml"))
    assert res.exit_code == 0
    return yaml.safe_load(res.stdout)


def missing_in_order(small: list[str], big: list[str]) -> list[str]:
    """Lines of ``small`` not found in ``big`` in the same order (empty: all there)."""
    it = iter(big)
    return [line for line in small if line not in it][:1]


def test_comments_order_and_untouched_lines_survive_and_the_values_equal_a_full_merge(tmp_path: Path) -> None:
    res, out = rewrite(tmp_path, SITE_VALUES)
    assert "its comments and layout kept" in out.splitlines()[1]
    body = out.split("\n", 2)[2]                     # after mirrorkit's two header lines
    untouched = [ln for ln in SITE_VALUES.splitlines() if "repository:" not in ln]
    assert missing_in_order(untouched, body.splitlines()) == []
    assert "  repository: harbor.local/gpu/nvidia   # upstream" in body.splitlines()  # replaced where it stood
    merged = parse_yaml(body, "out")
    assert merged["driver"]["version"] == "550.54.15" and merged["driver"]["rdma"] == {"enabled": False}
    assert merged["driver"]["manager"]["repository"] == "harbor.local/gpu/nvidia/cloud-native"
    # byte for byte the same settings as writing the merged values afresh
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("mirrorkit.rewrite.yamledit.edit_values", lambda *a: None)
        assert fresh(tmp_path) == merged
    # the section added to dcgmExporter follows that section's own four-space indentation
    assert "    repository: harbor.local/gpu/nvidia/k8s" in body.splitlines()


def test_kubesphere_config_is_edited_in_place_under_its_gpu_operator_key(tmp_path: Path) -> None:
    text = "# extension config\nnamespace: kube-system  # KubeSphere's\ngpu-operator:\n" + "".join(
        f"  {line}\n" if line else "\n" for line in SITE_VALUES.splitlines())
    _, out = rewrite(tmp_path, text, fmt="kubesphere", flavor="kubesphere")
    assert "its comments and layout kept" in out
    assert "namespace: kube-system  # KubeSphere's" in out and "  # 550 branch: certified with our A100s" in out
    merged = parse_yaml(out, "out")
    assert merged["namespace"] == "kube-system"
    assert merged["gpu-operator"]["node-feature-discovery"]["image"]["repository"].startswith("harbor.local/gpu/")


@pytest.mark.parametrize("text", [
    "{driver: {version: 550.54.15}, operator: {defaultRuntime: containerd}}\n",          # flow style
    "operator:\n  repository: &up nvcr.io/nvidia\ndriver:\n  repository: *up\n",        # an anchor ties two
    "",                                                                                   # empty
    "# only a comment\n",
])
def test_files_that_cannot_be_edited_in_place_are_merged_afresh_and_say_so(tmp_path: Path, text: str) -> None:
    res, out = rewrite(tmp_path, text)
    assert "rewritten (its comments are not kept)" in out
    if text.strip() and not text.startswith("#"):
        assert "could not be edited in place" in res.stderr
    merged = parse_yaml(out, "out")
    assert merged["driver"]["repository"] == "harbor.local/gpu/nvidia"


def test_a_values_file_of_several_documents_is_refused_in_one_line(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("driver:\n  version: 550.54.15\n---\nother: document\n")
    res = cli("plan", "--version", "v23.9.2", "--node", NODE, "--values", str(values))
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert res.output.startswith(f"error: {values}:") and "another document" in res.output


def test_new_keys_go_after_their_siblings_not_under_the_next_sections_comment() -> None:
    text = "driver:\n  enabled: true\n  rdma:\n    enabled: false\n\n# toolkit: see OPS-99\ntoolkit:\n  enabled: true\n"
    before = parse_yaml(text, "t")
    after = {**before, "driver": {**before["driver"], "repository": "m.local/nvidia"}}
    out = edit_values(text, leaf_changes(before, after), after)
    assert out == ("driver:\n  enabled: true\n  rdma:\n    enabled: false\n  repository: m.local/nvidia\n\n"
                   "# toolkit: see OPS-99\ntoolkit:\n  enabled: true\n")


@pytest.mark.parametrize("value, written", [
    ("1.10", "'1.10'"),                # would read back as a float
    ("yes", "'yes'"),                  # would read back as a boolean in YAML 1.1
    ("sha256:" + "a" * 64, "sha256:" + "a" * 64),
    (True, "true"),
])
def test_replaced_scalars_are_quoted_exactly_when_they_must_be(value: object, written: str) -> None:
    text = "driver:\n  version: old  # pinned\n"
    after = {"driver": {"version": value}}
    out = edit_values(text, leaf_changes(parse_yaml(text, "t"), after), after)
    assert out == f"driver:\n  version: {written}  # pinned\n"


def test_a_block_scalar_or_a_value_on_its_own_line_is_not_edited_in_place() -> None:
    for text in ("driver:\n  version: |\n    old\n", "driver:\n  version:\n    old\n"):
        after = {"driver": {"version": "new"}}
        assert edit_values(text, leaf_changes(parse_yaml(text, "t"), after), after) is None
