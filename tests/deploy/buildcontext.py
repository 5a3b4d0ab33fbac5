"""The container build context as a builder sees it, without a builder.

``context_files`` lists the files of a clean checkout that ``.dockerignore`` admits (the moby
pattern rules that Docker, BuildKit, podman and buildah share: Go ``filepath.Match`` patterns plus
``**``, a pattern excludes a path when it matches the path or one of its parent folders, ``!``
re-admits, the last matching line wins). ``replay_copies`` then performs the build stage's
``COPY`` lines from that context into a folder, which is what ``pip install`` in the image sees.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class IgnorePattern:
    regex: re.Pattern[str]
    negate: bool
    text: str


def _translate(pattern: str) -> re.Pattern[str]:
    """Return the regex of one cleaned pattern (``**`` any folders, ``*``/``?`` within one name)."""
    out, i = "^", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # "**/" matches zero or more folders
                i += 1
                out += "(?:.*/)?"
            else:
                out += ".*"
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.find("]", i)
            if end == -1:
                out += re.escape(c)
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "$")


def parse_ignore(text: str) -> list[IgnorePattern]:
    """Return the patterns of a ``.dockerignore`` file, in order."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        body = line[1:].strip() if negate else line
        cleaned = str(PurePosixPath("/" + body)).lstrip("/") or "."
        patterns.append(IgnorePattern(_translate(cleaned), negate, line))
    return patterns


def excluded(path: str, patterns: list[IgnorePattern]) -> bool:
    """Return whether ``path`` (relative, ``/``-separated) stays out of the build context."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for p in patterns:
        if any(p.regex.match(c) for c in candidates):
            result = not p.negate
    return result


def checkout_files(root: Path) -> list[str]:
    """Return the files of a clean checkout of ``root`` (tracked by git), ``/``-separated."""
    out = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=True, timeout=60
    ).stdout
    return sorted(f for f in out.decode().split("\0") if f and (root / f).is_file())


def context_files(root: Path) -> list[str]:
    """Return the files of a clean checkout of ``root`` that its ``.dockerignore`` admits."""
    patterns = parse_ignore((root / ".dockerignore").read_text())
    return [f for f in checkout_files(root) if not excluded(f, patterns)]


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    dest: str


def build_stage_copies(dockerfile: str, stage: str = "build") -> list[Copy]:
    """Return the ``COPY`` lines (from the context, not ``--from``) of the named stage."""
    lines = dockerfile.replace("\\\n", " ").splitlines()
    copies: list[Copy] = []
    current = None
    for line in lines:
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() == "FROM":
            current = words[-1] if len(words) >= 4 and words[-2].upper() == "AS" else None
            continue
        if current == stage and words[0].upper() == "COPY":
            args = [w for w in words[1:] if not w.startswith("--")]
            if any(w.startswith("--from") for w in words[1:]):
                continue
            copies.append(Copy(tuple(args[:-1]), args[-1]))
    return copies


def replay_copies(root: Path, files: list[str], copies: list[Copy], workdir: Path) -> None:
    """Perform ``copies`` from the context (``files`` of ``root``) into ``workdir`` like a builder.

    A source that is a file lands in the destination folder (``./`` ends with ``/``) or as the
    destination; a folder's admitted contents land under the destination. A source with nothing
    admitted fails as the builder would.
    """
    for copy in copies:
        for src in copy.sources:
            src = src.rstrip("/")
            dest = workdir / copy.dest
            if src in files:
                target = dest / Path(src).name if copy.dest.endswith("/") else dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / src, target)
                continue
            inside = [f for f in files if f.startswith(src + "/")]
            if not inside:
                raise FileNotFoundError(f"COPY {src}: not in the build context (.dockerignore)")
            for f in inside:
                target = dest / f[len(src) + 1 :]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / f, target)
