"""The SQL source: rules with ``source: calls`` or ``source: scores`` evaluated on the store.

This module owns turning a rule's ``query`` block into labelled series: one SQL query per fetch
selects the rows of ``(first point - window, last point]`` (only the needed columns, filters in
SQL), and every windowed aggregate is then computed in numpy (``searchsorted`` window bounds,
cumulative sums; the min/max, quantile and top-row kernels are in ``windows``), together with the
top trace references behind each point (ranked only for the points asked for: ``PointTraces``).
It does not own the tables (``store.tables``), the
connection (``store.db``) nor anything Prometheus serves (``sources.prometheus``).

Timestamps are handled as integer microseconds so that a row exactly on a window edge falls on the
documented side: point ``t`` aggregates rows with ``t - window < ts <= t``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, get_args, overload

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from ..core import FloatArray, Labels, Series, TraceRef
from ..errors import QueryError, SourceError, SourceUnavailableError
from ..rules.schema import ALL_SCORES, GUARDED_LABELS, OTHER, CallField, CallLabel, Rule, ScoreLabel, SqlQuery
from ..store.db import Store, describe_error, open_store
from ..store.tables import Call, Score
from .base import step_grid
from .sqlagg import (
    POINT_QUERIES,
    bucket_column,
    bucket_us,
    bucket_windows,
    cells,
    grouped,
    mask_sparse,
    merge,
    point_windows,
)
from .windows import IntArray, factorize, group_rows, range_quantile, range_reduce, top_by_key

CALL_LABELS: tuple[str, ...] = get_args(CallLabel)
SCORE_LABELS: tuple[str, ...] = get_args(ScoreLabel)
CALL_FIELDS: tuple[str, ...] = get_args(CallField)
DEFAULT_TOP = 5
logger = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = 1_000_000
_FMAX = float(np.finfo(np.float64).max)


def _to_datetime(us: int) -> datetime:
    """Convert integer Unix microseconds to a UTC-aware datetime, exactly."""
    return _EPOCH + timedelta(microseconds=int(us))


class SqlSource:
    """Serves ``calls`` and ``scores`` rules from the store's tables."""

    name = "sql"

    def __init__(self, store: Store, *, aggregate: bool = True) -> None:
        """``aggregate=False`` computes every window from the raw rows in numpy (the reference)."""
        self.store = store
        self.aggregate = aggregate
        self._labels: dict[tuple[tuple[str, ...], tuple[Any, ...]], Labels] = {}
        """``(by, key)`` → the label set handed out for it last time (a tick builds none anew)."""

    def portable(self) -> SqlSourceRecipe | None:
        """Return how to open this source in another process, or None for an in-memory database."""
        url = self.store.engine.url
        if self.store.dialect == "sqlite" and (
            url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
        ):
            return None
        return SqlSourceRecipe(url.render_as_string(hide_password=False))

    def fetch(self, rule: Rule, start: datetime, end: datetime, step: timedelta) -> list[Series]:
        """Return one series per ``query.by`` label combination, on the step grid in ``(start, end]``."""
        q = _check(rule)
        grid = step_grid(start, end, step)
        if len(grid) == 0:
            return []
        grid_us = np.round(grid * _US).astype(np.int64)
        window_us = round(q.window.total_seconds() * _US)
        want_traces = rule.traces is None or rule.traces.from_ != "none"
        g_us = None
        # missing_score is judged as of each point (a score counts from its own ts on): rows path
        if self.aggregate and self.store.dialect in ("sqlite", "postgresql") and q.missing_score is None:
            g_us = bucket_us(q.agg, round(step.total_seconds() * _US), window_us)
        if g_us is not None:
            return self._fetch_windows(rule, q, grid, grid_us, window_us, g_us, want_traces)
        return self._fetch_rows(rule, q, grid, grid_us, window_us, want_traces)

    def _fetch_rows(
        self, rule: Rule, q: SqlQuery, grid: FloatArray, grid_us: IntArray, window_us: int, want_traces: bool
    ) -> list[Series]:
        """Return ``fetch``'s series from the raw rows, aggregated in numpy (quantiles need them)."""
        stmt = _statement(
            rule,
            q,
            self.store.dialect,
            _to_datetime(grid_us[0] - window_us),
            _to_datetime(grid_us[-1]),
            want_traces,
        )
        rows = self._run(rule, stmt)
        if not rows:
            return []
        ts, values, matched, cols = _decode(rule, q, rows, self.store.dialect)
        nby = len(q.by)
        codes, groups = factorize(cols[:nby], len(rows))
        extra = cols[nby:]
        out = []
        for key, idx in group_rows(ts, codes, groups):
            labels = Labels(dict(zip(q.by, key, strict=True)))
            refs = _RefMaker(rule, idx, ts, values, extra) if want_traces else None
            out.append(
                _series(rule, q, labels, grid, grid_us, window_us, ts[idx], values[idx], matched[idx], refs)
            )
        out.sort(key=lambda s: s.labels.pairs)
        return out

    def _fetch_windows(
        self,
        rule: Rule,
        q: SqlQuery,
        grid: FloatArray,
        grid_us: IntArray,
        window_us: int,
        g_us: int,
        want_traces: bool,
    ) -> list[Series]:
        """Return ``fetch``'s series from windows the database aggregated (``sqlagg``).

        The trace references are read afterwards from the rows of the series asked for only
        (``_TraceBatch``), so a tick moves a few numbers per series, not every row's strings.
        """
        dialect = self.store.dialect
        table, value, matched, conds = _parts(rule, q, dialect)
        c = table.c
        by, from_ = by_columns(table, q, value, conds, _to_datetime(int(grid_us[-1])))
        if len(grid_us) <= POINT_QUERIES:
            parts = []
            for j, t in enumerate(grid_us.tolist()):
                span = [c.ts > _to_datetime(t - window_us), c.ts <= _to_datetime(t)]
                stmt = grouped(by, None, q.agg, value, matched, [*span, *conds], from_)
                parts.append(cells(self._run(rule, stmt), len(by), False, j))
            w = point_windows(merge(parts), len(grid_us), q.agg)
        else:
            k_first = (int(grid_us[0]) - window_us) // g_us + 1
            nbuckets = int(grid_us[-1]) // g_us - k_first + 1
            slot = bucket_column(c.ts, dialect, g_us) - k_first
            span = [c.ts > _to_datetime(int(grid_us[0]) - window_us), c.ts <= _to_datetime(int(grid_us[-1]))]
            stmt = grouped(by, slot, q.agg, value, matched, [*span, *conds], from_)
            hi = grid_us // g_us - k_first + 1
            lo = (grid_us - window_us) // g_us - k_first + 1
            w = bucket_windows(merge([cells(self._run(rule, stmt), len(by), True)]), hi, lo, nbuckets, q.agg)
        if not w.groups:
            return []
        if q.per is not None:
            w.values *= q.per.total_seconds() * _US / window_us
        mask_sparse(w, q.min_count)
        grid = grid.copy()
        grid.flags.writeable = False  # one grid shared by every series of the fetch
        batch = _TraceBatch(self, rule, q, grid_us, window_us, w.groups) if want_traces else None
        out = []
        known = self._labels
        if len(known) > 4 * len(w.groups) + 1024:  # series gone since: start over rather than grow
            known.clear()
        names = tuple(q.by)
        for code, key in enumerate(w.groups):
            labels = known.get((names, key))
            if labels is None:
                labels = known[(names, key)] = Labels(dict(zip(names, key, strict=True)))
            values = w.values[code]
            traces = batch.traces(code, values) if batch is not None else ()
            out.append(Series(labels, grid, values, w.counts[code], traces))
        out.sort(key=lambda s: s.labels.pairs)
        return out

    def shared_key(self, rule: Rule) -> tuple[Any, ...] | None:
        """Return what a rule's rows depend on besides time, for ``fetch_shared``; None if it cannot share.

        Rules with the same key read the same rows of the same table (same ``where``, same score),
        differing only in the columns they aggregate and their windows. A rule that wants trace
        references does not share (its query carries the trace columns).
        """
        q = rule.query
        if rule.source not in ("calls", "scores") or q is None:
            return None
        if rule.traces is None or rule.traces.from_ != "none":
            return None
        if q.top is not None or q.missing_score is not None:
            return None  # a top-N guard ranks in its own query; a coverage rule reads raw rows
        where = tuple(sorted((k, (v,) if isinstance(v, str) else tuple(v)) for k, v in q.where.items()))
        return (rule.source, where, q.score if rule.source == "scores" else None)

    def fetch_shared(
        self, requests: Sequence[tuple[Rule, datetime, datetime, timedelta]]
    ) -> list[list[Series]]:
        """Return, for each ``(rule, start, end, step)``, what ``fetch`` returns, from one query.

        The rules must have one ``shared_key``. The query selects the union of their columns over
        the union of their row ranges; each rule then takes its own rows (its range, and non-NULL
        values where its own query filters on them) in the order the query returned them, which
        is the order of the ``ts`` index both queries scan, so its series are those of ``fetch``.
        Several rules on the ``calls`` table read its rows once instead of once each.
        """
        wanted = []
        for rule, start, end, step in requests:
            q = _check(rule)
            grid = step_grid(start, end, step)
            grid_us = np.round(grid * _US).astype(np.int64)
            wanted.append((rule, q, grid, grid_us, round(q.window.total_seconds() * _US)))
        live = [w for w in wanted if len(w[2])]
        if not live:
            return [[] for _ in requests]
        keys = {self.shared_key(w[0]) for w in wanted}
        if len(keys) != 1 or None in keys:
            raise QueryError("fetch_shared: the rules do not read the same rows", source=self.name)
        lo_us = min(int(w[3][0]) - w[4] for w in live)
        hi_us = max(int(w[3][-1]) for w in live)
        stmt, cols_of = _shared_statement(
            [(w[0], w[1]) for w in wanted], self.store.dialect, _to_datetime(lo_us), _to_datetime(hi_us)
        )
        rows = self._run(live[0][0], stmt)
        if not rows:
            return [[] for _ in requests]
        cols = [list(map(itemgetter(i), rows)) for i in range(len(rows[0]))]
        ts = _epoch_us(cols[0], self.store.dialect)
        memo: dict[tuple[Any, ...], Any] = {}

        def decoded(kind: str, at: tuple[int, ...]) -> Any:
            got = memo.get((kind, at))
            if got is None:
                if kind == "value":
                    raw = cols[at[0]]
                    values = np.array(raw, dtype=np.float64)
                    # NULL reads as NaN; a stored NaN (PostgreSQL) is a value, which the query keeps.
                    known = None
                    if np.isnan(values).any():
                        known = np.fromiter((x is not None for x in raw), dtype=bool, count=len(raw))
                    got = (values, known)
                elif kind == "matched":
                    got = np.array(cols[at[0]], dtype=bool)
                else:
                    got = factorize([cols[i] for i in at], len(rows))
                memo[(kind, at)] = got
            return got

        out: list[list[Series]] = []
        for (rule, q, grid, grid_us, window_us), at in zip(wanted, cols_of, strict=True):
            if not len(grid):
                out.append([])
                continue
            sel = (ts > grid_us[0] - window_us) & (ts <= grid_us[-1])
            has_value, has_matched = _carries(rule, q)
            if has_value:
                all_values, known = decoded("value", at["value"])
                if known is not None and q.agg != "ratio":  # its own query filters NULL values out
                    sel &= known
            idx = np.flatnonzero(sel)
            rts = ts[idx]
            values = all_values[idx] if has_value else np.full(len(idx), math.nan)
            matched = (
                decoded("matched", at["matched"])[idx] if has_matched else np.zeros(len(idx), dtype=bool)
            )
            all_codes, groups = decoded("by", at["by"])
            series = []
            for key, g in group_rows(rts, all_codes[idx], groups):
                labels = Labels(dict(zip(q.by, key, strict=True)))
                series.append(
                    _series(rule, q, labels, grid, grid_us, window_us, rts[g], values[g], matched[g], None)
                )
            series.sort(key=lambda s: s.labels.pairs)
            out.append(series)
        return out

    def _run(self, rule: Rule, stmt: sa.Select[Any]) -> list[tuple[Any, ...]]:
        """Execute ``stmt`` and return its raw rows, translating driver errors into source errors."""
        try:
            with self.store.engine.connect() as conn:
                result = conn.execute(stmt)
                # Every selected column is a plain number or string already, so the driver's rows
                # are used as they are: building Row objects would double the cost of a backtest.
                rows = list(result.cursor.fetchall())
                result.close()
                return rows
        except sa.exc.SQLAlchemyError as exc:
            what = describe_error(exc)
            msg = self.store.redact(
                f"rule {rule.alert}: {rule.source} query on {self.store.url_display}: {what}"
            )
            if isinstance(exc, sa.exc.ProgrammingError) or "no such column" in what:
                raise QueryError(msg, source=self.name) from None
            raise SourceUnavailableError(msg, source=self.name) from None


