"""Ask the registry whether each destination repository may be written, before any byte moves.

Registries limit repository paths in their own ways — Quay allows ``org/repo``,
Harbor wants the project to exist, GitLab allows three levels below a project —
and say so only when a push reaches them, which for a large bundle is minutes
into the run and after other images have landed. Starting an upload
(``POST /v2/<repo>/blobs/uploads/``) is the cheapest request that meets the same
checks as a real push (name rules, project existence, push rights); the upload
is cancelled at once (``DELETE`` of its ``Location``). Every refusal is gathered,
so the user fixes all of them in one go.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mirrorkit.errors import AuthError, RegistryError
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.retry import GaveUpError
from mirrorkit.refs import Ref

HINTS = {
    "NAME_UNKNOWN": "create the project (Harbor: a project must exist before anything is pushed into it)",
    "NAME_INVALID": "the registry limits repository paths: plan with --max-path-depth N, or --mapping flatten",
    "DENIED": "the login may not push there: use an account with push rights on those repositories",
    "UNAUTHORIZED": "the login may not push there: use an account with push rights on those repositories",
}


@dataclass(frozen=True)
class Problem:
    """One destination repository the registry would not take, in its own words."""

    repository: str  # HOST/REPO
    code: str | None
    message: str


def probe(client: RegistryClient, registry: str, repository: str) -> Problem | None:
    """Start an upload into ``repository`` and cancel it; the refusal if there is one."""
    try:
        client.start_and_cancel_upload(registry, repository)
    except GaveUpError:
        raise                              # a registry that keeps failing refuses nothing: the run stops here
    except AuthError as exc:
        return Problem(f"{registry}/{repository}", exc.code or "DENIED", _words(exc))
    except RegistryError as exc:
        return Problem(f"{registry}/{repository}", exc.code, _words(exc))
    return None


def _words(exc: RegistryError) -> str:
    """The registry's answer without the request line the client puts first (the repository says it)."""
    text = str(exc)
    return text.split(": ", 1)[1] if text.startswith("POST ") and ": " in text else text


def probe_destinations(client: RegistryClient, refs: list[Ref], jobs: int = 4) -> list[Problem]:
    """Every destination repository refused by its registry (each probed once), in name order."""
    repos = sorted({(r.registry, r.repository) for r in refs})
    failing = threading.Event()         # once the registry keeps failing, the probes still queued ask nothing

    def one(registry: str, repository: str) -> Problem | None:
        if failing.is_set():
            return None
        try:
            return probe(client, registry, repository)
        except GaveUpError:
            failing.set()
            raise

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(repos) or 1))) as pool:
        found = list(pool.map(lambda rr: one(*rr), repos))
    return [p for p in found if p is not None]


def describe(problems: list[Problem]) -> str:
    """One line: every refused repository with the registry's code, then what to do about it."""
    parts = [f"{p.repository}: {p.message}" for p in problems]
    hints = [HINTS[c] for c in dict.fromkeys(p.code for p in problems if p.code) if c in HINTS]
    head = f"the registry refused {len(problems)} destination repositor{'y' if len(problems) == 1 else 'ies'}"
    tail = f"; hint: {'; '.join(hints)}" if hints else ""
    return f"{head} before anything was pushed: {'; '.join(parts)}{tail}"


def require_writable(client: RegistryClient, refs: list[Ref], jobs: int = 4) -> None:
    """Raise (exit 1) naming every refused destination; the call sites push nothing before it."""
    problems = probe_destinations(client, refs, jobs)
    if problems:
        raise RegistryError(describe(problems), code=problems[0].code)
