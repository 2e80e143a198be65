"""A throw-away OpenPGP signing key, made with the real ``gpg`` in a temporary GNUPGHOME.

Ed25519 keys are made in milliseconds. The key signs what a package repository signs: a
clear-signed ``InRelease``, a detached ``Release.gpg`` or ``repomd.xml.asc``.

    key = make_key(tmp_path / "gnupg", "Test Archive")
    key.public_armored / key.public_binary      # files to trust
    key.clearsign(release_bytes) / key.detach_sign(data, armor=True)
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


def _gpg(home: Path, *args: str, data: bytes | None = None) -> bytes:
    proc = subprocess.run(["gpg", "--batch", "--no-tty", "--homedir", str(home), "--pinentry-mode",
                           "loopback", "--passphrase", "", *args], input=data, capture_output=True,
                          timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args)} failed: {proc.stderr.decode(errors='replace')[-800:]}")
    return proc.stdout


@dataclass(frozen=True)
class PGPKey:
    home: Path
    uid: str
    fingerprint: str
    public_armored: Path
    public_binary: Path

    def clearsign(self, data: bytes) -> bytes:
        return _gpg(self.home, "--local-user", self.fingerprint, "--digest-algo", "SHA256",
                    "--clearsign", data=data)

    def detach_sign(self, data: bytes, armor: bool = True) -> bytes:
        return _gpg(self.home, "--local-user", self.fingerprint, "--digest-algo", "SHA256",
                    *(["--armor"] if armor else []), "--detach-sign", data=data)


def make_key(home: Path, name: str = "Mirrorkit Test Archive") -> PGPKey:
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    uid = f"{name} <archive@example.invalid>"
    _gpg(home, "--quick-gen-key", uid, "ed25519", "sign", "never")
    listing = _gpg(home, "--with-colons", "--list-keys", uid).decode()
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    armored = home / "public.asc"
    armored.write_bytes(_gpg(home, "--armor", "--export", fingerprint))
    binary = home / "public.gpg"
    binary.write_bytes(_gpg(home, "--export", fingerprint))
    return PGPKey(home, uid, fingerprint, armored, binary)
