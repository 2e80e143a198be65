"""Bundle (lock) signatures: the chain of custody across the air gap.

The ``.sha256`` files travel on the same medium as the bundle, so whoever can change
the bundle can change them too. The lock (``bundle.yaml``) names every blob, chart,
artifact and digest the bundle carries, and every byte is checked against it on the far
side, so a signature over the lock's exact bytes signs the whole bundle.

The format is cosign's blob signature, so ``cosign verify-blob`` checks it too: the
base64 (standard alphabet, no newline) of a signature over the raw lock bytes, made as
``cosign sign-blob --key … --tlog-upload=false`` makes it for each key type:

- ECDSA P-256: ECDSA over SHA-256 (ASN.1 DER), P-384: over SHA-384 (sigstore's default for
  that curve; ``cosign verify-blob`` then needs ``--signature-digest-algorithm sha384``);
- Ed25519: pure Ed25519 over the bytes (cosign uses Ed25519ph only for signatures it
  uploads to a transparency log, and an air-gapped bundle uploads nothing);
- RSA (2048 bits or more): PKCS#1 v1.5 over SHA-256.

The signature travels inside every volume (``bundle.yaml.sig`` right after
``index.json``) and beside the bundle (``NAME.lock.yaml.sig`` next to ``NAME.lock.yaml``).
Who signed and when is written into the lock (``signing:``) before it is signed, so it
is covered by the signature and cannot be swapped on its own.

Checking reads only the raw lock and signature (mirrorkit.bundle.volumescan.lock_heads):
nothing in the lock is believed until its signature holds under one of the given keys.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from mirrorkit.errors import InputError, OperationError
from mirrorkit.lock import LockSigning
from mirrorkit.trust.keys import MAX_KEY_FILE, PublicKey, fingerprint, key_kind, load_key

PASSWORD_ENV = "MIRRORKIT_SIGN_KEY_PASSWORD"
SIGNATURE_SUFFIX = ".sig"
MAX_SIGNATURE = 64 << 10
MAX_LOCK = 64 << 20
PrivateKeyType = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
_CLAIMED = re.compile(rb"^signing:\n  key_fingerprint: (sha256:[0-9a-f]{64})$", re.MULTILINE)


@dataclass(frozen=True)
class Signer:
    """The key a lock signature verified under."""

    fingerprint: str
    key_type: str


@dataclass(frozen=True)
class SignedLock:
    """A bundle whose lock signature held: the signer, when it signed (as the signed lock says), the
    lock's SHA-256 (so a reader can make sure it reads the very bytes that were checked)."""

    where: str
    signer: Signer
    signed_at: str
    lock_sha256: str


@dataclass(frozen=True)
class SigningKey:
    """A private key given with ``--sign-key``, loaded once (before any work starts)."""

    path: str
    key_type: str
    fingerprint: str
    key: PrivateKeyType = field(repr=False, compare=False)

    def sign(self, data: bytes) -> bytes:
        key = self.key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            algo: hashes.HashAlgorithm = hashes.SHA384() if key.curve.name == "secp384r1" else hashes.SHA256()
            return key.sign(data, ec.ECDSA(algo))
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def record(self, now: dt.datetime | None = None) -> LockSigning:
        """What the lock says about its signing, written into it before it is signed."""
        when = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        return LockSigning(self.fingerprint, self.key_type, when.isoformat().replace("+00:00", "Z"))


def load_signing_key(path: str | Path) -> SigningKey:
    """A PEM private key (PKCS#8, or the traditional EC / RSA forms), or a one-line InputError.

    An encrypted key's password comes from ``MIRRORKIT_SIGN_KEY_PASSWORD``, never argv.
    cosign's own encrypted format (``cosign generate-key-pair``) is not read: generate the
    key as PEM and ``cosign import-key-pair`` it for cosign (see README).
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise InputError(f"{p}: cannot read signing key: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE:
        raise InputError(f"{p}: key file is larger than {MAX_KEY_FILE} bytes; expected a PEM private key")
    if b"SIGSTORE PRIVATE KEY" in data or b"COSIGN PRIVATE KEY" in data:
        raise InputError(f"{p}: cosign's encrypted key format is not supported; use a PEM (PKCS#8) private key "
                         "and cosign import-key-pair it for cosign")
    secret = os.environ.get(PASSWORD_ENV)
    try:
        key = serialization.load_pem_private_key(data, password=secret.encode() if secret else None)
    except TypeError:
        raise InputError(f"{p}: the private key is encrypted: set {PASSWORD_ENV}" if not secret
                         else f"{p}: the private key is not encrypted; unset {PASSWORD_ENV}") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        reason = str(exc).split(". ", 1)[0].splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{p}: not a PEM private key, or a wrong password ({reason[:120]})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise InputError(f"{p}: unsupported key type {type(key).__name__} (ECDSA, RSA or Ed25519)")
    return SigningKey(str(p), key_kind(key.public_key(), str(p)), fingerprint(key.public_key()), key)


def sign_lock(lock_bytes: bytes, key_path: str | Path | SigningKey) -> str:
    """cosign's blob signature over exactly ``lock_bytes``: base64 text, no newline."""
    key = key_path if isinstance(key_path, SigningKey) else load_signing_key(key_path)
    return base64.b64encode(key.sign(lock_bytes)).decode("ascii")


