"""The one retry policy, with an injected clock and sleep, and the client's single-loop operations on it.

httpx.MockTransport stands in for the registry where a real one adds nothing: these
are the exact request sequences (how many POSTs, which Range, which Content-Range).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from mirrorkit.errors import InputError, OperationError, RegistryError
from mirrorkit.oci.client import RegistryClient
from mirrorkit.oci.credentials import CredentialStore
from mirrorkit.oci.download import fetch_blob
from mirrorkit.oci.layout import BlobStore
from mirrorkit.oci.retry import RetryPolicy, TransientError, run
from mirrorkit.oci.transport import Endpoints
from mirrorkit.refs import Ref

DATA = bytes(range(256)) * 400
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
REF = Ref.parse("reg.example/team/app:v1")


class Clock:
    """Time that moves only when the policy sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def policy(self, **kw: float) -> RetryPolicy:
        return RetryPolicy(jitter=0.0, sleep=self.sleep, clock=lambda: self.now, **kw)  # type: ignore[arg-type]


def failing(times: int, exc: Exception | None = None) -> Callable[[], str]:
    calls = [0]

    def op() -> str:
        calls[0] += 1
        if calls[0] <= times:
            raise exc or TransientError("HTTP 503")
        return "done"
    return op


def test_backoff_doubles_and_is_capped() -> None:
    clock = Clock()
    assert run(clock.policy(attempts=6, backoff=0.5, backoff_max=2.0), failing(5)) == "done"
    assert clock.sleeps == [0.5, 1.0, 2.0, 2.0, 2.0]


def test_jitter_stays_within_its_fraction() -> None:
    clock = Clock()
    policy = RetryPolicy(jitter=0.5, sleep=clock.sleep, clock=lambda: clock.now, backoff=1.0, backoff_max=1.0)
    run(policy, failing(4))
    assert all(0.5 <= s <= 1.0 for s in clock.sleeps) and len(set(clock.sleeps)) > 1


def test_retry_after_is_honoured() -> None:
    clock = Clock()
    run(clock.policy(), failing(1, TransientError("HTTP 429", retry_after=7.0)))
    assert clock.sleeps == [7.0]


def test_attempts_are_bounded_and_the_cause_comes_first() -> None:
    clock = Clock()
    with pytest.raises(RegistryError) as info:
        run(clock.policy(attempts=3), failing(100))
    assert str(info.value).startswith("HTTP 503") and "gave up after 3 attempts" in str(info.value)
    assert len(clock.sleeps) == 2


def test_total_time_without_progress_is_bounded() -> None:
    clock = Clock()
    with pytest.raises(RegistryError, match="gave up"):
        run(clock.policy(attempts=1000, backoff=1.0, backoff_max=4.0, max_total=20.0), failing(10_000))
    assert clock.now <= 20.0


def test_progress_resets_the_count() -> None:
    """A download that gains bytes on every attempt is never given up on for its number of cuts."""
    clock = Clock()
    kept = [0]

    def op() -> str:
        kept[0] += 1
        if kept[0] < 10:
            raise TransientError("cut")
        return "done"
    assert run(clock.policy(attempts=3), op, progress=lambda: kept[0]) == "done"


def test_a_final_error_is_not_retried() -> None:
    clock = Clock()
    with pytest.raises(OperationError, match="digest"):
        run(clock.policy(), failing(1, OperationError("digest mismatch")))
    assert clock.sleeps == []


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIRRORKIT_STALL_TIMEOUT", "2")
    monkeypatch.setenv("MIRRORKIT_RETRY_ATTEMPTS", "3")
    policy = RetryPolicy.from_env()
    assert (policy.stall_timeout, policy.attempts) == (2.0, 3)
    assert RegistryClient(Endpoints(), CredentialStore(explicit={}, files=[])).timeout == 2.0
    monkeypatch.setenv("MIRRORKIT_STALL_TIMEOUT", "soon")
    with pytest.raises(InputError, match="MIRRORKIT_STALL_TIMEOUT"):
        RetryPolicy.from_env()


def client(handler: Callable[[httpx.Request], httpx.Response], clock: Clock, **kw: float) -> RegistryClient:
    return RegistryClient(Endpoints(), CredentialStore(explicit={}, files=[]), transport=httpx.MockTransport(handler),
                          retry=clock.policy(**kw))


def test_one_failing_upload_sends_one_post_per_attempt() -> None:
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req.method)
        return httpx.Response(503)

    clock = Clock()
    with client(handler, clock, attempts=6, outage_attempts=6) as c, \
            pytest.raises(RegistryError, match="503.*gave up after 6"):
        c.upload_blob("reg.example", "team/app", DIGEST, len(DATA), lambda: _bytes(DATA))
    assert seen == ["POST"] * 6


