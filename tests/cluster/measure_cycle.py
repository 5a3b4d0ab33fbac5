"""Time one coordination cycle and one tick claim on the local PostgreSQL (3 replicas, N groups).

Not a test (pytest does not collect it): ``.venv/bin/python tests/cluster/measure_cycle.py 1000``.
Creates and drops its own database on ``postgresql://127.0.0.1:5432/test``; figures in docs/scaling.md.
"""

import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from prometheus_client import CollectorRegistry

from watcher.cluster import leases
from watcher.cluster.member import ClusterMember
from watcher.config import Settings
from watcher.daemon import Daemon
from watcher.notify.receivers.base import RecordingReceiver
from watcher.selfmetrics import SelfMetrics

N = int(sys.argv[1])
name = f"watcher_m_{uuid.uuid4().hex[:8]}"
with psycopg.connect("postgresql://127.0.0.1:5432/test", autocommit=True) as c:
    c.execute(f'CREATE DATABASE "{name}"')
url = f"postgresql+psycopg://127.0.0.1:5432/{name}"
tmp = Path(tempfile.mkdtemp())
text = "groups:\n" + "".join(
    f"  - name: g{i}\n    interval: 1m\n    rules:\n      - alert: A{i}\n        source: calls\n"
    f"        query: {{agg: sum, field: cost_usd, window: 5m}}\n"
    f"        detector: {{kind: threshold, above: 5}}\n"
    for i in range(N)
)
(tmp / "r.yaml").write_text(text)
ms = []
try:
    for rid in ("a", "b", "c"):
        d = Daemon(
            Settings(store={"url": url}, rules=[tmp], server={"enabled": False}, cluster={"replica_id": rid}),
            receivers={"console": RecordingReceiver("console")},
            metrics=SelfMetrics(CollectorRegistry()),
        )
        ms.append(ClusterMember(d))
    for _ in range(3):
        for m in ms:
            m.cycle()
    times = []
    for _ in range(10):
        for m in ms:
            t = time.perf_counter()
            m.cycle()
            times.append(time.perf_counter() - t)
    held = [len(m.held()) for m in ms]
    m = ms[0]
    g, e = next(iter(m.held().items()))
    ct = []
    for k in range(50):
        t = time.perf_counter()
        with m.store.engine.begin() as conn:
            leases.claim_tick(conn, g, datetime.fromtimestamp(1_800_000_000 + k, UTC), m.replica_id, e)
        ct.append(time.perf_counter() - t)
    print(
        f"groups={N} held per replica={held} cycle median={statistics.median(times) * 1000:.1f} ms "
        f"max={max(times) * 1000:.1f} ms; tick claim median={statistics.median(ct) * 1000:.2f} ms"
    )
finally:
    for m in ms:
        m.daemon.close()
    with psycopg.connect("postgresql://127.0.0.1:5432/test", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
