"""``watcher backtest``: would these rules have fired over real history, and on the right incidents?

This module owns the backtest report: running ``replay`` over a time range on the configured
sources, matching episodes to a labelled incidents file (detected, time to detect, false
episodes, precision, recall), the text report, the ``--json`` document and the command itself.
It does not own the replay mechanics (``replay``), plots (``plot``), ``--compare`` (``compare``)
nor the command line (``cli.rules``).

Matching: an episode matches an incident when the incident names no alert or the episode's,
every label the incident gives is on the episode, and the two overlap in time (an incident
without ``end`` lasts to the end of the range). Time to detect is from the incident's start to
the first matching episode's start (0 when it was already firing).

An incident with ``expect: quiet`` is a window the rules must stay quiet in (a false alarm marked
from the pager, ``watcher feedback export``): it takes no part in recall, and the report says
whether an episode fired in it again. Release markers in the store are honoured (``replay``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TextIO

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core import format_duration, parse_duration, utc
from ..errors import ConfigError
from ..rules.loader import load_rule_files
from ..rules.schema import Group
from ..sources.base import Source
from ..store.markers import Marker
from .cache import CachedSource, group_ticks
from .replay import Episode, ReplayResult, replay

_RELATIVE = re.compile(r"^(?:now)?\s*-\s*(\S+)$")


class Incident(BaseModel):
    """One labelled incident: when, and optionally which alert and labels should have caught it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    start: datetime
    end: datetime | None = None
    alert: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    expect: Literal["alert", "quiet"] = "alert"
    """``quiet``: a false alarm the rules must not raise again (not an incident to catch)."""
    note: str | None = None


@dataclass(frozen=True, slots=True)
class IncidentResult:
    """Whether one incident was caught, and how fast."""

    id: str
    detected: bool
    time_to_detect_s: float | None
    episode: Episode | None


@dataclass
class BacktestReport:
    """A replay plus its incident scoring."""

    start: datetime
    end: datetime
    result: ReplayResult
    incidents: list[IncidentResult]
    false_episodes: int | None
    precision: float | None
    recall: float | None
    seconds: float
    quiet: list[tuple[str, bool]] = field(default_factory=list)
    """Per ``expect: quiet`` window: its id and whether an episode fired in it again."""

    @property
    def weeks(self) -> float:
        """Return the length of the range in weeks."""
        return (self.end - self.start).total_seconds() / (7 * 86400)

    def fires_per_week(self, alert: str) -> float:
        """Return how many episodes per week ``alert`` had."""
        n = sum(1 for e in self.result.episodes if e.alert == alert)
        return n / self.weeks if self.weeks > 0 else float(n)


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """Parse ``2026-01-31``, ``2026-01-31T12:00:00Z``, ``now`` or ``-30d``/``now-30d`` (UTC)."""
    now = now or datetime.now(UTC)
    s = text.strip()
    if s == "now":
        return now
    m = _RELATIVE.match(s)
    if m is not None:
        try:
            return now - parse_duration(m.group(1))
        except ValueError as exc:
            raise ConfigError(f"bad time {text!r}: {exc}") from None
    try:
        return utc(datetime.fromisoformat(s.replace("Z", "+00:00")))
    except ValueError:
        raise ConfigError(f"bad time {text!r}: use ISO-8601 (2026-01-31T12:00Z), now, or -30d") from None


