"""``watcher bench daemon``: the real daemon path end to end, on a controlled clock.

This module owns generating a store (``calls`` rows on SQLite or PostgreSQL) or a real Prometheus
(backfilled with ``promtool``) holding ``--series`` series of ``--days`` of 1-minute points, and
timing the daemon on it: ``Daemon.evaluate_group`` runs fetch → detectors → alert state machine →
store writes (alert state, notifications into the outbox) exactly as ``watcher run`` does, with the
clock passed in. It reports the cold start (the first evaluation: the detectors built from the
lookback), the steady tick (one new minute for every series) in CPU and wall seconds, peak RSS,
and series per CPU-second. It does not own the daemon, the sources or the detectors; the
detector-only view is ``watcher bench throughput``.

Method: the data is generated once per backend and size and reused (``--data-dir``; PostgreSQL: a
database of its own per size). Each case runs in a fresh child process, so its peak RSS is its
own. The data starts at a fixed instant (2026-01-05T00:00Z, Prometheus keeps it: its retention is
set to 20 years); the clock starts ``--days`` later and moves one step per tick. A fraction
``--alerting`` of the series jumps upwards during the ticks, so some alerts are pending or firing
(their trace references and annotations are built) as in production.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from queue import Empty
from typing import Any

import numpy as np

EPOCH = datetime(2026, 1, 5, tzinfo=UTC)
"""First instant of the generated data (fixed: no measurement depends on the day it runs)."""
STEP_S = 60.0
DATA_VERSION = 3
"""Bumped whenever the generated data changes, so stale prepared data is never reused."""
BACKENDS = ("sqlite", "postgresql", "prometheus")

PROMETHEUS_BIN = "/usr/bin/prometheus"
PROMTOOL_BIN = "/usr/bin/promtool"
METRIC = "llm_bench_cost_usd"

SHAPES: dict[str, dict[str, Any]] = {
    # the shipped spend rule (rules/llm-store.yaml) with an ewma baseline: sum of cost over 15 min
    # per tenant, the five costliest calls of each alert's points as trace references
    "ewma-traces": {
        "query": {"agg": "sum", "field": "cost_usd", "window": "15m", "per": "1h", "by": ["tenant"]},
        "detector": {"kind": "ewma", "sensitivity": 4, "direction": "up"},
        "min_value": 0.5,
        "for": "3m",
        "keep_firing_for": "10m",
        "traces": {"from": "rows", "top": 5, "order": "value_desc"},
    },
    # a robust rolling baseline over one day, no trace references
    "rolling": {
        "query": {"agg": "mean", "field": "cost_usd", "window": "5m", "by": ["tenant"]},
        "detector": {"kind": "rolling", "window": "1d", "sensitivity": 5, "direction": "up"},
        "for": "3m",
        "traces": {"from": "none"},
    },
    # a seasonal profile (a season of a quarter of the history: 6 hours in one day)
    "seasonal": {
        "query": {"agg": "sum", "field": "cost_usd", "window": "15m", "per": "1h", "by": ["tenant"]},
        "detector": {"kind": "seasonal", "seasons": ["6h"], "history": "1d", "direction": "up"},
        "for": "3m",
        "traces": {"from": "rows", "top": 5, "order": "value_desc"},
    },
}
ANNOTATIONS = {
    "summary": "{{ labels.tenant }} spends ${{ value | round(2) }}/h, expected ≤ ${{ upper | round(2) }}/h",
    "description": "Spend of tenant {{ labels.tenant }} is far above its usual level "
    "(typical ${{ expected | round(2) }}/h).",
}


@dataclass(frozen=True)
class DataSpec:
    """What is generated: series × (days + ticks) minutes, and which series jump during the ticks."""

    series: int
    days: float
    ticks: int
    alerting: float = 0.01
    seed: int = 19

    @property
    def history_points(self) -> int:
        return round(self.days * 86_400 / STEP_S)

    @property
    def points(self) -> int:
        return self.history_points + self.ticks + 1

    @property
    def key(self) -> str:
        """Return a name for this data set (files, databases): it changes with everything generated."""
        return f"v{DATA_VERSION}_s{self.series}_d{self.days:g}_t{self.ticks}_a{self.alerting:g}_r{self.seed}"

    def start_at(self) -> datetime:
        """Return the clock of the cold start: ``days`` after the first point."""
        return EPOCH + timedelta(seconds=self.history_points * STEP_S)


def tenant(i: int) -> str:
    """Return the label value of series ``i``."""
    return f"t{i:06d}"


def series_values(spec: DataSpec, i: int) -> np.ndarray:
    """Return one series' per-minute cost: its own level, a daily cycle, noise, and maybe a jump.

    A series among the first ``alerting`` fraction jumps twentyfold 15 minutes before the cold start.
    """
    rng = np.random.default_rng((spec.seed, i))
    ts = EPOCH.timestamp() + STEP_S * np.arange(spec.points)
    level = 10.0 ** rng.uniform(-2, 0)
    hour = (ts % 86_400.0) / 3600.0
    shape = 0.5 + np.exp(-(((hour - 14.0) / 4.0) ** 2))
    values: np.ndarray = level * shape * np.exp(rng.normal(0.0, 0.1, spec.points))
    if i < math.ceil(spec.alerting * spec.series):
        values[spec.history_points - 15 :] *= 20.0
    return values


def _chunks(spec: DataSpec, per_chunk: int = 200) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first series, values[k, points])`` blocks of series."""
    for first in range(0, spec.series, per_chunk):
        n = min(per_chunk, spec.series - first)
        yield first, np.stack([series_values(spec, first + k) for k in range(n)])


