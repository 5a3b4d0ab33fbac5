"""The systemd readiness protocol (``sd_notify``): one datagram on ``$NOTIFY_SOCKET``.

This module owns sending ``READY=1``, ``STATUS=…``, ``RELOADING=1``, ``STOPPING=1`` and the
watchdog keep-alive ``WATCHDOG=1`` (when the unit sets ``WatchdogSec=``) to the service manager,
with no dependency on libsystemd. It does not own when the daemon is ready or pings
(``daemon`` calls) nor the unit file (``deploy/systemd/watcher.service``).

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op that returns ``False``; a failed send
is logged at debug level and never raises, because a missing notification must not stop a daemon
that otherwise works (systemd then reports the start as timed out, which says enough).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

logger = logging.getLogger(__name__)


def _address(env: Mapping[str, str]) -> str | bytes | None:
    """Return the socket address named by ``NOTIFY_SOCKET`` (abstract names start with ``@``)."""
    path = env.get("NOTIFY_SOCKET", "")
    if not path:
        return None
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    if path.startswith("/"):
        return path
    return None  # vsock addresses (vsock:CID:PORT) are for VMs; not supported here


def notify(*fields: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``fields`` (``"READY=1"``, ``"STATUS=…"``) as one datagram; return whether it was sent."""
    address = _address(os.environ if env is None else env)
    if address is None or not fields:
        return False
    message = "\n".join(f.replace("\n", " ") for f in fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as exc:
        logger.debug("sd_notify failed: %s", exc)
        return False
    return True


def ready(status: str = "running") -> bool:
    """Tell systemd the daemon is up (``Type=notify`` units leave the "activating" state)."""
    return notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")


def status(text: str) -> bool:
    """Set the one-line status shown by ``systemctl status``."""
    return notify(f"STATUS={text}")


def stopping() -> bool:
    """Tell systemd the daemon is shutting down (in-flight work is finishing)."""
    return notify("STOPPING=1", "STATUS=stopping: finishing evaluations, flushing the outbox")


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Return how often to send ``WATCHDOG=1`` (half of ``$WATCHDOG_USEC``), or None without a watchdog.

    ``$WATCHDOG_PID``, when set, must be this process (the variables leak into children otherwise).
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1e6 / 2


def watchdog() -> bool:
    """Tell systemd the daemon is alive (``WatchdogSec=``: no ping in time means a restart)."""
    return notify("WATCHDOG=1")
