"""Helpers for the replica tests: ``watcher run`` subprocesses and a loopback TCP proxy to cut."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from pathlib import Path

from tests.procs import Proc


class Replica(Proc):
    """One ``watcher run --config CONFIG`` process with its replica id set to ``name``."""

    def __init__(self, name: str, config: Path, env: dict[str, str] | None = None) -> None:
        env = {"WATCHER_CLUSTER__REPLICA_ID": name, **(env or {})}
        super().__init__(["run", "--config", str(config)], config.parent, env, name)


class TcpProxy:
    """Forward a loopback port to ``target``; ``cut()`` closes every connection and stops listening."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._cut = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._cut.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._cut.is_set():
                    client.close()
                    upstream.close()
                    return
                self._socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while not self._cut.is_set():
                for key, _ in sel.select(timeout=0.2):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = src.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        """Drop every connection and refuse new ones (the port stays closed); idempotent."""
        if self._cut.is_set():
            return
        self._cut.set()
        self._listener.close()
        with self._lock:
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
        self._thread.join(5)