@dataclass(frozen=True)
class SqlSourceRecipe:
    """Opens an equivalent ``SqlSource`` in another process (a backtest's worker, ``--jobs``)."""

    url: str = field(repr=False)
    """The database URL, password included (it crosses to the worker, never into a message)."""

    def __call__(self) -> SqlSource:
        return SqlSource(open_store(self.url))


def _check(rule: Rule) -> SqlQuery:
    """Return the rule's query after checking that this source can serve it."""
    if rule.source not in ("calls", "scores") or rule.query is None:
        raise QueryError(
            f"rule {rule.alert}: source {rule.source} is not served by the sql source", source="sql"
        )
    q = rule.query
    allowed = CALL_LABELS if rule.source == "calls" else SCORE_LABELS
    if rule.source == "calls" and q.top is not None:
        allowed = (*allowed, *GUARDED_LABELS)
    for what, names in (("by", q.by), ("where", q.where), ("match", q.match)):
        bad = [n for n in names if n not in allowed]
        if bad:
            raise QueryError(
                f"rule {rule.alert}: query.{what} names unknown {rule.source} column(s) {', '.join(bad)}; "
                f"known: {', '.join(allowed)}",
                source="sql",
            )
    if rule.source == "calls" and q.field is not None and q.field not in CALL_FIELDS:
        raise QueryError(f"rule {rule.alert}: unknown calls field {q.field}", source="sql")
    return q


