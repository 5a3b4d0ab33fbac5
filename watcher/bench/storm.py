"""``watcher bench notify``: an alert storm end to end, from one evaluation to a loopback receiver.

This module owns one measurement: ``--alerts`` series cross a threshold in the same evaluation of
a real ``Daemon`` (SQLite store in a temporary folder, in-memory source, webhook receivers on
loopback HTTP servers that answer after ``--delay-ms``); the evaluation commits the alert state,
the notification log and the outbox rows in one transaction, then the outbox is flushed until
nothing is pending. It reports the evaluation (+ enqueue) time, the delivery time and the
latency of each message from the start of the evaluation to its acceptance (p50, p90, max), per
receiver. ``--slow-ms`` adds a second receiver that answers that slowly, to show that it does not
hold the first one back. It does not own any delivery logic.
"""

from __future__ import annotations

import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _Receiver:
    """A loopback HTTP endpoint that answers 200 after ``delay_s`` and notes when each POST arrived."""

    def __init__(self, delay_s: float) -> None:
        self.accepted: list[float] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if delay_s:
                    threading.Event().wait(delay_s)  # a receiver that takes its time
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                with owner._lock:
                    owner.accepted.append(time.perf_counter())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def run_storm(
    alerts: int, workers: int, per_receiver: int, delay_ms: float, slow_ms: float | None
) -> dict[str, Any]:
    """Run one storm and return its measurements (seconds)."""
    import yaml
    from pydantic import SecretStr

    from ..config import NotifySettings, ReceiverSettings, RouteSettings, Settings, StoreSettings
    from ..daemon import Daemon
    from ..sources.memory import MemorySource

    receivers = {"fast": _Receiver(delay_ms / 1000)}
    if slow_ms is not None:
        receivers["slow"] = _Receiver(slow_ms / 1000)
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules"
        rules.mkdir()
        group = {
            "name": "storm",
            "interval": "1m",
            "rules": [{"alert": "CostHigh", "expr": "cost", "detector": {"kind": "threshold", "above": 10}}],
        }
        (rules / "storm.yaml").write_text(yaml.safe_dump({"groups": [group]}))
        settings = Settings(
            store=StoreSettings(url=SecretStr(f"sqlite:///{tmp}/w.db")),
            rules=[rules],
            server={"enabled": False},
            receivers={
                name: ReceiverSettings(type="webhook", url=SecretStr(f"{r.url}/{name}"), timeout_s=30)
                for name, r in receivers.items()
            },
            route=RouteSettings(receivers=list(receivers)),
            notify=NotifySettings(delivery_workers=workers, delivery_per_receiver=per_receiver),
        )
        source = MemorySource()
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        for i in range(alerts):
            source.series("CostHigh", {"tenant": f"t{i:04d}"}).add(now.timestamp(), 42.0)
        d = Daemon(settings, sources={"prometheus": source})
        try:
            t0 = time.perf_counter()
            d.evaluate_group("storm", now)
            t_eval = time.perf_counter() - t0
            while d.notifier.pending_count():
                d.notifier.flush(now)
            total = time.perf_counter() - t0
        finally:
            d.close()
            for r in receivers.values():
                r.close()
    out: dict[str, Any] = {
        "alerts": alerts,
        "workers": workers,
        "per_receiver": per_receiver,
        "delay_ms": delay_ms,
        "evaluate_and_enqueue_s": round(t_eval, 3),
        "total_s": round(total, 3),
    }
    for name, r in receivers.items():
        lat = [t - t0 for t in r.accepted]
        out[name] = {
            "delivered": len(lat),
            "p50_s": round(_quantile(lat, 0.5), 3),
            "p90_s": round(_quantile(lat, 0.9), 3),
            "last_s": round(max(lat, default=float("nan")), 3),
        }
    return out
