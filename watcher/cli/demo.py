"""``watcher demo``: a self-contained LLM incident, end to end, on the embedded store.

This module owns the synthetic traffic (several tenants, features and models with daily and
weekly seasonality, generated *through the hooks* into a fresh SQLite file), the injected
incidents, and the compressed-time replay of the shipped rules with the real engine and notifier.
It does not own any detection or delivery logic: it drives the same ``Daemon`` that ``watcher run``
uses, with a simulated clock.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from ..config import ReceiverSettings, RouteSettings, Settings, StoreSettings, shipped_rules_dir
from ..core import AlertState
from ..daemon import Daemon
from ..notify.receivers.console import ConsoleReceiver

STEP = timedelta(minutes=5)
REPLAY = timedelta(hours=48)

TENANTS = (("acme", 0.35), ("globex", 0.25), ("initech", 0.25), ("umbrella", 0.15))
# feature → (model, provider, median TTFT s, input tokens, output tokens)
FEATURES = {
    "support-rag": ("gpt-4o-mini", "openai", 0.35, 2400, 260),
    "summarize": ("claude-sonnet-4", "anthropic", 0.55, 3000, 350),
    "agent": ("gpt-4o", "openai", 0.50, 1800, 220),
}
FEATURE_SHARE = (("support-rag", 0.45), ("summarize", 0.30), ("agent", 0.25))
# USD per 1M tokens (input, output): the demo's own price list so its numbers never drift.
PRICES = {"gpt-4o-mini": (0.15, 0.60), "claude-sonnet-4": (3.0, 15.0), "gpt-4o": (2.5, 10.0)}
REFUSAL_RATE = 0.02
PROMPTS = {"support-rag": "rag-v7", "summarize": "sum-v3", "agent": "agent-v12"}
"""The prompt version each feature runs; the groundedness incident is a canary of ``CANARY``."""
CANARY = ("support-rag", "rag-v8", 0.8)
SAME_SIGNAL = {"GroundednessDrop": ("GroundednessDrift",)}
"""Shipped rules that watch an incident's signal too: their alert on it is a detection, not a false one."""
"""(feature, prompt version, share of the feature's calls) rolled out as the groundedness incident starts."""


@dataclass(frozen=True, slots=True)
class Incident:
    """One injected incident and the alert that should catch it."""

    name: str
    start: datetime
    end: datetime | None
    rule: str
    labels: dict[str, str]

    def covers(self, ts: datetime, slack: timedelta) -> bool:
        """Tell whether ``ts`` falls inside the incident (plus ``slack`` after its end)."""
        end = self.end + slack if self.end is not None else datetime.max.replace(tzinfo=UTC)
        return self.start <= ts <= end


