"""The rpm family against a real signed repository on loopback, checked on the far side by the real dnf.

The repository is built once per session (``rpmbuild``, ``rpmsign``, ``createrepo_c``, gpg); the driver
image is an rpmdb made by the real ``rpm`` (sqlite, and a BerkeleyDB copy as RHEL 8 keeps it).
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import dnfroot, rpmrepo
from kit.pgpkey import make_key

from mirrorkit.errors import InputError, MirrorkitError, OperationError
from mirrorkit.packages.model import FamilyResult, Need
from mirrorkit.packages.rpm import resolve_rpm
from mirrorkit.packages.rpm.kernelgcc import kernel_gcc_version
from mirrorkit.packages.rpm.needs import releasever, rpm_names
from mirrorkit.packages.rpm.repofile import RepoSection, carry_name

KV_A = f"{rpmrepo.KERNEL_A}.x86_64"
KV_B = f"{rpmrepo.KERNEL_B}.x86_64"


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rpmrepo.TestRepo]:
    root = tmp_path_factory.mktemp("rpmrepo")
    built = rpmrepo.build(root / "www", make_key(root / "gpg-repo", "Test Repo"),
                          make_key(root / "gpg-other", "Someone Else")).start()
    yield built
    built.stop()


@pytest.fixture(scope="session")
def image_root(repo: rpmrepo.TestRepo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    installed = [repo.rpms[s.nevra] for s in repo.specs if s.name in rpmrepo.INSTALLED]
    return rpmrepo.make_image_root(tmp_path_factory.mktemp("image") / "root", installed)


def need(kernel: str = KV_A, os_tag: str = "rocky8.9") -> Need:
    names, optional = rpm_names(os_tag, kernel)
    return Need(os_tag, "rpm", kernel, "amd64", names, optional, nodes=("gpu-node-1",))


def resolve(repo: rpmrepo.TestRepo, tmp_path: Path, image: Path | None, *needs: Need, variant: str = "good",
            allow_unsigned: bool = False, **repo_file: object) -> FamilyResult:
    source = repo.repo_file(tmp_path / "user.repo", variant, **repo_file)  # type: ignore[arg-type]
    return resolve_rpm(source, "rocky8", list(needs) or [need()], image, rpmrepo.LoopbackFetcher(),
                       tmp_path / "work", allow_unsigned)


def carried(result: FamilyResult) -> set[str]:
    return {Path(f.path).name.removesuffix(".rpm") for r in result.repos for f in r.files if f.kind == "package"}


def test_needs_follow_the_driver_container() -> None:
    assert rpm_names("rocky8.9", KV_A)[0] == ("elfutils-libelf", "elfutils-libelf-devel", f"kernel-headers-{KV_A}",
                                              f"kernel-devel-{KV_A}", f"kernel-core-{KV_A}")
    kv9 = "5.14.0-427.13.1.el9_4.x86_64"
    assert rpm_names("rhel9.4", kv9)[0][-1] == f"kernel-{kv9}"
    assert rpm_names("rocky10.0", "6.12.0-55.9.1.el10_0.x86_64")[0][-1].startswith("kernel-6.12.0")
    assert (releasever(KV_A), releasever(kv9), releasever("4.18.0-372.9.1.el8.x86_64")) == ("8.9", "9.4", "8")


def test_carried_names_follow_what_the_baseurl_depends_on() -> None:
    def section(baseurl: str) -> RepoSection:
        return RepoSection("base os", "n", baseurl, True, True, True, "", "f [base os]")
    assert carry_name(section("https://m.example/rocky/8/os/"), "8.9", "x86_64") == "base_os"
    assert carry_name(section("https://m.example/$releasever/${basearch}/"), "9.4", "aarch64") == "base_os-9.4-aarch64"
    assert carry_name(section("https://m.example/epel/8/$basearch/"), "8.9", "x86_64") == "base_os-x86_64"


def test_kernel_gcc_is_read_from_kernel_devel(repo: rpmrepo.TestRepo) -> None:
    devel = {v: repo.rpms[f"kernel-devel-{v}.x86_64"] for v in (rpmrepo.KERNEL_A, rpmrepo.KERNEL_B)}
    assert kernel_gcc_version(devel[rpmrepo.KERNEL_A]) == "8.5.0"
    assert kernel_gcc_version(devel[rpmrepo.KERNEL_B]) == "8.4.0"
    assert kernel_gcc_version(repo.rpms["gcc-8.5.0-20.el8.x86_64"]) is None


def test_closure_against_the_image_then_real_dnf_installs_from_the_partial_mirror(
        repo: rpmrepo.TestRepo, image_root: Path, tmp_path: Path) -> None:
    result = resolve(repo, tmp_path, image_root)
    assert result.missing == []
    assert carried(result) == rpmrepo.closure(rpmrepo.KERNEL_A)   # nothing installed, no other kernel, no decoy
    by_name = {r.name: r for r in result.repos}
    # named after the section and the release/arch its baseurl depends on; the disabled section is not touched
    assert set(by_name) == {"baseos-8.9-x86_64", "appstream-8.9-x86_64"}
    for r in result.repos:
        assert r.signed_by == repo.key.fingerprint and r.family == "rpm" and r.os == "rocky8"
        assert r.repo_file == f"rocky8-{r.name}.repo"
        section = "BaseOS" if r.name.startswith("baseos") else "AppStream"
        assert r.source == f"{repo.url()}/8.9/{section}/x86_64/os/"
        text = r.repo_text.splitlines()
        assert text[0] == f"[{r.name}]" and "baseurl=@URL@" in text and "gpgcheck=1" in text
        assert "repo_gpgcheck=1" in text and f"gpgkey=file://{repo.key.public_armored}" in text
        # the original signed metadata, unchanged: repomd, its signature and every file it lists
        files = {f.path: f for f in r.files}
        repomd = (result.files_dir / files["repodata/repomd.xml"].sha256).read_bytes()
        served = repo.root / "good" / "tree" / section / "x86_64" / "os"
        assert repomd == (served / "repodata" / "repomd.xml").read_bytes()
        assert "repodata/repomd.xml.asc" in files
        listed = {loc.get("href") for loc in ET.fromstring(repomd).iter("{http://linux.duke.edu/metadata/repo}location")}
        assert listed and listed <= set(files)
        for f in r.files:       # every blob is what the upstream file is, at its original path
            assert (result.files_dir / f.sha256).read_bytes() == (served / f.path).read_bytes()

    mirror = dnfroot.write_mirror(result.repos, result.files_dir, tmp_path / "mirror")
    server = rpmrepo.StaticServer(mirror)
    try:
        got = dnfroot.dnf_download(image_root, dnfroot.repo_files(result.repos, server.url), need().names,
                                   tmp_path / "dnf", "8.9")
    finally:
        server.stop()
    assert {n.removesuffix(".rpm") for n in got} == rpmrepo.closure(rpmrepo.KERNEL_A)


def test_far_side_dnf_refuses_a_mirror_whose_metadata_lost_its_signature(
        repo: rpmrepo.TestRepo, image_root: Path, tmp_path: Path) -> None:
    """The far side's checks are really on: without repomd.xml.asc dnf (repo_gpgcheck=1) gives up."""
    result = resolve(repo, tmp_path, image_root)
    mirror = dnfroot.write_mirror(result.repos, result.files_dir, tmp_path / "mirror")
    (mirror / "rocky8" / "baseos-8.9-x86_64" / "repodata" / "repomd.xml.asc").unlink()
    server = rpmrepo.StaticServer(mirror)
    try:
        with pytest.raises(dnfroot.DnfError, match="makecache"):
            dnfroot.dnf_download(image_root, dnfroot.repo_files(result.repos, server.url), need().names,
                                 tmp_path / "dnf", "8.9")
    finally:
        server.stop()


