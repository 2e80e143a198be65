"""rewrite-config --format kyverno / containers-policy: well-formed, naming every mirrored repository."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from kit import cosign

from mirrorkit.cli.main import main

MIRROR = "mirror.local:5000/kse"
IMAGES = {"nvcr.io/nvidia/gpu-operator:v24.3.0": "mirror.local:5000/kse/nvidia/gpu-operator",
          "nvcr.io/nvidia/k8s/container-toolkit:v1.15.0": "mirror.local:5000/kse/nvidia/k8s/container-toolkit",
          "registry.k8s.io/nfd/node-feature-discovery:v0.15.4": "mirror.local:5000/kse/nfd/node-feature-discovery"}


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    out = tmp_path / "plan.yaml"
    args = ["plan", "--registry", MIRROR, "-o", str(out)]
    for ref in IMAGES:
        args += ["--image", ref]
    assert cli(*args).exit_code == 0
    return out


@pytest.fixture
def keys(tmp_path: Path) -> list[Path]:
    return [cosign.write_public_key(cosign.make_key(kind), tmp_path / f"{kind}.pub") for kind in ("p256", "rsa")]


def test_kyverno_cluster_policy(plan: Path, keys: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "verify-images.yaml"
    res = cli("rewrite-config", str(plan), "--format", "kyverno", "--verify-key", str(keys[0]),
              "--verify-key", str(keys[1]), "-o", str(out))
    assert res.exit_code == 0, res.output
    doc = yaml.safe_load(out.read_text())
    assert doc["apiVersion"] == "kyverno.io/v1" and doc["kind"] == "ClusterPolicy"
    [rule] = doc["spec"]["rules"]
    assert rule["match"]["any"][0]["resources"]["kinds"] == ["Pod"]
    [verify] = rule["verifyImages"]
    assert sorted(verify["imageReferences"]) == sorted(
        pattern for repo in IMAGES.values() for pattern in (f"{repo}:*", f"{repo}@*"))
    [attestor] = verify["attestors"]
    assert attestor["count"] == 1
    pems = [entry["keys"]["publicKeys"] for entry in attestor["entries"]]
    assert [p.strip() for p in pems] == [k.read_text().strip() for k in keys]
    assert all(e["keys"]["rekor"]["ignoreTlog"] is True for e in attestor["entries"])


def test_containers_policy_folder(plan: Path, keys: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "containers-policy"
    res = cli("rewrite-config", str(plan), "--format", "containers-policy", "--verify-key", str(keys[0]),
              "-o", str(out))
    assert res.exit_code == 0, res.output
    policy = json.loads((out / "policy.json").read_text())
    scopes = policy["transports"]["docker"]
    assert sorted(scopes) == sorted(IMAGES.values())
    for source, mirror in IMAGES.items():
        [req] = scopes[mirror]
        assert req["type"] == "sigstoreSigned"
        # tag pulls too (the Helm values name tags): exactRepository, not remapIdentity (digest pulls only)
        assert req["signedIdentity"] == {"type": "exactRepository", "dockerRepository": source.rsplit(":", 1)[0]}
        key_file = out / "keys" / Path(req["keyPath"]).name
        assert req["keyPath"].startswith("/etc/containers/keys/") and key_file.read_text() == keys[0].read_text()
    regd = yaml.safe_load((out / "registries.d" / "mirrorkit.yaml").read_text())
    assert regd == {"docker": {"mirror.local:5000": {"use-sigstore-attachments": True}}}
    # podman reads it as a policy with sigstoreSigned requirements per mirrored repository (structure only:
    # Debian's podman has sigstore verification compiled out)
    shown = subprocess.run(["podman", "image", "trust", "show", "--policypath", str(out / "policy.json")],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    for mirror in IMAGES.values():
        assert any(mirror in line and "sigstoreSigned" in line for line in shown.splitlines())


def test_policies_need_a_readable_key(plan: Path, tmp_path: Path) -> None:
    for fmt in ("kyverno", "containers-policy"):
        res = cli("rewrite-config", str(plan), "--format", fmt)
        assert res.exit_code == 2 and "--verify-key" in res.stderr
    bad = tmp_path / "bad.pub"
    bad.write_text("hello")
    res = cli("rewrite-config", str(plan), "--format", "kyverno", "--verify-key", str(bad))
    assert res.exit_code == 2 and str(bad) in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_runbook_has_the_signature_step(plan: Path) -> None:
    res = cli("runbook", str(plan))
    assert res.exit_code == 0, res.output
    assert "--verify-key nvidia.pub" in res.stdout
    assert "--format kyverno" in res.stdout and "--format containers-policy" in res.stdout


SUPPORTED = [f"1.{n}" for n in range(10, 20)]


@pytest.mark.parametrize("version", SUPPORTED)
def test_kyverno_policy_validates_on_every_supported_release(plan: Path, keys: list[Path], tmp_path: Path,
                                                            version: str) -> None:
    """The emitted ClusterPolicy against each release's CRD schema (a hand-written subset: kit/kyverno_crd.py)."""
    import jsonschema
    from kit.kyverno_crd import schema

    form = "1.10" if version == "1.10" else "1.11"
    out = tmp_path / "verify-images.yaml"
    args = ["rewrite-config", str(plan), "--format", "kyverno", "--verify-key", str(keys[0]),
            "--verify-key", str(keys[1]), "-o", str(out)]
    res = cli(*args, *(["--kyverno-version", "1.10"] if form == "1.10" else []))
    assert res.exit_code == 0, res.output
    doc = yaml.safe_load(out.read_text())
    jsonschema.validate(doc, schema(version))
    entries = doc["spec"]["rules"][0]["verifyImages"][0]["attestors"][0]["entries"]
    if form == "1.10":      # 1.10 checks no log when rekor is absent, and knows no ignoreTlog
        assert all("rekor" not in e["keys"] and "ctlog" not in e["keys"] for e in entries)
        assert "Kyverno 1.10 only" in out.read_text()
    else:                   # 1.11 and later: an absent rekor means the public log, so it is turned off
        assert all(e["keys"]["rekor"]["ignoreTlog"] is True and e["keys"]["rekor"]["url"] for e in entries)


def test_the_default_kyverno_form_is_refused_by_the_1_10_schema(plan: Path, keys: list[Path], tmp_path: Path) -> None:
    """Why --kyverno-version exists: no one document turns the log off on 1.10 and on 1.11+."""
    import jsonschema
    from kit.kyverno_crd import schema

    out = tmp_path / "verify-images.yaml"
    assert cli("rewrite-config", str(plan), "--format", "kyverno", "--verify-key", str(keys[0]),
               "-o", str(out)).exit_code == 0
    with pytest.raises(jsonschema.ValidationError, match="ignoreTlog|ctlog"):
        jsonschema.validate(yaml.safe_load(out.read_text()), schema("1.10"))
    # and the schema subset is strict enough to catch the 1.11 failure the issue reported
    doc = yaml.safe_load(out.read_text())
    del doc["spec"]["rules"][0]["verifyImages"][0]["attestors"][0]["entries"][0]["keys"]["rekor"]["url"]
    with pytest.raises(jsonschema.ValidationError, match="'url' is a required property"):
        jsonschema.validate(doc, schema("1.11"))
    jsonschema.validate(doc, schema("1.12"))
