"""One exception tree for the whole library; the CLI maps it to exit codes.

    MirrorkitError                 anything mirrorkit reports on purpose
    ├── InputError        (exit 2) the user's input is wrong: a file, a flag, a reference
    │   ├── ReferenceFormatError   an image reference that does not parse
    │   ├── NodeSpecError          a --node value or node JSON that does not parse
    │   ├── UnknownReleaseError    no image list for that release (and no --chart)
    │   └── MappingCollisionError  two sources would land on one destination
    └── OperationError    (exit 1) something was checked and failed
        ├── DiskFullError          ENOSPC: never retried; names the work folder a rerun resumes from
        └── RegistryError          a registry refused, failed, or could not be reached
            ├── AuthError          credentials missing or refused
            ├── NotFoundError      manifest or blob not there
            └── UnsupportedError   the registry refuses the operation itself (deletes disabled: 405)

Lower layers (httpx, yaml, json, subprocess) are translated into these at the
boundary where they happen, so callers never see a foreign exception for a
user's mistake or a network fault.
"""

from __future__ import annotations

from pathlib import Path


class MirrorkitError(Exception):
    """Base of every error mirrorkit raises on purpose."""

    exit_code = 1


class InputError(MirrorkitError):
    exit_code = 2


class ReferenceFormatError(InputError):
    pass


class NodeSpecError(InputError):
    pass


class UnknownReleaseError(InputError):
    pass


class MappingCollisionError(InputError):
    pass


class OperationError(MirrorkitError):
    exit_code = 1


class DiskFullError(OperationError):
    """A full disk is final (retrying cannot help), but the work done so far is kept for a rerun.

    ``work`` is the folder a rerun resumes from, once known (mirrorkit.files.disk_full sets it).
    """

    work: Path | None = None


class RegistryError(OperationError):
    """``code`` is the registry's own error code (``NAME_INVALID``, ``DENIED``, ...) when it gave one;
    ``status`` the HTTP status of the answer, when there was one (None: no answer, a bad body...).

    Callers decide on these fields, never on the message's text.
    """

    def __init__(self, message: str, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

    @property
    def refused(self) -> bool:
        """The registry answered and said no (a 4xx): not a registry failing or away."""
        return self.status is not None and 400 <= self.status < 500


class AuthError(RegistryError):
    @property
    def refused(self) -> bool:
        """Credentials missing or refused, by the registry or its token service: always a "no", never an outage."""
        return True


class NotFoundError(RegistryError):
    pass


class UnsupportedError(RegistryError):
    pass
