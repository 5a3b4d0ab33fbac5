"""SQLite runs one replica: an exclusive lock file beside the database, held for the process life.

This module owns refusing a second ``watcher run`` on the same SQLite database (two daemons would
evaluate every rule twice and page twice). It uses ``fcntl.flock`` on ``<database>.lock``: the
kernel drops the lock when the process dies, however it dies, so there is never a stale lock to
clean up. The file holds the holder's pid, for the message. It does not own anything about
PostgreSQL replicas (``member``).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigError


class SingleReplicaLock:
    """The lock of one SQLite database; ``release()`` or process exit frees it."""

    schedules_groups = False

    def __init__(self, path: Path, handle: IO[str]) -> None:
        self.path = path
        self._handle: IO[str] | None = handle

    @classmethod
    def acquire(cls, database: Path) -> SingleReplicaLock:
        """Lock ``database`` for this process or raise ``ConfigError`` naming the holder."""
        path = database.with_name(database.name + ".lock")
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the process life
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ConfigError(
                f"another watcher (pid {holder}) is already running on the SQLite database {database} "
                f"(lock {path}); SQLite supports a single replica: stop the other one, or use PostgreSQL "
                "to run several replicas (see docs/scaling.md)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return cls(path, handle)

    def tick(self) -> None:
        """Do nothing: a single replica schedules its groups itself."""

    def active(self) -> bool:
        """Tell that this replica may always deliver: it is the only one."""
        return True

    def status(self) -> dict[str, Any]:
        """Return the single-replica mode for ``/readyz``."""
        return {"mode": "sqlite-single-replica", "lock": str(self.path)}

    def stop(self) -> None:
        """Release the lock (the file stays; an unlocked file means nothing)."""
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
