"""Public keys given with ``--verify-key``: loaded once, named by a stable fingerprint.

The fingerprint is the SHA-256 of the key's DER SubjectPublicKeyInfo, so the same key
gives the same name whether it came as PEM or from a KMS export, and a lock can say
which key verified an image without carrying the key itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from mirrorkit.errors import InputError
from mirrorkit.oci.manifests import sha256_digest

MAX_KEY_FILE = 64 * 1024
SUPPORTED_CURVES = {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384"}
PublicKeyType = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


@dataclass(frozen=True)
class PublicKey:
    path: str
    kind: str
    fingerprint: str
    pem: str = field(repr=False)
    key: PublicKeyType = field(repr=False, compare=False)

    def verifies(self, signature: bytes, payload: bytes) -> bool:
        """Does ``signature`` sign ``payload`` under this key, as cosign signs?

        cosign hashes with SHA-256 for every key type by default; SHA-384 is also
        accepted for P-384 keys (sigstore's default for that curve), RSA may be
        PKCS#1 v1.5 (cosign's default) or PSS.
        """
        key = self.key
        try:
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, payload)
                return True
            if isinstance(key, ec.EllipticCurvePublicKey):
                algos: list[hashes.HashAlgorithm] = [hashes.SHA256()]
                if key.curve.name == "secp384r1":
                    algos.append(hashes.SHA384())
                for algo in algos:
                    try:
                        key.verify(signature, payload, ec.ECDSA(algo))
                        return True
                    except InvalidSignature:
                        continue
                return False
            for pad in (padding.PKCS1v15(),
                        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)):
                try:
                    key.verify(signature, payload, pad, hashes.SHA256())
                    return True
                except InvalidSignature:
                    continue
            return False
        except (InvalidSignature, ValueError):
            return False


def fingerprint(key: PublicKeyType) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return sha256_digest(der)


def key_kind(key: PublicKeyType, where: str) -> str:
    """``p256``/``p384``/``rsa-BITS``/``ed25519`` for a key mirrorkit accepts, or a one-line InputError.

    One rule for public keys (--verify-key, --bundle-key) and for the public half of a private one
    (--sign-key, --site-key): a key that could sign must also be one that can be checked.
    """
    if isinstance(key, ec.EllipticCurvePublicKey):
        kind = SUPPORTED_CURVES.get(key.curve.name)
        if kind is None:
            raise InputError(f"{where}: ECDSA curve {key.curve.name} is not supported (P-256 or P-384)")
        return kind
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise InputError(f"{where}: RSA key of {key.key_size} bits is too small (2048 or more)")
        return f"rsa-{key.key_size}"
    return "ed25519"


def parse_key(data: bytes, where: str) -> PublicKey:
    """A PEM public key (ECDSA P-256/P-384, RSA of 2048 bits or more, Ed25519), or a one-line InputError."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # the library's first sentence only: its messages go on to a URL and a dump of its error stack
        reason = str(exc).split(". ", 1)[0].splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{where}: not a PEM public key ({reason[:120]}); expected a file holding "
                         "-----BEGIN PUBLIC KEY-----") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise InputError(f"{where}: unsupported key type {type(key).__name__} (ECDSA, RSA or Ed25519)")
    kind = key_kind(key, where)
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return PublicKey(path=where, kind=kind, fingerprint=fingerprint(key), pem=pem, key=key)


def load_key(path: str | Path) -> PublicKey:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise InputError(f"{p}: cannot read key file: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE:
        raise InputError(f"{p}: key file is larger than {MAX_KEY_FILE} bytes; expected a PEM public key")
    return parse_key(data, str(p))


def load_keys(paths: list[str] | tuple[str, ...]) -> list[PublicKey]:
    """Every ``--verify-key``, each read once; the same key given twice counts once."""
    out: dict[str, PublicKey] = {}
    for path in paths:
        key = load_key(path)
        out.setdefault(key.fingerprint, key)
    return list(out.values())
