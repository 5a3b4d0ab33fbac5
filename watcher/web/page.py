"""The status page: HTML rendered on the server (Jinja2, no JavaScript build), and its chart PNGs.

This module owns the routes ``/`` (rule groups with health, firing and pending alerts with their
charts, trace links and mute badges, filtered by label, silences, recent notifications, dead
letters, the last reload error), ``/alerts/{fingerprint}`` (one alert: labels, value and band or
threshold, trace links, state history, its chart zoomed on the episode, and a form that silences
it), ``POST /alerts/{fingerprint}/silence`` (that form), ``/silences/new`` (the same form on its own,
prefilled by ``?matcher=…&duration=…&comment=…`` — Slack's "Silence" button — with the alerts it
would match; ``POST`` creates), ``/rules/{group}/{rule}`` (one rule with
its query and its seven-day chart per series — the link every notification carries),
``/chart/alert/{fingerprint}.png`` and ``/chart/rule/{group}/{rule}/{index}.png``. Templates are
package data in ``templates/``.

Query parameters of ``/``: label filters (``?tenant=acme&severity=page``, or Alertmanager's
matchers ``?filter=tenant=~"ac.*"``), ``refresh=N`` (reload every N seconds, 5–3600; off by
default). Bad values answer 400 with the reason. Times shown are the daemon's clock.

Every GET needs scope ``read`` once ``server.read_token`` is set (a browser is asked for basic
auth; any user name, the token as the password). The silence form needs the admin token
(``server.admin_token``) typed into the form, never echoed back, and is refused unless the
browser says it comes from this page's own origin (``Origin``, else ``Sec-Fetch-Site`` or
``Referer``), so another site cannot make a logged-in browser post it. Every page goes through
``Redactor`` before it is sent, so no configured secret (receiver URL, token, database password)
can reach it even through an error message. It does not own gathering the data (``data``), the
charts' data (``charts``) nor the app (``app``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import ValidationError

from .. import __version__
from ..core import AlertState, format_duration, iso
from ..errors import WatcherError
from ..notify.markup import safe_url
from ..notify.silences import parse_matcher
from ..rules.schema import Rule
from ..signing import Check, derive_key
from ..signing import check as check_signature
from .api import SilenceIn, silence_row
from .charts import MAX_WIDEN, AlertChartCache, RuleChartCache, episode_view, find_rule, thresholds_of
from .data import (
    Redactor,
    active_alerts,
    alert_dict,
    cluster_status,
    current_alerts,
    endpoint_statuses,
    filter_alerts,
    find_alert,
    mute_status,
    notifications,
    outbox_stats,
    parse_filters,
    rule_groups,
    silence_dict,
    silences,
    state_history,
    trace_url_of,
    with_thresholds,
)
from .tokens import AuthProblem, Scope, TokenTable
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

REFRESH_CHOICES = (0, 10, 30, 60, 300)
"""The auto-refresh links the index offers (seconds; 0 is off). Any 5–3600 is accepted."""
MAX_FORM_BYTES = 64 * 1024
SILENCE_DURATIONS = ("30m", "1h", "2h", "4h", "8h", "1d", "3d", "7d")


def parse_refresh(raw: str | None) -> int:
    """Return the auto-refresh period of ``?refresh=`` (0: off; raise ValueError when bad)."""
    if raw is None or raw in ("", "0", "off"):
        return 0
    try:
        seconds = int(raw)
    except ValueError:
        raise ValueError(f"refresh must be a number of seconds (5–3600) or off, not {raw[:40]!r}") from None
    if not 5 <= seconds <= 3600:
        raise ValueError(f"refresh must be between 5 and 3600 seconds (or 0/off), not {seconds}")
    return seconds


def parse_widen(raw: str | None) -> int:
    """Return ``?widen=`` (0–``MAX_WIDEN``; raise ValueError when bad)."""
    if raw is None or raw == "":
        return 0
    if not raw.isdigit() or int(raw) > MAX_WIDEN:
        raise ValueError(f"widen must be 0–{MAX_WIDEN}, not {raw[:20]!r}")
    return int(raw)


def rule_query(rule: Rule, engine: Any) -> tuple[str, str | None]:
    """Return (language, text) of what the rule runs: ``promql`` and its expr, or ``sql`` and the SELECT.

    The SELECT of a calls/scores rule is the one the SQL source issues for one fetch, compiled for
    the dialect of ``engine`` (the store's) with its parameters shown as placeholders (the time
    range changes on every tick); the rule's ``query`` block is shown beside it.
    """
    if rule.expr is not None:
        return "promql", rule.expr
    if rule.query is None:
        return "none", None
    try:
        from ..sources.sql import _check, _statement  # the one place that builds the fetch's SELECT

        q = _check(rule)
        any_time = datetime(1970, 1, 1, tzinfo=UTC)  # compiled as a placeholder, never shown
        want_traces = rule.traces is None or rule.traces.from_ != "none"
        stmt = _statement(rule, q, engine.dialect.name, any_time, any_time, want_traces)
        compiled = stmt.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
        return "sql", str(compiled)
    except Exception as exc:  # the page shows the rule even if its SQL cannot be shown
        log.warning("status page: SQL of %s not shown: %s", rule.alert, type(exc).__name__)
        return "sql", None


def same_origin(request: Request, external_url: str | None = None) -> str | None:
    """Return why a form post is not from this server's own pages (None when it is).

    ``Origin`` must name this host (the request's ``Host``, or that of ``external_url`` when a
    reverse proxy rewrites it); a browser that sends none must say ``Sec-Fetch-Site:
    same-origin`` or send a ``Referer`` on such a host. A post with none of them is refused.
    """
    hosts = {request.headers.get("host", "")}
    if external_url:
        hosts.add(urlsplit(external_url).netloc)
    hosts.discard("")
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        parts = urlsplit(origin)
        return None if parts.netloc in hosts and parts.scheme in ("http", "https") else "cross-origin post"
    if origin == "null":
        return "cross-origin post (Origin: null)"
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return None if site == "same-origin" else f"cross-site post (Sec-Fetch-Site: {site[:20]})"
    referer = request.headers.get("referer")
    if referer:
        return None if urlsplit(referer).netloc in hosts else "cross-origin post (Referer)"
    return "the post says nothing about where it comes from (no Origin, Sec-Fetch-Site or Referer)"


def add_status_routes(
    app: FastAPI,
    daemon: DaemonView,
    redact: Redactor,
    require: Any = None,
    tokens: TokenTable | None = None,
    denied: Callable[[str, str], None] | None = None,
) -> None:
    """Add the status page, the per-alert and per-rule pages and their chart PNGs to ``app``.

    ``require(scope, challenge)`` returns the dependency that admits a request with that scope
    (``app``); None leaves the pages open. ``tokens`` checks the admin token of the silence form
    (None: the form is refused, 403); ``denied(scope, reason)`` counts a refused token
    (``watcher_http_denied_total``, as the API counts its refusals).
    """
    read = [Depends(require(Scope.READ, BROWSER_CHALLENGE))] if require is not None else []
    env = make_env()
    charts = RuleChartCache()
    alert_charts = AlertChartCache()

    def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("refresh", 0)
        html = env.get_template(template).render(version=__version__, **context)
        return HTMLResponse(redact(html), status_code=status)

    def bad_request(reason: str, status: int = 400) -> HTMLResponse:
        return page("error.html", status=status, now=daemon.clock().isoformat(), reason=reason[:500])

    @app.get("/", include_in_schema=False, dependencies=read)
    def index(request: Request) -> HTMLResponse:
        now = daemon.clock()
        params = list(request.query_params.multi_items())
        try:
            matchers = parse_filters(params)
            refresh = parse_refresh(request.query_params.get("refresh"))
        except ValueError as exc:
            return bad_request(str(exc))
        kept = [(k, v) for k, v in params if k != "refresh"]
        problems: list[str] = []
        alerts, err = _safe("reading alerts", active_alerts, daemon)
        problems += [err] if err else []
        shown = filter_alerts(alerts, matchers) if alerts else []
        _, err = _safe("reading mute status", mute_status, daemon, with_thresholds(daemon, shown), now)
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
            alerts=shown,
            total_alerts=len(alerts),
            filters=[str(m) for m in matchers],
            filter_text=", ".join(str(m) for m in matchers),
            refresh=refresh,
            refresh_links=[
                (n, "?" + urlencode([*kept, *([("refresh", str(n))] if n else [])])) for n in REFRESH_CHOICES
            ],
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
        language, query_text = rule_query(r, daemon.store.engine)
        return page(
            "rule.html",
            now=now.isoformat(),
            group=grp,
            rule=r,
            query_language=language,
            query_text=query_text,
            query_block=json.dumps(r.query.model_dump(mode="json", exclude_none=True), indent=2)
            if r.query is not None
            else None,
            thresholds=[str(t) for t in thresholds_of(r)],
            row=row
            or {"health": "unknown", "lastEvaluation": None, "evaluationTime": None, "lastError": None},
            detector=r.detector.model_dump(mode="json", exclude_none=True)
            if r.detector is not None
            else None,
            for_text=format_duration(r.for_),
            alerts=alerts,
            series=[
                {
                    "labels": dict(s.labels),
                    "anomalous": s.anomalous_points,
                    "points": s.points,
                    "ready": sum(1 for v in s.verdicts if v.ready),
                    "warmup": next(
                        (v.reason.removeprefix("warming up: ") for v in reversed(s.verdicts) if v.reason), ""
                    ),
                }
                for s in series
            ],
            chart_error=chart_error,
        )

    def alert_page(fingerprint: str, status: int = 200, **extra: Any) -> HTMLResponse:
        now = daemon.clock()
        found = find_alert(daemon, fingerprint)
        if found is None:
            return bad_request(
                f"no alert with fingerprint {fingerprint[:64]!r} (never seen, or long resolved)", 404
            )
        alert, has_rule = found
        problems: list[str] = []
        shown = {**alert_dict(alert, trace_url_of(daemon)), "has_rule": has_rule}
        if alert.resolved:
            shown["state"] = "resolved"  # inactive, kept so the resolve can be re-sent
        _, err = _safe("reading mute status", mute_status, daemon, with_thresholds(daemon, [shown]), now)
        problems += [err] if err else []
        history, err = _safe("reading the state history", state_history, daemon, alert)
        problems += [err] if err else []
        sil, err = _safe("reading silences", silences, daemon, now)
        problems += [err] if err else []
        widen = int(extra.pop("widen", 0))
        view, err = _safe("reading the chart's window", episode_view, daemon, fingerprint, widen)
        problems += [err] if err else []
        form = extra.pop("form", None) or {
            "matchers": "\n".join(f'{k}="{v}"' for k, v in shown["labels"].items()),
            "duration": "2h",
            "createdBy": "",
            "comment": "",
        }
        return page(
            "alert.html",
            status=status,
            now=now.isoformat(),
            a=shown,
            history=history,
            silences=[x for x in sil if x["id"] in shown.get("silencedBy", [])],
            problems=problems,
            widen=widen,
            max_widen=MAX_WIDEN,
            window=(iso(view.start), iso(view.end), len(view.verdicts), view.history) if view else None,
            durations=SILENCE_DURATIONS,
            form=form,
            admin_enabled=tokens is not None and Scope.ADMIN in tokens.configured,
            **extra,
        )

    @app.get("/alerts/{fingerprint}", include_in_schema=False, dependencies=read)
    def alert_get(fingerprint: str, request: Request) -> HTMLResponse:
        try:
            widen = parse_widen(request.query_params.get("widen"))
        except ValueError as exc:
            return bad_request(str(exc))
        created = request.query_params.get("silenced")
        return alert_page(fingerprint, widen=widen, created=created[:64] if created else None)

    async def silence_from_form(
        request: Request, again: Callable[..., HTMLResponse], done: Callable[[str], str]
    ) -> Response:
        """Create a silence from a posted form; ``again(status, form=, error=)`` re-renders the form
        page with the reason (what was typed kept, the token never), ``done(id)`` is where to go."""
        why_not = same_origin(request, getattr(daemon.settings, "external_url", None))
        if why_not is not None:
            return bad_request(f"silence refused: {why_not}", 403)
        if (
            request.headers.get("content-type", "").split(";")[0].strip()
            != "application/x-www-form-urlencoded"
        ):
            return bad_request("silence refused: post the form (application/x-www-form-urlencoded)", 415)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return bad_request(f"silence refused: the form is larger than {MAX_FORM_BYTES} bytes", 413)
        try:
            fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20))
        except (UnicodeDecodeError, ValueError):
            return bad_request("silence refused: the form is not valid UTF-8 form data")
        form = {k: fields.get(k, "") for k in ("matchers", "duration", "createdBy", "comment")}
        if tokens is None:
            return again(403, form=form, error="silencing from the page is disabled")
        try:
            grant = tokens.check(Scope.ADMIN, "Bearer " + fields.get("token", "").strip())
        except AuthProblem as problem:
            if denied is not None:
                denied(Scope.ADMIN.value, problem.reason)
            return again(problem.status, form=form, error=f"silence refused: {problem.detail}")
        lines = [x.strip() for x in form["matchers"].splitlines() if x.strip()]
        try:
            silence = SilenceIn(
                matchers=list(lines),  # text matchers: the model parses and checks them
                duration=form["duration"] or "2h",
                createdBy=form["createdBy"] or grant.who,
                comment=form["comment"],
            )
            now = daemon.clock()
            row = silence_row(daemon, silence, now)
        except ValidationError as exc:
            reasons = "; ".join(str(e.get("msg", "")) for e in exc.errors()[:5])
            return again(422, form=form, error=f"silence refused: {reasons}")
        except ValueError as exc:
            return again(422, form=form, error=f"silence refused: {exc}")
        try:
            with daemon.store.session() as s:
                s.add(row)
                s.commit()
                text = silence_dict(row, now)["text"]
        except Exception as exc:  # the store is down: say so, keep what was typed
            log.warning("status page: creating a silence failed: %s", type(exc).__name__)
            return again(503, form=form, error="the store is unavailable; retry later")
        log.info("silence %s created by %s from the status page: %s", row.id, row.created_by or "-", text)
        return RedirectResponse(done(row.id), status_code=303)

    @app.post("/alerts/{fingerprint}/silence", include_in_schema=False)
    async def alert_silence(fingerprint: str, request: Request) -> Response:
        return await silence_from_form(
            request,
            lambda status, **kw: alert_page(fingerprint, status, **kw),
            lambda sid: f"/alerts/{fingerprint}?{urlencode({'silenced': sid})}",
        )

    def new_silence_page(status: int = 200, **extra: Any) -> HTMLResponse:
        now = daemon.clock()
        form = extra.pop("form")
        problems: list[str] = []
        try:
            matchers = [parse_matcher(x) for x in form["matchers"].splitlines() if x.strip()]
        except ValueError:
            matchers = []
        affected: list[dict[str, Any]] = []
        if matchers:
            alerts, err = _safe("reading alerts", active_alerts, daemon)
            problems += [err] if err else []
            affected = filter_alerts(alerts, matchers)
        durations = list(SILENCE_DURATIONS)
        if form["duration"] and form["duration"] not in durations:
            durations.insert(0, form["duration"])
        return page(
            "silence_new.html",
            status=status,
            now=now.isoformat(),
            form=form,
            durations=durations,
            affected=affected,
            problems=problems,
            admin_enabled=tokens is not None and Scope.ADMIN in tokens.configured,
            **extra,
        )

    @app.get("/silences/new", include_in_schema=False, dependencies=read)
    def silence_new(request: Request) -> HTMLResponse:
        """The new-silence form, prefilled by ``?matcher=…&duration=…&comment=…`` (Slack's button)."""
        q = request.query_params
        lines = [m for m in q.getlist("matcher") if m.strip()][:50]
        form = {
            "matchers": "\n".join(lines),
            "duration": (q.get("duration") or "2h")[:32],
            "createdBy": (q.get("createdBy") or "")[:128],
            "comment": (q.get("comment") or "")[:4096],
        }
        bad = []
        for line in lines:
            try:
                parse_matcher(line)
            except ValueError as exc:
                bad.append(str(exc))
        created = q.get("created")
        if bad:
            return new_silence_page(400, form=form, error="; ".join(bad)[:500])
        return new_silence_page(form=form, created=created[:64] if created else None)

    @app.post("/silences/new", include_in_schema=False)
    async def silence_new_post(request: Request) -> Response:
        return await silence_from_form(
            request,
            lambda status, **kw: new_silence_page(status, **kw),
            lambda sid: f"/silences/new?{urlencode({'created': sid})}",
        )

    token = daemon.settings.server.read_token
    chart_key = derive_key(token.get_secret_value()) if token is not None else None
    read_dependency = require(Scope.READ, BROWSER_CHALLENGE) if require is not None else None

    def chart_access(request: Request, fingerprint: str) -> None:
        """Admit a signed chart link (``exp``, ``sig``: Slack fetching the image), else the read token."""
        q = request.query_params
        if chart_key is not None and ("sig" in q or "exp" in q):
            path = f"/chart/alert/{quote(fingerprint, safe='')}.png"
            verdict = check_signature(chart_key, path, q.get("exp"), q.get("sig"), daemon.clock())
            if verdict is Check.OK:
                return
            if denied is not None:
                denied(Scope.READ.value, f"chart_link_{verdict}")
            reason = "has expired" if verdict is Check.EXPIRED else "has no valid signature"
            raise HTTPException(403, f"this chart link {reason}; open the alert on the status page instead")
        if read_dependency is not None:
            read_dependency(request, None)

    @app.get("/chart/alert/{fingerprint}.png", include_in_schema=False)
    def alert_png(request: Request, fingerprint: str, widen: int = 0) -> Response:
        chart_access(request, fingerprint)
        if not 0 <= widen <= MAX_WIDEN:
            raise HTTPException(400, f"widen must be 0–{MAX_WIDEN}")
        png = alert_charts.get(daemon, fingerprint, widen)
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