def _condition(table: Any, name: str, wanted: str | list[str]) -> sa.ColumnElement[bool]:
    """Return the SQL condition "column is one of ``wanted``" (``""`` also matches NULL)."""
    values = [wanted] if isinstance(wanted, str) else list(wanted)
    column = table.c[name]
    cond: sa.ColumnElement[bool] = column.in_(values)
    if "" in values:
        cond = sa.or_(cond, column.is_(None))
    return cond


def _parts(rule: Rule, q: SqlQuery, dialect: str) -> tuple[Any, Any, Any, list[Any]]:
    """Return a rule's table, value and matched columns, and its row filters besides time."""
    calls = rule.source == "calls"
    table: Any = Call.__table__ if calls else Score.__table__  # type: ignore[attr-defined]
    c = table.c
    value = _value_column(c, calls, q, dialect)
    conds = [_condition(table, name, wanted) for name, wanted in q.where.items()]
    if not calls and q.score != ALL_SCORES:
        # Without ANALYZE statistics SQLite picks the equality index on name over the ts range and
        # reads every score of that name ever stored, on every tick; `name || ''` keeps it on ts.
        conds.append((c.name.concat("") if dialect == "sqlite" else c.name) == q.score)
    if q.agg != "ratio" and (not calls or q.field is not None):
        conds.append(value.is_not(None))  # a NULL field does not take part in the aggregate
    matched = _matched_column(table, q) if q.agg == "ratio" else sa.literal(0)
    return table, value, matched, conds