def _time_ordered_rows(spec: DataSpec, stamps: list[Any]) -> Iterator[list[tuple[Any, ...]]]:
    """Yield ``calls`` rows (trace_id, span_id, ts, model, tenant, cost_usd) minute after minute.

    Rows are written in time order, as the hooks write them, so a table's pages hold neighbouring
    minutes (a fetch of the last minutes reads a few pages, not one page per series).
    """
    values = np.concatenate([block for _, block in _chunks(spec)])
    names = [tenant(i) for i in range(spec.series)]
    for p in range(spec.points):
        at = stamps[p]
        col = values[:, p].tolist()
        yield [
            (f"{i:08x}{p:024x}", f"{p:016x}", at, "gpt-bench", names[i], col[i]) for i in range(spec.series)
        ]


# --- preparing the data -----------------------------------------------------------------------


def prepare_sqlite(spec: DataSpec, data_dir: Path, log: Callable[[str], None]) -> str:
    """Return the URL of a SQLite store holding ``spec``'s rows (built once, then reused)."""
    import sqlite3

    from ..store.db import open_store

    path = data_dir / f"sqlite_{spec.key}.db"
    done = path.with_suffix(".done")
    url = f"sqlite:///{path}"
    if done.exists() and path.exists():
        return url
    path.unlink(missing_ok=True)
    open_store(url).close()  # the schema, migrated
    t0 = time.perf_counter()
    start = EPOCH.replace(tzinfo=None)
    ts_text = [
        (start + timedelta(seconds=STEP_S * p)).strftime("%Y-%m-%d %H:%M:%S.%f") for p in range(spec.points)
    ]
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    sql = (
        "INSERT INTO calls (trace_id, span_id, ts, model, tenant, cost_usd, provider, operation, "
        "feature, input_tokens, output_tokens, cached_tokens, reasoning_tokens, tokens_estimated, "
        "cost_known, outcome) "
        "VALUES (?, ?, ?, ?, ?, ?, 'bench', 'chat', 'bench', 100, 50, 0, 0, 0, 1, 'ok')"
    )
    for p, rows in enumerate(_time_ordered_rows(spec, ts_text)):
        con.executemany(sql, rows)
        if p % 60 == 59 or p == spec.points - 1:
            con.commit()
            log(f"sqlite: {p + 1}/{spec.points} minutes loaded")
    con.execute("ANALYZE")
    con.commit()
    con.close()
    done.write_text(f"{time.perf_counter() - t0:.1f}s\n")
    return url


