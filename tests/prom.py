"""Test harness: a real Prometheus and a real Alertmanager (Debian packages) on loopback ports.

This module owns starting, polling and stopping the two binaries, generating their config files
and backfilling Prometheus history with ``promtool``. It does not own pytest fixtures or the
skip/fail policy when a binary is absent (``tests/conftest.py``).

Each server runs in its own temporary directory on a free ``127.0.0.1`` port, is polled for
readiness (no fixed sleeps) and is stopped by PID: terminate, then kill if it lingers. Backfill
follows the field notes: OpenMetrics text with timestamps in seconds ending in ``# EOF``, samples
older than ~3 h, written into the data directory before start (or followed by a restart).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

PROMETHEUS_BIN = Path("/usr/bin/prometheus")
PROMTOOL_BIN = Path("/usr/bin/promtool")
ALERTMANAGER_BIN = Path("/usr/bin/prometheus-alertmanager")
_POLL_S = 0.05


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def poll(check: Callable[[], Any], *, timeout: float, what: str, interval: float = _POLL_S) -> Any:
    """Call ``check`` until it returns something truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class _Process:
    """A child process with a log file, started and stopped by PID."""

    def __init__(self, name: str, workdir: Path, port: int) -> None:
        self.name = name
        self.workdir = workdir
        self.port = port
        self.log_path = workdir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """Return the base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Tell whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _args(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        """Start the binary and wait until ``/-/ready`` answers 200."""
        if self.running:
            return
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self._args(), stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        with httpx.Client(timeout=1.0) as client:

            def ready() -> bool:
                if not self.running:
                    raise RuntimeError(f"{self.name} exited at start-up:\n{self.log_tail()}")
                try:
                    return client.get(f"{self.url}/-/ready").status_code == 200
                except httpx.TransportError:
                    return False

            try:
                poll(ready, timeout=timeout, what=f"{self.name} to become ready")
            except BaseException:
                self.stop()
                raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process by PID: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self, timeout: float = 30.0) -> None:
        """Stop and start again on the same port and data directory."""
        self.stop()
        self.start(timeout)

    def log_tail(self, lines: int = 20) -> str:
        """Return the last lines of the process log, for failure messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> _Process:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PrometheusServer(_Process):
    """A real Prometheus scraping ``targets`` every second, with exemplar storage unless told not to.

    ``exemplars=False`` starts it without ``--enable-feature=exemplar-storage``, as most installs
    run: ``/api/v1/query_exemplars`` then answers success with no data. ``scrape_interval``
    (a Prometheus duration such as ``"250ms"``) scrapes the targets faster, for tests that wait
    for one scrape after another; the first scrape still comes only after the ~5 s
    service-discovery tick of a fresh server.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        targets: Sequence[str] = (),
        port: int | None = None,
        binary: Path = PROMETHEUS_BIN,
        promtool: Path = PROMTOOL_BIN,
        exemplars: bool = True,
        scrape_interval: str = "1s",
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__("prometheus", workdir, port or free_port())
        self.exemplars = exemplars
        self.scrape_interval = scrape_interval
        self.binary = binary
        self.promtool = promtool
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.config_path = workdir / "prometheus.yml"
        self.targets = list(targets)
        self._write_config()

    def _write_config(self) -> None:
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [],
        }
        if self.targets:
            config["scrape_configs"].append(
                {
                    "job_name": "app",
                    "scrape_interval": self.scrape_interval,
                    "scrape_timeout": self.scrape_interval,
                    "static_configs": [{"targets": self.targets}],
                }
            )
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")

    def _args(self) -> list[str]:
        return [
            str(self.binary),
            f"--config.file={self.config_path}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--storage.tsdb.path={self.data_dir}",
            "--storage.tsdb.retention.time=60d",
            *(["--enable-feature=exemplar-storage"] if self.exemplars else []),
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]

    def set_targets(self, targets: Sequence[str]) -> None:
        """Replace the scrape targets and reload a running server (``POST /-/reload``)."""
        self.targets = list(targets)
        self._write_config()
        if self.running:
            with httpx.Client(timeout=5.0) as client:
                client.post(f"{self.url}/-/reload").raise_for_status()

    def backfill(self, openmetrics_text: str) -> None:
        """Write history with ``promtool tsdb create-blocks-from openmetrics`` into the data dir.

        The text needs timestamps in seconds, ``_total`` counters and a final ``# EOF``; samples
        must be older than ~3 h. A running server is restarted so the blocks are visible at once.
        """
        src = self.workdir / "backfill.om"
        text = openmetrics_text.rstrip("\n") + "\n"
        if not text.rstrip().endswith("# EOF"):
            text += "# EOF\n"
        src.write_text(text, encoding="utf-8")
        out = self.workdir / "blocks"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [str(self.promtool), "tsdb", "create-blocks-from", "openmetrics"]
        if _supports_max_block_duration(self.promtool):
            cmd.append("--max-block-duration=24h")
        done = subprocess.run([*cmd, str(src), str(out)], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"promtool backfill failed:\n{done.stdout}\n{done.stderr}")
        was_running = self.running
        if was_running:
            self.stop()
        for block in out.iterdir():
            shutil.move(str(block), self.data_dir / block.name)
        if was_running:
            self.start()

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Return the result of an instant query (empty on any error)."""
        with httpx.Client(timeout=5.0) as client:
            try:
                body = client.get(f"{self.url}/api/v1/query", params={"query": expr}).json()
            except (httpx.HTTPError, ValueError):
                return []
        result = body.get("data", {}).get("result", [])
        return result if isinstance(result, list) else []

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll an instant query until it returns at least one series; return the result."""
        return poll(lambda: self.query(expr), timeout=timeout, what=f"Prometheus to answer {expr!r}")  # type: ignore[no-any-return]


class AlertmanagerServer(_Process):
    """A real Alertmanager with clustering off and a catch-all receiver that sends nothing."""

    def __init__(self, workdir: Path, *, port: int | None = None, binary: Path = ALERTMANAGER_BIN) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__("alertmanager", workdir, port or free_port())
        self.binary = binary
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.config_path = workdir / "alertmanager.yml"
        config = {
            "route": {"receiver": "null", "group_wait": "0s", "group_interval": "1s"},
            "receivers": [{"name": "null"}],
        }
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")

    def _args(self) -> list[str]:
        return [
            str(self.binary),
            f"--config.file={self.config_path}",
            f"--storage.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]


_FLAG_CACHE: dict[Path, bool] = {}


def _supports_max_block_duration(promtool: Path) -> bool:
    """Tell whether this promtool knows ``--max-block-duration`` (added after 2.42)."""
    if promtool not in _FLAG_CACHE:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                [str(promtool), "tsdb", "create-blocks-from", "openmetrics", "--help"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            _FLAG_CACHE[promtool] = "--max-block-duration" in done.stdout + done.stderr
    return _FLAG_CACHE.get(promtool, False)
