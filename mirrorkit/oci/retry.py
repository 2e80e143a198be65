"""The one retry policy: which failures are worth another try, and how long to keep trying.

Every network operation mirrorkit repeats goes through :func:`run`, exactly once
per operation: a request, a manifest read, a blob download, a blob upload. The
operations themselves send single attempts, so retries never nest (the old
upload loop around a retrying request could send 36 POSTs for one blob).

Transient (raise :class:`TransientError`): 5xx, 429 (``Retry-After`` honoured),
connection resets, cut bodies, a transfer with no progress for ``stall_timeout``
seconds. Everything else is final: 4xx, digest mismatches, a full disk, a name
that does not resolve.

Two bounds, both counted from the last progress (a byte kept, an operation done):

- the **outage budget** (``max_total``, 60 s; ``--retry-for DURATION``): a registry
  that refuses connections, resets them, or answers 5xx is restarting or failing
  over, and is retried until the budget is spent, so a rolling upgrade that takes it
  away for 5-60 s costs a pause, not the run. Operations that fail while another
  already waits on the same outage count from when the outage began, so a registry
  gone for good gives one line once the budget is spent, not once per operation;
- **attempts** (6): failures the registry answered that another try rarely cures
  (429 without end, a body cut again and again, a stall) end the operation sooner.
  ``MIRRORKIT_RETRY_ATTEMPTS`` bounds outages by attempts as well.

An upload session the registry forgot (it restarted) is started again without
counting as a failure at all (``TransientError(free=True)``); the budget still bounds it.
The default sleep ends at Ctrl-C (``mirrorkit.interrupt.sleep``): an operation waiting
out an outage stops at once.

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
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import httpx
import tenacity

from mirrorkit import interrupt
from mirrorkit.errors import InputError, RegistryError

T = TypeVar("T")
DEFAULT_STALL = 60.0
DEFAULT_BUDGET = 60.0


class GaveUpError(RegistryError):
    """Transient failures until the policy's bounds ran out: a registry failing, not one refusing."""


class TransientError(RegistryError):
    """A failure another attempt may cure; ``retry_after`` is the server's own wish, in seconds.

    ``outage``: the registry is away (connection refused or reset, 5xx): bounded by the
    outage budget rather than by attempts. ``free``: not a failure at all (a forgotten
    upload session started again): no attempt is counted and no wait taken.
    """

    def __init__(self, message: str, retry_after: float | None = None, *, status: int | None = None,
                 code: str | None = None, outage: bool = False, free: bool = False) -> None:
        super().__init__(message, code=code, status=status)
        self.retry_after = retry_after
        self.outage = outage or (status is not None and status >= 500)
        self.free = free


def is_outage(exc: BaseException) -> bool:
    """A connection refused, reset or cut: the server is away (restarting), not refusing us."""
    return isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError | httpx.ConnectTimeout)


