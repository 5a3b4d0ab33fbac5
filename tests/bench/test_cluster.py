"""``watcher bench cluster`` on a small case: the real cluster on PostgreSQL, numbers that add up."""

from __future__ import annotations

from watcher.bench.cluster import balance_over_ids, run, table


def test_a_small_run_places_every_series_once_and_takes_over_twice(pg_url: str) -> None:
    doc = run(
        pg_url=pg_url, series=600, replicas=3, groups=2, shards=4, ticks=1, db_name="watcher_t_bench_cluster"
    )
    per = doc["per_replica"]
    assert sum(r["series"] for r in per) == 600  # every series on exactly one replica
    assert sum(r["units"] for r in per) == doc["units"] == 8
    assert all(r["cold_cpu_s"] > 0 and r["tick_cpu_s"] > 0 for r in per if r["units"])
    killed = [t["killed"] for t in doc["takeovers"]]
    assert killed == ["r3", "r2"]
    first, second = doc["takeovers"]
    assert first["units"] == next(r["units"] for r in per if r["replica"] == "r3")
    assert second["units"] >= next(r["units"] for r in per if r["replica"] == "r2")  # and what it took
    assert "| replica | units | series |" in table(doc)


def test_balance_over_id_sets_is_one_for_equal_units_and_at_least_one() -> None:
    assert balance_over_ids({"a": 10}, 1, id_sets=5) == {"median": 1.0, "p90": 1.0}
    got = balance_over_ids({f"u{i}": 10 for i in range(64)}, 4, id_sets=50)
    assert 1.0 <= got["median"] <= got["p90"] < 1.6
