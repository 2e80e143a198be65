"""Small things a new user meets (issue 18, item 8): each bullet, tried the way a user would."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from kit.images import make_image, make_layer
from kit.push import push_image
from kit.tls import make_ca
from test_bundle import SPLIT, build_layout
from test_credentials import env  # noqa: F401 - the fixture: every lookup location under tmp_path

from mirrorkit.bundle.writer import write_bundle
from mirrorkit.cli.main import main
from mirrorkit.errors import AuthError
from mirrorkit.oci import credentials
from mirrorkit.oci.credentials import CredentialStore
from mirrorkit.oci.transport import Endpoints
from mirrorkit.plan import load_plan
from mirrorkit.progress import bars
from mirrorkit.transfer.pull import PullOptions, pull_bundle


def cli(*args: str, input: str | None = None) -> Result:  # noqa: A002 - click's name
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def test_a_hanging_credential_helper_costs_one_timeout_and_its_children_are_killed(
        env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811 - the fixture
    monkeypatch.setattr(credentials, "HELPER_TIMEOUT", 1.0)     # 10 s in use; the same code path
    pids = env["bin"] / "pids"
    script = env["bin"] / "docker-credential-hang"
    script.write_text(f"#!/bin/sh\nsleep 300 &\necho $! >> {pids}\nwait\n")   # a child that outlives a plain kill
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    (env["docker"] / "config.json").write_text(json.dumps({"credHelpers": {"registry.example": "hang"}}))
    store = CredentialStore({})
    start = time.monotonic()
    for repository in ("nvidia/driver", "nvidia/gpu-operator", "nvidia/k8s-device-plugin"):
        with pytest.raises(AuthError, match=r"^credential helper docker-credential-hang gave no answer for "
                                            r"registry.example within 1 s; stopped it and every process it started$"):
            store.get("registry.example", repository)
    assert time.monotonic() - start < 3           # one timeout for the run, not one per repository or per key
    child = int(pids.read_text().split()[0])
    time.sleep(0.2)
    assert not running(child)                      # the helper's own child is gone too


def running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan may wait for a reaper that a container lacks)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_login_with_no_terminal_and_no_password_stdin_says_so_without_a_python_warning(tmp_path: Path) -> None:
    res = subprocess.run([str(Path(sys.executable).with_name("mirrorkit")), "login", "127.0.0.1:9", "-u", "admin"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr == ("Password: error: no password given: pipe it in with --password-stdin (there is no "
                          "terminal to ask on)\n"), res.stderr       # and no GetPassWarning


def test_login_tls_hint_names_the_flag_login_takes(tmp_path: Path, registry_factory, env) -> None:  # noqa: F811
    ca = make_ca(tmp_path / "pki")
    reg = registry_factory(auth=True, tls_cert=ca.cert, tls_key=ca.key)
    res = cli("login", reg.host, "-u", "alice", "--password-stdin", input="s3cret-Pa55\n")
    assert res.exit_code == 1
    assert "TLS verification failed" in res.output and "name it with --insecure" in res.output, res.output
    assert f"--insecure {reg.host}" not in res.output and "--insecure 127.0.0.1" not in res.output
    res = cli("login", reg.host, "-u", "alice", "--password-stdin", "--insecure", input="s3cret-Pa55\n")
    assert res.exit_code == 0, res.output                # and the flag it names does what the hint says


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_a_count_for_images_and_byte_units_only_for_bytes() -> None:
    screen = FakeTTY()
    with bars(4, None, "fetching", stream=screen) as update:
        update("total", 2_000_000)
        update("image", 3)
        update("bytes", 1_000_000)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue()).replace("\r", "\n")
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln.strip()}       # the last drawing of each bar
    assert "3/4" in lines["images"] and "bytes" not in lines["images"] and "/s" not in lines["images"], lines
    assert "1.0/2.0 MB" in lines["fetching"], lines


def test_pull_progress_total_counts_a_shared_layer_once(tmp_path: Path, registry_factory) -> None:
    upstream = registry_factory()
    base = make_layer("progress/base", 200_000)
    images = {f"nvidia/app{i}": make_image(f"progress/{i}", [base, make_layer(f"progress/{i}", 10_000)])
              for i in range(3)}
    for repo, image in images.items():
        push_image(upstream.url, repo, "1", image)
    plan = tmp_path / "plan.yaml"
    args = ["plan", "--registry", "127.0.0.1:9/m", "--resolve", "--source-endpoint",
            f"nvcr.io=http://{upstream.host}", "-o", str(plan)]
    for repo in images:
        args += ["--image", f"nvcr.io/{repo}:1"]
    assert cli(*args).exit_code == 0
    seen: dict[str, int] = {}

    def progress(what: str, n: int) -> None:
        seen[what] = seen.get(what, 0) + n

    pull_bundle(load_plan(str(plan)), PullOptions(output=tmp_path / "b.tar"),
                Endpoints.from_options([f"nvcr.io=http://{upstream.host}"], [], None, None), CredentialStore({}),
                progress)
    unique = base.size + sum(i.layers[1].size + i.config.size for i in images.values())
    assert seen["total"] == seen["bytes"] == unique           # the base layer once, not three times


def test_push_bundle_of_one_volume_names_every_missing_one_and_refuses_a_volume_without_its_sha256(
        tmp_path: Path) -> None:
    layout = build_layout(tmp_path / "work")
    volumes = write_bundle(layout.root, layout.lock, tmp_path / "s.tar", split=SPLIT)
    assert len(volumes) >= 4
    res = cli("push-bundle", str(volumes[0]), "--registry", "127.0.0.1:9/m", "--insecure", "127.0.0.1:9")
    lacking = range(2, len(volumes) + 1)
    assert one_line(res, 2) == (f"error: bundle bundle-a: volumes {', '.join(map(str, lacking))} of {len(volumes)} "
                                f"missing ({', '.join(v.name for v in volumes[1:])})")

    for volume in volumes:
        (tmp_path / f"{volume.name}.sha256").unlink()
    res = cli("push-bundle", *map(str, volumes), "--registry", "127.0.0.1:9/m", "--insecure", "127.0.0.1:9")
    assert one_line(res, 2) == (f"error: {volumes[0]}: no {volumes[0].name}.sha256 beside it (nor beside "
                                f"{len(volumes) - 1} other volume(s)); copy each volume together with its .sha256 file")


def one_line(res: Result, code: int) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == code and len(lines) == 1, res.output
    return lines[0]


def test_verify_format_json_prints_json_with_the_error_when_the_registry_is_down(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    assert cli("plan", "--registry", "127.0.0.1:9/m", "--image", "nvcr.io/nvidia/driver@sha256:" + "a" * 64,
               "-o", str(plan)).exit_code == 0
    quick = {**os.environ, "MIRRORKIT_RETRY_ATTEMPTS": "1", "MIRRORKIT_RETRY_BACKOFF": "0.05"}   # down is down
    res = subprocess.run([str(Path(sys.executable).with_name("mirrorkit")), "verify", str(plan), "--insecure",
                          "127.0.0.1:9", "--format", "json"], capture_output=True, text=True, timeout=120, env=quick)
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    assert doc["passed"] is False and "127.0.0.1:9" in doc["error"], doc
    assert res.stderr.count("error:") == 1


@pytest.mark.parametrize("command", ["push-bundle", "verify", "inventory", "prune"])
def test_source_endpoint_is_offered_only_where_a_source_is_contacted(command: str, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, [command, "--help"])
    assert "--source-endpoint" not in res.output and "--insecure" in res.output
    for source_side in ("plan", "pull-bundle", "mirror", "login"):
        assert "--source-endpoint" in CliRunner().invoke(main, [source_side, "--help"]).output


def test_an_upstream_behind_an_endpoint_gets_its_credentials_three_ways(
        tmp_path: Path, registry_factory, env) -> None:  # noqa: F811
    upstream = registry_factory(auth=True)
    image = make_image("endpoint/app", [make_layer("endpoint/app", 8_000)])
    push_image(upstream.url, "nvidia/app", "1", image, auth=("alice", "s3cret-Pa55"))
    plan = tmp_path / "plan.yaml"
    assert cli("plan", "--registry", "127.0.0.1:9/m", "--image", "nvcr.io/nvidia/app:1", "-o", str(plan)).exit_code == 0
    endpoint = ("--source-endpoint", f"nvcr.io=http://{upstream.host}")

    def pull(name: str, *extra: str, input: str | None = None) -> Result:  # noqa: A002
        return cli("pull-bundle", str(plan), "-o", str(tmp_path / name), *endpoint, *extra, input=input)

    res = pull("none.tar")
    assert res.exit_code == 1 and "nvcr.io" in res.output, res.output          # no login anywhere yet

    # 1. pull-bundle --username: for the plan's one source registry
    res = pull("flags.tar", "--username", "alice", "--password-stdin", input="s3cret-Pa55\n")
    assert res.exit_code == 0, res.output

    # 2. a login saved under the endpoint's HOST:PORT is used for the upstream reached there
    res = cli("login", upstream.host, "-u", "alice", "--password-stdin", "--insecure", input="s3cret-Pa55\n")
    assert res.exit_code == 0, res.output
    assert pull("endpoint-host.tar").exit_code == 0
    authfile = env["runtime"] / "containers" / "auth.json"
    authfile.unlink()

    # 3. login names the endpoint: checked there, saved under nvcr.io
    res = cli("login", "nvcr.io", "-u", "alice", "--password-stdin", *endpoint, input="s3cret-Pa55\n")
    assert res.exit_code == 0, res.output
    assert list(json.loads(authfile.read_text())["auths"]) == ["nvcr.io"]
    assert pull("upstream-name.tar").exit_code == 0


def test_ca_cert_is_repeatable_every_bundle_trusted_or_one_per_host(tmp_path: Path, registry_factory) -> None:
    regs, cas = [], []
    for name in ("a", "b"):
        ca = make_ca(tmp_path / f"pki-{name}")
        reg = registry_factory(tls_cert=ca.cert, tls_key=ca.key)
        push_image(reg.url, f"team/{name}", "1", make_image(f"ca/{name}", [make_layer(f"ca/{name}", 4_000)]),
                   verify=ca.client_context())
        regs.append(reg)
        cas.append(ca)
    images = [arg for reg, name in zip(regs, "ab", strict=True) for arg in ("--image", f"{reg.host}/team/{name}:1")]

    def plan(*ca_args: str) -> Result:
        return cli("plan", "--registry", "127.0.0.1:9/m", "--resolve", *images, *ca_args,
                   "-o", str(tmp_path / "plan.yaml"))

    res = plan("--ca-cert", str(cas[0].ca_cert), "--ca-cert", str(cas[1].ca_cert))
    assert res.exit_code == 0, res.output
    per_host = [f"{regs[0].host}={cas[0].ca_cert}", f"{regs[1].host}={cas[1].ca_cert}"]
    assert plan("--ca-cert", per_host[0], "--ca-cert", per_host[1]).exit_code == 0
    crossed = plan("--ca-cert", f"{regs[0].host}={cas[1].ca_cert}", "--ca-cert", f"{regs[1].host}={cas[0].ca_cert}")
    assert crossed.exit_code == 1 and "TLS verification failed" in crossed.output, crossed.output
