"""Reading vendor responses and requests alike: ``get`` along a path of attributes or keys.

This module owns the one accessor the wrappers and the message builder share (a leaf: it imports
nothing of the hooks). It does not own what is read (the wrappers, ``messages``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

_MISSING: Final = object()


def get(obj: Any, *path: str) -> Any:
    """Return ``obj.a.b`` (or ``obj["a"]["b"]``) along ``path``, None where anything is missing."""
    for name in path:
        if obj is None:
            return None
        if isinstance(obj, dict):
            obj = obj.get(name)
        else:  # vendor objects: an attribute (the Mapping ABC check is slower: only when needed)
            value = getattr(obj, name, _MISSING)
            if (value is _MISSING or callable(value)) and isinstance(obj, Mapping):
                value = obj.get(name)  # a mapping's key, not its method (``items``, ``values``)
            obj = None if value is _MISSING else value
    return obj
