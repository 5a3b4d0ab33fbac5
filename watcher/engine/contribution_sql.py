"""The SQL side of contribution by dimension: the rows behind one alerting series, and its explanation.

This module owns reading, for one series of a ``calls``/``scores`` rule, the rows of its current
window and of its reference period in one query (only the columns the analysis needs; for scores,
``prompt_version``, ``user_id`` and ``operation`` from the call of the same trace), naming the
rule's aggregate, and handing the rows to ``contribution.explain_rows``. It does not own the
decompositions (``contribution``) nor when they run (``why``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa

from ..core import Labels
from ..rules.schema import ALL_SCORES, Rule, SqlQuery
from ..sources.sql import lag_column, missing_score_condition
from ..store.db import Store
from ..store.tables import Call, Score
from .contribution import DIMENSIONS, REFERENCE_GAP, Explanation, Rows, explain_rows, reference_span

SCORE_DIMENSIONS: tuple[str, ...] = ("tenant", "model", "feature", "evaluator")
"""Score columns analysed; ``prompt_version``, ``user_id`` and ``operation`` come from the trace's call."""
MAX_ROWS = 200_000
"""Rows read per analysis at most (newest first); the analysis is over a sample beyond that."""


def metric_name(rule: Rule) -> str:
    """Return how the explanation names the rule's aggregate: ``rate of outcome=refused``, ``p95 ttft_s``."""
    q = rule.query
    if q is None:
        return rule.alert
    what = q.score if rule.source == "scores" else (q.field or "calls")
    if q.field == "lag_s":
        what = f"{q.score} lag_s"
    if q.agg == "ratio":
        hits = [f"{k}={v if isinstance(v, str) else '|'.join(v)}" for k, v in q.match.items()]
        if q.below is not None:
            hits.append(f"{what}<{q.below:g}")
        if q.missing_score is not None:
            hits.append(f"no {q.missing_score} score")
        return "rate of " + ", ".join(hits)
    if q.agg == "quantile":
        return f"p{(q.quantile or 0.5) * 100:g} {what}"
    if q.agg == "count":
        return "calls" if rule.source == "calls" else f"{what} scores"
    return f"{q.agg} {what}"


def fetch_rows(
    store: Store,
    rule: Rule,
    series: Labels,
    current: tuple[datetime, datetime],
    reference: tuple[datetime, datetime],
) -> Rows:
    """Read the rows of one series of ``rule`` in the two periods ``(lo, hi]``; raise ``StoreError``."""
    q = rule.query
    assert q is not None
    calls = rule.source == "calls"
    table: Any = getattr(Call if calls else Score, "__table__")  # noqa: B009
    c = table.c
    if calls:
        dim_cols = {d: c[d] for d in DIMENSIONS}
    else:
        call = Call.__table__  # type: ignore[attr-defined]
        dim_cols = {d: c[d] for d in SCORE_DIMENSIONS}
        for d in ("prompt_version", "user_id", "operation"):
            dim_cols[d] = sa.select(call.c[d]).where(call.c.trace_id == c.trace_id).limit(1).scalar_subquery()
    x = _x_column(table, calls, q, store.dialect)
    (c_lo, c_hi), (r_lo, r_hi) = current, reference
    conds = [
        sa.or_(sa.and_(c.ts > c_lo, c.ts <= c_hi), sa.and_(c.ts > r_lo, c.ts <= r_hi)),
        *(_is(table, name, wanted) for name, wanted in q.where.items()),
        *(_is(table, name, series[name]) for name in q.by if name in series),
    ]
    if not calls and q.score != ALL_SCORES:
        conds.append(c.name == q.score)
    if q.agg not in ("ratio", "count") and x is not None:
        conds.append(x.is_not(None))
    is_current = sa.case((c.ts > c_lo, 1), else_=0)
    cols = [is_current, x if x is not None else sa.literal(1.0), *dim_cols.values()]
    stmt = sa.select(*cols).where(*conds).order_by(c.ts.desc()).limit(MAX_ROWS)
    try:
        with store.engine.connect() as conn:
            got = conn.execute(stmt).all()
    except sa.exc.SQLAlchemyError as exc:
        raise store.error(f"contribution query of rule {rule.alert}", exc) from None
    n = len(got)
    cur = np.fromiter((bool(r[0]) for r in got), dtype=bool, count=n)
    xs = np.fromiter((float(r[1]) if r[1] is not None else math.nan for r in got), dtype=np.float64, count=n)
    dims = {
        d: [str(r[2 + j]) if r[2 + j] not in (None, "") else "∅" for r in got] for j, d in enumerate(dim_cols)
    }
    keep = ~np.isnan(xs)
    if not keep.all():
        idx = np.flatnonzero(keep)
        xs, cur = xs[keep], cur[keep]
        dims = {d: [v[i] for i in idx] for d, v in dims.items()}
    return Rows(xs, cur, dims)


def _x_column(table: Any, calls: bool, q: SqlQuery, dialect: str) -> Any:
    c = table.c
    if q.agg == "ratio":
        hits = [_is(table, name, wanted) for name, wanted in q.match.items()]
        if q.below is not None:
            hits.append(c.value < q.below)
        if q.missing_score is not None:
            hits.append(missing_score_condition(table, q.missing_score))
        return sa.case((sa.and_(*hits), 1.0), else_=0.0)
    if q.agg == "count":
        return None
    if not calls:
        return lag_column(c, dialect) if q.field == "lag_s" else c.value
    if q.field == "total_tokens":
        return c.input_tokens + c.output_tokens
    return c[q.field] if q.field is not None else None


def _is(table: Any, name: str, wanted: str | Sequence[str]) -> sa.ColumnElement[bool]:
    values = [wanted] if isinstance(wanted, str) else list(wanted)
    cond: sa.ColumnElement[bool] = table.c[name].in_(values)
    if "" in values:
        cond = sa.or_(cond, table.c[name].is_(None))
    return cond


def explain_sql(
    store: Store,
    rule: Rule,
    series: Labels,
    *,
    now: datetime,
    since: datetime,
    lookback: timedelta,
    change: float | None,
) -> Explanation | None:
    """Return the explanation of one alerting series of a SQL rule at ``now`` (episode from ``since``).

    The current period is the point's window ``(now − window, now]``; the reference reaches
    ``reference_span`` back from two windows before the episode's first point.
    """
    q = rule.query
    if q is None or rule.source not in ("calls", "scores"):
        return None
    window = q.window
    ref_hi = min(since, now) - REFERENCE_GAP * window
    ref_lo = ref_hi - reference_span(window, lookback)
    rows = fetch_rows(store, rule, series, (now - window, now), (ref_lo, ref_hi))
    scale = window / (ref_hi - ref_lo)
    return explain_rows(
        rows,
        agg=q.agg,
        metric=metric_name(rule),
        quantile=q.quantile,
        scale=scale,
        change=change,
        percent=q.agg == "ratio",
    )


__all__ = ["MAX_ROWS", "SCORE_DIMENSIONS", "explain_sql", "fetch_rows", "metric_name"]