def _statement(
    rule: Rule,
    q: SqlQuery,
    dialect: str,
    lo: datetime,
    hi: datetime,
    want_traces: bool,
    keys: Sequence[tuple[Any, ...]] = (),
) -> sa.Select[Any]:
    """Return the one SELECT of a fetch: ts, value, matched (see ``_carries``), the ``by`` columns,
    then the trace columns (``keys``: only the rows of the series with these ``by`` values)."""
    calls = rule.source == "calls"
    table, value, matched, conds = _parts(rule, q, dialect)
    c = table.c
    ts_col = _ts_column(c, dialect)
    by, from_ = by_columns(table, q, value, conds, hi)
    only = []
    if keys:
        pick = [
            sa.and_(
                sa.true(),
                *(
                    _key_condition(table, q, col, name, val)
                    for col, name, val in zip(by, q.by, key, strict=True)
                ),
            )
            for key in keys
        ]
        only.append(sa.or_(*pick))
    conds = [c.ts > lo, c.ts <= hi, *conds, *only]
    has_value, has_matched = _carries(rule, q)
    columns = [ts_col, *([value] if has_value else []), *([matched] if has_matched else [])]
    columns += by
    if want_traces:
        notes = ("model", "tenant", "outcome") if calls else ("name", "feature", "tenant", "label")
        span = c.span_id if calls else sa.null()
        columns += [c.trace_id, span, *(c[n] for n in notes)]
    stmt = sa.select(*columns)
    if from_ is not None:
        stmt = stmt.select_from(from_)
    stmt = stmt.where(*conds)
    # the order of the ts index scan the full fetch reads (ties by insertion), asked for explicitly
    return stmt.order_by(c.ts, c.id) if only else stmt


def by_columns(
    table: Any, q: SqlQuery, value: Any, conds: Sequence[Any], hi: datetime
) -> tuple[list[Any], Any | None]:
    """Return a query's ``by`` columns and its FROM clause (None: the table alone).

    Under a top-N guard (``query.top``) the guarded label is folded in SQL: a subquery ranks its
    values over ``(hi - top.over, hi]`` (by the summed field, else by rows; ties by value), the
    table is outer-joined to the ``n`` first, and every other row (NULL included) reads ``(other)``.
    The folded expression has no bound parameter, so GROUP BY repeats it verbatim (PostgreSQL).
    """
    c = table.c
    if q.top is None:
        return [c[name] for name in q.by], None
    name = next(n for n in q.by if n in GUARDED_LABELS)
    measure = sa.func.sum(value) if q.agg in ("sum", "mean") and q.field is not None else sa.func.count()
    rank = (
        sa.select(c[name].label("top_key"))
        .where(c.ts > hi - q.top.over, c.ts <= hi, c[name].is_not(None), *conds)
        .group_by(c[name])
        .order_by(measure.desc(), c[name])
        .limit(q.top.n)
        .subquery("top_n")
    )
    folded = sa.case((rank.c.top_key.is_not(None), rank.c.top_key), else_=sa.literal_column(f"'{OTHER}'"))
    return [folded if n == name else c[n] for n in q.by], table.outerjoin(rank, c[name] == rank.c.top_key)


def _key_condition(table: Any, q: SqlQuery, column: Any, name: str, value: Any) -> sa.ColumnElement[bool]:
    """Return "this row is in the series whose ``name`` label is ``value``" (folded labels compare
    their expression; ``""`` also matches NULL, as ``_condition``)."""
    if q.top is not None and name in GUARDED_LABELS:
        return column == value  # type: ignore[no-any-return]
    return _condition(table, name, value)


