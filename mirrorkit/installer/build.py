"""``mirrorkit offline-installer -o DIR``: everything needed to install this exact mirrorkit with no index.

The folder holds mirrorkit's own wheel, the wheels of every runtime dependency for each
CPython and machine asked for (``pip download --only-binary :all: --platform …
--python-version … --implementation cp``: binary wheels only, so nothing is compiled on
the far side), ``installer.json`` (what was built, and which wheels each Python on each
machine uses), ``install.sh`` and ``SHA256SUMS`` over all of them. A pure-Python wheel
needed by several Pythons is stored once. pip does the resolving, from the metadata of
the wheel itself, so the installer always matches ``pyproject.toml``'s dependencies.

The folder is built beside its destination and renamed into place whole; an earlier
installer there is replaced, anything else is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mirrorkit import __version__
from mirrorkit.errors import InputError, OperationError
from mirrorkit.installer.script import install_sh

PLATFORMS = ("x86_64", "aarch64")
PYTHONS = ("3.11", "3.12", "3.13")
# RHEL 8 has glibc 2.28, Ubuntu 22.04 2.35: wheels for glibc 2.28 and older all run there
MANYLINUX = ("manylinux_2_28", "manylinux_2_17", "manylinux2014")
MANIFEST = "installer.json"
SUMS = "SHA256SUMS"
SCRIPT = "install.sh"
PIP_TIMEOUT = 900
_PYTHON = re.compile(r"^3\.(\d+)$")


@dataclass
class Installer:
    """What an installer folder holds, as ``installer.json`` records it."""

    root: Path
    version: str
    platforms: list[str]
    pythons: list[str]
    files: dict[str, int] = field(default_factory=dict)            # path in the folder -> bytes
    wheels: dict[str, list[str]] = field(default_factory=dict)     # "x86_64/3.11" -> wheel file names

    @property
    def size(self) -> int:
        return sum(self.files.values())

    def size_for(self, platform: str, python: str | None = None) -> int:
        """Bytes a machine of this platform (and Python) needs: its wheels, the script and the lists."""
        names = {n for key, found in self.wheels.items() if key.split("/")[0] == platform
                 and (python is None or key.split("/")[1] == python) for n in found}
        return sum(self.files[f"wheels/{n}"] for n in names) + \
            sum(size for rel, size in self.files.items() if not rel.startswith("wheels/"))

    def to_dict(self) -> dict[str, object]:
        return {"kind": "MirrorkitOfflineInstaller", "version": self.version, "platforms": self.platforms,
                "pythons": self.pythons, "wheels": self.wheels}


def check_choice(platforms: list[str], pythons: list[str]) -> tuple[list[str], list[str]]:
    """The platforms and Pythons asked for, checked (bad input is exit 2); none given means all."""
    chosen_platforms = list(dict.fromkeys(platforms or PLATFORMS))
    chosen_pythons = list(dict.fromkeys(pythons or PYTHONS))
    for p in chosen_platforms:
        if p not in PLATFORMS:
            raise InputError(f"--platform {p}: expected one of {', '.join(PLATFORMS)}")
    for v in chosen_pythons:
        m = _PYTHON.match(v)
        if not m or int(m.group(1)) < 11:
            raise InputError(f"--python {v}: expected a CPython version 3.11 or newer, e.g. 3.12")
    return chosen_platforms, chosen_pythons


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise OperationError(f"{what}: pip did not finish within {PIP_TIMEOUT} s") from None
    except OSError as exc:
        raise OperationError(f"{what}: cannot run pip: {exc.strerror or exc}") from None
    if res.returncode != 0:
        lines = [ln.strip() for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
        raise OperationError(f"{what}: pip failed: {' / '.join(lines[-3:]) or f'exit {res.returncode}'}")
    return res.stdout


def source_root() -> Path | None:
    """The source tree this mirrorkit runs from (an editable install or a checkout), if any."""
    root = Path(__file__).resolve().parent.parent.parent
    project = root / "pyproject.toml"
    try:
        return root if project.is_file() and 'name = "mirrorkit"' in project.read_text() else None
    except OSError:
        return None


def build_wheel(dest: Path, scratch: Path) -> Path:
    """mirrorkit's own wheel, built from a copy of its sources (the tree gets no build/ or egg-info)."""
    root = source_root()
    if root is None:
        raise InputError("mirrorkit's sources are not here (it was installed from a wheel): give that wheel with "
                         "--wheel FILE")
    src = scratch / "src"
    shutil.copytree(root / "mirrorkit", src / "mirrorkit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        if (root / name).is_file():
            shutil.copy(root / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
          "--no-build-isolation", "--no-index", "-w", str(dest), str(src)], "building mirrorkit's wheel")
    found = sorted(dest.glob(f"mirrorkit-{__version__}-*.whl"))
    if not found:
        raise OperationError(f"building mirrorkit's wheel: no mirrorkit-{__version__} wheel came out")
    return found[0]


