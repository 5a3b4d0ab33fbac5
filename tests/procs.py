"""``watcher`` subprocesses for tests: output lines collected by a thread, waiting for a message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _message(line: str) -> str:
    """Return the message of a JSON log line (the daemon logs JSON off a terminal), else the line."""
    try:
        doc = json.loads(line)
    except ValueError:
        return line
    return f"{doc['msg']}\n" if isinstance(doc, dict) and "msg" in doc else line


class Proc:
    """A ``python -m watcher ARGS`` subprocess whose stdout/stderr lines are collected by a thread."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None, name: str = "") -> None:
        self.name = name or "watcher"
        self.p = subprocess.Popen(
            [sys.executable, "-m", "watcher", *args],
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(_message(line))

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 30) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.p.poll() is not None and not self._t.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: {text!r} not seen; output:\n{self.output()}")

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.wait(10)

    def stop(self, timeout: float = 20) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        self._t.join(5)
        assert self.p.stdout is not None
        self.p.stdout.close()
