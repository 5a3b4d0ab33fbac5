"""``watcher bench``: the argument parsing and printing of every benchmark (``watcher.bench``).

This module owns the ``bench`` subcommands' options and their one-line (or JSON) reports. It does
not own any measurement (``watcher.bench.*``). Imports stay lazy: ``watcher --help`` must not pay
for numpy.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``watcher bench detection|flagrate|llm-suite|throughput|daemon|…|faults|contribution``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "bench", help="detection, flag-rate, throughput, hooks, ingest and notification-storm benchmarks"
    )
    sub = p.add_subparsers(
        dest="bench",
        required=True,
        metavar="detection|flagrate|llm-suite|throughput|daemon|cluster|hooks|ingest|notify|backtest|faults|contribution",
    )
    det = sub.add_parser("detection", help="score detectors on a labelled corpus (window-based, 0-100)")
    det.add_argument("--corpus", help="corpus directory (data/**/*.csv + labels JSON); default: generated")
    det.add_argument("--labels", help="labels JSON (default: the corpus' labels/*.json or labels.json)")
    det.add_argument("--detector", action="append", help="detector kind or baseline (repeatable)")
    det.add_argument("--for", dest="for_", default="10m", help="persistence before a point pages (10m)")
    det.add_argument("--write-corpus", metavar="DIR", help="write the generated corpus to DIR and exit")
    det.add_argument("--json", action="store_true", help="print the full results as JSON")
    det.add_argument("--per-file", action="store_true", help="print per-file precision/recall/TTD")
    det.add_argument(
        "--corpus-set",
        choices=("standard", "hardened", "both"),
        default="standard",
        help="generated corpus section(s): standard (comparable with earlier numbers), hardened "
        "(heavy tails, zeros, quantisation, bursts, messy timestamps) or both, reported separately",
    )
    det.add_argument("--no-peers", action="store_true", help="leave out the other libraries' detectors")
    det.add_argument(
        "--only", action="append", metavar="SUBSTR", help="only files whose path contains SUBSTR (repeatable)"
    )
    det.set_defaults(func=main_detection)
    fr = sub.add_parser(
        "flagrate", help="flags per 10,000 points at default sensitivity on real anomaly-free series"
    )
    fr.add_argument("--detector", action="append", help="detector kind (repeatable; default: all)")
    fr.add_argument("--dataset", action="append", help="only datasets whose name contains this (repeatable)")
    fr.add_argument(
        "--spacing",
        default="1h",
        help="time step between the real datasets' points: a duration (1h, the default, so the default "
        "windows hold enough points of even a 100-point series) or 'native' (each dataset's own period: "
        "year, quarter, month, week, 30 min); generated series keep their own timestamps",
    )
    fr.add_argument("--no-generated", action="store_true", help="leave out the generated no-label series")
    fr.add_argument(
        "--sustained", action="store_true", help="set `sustained: true` on the kinds that take it"
    )
    fr.add_argument("--json", action="store_true", help="print the results as JSON")
    fr.set_defaults(func=main_flagrate)
    llm = sub.add_parser(
        "llm-suite", help="the shipped rules' detectors on a simulated LLM application (5 weeks, 1 minute)"
    )
    llm.add_argument("--for", dest="for_", default="5m", help="persistence before a flagged run pages (5m)")
    llm.add_argument("--no-floors", action="store_true", help="ignore the rules' min_value/max_value")
    llm.add_argument("--only", action="append", metavar="SUBSTR", help="only series whose name has SUBSTR")
    llm.add_argument(
        "--sustained",
        action="store_true",
        help="run the rules' statistical detectors with `sustained: true` (the run's mean alone can flag)",
    )
    llm.add_argument("--json", action="store_true", help="print the results as JSON")
    llm.set_defaults(func=main_llm_suite)
    thr = sub.add_parser(
        "throughput",
        help="the detector-kernel view: start-up and steady-state ticks of the detectors alone "
        "(the whole daemon path: bench daemon)",
    )
    thr.add_argument("--series", type=int, default=10_000)
    thr.add_argument("--history", default="7d")
    thr.add_argument("--step", default="1m")
    thr.add_argument("--ticks", type=int, default=5, help="steady-state ticks to time")
    thr.add_argument(
        "--startup-sample", type=int, default=100, help="series whose start-up is timed (then cloned)"
    )
    thr.add_argument("--detector", action="append", help="detector kind (repeatable)")
    thr.set_defaults(func=main_throughput)
    add_daemon_bench_parser(sub)
    add_cluster_bench_parser(sub)
    add_hooks_bench_parser(sub)
    add_ingest_bench_parser(sub)
    add_storm_parser(sub)
    add_backtest_bench_parser(sub)
    add_faults_parser(sub)
    add_contribution_bench_parser(sub)
    return p


DAEMON_SHAPES = ("ewma-traces", "rolling", "seasonal")
"""The rule shapes of ``watcher.bench.daemon.SHAPES`` (named here so ``--help`` needs no numpy)."""
DAEMON_BACKENDS = ("sqlite", "postgresql", "prometheus")


def add_daemon_bench_parser(bench_subparsers: Any) -> argparse.ArgumentParser:
    """Register ``watcher bench daemon`` on the ``bench`` command's subparsers."""
    import tempfile
    from pathlib import Path

    p: argparse.ArgumentParser = bench_subparsers.add_parser(
        "daemon",
        help="the real daemon end to end (store → rules → sources → detectors → alert state → store)",
    )
    p.add_argument("--backend", action="append", choices=DAEMON_BACKENDS, help="(repeatable; default sqlite)")
    p.add_argument(
        "--shape", action="append", choices=DAEMON_SHAPES, help="rule shape (repeatable; default ewma-traces)"
    )
    p.add_argument("--series", action="append", type=int, help="series count (repeatable; default 1000)")
    p.add_argument("--days", type=float, default=1.0, help="history before the cold start (1)")
    p.add_argument("--ticks", type=int, default=5, help="steady ticks timed after the cold start (5)")
    p.add_argument("--alerting", type=float, default=0.01, help="fraction of series that jump (0.01)")
    p.add_argument(
        "--data-dir",
        default=str(Path(tempfile.gettempdir()) / "watcher-bench-daemon"),
        help="where generated stores and Prometheus data are kept and reused",
    )
    p.add_argument(
        "--pg-url",
        default="postgresql+psycopg://127.0.0.1:5432/test",
        help="PostgreSQL server (a database of its own per data set is created there)",
    )
    p.add_argument("--no-restart", action="store_true", help="skip the restart from the detector checkpoint")
    p.add_argument("--allow-100k", action="store_true", help="allow more than 10,000 series")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=main_daemon_bench)
    return p


