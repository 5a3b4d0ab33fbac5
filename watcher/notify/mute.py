"""The mute stage: silences, maintenance windows and inhibition behind one question.

This module owns answering "is this alert muted at ``now``, and why?" from the silences in force,
the configured maintenance windows and the inhibition rules against the alerts firing anywhere
(every rule group, not just the one being submitted). It does not own their semantics
(``silences``, ``maintenance``, ``inhibit``) nor what happens to a muted alert (``pipeline``
drops it before grouping, so it is neither sent nor counted as notified).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from ..config import Settings
from ..core import AlertState
from ..store.tables import AlertRow, SilenceRow
from .inhibit import inhibiting
from .maintenance import open_window
from .silences import active_silences, is_silenced


def firing_in_store(session: Session) -> list[dict[str, str]]:
    """Return the labels (with ``alertname``) of every alert the engine persisted as firing."""
    stmt = select(AlertRow).where(col(AlertRow.state) == int(AlertState.FIRING))
    return [{**(row.labels or {}), "alertname": row.rule} for row in session.exec(stmt).all()]


class Muter:
    """The muting decisions of one submission at one instant."""

    def __init__(
        self,
        settings: Settings,
        now: datetime,
        silences: Sequence[SilenceRow],
        firing: Iterable[Mapping[str, str]],
    ) -> None:
        self.settings = settings
        self.now = now
        self.silences = silences
        self.firing = [dict(f) for f in firing]

    @classmethod
    def load(
        cls, session: Session, settings: Settings, now: datetime, firing: Iterable[Mapping[str, str]]
    ) -> Muter:
        """Return a muter with the silences in force and the firing alerts of the store plus ``firing``."""
        sources = list(firing)
        if settings.notify.inhibit_rules:
            sources += firing_in_store(session)
        return cls(settings, now, active_silences(session, now), sources)

    def why(self, labels: Mapping[str, str]) -> str | None:
        """Return why ``labels`` are muted (``silence …``, ``maintenance …``, ``inhibited by …``), or None."""
        silence = is_silenced(labels, self.silences, self.now)
        if silence is not None:
            return f"silence {silence.id}"
        window = open_window(self.settings.notify.maintenance_windows, labels, self.now)
        if window is not None:
            return f"maintenance window {window.name}"
        rules = self.settings.notify.inhibit_rules
        if rules:
            hit = inhibiting(rules, labels, self.firing)
            if hit is not None:
                return f"inhibited by {hit[1].get('alertname', '?')} {dict(hit[1])}"
        return None
