"""Charts read into image lists (the generator and ``plan --chart``), and the shipped lists."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mirrorkit.cli.main import main
from mirrorkit.errors import InputError
from mirrorkit.refs import Ref
from mirrorkit.resolve.catalog import image_list_from_dict, known_releases, load_release
from mirrorkit.resolve.chart import image_list_from_chart

ROOT = Path(__file__).resolve().parent.parent

VALUES = {
    "nfd": {"enabled": True},
    "sandboxWorkloads": {"enabled": False},
    "operator": {"repository": "nvcr.io/nvidia", "image": "gpu-operator", "version": "",
                 "initContainer": {"repository": "nvcr.io/nvidia", "image": "cuda", "version": "13.0.0-base-ubi9"}},
    "validator": {"repository": "nvcr.io/nvidia", "image": "gpu-operator"},
    "driver": {"enabled": True, "repository": "nvcr.io/nvidia", "image": "driver", "version": "600.10.01",
               "manager": {"repository": "nvcr.io/nvidia/cloud-native", "image": "k8s-driver-manager",
                           "version": "v0.13.0"}},
    "gds": {"enabled": False, "repository": "nvcr.io/nvidia/cloud-native", "image": "nvidia-fs", "version": "2.30"},
    "vgpuManager": {"enabled": False, "repository": "", "image": "vgpu-manager", "version": ""},
    "newThing": {"enabled": True, "repository": "nvcr.io/nvidia", "image": "new-thing", "version": "v1"},
}
NFD_VALUES_BROKEN_FOR_PYYAML = (
    "image:\n  repository: registry.k8s.io/nfd/node-feature-discovery\n  pullPolicy: IfNotPresent\n"
    "worker:\n  config: |### <CONF-START>\n    #core:\n    ### <CONF-END>\n"
)


def write_chart(root: Path, version: str = "v27.1.0") -> Path:
    chart = root / "gpu-operator"
    (chart / "charts" / "node-feature-discovery").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(f"apiVersion: v2\nname: gpu-operator\nversion: {version}\n"
                                      f"appVersion: \"{version}\"\n")
    (chart / "values.yaml").write_text(yaml.safe_dump(VALUES))
    nfd = chart / "charts" / "node-feature-discovery"
    (nfd / "Chart.yaml").write_text("apiVersion: v2\nname: node-feature-discovery\nversion: 0.20.0\n"
                                    "appVersion: v0.20.0\n")
    (nfd / "values.yaml").write_text(NFD_VALUES_BROKEN_FOR_PYYAML)
    return chart


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def packaged(chart: Path, out: Path, hostile: bool = False) -> Path:
    """A chart .tgz as `helm package` writes it, the subchart nested as its own .tgz."""
    sub = tar_bytes({f"node-feature-discovery/{n}": (chart / "charts/node-feature-discovery" / n).read_bytes()
                     for n in ("Chart.yaml", "values.yaml")})
    files = {
        "gpu-operator/Chart.yaml": (chart / "Chart.yaml").read_bytes(),
        "gpu-operator/values.yaml": (chart / "values.yaml").read_bytes(),
        "gpu-operator/charts/node-feature-discovery-0.20.0.tgz": sub,
    }
    if hostile:
        files["gpu-operator/../../escape.yaml"] = b"owned: true\n"
        files["/abs/values.yaml"] = b"owned: true\n"
    out.write_bytes(tar_bytes(files))
    return out


def check_chart_list(il) -> None:
    by_path = {c.path: c for c in il.components}
    assert il.release == "v27.1.0"
    assert by_path["operator"].version == "v27.1.0"  # empty version -> appVersion
    assert by_path["validator"].version == "v27.1.0"
    assert by_path["driver"].os_tag and by_path["gds"].os_tag
    assert [c.path for c in by_path["gds"].when] == ["gds.enabled", "driver.enabled"]
    assert by_path["vgpuManager"].placeholder and by_path["vgpuManager"].version is None
    nfd = by_path["node-feature-discovery.image"]
    assert (nfd.repository, nfd.version) == ("registry.k8s.io/nfd/node-feature-discovery", "v0.20.0")


def test_chart_directory(tmp_path: Path) -> None:
    il, warnings = image_list_from_chart(write_chart(tmp_path))
    check_chart_list(il)
    assert len(warnings) == 1 and "newThing" in warnings[0]


def test_packaged_chart_with_nested_subchart(tmp_path: Path) -> None:
    tgz = packaged(write_chart(tmp_path), tmp_path / "gpu-operator-v27.1.0.tgz")
    il, _ = image_list_from_chart(tgz)
    check_chart_list(il)


def test_hostile_chart_archive_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    tgz = packaged(write_chart(work), work / "evil.tgz", hostile=True)
    with pytest.raises(InputError, match=r"evil.tgz: not a usable chart archive: entry .* points outside"):
        image_list_from_chart(tgz)
    assert not (tmp_path / "escape.yaml").exists() and not Path("/abs/values.yaml").exists()


@pytest.mark.parametrize("command", [["plan", "--chart"], ["pull-bundle", "plan.yaml", "-o", "b.tar", "--chart"]])
def test_corrupt_chart_archive_is_one_line_exit_2(tmp_path: Path, command: list[str], monkeypatch) -> None:
    """A .tgz whose deflate stream is damaged (zlib.error, not a TarError) is a user's mistake, not a traceback."""
    from click.testing import CliRunner

    from mirrorkit.cli.main import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "plan.yaml").write_text(
        "apiVersion: mirrorkit.dev/v1alpha1\nkind: Plan\nimages:\n"
        "  - {source: 'nvcr.io/nvidia/x:1', destination: 'r.local/x:1', component: x}\n")
    good = packaged(write_chart(tmp_path), tmp_path / "good.tgz").read_bytes()
    bad = tmp_path / "corrupt.tgz"
    bad.write_bytes(good[:10] + b"\xff" * 64 + good[74:])
    res = CliRunner().invoke(main, [*command, str(bad), "--node", "ubuntu22.04/5.15.0-1-generic"]
                             if command[0] == "plan" else [*command, str(bad)])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith(f"error: {bad}: not a Helm chart archive (corrupt .tgz") and \
        len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_development_placeholder_version_needs_release(tmp_path: Path) -> None:
    chart = write_chart(tmp_path, version="v1.0.0-devel")
    with pytest.raises(InputError, match="placeholder"):
        image_list_from_chart(chart)
    il, _ = image_list_from_chart(chart, release="v27.1.0")
    check_chart_list(il)


