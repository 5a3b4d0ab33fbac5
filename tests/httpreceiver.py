"""A real HTTP endpoint on loopback that records what it receives, standing in for Slack & co.

``HTTPReceiver`` runs a ``ThreadingHTTPServer`` on 127.0.0.1 and a free port in a daemon thread.
Each request is recorded as ``(path, headers, body)`` where body is the parsed JSON or the raw text;
replies follow a programmable status sequence (``statuses=[500, 200]``: first 500, then 200 for
ever, the last status repeating). Status ``CLOSE`` (0) drops the connection without an answer,
as a crashing proxy does; ``hold()`` keeps every request waiting for its answer until ``release()``
(a receiver that hangs), without any sleep.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

CLOSE = 0
"""A status that closes the connection without answering."""


class HTTPReceiver:
    """A recording HTTP server; use as a context manager."""

    def __init__(self, statuses: list[int] | None = None, *, reply: str = "ok") -> None:
        self._statuses = list(statuses or [200])
        self._reply = reply.encode()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._requests: list[tuple[str, dict[str, str], Any]] = []
        self._raw: list[bytes] = []
        self._served: list[int] = []
        self._open = threading.Event()
        self._open.set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        """Return the port the server listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Return the server's base URL (``http://127.0.0.1:PORT``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[tuple[str, dict[str, str], Any]]:
        """Return a copy of the requests received so far, in order."""
        with self._lock:
            return list(self._requests)

    @property
    def raw_bodies(self) -> list[bytes]:
        """Return the body of each request as it arrived (the exact bytes), in order."""
        with self._lock:
            return list(self._raw)

    @property
    def served_statuses(self) -> list[int]:
        """Return the status answered to each request, in order."""
        with self._lock:
            return list(self._served)

    def set_statuses(self, statuses: list[int]) -> None:
        """Replace the status sequence for the requests still to come."""
        with self._lock:
            self._statuses = list(statuses)

    def hold(self) -> None:
        """Keep the requests from now on waiting for their answer (they are recorded on arrival)."""
        self._open.clear()

    def release(self) -> None:
        """Answer the held requests, and the next ones at once."""
        self._open.set()

    def wait_for(self, n: int, timeout: float = 5.0) -> list[tuple[str, dict[str, str], Any]]:
        """Wait until at least ``n`` requests arrived; return them or raise ``TimeoutError``."""
        end = time.monotonic() + timeout
        with self._cond:
            while len(self._requests) < n:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"expected {n} request(s), got {len(self._requests)}")
                self._cond.wait(min(left, 0.05))
            return list(self._requests)

    def _record(self, path: str, headers: dict[str, str], raw: bytes) -> int:
        text = raw.decode("utf-8", "replace")
        try:
            body: Any = json.loads(text) if text else None
        except ValueError:
            body = text
        with self._cond:
            status = self._statuses.pop(0) if len(self._statuses) > 1 else self._statuses[0]
            self._requests.append((path, headers, body))
            self._raw.append(raw)
            self._served.append(status)
            self._cond.notify_all()
        return status

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status = owner._record(self.path, dict(self.headers.items()), raw)
                owner._open.wait()
                if status == CLOSE:
                    self.close_connection = True
                    return
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(owner._reply)))
                self.end_headers()
                self.wfile.write(owner._reply)

            do_POST = do_PUT = do_GET = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> HTTPReceiver:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server and release its socket."""
        self._open.set()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
