"""A stand-in LLM application for deploy/compose.yaml: synthetic calls through watcher's hooks.

It owns nothing of watcher: it only uses the public hooks (``watcher.instrument``) the way an
application would, so that Prometheus has LLM metrics (with trace-ID exemplars) to scrape and the
store has ``calls`` rows for the shipped rules. Every ``--spike-every`` seconds one tenant's spend
and refusals jump for a while, so alerts fire in the demo.

    python deploy/demo/app.py --port 8000 --rate 5      # WATCHER_STORE__URL picks the store
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import threading
import time
from types import FrameType

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from watcher.instrument import configure, llm_call, start_metrics_server

TENANTS = ("acme", "globex", "initech")
FEATURES = ("chat", "search", "summarize")
MODELS = ("gpt-4o-mini", "gpt-4o")


class ProviderError(Exception):
    """A simulated provider failure (rate limit, timeout)."""


def one_call(rng: random.Random, spiking: str | None) -> None:
    """Make one synthetic model call through the hooks (about 1% of them fail)."""
    # counted by the hooks as outcome="error"; a real app would retry or degrade
    with contextlib.suppress(ProviderError):
        _call(rng, spiking)


def _call(rng: random.Random, spiking: str | None) -> None:
    tenant = rng.choice(TENANTS)
    hot = tenant == spiking
    with llm_call(provider="openai", model=rng.choice(MODELS), tenant=tenant,
                  feature=rng.choice(FEATURES)) as rec:
        if rng.random() < 0.01:
            raise ProviderError("429 rate limited")
        rec.ttft_s = rng.lognormvariate(-1.5, 0.4) * (3 if hot else 1)
        rec.input_tokens = int(rng.lognormvariate(6.5, 0.5) * (8 if hot else 1))
        rec.output_tokens = int(rng.lognormvariate(5.0, 0.6))
        refused = rng.random() < (0.3 if hot else 0.02)
        rec.finish_reason = "content_filter" if refused else "stop"
        rec.duration_s = rec.ttft_s + rec.output_tokens / 80


def main() -> int:
    """Serve metrics and generate calls until SIGTERM."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--addr", default="0.0.0.0")
    ap.add_argument("--rate", type=float, default=5.0, help="calls per second")
    ap.add_argument("--spike-every", type=float, default=900.0, help="seconds between incidents")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    store = None
    url = os.environ.get("WATCHER_STORE__URL")
    if url:
        from watcher.store.db import open_store

        store = open_store(url)
    registry = CollectorRegistry()
    configure(store, registry=registry, tracer_provider=TracerProvider())
    server = start_metrics_server(args.port, addr=args.addr, registry=registry)
    print(f"demo app: metrics on {args.addr}:{server.server_port}", flush=True)

    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    rng = random.Random(args.seed)
    start = time.monotonic()
    while not stop.is_set():
        phase = (time.monotonic() - start) % args.spike_every
        spiking = TENANTS[0] if phase > args.spike_every * 0.8 else None
        one_call(rng, spiking)
        stop.wait(rng.expovariate(args.rate))
    server.shutdown()
    if store is not None:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