def _pick(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([k for k, _ in table], weights=[w for _, w in table])[0]


def _rate_per_minute(ts: datetime) -> float:
    """Return the expected calls per minute at ``ts``: daily peak at 14:00 UTC, quieter weekends."""
    hour = ts.hour + ts.minute / 60
    daily = 1.0 + 0.65 * math.sin(2 * math.pi * (hour - 8) / 24)
    weekly = 0.7 if ts.weekday() >= 5 else 1.0
    return 7.0 * daily * weekly


class Traffic:
    """Generates calls and scores through ``watcher.instrument`` on a simulated clock."""

    def __init__(self, seed: int, incidents: list[Incident]) -> None:
        self.rng = random.Random(seed)
        self.canary = random.Random(seed + 1)  # its own stream: the rest of the traffic is unchanged
        self.now = datetime(2000, 1, 1, tzinfo=UTC)
        self.incidents = {i.rule: i for i in incidents}
        self.calls = 0
        self.scores = 0

    def clock(self) -> datetime:
        """Return the simulated time (the hooks' clock)."""
        return self.now

    def _active(self, rule: str, ts: datetime) -> bool:
        inc = self.incidents.get(rule)
        return inc is not None and inc.covers(ts, timedelta(0))

    def minute(self, start: datetime) -> None:
        """Generate one minute of traffic starting at ``start``."""
        rng = self.rng
        n = _poisson(rng, _rate_per_minute(start))
        for _ in range(n):
            tenant = _pick(rng, TENANTS)
            feature = _pick(rng, FEATURE_SHARE)
            self._call(start + timedelta(seconds=rng.uniform(0, 59.9)), tenant, feature, runaway=False)
        if self._active("SpendAnomaly", start):
            # A runaway agent loop: globex's agent re-plans in a tight loop with a growing context.
            for _ in range(_poisson(rng, 9.0)):
                self._call(start + timedelta(seconds=rng.uniform(0, 59.9)), "globex", "agent", runaway=True)

    def _call(self, ts: datetime, tenant: str, feature: str, *, runaway: bool) -> None:
        from ..instrument import llm_call, record_score

        rng = self.rng
        model, provider, ttft_median, tin, tout = FEATURES[feature]
        self.now = ts
        prompt = PROMPTS[feature]
        canary = feature == CANARY[0] and self._active("GroundednessDrop", ts)
        if canary and self.canary.random() < CANARY[2]:
            prompt = CANARY[1]
        with llm_call(
            provider=provider,
            model=model,
            operation="chat",
            tenant=tenant,
            feature=feature,
            user_id=f"user-{rng.randrange(5000)}",
            prompt_version=prompt,
            temperature=0.2,
        ) as rec:
            rec.input_tokens = int(tin * rng.lognormvariate(0, 0.35) * (4 if runaway else 1))
            rec.output_tokens = int(tout * rng.lognormvariate(0, 0.4))
            pin, pout = PRICES[model]
            rec.cost_usd = (rec.input_tokens * pin + rec.output_tokens * pout) / 1e6
            rec.ttft_s = ttft_median * rng.lognormvariate(0, 0.3)
            rec.duration_s = rec.ttft_s + rec.output_tokens / rng.uniform(60, 90)
            rec.response_model = model
            refused = rng.random() < REFUSAL_RATE
            rec.finish_reason = "content_filter" if refused else "stop"
            rec.refused = refused
            trace_id = rec.trace_id
        self.calls += 1
        if feature == "support-rag" and not refused:
            # the canary's prompt ignores the retrieved documents
            value = rng.betavariate(5.5, 4.5) if prompt == CANARY[1] else rng.betavariate(17.2, 2.8)
            record_score(
                trace_id,
                "groundedness",
                round(value, 4),
                source="judge",
                evaluator="demo-judge",
                tenant=tenant,
                feature=feature,
                model=model,
                ts=ts + timedelta(seconds=2),
            )
            self.scores += 1


def _poisson(rng: random.Random, lam: float) -> int:
    # Knuth's method is fine for the small rates here.
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _minutes(start: datetime, end: datetime) -> Iterator[datetime]:
    t = start
    while t < end:
        yield t
        t += timedelta(minutes=1)


DEFAULT_PORT = 9464


def _say(progress: TextIO | None, text: str) -> None:
    """Print one progress line (to stderr by default; nothing with ``-q``)."""
    if progress is not None:
        print(f"watcher demo: {text}", file=progress, flush=True)


def run_demo(
    *,
    db: Path,
    days: int = 4,
    seed: int = 7,
    out: TextIO,
    end: datetime | None = None,
    progress: TextIO | None = None,
    external_url: str = f"http://localhost:{DEFAULT_PORT}",
    serving: bool = False,
) -> int:
    """Generate traffic with two incidents into ``db``, replay the shipped rules, print the alerts.

    ``progress`` gets one line per phase (and per simulated day / replayed 12 hours) with counts.
    ``external_url`` is where the alerts' status-page links point (``watcher demo --serve``'s
    server); without ``serving`` the last line says how to see the result.
    """
    from .. import instrument
    from ..instrument.writer import StoreWriter
    from ..store.db import open_store
    from ..store.markers import Marker, add_marker

    t_start = time.perf_counter()
    days = max(3, days)
    end = end or datetime.now(UTC)
    end = end.replace(second=0, microsecond=0) - timedelta(minutes=end.minute % 5)
    begin = end - timedelta(days=days)
    incidents = [
        Incident(
            "groundedness drop on feature support-rag (prompt rag-v8, canaried to 80 % of its calls, "
            "ignores the retrieved documents)",
            end - timedelta(hours=10),
            end - timedelta(hours=8, minutes=30),
            "GroundednessDrop",
            {"feature": "support-rag"},
        ),
        Incident(
            "runaway agent loop: tenant globex's spend ×8, still going",
            end - timedelta(minutes=50),
            None,
            "SpendAnomaly",
            {"tenant": "globex"},
        ),
    ]
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    store = open_store(f"sqlite:///{db}")
    traffic = Traffic(seed, incidents)
    writer = StoreWriter(store, batch_size=2000)
    instrument.configure(store, writer=writer, clock=traffic.clock, metrics=False)
    _say(progress, f"phase 1/3: generating {days} days of LLM traffic with 2 incidents into {db}")
    minutes_per_day = 24 * 60
    try:
        for i, minute in enumerate(_minutes(begin, end)):
            traffic.minute(minute)
            if i % 60 == 59:  # a generator outruns the hooks' background finishing: let it catch up
                instrument.flush(timeout=60)
            if i % minutes_per_day == minutes_per_day - 1:
                day = (i + 1) // minutes_per_day
                _say(
                    progress,
                    f"  day {day}/{days}: {traffic.calls:,} calls, {traffic.scores:,} scores "
                    f"({time.perf_counter() - t_start:.0f}s)",
                )
        instrument.flush(timeout=60)
    finally:
        instrument.reset()
        writer.close()
    gen_s = time.perf_counter() - t_start

    print(
        f"watcher demo: simulated {days} days of LLM traffic ({traffic.calls:,} calls, "
        f"{traffic.scores:,} groundedness scores) into {db} in {gen_s:.1f}s",
        file=out,
    )
    print("incidents injected:", file=out)
    for inc in incidents:
        until = f"{inc.end:%H:%M}Z" if inc.end else "now"
        print(f"  • {inc.start:%Y-%m-%d %H:%M}Z – {until}  {inc.name}", file=out)
    # The canary's release marker, as a deploy pipeline would post it (POST /api/v1/annotations).
    marker = add_marker(
        store,
        Marker(
            incidents[0].start,
            "prompt_version",
            f"{CANARY[1]} canary",
            {"feature": CANARY[0], "prompt_version": CANARY[1]},
            created_by="demo",
        ),
        now=incidents[0].start,
    )
    print(f"release marker: {marker.title()} at {marker.ts:%Y-%m-%d %H:%M}Z {dict(marker.labels)}", file=out)
    print(
        f"replaying the last {int(REPLAY.total_seconds() // 3600)}h through the shipped rules "
        f"({shipped_rules_dir()}), one evaluation every {int(STEP.total_seconds() // 60)}m …\n",
        file=out,
    )

    settings = Settings(
        store=StoreSettings(url=f"sqlite:///{db}"),
        rules=[shipped_rules_dir()],
        receivers={"console": ReceiverSettings(type="console")},
        route=RouteSettings(receivers=["console"]),
        external_url=external_url,
    )
    steps = int(REPLAY / STEP) + 1
    _say(
        progress,
        f"phase 2/3: replaying the last {int(REPLAY.total_seconds() // 3600)}h through the shipped rules "
        f"({steps} evaluations of each group)",
    )
    sim = {"now": end - REPLAY}
    daemon = Daemon(
        settings, store=store, receivers={"console": ConsoleReceiver(stream=out)}, clock=lambda: sim["now"]
    )
    fired: dict[tuple[str, str], datetime] = {}
    fired_labels: dict[tuple[str, str], dict[str, str]] = {}
    t = end - REPLAY
    try:
        while t <= end:
            sim["now"] = t
            for name in list(daemon.evaluators):
                result = daemon.evaluate_group(name, t)
                for a in result.alerts:
                    if a.state is AlertState.FIRING and a.fired_at is not None:
                        fired.setdefault((a.rule, a.fingerprint), a.fired_at)
                        fired_labels[(a.rule, a.fingerprint)] = dict(a.labels)
            daemon.flush(t)
            t += STEP
            done = int((t - (end - REPLAY)) / STEP)
            if done % int(timedelta(hours=12) / STEP) == 0 and t <= end:
                _say(
                    progress,
                    f"  replayed {int((t - (end - REPLAY)).total_seconds() // 3600)}h: "
                    f"{len(fired)} alert(s) fired so far ({time.perf_counter() - t_start:.0f}s)",
                )
    finally:
        daemon.close()
    _say(progress, "phase 3/3: matching the alerts with the injected incidents")

    detected, false_alerts = [], []
    for (rule, fp), at in sorted(fired.items(), key=lambda kv: kv[1]):
        labels = fired_labels[(rule, fp)]
        match = next(
            (
                i
                for i in incidents
                if rule in (i.rule, *SAME_SIGNAL.get(i.rule, ()))
                and all(labels.get(k) == v for k, v in i.labels.items())
                and i.covers(at, timedelta(hours=1))
            ),
            None,
        )
        if match is None:
            false_alerts.append(f"{rule} {labels}")
        else:
            detected.append(f"{rule} {int((at - match.start).total_seconds() // 60)}m after onset")
    found = {d.split()[0] for d in detected}
    n_found = sum(1 for i in incidents if i.rule in found)
    print(
        f"summary: {n_found}/{len(incidents)} incidents detected ({'; '.join(detected) or 'none'}), "
        f"{len(false_alerts)} alerts outside them{': ' + ', '.join(false_alerts) if false_alerts else ''}; "
        f"{time.perf_counter() - t_start:.1f}s in all. Database kept at {db}.",
        file=out,
    )
    if not serving:
        print(
            "\nto browse these alerts, their charts and trace links on the status page: "
            f"watcher demo --serve (runs the demo again, then serves it at {external_url}/ "
            "or, if that port is taken, on a free one it prints, until Ctrl-C)",
            file=out,
        )
    return 0


def pick_port(host: str, port: int | None) -> int:
    """Return the port ``watcher demo --serve`` will listen on, checked free now.

    ``None``: 9464 (``watcher run``'s) when free, else any free port; ``0``: any free port; else
    exactly ``port``, which must be free (``UsageError`` otherwise, before minutes of simulation).
    """
    import socket

    from .common import UsageError

    def bind(p: int) -> int | None:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            try:
                sock.bind((host, p))
            except OSError:
                return None
            return int(sock.getsockname()[1])

    if port is None:
        return bind(DEFAULT_PORT) or bind(0) or 0
    got = bind(port)
    if got is None:
        raise UsageError(f"cannot listen on {host}:{port} (port in use?): pick another --port, or 0")
    return got


def serve(
    db: Path,
    host: str,
    port: int,
    out: TextIO,
    stop: threading.Event | None = None,
    end: datetime | None = None,
) -> int:
    """Serve the demo database's status page on ``host:port`` until Ctrl-C, SIGTERM or ``stop``.

    With ``end`` (``watcher demo --end``) the page's clock stands at the end of the simulated
    traffic, so its charts show the demo's hours; otherwise it is the wall clock.
    """
    import signal

    from ..web.app import PortInUseError, ServerThread, build_app
    from .common import UsageError

    url = f"http://{host}:{port}"
    settings = Settings(
        store=StoreSettings(url=f"sqlite:///{db}"),
        rules=[shipped_rules_dir()],
        receivers={"console": ReceiverSettings(type="console")},
        route=RouteSettings(receivers=["console"]),
        external_url=url,
    )
    receivers = {"console": ConsoleReceiver(stream=out)}
    if end is None:
        daemon = Daemon(settings, receivers=receivers)
    else:
        daemon = Daemon(settings, receivers=receivers, clock=lambda: end)
    stop = stop or threading.Event()
    try:
        try:
            server = ServerThread(build_app(daemon), host, port).start()
        except PortInUseError as exc:
            raise UsageError(f"cannot listen on {host}:{port} ({exc.reason}): pick another --port") from None
        except RuntimeError as exc:
            raise UsageError(str(exc)) from None
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: stop.set())
        try:
            print(f"serving the demo's status page at {url}/ (Ctrl-C to stop)", file=out, flush=True)
            while not stop.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            server.stop(timeout=5.0)
    finally:
        daemon.close()
    print("stopped serving", file=out, flush=True)
    return 0
