"""``watcher bench daemon`` on real backends: small sizes, checked for what they measure, not speed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from tests.prom import PROMETHEUS_BIN, PROMTOOL_BIN
from watcher.bench.daemon import (
    SHAPES,
    DataSpec,
    prepare_postgresql,
    prepare_prometheus,
    prepare_sqlite,
    rule_file,
    run_case,
    series_values,
)
from watcher.cli import main
from watcher.rules.loader import load_rule_files

SPEC = DataSpec(series=40, days=0.25, ticks=3, alerting=0.1)


def _check(res: object, spec: DataSpec = SPEC) -> None:
    from watcher.bench.daemon import CaseResult

    assert isinstance(res, CaseResult) and res.error is None
    assert res.evaluated_series == spec.series
    assert res.cold_cpu_s > 0 and len(res.tick_cpu_s) == spec.ticks and res.tick_cpu > 0
    assert res.peak_rss_mb >= res.rss_before_mb > 0
    assert math.isclose(res.series_per_cpu_s, spec.series / res.tick_cpu)
    # the cold start checkpointed every series; the restart resumed from it and evaluated
    assert res.checkpoint_series == spec.series and res.checkpoint_mb is not None and res.checkpoint_mb > 0
    assert res.resume_cpu_s is not None and res.resume_cpu_s > 0


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("backend", ["calls", "prometheus"])
def test_rule_files_load(tmp_path: Path, shape: str, backend: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(rule_file(shape, backend, SPEC.days), allow_unicode=True))
    loaded = load_rule_files([path])
    assert loaded.rule_count == 1


def test_generated_series_jump_only_for_the_alerting_fraction() -> None:
    jumps = []
    for i in range(SPEC.series):
        v = series_values(SPEC, i)
        assert len(v) == SPEC.points and (v > 0).all()
        jumps.append(v[-1] / v[: SPEC.history_points - 15].mean() > 5)
    assert sum(jumps) == 4 and all(jumps[:4])


def test_sqlite_case_alerts_on_the_jumping_series(tmp_path: Path) -> None:
    url = prepare_sqlite(SPEC, tmp_path, print)
    assert prepare_sqlite(SPEC, tmp_path, print) == url  # prepared once, then reused
    work = tmp_path / "w"
    work.mkdir()
    res = run_case("sqlite", "ewma-traces", SPEC, url, work, SPEC.ticks)
    _check(res)
    # the four jumping series page (pending for 3m, then firing), no other does
    assert sum(res.alerts.values()) == 4 and res.alerts.get("firing") == 4


def test_postgresql_case(pg_url: str, tmp_path: Path) -> None:
    import psycopg

    spec = DataSpec(series=10, days=0.1, ticks=2, alerting=0.2, seed=hash(pg_url) % 10_000)
    url = prepare_postgresql(spec, pg_url, print)
    try:
        res = run_case("postgresql", "rolling", spec, url, tmp_path, spec.ticks)
        _check(res, spec)
        assert sum(res.alerts.values()) == 2
    finally:
        admin = pg_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


@pytest.mark.skipif(not (PROMETHEUS_BIN.is_file() and PROMTOOL_BIN.is_file()), reason="no prometheus")
def test_prometheus_case(tmp_path: Path) -> None:
    data = prepare_prometheus(SPEC, tmp_path, print)
    work = tmp_path / "w"
    work.mkdir()
    res = run_case("prometheus", "ewma-traces", SPEC, str(data), work, SPEC.ticks)
    _check(res)
    assert res.server_cold_cpu_s is not None and res.server_cold_cpu_s >= 0
    assert sum(res.alerts.values()) == 4


def test_cli_names_every_shape_and_backend() -> None:
    from watcher.bench.daemon import BACKENDS
    from watcher.cli.bench import DAEMON_BACKENDS, DAEMON_SHAPES

    assert sorted(DAEMON_SHAPES) == sorted(SHAPES) and DAEMON_BACKENDS == BACKENDS


def test_cli_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "daemon", "--series", "20", "--days", "0.1", "--ticks", "2"]
    assert main([*args, "--data-dir", str(tmp_path), "--shape", "rolling"]) == 0
    out = capsys.readouterr().out
    assert "| sqlite | rolling | 20 |" in out and "series per CPU-s" in out
    assert main([*args, "--series", "100001", "--data-dir", str(tmp_path)]) == 2