def test_not_a_chart(tmp_path: Path) -> None:
    (tmp_path / "junk.tgz").write_bytes(b"not a tarball")
    for target in (tmp_path / "junk.tgz", tmp_path, tmp_path / "missing"):
        with pytest.raises(InputError):
            image_list_from_chart(target)


def test_plan_from_chart_on_day_one(tmp_path: Path) -> None:
    tgz = packaged(write_chart(tmp_path), tmp_path / "gpu-operator-v27.1.0.tgz")
    res = CliRunner().invoke(main, ["plan", "--chart", str(tgz), "--node", "rhel9.6/5.14.0-570.el9.x86_64",
                                    "--format", "txt"])
    assert res.exit_code == 0, res.output
    assert "nvcr.io/nvidia/driver:600.10.01-rhel9" in res.stdout.split()
    assert "nvcr.io/nvidia/new-thing:v1" in res.stdout.split()
    assert "warning:" in res.stderr and "newThing" in res.stderr


def test_generator_script_writes_a_loadable_list(tmp_path: Path) -> None:
    out = tmp_path / "v27.1.0.yaml"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/gen-image-list.py"), str(write_chart(tmp_path)),
                           "-o", str(out)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    il = image_list_from_dict(yaml.safe_load(out.read_text()), str(out))
    check_chart_list(il)


@pytest.mark.parametrize("release", known_releases())
def test_shipped_lists_are_well_formed(release: str) -> None:
    il = load_release(release)
    assert il.release == release and il.components
    for comp in il.components:
        if comp.placeholder:
            continue
        name = f"{comp.repository}/{comp.image}" if comp.image else comp.repository
        Ref.parse(f"{name}:{comp.version}")
    for extra in il.extras:
        Ref.parse(extra.ref)


def test_for_release_picks_the_newest_row_at_or_before_the_release_in_any_order() -> None:
    from mirrorkit.resolve.catalog import for_release

    table = [("v0", "a"), ("v23.9.0", "b"), ("v23.10.0", "c")]
    for rows in (table, list(reversed(table))):
        assert for_release(rows, "v23.9.2") == "b"
        assert for_release(rows, "v23.10.1") == "c"      # semver order, not text order
        assert for_release(rows, "v1.0.0") == "a"