def main_daemon_bench(args: argparse.Namespace) -> int:
    """Run ``watcher bench daemon``: a row per case as it comes, then the whole table (or JSON)."""
    from pathlib import Path

    sizes = args.series or [1_000]
    if any(n > 10_000 for n in sizes) and not args.allow_100k:
        print("more than 10,000 series needs --allow-100k (hours of data generation and GBs of disk)")
        return 2
    from ..bench.daemon import run_all, table

    def log(msg: str) -> None:
        if not args.json:
            print(f"  … {msg}", flush=True)

    def each(row: dict[str, Any]) -> None:
        if not args.json:
            print(table([row]).splitlines()[-1], flush=True)

    results = run_all(
        sizes=sizes,
        backends=args.backend or ["sqlite"],
        shapes=args.shape or ["ewma-traces"],
        days=args.days,
        ticks=args.ticks,
        alerting=args.alerting,
        data_dir=Path(args.data_dir),
        pg_url=args.pg_url,
        restart=not args.no_restart,
        log=log,
        each=each,
    )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print()
        print(table(results))
    return 1 if any(r.get("error") for r in results) else 0


def add_cluster_bench_parser(bench_subparsers: Any) -> argparse.ArgumentParser:
    """Register ``watcher bench cluster`` on the ``bench`` command's subparsers."""
    p: argparse.ArgumentParser = bench_subparsers.add_parser(
        "cluster",
        help="replicas sharing groups' series by shard on PostgreSQL: balance, tick CPU, takeover",
    )
    p.add_argument("--series", type=int, default=100_000, help="series in total (100000)")
    p.add_argument("--replicas", type=int, default=4, help="replicas (4)")
    p.add_argument("--groups", type=int, default=4, help="rule groups sharing the series equally (4)")
    p.add_argument("--shards", type=int, default=16, help="cluster.shards: shards per group (16)")
    p.add_argument("--ticks", type=int, default=3, help="steady ticks timed after the cold start (3)")
    p.add_argument(
        "--pg-url",
        default="postgresql+psycopg://127.0.0.1:5432/test",
        help="PostgreSQL server (a database watcher_bench_cluster is created there and dropped after)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=main_cluster_bench)
    return p


def main_cluster_bench(args: argparse.Namespace) -> int:
    """Run ``watcher bench cluster`` and print its tables (or JSON)."""
    if args.replicas < 3 or args.series < args.replicas or args.groups < 1 or args.shards < 1:
        print("bench cluster: needs 3+ replicas (two are killed), a group, a shard and a series per replica")
        return 2
    from ..bench.cluster import run, table

    def log(msg: str) -> None:
        if not args.json:
            print(f"  … {msg}", flush=True)

    doc = run(
        pg_url=args.pg_url,
        series=args.series,
        replicas=args.replicas,
        groups=args.groups,
        shards=args.shards,
        ticks=args.ticks,
        log=log,
    )
    print(json.dumps(doc, indent=2) if args.json else table(doc))
    return 0


def _main_hooks(args: argparse.Namespace) -> int:
    from ..bench.hooks import run_hooks_bench

    result = run_hooks_bench(
        args.calls, args.rounds, http=args.http, stream=args.stream, caller_span=args.caller_span
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    lb, la = result["loadavg_before"], result["loadavg_after"]
    print(
        f"hooks: {result['calls_per_arm']:,} {'streamed' if result['streamed'] else 'non-streamed'} chat "
        f"calls per arm in {result['rounds']} "
        f"interleaved rounds, openai client, {result['transport']}; calls rows written: "
        f"{result['rows_written']:,}; {result['cpus']} CPUs, load average {lb[0]:.2f} before, "
        f"{la[0]:.2f} after"
    )
    print("median over rounds of: p50 wall | p50 caller-thread CPU | process CPU per call (all threads)")
    header = ("arm", "p50 µs", "p99 µs", "cpu p50", "proc cpu", "+p50", "+p99", "+cpu p50", "+proc cpu")
    print(f"{header[0]:10}" + "".join(f"{h:>10}" for h in header[1:]))
    for arm, r in result["arms"].items():
        cols = (
            "p50_us",
            "p99_us",
            "cpu_p50_us",
            "process_cpu_us",
            "added_p50_us",
            "added_p99_us",
            "added_cpu_p50_us",
            "added_process_cpu_us",
        )
        print(f"{arm:10}" + "".join(f"{r[c]:10.1f}" for c in cols))
    print("versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()))
    if "otel" not in result["arms"]:
        print("(opentelemetry-instrumentation-openai-v2 not installed: no peer comparison)")
    return 0


def add_hooks_bench_parser(bench_subparsers: Any) -> argparse.ArgumentParser:
    """Register ``watcher bench hooks`` on the ``bench`` command's subparsers."""
    p: argparse.ArgumentParser = bench_subparsers.add_parser(
        "hooks", help="latency added per wrapped OpenAI call (p50/p99), vs the OTel instrumentation"
    )
    p.add_argument("--calls", type=int, default=3000, help="calls per arm")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    p.add_argument("--http", action="store_true", help="call the loopback stub server (noisier)")
    p.add_argument("--stream", action="store_true", help="streamed calls, each read to its end")
    p.add_argument(
        "--caller-span",
        action="store_true",
        help="add the arm w-caller: watcher with its span started on the caller (not deferred)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=_main_hooks)
    return p


def _main_ingest(args: argparse.Namespace) -> int:
    from ..bench.ingest import run_ingest_bench

    if args.retention:
        from datetime import UTC, datetime

        from ..bench.ingest import run_retention_bench

        if not args.url:
            print("watcher bench ingest: error: --retention needs --url", file=sys.stderr)
            return 2
        got = run_retention_bench(args.url, args.total, args.retention, args.partition, datetime.now(UTC))
        how = f"partitioned by {args.partition}" if args.partition else "not partitioned"
        print(
            f"retention: {got['deleted']:,.0f} of {got['rows']:,.0f} scores over {args.retention} days "
            f"purged (the oldest day expiring) in {got['seconds']:.2f} s ({how})"
        )
        return 0
    result = run_ingest_bench(args.total, args.batch, args.db, url=args.url, partition=args.partition)
    where = "PostgreSQL" if args.url else "SQLite"
    if args.partition:
        where += f", partitioned by {args.partition}"
    print(
        f"ingest: {result['rows']:,} of {result['scores']:,} scores committed in batches of {args.batch} "
        f"in {result['seconds']:.2f} s = {result['per_second']:,.0f} scores/s ({where}, HTTP via TestClient)"
    )
    return 0


def add_ingest_bench_parser(bench_subparsers: Any) -> argparse.ArgumentParser:
    """Register ``watcher bench ingest`` on the ``bench`` command's subparsers."""
    p: argparse.ArgumentParser = bench_subparsers.add_parser(
        "ingest", help="POST scores in batches to the ingest API into the store; report scores/s"
    )
    p.add_argument("--total", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--db", help="SQLite file (default: a temporary one)")
    p.add_argument("--url", help="a store URL instead (PostgreSQL: the rows added are counted)")
    p.add_argument(
        "--retention",
        type=int,
        metavar="DAYS",
        help="instead: fill scores with --total rows over DAYS days and time the purge that expires the "
        "oldest day (needs --url to an empty database)",
    )
    p.add_argument(
        "--partition", choices=["day", "week", "month"], help="PostgreSQL: partition calls and scores first"
    )
    p.set_defaults(func=_main_ingest)
    return p


def main_storm(args: argparse.Namespace) -> int:
    """Run ``watcher bench notify`` and print one line (or JSON) per worker setting."""
    from ..bench.storm import run_storm

    results = [
        run_storm(args.alerts, w, min(args.per_receiver, w), args.delay_ms, args.slow_ms)
        for w in args.workers
    ]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        parts = [
            f"{r['alerts']} alerts, {r['workers']} worker(s) ({r['per_receiver']}/receiver), "
            f"receiver delay {r['delay_ms']:g} ms: evaluate+enqueue {r['evaluate_and_enqueue_s']:.2f} s, "
            f"all delivered {r['total_s']:.2f} s"
        ]
        for name in ("fast", "slow"):
            if name in r:
                m = r[name]
                parts.append(
                    f"  {name}: {m['delivered']} delivered, latency p50 {m['p50_s']:.2f} s, "
                    f"p90 {m['p90_s']:.2f} s, last {m['last_s']:.2f} s"
                )
        print("\n".join(parts))
    return 0


def add_storm_parser(sub: Any) -> None:
    """Register ``watcher bench notify``."""
    p = sub.add_parser("notify", help="an alert storm end to end: one evaluation to a loopback receiver")
    p.add_argument("--alerts", type=int, default=1000)
    p.add_argument("--workers", type=int, action="append", help="delivery_workers to compare (repeatable)")
    p.add_argument(
        "--per-receiver", type=int, default=4, help="delivery_per_receiver (capped at the workers)"
    )
    p.add_argument("--delay-ms", type=float, default=0.0, help="how long the receiver takes to answer")
    p.add_argument("--slow-ms", type=float, help="add a second receiver answering this slowly")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_main_storm, workers=None)


def _main_storm(args: argparse.Namespace) -> int:
    args.workers = args.workers or [1, 8]
    return main_storm(args)


def _print_faults(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    per = result.pop("per_group", None)
    print(", ".join(f"{k} {v}" for k, v in result.items() if v is not None))
    if per:
        for g, m in per.items():
            print(f"  {g}: " + ", ".join(f"{k} {v}" for k, v in m.items()))


def _main_faults(args: argparse.Namespace) -> int:
    from ..bench.faults import run_replicas, run_shutdown, run_single

    if args.run == "single":
        result = run_single(
            args.seed, args.kills, args.error_s, args.close_s, args.quiet, args.tenants, args.keep
        )
        bad = (
            result["lost"]
            or result["left_in_outbox"]
            or result["resolve_before_firing"]
            or result["unresolved"]
        )
    elif args.run == "replicas":
        result = run_replicas(
            args.seed,
            args.kills,
            args.pg,
            args.lease_ttl,
            args.down_s,
            args.every,
            args.quiet,
            args.catch_up,
            args.groups,
            args.keep,
        )
        bad = (
            result["lost"]
            or result["left_in_outbox"]
            or result["resolve_before_firing"]
            or result["unresolved"]
            or result["ticks_missed_across_takeover"]
            or result["ticks_late_beyond_ttl"]
            or result["ticks_evaluated_twice"]
        )
    else:
        result = run_shutdown(args.pages, args.delay_s, args.stop_timeout, args.timeout_s, args.keep)
        bad = result["stop_s"] > result["stop_timeout_s"] + 1.0 or result["after_restart_lost"]
    _print_faults(result, args.json)
    return 1 if bad else 0


def add_faults_parser(sub: Any) -> None:
    """Register ``watcher bench faults single|replicas|shutdown``."""
    p = sub.add_parser("faults", help="issue 16's fault campaign against real `watcher run` processes")
    runs = p.add_subparsers(dest="run", required=True, metavar="single|replicas|shutdown")
    a = runs.add_parser("single", help="one daemon on SQLite: kill -9 at random moments, a failing receiver")
    a.add_argument("--kills", type=int, default=20)
    a.add_argument("--error-s", type=float, default=150.0, help="seconds the receiver answers 500")
    a.add_argument("--close-s", type=float, default=60.0, help="then seconds it drops connections")
    a.add_argument("--quiet", type=float, default=120.0, help="at most this long for everything to settle")
    a.add_argument("--tenants", type=int, default=6)
    b = runs.add_parser("replicas", help="3 replicas on PostgreSQL: SIGKILL of lease holders")
    b.add_argument("--kills", type=int, default=8)
    b.add_argument(
        "--pg", default="postgresql://127.0.0.1:5432/test", help="admin URL (a database is created)"
    )
    b.add_argument("--lease-ttl", type=float, default=3.0)
    b.add_argument("--down-s", type=float, default=8.0, help="a killed replica restarts this much later")
    b.add_argument("--groups", type=int, default=3, help="rule groups (1 s interval each)")
    b.add_argument("--every", type=float, default=20.0, help="seconds between kills (±30 %%)")
    b.add_argument("--quiet", type=float, default=60.0)
    b.add_argument("--catch-up", type=float, default=0.0, help="cluster.catch_up (default: 2 × lease TTL)")
    c = runs.add_parser("shutdown", help="SIGTERM with queued pages and a slow receiver")
    c.add_argument("--timeout-s", type=float, default=10.0, help="the receiver's timeout_s (default 10)")
    c.add_argument("--pages", type=int, default=40)
    c.add_argument("--delay-s", type=float, default=3.0, help="how long the receiver takes to answer")
    c.add_argument(
        "--stop-timeout", type=float, default=0.0, help="stop_timeout (default: the daemon's, 20 s)"
    )
    for sp in (a, b, c):
        sp.add_argument("--seed", type=int, default=16)
        sp.add_argument("--keep", action="store_true", help="keep the folder with the daemons' logs")
        sp.add_argument("--json", action="store_true")
    p.set_defaults(func=_main_faults)


def main_detection(args: argparse.Namespace) -> int:
    """Run ``watcher bench detection`` and print the table (Markdown) or JSON."""
    import tempfile

    from ..bench import sections
    from ..bench.detection import (
        DEFAULT_DETECTORS,
        PROBATION,
        load_corpus,
        markdown_table,
        per_file,
        run_all,
        sections_of,
        summary,
    )
    from ..bench.peers import PEER_NAMES
    from ..core import parse_duration

    section = getattr(args, "corpus_set", "standard")
    if args.write_corpus:
        root = sections.write(args.write_corpus, section)
        print(f"wrote {len(sections.build_section(section))} series to {root}")
        return 0
    kinds = args.detector or [*DEFAULT_DETECTORS, *([] if getattr(args, "no_peers", False) else PEER_NAMES)]
    for_s = parse_duration(args.for_).total_seconds()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.corpus or sections.write(tmp, section)
        files = load_corpus(root, args.labels)
    only = getattr(args, "only", None)
    if only:
        files = [f for f in files if any(o in f.path for o in only)]
    payload: dict[str, Any] = {}
    for name, part in sections_of(files, section):
        print(f"section {name}: {len(part)} files", file=sys.stderr)
        runs = run_all(part, kinds, for_s)
        results = {k: r.results for k, r in runs.items()}
        table = summary(results, runs, part, for_s)
        payload[name] = {"summary": table, "per_file": {k: per_file(v) for k, v in results.items()}}
        if not args.json:
            title = (
                f"**{name}** section: {len(part)} files, "
                f"{sum(len(f.windows) for f in part)} labelled windows, "
                f"{sum(1 for f in part if not f.windows)} files with no labels; "
                f"pages after {args.for_} of flagged points, probation {PROBATION:.0%}"
            )
            print(markdown_table(title, table) + "\n")
            if args.per_file:
                for kind, res in results.items():
                    print(f"\n{kind}")
                    for row in per_file(res):
                        print("  " + json.dumps(row))
    if args.json:
        print(json.dumps(payload, indent=1))
    sys.stdout.flush()
    return 0


def main_flagrate(args: argparse.Namespace) -> int:
    """Run ``watcher bench flagrate`` and print the Markdown table (or JSON)."""
    import math
    import warnings

    from ..bench.flagrate import KINDS, load, markdown, run

    kinds = args.detector or list(KINDS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels/pandas deprecation chatter while loading
        datasets = load(args.dataset, not args.no_generated)
    table = run(datasets, kinds, args.spacing, args.sustained)
    if args.json:
        payload = {
            key: {
                k: None
                if c is None
                else {
                    "points": c.points,
                    "ready": c.ready,
                    "flagged": c.flagged,
                    "per_10k": c.per_10k,
                    "max_surprise": c.max_surprise if math.isfinite(c.max_surprise) else str(c.max_surprise),
                }
                for k, c in row.items()
            }
            for key, row in table.items()
        }
        print(json.dumps(payload, indent=1))
        return 0
    print(markdown(table, kinds, args.spacing))
    return 0


def main_llm_suite(args: argparse.Namespace) -> int:
    """Run ``watcher bench llm-suite`` and print the per-incident table (or JSON)."""
    from ..bench.llmsuite import markdown, run
    from ..core import parse_duration

    for_minutes = int(parse_duration(args.for_).total_seconds() // 60)
    res = run(for_minutes, not args.no_floors, only=args.only or (), sustained=args.sustained)
    text = markdown(res, for_minutes, not args.no_floors, args.sustained)
    print(json.dumps(res, indent=1) if args.json else text)
    return 0


def main_throughput(args: argparse.Namespace) -> int:
    """Run ``watcher bench throughput`` and print one block per detector kind."""
    import multiprocessing

    from ..bench.throughput import DEFAULT_KINDS, _child
    from ..core import parse_duration

    history_s = parse_duration(args.history).total_seconds()
    step = parse_duration(args.step).total_seconds()
    kinds = args.detector or list(DEFAULT_KINDS)
    ctx = multiprocessing.get_context("spawn")
    print(
        f"{args.series} series x {args.history} of {args.step} points; start-up timed on "
        f"{min(args.startup_sample, args.series)} series and extrapolated; {args.ticks} ticks"
    )
    for kind in kinds:
        with ctx.Pool(1) as pool:
            r = pool.map(_child, [(kind, args.series, history_s, step, args.ticks, args.startup_sample)])[0]
        print(f"\n{kind}")
        for key, value in r.items():
            if key != "kind":
                print(f"  {key:<32} {value:.4g}" if isinstance(value, float) else f"  {key:<32} {value}")
    return 0


def main_backtest_bench(args: argparse.Namespace) -> int:
    """Generate the store if needed, run one timed backtest of the shipped pack, print the timing."""
    import resource
    import time
    from datetime import timedelta
    from pathlib import Path

    from ..backtest.report import load_groups, print_report, run_backtest
    from ..bench.backtest import _RUSAGE, END, _children_cpu, generate
    from ..config import shipped_rules_dir
    from ..sources.sql import SqlSource
    from ..store.db import open_store

    db = Path(args.db)
    if args.regenerate or not db.exists():
        t0 = time.perf_counter()
        calls, scores = generate(db, args.days, args.series)
        print(f"generated {calls:,} calls and {scores:,} scores in {time.perf_counter() - t0:.1f}s")
    store = open_store(f"sqlite:///{db}")
    try:
        sql = SqlSource(store)
        groups = load_groups([shipped_rules_dir()])
        t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
        report = run_backtest(
            groups, {"calls": sql, "scores": sql}, END - timedelta(days=args.days), END, jobs=args.jobs
        )
        took = time.perf_counter() - t0
        # The workers' CPU (start-up included) is counted once they have exited, before the return.
        cpu, workers_cpu = time.process_time() - c0, _children_cpu() - k0
    finally:
        store.close()
    print_report(report, sys.stdout)
    series = sum(1 for _ in report.result.verdicts) or "n/a"
    res = report.result
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in res.cpu.items())
    print(
        f"\nbacktest of {len(res.rules)} rules over {args.days} days: {took:.1f}s wall, "
        f"{cpu + workers_cpu:.1f}s CPU (this process {cpu:.1f}s, workers {workers_cpu:.1f}s; {phases}); "
        f"{res.ticks} group ticks, {res.evaluations} evaluated; "
        f"series per rule: {args.series}; verdict series: {series}; jobs: {args.jobs or 'default'}"
    )
    own, workers = (resource.getrusage(who).ru_maxrss / 1024 for who in _RUSAGE)
    print(f"peak RSS: this process {own:.0f} MiB, largest worker {workers:.0f} MiB")
    return 0


def add_backtest_bench_parser(bench_subparsers: Any) -> None:
    """Register ``watcher bench backtest``: one timed backtest of the shipped pack over a generated store."""
    p = bench_subparsers.add_parser(
        "backtest", help="time one backtest of the shipped rule pack over a generated SQLite store"
    )
    p.add_argument("--db", default="bench-backtest.db")
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--series", type=int, default=50)
    p.add_argument("--regenerate", action="store_true")
    p.add_argument(
        "--jobs", type=int, default=None, help="worker processes (default: one per CPU; 1: in this process)"
    )
    p.set_defaults(func=main_backtest_bench)


def add_contribution_bench_parser(bench_subparsers: Any) -> None:
    """Register ``watcher bench contribution``: planted drivers and noise through the explanation."""
    p = bench_subparsers.add_parser(
        "contribution",
        help="contribution by dimension on generated rows: planted driver named first, noise named",
    )
    p.add_argument("--trials", type=int, default=200, help="trials per metric and arm (200)")
    p.add_argument("--seed", type=int, default=22)
    p.add_argument(
        "--metric",
        action="append",
        choices=("spend", "refusal_rate", "groundedness", "p95_ttft"),
        help="(repeatable; default all four)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=main_contribution_bench)


def main_contribution_bench(args: argparse.Namespace) -> int:
    """Run ``watcher bench contribution`` and print the Markdown table (or JSON)."""
    from ..bench.contribution import METRICS, run, table

    def log(msg: str) -> None:
        if not args.json:
            print(f"  … {msg}", file=sys.stderr, flush=True)

    result = run(args.trials, args.seed, tuple(args.metric or METRICS), log)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0