def _ts_column(c: Any, dialect: str) -> Any:
    """Return the selected timestamp column (see ``_epoch_us``)."""
    if dialect == "sqlite":
        # The stored naive-UTC text, parsed by numpy in one call (date functions in SQLite are slower).
        return sa.type_coerce(c.ts, sa.String)
    if dialect == "postgresql":
        return sa.cast(sa.extract("epoch", c.ts) * _US, sa.BigInteger)
    return c.ts


def _value_column(c: Any, calls: bool, q: SqlQuery, dialect: str) -> Any:
    """Return the aggregated column: the score, the calls field, or NULL (a calls rule without field).

    ``lag_s`` (scores) is the seconds from the newest call of the scored trace at or before the
    score to the score; NULL when the trace has no such call (the row then takes no part).
    """
    if not calls:
        if q.field == "lag_s":
            return lag_column(c, dialect)
        return c.value
    if q.missing_score is not None:
        first = scored_at_column(c, q.missing_score)
        if dialect == "sqlite":
            return sa.type_coerce(first, sa.String)  # naive-UTC text, as ``_ts_column``
        if dialect == "postgresql":
            return sa.cast(sa.extract("epoch", first) * _US, sa.BigInteger)
        return first
    if q.field == "total_tokens":
        return c.input_tokens + c.output_tokens
    if q.field is not None:
        return c[q.field]
    return sa.null()


def lag_column(c: Any, dialect: str) -> Any:
    """Return the judge's lag of each score row in seconds (a correlated subquery on ``calls``)."""
    calls: Any = Call.__table__  # type: ignore[attr-defined]
    last_call = (
        sa.select(sa.func.max(calls.c.ts))
        .where(calls.c.trace_id == c.trace_id, calls.c.ts <= c.ts)
        .scalar_subquery()
    )
    if dialect == "sqlite":
        # julianday is a double of days (~4 µs of error at today's dates): rounded to the millisecond
        return sa.func.round((sa.func.julianday(c.ts) - sa.func.julianday(last_call)) * 86_400.0, 3)
    if dialect == "postgresql":
        return sa.extract("epoch", c.ts - last_call)
    raise QueryError(f"field lag_s is not supported on {dialect}", source="sql")


def scored_at_column(c: Any, name: str) -> Any:
    """Return when each call's trace first got a score named ``name`` (NULL: never)."""
    scores: Any = Score.__table__  # type: ignore[attr-defined]
    first = sa.select(sa.func.min(scores.c.ts)).where(scores.c.trace_id == c.trace_id, scores.c.name == name)
    return first.scalar_subquery()


def missing_score_condition(table: Any, name: str) -> Any:
    """Return the condition "this call's trace has no score named ``name``"."""
    scores: Any = Score.__table__  # type: ignore[attr-defined]
    has = sa.select(scores.c.id).where(scores.c.trace_id == table.c.trace_id, scores.c.name == name)
    return ~sa.exists(has)


def _matched_column(table: Any, q: SqlQuery) -> Any:
    """Return 1 for the rows a ratio counts as hits (``match``, ``below``, ``missing_score``), else 0."""
    hits = [_condition(table, name, wanted) for name, wanted in q.match.items()]
    if q.below is not None:
        hits.append(table.c.value < q.below)
    if q.missing_score is not None:
        hits.append(missing_score_condition(table, q.missing_score))
    return sa.case((sa.and_(*hits), 1), else_=0)


def _carries(rule: Rule, q: SqlQuery) -> tuple[bool, bool]:
    """Return whether a fetch selects the value column and the ratio's matched column.

    A calls rule without ``field`` has no value (NULL) and only a ratio has matched rows: the
    constants are filled in numpy rather than sent for each of millions of rows. A
    ``missing_score`` ratio selects when each call was first scored as its value instead.
    """
    if q.missing_score is not None:
        return True, False
    return rule.source != "calls" or q.field is not None, q.agg == "ratio"


def _shared_statement(
    rules: Sequence[tuple[Rule, SqlQuery]], dialect: str, lo: datetime, hi: datetime
) -> tuple[sa.Select[Any], list[dict[str, tuple[int, ...]]]]:
    """Return the SELECT of a shared fetch (ts, then each distinct column the rules need) and, per
    rule, where its columns are: ``value`` and ``matched`` (one index), ``by`` (one per label)."""
    first_rule, first_q = rules[0]
    calls = first_rule.source == "calls"
    table: Any = Call.__table__ if calls else Score.__table__  # type: ignore[attr-defined]
    c = table.c
    columns: list[Any] = [_ts_column(c, dialect)]
    index: dict[str, int] = {}

    def slot(key: str, column: Any) -> int:
        """Return where ``column`` is selected, adding it unless a column of that key already is."""
        if key not in index:
            index[key] = len(columns)
            columns.append(column)
        return index[key]

    where: list[dict[str, tuple[int, ...]]] = []
    for rule, q in rules:
        has_value, has_matched = _carries(rule, q)
        at: dict[str, tuple[int, ...]] = {}
        if has_value:
            at["value"] = (slot(f"value:{q.field}", _value_column(c, calls, q, dialect)),)
        if has_matched:
            key = f"matched:{sorted(q.match.items())!r}:{q.below!r}:{q.missing_score!r}"
            at["matched"] = (slot(key, _matched_column(table, q)),)
        at["by"] = tuple(slot(f"by:{name}", c[name]) for name in q.by)
        where.append(at)
    conds = [c.ts > lo, c.ts <= hi]
    conds += [_condition(table, name, wanted) for name, wanted in first_q.where.items()]
    if not calls and first_q.score != ALL_SCORES:
        conds.append((c.name.concat("") if dialect == "sqlite" else c.name) == first_q.score)
    return sa.select(*columns).where(*conds), where


