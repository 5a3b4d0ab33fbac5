"""Checkpointed detector state in the store: a restart or a takeover resumes instead of replaying.

This module owns the ``detector_state`` rows: per rule, every series' detector blob
(``detectors.checkpoint``) with the rule's fetch cursor, written together (one transaction
replaces the rule's rows) and read back at a rule's first evaluation. It does not own the blob
format, when to write (``group``), nor the alert state (``state``).

A rule's rows are only resumed when they were written for the same detector spec and step (the
``spec`` digest) by the same detector code (``version``); anything else is ignored and the state is
rebuilt from history, as without checkpoints.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import col, delete, select

from ..core import Labels
from ..detectors.checkpoint import code_version
from ..rules.schema import Rule
from ..store.tables import DetectorStateRow
from .state import SessionSource, _translated


def spec_digest(rule: Rule, step_s: float) -> str:
    """Return the digest of what a rule's detector state depends on: its detector spec and step."""
    spec = rule.detector.model_dump(mode="json") if rule.detector is not None else None
    text = json.dumps({"detector": spec, "step": step_s}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SeriesState:
    """One series' checkpoint: its labels, the time of its newest point, its detector blob."""

    labels: Labels
    last_seen: float
    state: bytes


@dataclass(frozen=True, slots=True)
class RuleCheckpoint:
    """A rule's checkpoint: the fetch cursor it was written at and its series' states."""

    cursor: float
    series: list[SeriesState]


class CheckpointStore:
    """Reads and writes the ``detector_state`` rows of rules."""

    def __init__(self, store: SessionSource) -> None:
        self._store = store

    def save(self, group: str, rule: str, spec: str, cursor: float, series: Sequence[SeriesState]) -> None:
        """Replace the rule's checkpoint with ``series`` at ``cursor``, in one transaction."""
        table = DetectorStateRow.__table__  # type: ignore[attr-defined]
        version = code_version()
        rows = [
            {
                "group_name": group,
                "rule": rule,
                "fingerprint": s.labels.fingerprint,
                "labels": dict(s.labels),
                "spec": spec,
                "version": version,
                "cursor": cursor,
                "last_seen": s.last_seen,
                "state": s.state,
            }
            for s in series
        ]
        with _translated(self._store, "saving detector state"), self._store.session() as s:
            s.exec(
                delete(DetectorStateRow).where(
                    col(DetectorStateRow.group_name) == group, col(DetectorStateRow.rule) == rule
                )
            )
            if rows:
                s.execute(table.insert(), rows)
            s.commit()

    def load(self, group: str, rule: str, spec: str) -> RuleCheckpoint | None:
        """Return the rule's checkpoint if one was written for ``spec`` by this detector code."""
        with _translated(self._store, "loading detector state"), self._store.session() as s:
            rows = s.exec(
                select(DetectorStateRow).where(
                    col(DetectorStateRow.group_name) == group,
                    col(DetectorStateRow.rule) == rule,
                    col(DetectorStateRow.spec) == spec,
                    col(DetectorStateRow.version) == code_version(),
                )
            ).all()
        if not rows:
            return None
        cursor = min(r.cursor for r in rows)  # one save writes one cursor; min() if saves ever mixed
        return RuleCheckpoint(
            cursor, [SeriesState(Labels(r.labels or {}), r.last_seen, bytes(r.state)) for r in rows]
        )

    def forget(self, group: str, rule: str | None = None) -> None:
        """Delete the checkpoints of a group (or of one of its rules)."""
        cond = [col(DetectorStateRow.group_name) == group]
        if rule is not None:
            cond.append(col(DetectorStateRow.rule) == rule)
        with _translated(self._store, "deleting detector state"), self._store.session() as s:
            s.exec(delete(DetectorStateRow).where(*cond))
            s.commit()


__all__ = ["CheckpointStore", "RuleCheckpoint", "SeriesState", "spec_digest"]