class Outage:
    """When the current outage began (None: the last operation got through); shared by one client's operations."""

    def __init__(self) -> None:
        self._since: float | None = None
        self._lock = threading.Lock()

    def failed(self, now: float) -> None:
        with self._lock:
            if self._since is None:
                self._since = now

    def ended(self) -> None:
        self._since = None

    @property
    def since(self) -> float | None:
        return self._since


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6                 # answered failures (429, cut bodies, stalls) without progress before giving up
    max_total: float = DEFAULT_BUDGET  # the outage budget: seconds since the last progress before giving up
    outage_attempts: int = 0          # 0: outages bounded by max_total alone (MIRRORKIT_RETRY_ATTEMPTS sets it)
    backoff: float = 0.25             # first wait; doubles each time
    backoff_max: float = 2.0          # a registry back from a restart is found within this long
    jitter: float = 0.5               # up to this fraction is taken off each wait, so clients spread out
    stall_timeout: float = DEFAULT_STALL  # seconds without a byte before a transfer is cut and retried
    sleep: Callable[[float], None] = field(default=interrupt.sleep, compare=False, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)
    outage: Outage = field(default_factory=Outage, compare=False, repr=False)

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
        if "attempts" in values:
            values["outage_attempts"] = values["attempts"]      # set by hand: it bounds outages too
        if "backoff" in values:
            values["backoff_max"] = max(policy.backoff_max, float(values["backoff"]))  # type: ignore[arg-type]
        values.update(overrides)
        return replace(policy, **values)  # type: ignore[arg-type]

    def with_budget(self, seconds: float | None) -> RetryPolicy:
        """This policy with another outage budget (``--retry-for``); None keeps it."""
        return self if seconds is None else replace(self, max_total=seconds)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based): the server's
        ``Retry-After`` when it asks for longer than the schedule (a "0" must not make a tight loop
        of a whole outage budget)."""
        base = min(self.backoff * 2 ** (attempt - 1), self.backoff_max)
        # jitter below the schedule, never above it: clients still spread out, and the documented
        # backoff is the longest any wait gets (with jitter added on top, a 25 %-failing upstream
        # spent most of a pull waiting)
        own = base * (1 - random.uniform(0, self.jitter))  # noqa: S311 - spreading clients, not secrecy
        return own if retry_after is None else max(retry_after, own)


def run(policy: RetryPolicy, operation: Callable[[], T], progress: Callable[[], int] | None = None) -> T:
    """Call ``operation`` until it returns or fails for good.

    ``operation`` raises :class:`TransientError` for a failure worth another try.
    ``progress`` (bytes kept so far) resets the count: attempts and time are
    bounded since the last attempt that moved the transfer forward. Time is the
    clock's or the sleeps taken, whichever is more (an injected sleep still ends it).
    """
    marks = {"seen": progress() if progress else 0, "since": policy.clock(), "failures": 0, "outages": 0,
             "slept": 0.0}

    def spent(upcoming: float) -> float:
        since = marks["since"]
        began = policy.outage.since
        if marks["outages"] and began is not None:
            since = min(since, began)       # this outage began before this operation met it
        return max(policy.clock() - since, marks["slept"]) + upcoming

    def wait(state: tenacity.RetryCallState) -> float:
        # tenacity asks for the wait before it asks whether to stop: the accounting lives here
        now_progress = progress() if progress else 0
        if now_progress > marks["seen"]:
            marks.update(seen=now_progress, since=policy.clock(), failures=0, outages=0, slept=0.0)
            policy.outage.ended()
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if getattr(exc, "free", False):
            return retry_after or 0.0
        if getattr(exc, "outage", False):
            marks["outages"] += 1
            policy.outage.failed(policy.clock())
        else:
            marks["failures"] += 1
        delay = policy.delay(int(marks["failures"] + marks["outages"]), retry_after)
        marks["slept"] += delay
        return delay

    def stop(state: tenacity.RetryCallState) -> bool:
        upcoming = state.upcoming_sleep or 0.0
        return marks["failures"] >= policy.attempts or \
            bool(policy.outage_attempts and marks["outages"] >= policy.outage_attempts) or \
            spent(upcoming) > policy.max_total

    retrying = tenacity.Retrying(stop=stop, wait=wait, sleep=policy.sleep, reraise=True,
                                 retry=tenacity.retry_if_exception_type(TransientError))
    try:
        result = retrying(operation)
    except TransientError as exc:
        n = int(marks["failures"] + marks["outages"])
        within = f" within the {policy.max_total:g} s --retry-for budget" if marks["outages"] and \
            not (policy.outage_attempts and marks["outages"] >= policy.outage_attempts) else ""
        raise GaveUpError(f"{exc} (gave up after {n} attempt{'s' if n != 1 else ''}{within})",
                          code=exc.code, status=exc.status) from None
    policy.outage.ended()
    return result


_DURATION = re.compile(r"(?i)\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*")


def parse_duration(text: str, what: str = "--retry-for") -> float:
    """``90``, ``90s``, ``2m``, ``1h`` or ``500ms`` as seconds (above 0, at most a day)."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise InputError(f"{what} {text!r}: expected a duration such as 90s, 5m or 1h")
    unit = (match.group(2) or "s").lower()
    seconds = float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600}[unit]
    if not 0 < seconds <= 86400:
        raise InputError(f"{what} {text!r}: expected a duration above 0 and at most 24h")
    return seconds


_NAME_RESOLUTION = ("Name or service not known", "nodename nor servname", "Temporary failure in name resolution",
                    "No address associated with hostname", "getaddrinfo failed")


def is_name_resolution_failure(exc: BaseException) -> bool:
    text = str(exc)
    return any(marker in text for marker in _NAME_RESOLUTION)