def test_an_upload_cut_midway_resumes_where_the_registry_says() -> None:
    """The whole-blob PUT is cut after 10 000 bytes: the session's status says 0-9999, a PATCH sends
    the rest, an empty PUT closes it."""
    log: list[tuple[str, str, int]] = []
    received = bytearray()

    def handler(req: httpx.Request) -> httpx.Response:
        loc = {"Location": "/v2/team/app/blobs/uploads/u1"}
        body = req.read()
        if req.method == "POST":
            log.append(("POST", "", 0))
            return httpx.Response(202, headers=loc)
        if req.method == "GET":
            log.append(("GET", "", 0))
            return httpx.Response(204, headers={**loc, "Range": f"0-{len(received) - 1}"})
        if req.method == "PATCH":
            log.append(("PATCH", req.headers["Content-Range"], len(body)))
            received.extend(body)
            return httpx.Response(202, headers=loc)
        log.append(("PUT", req.url.params.get("digest", ""), len(body)))
        if body and not received:
            received.extend(body[:10_000])
            raise httpx.RemoteProtocolError("connection reset mid-body")
        received.extend(body)
        ok = hashlib.sha256(received).hexdigest() == DIGEST[7:]
        return httpx.Response(201 if ok else 400)

    clock = Clock()
    with client(handler, clock) as c:
        c.upload_blob("reg.example", "team/app", DIGEST, len(DATA), lambda: _bytes(DATA))
    assert log == [("POST", "", 0), ("PUT", DIGEST, len(DATA)), ("GET", "", 0),
                   ("PATCH", f"10000-{len(DATA) - 1}", len(DATA) - 10_000), ("PUT", DIGEST, 0)]
    assert bytes(received) == DATA


class _Cut(httpx.SyncByteStream):
    """A body that stops after ``n`` bytes, as a cut connection or a stall past the limit does."""

    def __init__(self, data: bytes, n: int, error: type[Exception] = httpx.ReadTimeout) -> None:
        self.data, self.n, self.error = data, n, error

    def __iter__(self) -> Iterator[bytes]:
        yield self.data[: self.n]
        raise self.error("no progress")


def test_a_stalled_download_is_resumed_with_range(tmp_path: Path) -> None:
    ranges: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        ranges.append(req.headers.get("Range", ""))
        if len(ranges) == 1:
            return httpx.Response(200, stream=_Cut(DATA, 30_000))
        start = int(req.headers["Range"].split("=")[1].split("-")[0])
        return httpx.Response(206, content=DATA[start:],
                              headers={"Content-Range": f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"})

    store = BlobStore(tmp_path / "store")
    with client(handler, Clock()) as c:
        assert fetch_blob(c, REF, DIGEST, len(DATA), store) == len(DATA)
    assert ranges == ["", f"bytes=30000-{len(DATA) - 1}"]
    assert store.read(DIGEST) == DATA


def test_a_download_that_hashes_wrong_is_fetched_once_more_then_refused(tmp_path: Path) -> None:
    bad = bytearray(DATA)
    bad[5] ^= 1
    answers = [bytes(bad), DATA, bytes(bad), bytes(bad)]
    calls = [0]

    def handler(req: httpx.Request) -> httpx.Response:
        calls[0] += 1
        return httpx.Response(200, content=answers.pop(0))

    store = BlobStore(tmp_path / "store")
    with client(handler, Clock()) as c:
        fetch_blob(c, REF, DIGEST, len(DATA), store)              # wrong once, right the second time
        assert store.has(DIGEST) and calls[0] == 2
        other = BlobStore(tmp_path / "other")
        with pytest.raises(OperationError, match="downloaded twice"):
            fetch_blob(c, REF, DIGEST, len(DATA), other)
    assert not other.has(DIGEST) and calls[0] == 4


def test_a_full_disk_is_one_final_line_naming_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=DATA)

    store = BlobStore(tmp_path / "store")
    real_open = Path.open

    def full(self: Path, mode: str = "r", *args: object, **kw: object):  # type: ignore[no-untyped-def]
        if self.suffix == ".partial" and "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(self, mode, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", full)
    with client(handler, Clock()) as c, pytest.raises(OperationError) as info:
        fetch_blob(c, REF, DIGEST, len(DATA), store)
    assert "no space left" in str(info.value) and str(store.root) in str(info.value)
    assert "\n" not in str(info.value)


def _bytes(data: bytes) -> object:
    import io

    return io.BytesIO(data)