def _keys(key_paths: Sequence[str | Path | PublicKey]) -> list[PublicKey]:
    out: dict[str, PublicKey] = {}
    for k in key_paths:
        key = k if isinstance(k, PublicKey) else load_key(k)
        out.setdefault(key.fingerprint, key)
    if not out:
        raise InputError("no --bundle-key given")
    return list(out.values())


def _short(fp: str) -> str:
    return fp[:19] + "…"


def check_lock_signature(lock_bytes: bytes, signature_text: str | bytes | None,
                         key_paths: Sequence[str | Path | PublicKey], where: str = "bundle") -> Signer:
    """The key (one of ``key_paths``) the lock signature verifies under, or a one-line OperationError.

    Refused: no signature, a malformed one, a lock changed after signing, a lock signed
    by another key. The last two look the same to the mathematics; the lock's own
    ``signing:`` claim (read only to word the message) tells the user which is likelier.
    """
    keys = _keys(key_paths)
    names = " or ".join(_short(k.fingerprint) for k in keys)
    if signature_text is None:
        raise OperationError(f"{where}: the bundle is not signed (no lock signature); --bundle-key accepts only "
                             "a bundle signed with pull-bundle --sign-key")
    raw = signature_text.encode() if isinstance(signature_text, str) else signature_text
    try:
        signature = base64.b64decode(b"".join(raw.split()), validate=True)
    except (binascii.Error, ValueError):
        raise OperationError(f"{where}: the lock signature is not base64: not a cosign blob signature") from None
    for key in keys:
        if key.verifies(signature, lock_bytes):
            return Signer(key.fingerprint, key.kind)
    claimed = _CLAIMED.search(lock_bytes)
    given = {k.fingerprint for k in keys}
    if claimed and claimed.group(1).decode() not in given:
        raise OperationError(f"{where}: signed by another key ({_short(claimed.group(1).decode())}), "
                             f"not by {names}")
    if claimed:
        raise OperationError(f"{where}: the lock was changed after it was signed (its signature no longer "
                             f"verifies under {names})")
    raise OperationError(f"{where}: the lock signature does not verify under {names}: signed by another key, "
                         "or the lock was changed after signing")


def signature_beside(lock_path: str | Path) -> Path:
    """``NAME.lock.yaml`` -> ``NAME.lock.yaml.sig``: the copy ``cosign verify-blob`` reads."""
    p = Path(lock_path)
    return p.with_name(p.name + SIGNATURE_SUFFIX)


def _read_small(path: Path, cap: int) -> bytes | None:
    try:
        with path.open("rb") as fh:
            data = fh.read(cap + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > cap:
        raise OperationError(f"{path}: larger than the {cap} bytes allowed")
    return data


def _is_lock_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".yaml", ".yml", ".json"))


def _signed_at(lock_bytes: bytes) -> str:
    """The signing time the (now verified) lock records."""
    match = re.search(rb"^  signed_at: '?([0-9T:+\-Z. ]{1,40})'?$", lock_bytes, re.MULTILINE)
    return match.group(1).decode() if match else ""


def check_bundle(paths: str | Path | Sequence[str | Path],
                 key_paths: Sequence[str | Path | PublicKey]) -> SignedLock:
    """Check a bundle's lock signature before anything else of it is read.

    ``paths``: a bundle tar (or one volume of a split bundle), all its volumes, an unpacked
    bundle folder, or a lock file ``NAME.lock.yaml`` with ``NAME.lock.yaml.sig`` beside it.
    Every given volume must carry the same lock and signature. Returns who signed, or raises
    a one-line OperationError (exit 1); an unreadable key is an InputError (exit 2).
    """
    from mirrorkit.bundle.volumescan import lock_heads

    keys = _keys(key_paths)               # a bad key file is a usage error before any bundle is read
    given = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not given:
        raise InputError("no bundle given")
    if len(given) == 1 and _is_lock_file(given[0]):
        where = str(given[0])
        lock_bytes = _read_small(given[0], MAX_LOCK) or b""
        sig = _read_small(signature_beside(given[0]), MAX_SIGNATURE)
    else:
        heads = lock_heads(given)
        first = heads[0]
        for head in heads[1:]:
            if head.lock != first.lock or head.signature != first.signature:
                raise OperationError(f"{first.where} and {head.where} carry different locks or lock signatures")
        where, lock_bytes, sig = first.where, first.lock, first.signature
    signer = check_lock_signature(lock_bytes, sig, keys, where)
    return SignedLock(where, signer, _signed_at(lock_bytes), hashlib.sha256(lock_bytes).hexdigest())