def test_berkeleydb_rpmdb_as_rhel8_keeps_it(repo: rpmrepo.TestRepo, image_root: Path, tmp_path: Path) -> None:
    bdb = rpmrepo.berkeleydb_copy(image_root, tmp_path / "bdb-image")
    assert (bdb / "var/lib/rpm/Packages").is_file() and not (bdb / "var/lib/rpm/rpmdb.sqlite").exists()
    assert carried(resolve(repo, tmp_path, bdb)) == rpmrepo.closure(rpmrepo.KERNEL_A)


def test_empty_installed_set_and_two_releases(repo: rpmrepo.TestRepo, tmp_path: Path) -> None:
    result = resolve(repo, tmp_path, None, need(KV_A), need(KV_B, "rocky8.8"))
    extra = {f"{s.name}-{s.version}-{s.release}.{s.arch}" for s in repo.specs if s.name in rpmrepo.INSTALLED}
    assert carried(result) == rpmrepo.closure(rpmrepo.KERNEL_A) | rpmrepo.closure(rpmrepo.KERNEL_B) | extra
    # one section expanded to two baseurls ($releasever 8.9 and 8.8): one carried repository each,
    # named as it would be had each kernel been resolved on its own
    assert {r.name for r in result.repos} == {f"{sid}-{rel}-x86_64" for sid in ("baseos", "appstream")
                                              for rel in ("8.9", "8.8")}
    assert all(r.repo_text.startswith(f"[{r.name}]\n") for r in result.repos)