def _pg_admin_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def prepare_postgresql(spec: DataSpec, base_url: str, log: Callable[[str], None]) -> str:
    """Return the URL of a PostgreSQL database of its own holding ``spec``'s rows (built once)."""
    import psycopg

    from ..store.db import open_store

    name = f"watcher_bench_daemon_{spec.key}".replace(".", "_")
    url = base_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(_pg_admin_url(base_url), autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            with psycopg.connect(_pg_admin_url(url)) as conn:
                done = conn.execute("SELECT to_regclass('bench_done')").fetchone()
            if done and done[0]:
                return url
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    open_store(url).close()
    t0 = time.perf_counter()
    stamps = [EPOCH + timedelta(seconds=STEP_S * p) for p in range(spec.points)]
    with psycopg.connect(_pg_admin_url(url)) as conn:
        columns = (
            "trace_id, span_id, ts, model, tenant, cost_usd, provider, operation, feature, input_tokens, "
            "output_tokens, cached_tokens, reasoning_tokens, tokens_estimated, cost_known, outcome"
        )
        rest = ("bench", "chat", "bench", 100, 50, 0, 0, False, True, "ok")
        with conn.cursor() as cur, cur.copy(f"COPY calls ({columns}) FROM STDIN") as copy:
            for p, rows in enumerate(_time_ordered_rows(spec, stamps)):
                for row in rows:
                    copy.write_row(row + rest)
                if p % 60 == 59:
                    log(f"postgresql: {p + 1}/{spec.points} minutes loaded")
        conn.commit()
        conn.execute("ANALYZE calls")
        conn.execute("CREATE TABLE bench_done (took float)")
        conn.execute("INSERT INTO bench_done VALUES (%s)", (time.perf_counter() - t0,))
        conn.commit()
    return url


def prepare_prometheus(spec: DataSpec, data_dir: Path, log: Callable[[str], None]) -> Path:
    """Return a Prometheus data directory holding ``spec``'s series as the gauge ``METRIC``.

    The gauge is the per-minute cost, so ``sum_over_time(METRIC[15m]) * 4`` is the spend per hour
    over 15 minutes, as the store rule computes it.
    """
    root = data_dir / f"prometheus_{spec.key}"
    done = root / "done"
    if done.exists():
        return root / "data"
    shutil.rmtree(root, ignore_errors=True)
    (root / "data").mkdir(parents=True)
    t0 = time.perf_counter()
    src = root / "backfill.om"
    stamps = [f"{EPOCH.timestamp() + STEP_S * p:.0f}" for p in range(spec.points)]
    with src.open("w", encoding="utf-8") as out:
        out.write(f"# TYPE {METRIC} gauge\n")
        for first, block in _chunks(spec):
            for k in range(block.shape[0]):
                head = f'{METRIC}{{tenant="{tenant(first + k)}"}} '
                out.writelines(f"{head}{v!r} {t}\n" for v, t in zip(block[k].tolist(), stamps, strict=True))
            log(f"prometheus: {first + block.shape[0]}/{spec.series} series written")
        out.write("# EOF\n")
    blocks = root / "blocks"
    cmd = [PROMTOOL_BIN, "tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=24h"]
    subprocess.run([*cmd, str(src), str(blocks)], check=True, capture_output=True, timeout=7200)
    for made in blocks.iterdir():
        shutil.move(str(made), root / "data" / made.name)
    src.unlink()
    done.write_text(f"{time.perf_counter() - t0:.1f}s\n")
    return root / "data"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrometheusProcess:
    """A real Prometheus on a free loopback port over a prepared data directory, stopped by PID."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 300.0) -> None:
        """Start the server and wait until it is ready (loading a large TSDB takes a while)."""
        import httpx

        config = self.data.parent / "prometheus.yml"
        config.write_text("global: {scrape_interval: 1m}\nscrape_configs: []\n", encoding="utf-8")
        log = (self.data.parent / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS_BIN,
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--storage.tsdb.path={self.data}",
                "--storage.tsdb.retention.time=20y",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"prometheus exited at start-up (see {self.data.parent}/prometheus.log)"
                    )
                try:
                    if client.get(f"{self.url}/-/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError("prometheus did not become ready")
                time.sleep(0.2)

    def cpu_seconds(self) -> float:
        """Return the CPU seconds (user + system) the server process has used so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Stop the server by PID: SIGTERM, then SIGKILL."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


# --- one case ----------------------------------------------------------------------------------


@dataclass
class CaseResult:
    """The measurements of one backend × shape × size."""

    backend: str
    shape: str
    series: int
    days: float
    evaluated_series: int = 0
    cold_cpu_s: float = math.nan
    cold_wall_s: float = math.nan
    tick_cpu_s: list[float] = field(default_factory=list)
    tick_wall_s: list[float] = field(default_factory=list)
    server_cold_cpu_s: float | None = None
    server_tick_cpu_s: float | None = None
    resume_cpu_s: float | None = None
    """A restart's first evaluation (from the detector checkpoint), CPU seconds."""
    resume_wall_s: float | None = None
    checkpoint_series: int | None = None
    checkpoint_mb: float | None = None
    rss_before_mb: float = math.nan
    peak_rss_mb: float = math.nan
    alerts: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def tick_cpu(self) -> float:
        return float(np.median(self.tick_cpu_s)) if self.tick_cpu_s else math.nan

    @property
    def tick_wall(self) -> float:
        return float(np.median(self.tick_wall_s)) if self.tick_wall_s else math.nan

    @property
    def series_per_cpu_s(self) -> float:
        return self.evaluated_series / self.tick_cpu if self.tick_cpu > 0 else math.nan

    def as_dict(self) -> dict[str, Any]:
        """Return the result with its derived numbers, for ``--json``."""
        out = asdict(self)
        out.update(tick_cpu=self.tick_cpu, tick_wall=self.tick_wall, series_per_cpu_s=self.series_per_cpu_s)
        return out


def rule_file(shape: str, backend: str, days: float) -> dict[str, Any]:
    """Return the rule file of one case: one group, one rule of ``shape``, ticking every minute."""
    rule: dict[str, Any] = {"alert": "BenchSpend", **json.loads(json.dumps(SHAPES[shape]))}
    rule["annotations"] = ANNOTATIONS
    rule["labels"] = {"severity": "page"}
    det = rule["detector"]
    if det["kind"] == "rolling":
        det["window"] = f"{round(days * 1440)}m"
    if det["kind"] == "seasonal":  # four seasons in the history, whatever its length
        det["history"] = f"{round(days * 1440)}m"
        det["seasons"] = [f"{round(days * 1440 / 4)}m"]
    if backend == "prometheus":
        query = rule.pop("query")
        window = query["window"]
        expr = f"sum_over_time({METRIC}[{window}])"
        if query["agg"] == "mean":
            expr = f"avg_over_time({METRIC}[{window}])"
        elif "per" in query:
            expr += f" * {3600 / _seconds(window):g}"
        rule["expr"] = expr
        # the backfilled series have no exemplars; the rule still asks (as the shipped pack does)
        if rule["traces"].get("from") == "rows":
            rule["traces"] = {"from": "exemplars", "metric": METRIC, "top": 5}
    else:
        rule["source"] = "calls"
    return {"groups": [{"name": "bench", "interval": "1m", "rules": [rule]}]}


def _seconds(text: str) -> float:
    from ..core import parse_duration

    return parse_duration(text).total_seconds()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_case(
    backend: str, shape: str, spec: DataSpec, target: str, workdir: Path, ticks: int, resume: bool = True
) -> CaseResult:
    """Run one case in this process: build the daemon, cold start, ``ticks`` steady ticks, a restart.

    ``target`` is the store URL (SQLite, PostgreSQL) or the Prometheus data directory. With
    ``resume``, a second daemon on the same store then evaluates the next tick, resuming from the
    detector checkpoint the first one wrote at its cold start.
    """
    import yaml

    from ..config import PrometheusEndpoint, Settings, StoreSettings
    from ..daemon import Daemon
    from ..store.db import open_store

    res = CaseResult(backend, shape, spec.series, spec.days)
    rules = workdir / "rules.yaml"
    rules.write_text(
        yaml.safe_dump(rule_file(shape, backend, spec.days), allow_unicode=True), encoding="utf-8"
    )
    prom: PrometheusProcess | None = None
    store_url = target if backend != "prometheus" else f"sqlite:///{workdir}/state.db"
    store = open_store(store_url)
    _reset_state(store)
    settings_kw: dict[str, Any] = {}
    daemon: Daemon | None = None
    try:
        if backend == "prometheus":
            prom = PrometheusProcess(Path(target))
            prom.start()
            settings_kw["prometheus"] = {"bench": PrometheusEndpoint(url=prom.url, timeout_s=600)}
        settings = Settings(store=StoreSettings(url=store_url), rules=[rules], **settings_kw)
        now = spec.start_at()
        daemon = Daemon(settings, store=store, clock=lambda: now)
        res.rss_before_mb = _rss_mb()
        server0 = prom.cpu_seconds() if prom else 0.0
        c0, w0 = time.process_time(), time.perf_counter()
        result = daemon.evaluate_group("bench", now)
        res.cold_cpu_s, res.cold_wall_s = time.process_time() - c0, time.perf_counter() - w0
        if prom:
            res.server_cold_cpu_s = prom.cpu_seconds() - server0
        res.evaluated_series = sum(h.series or 0 for h in result.health)
        bad = [h.error for h in result.health if not h.ok]
        if bad:
            raise RuntimeError(f"evaluation failed: {bad[0]}")
        server_ticks = 0.0
        for k in range(1, ticks + 1):
            at = now + timedelta(seconds=STEP_S * k)
            server0 = prom.cpu_seconds() if prom else 0.0
            c0, w0 = time.process_time(), time.perf_counter()
            result = daemon.evaluate_group("bench", at)
            res.tick_cpu_s.append(time.process_time() - c0)
            res.tick_wall_s.append(time.perf_counter() - w0)
            if prom:
                server_ticks += prom.cpu_seconds() - server0
            bad = [h.error for h in result.health if not h.ok]
            if bad:
                raise RuntimeError(f"evaluation failed: {bad[0]}")
        if prom and ticks:
            res.server_tick_cpu_s = server_ticks / ticks
        for alert in result.alerts:
            res.alerts[str(alert.state)] = res.alerts.get(str(alert.state), 0) + 1
        res.peak_rss_mb = _rss_mb()
        if resume:
            # A restart: a new daemon on the same store resumes from the checkpoint written at the
            # cold start (``checkpoint_interval``) and evaluates the next tick.
            with store.engine.connect() as conn:
                n, size = conn.exec_driver_sql(
                    "SELECT count(*), coalesce(sum(length(state)), 0) FROM detector_state"
                ).one()
            res.checkpoint_series, res.checkpoint_mb = int(n), int(size) / 2**20
            daemon.close()
            daemon = None
            store = open_store(store_url)
            at = now + timedelta(seconds=STEP_S * (ticks + 1))
            c0, w0 = time.process_time(), time.perf_counter()
            daemon = Daemon(settings, store=store, clock=lambda: at)
            result = daemon.evaluate_group("bench", at)
            res.resume_cpu_s, res.resume_wall_s = time.process_time() - c0, time.perf_counter() - w0
            bad = [h.error for h in result.health if not h.ok]
            if bad:
                raise RuntimeError(f"evaluation failed: {bad[0]}")
    finally:
        if daemon is not None:
            daemon.close()  # the outbox's threads, the sources' sessions, the store
        else:
            store.close()
        if prom is not None:
            prom.stop()
    return res


def _reset_state(store: Any) -> None:
    """Empty the tables the daemon writes (alerts, notifications), so every case starts cold."""
    with store.engine.begin() as conn:
        for table in ("alerts", "notification_log", "outbox", "eval_runs", "detector_state"):
            conn.exec_driver_sql(f"DELETE FROM {table}")


def _child(queue: Any, args: tuple[Any, ...]) -> None:
    try:
        queue.put(run_case(*args).as_dict())
    except Exception as exc:  # reported as the case's error, the other cases go on
        backend, shape, spec = args[:3]
        res = CaseResult(backend, shape, spec.series, spec.days, error=f"{type(exc).__name__}: {exc}")
        queue.put(res.as_dict())


def run_isolated(
    backend: str, shape: str, spec: DataSpec, target: str, ticks: int, resume: bool = True
) -> dict[str, Any]:
    """Run one case in a fresh (spawned) process and return its result as a dict."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="watcher-bench-daemon-") as tmp:
        proc = ctx.Process(
            target=_child, args=(queue, (backend, shape, spec, target, Path(tmp), ticks, resume))
        )
        proc.start()
        while True:
            try:
                got: dict[str, Any] = queue.get(timeout=1.0)
                break
            except Empty:
                if not proc.is_alive():  # died before reporting (killed, out of memory, bad import)
                    error = f"the case's process exited with code {proc.exitcode} without a result"
                    got = CaseResult(backend, shape, spec.series, spec.days, error=error).as_dict()
                    break
        proc.join()
    return got


# --- the command -------------------------------------------------------------------------------


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{digits}f}"


def table(results: list[dict[str, Any]]) -> str:
    """Return the results as a Markdown table (the rows of docs/benchmarks.md)."""
    head = (
        "| backend | shape | series | cold start CPU s (wall) | steady tick CPU s (wall) "
        "| server CPU s cold / tick | peak RSS MB | series per CPU-s | restart from checkpoint CPU s (wall) "
        "| checkpoint MB | alerts |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in results:
        if r.get("error"):
            lines.append(f"| {r['backend']} | {r['shape']} | {r['series']:,} | error: {r['error']} |||||||")
            continue
        server = (
            f"{_fmt(r['server_cold_cpu_s'])} / {_fmt(r['server_tick_cpu_s'], 3)}"
            if r["server_cold_cpu_s"] is not None
            else "–"
        )
        alerts = ", ".join(f"{k} {v}" for k, v in sorted(r["alerts"].items())) or "none"
        lines.append(
            f"| {r['backend']} | {r['shape']} | {r['evaluated_series']:,} "
            f"| {_fmt(r['cold_cpu_s'])} ({_fmt(r['cold_wall_s'])}) "
            f"| {_fmt(r['tick_cpu'], 3)} ({_fmt(r['tick_wall'], 3)}) | {server} "
            f"| {_fmt(r['peak_rss_mb'], 0)} | {_fmt(r['series_per_cpu_s'], 0)} "
            f"| {_fmt(r.get('resume_cpu_s'))} ({_fmt(r.get('resume_wall_s'))}) "
            f"| {_fmt(r.get('checkpoint_mb'), 1)} | {alerts} |"
        )
    return "\n".join(lines)


def run_all(
    *,
    sizes: Sequence[int],
    backends: Sequence[str],
    shapes: Sequence[str],
    days: float,
    ticks: int,
    alerting: float,
    data_dir: Path,
    pg_url: str,
    restart: bool = True,
    log: Callable[[str], None] = lambda _: None,
    each: Callable[[dict[str, Any]], None] = lambda _: None,
) -> list[dict[str, Any]]:
    """Prepare the data, then run every size × backend × shape case; return their results.

    ``each`` is called with every result as it comes (the CLI prints a row at once).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for n in sizes:
        spec = DataSpec(n, days, ticks, alerting)
        for backend in backends:
            if backend == "sqlite":
                target = prepare_sqlite(spec, data_dir, log)
            elif backend == "postgresql":
                target = prepare_postgresql(spec, pg_url, log)
            else:
                target = str(prepare_prometheus(spec, data_dir, log))
            for shape in shapes:
                got = run_isolated(backend, shape, spec, target, ticks, restart)
                results.append(got)
                each(got)
    return results


__all__ = [
    "SHAPES",
    "CaseResult",
    "DataSpec",
    "prepare_postgresql",
    "prepare_prometheus",
    "prepare_sqlite",
    "rule_file",
    "run_all",
    "run_case",
    "series_values",
]
