"""Fixtures for the notify tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.notify.factory import SqliteStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """Return a fresh SQLite store in ``tmp_path``."""
    s = SqliteStore(tmp_path / "t.db")
    yield s
    s.engine.dispose()
