"""Plans, locks, inventories and values from untrusted hands: one-line errors, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mirrorkit.cli.main import main
from mirrorkit.errors import InputError

GOOD_IMAGE = ("  - source: nvcr.io/nvidia/gpu-operator:v23.9.2\n"
              "    destination: reg.local/nvidia/gpu-operator:v23.9.2\n    component: operator\n    reason: x\n")
HEAD = "apiVersion: mirrorkit.dev/v1alpha1\nkind: Plan\nimages:\n"

BAD_PLANS = [
    ("not yaml", "images: [\n", "malformed YAML"),
    ("wrong kind", "apiVersion: mirrorkit.dev/v1alpha1\nkind: Nope\nimages: []\n", "mirrorkit plan"),
    ("images not a list", "apiVersion: mirrorkit.dev/v1alpha1\nkind: Plan\nimages: nope\n", "'images' must be a list"),
    ("source not a string", HEAD + "  - source: 7\n    component: x\n", "'source' must be a string"),
    ("illegal reference", HEAD + "  - source: nvcr.io/NVIDIA/x:1\n    component: x\n", "bad repository"),
    ("forged digest", HEAD + GOOD_IMAGE + "    digest: sha256:abc\n", "sha256:<64 hex"),
    ("digest with uppercase", HEAD + GOOD_IMAGE + "    digest: sha256:" + "A" * 64 + "\n", "sha256:<64 hex"),
    ("negative size", HEAD + GOOD_IMAGE + "    size: -5\n", "non-negative"),
    ("platforms wrong type", HEAD + GOOD_IMAGE + "    platforms: linux/amd64\n", "list of strings"),
    ("tag with spaces", HEAD + "  - source: 'nvcr.io/nvidia/x:bad tag'\n    component: x\n", "whitespace"),
]


@pytest.mark.parametrize(("label", "text", "message"), BAD_PLANS, ids=[b[0] for b in BAD_PLANS])
@pytest.mark.parametrize("command", [["pull-bundle"], ["verify"], ["rewrite-config", "--format", "containerd"],
                                     ["runbook"], ["mirror"]])
def test_bad_plan_is_refused_by_every_command(tmp_path: Path, label: str, text: str, message: str,
                                              command: list[str]) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    args = [command[0], str(plan), *command[1:]]
    if command[0] == "pull-bundle":
        args += ["-o", str(tmp_path / "out.tar")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, (label, res.output)
    assert message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.yaml"]


def test_huge_plan_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mirrorkit.yamlio as yamlio

    monkeypatch.setattr(yamlio, "MAX_INPUT_BYTES", 4096)
    plan = tmp_path / "plan.yaml"
    plan.write_text(HEAD + GOOD_IMAGE * 200)
    res = CliRunner().invoke(main, ["verify", str(plan)])
    assert res.exit_code == 2 and "limit" in res.stderr


@pytest.mark.parametrize(("text", "message"), [
    ('{"kind": "Inventory", "blobs": {"sha256:xyz": 1}}', "sha256:<64 hex"),
    ('{"kind": "Inventory", "blobs": {"sha256:' + "a" * 64 + '": -1}}', "invalid size"),
    ('{"kind": "Inventory", "blobs": []}', "'blobs' must be an object"),
    ('{"kind": "Other"}', "not a mirrorkit inventory"),
    ('{"kind": ', "malformed JSON"),
])
def test_bad_inventory_for_have(tmp_path: Path, text: str, message: str) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(HEAD + GOOD_IMAGE)
    inv = tmp_path / "inventory.json"
    inv.write_text(text)
    res = CliRunner().invoke(main, ["pull-bundle", str(plan), "--have", str(inv), "-o", str(tmp_path / "b.tar")])
    assert res.exit_code == 2, res.output
    assert message in res.stderr


@pytest.mark.parametrize(("text", "message"), [
    ("apiVersion: mirrorkit.dev/v1alpha1\nkind: BundleLock\nid: x\nimages: []\nblobs:\n  - {digest: 'sha256:zz', "
     "size: 1}\nplan: {}\n", "sha256:<64 hex"),
    ("apiVersion: mirrorkit.dev/v1alpha1\nkind: BundleLock\nid: x\nimages: []\nblobs:\n  - {digest: 'sha256:"
     + "a" * 64 + "', size: 1}\n  - {digest: 'sha256:" + "a" * 64 + "', size: 1}\nplan: {}\n", "listed twice"),
])
def test_bad_lock_for_since(tmp_path: Path, text: str, message: str) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(HEAD + GOOD_IMAGE)
    lock = tmp_path / "old.lock.yaml"
    lock.write_text(text)
    res = CliRunner().invoke(main, ["pull-bundle", str(plan), "--since", str(lock), "-o", str(tmp_path / "b.tar")])
    assert res.exit_code == 2, res.output
    assert message in res.stderr


def test_bad_split_size_and_missing_plan(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(HEAD + GOOD_IMAGE)
    res = CliRunner().invoke(main, ["pull-bundle", str(plan), "--split", "lots", "-o", str(tmp_path / "b.tar")])
    assert res.exit_code == 2 and "invalid size" in res.stderr
    res = CliRunner().invoke(main, ["pull-bundle", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and "not found" in res.stderr


def test_lock_and_volume_yaml_are_read_like_every_other_yaml() -> None:
    """A BOM is dropped and a syntax error names its line, in a bundle's lock and volume.yaml too."""
    from mirrorkit.bundle.volumes import parse_volume_yaml
    from mirrorkit.lock import Lock, loads_lock
    from mirrorkit.plan import Plan

    lock = Lock(id="b1", created="", generator="", plan=Plan(images=[]), images=[], blobs=[])
    assert loads_lock("\ufeff" + lock.dumps(), "gpu.tar: bundle.yaml").id == "b1"
    with pytest.raises(InputError, match=r"^gpu.tar: bundle.yaml:3: malformed YAML"):
        loads_lock("apiVersion: x\nkind: BundleLock\nid: a: b\n", "gpu.tar: bundle.yaml")
    with pytest.raises(InputError, match=r"^gpu.tar: volume.yaml:2: malformed YAML"):
        parse_volume_yaml(b"kind: BundleVolume\nbundle: a: b\n", "gpu.tar", lock)
