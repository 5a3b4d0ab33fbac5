"""The status page: HTML rendered on the server (Jinja2, no JavaScript build), and its chart PNGs.

This module owns the routes ``/`` (rule groups with health, firing and pending alerts with their
charts and trace links, silences, recent notifications, dead letters, the last reload error),
``/rules/{group}/{rule}`` (one rule with its seven-day chart per series — the link every
notification carries), ``/chart/alert/{fingerprint}.png`` and
``/chart/rule/{group}/{rule}/{index}.png``. Templates are package data in ``templates/``.

Every route needs scope ``read`` once ``server.read_token`` is set (a browser is asked for basic
auth; any user name, the token as the password). Every page goes through ``Redactor`` before it
is sent, so no configured secret (receiver URL, token, database password) can reach it even
through an error message. It does not own gathering
the data (``data``), the charts' data (``charts``) nor the app (``app``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .. import __version__
from ..core import AlertState, format_duration
from ..errors import WatcherError
from ..notify.markup import safe_url
from .charts import AlertChartCache, RuleChartCache, find_rule
from .data import (
    Redactor,
    active_alerts,
    alert_dict,
    cluster_status,
    current_alerts,
    endpoint_statuses,
    notifications,
    outbox_stats,
    rule_groups,
    silences,
    trace_url_of,
)
from .tokens import Scope
from .view import DaemonView

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
PNG_HEADERS = {"Cache-Control": "no-store"}
MAX_CHARTS = 20
"""Alerts drawn inline on the index page; the rest link to their chart (each takes ~0.1 s to draw)."""


def _fmt(x: Any) -> str:
    """Format a number with 4 significant digits ("—" when missing)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{float(x):.4g}"


def _when(iso: str | None) -> str:
    """Show an RFC 3339 timestamp as ``YYYY-MM-DD HH:MM:SSZ`` ("never" when missing)."""
    return "never" if not iso else iso.replace("T", " ")[:19] + "Z"


