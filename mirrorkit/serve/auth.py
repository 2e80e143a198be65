"""Basic auth from an htpasswd file of bcrypt hashes (what ``htpasswd -B`` and docker-registry use).

bcrypt is slow on purpose (tens of milliseconds a check): a pull makes dozens of requests,
so a password once checked is remembered, as a SHA-256 of user and password, never the
password itself, for as long as the server runs. Checks run in a worker thread so the
event loop keeps serving others meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path

import bcrypt

from mirrorkit.errors import InputError

BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
MAX_FILE = 1 << 20
MAX_REMEMBERED = 1024


class Htpasswd:
    """Users and their bcrypt hashes; ``check`` answers whether a Basic credential is one of them."""

    def __init__(self, users: dict[str, bytes]) -> None:
        self.users = users
        self._good: set[bytes] = set()

    @classmethod
    def load(cls, path: Path) -> Htpasswd:
        try:
            if path.stat().st_size > MAX_FILE:
                raise InputError(f"{path}: larger than {MAX_FILE} bytes; not an htpasswd file")
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read htpasswd file {path}: {getattr(exc, 'strerror', None) or exc}") from None
        users: dict[str, bytes] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep or not user:
                raise InputError(f"{path}:{number}: expected USER:HASH")
            if not hashed.startswith(BCRYPT_PREFIXES):
                raise InputError(f"{path}:{number}: user {user!r} has no bcrypt hash (make one with htpasswd -B)")
            users[user] = hashed.encode()
        if not users:
            raise InputError(f"{path}: no users")
        return cls(users)

    def check(self, header: str | None) -> str | None:
        """The user a ``Authorization: Basic ...`` header proves, or None. Blocking: run it in a thread."""
        parsed = parse_basic(header)
        if parsed is None:
            return None
        user, password = parsed
        hashed = self.users.get(user)
        if hashed is None:
            return None
        key = hashlib.sha256(user.encode() + b"\0" + password.encode()).digest()
        if key in self._good:
            return user
        try:
            ok = bcrypt.checkpw(password.encode(), hashed)
        except ValueError:
            return None
        if ok:
            if len(self._good) >= MAX_REMEMBERED:
                self._good.clear()
            self._good.add(key)
            return user
        return None

    def remembered(self, header: str | None) -> str | None:
        """The user when this exact credential was checked before (no bcrypt: safe on the event loop)."""
        parsed = parse_basic(header)
        if parsed is None or parsed[0] not in self.users:
            return None
        key = hashlib.sha256(parsed[0].encode() + b"\0" + parsed[1].encode()).digest()
        return parsed[0] if key in self._good else None


def parse_basic(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = text.partition(":")
    return (user, password) if sep else None
