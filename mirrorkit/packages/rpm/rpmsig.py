"""RPM header signatures, checked by the real ``rpmkeys`` against only the repository's own keys.

A fresh, temporary rpm database holds nothing but the keys ``gpgkey=`` names, so a package signed by
any other key (or not signed at all: ``_pkgverify_level signature`` makes a missing signature a
failure) is refused, exactly as dnf on the far side would refuse it with ``gpgcheck=1``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mirrorkit.errors import InputError, OperationError

_ARMOR = b"-----BEGIN PGP PUBLIC KEY BLOCK-----"
_TIMEOUT = 300
_ENV = {**os.environ, "LC_ALL": "C"}


def _armored(key: Path, home: Path) -> bytes:
    """The key file as an armored public key (rpmkeys imports only armored keys)."""
    try:
        data = key.read_bytes()
    except OSError as exc:
        raise InputError(f"{key}: cannot read key file: {exc.strerror or exc}") from None
    if _ARMOR in data[:4096]:
        return data
    gpg = ["gpg", "--batch", "--no-options", "--homedir", str(home)]
    imported = subprocess.run([*gpg, "--import"], input=data, capture_output=True, timeout=60, check=False)
    exported = subprocess.run([*gpg, "--armor", "--export"], capture_output=True, timeout=60, check=False)
    if imported.returncode != 0 or not exported.stdout:
        raise InputError(f"{key}: not an OpenPGP public key")
    return exported.stdout


def check_signatures(packages: Sequence[tuple[Path, str]], key_files: Sequence[Path], what: str) -> None:
    """Every package's header signature by one of ``key_files``, or a one-line error naming the first bad one.

    ``packages`` pairs each file with the name the error gives it (its path in the repository).
    """
    if not packages:
        return
    if not key_files:
        raise InputError(f"{what}: gpgcheck=1 but no gpgkey= names a key to check the packages with")
    with tempfile.TemporaryDirectory(prefix="mirrorkit-rpmkeys-") as tmp:
        folder = Path(tmp)
        os.chmod(folder, 0o700)
        (folder / "gnupg").mkdir(mode=0o700)
        dbpath = folder / "db"
        dbpath.mkdir()
        for n, key in enumerate(key_files):
            armored = folder / f"key{n}.asc"
            armored.write_bytes(_armored(key, folder / "gnupg"))
            proc = subprocess.run(["rpmkeys", "--dbpath", str(dbpath), "--import", str(armored)],
                                  capture_output=True, timeout=60, check=False, env=_ENV)
            if proc.returncode != 0:
                raise InputError(f"{key}: rpmkeys cannot import it "
                                 f"({proc.stderr.decode('utf-8', 'replace').strip()[-200:]})")
        try:
            proc = subprocess.run(["rpmkeys", "--dbpath", str(dbpath), "--define", "_pkgverify_level signature",
                                   "--checksig", "--", *(str(p) for p, _ in packages)],
                                  capture_output=True, timeout=_TIMEOUT, check=False, env=_ENV)
        except FileNotFoundError:
            raise OperationError("rpmkeys is not installed: it checks the packages' signatures") from None
        except subprocess.TimeoutExpired:
            raise OperationError(f"{what}: rpmkeys did not finish in {_TIMEOUT} s") from None
    good = set()
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        path, sep, verdict = line.rpartition(": ")
        if sep and verdict.strip().endswith("OK") and "NOT OK" not in verdict:
            good.add(path)
    for package, label in packages:
        if str(package) not in good:
            raise OperationError(f"{what}: {label}: RPM signature or digest check failed "
                                 "(not signed by the repository's key, or altered)")
    if proc.returncode != 0:
        raise OperationError(f"{what}: rpmkeys --checksig failed")
