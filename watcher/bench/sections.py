"""The detection corpus's sections and writing one to disk (data CSVs, labels.json, meta.json).

This module owns which series make up a section (``standard``: ``corpus``; ``hardened``:
``hardened``; ``both``) and the on-disk layout ``watcher bench detection --corpus`` reads. It does
not own generating the series (``corpus``, ``hardened``) nor scoring them (``detection``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from . import corpus, hardened
from .corpus import Series


def _iso(epoch: float) -> str:
    """Format epoch seconds as ISO-8601 UTC with a Z."""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


SECTIONS = ("standard", "hardened", "both")


def build_section(section: str = "standard") -> list[Series]:
    """Return the series of one corpus section: ``standard`` (this module, the numbers in
    docs/benchmarks.md since the first build: ``corpus``), ``hardened`` (``hardened``: heavy tails, zeros,
    quantisation, bursts, messy timestamps) or ``both``."""
    if section not in SECTIONS:
        raise ValueError(f"unknown corpus section {section!r}; known: {', '.join(SECTIONS)}")
    return (corpus.build() if section != "hardened" else []) + (
        hardened.build() if section != "standard" else []
    )


def _num(x: float) -> str:
    """Format a value for the CSV: whole numbers exactly (bytes, counts), else 6 significant digits."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:.6g}"


def write(directory: str | Path, section: str = "standard") -> Path:
    """Write a corpus section (data CSVs, labels.json, meta.json) under ``directory`` and return it.

    Rows are written in the series' own order, so the hardened section's repeated and
    out-of-order timestamps reach the reader as an export would have them.
    """
    root = Path(directory)
    labels: dict[str, list[list[str]]] = {}
    meta: dict[str, dict[str, str]] = {}
    for s in build_section(section):
        path = root / s.path
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            f.write("timestamp,value,count\n" if s.counts is not None else "timestamp,value\n")
            for k in range(len(s.ts)):
                extra = f",{int(s.counts[k])}" if s.counts is not None else ""
                f.write(f"{_iso(s.ts[k])},{_num(s.values[k])}{extra}\n")
        labels[s.path] = [[_iso(a), _iso(b)] for a, b in s.windows]
        meta[s.path] = {"direction": s.direction}
    (root / "labels.json").write_text(json.dumps(labels, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    (root / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return root
