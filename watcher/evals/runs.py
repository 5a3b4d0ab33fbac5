"""``watcher scores import``: load an offline evaluation run from JSONL or CSV into the score store.

This module owns validating each row (with its line number in every error), the mapping of a row
onto the ``scores`` table with its ``eval_run`` tag, and writing a file in one transaction (all
rows or none). It does not own comparing runs (``gate``) nor the table (``store.tables``).

A row has ``value`` (a finite number), ``trace_id`` or ``item`` (the dataset item ID, which is
what ``watcher gate`` pairs runs on), ``name`` unless ``--name`` is given, and optionally
``label``, ``source`` (default ``judge``), ``evaluator``, ``tenant``, ``feature``, ``model``,
``comment`` and ``ts`` (ISO-8601; default: now).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError
from ..store.tables import Score

MAX_ERRORS = 20
MAX_JSON_ERRORS = 1000
"""Bad-row messages listed in `--json` output at most (`errors_total` counts them all)."""


class ScoreRow(BaseModel):
    """One imported score, validated."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    value: float
    trace_id: str | None = Field(None, min_length=1, max_length=64)
    item: str | None = Field(None, min_length=1, max_length=64)
    label: str | None = Field(None, max_length=128)
    source: str = Field("judge", max_length=16)
    evaluator: str | None = Field(None, max_length=128)
    tenant: str = Field("", max_length=128)
    feature: str = Field("", max_length=128)
    model: str = Field("", max_length=128)
    comment: str | None = None
    ts: datetime | None = None

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("value must be a finite number")
        return v

    @model_validator(mode="after")
    def _an_id(self) -> ScoreRow:
        if self.trace_id is None and self.item is None:
            raise ValueError("a row needs `trace_id` or `item` (the dataset item ID)")
        if self.trace_id is not None and self.item is not None and self.trace_id != self.item:
            raise ValueError("`trace_id` and `item` differ: give one of them")
        return self


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, raw row)`` from a JSONL or CSV file; empty CSV cells are omitted."""
    with path.open(encoding="utf-8", newline="") as fh:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(fh)
            for rec in reader:
                yield reader.line_num, {k: v for k, v in rec.items() if k is not None and v not in ("", None)}
        elif path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield n, {"__error__": f"not valid JSON: {exc.msg}"}
                    continue
                yield n, obj if isinstance(obj, dict) else {"__error__": "a line must be a JSON object"}
        else:
            raise ConfigError(f"{path}: unknown format {path.suffix!r}; use .jsonl or .csv")


def read_scores(path: Path, *, name: str | None = None) -> tuple[list[ScoreRow], list[str]]:
    """Return the valid rows of ``path`` and one ``file:line: what is wrong`` message per bad row."""
    rows: list[ScoreRow] = []
    errors: list[str] = []
    for line, raw in _rows(path):
        if "__error__" in raw:
            errors.append(f"{path}:{line}: {raw['__error__']}")
            continue
        if name is not None:
            raw.setdefault("name", name)
        try:
            rows.append(ScoreRow.model_validate(raw))
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"]) or "row"
                msg = str(err["msg"]).removeprefix("Value error, ")
                errors.append(f"{path}:{line}: {field}: {msg}")
    return rows, errors


def import_scores(store: Any, rows: list[ScoreRow], run: str, now: datetime | None = None) -> int:
    """Write ``rows`` tagged ``eval_run=run`` in one transaction; return how many."""
    now = now or datetime.now(UTC)
    records = [
        {
            "trace_id": r.trace_id or r.item,
            "ts": r.ts or now,
            "name": r.name,
            "value": r.value,
            "label": r.label,
            "source": r.source,
            "evaluator": r.evaluator,
            "tenant": r.tenant,
            "feature": r.feature,
            "model": r.model,
            "eval_run": run,
            "comment": r.comment,
        }
        for r in rows
    ]
    if records:
        with store.engine.begin() as conn:
            conn.execute(Score.__table__.insert(), records)  # type: ignore[attr-defined]
    return len(records)


def main_import(args: Any, out: TextIO | None = None) -> int:
    """Run ``watcher scores import``: 0 imported, 2 bad input (nothing written).

    With ``--json`` standard output holds one document whatever the outcome but a store error
    (exit 1, one line on stderr): ``{file, run, imported, errors}``, ``errors`` the bad rows'
    messages (at most ``MAX_JSON_ERRORS``, ``errors_total`` counting all).
    """
    out = out or sys.stdout
    from ..config import load_settings
    from ..store.db import open_store

    as_json = bool(getattr(args, "json", False))
    path = Path(args.file)

    def report(imported: int, errors: list[str]) -> None:
        doc = {
            "file": str(path),
            "run": args.run,
            "imported": imported,
            "errors": errors[:MAX_JSON_ERRORS],
            "errors_total": len(errors),
        }
        out.write(json.dumps(doc, indent=2) + "\n")

    if not path.is_file():
        print(f"watcher scores import: {path}: no such file", file=sys.stderr)
        if as_json:
            report(0, [f"{path}: no such file"])
        return 2
    rows, errors = read_scores(path, name=args.name)
    if errors and as_json:
        print(f"{len(errors)} bad row(s); nothing imported", file=sys.stderr)
        report(0, errors)
        return 2
    if errors:
        for e in errors[:MAX_ERRORS]:
            print(e, file=sys.stderr)
        more = len(errors) - MAX_ERRORS
        print(
            f"{len(errors)} bad row(s){f' ({more} more not shown)' if more > 0 else ''}; nothing imported",
            file=sys.stderr,
        )
        return 2
    overrides: dict[str, Any] = {"store": {"url": args.store}} if args.store else {}
    settings = load_settings(args.config, **overrides)
    store = open_store(settings.store.url.get_secret_value())
    try:
        n = import_scores(store, rows, args.run)
    finally:
        store.close()
    if as_json:
        report(n, [])
        return 0
    out.write(f"imported {n} score(s) into evaluation run {args.run!r}\n")
    return 0