def _epoch_us(raw: Sequence[Any], dialect: str) -> IntArray:
    """Convert the selected timestamp column to integer Unix microseconds."""
    if dialect == "sqlite":
        return np.array(raw, dtype="datetime64[us]").astype(np.int64)
    if dialect == "postgresql":
        return np.array(raw, dtype=np.int64)
    return np.array([round(_aware(t).timestamp() * _US) for t in raw], dtype=np.int64)


def _decode(
    rule: Rule, q: SqlQuery, rows: Sequence[tuple[Any, ...]], dialect: str
) -> tuple[IntArray, FloatArray, npt.NDArray[np.bool_], list[list[Any]]]:
    """Return the ts, value and matched columns of raw rows, and the other columns as lists."""
    # One column at a time: transposing with zip(*rows) costs more than the query itself.
    cols = [list(map(itemgetter(i), rows)) for i in range(len(rows[0]))]
    ts = _epoch_us(cols.pop(0), dialect)
    # Columns that are constant for this rule are not transferred row by row (see _carries).
    has_value, has_matched = _carries(rule, q)
    if q.missing_score is not None:  # when each call was first scored, in Unix µs (NaN: never)
        raw = cols.pop(0)
        known = [x for x in raw if x is not None]
        values = np.full(len(rows), math.nan)
        if known:
            at = np.fromiter((x is not None for x in raw), dtype=bool, count=len(raw))
            values[at] = _epoch_us(known, dialect).astype(np.float64)
    elif has_value:
        values = np.array(cols.pop(0), dtype=np.float64)
    else:
        values = np.full(len(rows), math.nan)
    matched = np.array(cols.pop(0), dtype=bool) if has_matched else np.zeros(len(rows), dtype=bool)
    return ts, values, matched, cols


class _TraceBatch:
    """Reads the rows behind the series whose trace references are asked for, several at once.

    A series' references are built from exactly the rows the raw-row path would have read for it
    (same range, same filters, same order), so they are the same. The engine announces the series
    it will ask (``PointTraces.want``) before asking any; the first question then reads the rows of
    all announced series in one query. A failed read leaves those series without references (a
    warning) rather than failing the evaluation: the verdicts are already made.
    """

    CHUNK = 200

    def __init__(
        self,
        source: SqlSource,
        rule: Rule,
        q: SqlQuery,
        grid_us: IntArray,
        window_us: int,
        groups: list[tuple[Any, ...]],
    ) -> None:
        self.source = source
        self.rule = rule
        self.q = q
        self.grid_us = grid_us
        self.window_us = window_us
        self.groups = groups
        self.code_of = {key: code for code, key in enumerate(groups)}
        self.wanted: set[int] = set()
        self.rows: dict[int, tuple[IntArray, FloatArray, npt.NDArray[np.bool_], _RefMaker] | None] = {}

    def traces(self, code: int, values: FloatArray) -> PointTraces:
        """Return the lazy references of series ``code`` (whose window values are ``values``)."""
        picks: list[Callable[[IntArray], list[tuple[TraceRef, ...]]]] = []

        def pick(points: IntArray) -> list[tuple[TraceRef, ...]]:
            if not picks:
                got = self._rows_of(code)
                if got is None:
                    return [()] * len(points)
                ts, v, matched, refs = got
                hi = np.searchsorted(ts, self.grid_us, side="right")
                lo = np.searchsorted(ts, self.grid_us - self.window_us, side="right")
                picks.append(_traces(self.rule, self.q, ts, v, matched, lo, hi, values, refs)._pick)
            return picks[0](points)

        return PointTraces(pick, len(values), want=lambda: self.wanted.add(code))

    def _rows_of(self, code: int) -> tuple[IntArray, FloatArray, npt.NDArray[np.bool_], _RefMaker] | None:
        if code not in self.rows:
            todo = sorted((self.wanted | {code}) - set(self.rows))
            for first in range(0, len(todo), self.CHUNK):
                self._read(todo[first : first + self.CHUNK])
        return self.rows.get(code)

    def _read(self, codes: list[int]) -> None:
        rule, q = self.rule, self.q
        keys = [self.groups[code] for code in codes]
        stmt = _statement(
            rule,
            q,
            self.source.store.dialect,
            _to_datetime(int(self.grid_us[0]) - self.window_us),
            _to_datetime(int(self.grid_us[-1])),
            True,
            keys=keys,
        )
        for code in codes:
            self.rows[code] = None
        try:
            rows = self.source._run(rule, stmt)
        except SourceError as exc:
            logger.warning("trace references not read: %s", exc, extra={"rule": rule.alert})
            return
        if not rows:
            return
        ts, values, matched, cols = _decode(rule, q, rows, self.source.store.dialect)
        nby = len(q.by)
        row_codes, groups = factorize(cols[:nby], len(rows))
        extra = cols[nby:]
        for key, idx in group_rows(ts, row_codes, groups):
            at = self.code_of.get(key)
            if at is not None:
                self.rows[at] = (
                    ts[idx],
                    values[idx],
                    matched[idx],
                    _RefMaker(rule, idx, ts, values, extra),
                )


