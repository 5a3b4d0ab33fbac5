"""Run the ``watcher`` command: ``python -m watcher``."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