def make_env() -> Environment:
    """Return the template environment (autoescaping on)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, trim_blocks=True
    )
    env.filters["fmt"] = _fmt
    env.filters["safe_url"] = safe_url  # only http(s) becomes an href (a `javascript:` annotation stays text)
    env.filters["when"] = _when
    return env


def _safe(action: str, fn: Any, *args: Any, **kw: Any) -> tuple[Any, str | None]:
    """Run one data query for the page; on failure return ([], a one-line reason)."""
    try:
        return fn(*args, **kw), None
    except Exception as exc:  # a part of the page failing must not take the whole page down
        log.warning("status page: %s failed: %s", action, type(exc).__name__)
        return [], f"{action} failed: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}"


BROWSER_CHALLENGE = 'Basic realm="watcher", charset="UTF-8"'
"""Asked of a browser without the read token: it prompts, and sends the token as the password."""


def add_status_routes(app: FastAPI, daemon: DaemonView, redact: Redactor, require: Any = None) -> None:
    """Add the status page, the per-rule pages and their chart PNGs to ``app``.

    ``require(scope, challenge)`` returns the dependency that admits a request with that scope
    (``app``); None leaves the pages open.
    """
    read = [Depends(require(Scope.READ, BROWSER_CHALLENGE))] if require is not None else []
    env = make_env()
    charts = RuleChartCache()
    alert_charts = AlertChartCache()

    def page(template: str, **context: Any) -> HTMLResponse:
        html = env.get_template(template).render(version=__version__, **context)
        return HTMLResponse(redact(html))

    @app.get("/", include_in_schema=False, dependencies=read)
    def index() -> HTMLResponse:
        now = daemon.clock()
        problems: list[str] = []
        alerts, err = _safe("reading alerts", active_alerts, daemon)
        problems += [err] if err else []
        groups, err = _safe("reading rule health", rule_groups, daemon)
        problems += [err] if err else []
        sil, err = _safe("reading silences", silences, daemon, now)
        problems += [err] if err else []
        recent, err = _safe("reading the outbox", notifications, daemon, limit=20)
        problems += [err] if err else []
        dead, err = _safe("reading dead letters", notifications, daemon, status="dead", limit=20)
        problems += [err] if err else []
        depth, err = _safe("reading the outbox depth", outbox_stats, daemon.store, now)
        problems += [err] if err else []
        pending, oldest = depth if depth else (0, 0.0)
        cluster, err = _safe("reading the cluster state", cluster_status, daemon)
        problems += [err] if err else []
        endpoints, err = _safe("reading the endpoint status", endpoint_statuses, daemon)
        problems += [err] if err else []
        return page(
            "index.html",
            cluster=cluster,
            endpoints=endpoints or [],
            now=now.isoformat(),
            alerts=alerts,
            groups=groups,
            silences=sil,
            notifications=recent,
            dead=dead,
            max_charts=MAX_CHARTS,
            outbox_pending=pending,
            outbox_oldest_s=oldest,
            reload_error=getattr(daemon, "last_reload_error", None),
            problems=problems,
        )

    @app.get(
        "/rules/{group:path}/{rule}", include_in_schema=False, dependencies=read
    )  # group names may hold "/"
    def rule_page(group: str, rule: str) -> HTMLResponse:
        found = find_rule(daemon, group, rule)
        if found is None:
            raise HTTPException(404, f"no rule {rule!r} in group {group!r}"[:300])
        grp, r = found
        now = daemon.clock()
        row = next(
            (x for g in rule_groups(daemon) if g["name"] == group for x in g["rules"] if x["name"] == rule),
            None,
        )
        url = trace_url_of(daemon)
        alerts = [
            alert_dict(a, url)
            for a in current_alerts(daemon)
            if a.group == group and a.rule == rule and (a.state is not AlertState.INACTIVE or a.resolved)
        ]
        series: list[Any] = []
        chart_error = None
        try:
            series = charts.get(daemon, grp, r, now)
        except WatcherError as exc:
            chart_error = str(exc).splitlines()[0][:300]
        except Exception as exc:  # the page shows the rule even when its history cannot be drawn
            log.warning("status page: seven-day chart of %s/%s failed: %s", group, rule, type(exc).__name__)
            chart_error = f"{type(exc).__name__}: {str(exc)[:200]}"
        return page(
            "rule.html",
            now=now.isoformat(),
            group=grp,
            rule=r,
            row=row
            or {"health": "unknown", "lastEvaluation": None, "evaluationTime": None, "lastError": None},
            detector=r.detector.model_dump(mode="json", exclude_none=True)
            if r.detector is not None
            else None,
            for_text=format_duration(r.for_),
            alerts=alerts,
            series=[
                {"labels": dict(s.labels), "anomalous": s.anomalous_points, "points": s.points}
                for s in series
            ],
            chart_error=chart_error,
        )

    @app.get("/chart/alert/{fingerprint}.png", include_in_schema=False, dependencies=read)
    def alert_png(fingerprint: str) -> Response:
        png = alert_charts.get(daemon, fingerprint)
        if png is None:
            raise HTTPException(404, "no chart for this alert (unknown, or no history since the start)")
        return Response(png, media_type="image/png", headers=PNG_HEADERS)

    @app.get("/chart/rule/{group:path}/{rule}/{index}.png", include_in_schema=False, dependencies=read)
    def rule_png(group: str, rule: str, index: int) -> Response:
        found = find_rule(daemon, group, rule)
        if found is None:
            raise HTTPException(404, "no such rule")
        try:
            png = charts.chart(daemon, found[0], found[1], index, daemon.clock())
        except WatcherError as exc:
            raise HTTPException(503, redact(str(exc).splitlines()[0][:300])) from None
        if png is None:
            raise HTTPException(404, "no such series")
        return Response(png, media_type="image/png", headers=PNG_HEADERS)
