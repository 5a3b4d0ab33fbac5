"""Detector state as a compact, versioned blob: what a restart or a takeover resumes from.

This module owns turning a warmed detector into bytes and back (``get_state``/``set_state``),
without pickle: the blob holds a JSON tree of the detector's attributes (numbers, strings, lists,
tuples, deques, dicts and the detectors' own helper objects) and the raw bytes of its numpy and
``array`` buffers. Decoding only ever creates classes defined in ``watcher.detectors`` (by
``__new__``, setting attributes; no code from the blob runs), so a blob read from a shared
database cannot execute anything. It does not own where blobs are stored (``engine.checkpoints``)
nor any detector's logic: it reads their attributes as they are.

Versioning: a blob carries ``FORMAT`` and the digest of the detectors' source code
(``code_version``). A blob from other detector code is refused (``CheckpointError``), so the caller
rebuilds that state from history: a checkpoint can make a start faster, never different.
"""

from __future__ import annotations

import array
import functools
import hashlib
import importlib
import json
import struct
from collections import deque
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DetectorError
from .base import Detector

FORMAT = 1
_MAGIC = b"WDS"
_HEAD = struct.Struct("<3sBI")  # magic, format, JSON length
_PACKAGE = "watcher.detectors"


class CheckpointError(DetectorError):
    """A detector's state cannot be written, or a blob cannot be restored by this code."""


@functools.cache
def code_version() -> str:
    """Return the digest of the detectors' source files: state from other code is not restored."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _allowed(module: str, packages: Sequence[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


class _Encoder:
    def __init__(self, packages: Sequence[str]) -> None:
        self.packages = packages
        self.buffers: list[bytes] = []
        self.size = 0

    def _buffer(self, raw: bytes) -> list[int]:
        at = self.size
        self.buffers.append(raw)
        self.size += len(raw)
        return [at, len(raw)]

    def encode(self, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float | str):
            if isinstance(value, np.generic):
                return {"g": value.dtype.str, "v": value.item()}
            return value
        if isinstance(value, np.generic):
            return {"g": value.dtype.str, "v": value.item()}
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise CheckpointError("an object array cannot be checkpointed")
            flat = np.ascontiguousarray(value)
            return {"nd": [flat.dtype.str, list(flat.shape), *self._buffer(flat.tobytes())]}
        if isinstance(value, array.array):
            return {"aa": [value.typecode, *self._buffer(value.tobytes())]}
        if isinstance(value, list):
            return {"l": [self.encode(v) for v in value]}
        if isinstance(value, tuple):
            return {"t": [self.encode(v) for v in value]}
        if isinstance(value, timedelta):
            return {"td": value.total_seconds()}
        if isinstance(value, deque):
            return {"dq": [self.encode(v) for v in value], "max": value.maxlen}
        if isinstance(value, dict):
            return {"d": [[self.encode(k), self.encode(v)] for k, v in value.items()]}
        cls = type(value)
        if not _allowed(cls.__module__, self.packages):
            raise CheckpointError(f"a {cls.__module__}.{cls.__qualname__} cannot be checkpointed")
        return {
            "o": f"{cls.__module__}:{cls.__qualname__}",
            "a": {k: self.encode(v) for k, v in _attrs(value)},
        }


def _attrs(obj: Any) -> list[tuple[str, Any]]:
    """Return an object's attributes: its ``__dict__`` and every filled ``__slots__`` entry."""
    out = list(vars(obj).items()) if hasattr(obj, "__dict__") else []
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                out.append((name, getattr(obj, name)))
    return out


class _Decoder:
    def __init__(self, data: memoryview, packages: Sequence[str]) -> None:
        self.data = data
        self.packages = packages

    def decode(self, node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if "g" in node:
            return np.dtype(node["g"]).type(node["v"])
        if "nd" in node:
            dtype, shape, at, n = node["nd"]
            kind = np.dtype(dtype)
            if kind.hasobject:
                raise CheckpointError("an object array in a checkpoint")
            return np.frombuffer(self.data[at : at + n], dtype=kind).reshape(shape).copy()
        if "aa" in node:
            code, at, n = node["aa"]
            out = array.array(code)
            out.frombytes(self.data[at : at + n])
            return out
        if "l" in node:
            return [self.decode(v) for v in node["l"]]
        if "t" in node:
            return tuple(self.decode(v) for v in node["t"])
        if "td" in node:
            return timedelta(seconds=node["td"])
        if "dq" in node:
            return deque((self.decode(v) for v in node["dq"]), maxlen=node["max"])
        if "d" in node:
            return {self.decode(k): self.decode(v) for k, v in node["d"]}
        if "o" in node:
            return self._object(node["o"], node["a"])
        raise CheckpointError("unknown node in a checkpoint")

    def _object(self, name: str, attrs: dict[str, Any]) -> Any:
        module, _, qualname = name.partition(":")
        if not _allowed(module, self.packages):
            raise CheckpointError(f"a checkpoint names a class outside the detectors: {name}")
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part, None)
        if not isinstance(cls, type):
            raise CheckpointError(f"a checkpoint names an unknown class: {name}")
        obj: Any = object.__new__(cls)
        for key, value in attrs.items():
            object.__setattr__(obj, key, self.decode(value))
        return obj


def get_state(det: Detector, also: Sequence[str] = ()) -> bytes:
    """Return ``det``'s whole state as a blob (raise ``CheckpointError`` if it holds anything else).

    ``also`` names further modules whose classes may appear (a caller's detector wrapper).
    """
    enc = _Encoder((_PACKAGE, *also))
    tree = enc.encode(det)
    head = json.dumps({"v": code_version(), "s": tree}, separators=(",", ":")).encode()
    return b"".join([_HEAD.pack(_MAGIC, FORMAT, len(head)), head, *enc.buffers])


def set_state(fresh: Detector, blob: bytes, also: Sequence[str] = ()) -> Detector:
    """Return the detector stored in ``blob``, checked to be of ``fresh``'s kind and of this code.

    ``fresh`` is a new detector of the rule's spec: the blob must hold a detector of the same kind,
    so a state written for another detector kind is refused rather than adopted. ``also`` names
    the further modules whose classes may be created (as given to ``get_state``).
    """
    view = memoryview(blob)
    try:
        magic, fmt, n = _HEAD.unpack_from(view)
        if magic != _MAGIC or fmt != FORMAT:
            raise CheckpointError("not a detector checkpoint of this format")
        head = json.loads(bytes(view[_HEAD.size : _HEAD.size + n]))
    except (struct.error, ValueError) as exc:
        raise CheckpointError(f"unreadable detector checkpoint: {exc}") from None
    if head.get("v") != code_version():
        raise CheckpointError("the checkpoint was written by other detector code")
    try:
        det = _Decoder(view[_HEAD.size + n :], (_PACKAGE, *also)).decode(head["s"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"malformed detector checkpoint: {exc}") from None
    if not isinstance(det, Detector) or getattr(det, "kind", None) != getattr(fresh, "kind", None):
        raise CheckpointError(f"the checkpoint holds a {type(det).__name__}, not a {type(fresh).__name__}")
    return det


__all__ = ["FORMAT", "CheckpointError", "code_version", "get_state", "set_state"]
