"""``watcher score``: CSV in, verdicts out, clear errors with line numbers (exit 2) on bad input."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from watcher.cli import main
from watcher.evals.scoring import parse_timestamp


def write(tmp_path: Path, text: str, name: str = "in.csv") -> Path:
    """Write ``text`` to a CSV file in ``tmp_path``."""
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def series_csv(n: int = 400, spike_at: int | None = 350) -> str:
    """Return a noisy flat series at 1-minute steps (ISO timestamps), with an optional spike."""
    values = 50.0 + np.random.default_rng(0).normal(0.0, 1.0, n)
    if spike_at is not None:
        values[spike_at] = 90.0
    rows = [f"2026-01-05T{(i // 60) % 24:02d}:{i % 60:02d}:00Z,{v:.4f}" for i, v in enumerate(values)]
    return "timestamp,value\n" + "\n".join(rows) + "\n"


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2026-01-05T00:00:00Z", 1767571200.0),
        ("2026-01-05 00:00:00", 1767571200.0),
        ("2026-01-05T01:00:00+01:00", 1767571200.0),
        ("1767571200", 1767571200.0),
        ("1767571200.5", 1767571200.5),
    ],
)
def test_timestamps(text: str, epoch: float) -> None:
    assert parse_timestamp(text) == epoch


def test_scores_to_output_file(tmp_path: Path) -> None:
    src = write(tmp_path, series_csv())
    out = tmp_path / "out.csv"
    assert main(["score", "--detector", "ewma", "--direction", "up", str(src), str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0]) == [
        "timestamp", "value", "expected", "lower", "upper", "score", "anomaly", "surprise"
    ]  # fmt: skip
    assert len(rows) == 400 and rows[0]["timestamp"] == "2026-01-05T00:00:00Z"
    assert rows[0]["expected"] == "" and rows[0]["anomaly"] == "0"
    assert rows[350]["anomaly"] == "1" and float(rows[350]["score"]) > 0.9999
    assert rows[350]["lower"] == ""  # direction up: no lower bound
    assert sum(r["anomaly"] == "1" for r in rows) <= 3


@pytest.mark.parametrize("kind", ["threshold", "rolling", "ewma", "seasonal", "rate", "auto"])
def test_every_kind_runs_to_stdout(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write(tmp_path, series_csv(200, spike_at=150))
    extra = ["--set", "above=80"] if kind == "threshold" else []
    assert main(["score", "--detector", kind, *extra, str(src)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("timestamp,value,expected,lower,upper,score,anomaly,surprise\n")
    assert len(out.strip().splitlines()) == 201


def test_set_parses_yaml_values_and_counts_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = "\n".join(f"{1767571200 + 300 * i},{0.02 if i != 90 else 0.2},{500}" for i in range(100))
    src = write(tmp_path, "timestamp,value,count\n" + rows + "\n")
    assert main(["score", "-d", "rate", "--set", "min_trials=1000", str(src)]) == 0
    out = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert out[90]["anomaly"] == "1" and sum(r["anomaly"] == "1" for r in out) == 1


@pytest.mark.parametrize(
    ("text", "args", "message"),
    [
        ("", [], "in.csv:1: empty file"),
        ("time,val\n1,2\n", [], "in.csv:1: header has no timestamp or value column"),
        ("timestamp,value\n1767571200,1\nyesterday,2\n", [], "in.csv:3: timestamp 'yesterday' is neither"),
        ("timestamp,value\n1767571200,1\n1767571260,abc\n", [], "in.csv:3: value 'abc' is not a number"),
        ("timestamp,value\n1767571200,1,3\n", [], "in.csv:2: expected 2 fields"),
        ("timestamp,value\n1767571200,1\n", ["--set", "window"], "--set 'window': expected key=value"),
        ("timestamp,value\n1767571200,1\n", ["--set", "window=soon"], "detector rolling: window"),
        ("timestamp,value\n1767571200,1\n", ["--set", "nope=1"], "detector rolling: nope"),
    ],
)
def test_bad_input_exits_2_with_the_line(
    text: str, args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write(tmp_path, text)
    assert main(["score", "--detector", "rolling", *args, str(src)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", "--detector", "ewma", str(tmp_path / "nope.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_gaps_and_irregular_sampling_and_empty_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [f"{1767571200 + 60 * i + (i % 7)},{50 + i % 3}" for i in range(100)]
    lines += [f"{1767571200 + 86_400 + 60 * i},{'' if i == 5 else 50 + i % 3}" for i in range(50)]
    src = write(tmp_path, "timestamp,value\n" + "\n".join(lines) + "\n")
    assert main(["score", "-d", "ewma", str(src)]) == 0
    out = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(out) == 150 and out[105]["value"] == "" and out[105]["anomaly"] == "0"


def test_surprise_ranks_beyond_where_score_saturates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = 50.0 + np.random.default_rng(0).normal(0.0, 1.0, 600)
    values[[300, 400, 500]] = [60.0, 80.0, 1e6]
    rows = [f"{1767571200 + 60 * i},{v:.4f}" for i, v in enumerate(values)]
    src = write(tmp_path, "timestamp,value\n" + "\n".join(rows) + "\n")
    assert main(["score", "-d", "ewma", "--direction", "up", str(src)]) == 0
    out = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    s300, s400, s500 = (float(out[i]["surprise"]) for i in (300, 400, 500))
    assert float(out[400]["score"]) == float(out[500]["score"]) == 1.0  # score saturates...
    assert 4.5 < s300 < s400 < s500  # ...surprise does not
    quiet = sorted(float(r["surprise"]) for i, r in enumerate(out) if i not in (300, 400, 500))
    assert quiet[-1] < s300


def test_repeated_and_out_of_order_timestamps_are_all_scored_in_input_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = 50.0 + np.random.default_rng(1).normal(0.0, 1.0, 300)
    values[250] = 90.0
    lines = [f"2026-11-01 {(i // 60):02d}:{i % 60:02d}:00,{v:.4f}" for i, v in enumerate(values[:240])]
    # a DST fall-back hour exported in local time: 01:00-01:59 comes twice
    lines += [f"2026-11-01 {1 + (i // 60):02d}:{i % 60:02d}:00,{v:.4f}" for i, v in enumerate(values[240:])]
    lines[10], lines[11] = lines[11], lines[10]  # and one row out of order
    src = write(tmp_path, "timestamp,value\n" + "\n".join(lines) + "\n")
    assert main(["score", "-d", "ewma", "--direction", "up", str(src)]) == 0
    captured = capsys.readouterr()
    out = list(csv.DictReader(io.StringIO(captured.out)))
    assert [r["timestamp"] for r in out] == [ln.split(",")[0] for ln in lines]  # every row, input order
    assert "2 row(s) out of timestamp order" in captured.err  # the swap and the clock going back
    assert "60 row(s) repeating an earlier timestamp" in captured.err
    flagged = [i for i, r in enumerate(out) if r["anomaly"] == "1"]
    assert flagged == [250] and all(r["expected"] for r in out[100:])
