"""Test-only fault injection: hold the process at a named point so a test can SIGKILL it there.

This module owns one hook, ``checkpoint(name)``. When the environment variable
``WATCHER_TEST_PAUSE_AT`` equals ``name``, the calling thread prints ``WATCHER_TEST_PAUSED <name>``
to stderr and blocks for ever, so a crash test can kill the process at exactly that point:

* ``enqueue``: the outbox row and the notification log entry are committed, nothing is sent yet;
* ``send``: the receiver accepted the message, the row is not yet marked ``sent``.

Unset (always, outside tests) it costs one environment lookup. It does not own the tests.
"""

from __future__ import annotations

import os
import sys
import threading

ENV = "WATCHER_TEST_PAUSE_AT"


def checkpoint(name: str) -> None:
    """Block for ever, after announcing it on stderr, when ``WATCHER_TEST_PAUSE_AT`` is ``name``."""
    if os.environ.get(ENV) != name:
        return
    print(f"WATCHER_TEST_PAUSED {name}", file=sys.stderr, flush=True)
    threading.Event().wait()
