"""Image references as frozen values.

The grammar follows the distribution project's reference grammar, so a name
mirrorkit accepts is a name every registry and runtime accepts. Normalisation
follows Docker's rules (``ubuntu`` is ``docker.io/library/ubuntu``) because
containerd and the kubelet apply the same rules when a pod names an image.
Pure: no I/O, imports nothing of ours but errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from mirrorkit.errors import ReferenceFormatError

DEFAULT_REGISTRY = "docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
MAX_NAME = 255


def is_digest(value: str) -> bool:
    """True for the only digest form mirrorkit trusts: ``sha256:`` and 64 lowercase hex."""
    return bool(DIGEST_RE.match(value))


def check_digest(value: object, what: str = "digest") -> str:
    if not isinstance(value, str) or not is_digest(value):
        raise ReferenceFormatError(f"invalid {what} {value!r}: expected sha256:<64 hex digits>")
    return value


def check_tag(value: str) -> str:
    if not isinstance(value, str) or not _TAG_RE.match(value):
        raise ReferenceFormatError(f"invalid tag {value!r}")
    return value


def check_host(host: str, what: str) -> str:
    """``HOST[:PORT]`` with a port in 1..65535 and DNS-sized labels; the one check every host flag uses."""
    if not host or not _DOMAIN_RE.match(host):
        raise ReferenceFormatError(f"invalid {what} {host!r}: expected HOST[:PORT]")
    name, _, port = host.rpartition(":") if not host.endswith("]") and ":" in host else (host, "", "")
    if port and not 0 < int(port) < 65536:
        raise ReferenceFormatError(f"invalid {what} {host!r}: port {port} is out of range")
    if any(len(label) > 63 for label in (name or host).split(".")) or len(host) > 255:
        raise ReferenceFormatError(f"invalid {what} {host!r}: name too long")
    return host


def _looks_like_domain(first: str) -> bool:
    return "." in first or ":" in first or first == "localhost" or first != first.lower()


@dataclass(frozen=True, order=True)
class Ref:
    """``registry/repository[:tag][@digest]``, always fully qualified."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Ref:
        if not isinstance(text, str) or not text.strip():
            raise ReferenceFormatError(f"invalid image reference {text!r}: empty")
        raw = text.strip()
        if any(c.isspace() for c in raw):
            raise ReferenceFormatError(f"invalid image reference {text!r}: contains whitespace")
        name, digest = raw, None
        if "@" in raw:
            name, digest = raw.split("@", 1)
            if not is_digest(digest):
                raise ReferenceFormatError(
                    f"invalid image reference {text!r}: digest must be sha256:<64 hex digits>"
                )
        tag = None
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            name, tag = name[:colon], name[colon + 1 :]
            if not _TAG_RE.match(tag):
                raise ReferenceFormatError(f"invalid image reference {text!r}: bad tag {tag!r}")
        first, _, rest = name.partition("/")
        if rest and _looks_like_domain(first):
            registry, repository = first, rest
        else:
            registry, repository = DEFAULT_REGISTRY, name
        if registry in ("index.docker.io", "registry-1.docker.io"):
            registry = DEFAULT_REGISTRY
        if not _DOMAIN_RE.match(registry):
            raise ReferenceFormatError(f"invalid image reference {text!r}: bad registry {registry!r}")
        check_host(registry, f"registry in {text!r}")
        if registry == DEFAULT_REGISTRY and "/" not in repository:
            repository = f"library/{repository}"
        if not _REPO_RE.match(repository):
            raise ReferenceFormatError(
                f"invalid image reference {text!r}: bad repository {repository!r} "
                "(lowercase letters, digits and . _ - separators only)"
            )
        if len(registry) + 1 + len(repository) > MAX_NAME:
            raise ReferenceFormatError(f"invalid image reference {text!r}: name too long")
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry, repository, tag, digest)

    @property
    def name(self) -> str:
        """``registry/repository``, what a registry API call is scoped to."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/`` in the API: the digest if known, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str | None) -> Ref:
        return replace(self, digest=check_digest(digest) if digest else None)

    def with_tag(self, tag: str | None) -> Ref:
        return replace(self, tag=check_tag(tag) if tag else None)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


@dataclass(frozen=True)
class RegistryTarget:
    """``HOST[:PORT][/PREFIX]``: where a private registry takes mirrored images."""

    host: str
    prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> RegistryTarget:
        raw = (text or "").strip().rstrip("/")
        for scheme in ("https://", "http://"):
            if raw.startswith(scheme):
                raise ReferenceFormatError(
                    f"invalid registry {text!r}: give HOST[:PORT][/PREFIX] without a scheme "
                    "(use --insecure HOST for plain HTTP)"
                )
        host, _, prefix = raw.partition("/")
        if not host or not _DOMAIN_RE.match(host):
            raise ReferenceFormatError(f"invalid registry {text!r}: expected HOST[:PORT][/PREFIX]")
        check_host(host, "registry")
        if prefix and not _REPO_RE.match(prefix):
            raise ReferenceFormatError(
                f"invalid registry {text!r}: prefix {prefix!r} must be lowercase path components"
            )
        return cls(host, prefix)

    def join(self, path: str) -> str:
        """Repository path under the prefix."""
        return f"{self.prefix}/{path}" if self.prefix else path

    def __str__(self) -> str:
        return f"{self.host}/{self.prefix}" if self.prefix else self.host
