"""What every ``watcher`` subcommand shares: the parser class, output files, opening a store.

This module owns the command line's conventions: a time option takes ``-30d`` as its value
(argparse would read it as an option), ``-`` as an output file means standard output, a read-only
command never creates a store, and a missing optional dependency names the extra to install. It
does not own any behaviour of the subcommands themselves.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from ..config import Settings
    from ..store.db import Store

_UNIT = r"(?:ms|[smhdwy])"
RELATIVE_TIME = re.compile(rf"^-(?:\d+(?:\.\d+)?{_UNIT})+$|^-\d+$|^-\d*\.\d+$")
"""What a dash-led option value may look like: ``-30d``, ``-1h30m``, or a negative number."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that reads ``--from -30d`` as the option ``--from`` with ``-30d``.

    argparse reads any word that starts with ``-`` and is not a negative number as an option
    ("expected one argument"). No watcher option name starts with a digit, so a relative time is
    never ambiguous: registering it as negative-number-like makes it a value everywhere (every
    subparser is this class too), while ``--from=-30d`` keeps working.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = RELATIVE_TIME


class UsageError(Exception):
    """Bad usage or input found after parsing (exit code 2): the message is printed as one line."""


class MissingStoreError(UsageError):
    """A read-only command was pointed at a SQLite file that does not exist."""


def is_stdout(path: str | None) -> bool:
    """Tell whether an output-file option names standard output (``-``)."""
    return path == "-"


@contextlib.contextmanager
def output(path: str) -> Iterator[TextIO]:
    """Open ``path`` for writing, or yield standard output for ``-`` (left open)."""
    if is_stdout(path):
        yield sys.stdout
        sys.stdout.flush()
        return
    try:
        fh = Path(path).open("w", encoding="utf-8", newline="")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    with fh:
        yield fh


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (``-``: standard output)."""
    with output(path) as fh:
        fh.write(text)


def sqlite_path(url: str) -> Path | None:
    """Return the file of a ``sqlite:///path`` URL (None for other databases and in-memory)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None  # open_store says what is wrong with it
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser()


def open_existing_store(settings: Settings) -> Store:
    """Open the configured store for a command that must not create one.

    A mistyped ``--store``/``store.url`` would otherwise leave a new, empty SQLite file behind and
    report "0 episodes", "no alerts" or "no silences" as if that were the answer. Only ``watcher
    run``, ``watcher demo`` and the commands that import data create a store.
    """
    from ..store.db import open_store

    require_existing_store(settings)
    return open_store(settings.store.url.get_secret_value(), busy_timeout_ms=settings.store.busy_timeout_ms)


def require_existing_store(settings: Settings) -> None:
    """Raise ``MissingStoreError`` when the configured store is a SQLite file that does not exist."""
    path = sqlite_path(settings.store.url.get_secret_value())
    if path is not None and not path.is_file():
        raise MissingStoreError(
            f"no store at {path.absolute()}: check --store/--config/store.url "
            "(only `watcher run`, `watcher demo` and `watcher scores import` create one)"
        )


EXTRAS = {
    "matplotlib": "plot",
    "psycopg": "postgres",
    "psycopg_binary": "postgres",
    "openai": "examples",
}
"""Optional dependency (top-level module) → the extra of ``pyproject.toml`` that brings it."""


def install_hint(module: str | None) -> str:
    """Return one line saying which optional dependency is missing and how to install it."""
    top = (module or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return f"the Python module {top or module!r} is not installed (pip install {top})"
    return f"this needs {top}, which is not installed: pip install 'watcher-llm[{extra}]'"


def require(module: str) -> None:
    """Raise ``UsageError`` with the install hint now when ``module`` is missing (before slow work)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UsageError(install_hint(module))
