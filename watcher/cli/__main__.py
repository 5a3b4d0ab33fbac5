"""``python -m watcher.cli``: the same as the ``watcher`` command (and ``python -m watcher``)."""

from . import main

raise SystemExit(main())