def _aware(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


class _RefMaker:
    """Builds the trace references of chosen rows of one group."""

    def __init__(
        self, rule: Rule, idx: IntArray, ts: IntArray, values: FloatArray, extra: Sequence[Any]
    ) -> None:
        self.calls = rule.source == "calls"
        self.idx = idx
        self.ts = ts
        self.values = values
        self.extra = extra

    def make(self, local: IntArray) -> npt.NDArray[np.object_]:
        """Return an object array over the group's rows holding a ``TraceRef`` at each of ``local``."""
        out = np.empty(len(self.idx), dtype=object)
        at = self.idx[local]
        rows: list[int] = at.tolist()
        trace_ids, span_ids, *note_cols = ([col[r] for r in rows] for col in self.extra)
        raw = self.values[at]
        values = [None if math.isnan(x) else x for x in raw.tolist()]
        stamps = self.ts[at].astype("datetime64[us]").astype(object).tolist()
        notes: dict[tuple[Any, ...], str | None] = {}
        refs = []
        for trace_id, span_id, value, stamp, key in zip(
            trace_ids, span_ids, values, stamps, zip(*note_cols, strict=True), strict=True
        ):
            note = notes.get(key, "")
            if note == "":
                parts = (key[0], key[1], "" if key[2] == "ok" else key[2]) if self.calls else key
                note = notes[key] = " · ".join(p for p in parts if p) or None
            refs.append(TraceRef(trace_id, span_id, value, stamp.replace(tzinfo=UTC), note))
        out[local] = refs
        return out


def _series(
    rule: Rule,
    q: SqlQuery,
    labels: Labels,
    grid: FloatArray,
    grid_us: IntArray,
    window_us: int,
    ts: IntArray,
    v: FloatArray,
    matched: npt.NDArray[np.bool_],
    refs: _RefMaker | None,
) -> Series:
    """Return one group's series: rows (sorted by ts) aggregated over each point's window."""
    hi = np.searchsorted(ts, grid_us, side="right")
    lo = np.searchsorted(ts, grid_us - window_us, side="right")
    n = hi - lo
    counts = n.astype(np.float64)
    if q.missing_score is not None:
        # v: when each call was first scored (µs, NaN: never). The point at t is evaluated at
        # t + evaluation_delay (the daemon's clock then): a call is unscored at that point when
        # its score came later. The trace references are the calls unscored for their whole
        # window (unscored at any point that holds them).
        asof = grid_us + round(rule.evaluation_delay.total_seconds() * _US)
        v, scored = np.where(np.isnan(v), np.inf, v), v
        unscored = np.array([np.count_nonzero(v[a:b] > t) for a, b, t in zip(lo, hi, asof, strict=True)])
        matched = v > ts + window_us + (asof[0] - grid_us[0])
        v = scored
    with np.errstate(invalid="ignore", divide="ignore"):
        if q.missing_score is not None:
            values = unscored / counts
        elif q.agg == "count":
            values = counts.copy()
        elif q.agg in ("sum", "mean"):
            cs = np.concatenate(([0.0], np.cumsum(v)))
            values = cs[hi] - cs[lo]
            if q.agg == "mean":
                values = values / counts
        elif q.agg == "ratio":
            cm = np.concatenate(([0], np.cumsum(matched)))
            values = (cm[hi] - cm[lo]) / counts
        elif q.agg in ("min", "max"):
            values = range_reduce(v, lo, hi, np.minimum if q.agg == "min" else np.maximum)
        else:
            values = range_quantile(v, lo, hi, 0.5 if q.quantile is None else q.quantile)
    if q.per is not None:
        values = values * (q.per.total_seconds() * _US / window_us)
    values[n < max(q.min_count, 1)] = math.nan
    traces: Sequence[tuple[TraceRef, ...]] = ()
    if refs is not None:
        traces = _traces(rule, q, ts, v, matched, lo, hi, values, refs)
    return Series(labels, grid.copy(), values, counts, traces)


def _traces(
    rule: Rule,
    q: SqlQuery,
    ts: IntArray,
    v: FloatArray,
    matched: npt.NDArray[np.bool_],
    lo: IntArray,
    hi: IntArray,
    values: FloatArray,
    refs: _RefMaker,
) -> PointTraces:
    """Return the top trace references behind each point, built when a point is first asked for.

    Only an alert's points are ever asked for (``engine.group``): ranking the rows of every window
    of every series, each tick, was most of the cost of a tick.
    """
    spec = rule.traces
    top = spec.top if spec is not None else DEFAULT_TOP
    order = spec.order if spec is not None else "value_desc"
    has_values = rule.source == "scores" or q.field is not None
    if q.agg == "ratio":
        # The offenders of a rate are the matching rows (the refused calls), newest first, unless
        # the rule asked for a value order explicitly.
        cand = np.flatnonzero(matched)
        explicit = spec is not None and "order" in spec.model_fields_set
        order = order if explicit and has_values else "recent"
        clo, chi = np.searchsorted(cand, lo), np.searchsorted(cand, hi)
    else:
        cand = np.arange(len(ts))
        clo, chi = lo, hi
        if not has_values:
            order = "recent"
    n = chi - clo
    keys: list[FloatArray] = []  # the ranking key, computed at the first question (most never come)

    def pick(points: IntArray) -> list[tuple[TraceRef, ...]]:
        """Return the references behind each of ``points`` (none behind a point without a value)."""
        out: list[tuple[TraceRef, ...]] = [()] * len(points)
        ok = np.flatnonzero((n[points] > 0) & ~np.isnan(values[points]))
        if len(ok) == 0:
            return out
        sel = points[ok]
        if order == "recent":
            k = np.arange(top)
            valid = k < n[sel, None]
            picked = np.where(valid, cand[np.where(valid, chi[sel, None] - 1 - k, 0)], -1)
        else:
            if not keys:
                raw = v if order == "value_desc" else -v
                keys.append(np.nan_to_num(raw, nan=-_FMAX, posinf=_FMAX, neginf=-_FMAX))
            picked = top_by_key(cand, keys[0], clo[sel], n[sel], top)
        made = refs.make(np.unique(picked[picked >= 0]))[np.maximum(picked, 0)].tolist()
        for at, row, count in zip(ok.tolist(), made, np.minimum(n[sel], top).tolist(), strict=True):
            out[at] = tuple(row[:count])
        return out

    return PointTraces(pick, len(values))


class PointTraces(Sequence[tuple[TraceRef, ...]]):
    """The trace references behind each point of one series, built on first access, in blocks.

    Indexing builds (and keeps) the references of a block of points from the one asked for on,
    so an alert's few points cost a few, and a backtest walking every point still ranks them in
    vectorised blocks. A slice is a view sharing what was built.
    """

    BLOCK = 256

    def __init__(
        self,
        pick: Callable[[IntArray], list[tuple[TraceRef, ...]]],
        n: int,
        offset: int = 0,
        built: dict[int, tuple[TraceRef, ...]] | None = None,
        want: Callable[[], None] | None = None,
    ) -> None:
        self._want = want
        self._pick = pick
        self._n = n
        self._offset = offset
        self._built: dict[int, tuple[TraceRef, ...]] = {} if built is None else built
        self._total = offset + n

    def __len__(self) -> int:
        return self._n

    def want(self) -> None:
        """Announce that some of these references will be asked for (the source may batch reads)."""
        if self._want is not None:
            self._want()

    @overload
    def __getitem__(self, i: int) -> tuple[TraceRef, ...]: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[tuple[TraceRef, ...]]: ...

    def __getitem__(self, i: int | slice) -> tuple[TraceRef, ...] | Sequence[tuple[TraceRef, ...]]:
        if isinstance(i, slice):
            start, stop, stride = i.indices(self._n)
            if stride != 1:
                return tuple(self[k] for k in range(start, stop, stride))
            view = PointTraces(
                self._pick, max(0, stop - start), self._offset + start, self._built, self._want
            )
            view._total = self._total
            return view
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("point index out of range")
        k = self._offset + i
        got = self._built.get(k)
        if got is None:
            block = np.arange(k, min(k + self.BLOCK, self._total), dtype=np.int64)
            block = block[[int(b) not in self._built for b in block]]
            for b, refs in zip(block.tolist(), self._pick(block), strict=True):
                self._built[b] = refs
            got = self._built[k]
        return got

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __hash__(self) -> int:
        return id(self)


__all__ = [
    "CALL_FIELDS",
    "CALL_LABELS",
    "SCORE_LABELS",
    "PointTraces",
    "SqlSource",
    "SqlSourceRecipe",
    "lag_column",
    "missing_score_condition",
    "scored_at_column",
]
