"""The container image: built from exactly its build context, then (where a builder works) for real.

Issue 21: ``pyproject.toml`` force-includes ``rules-prometheus/``, which the Dockerfile and its
ignore file left out, so the image could not build, and nothing built it in CI.

Always: the files ``.dockerignore`` admits from a clean checkout, copied as the build stage's
``COPY`` lines copy them, build a wheel holding both shipped rule packs (the step the image's
``pip install`` runs), and the old ignore file is shown to break exactly that.

With ``WATCHER_IMAGE_BUILDER=podman|docker`` (set by ``.ci/run`` in its own CI-only step, since
the build downloads packages from Debian and PyPI and the offline suite reaches no network): the
image is built, and runs ``watcher demo`` and ``watcher run``. No registry is reachable here, so
unless the Dockerfile's base image is already present, the base is made from Debian packages
(debootstrap, Debian's Python 3.11) and passed as ``PYTHON_IMAGE``; the Dockerfile is unchanged.
Without the variable the image tests skip with the reason; with it and
``WATCHER_REQUIRE_INTEGRATION=1``, a builder that does not work fails them.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_INTEGRATION
from tests.deploy.buildcontext import (
    build_stage_copies,
    checkout_files,
    context_files,
    excluded,
    parse_ignore,
    replay_copies,
)

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DEFAULT_BASE = "python:3.11-slim-bookworm"
OFFLINE_BASE = "localhost/watcher-test-base:bookworm"
DEBIAN_PACKAGES = "python3,python3-venv,ca-certificates"
EXPECTED_BUILDER = os.environ.get("WATCHER_IMAGE_BUILDER", "")
"""The builder CI installs (``podman``/``docker``); without it a missing builder is only a skip."""

OLD_IGNORE = "*\n!pyproject.toml\n!README.md\n!watcher/\n!rules/\n**/__pycache__\n**/*.pyc\n"
"""deploy/docker/Dockerfile.dockerignore before issue 21."""


# --- the build context, always -------------------------------------------------------------------


def test_ignore_rules_follow_the_builders() -> None:
    patterns = parse_ignore(OLD_IGNORE + "!watcher/keep.pyc\n")
    assert excluded("tests/test_x.py", patterns) and excluded(".git/config", patterns)
    assert not excluded("watcher/cli.py", patterns) and not excluded("pyproject.toml", patterns)
    assert excluded("watcher/__pycache__/cli.cpython-311.pyc", patterns)
    assert excluded("rules-prometheus/llm.yaml", patterns)  # the bug: not admitted
    assert not excluded("watcher/keep.pyc", patterns)  # the last matching line wins
    assert excluded("a.pyc", parse_ignore("**/*.pyc"))  # ** matches no folder too
    assert excluded("docs/x/y.md", parse_ignore("docs"))  # a folder excludes what is in it
    assert not excluded("docs2/y.md", parse_ignore("docs"))
    assert excluded("a/b/c.txt", parse_ignore("a/*/c.txt")) and not excluded(
        "a/c.txt", parse_ignore("a/*/c.txt")
    )


PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]


def _wheel(src: Path, out: Path) -> subprocess.CompletedProcess[str]:
    # What the build stage's `pip install .` does first; no build isolation: offline, with the
    # hatchling of the test extra.
    return subprocess.run(
        [*PIP_WHEEL, "--wheel-dir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_context_is_what_the_image_needs() -> None:
    files = context_files(ROOT)
    assert {f.split("/")[0] for f in files} == {
        "pyproject.toml",
        "README.md",
        "watcher",
        "rules",
        "rules-prometheus",
    }
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files)
    sources = {s.rstrip("/") for c in build_stage_copies(DOCKERFILE.read_text()) for s in c.sources}
    assert sources == {"pyproject.toml", "README.md", "watcher", "rules", "rules-prometheus"}


def test_wheel_builds_from_exactly_the_build_context(tmp_path: Path) -> None:
    pytest.importorskip("hatchling", reason="hatchling (test extra) builds the wheel offline")
    files = context_files(ROOT)
    src = tmp_path / "src"
    replay_copies(ROOT, files, build_stage_copies(DOCKERFILE.read_text()), src)
    proc = _wheel(src, tmp_path / "dist")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("watcher_llm-*.whl")  # the distribution is watcher-llm
    names = set(zipfile.ZipFile(wheel).namelist())
    checkout = checkout_files(ROOT)
    for pack, inside in (
        ("rules", "watcher/_shipped_rules"),
        ("rules-prometheus", "watcher/_shipped_rules_prometheus"),
    ):
        expected = {f[len(pack) + 1 :] for f in checkout if f.startswith(pack + "/")}
        got = {n[len(inside) + 1 :] for n in names if n.startswith(inside + "/")}
        assert expected and got == expected, pack
    package = {f for f in checkout if f.startswith("watcher/")}
    assert package <= names, sorted(package - names)[:10]


def test_the_old_ignore_file_breaks_the_build(tmp_path: Path) -> None:
    """The check above would have caught the bug: the old context lacks the Prometheus pack."""
    patterns = parse_ignore(OLD_IGNORE)
    files = [f for f in checkout_files(ROOT) if not excluded(f, patterns)]
    src = tmp_path / "src"
    # the old Dockerfile copied only rules/: the replay succeeds, the wheel build does not
    old_copies = [
        c for c in build_stage_copies(DOCKERFILE.read_text()) if "rules-prometheus" not in c.sources
    ]
    replay_copies(ROOT, files, old_copies, src)
    proc = _wheel(src, tmp_path / "dist")
    assert proc.returncode != 0 and "rules-prometheus" in proc.stdout + proc.stderr
    with pytest.raises(FileNotFoundError, match="rules-prometheus"):
        replay_copies(ROOT, files, build_stage_copies(DOCKERFILE.read_text()), tmp_path / "src2")


# --- the image, where a builder works ------------------------------------------------------------


def _unavailable(reason: str) -> None:
    if REQUIRE_INTEGRATION and EXPECTED_BUILDER:
        pytest.fail(f"container builder {EXPECTED_BUILDER!r} expected (WATCHER_IMAGE_BUILDER) but: {reason}")
    pytest.skip(reason)


def _run(cmd: list[str], timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload, no-any-return]


class Builder:
    """One container tool: how to build, import a base, and run on this machine."""

    def __init__(self, kind: str, exe: str) -> None:
        self.kind = kind
        self.exe = exe
        # crun (podman's default) refuses hosts with hybrid cgroups (v1 + v2), as these machines
        # are; runc runs there.
        self.cli = [exe, "--runtime", "runc"] if kind == "podman" and shutil.which("runc") else [exe]

    def has_image(self, ref: str) -> bool:
        if self.kind == "podman":
            return _run([*self.cli, "image", "exists", ref]).returncode == 0
        return _run([*self.cli, "image", "inspect", ref]).returncode == 0

    def build_args(self) -> list[str]:
        # chroot isolation: RUN steps need no OCI runtime nor cgroups (both refused here);
        # docker format keeps the HEALTHCHECK (OCI images drop it); no layer cache, so no build
        # stage image is left behind (~850 MB a run).
        return (
            ["--isolation", "chroot", "--format", "docker", "--layers=false"] if self.kind == "podman" else []
        )

    def run_args(self) -> list[str]:
        # The OCI runtime may only lower the process limits here (no CAP_SYS_RESOURCE).
        n = min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        p = min(4096, resource.getrlimit(resource.RLIMIT_NPROC)[0])
        return ["--ulimit", f"nofile={n}:{n}", "--ulimit", f"nproc={p}:{p}"]


def _builder() -> Builder:
    if not EXPECTED_BUILDER:
        # The build downloads the base system and wheels (Debian, PyPI): the offline suite never
        # builds; .ci/run builds in its own step with WATCHER_IMAGE_BUILDER=podman.
        pytest.skip("the image build downloads packages: set WATCHER_IMAGE_BUILDER (.ci/run does)")
    wanted = [EXPECTED_BUILDER]
    reasons = []
    for kind in wanted:
        exe = shutil.which(kind)
        if exe is None:
            reasons.append(f"{kind} not installed")
            continue
        if kind == "docker" and _run([exe, "info"], timeout=30).returncode != 0:
            reasons.append("docker: no engine answers (only the client is installed)")
            continue
        return Builder(kind, exe)
    _unavailable("no container builder: " + "; ".join(reasons) + " (apt-get install podman runc debootstrap)")
    raise AssertionError("unreachable")


def _offline_base(builder: Builder, tmp: Path) -> str:
    """Return a local Python 3.11 base image, made from Debian packages unless one is present."""
    if builder.has_image(OFFLINE_BASE):
        return OFFLINE_BASE
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        _unavailable(f"{DEFAULT_BASE} is not present and debootstrap (to make a base) is not installed")
    rootfs = tmp / "rootfs"
    proc = _run(
        [str(debootstrap), "--variant=minbase", f"--include={DEBIAN_PACKAGES}", "bookworm", str(rootfs)],
        timeout=900,
    )
    if proc.returncode != 0:
        _unavailable(f"debootstrap failed: {proc.stdout[-500:]} {proc.stderr[-500:]}")
    (rootfs / "usr/bin/python").symlink_to("python3")  # as in the python:3.11 images
    # This machine's trust store (an egress proxy may re-sign TLS): pip in the build stage needs it.
    shutil.copy2("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt")
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    env = "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt"
    with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        imp = subprocess.run(
            [*builder.cli, "import", "--change", env, "-", OFFLINE_BASE],
            stdin=tar.stdout,
            capture_output=True,
            timeout=600,
        )
    shutil.rmtree(rootfs, ignore_errors=True)
    if imp.returncode != 0:
        _unavailable(f"importing the base image failed: {imp.stderr.decode()[-500:]}")
    return OFFLINE_BASE


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Builder, str]]:
    builder = _builder()
    tag = f"localhost/watcher-test:{uuid.uuid4().hex[:8]}"
    args = [*builder.cli, "build", *builder.build_args(), "-f", str(DOCKERFILE), "-t", tag]
    if not builder.has_image(DEFAULT_BASE):
        args += ["--build-arg", f"PYTHON_IMAGE={_offline_base(builder, tmp_path_factory.mktemp('base'))}"]
    proc = _run([*args, str(ROOT)], timeout=1800)
    # A broken Dockerfile or context is a failure whatever the environment.
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    try:
        yield builder, tag
    finally:
        _run([*builder.cli, "rmi", "-f", tag], timeout=120)


def _inside(image: tuple[Builder, str], code: str) -> str:
    builder, tag = image
    proc = _run(
        [
            *builder.cli,
            "run",
            "--rm",
            "--network=none",
            *builder.run_args(),
            "--entrypoint",
            "python",
            tag,
            "-c",
            code,
        ]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_image_holds_both_rule_packs_and_runs_unprivileged(image: tuple[Builder, str]) -> None:
    out = _inside(
        image,
        "import json, os; from watcher import config as c; print(json.dumps([os.getuid(), "
        "sorted(p.name for p in c.shipped_rules_dir().glob('*.yaml')), "
        "sorted(p.name for p in c.shipped_prometheus_rules_dir().glob('*.yaml')), "
        "str(c.shipped_prometheus_rules_dir())]))",
    )
    uid, rules, prom, where = json.loads(out)
    assert uid == 10001
    assert rules == sorted(p.name for p in (ROOT / "rules").glob("*.yaml"))
    assert prom and prom == sorted(p.name for p in (ROOT / "rules-prometheus").glob("*.yaml"))
    assert "site-packages/watcher/_shipped_rules_prometheus" in where


@pytest.mark.integration
@pytest.mark.slow
def test_image_runs_the_demo(image: tuple[Builder, str]) -> None:
    builder, tag = image
    proc = _run(
        [*builder.cli, "run", "--rm", "--network=none", *builder.run_args(), tag, "demo"], timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2/2 incidents detected" in proc.stdout, proc.stdout[-2000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration
@pytest.mark.slow
def test_image_runs_the_daemon(image: tuple[Builder, str], tmp_path: Path) -> None:
    builder, tag = image
    port = _free_port()
    config = tmp_path / "watcher.yaml"
    config.write_text(
        "rules: [/etc/watcher/rules]\n"
        'store: {url: "sqlite:////var/lib/watcher/watcher.db"}\n'
        f"server: {{host: 127.0.0.1, port: {port}}}\n"
        "receivers: {console: {type: console}}\n"
        "route: {receivers: [console]}\n"
    )
    config.chmod(0o644)
    name = f"watcher-test-{uuid.uuid4().hex[:8]}"
    # The image's default command (`run --config /etc/watcher/watcher.yaml`), on the host's
    # network so the test reaches it on loopback (no CNI needed); the image's 0.0.0.0 is
    # overridden so nothing listens beyond loopback.
    proc = _run(
        [
            *builder.cli,
            "run",
            "-d",
            "--name",
            name,
            "--network=host",
            *builder.run_args(),
            *("-e", "WATCHER_SERVER__HOST=127.0.0.1"),
            *("-v", f"{config}:/etc/watcher/watcher.yaml:ro"),
            *("-v", f"{ROOT / 'rules'}:/etc/watcher/rules:ro"),
            tag,
        ]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        ready: dict[str, object] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as r:
                    ready = json.loads(r.read())
                    break
            except OSError:
                time.sleep(0.5)
        logs = _run([*builder.cli, "logs", name]).stderr
        assert ready.get("ready") is True, logs[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5) as r:
            groups = json.loads(r.read())["data"]["groups"]
        assert {g["file"].rsplit("/", 1)[0] for g in groups} == {"/etc/watcher/rules"} and groups
        stop = _run([*builder.cli, "stop", "-t", "30", name], timeout=60)
        assert stop.returncode == 0, stop.stderr
        code = _run([*builder.cli, "inspect", name, "--format", "{{.State.ExitCode}}"]).stdout.strip()
        assert code == "0", _run([*builder.cli, "logs", name]).stderr[-3000:]
    finally:
        _run([*builder.cli, "rm", "-f", name], timeout=60)