def load_incidents(path: str | Path) -> list[Incident]:
    """Read an incidents YAML file (a list of ``{id, start, end, alert?, labels?}``)."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or []
        if isinstance(raw, dict) and "incidents" in raw:
            raw = raw["incidents"]
        if not isinstance(raw, list):
            raise ConfigError(f"{path}: expected a list of incidents")
        return [Incident.model_validate(item) for item in raw]
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".splitlines()[0]) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: incident {loc}: {first['msg']}") from None


def _matches(ep: Episode, inc: Incident, range_end: datetime) -> bool:
    if inc.alert is not None and inc.alert != ep.alert:
        return False
    if any(ep.labels.get(k) != v for k, v in inc.labels.items()):
        return False
    inc_end = utc(inc.end) if inc.end is not None else range_end
    return ep.start <= inc_end and (ep.end or range_end) >= utc(inc.start)


def score_incidents(
    episodes: Sequence[Episode], incidents: Sequence[Incident], range_end: datetime
) -> tuple[list[IncidentResult], int, float | None, float | None]:
    """Return per-incident results, false episodes, precision and recall (quiet windows aside)."""
    incidents = [i for i in incidents if i.expect == "alert"]
    results = []
    for inc in incidents:
        hits = sorted((e for e in episodes if _matches(e, inc, range_end)), key=lambda e: e.start)
        if hits:
            ttd = max(0.0, (hits[0].start - utc(inc.start)).total_seconds())
            results.append(IncidentResult(inc.id, True, ttd, hits[0]))
        else:
            results.append(IncidentResult(inc.id, False, None, None))
    false = sum(1 for e in episodes if not any(_matches(e, i, range_end) for i in incidents))
    precision = (len(episodes) - false) / len(episodes) if episodes else None
    recall = sum(r.detected for r in results) / len(results) if results else None
    return results, false, precision, recall


def run_backtest(
    groups: Sequence[Group],
    sources: dict[str, Source],
    start: datetime,
    end: datetime,
    *,
    incidents: Sequence[Incident] | None = None,
    record_verdicts: bool = False,
    show_progress: bool = False,
    console: Any = None,
    caches: dict[str, CachedSource] | None = None,
    jobs: int | None = 1,
    markers: Sequence[Marker] = (),
) -> BacktestReport:
    """Replay ``groups`` over ``[start, end]`` and score the episodes against ``incidents``.

    ``show_progress`` draws a rich progress bar on standard error (standard output carries the
    report, often redirected to a file for a pull-request comment), or on ``console`` if given.
    ``jobs`` worker processes fetch and score the rules (None: one per CPU; 1: all in this process).
    """
    t0 = time.perf_counter()
    total = sum(len(group_ticks(g, start, end)) for g in groups)
    if show_progress:
        from rich.console import Console
        from rich.progress import Progress

        with Progress(console=console or Console(stderr=True), transient=True) as bar:
            task = bar.add_task("backtest", total=total)
            result = replay(
                groups,
                sources,
                start,
                end,
                record_verdicts=record_verdicts,
                progress=lambda n: bar.advance(task, n),
                caches=caches,
                jobs=jobs,
                markers=markers,
            )
    else:
        result = replay(
            groups,
            sources,
            start,
            end,
            record_verdicts=record_verdicts,
            caches=caches,
            jobs=jobs,
            markers=markers,
        )
    scored: list[IncidentResult] = []
    false = precision = recall = None
    if incidents is not None:
        scored, false, precision, recall = score_incidents(result.episodes, incidents, end)
    quiet = [
        (i.id, any(_matches(e, i, end) for e in result.episodes))
        for i in incidents or []
        if i.expect == "quiet"
    ]
    seconds = time.perf_counter() - t0
    return BacktestReport(start, end, result, scored, false, precision, recall, seconds, quiet)


def _t(ts: datetime | None) -> str | None:
    return None if ts is None else ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def report_json(report: BacktestReport) -> dict[str, Any]:
    """Return the ``--json`` document of a backtest."""
    return {
        "from": _t(report.start),
        "to": _t(report.end),
        "rules": [
            {
                "alert": rule.alert,
                "group": group,
                "episodes": [
                    {
                        "labels": dict(e.labels),
                        "start": _t(e.start),
                        "end": _t(e.end),
                        "peak_value": e.peak_value,
                        "trace_ids": e.trace_ids,
                        "explanation": e.explanation,
                        "release": e.release,
                    }
                    for e in report.result.episodes
                    if e.alert == rule.alert
                ],
                "fires_per_week": round(report.fires_per_week(rule.alert), 3),
            }
            for group, rule in report.result.rules
        ],
        "incidents": [
            {"id": r.id, "detected": r.detected, "time_to_detect_s": r.time_to_detect_s}
            for r in report.incidents
        ],
        "quiet": [{"id": q, "fired_again": fired} for q, fired in report.quiet],
        "false_episodes": report.false_episodes,
        "precision": report.precision,
        "recall": report.recall,
        "errors": report.result.errors,
    }


def print_report(report: BacktestReport, out: TextIO) -> None:
    """Print a backtest report as text."""
    days = (report.end - report.start).total_seconds() / 86400
    res = report.result
    out.write(
        f"backtest {report.start:%Y-%m-%d %H:%M}Z – {report.end:%Y-%m-%d %H:%M}Z ({days:.1f} days): "
        f"{len(res.rules)} rules, {res.ticks} group evaluations in {report.seconds:.1f}s\n"
    )
    for group, rule in res.rules:
        eps = [e for e in res.episodes if e.alert == rule.alert]
        out.write(
            f"\n{rule.alert} ({group}): {len(eps)} episode(s), "
            f"{report.fires_per_week(rule.alert):.2f} fires/week\n"
        )
        for e in eps:
            end = f"{e.end:%Y-%m-%d %H:%M}Z" if e.end else "still firing"
            traces = ", ".join(e.trace_ids) or "none"
            out.write(
                f"  {e.start:%Y-%m-%d %H:%M}Z – {end}  {e.labels!r}  "
                f"peak {e.peak_value:.4g}  traces: {traces}\n"
            )
            if e.explanation:
                out.write(f"    why: {e.explanation}\n")
            if e.release:
                out.write(f"    {e.release}\n")
    if report.incidents:
        found = sum(r.detected for r in report.incidents)
        out.write(f"\nincidents: {found}/{len(report.incidents)} detected\n")
        for r in report.incidents:
            if r.detected and r.time_to_detect_s is not None:
                what = f"detected after {format_duration(timedelta(seconds=round(r.time_to_detect_s)))}"
            else:
                what = "MISSED"
            out.write(f"  {r.id}: {what}\n")
    if report.quiet:
        again = [q for q, fired in report.quiet if fired]
        out.write(f"\nfalse alarms fired again: {len(again)}/{len(report.quiet)}\n")
        for q in again:
            out.write(f"  {q}: FIRED AGAIN\n")
    if report.false_episodes is not None:
        p = "n/a" if report.precision is None else f"{report.precision:.2f}"
        r_ = "n/a" if report.recall is None else f"{report.recall:.2f}"
        out.write(f"false episodes: {report.false_episodes}, precision {p}, recall {r_}\n")
    for err in res.errors[:20]:
        out.write(f"error: {err}\n")
    out.flush()


def load_groups(paths: Sequence[str | Path]) -> list[Group]:
    """Load the rule groups of ``paths`` (files or folders)."""
    return [g.group for g in load_rule_files(list(paths)).groups]
