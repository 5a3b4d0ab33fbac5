"""``watcher backtest --compare OLD``: two versions of a rule set on the same history, as Markdown.

This module owns getting the old version (a rule file or folder, or a git ref whose copies of the
same paths are read with ``git show``), running both backtests over the same sources and range,
and the Markdown diff for a pull-request comment: episodes per rule and fires per week before and
after, episodes added and removed (an episode is "the same" when the other version has one of the
same rule and labels overlapping it in time), incidents gained and lost. It does not own the
backtest itself (``report``).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TextIO

from ..errors import ConfigError
from ..rules.loader import RULE_SUFFIXES
from ..sources.base import Source
from .cache import shared_caches
from .replay import Episode
from .report import BacktestReport, Incident, load_groups, run_backtest


def _git(*args: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=cwd)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise ConfigError(f"git {' '.join(args)}: {detail.strip()}") from None
    return done.stdout


def checkout_old(ref: str, paths: Sequence[str], into: Path) -> list[Path]:
    """Write the rule files of ``paths`` as of git ``ref`` under ``into``; return the paths to load.

    The repository is the one holding the rule paths (not the current directory's).
    """
    out: list[Path] = []
    for p in paths:
        here = Path(p).resolve()
        top = Path(_git("rev-parse", "--show-toplevel", cwd=here if here.is_dir() else here.parent).strip())
        rel = here.relative_to(top.resolve())
        names = _git("ls-tree", "-r", "--name-only", ref, "--", str(rel), cwd=top).splitlines()
        for name in names:
            if not name.endswith(RULE_SUFFIXES) or "tests" in Path(name).relative_to(rel).parts[:-1]:
                continue
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_git("show", f"{ref}:{name}", cwd=top), encoding="utf-8")
            out.append(target)
    if not out:
        raise ConfigError(f"no rule files under {', '.join(paths)} at git ref {ref!r}")
    return out


def _overlaps(a: Episode, b: Episode, end: datetime) -> bool:
    return (
        a.alert == b.alert
        and a.labels == b.labels
        and a.start <= (b.end or end)
        and b.start <= (a.end or end)
    )


def _line(e: Episode) -> str:
    end = f"{e.end:%m-%d %H:%M}Z" if e.end else "still firing"
    return f"- `{e.alert}` `{e.labels!r}` {e.start:%Y-%m-%d %H:%M}Z – {end}, peak {e.peak_value:.4g}"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def compare_markdown(old: BacktestReport, new: BacktestReport, old_name: str, new_name: str) -> str:
    """Return the Markdown comparison of two backtests over the same range."""
    end = new.end
    days = (new.end - new.start).total_seconds() / 86400
    lines = [
        f"### watcher backtest: `{old_name}` → `{new_name}`",
        "",
        f"{new.start:%Y-%m-%d %H:%M}Z – {new.end:%Y-%m-%d %H:%M}Z ({days:.1f} days)",
        "",
        "| rule | episodes before | episodes after | fires/week before | fires/week after |",
        "|---|---:|---:|---:|---:|",
    ]
    alerts = list(
        dict.fromkeys([r.alert for _, r in old.result.rules] + [r.alert for _, r in new.result.rules])
    )
    for a in alerts:
        nb = sum(e.alert == a for e in old.result.episodes)
        na = sum(e.alert == a for e in new.result.episodes)
        mark = " **changed**" if nb != na else ""
        lines.append(
            f"| `{a}`{mark} | {nb} | {na} | {old.fires_per_week(a):.2f} | {new.fires_per_week(a):.2f} |"
        )
    added = [e for e in new.result.episodes if not any(_overlaps(e, o, end) for o in old.result.episodes)]
    removed = [e for e in old.result.episodes if not any(_overlaps(e, n, end) for n in new.result.episodes)]
    lines += ["", f"**Episodes added** ({len(added)}):", *(map(_line, added) if added else ["- none"])]
    lines += [
        "",
        f"**Episodes removed** ({len(removed)}):",
        *(map(_line, removed) if removed else ["- none"]),
    ]
    if new.incidents or old.incidents:
        was = {r.id for r in old.incidents if r.detected}
        now = {r.id for r in new.incidents if r.detected}
        lines += [
            "",
            f"**Incidents**: gained {', '.join(sorted(now - was)) or 'none'}; "
            f"lost {', '.join(sorted(was - now)) or 'none'}; "
            f"recall {_num(old.recall)} → {_num(new.recall)}, precision {_num(old.precision)} → "
            f"{_num(new.precision)}, false episodes {old.false_episodes} → {new.false_episodes}",
        ]
    return "\n".join(lines) + "\n"


def compare_main(
    old: str,
    paths: Sequence[str],
    sources: dict[str, Source],
    start: datetime,
    end: datetime,
    incidents: Sequence[Incident] | None,
    out: TextIO,
) -> int:
    """Backtest the old and the current rule set over the same history; print the Markdown diff.

    Both backtests share one cache: a rule whose query did not change is fetched once.
    """
    caches = shared_caches(sources, start, end)
    with tempfile.TemporaryDirectory(prefix="watcher-compare-") as tmp:
        old_paths: Sequence[str | Path] = [old] if Path(old).exists() else checkout_old(old, paths, Path(tmp))
        old_groups = load_groups(old_paths)
    old_report = run_backtest(old_groups, sources, start, end, incidents=incidents, caches=caches)
    new_report = run_backtest(load_groups(paths), sources, start, end, incidents=incidents, caches=caches)
    out.write(
        compare_markdown(
            old_report, new_report, old, "working tree" if not Path(old).exists() else ", ".join(paths)
        )
    )
    out.flush()
    return 0
