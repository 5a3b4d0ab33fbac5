"""Notification groups whose alerts sit on several replicas (a group's series split into shards).

This module owns ``StoreGroupPeers``, the notifier's view of the other replicas' share of a
notification group (``notify.pipeline.GroupPeers``), read from the shared store. It does not own
grouping, timing or dedup (``notify.grouping``, ``notify.pipeline``).

With ``group_by`` a notification group can hold alerts of several shards, each evaluated (and
grouped in memory) by the replica holding its shard. Two rules keep one page per group episode:

- **One decision at a time.** A replica deciding for a group holds a transaction-scoped advisory
  lock on (receiver, group key) and reads the notification log after taking it, so a second
  replica sees the first one's "first" message (and sends ``new_alerts`` under the same dedup key,
  or nothing) and its repeat (no second repeat).
- **The group fires while any of its alerts fires anywhere.** The alerts the receiver was told
  fire in the group's episode (notification-log rows with the group's dedup key) that still fire
  in the ``alerts`` table are added to the decision: a replica whose own alerts resolved sends
  what a single process would (a firing message listing them as resolved), never the group's
  resolve, while another replica's alerts still fire.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection

import sqlalchemy as sa
from sqlmodel import Session, col, select

from ..core import Alert, AlertState, NotificationKind
from ..engine.state import row_to_alert
from ..store.tables import AlertRow, NotificationLogRow

LOCK_SPACE = 0x77676E  # "wgn": the first key of the advisory locks on notification groups


class StoreGroupPeers:
    """The other replicas' share of notification groups, as the shared PostgreSQL store has it."""

    def lock(self, session: Session, receiver: str, key: str) -> None:
        """Take the advisory lock of (``receiver``, ``key``) until the transaction ends."""
        k = zlib.crc32(f"{receiver}\x00{key}".encode()) - 2**31  # a signed 32-bit key
        session.connection().execute(
            sa.text("SELECT pg_advisory_xact_lock(:space, :k)"), {"space": LOCK_SPACE, "k": k}
        )

    def firing_elsewhere(
        self, session: Session, receiver: str, dedup_key: str, local: Collection[str]
    ) -> list[Alert]:
        """Return the alerts ``receiver`` was told fire under ``dedup_key``, still firing, less ``local``."""
        rows = session.exec(
            select(AlertRow)
            .join(NotificationLogRow, col(NotificationLogRow.fingerprint) == col(AlertRow.fingerprint))
            .where(
                col(NotificationLogRow.receiver) == receiver,
                col(NotificationLogRow.dedup_key) == dedup_key,
                col(NotificationLogRow.kind) == str(NotificationKind.FIRING),
                col(AlertRow.state) == int(AlertState.FIRING),
            )
        ).all()
        return [row_to_alert(r) for r in rows if r.fingerprint not in local]
