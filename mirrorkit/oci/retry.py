"""The one retry policy: which failures are worth another try, and how long to keep trying.

Every network operation mirrorkit repeats goes through :func:`run`, exactly once
per operation: a request, a manifest read, a blob download, a blob upload. The
operations themselves send single attempts, so retries never nest (the old
upload loop around a retrying request could send 36 POSTs for one blob).

Transient (raise :class:`TransientError`): 5xx, 429 (``Retry-After`` honoured),
connection resets, cut bodies, a transfer with no progress for ``stall_timeout``
seconds. Everything else is final: 4xx, digest mismatches, a full disk, a name
that does not resolve. Attempts are bounded, and so is the time since the last
progress, so a registry gone for good gives one line within about a minute,
while a long download on a link that drops every few minutes still finishes.

Two bounded loops sit beside the policy, never inside an operation it retries:

- a blob download that completes but hashes wrong (a stale partial file, a registry
  that served another object, a flipped bit) is fetched once more from its first
  byte, as a second whole operation under the policy, before the blob is refused
  (``mirrorkit.oci.download.fetch_blob``): at most two downloads, each retried;
- a manifest the registry refuses because something it names is not there yet
  (``MANIFEST_BLOB_UNKNOWN`` and friends: another run still writing it) ends the
  manifest operation; the engine copies the blobs again, each blob operation under
  its own policy, then runs the manifest operation again, at most ``attempts``
  rounds with the policy's backoff between them (``mirrorkit.transfer.engine``).

The clock and the sleep are part of the policy so tests inject them; the
``MIRRORKIT_RETRY_*`` and ``MIRRORKIT_STALL_TIMEOUT`` settings let a test (or a
user on a slow link) tune a whole command without touching code.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import tenacity

from mirrorkit.errors import InputError, RegistryError

T = TypeVar("T")
DEFAULT_STALL = 60.0


class GaveUpError(RegistryError):
    """Transient failures until the policy's bounds ran out: a registry failing, not one refusing."""


class TransientError(RegistryError):
    """A failure another attempt may cure; ``retry_after`` is the server's own wish, in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6                 # attempts without progress before giving up
    max_total: float = 60.0           # seconds since the last progress before giving up
    backoff: float = 0.25             # first wait; doubles each time
    backoff_max: float = 8.0
    jitter: float = 0.5               # up to this fraction is taken off each wait, so clients spread out
    stall_timeout: float = DEFAULT_STALL  # seconds without a byte before a transfer is cut and retried
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)

    @classmethod
    def from_env(cls, **overrides: object) -> RetryPolicy:
        """The default policy, with ``MIRRORKIT_RETRY_ATTEMPTS``, ``MIRRORKIT_RETRY_BACKOFF``,
        ``MIRRORKIT_RETRY_MAX_TOTAL`` and ``MIRRORKIT_STALL_TIMEOUT`` (or the older
        ``MIRRORKIT_HTTP_TIMEOUT``) applied when set."""
        policy = cls()
        settings = {"attempts": "MIRRORKIT_RETRY_ATTEMPTS", "backoff": "MIRRORKIT_RETRY_BACKOFF",
                    "max_total": "MIRRORKIT_RETRY_MAX_TOTAL", "stall_timeout": "MIRRORKIT_STALL_TIMEOUT"}
        values: dict[str, object] = {}
        for name, var in settings.items():
            raw = os.environ.get(var, "").strip()
            if not raw and name == "stall_timeout":
                var, raw = "MIRRORKIT_HTTP_TIMEOUT", os.environ.get("MIRRORKIT_HTTP_TIMEOUT", "").strip()
            if not raw:
                continue
            try:
                number = float(raw)
            except ValueError:
                raise InputError(f"{var}={raw!r}: expected a number") from None
            if not 0 < number <= 3600:
                raise InputError(f"{var}={raw!r}: expected a number above 0 and at most 3600")
            values[name] = max(1, int(number)) if name == "attempts" else number
        if "backoff" in values:
            values["backoff_max"] = max(policy.backoff_max, float(values["backoff"]))  # type: ignore[arg-type]
        values.update(overrides)
        return replace(policy, **values)  # type: ignore[arg-type]

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return retry_after
        base = min(self.backoff * 2 ** (attempt - 1), self.backoff_max)
        # jitter below the schedule, never above it: clients still spread out, and the documented
        # backoff is the longest any wait gets (with jitter added on top, a 25 %-failing upstream
        # spent most of a pull waiting)
        return base * (1 - random.uniform(0, self.jitter))  # noqa: S311 - spreading clients, not secrecy


def run(policy: RetryPolicy, operation: Callable[[], T], progress: Callable[[], int] | None = None) -> T:
    """Call ``operation`` until it returns or fails for good.

    ``operation`` raises :class:`TransientError` for a failure worth another try.
    ``progress`` (bytes kept so far) resets the count: attempts and time are
    bounded since the last attempt that moved the transfer forward.
    """
    marks = {"seen": progress() if progress else 0, "since": policy.clock(), "failures": 0}

    def wait(state: tenacity.RetryCallState) -> float:
        # tenacity asks for the wait before it asks whether to stop: the accounting lives here
        now_progress = progress() if progress else 0
        if now_progress > marks["seen"]:
            marks.update(seen=now_progress, since=policy.clock(), failures=0)
        marks["failures"] += 1
        exc = state.outcome.exception() if state.outcome else None
        return policy.delay(int(marks["failures"]), getattr(exc, "retry_after", None))

    def stop(state: tenacity.RetryCallState) -> bool:
        return marks["failures"] >= policy.attempts or \
            policy.clock() - marks["since"] + (state.upcoming_sleep or 0.0) > policy.max_total

    retrying = tenacity.Retrying(stop=stop, wait=wait, sleep=policy.sleep, reraise=True,
                                 retry=tenacity.retry_if_exception_type(TransientError))
    try:
        return retrying(operation)
    except TransientError as exc:
        n = int(marks["failures"])
        raise GaveUpError(f"{exc} (gave up after {n} attempt{'s' if n != 1 else ''})") from None


_NAME_RESOLUTION = ("Name or service not known", "nodename nor servname", "Temporary failure in name resolution",
                    "No address associated with hostname", "getaddrinfo failed")


def is_name_resolution_failure(exc: BaseException) -> bool:
    text = str(exc)
    return any(marker in text for marker in _NAME_RESOLUTION)
