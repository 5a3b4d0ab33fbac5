"""``watcher bench notify`` runs a small storm end to end and reports every message delivered."""

from __future__ import annotations

import argparse

from watcher.bench.storm import run_storm
from watcher.cli import build_parser


def test_a_small_storm_is_delivered_to_both_receivers() -> None:
    result = run_storm(30, workers=4, per_receiver=2, delay_ms=0, slow_ms=20)
    assert result["fast"]["delivered"] == 30 and result["slow"]["delivered"] == 30
    assert 0 < result["evaluate_and_enqueue_s"] <= result["total_s"]


def test_the_command_line_parses() -> None:
    args = build_parser().parse_args(["bench", "notify", "--alerts", "5", "--workers", "2", "--json"])
    assert isinstance(args, argparse.Namespace) and args.alerts == 5 and args.workers == [2]