def test_missing_kernel_names_the_nearest_kernels(repo: rpmrepo.TestRepo, image_root: Path, tmp_path: Path) -> None:
    wanted = "4.18.0-500.1.1.el8_9.x86_64"
    result = resolve(repo, tmp_path, image_root, need(wanted), need(KV_A))
    assert len(result.missing) == 1
    miss = result.missing[0]
    assert miss.need.kernel == wanted
    assert miss.missing == (f"kernel-headers-{wanted}", f"kernel-devel-{wanted}", f"kernel-core-{wanted}")
    assert miss.nearest == (KV_B, KV_A)
    assert carried(result) == rpmrepo.closure(rpmrepo.KERNEL_A)     # the other need is still met


@pytest.mark.parametrize(("variant", "options", "error", "message"), [
    ("flipped-rpm", {}, OperationError, "kernel-devel-4.18.0-513.5.1.el8_9.x86_64.rpm: sha256 does not match"),
    ("tampered-primary", {}, OperationError, "primary.xml.gz: sha256 does not match the signed metadata"),
    ("foreign-rpm", {}, OperationError, "RPM signature or digest check failed"),
    ("unsigned", {}, OperationError, "not signed (no repomd.xml.asc); refused"),
    ("good", {"wrong_key": True}, OperationError, "not signed by any of the given keys"),
    ("good", {"gpgcheck": False}, InputError, "gpgcheck is off"),
])
def test_refusals(repo: rpmrepo.TestRepo, image_root: Path, tmp_path: Path, variant: str, options: dict[str, bool],
                  error: type[MirrorkitError], message: str) -> None:
    repo_file: dict[str, object] = {"gpgcheck": options.get("gpgcheck", True)}
    if options.get("wrong_key"):
        repo_file["key"] = repo.other_key.public_armored
    with pytest.raises(error) as caught:
        resolve(repo, tmp_path, image_root, variant=variant, **repo_file)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_allow_unsigned_carries_an_unsigned_repository(repo: rpmrepo.TestRepo, image_root: Path,
                                                       tmp_path: Path) -> None:
    result = resolve(repo, tmp_path, image_root, variant="unsigned", allow_unsigned=True)
    assert carried(result) == rpmrepo.closure(rpmrepo.KERNEL_A)
    for r in result.repos:
        assert r.signed_by == ""
        assert "repodata/repomd.xml.asc" not in {f.path for f in r.files}
        assert "repo_gpgcheck=1" not in r.repo_text      # the far side's dnf would refuse it otherwise
        assert "gpgcheck=1" in r.repo_text.splitlines()  # the packages' own signatures still count


@pytest.mark.parametrize(("text", "message"), [
    ("[base]\nmirrorlist=https://mirrors.example.invalid/?repo=BaseOS\n", "has no baseurl (mirrorlist/metalink)"),
    ("[base]\nbaseurl=http://127.0.0.1:9/$contentdir/\ngpgcheck=1\ngpgkey=file:///k\n",
     "unknown dnf variable $contentdir"),
    ("[base]\nbaseurl=http://127.0.0.1:9/\nenabled=0\n", "no enabled repository"),
    ("[base]\nbaseurl=http://127.0.0.1:9/\ngpgcheck=1\ngpgkey=https://example.invalid/key\n",
     "is not a file:// key"),
    ("not a repo file\n", "not a yum .repo file"),
    ("[rhel]\nbaseurl=https://cdn.example.invalid/x\nsslclientcert=/etc/pki/entitlement/1.pem\n",
     "sslclientcert"),
])
def test_repo_file_mistakes_are_one_line_input_errors(tmp_path: Path, text: str, message: str) -> None:
    source = tmp_path / "bad.repo"
    source.write_text(text)
    with pytest.raises(InputError) as caught:
        resolve_rpm(source, "rocky8", [need()], None, rpmrepo.LoopbackFetcher(), tmp_path / "work", False)
    assert message in str(caught.value) and str(source) in str(caught.value) and "\n" not in str(caught.value)


def test_image_dnf_vars_expand_the_baseurl(repo: rpmrepo.TestRepo, image_root: Path, tmp_path: Path) -> None:
    """Rocky's repo files use ``$contentdir``, defined in the image's /etc/dnf/vars."""
    image = tmp_path / "image"
    shutil.copytree(image_root, image, symlinks=True)
    (image / "etc/dnf/vars").mkdir(parents=True)
    (image / "etc/dnf/vars/contentdir").write_text("good\n")
    source = tmp_path / "rocky.repo"
    source.write_text(repo.repo_file(tmp_path / "user.repo").read_text().replace(f"{repo.url()}/",
                                                                                  f"{repo.url('')}$contentdir/"))
    result = resolve_rpm(source, "rocky8", [need()], image, rpmrepo.LoopbackFetcher(), tmp_path / "work", False)
    assert carried(result) == rpmrepo.closure(rpmrepo.KERNEL_A)
