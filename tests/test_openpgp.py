"""Signature checks by the real gpgv, with keys made by the real gpg."""

from __future__ import annotations

from pathlib import Path

import pytest
from kit.pgpkey import PGPKey, make_key

from mirrorkit.errors import InputError, OperationError
from mirrorkit.packages.openpgp import verify_clearsigned, verify_detached

DATA = b"Origin: Test\nSuite: noble\nSHA256:\n 0123 10 main/binary-amd64/Packages\n"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[PGPKey, PGPKey]:
    base = tmp_path_factory.mktemp("pgp")
    return make_key(base / "good", "Good Archive"), make_key(base / "other", "Other Archive")


def test_detached_armored_and_binary_keys(keys: tuple[PGPKey, PGPKey]) -> None:
    good, _ = keys
    for armor in (True, False):
        sig = good.detach_sign(DATA, armor=armor)
        assert verify_detached(DATA, sig, [good.public_armored]) == good.fingerprint
        assert verify_detached(DATA, sig, [good.public_binary]) == good.fingerprint


def test_detached_refusals(keys: tuple[PGPKey, PGPKey]) -> None:
    good, other = keys
    sig = good.detach_sign(DATA)
    with pytest.raises(OperationError, match="BAD signature"):
        verify_detached(DATA + b"x", sig, [good.public_armored], what="Release.gpg")
    with pytest.raises(OperationError, match="not signed by any of the given keys"):
        verify_detached(DATA, sig, [other.public_armored])
    with pytest.raises(OperationError, match="Release.gpg"):
        verify_detached(DATA, b"not a signature", [good.public_armored], what="Release.gpg")
    # a signature by an unknown key beside a good one still passes (Debian signs with two keys)
    assert verify_detached(DATA, sig, [other.public_armored, good.public_binary]) == good.fingerprint


def test_bad_key_file_is_input_error(tmp_path: Path, keys: tuple[PGPKey, PGPKey]) -> None:
    good, _ = keys
    sig = good.detach_sign(DATA)
    with pytest.raises(InputError, match="cannot read key file"):
        verify_detached(DATA, sig, [tmp_path / "absent.gpg"])
    empty = tmp_path / "empty.gpg"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        verify_detached(DATA, sig, [empty])


def test_clearsigned_gives_only_signed_content(keys: tuple[PGPKey, PGPKey]) -> None:
    good, other = keys
    doc = good.clearsign(DATA)
    content, fpr = verify_clearsigned(doc, [good.public_armored])
    assert fpr == good.fingerprint
    assert content == DATA
    # text outside the signed block never reaches the caller
    content, _ = verify_clearsigned(b"Injected: yes\n\n" + doc, [good.public_armored])
    assert b"Injected" not in content
    tampered = doc.replace(b"Suite: noble", b"Suite: nobel")
    with pytest.raises(OperationError, match="BAD signature"):
        verify_clearsigned(tampered, [good.public_armored], what="InRelease")
    with pytest.raises(OperationError, match="not signed by any"):
        verify_clearsigned(doc, [other.public_binary])
    with pytest.raises(OperationError, match="no OpenPGP signature|not valid"):
        verify_clearsigned(DATA, [good.public_armored])


def test_real_debian_inrelease_with_archive_keyring() -> None:
    lists = sorted(Path("/var/lib/apt/lists").glob("*_InRelease"))
    assert lists, "run apt-get update: /var/lib/apt/lists has no InRelease"
    keyring = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    content, fpr = verify_clearsigned(lists[0].read_bytes(), [keyring])
    assert b"SHA256:" in content and len(fpr) == 40
