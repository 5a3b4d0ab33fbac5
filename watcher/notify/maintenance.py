"""Maintenance windows: recurring weekly periods, in a time zone, when matching alerts stay quiet.

This module owns the question "is this window open at this instant?" (weekday and local time in the
window's zone, a window whose end is before its start runs past midnight into the next day). It
does not own matchers (``silences``) nor combining mutes (``mute``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from ..config import MaintenanceWindow
from ..core import utc
from .silences import matcher_dicts, matches_all

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _clock(text: str) -> time:
    hours, minutes = (int(x) for x in text.split(":"))
    return time(23, 59, 59, 999999) if hours == 24 else time(hours, minutes)


def is_open(window: MaintenanceWindow, now: datetime) -> bool:
    """Tell whether ``window`` is open at ``now`` (start inclusive, end exclusive)."""
    local = utc(now).astimezone(ZoneInfo(window.time_zone))
    start, end = _clock(window.start), _clock(window.end)
    t = local.time().replace(tzinfo=None)
    today = WEEKDAYS[local.weekday()]
    if start < end:
        return today in window.weekdays and start <= t < end
    if start == end:
        return False
    yesterday = WEEKDAYS[(local - timedelta(days=1)).weekday()]
    return (today in window.weekdays and t >= start) or (yesterday in window.weekdays and t < end)


def open_window(
    windows: Sequence[MaintenanceWindow], labels: Mapping[str, str], now: datetime
) -> MaintenanceWindow | None:
    """Return the first window open at ``now`` whose matchers all match ``labels``, or None."""
    for w in windows:
        if is_open(w, now) and matches_all(matcher_dicts(w.matchers), labels):
            return w
    return None
