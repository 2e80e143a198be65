"""OpenPGP signature checks of repository metadata, done by ``gpgv`` (never by hand).

A package repository is trusted through one signature over its metadata (apt's ``InRelease`` or
``Release.gpg``, rpm-md's ``repomd.xml.asc``); everything else is checked by the hashes that
metadata lists. ``gpgv`` is the verifier apt itself uses: it reads only the keyring it is given (no
trust database, no user keyring), so the keys the user names are the only keys that count.

Each check builds a fresh keyring in a temporary folder from the given key files (binary keyrings
are used as they are, armored keys are turned to binary with ``gpg --dearmor``) and reads gpgv's
machine-readable status lines (``--status-fd``): a ``VALIDSIG`` line gives the signer's primary key
fingerprint; any ``BADSIG`` fails the check. Like apt, a signature by a key that is not given
(``NO_PUBKEY``) is ignored when another signature is good (Debian signs with two keys at once).
A clear-signed document's content is taken from gpgv's own ``--output``: only the bytes the signature
covers are ever used, never text around the signed block.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mirrorkit.errors import InputError, OperationError

_ARMOR = b"-----BEGIN PGP PUBLIC KEY BLOCK-----"
_TIMEOUT = 60


def _keyring(key_files: Sequence[Path], folder: Path) -> list[Path]:
    """The key files as binary keyrings inside ``folder`` (armored ones dearmored)."""
    if not key_files:
        raise InputError("no OpenPGP key given to check the signature with")
    rings = []
    for n, key in enumerate(key_files):
        try:
            data = key.read_bytes()
        except OSError as exc:
            raise InputError(f"{key}: cannot read key file: {exc.strerror or exc}") from None
        if not data:
            raise InputError(f"{key}: key file is empty")
        ring = folder / f"key{n}.gpg"
        if _ARMOR in data[:4096]:
            proc = subprocess.run(["gpg", "--batch", "--no-options", "--homedir", str(folder), "--dearmor"],
                                  input=data, capture_output=True, timeout=_TIMEOUT, check=False)
            if proc.returncode != 0 or not proc.stdout:
                raise InputError(f"{key}: not an OpenPGP key (gpg --dearmor failed)")
            ring.write_bytes(proc.stdout)
        else:
            ring.write_bytes(data)
        rings.append(ring)
    return rings


def _gpgv(args: list[str], key_files: Sequence[Path], folder: Path, what: str) -> str:
    """Run gpgv in ``folder``; the fingerprint of the first good signature, or a one-line error."""
    rings = _keyring(key_files, folder)
    cmd = ["gpgv", "--homedir", str(folder), "--status-fd", "1"]
    for ring in rings:
        cmd += ["--keyring", str(ring)]
    try:
        proc = subprocess.run(cmd + args, capture_output=True, timeout=_TIMEOUT, check=False,
                              env={**os.environ, "LC_ALL": "C"})
    except FileNotFoundError:
        raise OperationError("gpgv is not installed: it checks the repository's signature") from None
    except subprocess.TimeoutExpired:
        raise OperationError(f"{what}: gpgv did not finish in {_TIMEOUT} s") from None
    status = [line.split()[1:] for line in proc.stdout.decode("utf-8", "replace").splitlines()
              if line.startswith("[GNUPG:] ") and len(line.split()) > 1]
    kinds = {s[0] for s in status}
    if "BADSIG" in kinds:
        raise OperationError(f"{what}: BAD signature (the signed data was altered)")
    valid = [s for s in status if s[0] == "VALIDSIG"]
    if valid:
        fields = valid[0]
        # VALIDSIG <sig-key-fpr> ... <primary-key-fpr> (the primary is the 10th field when present)
        return (fields[10] if len(fields) > 10 else fields[1]).upper()
    if "NO_PUBKEY" in kinds or "ERRSIG" in kinds:
        raise OperationError(f"{what}: not signed by any of the given keys "
                             f"({', '.join(str(k) for k in key_files)})")
    if "NODATA" in kinds:
        raise OperationError(f"{what}: no OpenPGP signature found")
    reason = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    raise OperationError(f"{what}: signature not valid ({reason[-1] if reason else 'gpgv failed'})")


def verify_detached(data: bytes, signature: bytes, key_files: Sequence[Path], what: str = "signature") -> str:
    """Check a detached signature (``Release.gpg``, ``repomd.xml.asc``) over ``data``.

    Returns the signer's primary key fingerprint (upper-case hex); raises OperationError (exit 1) when
    the signature is missing, bad, or by none of ``key_files``; InputError (exit 2) for an unusable key
    file. ``what`` names the document in the error line.
    """
    with tempfile.TemporaryDirectory(prefix="mirrorkit-gpgv-") as tmp:
        folder = Path(tmp)
        os.chmod(folder, 0o700)
        (folder / "data").write_bytes(data)
        (folder / "data.sig").write_bytes(signature)
        return _gpgv([str(folder / "data.sig"), str(folder / "data")], key_files, folder, what)


def verify_clearsigned(text: bytes, key_files: Sequence[Path], what: str = "signed document") -> tuple[bytes, str]:
    """Check a clear-signed document (``InRelease``); its signed content (as gpgv gives it) and the fingerprint.

    Only the bytes the signature covers are returned, so nothing placed around the signed block can
    reach the caller.
    """
    with tempfile.TemporaryDirectory(prefix="mirrorkit-gpgv-") as tmp:
        folder = Path(tmp)
        os.chmod(folder, 0o700)
        (folder / "doc.asc").write_bytes(text)
        out = folder / "content"
        fingerprint = _gpgv(["--output", str(out), str(folder / "doc.asc")], key_files, folder, what)
        try:
            return out.read_bytes(), fingerprint
        except OSError:
            raise OperationError(f"{what}: gpgv gave no signed content") from None