def download_wheels(wheel: Path, platform: str, python: str, dest: Path, find_links: Path | None = None) -> list[str]:
    """The binary wheels of every runtime dependency for one CPython on one manylinux machine.

    ``find_links``: take them from this folder of wheels only (a site's own wheelhouse, or the one
    ``make setup`` fills for the tests, which reach no package index).
    """
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary", ":all:", "--implementation", "cp", "--python-version", python, "-d", str(dest)]
    if find_links is not None:
        argv += ["--no-index", "--find-links", str(find_links)]
    for tag in MANYLINUX:
        argv += ["--platform", f"{tag}_{platform}"]
    # pip too: install.sh runs it from its wheel (no ensurepip needed on the far side)
    _run([*argv, str(wheel), "pip"], f"downloading the wheels for CPython {python} on {platform}")
    return sorted(p.name for p in dest.glob("*.whl"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise InputError(f"-o {out}: exists and is not an earlier offline installer; give a new folder")


def build_installer(out: Path, platforms: list[str] | None = None, pythons: list[str] | None = None,
                    wheel: Path | None = None, log: Callable[[str], None] | None = None,
                    find_links: Path | None = None) -> Installer:
    """Build the installer folder ``out`` (replacing an earlier installer there)."""
    chosen_platforms, chosen_pythons = check_choice(platforms or [], pythons or [])
    _check_out(out)
    if wheel is not None and (not wheel.is_file() or not wheel.name.startswith("mirrorkit-")
                              or wheel.suffix != ".whl"):
        raise InputError(f"--wheel {wheel}: not a mirrorkit wheel file")
    say = log or (lambda _msg: None)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise InputError(f"-o {out}: cannot write there: {exc.strerror or exc}") from None
    try:
        wheels = staging / "wheels"
        wheels.mkdir()
        with tempfile.TemporaryDirectory(prefix="mirrorkit-installer-") as tmp:
            scratch = Path(tmp)
            if wheel is None:
                say("building mirrorkit's wheel")
                wheel = build_wheel(scratch / "own", scratch)
            own = wheels / wheel.name
            shutil.copyfile(wheel, own)
            result = Installer(out, __version__, chosen_platforms, chosen_pythons)
            for platform in chosen_platforms:
                for python in chosen_pythons:
                    say(f"downloading wheels for CPython {python} on {platform}")
                    combo = scratch / f"{platform}-{python}"
                    names = download_wheels(own, platform, python, combo, find_links)
                    for name in names:
                        target = wheels / name
                        if not target.exists():
                            shutil.move(str(combo / name), target)
                        elif _sha256(target) != _sha256(combo / name):
                            raise OperationError(f"two different files named {name} for {platform}/{python}")
                    result.wheels[f"{platform}/{python}"] = names
        (staging / MANIFEST).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        script = staging / SCRIPT
        script.write_text(install_sh(__version__, chosen_pythons, chosen_platforms))
        script.chmod(0o755)
        listed = sorted([SCRIPT, MANIFEST] + [f"wheels/{p.name}" for p in wheels.iterdir()])
        (staging / SUMS).write_text("".join(f"{_sha256(staging / rel)}  {rel}\n" for rel in listed))
        result.files = {rel: (staging / rel).stat().st_size for rel in [*listed, SUMS]}
        staging.chmod(0o755)
        _swap(staging, out)
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap(staging: Path, out: Path) -> None:
    """The new folder in place of the old in two renames (the old one removed afterwards)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.replace(old)
    staging.replace(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_installer(root: Path) -> Installer:
    """An installer folder, checked against its SHA256SUMS (it may come from anywhere): bad input if not."""
    where = str(root)
    try:
        doc = json.loads((root / MANIFEST).read_text())
        sums = (root / SUMS).read_text().splitlines()
    except (OSError, ValueError):
        raise InputError(f"{where}: not an offline installer (no readable {MANIFEST} and {SUMS}); build one with "
                         "'mirrorkit offline-installer -o DIR'") from None
    if not isinstance(doc, dict) or doc.get("kind") != "MirrorkitOfflineInstaller":
        raise InputError(f"{where}/{MANIFEST}: not an offline installer manifest")
    files: dict[str, int] = {}
    for n, line in enumerate(sums, 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or rel.startswith("/") or ".." in rel.split("/"):
            raise InputError(f"{where}/{SUMS}:{n}: not a sha256sum line")
        path = root / rel
        if not path.is_file() or path.is_symlink() or _sha256(path) != digest:
            raise InputError(f"{where}/{rel}: missing or altered (SHA256SUMS line {n})")
        files[rel] = path.stat().st_size
    listed = {f"wheels/{p.name}" for p in (root / "wheels").iterdir()} if (root / "wheels").is_dir() else set()
    if listed - set(files) or SCRIPT not in files:
        raise InputError(f"{where}: holds files SHA256SUMS does not list, or no {SCRIPT}")
    files[SUMS] = (root / SUMS).stat().st_size
    version, platforms, pythons = doc.get("version"), doc.get("platforms"), doc.get("pythons")
    wheels = doc.get("wheels")
    if not isinstance(version, str) or not isinstance(platforms, list) or not isinstance(pythons, list) \
            or not isinstance(wheels, dict):
        raise InputError(f"{where}/{MANIFEST}: incomplete installer manifest")
    return Installer(root, version, [str(p) for p in platforms], [str(v) for v in pythons], files,
                     {str(k): [str(n) for n in v] for k, v in wheels.items() if isinstance(v, list)})
