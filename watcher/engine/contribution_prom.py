"""Contribution by dimension for PromQL rules: the series inside a ``sum by (…)``.

A Prometheus rule's series carry only the labels its expression keeps. When the expression is a
``sum by (L) (X)`` (possibly scaled by numbers, ``* 3600``), the series that make up one alert are
those of ``X`` with the alert's ``L`` values: this module fetches ``X`` (the ``by``-less
sub-query) at the alert's point and over the reference period, one row per inner series (its value
now; its mean over the reference), and hands them to the additive decomposition of
``contribution`` over every label the inner series carry (model, feature, instance …). Other
expressions (ratios, quantiles of histograms, functions over the sum) get no explanation. It does
not own the decomposition (``contribution``) nor the queries (``sources.prometheus``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import promql_parser

from ..core import Labels
from ..rules.schema import Rule, TracesSpec
from ..sources.base import Source
from .contribution import REFERENCE_GAP, Explanation, Rows, explain_rows, reference_span

REFERENCE_POINTS = 12
"""Points of the reference period each inner series' expected level is the mean of."""
_SCALES = ("*", "/")


def inner_sum(expr: str) -> tuple[str, tuple[str, ...]] | None:
    """Return ``(X, L)`` when ``expr`` is ``sum by (L) (X)`` times or over numbers, else None."""
    try:
        node: Any = promql_parser.parse(expr)
    except ValueError:
        return None
    while True:
        kind = type(node).__name__
        if kind == "ParenExpr":
            node = node.expr
        elif kind == "BinaryExpr" and str(node.op) in _SCALES:
            if type(node.rhs).__name__ == "NumberLiteral":
                node = node.lhs
            elif type(node.lhs).__name__ == "NumberLiteral" and str(node.op) == "*":
                node = node.rhs
            else:
                return None
        else:
            break
    if type(node).__name__ != "AggregateExpr" or str(node.op) != "sum":
        return None
    if node.modifier is None:
        return node.expr.prettify(), ()
    if "By" not in str(node.modifier.type):
        return None  # sum without (…): the inner labels kept are not known without the data
    return node.expr.prettify(), tuple(node.modifier.labels)


def explain_prom(
    source: Source,
    rule: Rule,
    series: Labels,
    *,
    now: datetime,
    since: datetime,
    step: timedelta,
    lookback: timedelta,
    change: float | None,
) -> Explanation | None:
    """Return the explanation of one alerting series of a ``sum by`` PromQL rule, or None.

    Raises ``SourceError`` when a query fails.
    """
    if rule.expr is None:
        return None
    found = inner_sum(rule.expr)
    if found is None:
        return None
    inner, by = found
    sub = rule.model_copy(
        update={"expr": inner, "detector": None, "traces": TracesSpec.model_validate({"from": "none"})}
    )
    keep = {k: series[k] for k in by if k in series}

    def mine(got: list[Any]) -> list[Any]:
        return [s for s in got if all(s.labels.get(k) == v for k, v in keep.items())]

    current = mine(source.fetch(sub, now - step, now, step))
    ref_hi = min(since, now) - REFERENCE_GAP * step
    span = reference_span(step, lookback)
    ref_step = max(step, span / REFERENCE_POINTS)
    reference = mine(source.fetch(sub, ref_hi - span, ref_hi, ref_step))
    xs: list[float] = []
    flags: list[bool] = []
    labels: list[Labels] = []
    spread: dict[Labels, tuple[float, int]] = {}
    for s in reference:
        finite = s.values[np.isfinite(s.values)]
        if len(finite):
            spread[s.labels] = (float(finite.var(ddof=1)) if len(finite) > 1 else 0.0, len(finite))
    var: list[float] = []
    for s in current:
        if len(s.values) and np.isfinite(s.values[-1]):
            xs.append(float(s.values[-1]))
            flags.append(True)
            labels.append(s.labels)
            var.append(spread.get(s.labels, (0.0, 1))[0])  # a point's spread, as in the reference
    for s in reference:
        finite = s.values[np.isfinite(s.values)]
        if len(finite):
            xs.append(float(finite.mean()))
            flags.append(False)
            labels.append(s.labels)
            v, n = spread[s.labels]
            var.append(v / n)  # the spread of the reference mean
    names = sorted({k for lb in labels for k in lb if k not in keep and k != "__name__"})
    rows = Rows(
        np.array(xs, dtype=np.float64),
        np.array(flags, dtype=bool),
        {k: [lb.get(k, "∅") for lb in labels] for k in names},
        var=np.array(var, dtype=np.float64),
        var_df=REFERENCE_POINTS - 1,
    )
    what = inner if len(inner) <= 60 else inner[:57] + "…"
    return explain_rows(rows, agg="sum", metric=f"sum of {what}", change=change)


__all__ = ["explain_prom", "inner_sum"]
