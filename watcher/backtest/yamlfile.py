"""Read a YAML file into a pydantic model, reporting every problem at ``file:line:col``.

This module owns turning a unit-test file or an incidents file into its model with positions, the
way ``watcher check`` reports rule files (``rules.problems``). It does not own the models.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import Problem

M = TypeVar("M", bound=BaseModel)


class LocatedError(Exception):
    """The file could not be read or validated; ``problems`` holds each at ``file:line:col``."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def load_located(path: str | Path, model: type[M], *, list_key: str | None = None) -> M:
    """Parse ``path`` and validate it as ``model``; raise ``LocatedError`` with positions.

    With ``list_key``, a file whose top level is a list is read as ``{list_key: [...]}`` (an
    incidents file may be either), and positions still point into the file.
    """
    from ..rules.loader import TOO_DEEP, parse_yaml, yaml_problem
    from ..rules.problems import Locator, translate

    name = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise LocatedError([Problem(name, 1, 1, "the file is not UTF-8 text; save it as UTF-8")]) from None
    except OSError as exc:
        raise LocatedError([Problem(name, 1, 1, f"cannot read the file: {exc.strerror or exc}")]) from None
    try:
        root, data, duplicates = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise LocatedError([yaml_problem(name, text, exc)]) from None
    except RecursionError:
        raise LocatedError([Problem(name, 1, 1, TOO_DEEP)]) from None
    if duplicates:
        raise LocatedError(
            [Problem(name, k.start_mark.line + 1, k.start_mark.column + 1, m) for _, k, m in duplicates]
        )
    if root is None:
        root, data = yaml.MappingNode("tag:yaml.org,2002:map", []), {}
    if list_key is not None and isinstance(root, yaml.SequenceNode):
        key = yaml.ScalarNode("tag:yaml.org,2002:str", list_key, root.start_mark, root.start_mark)
        root = yaml.MappingNode("tag:yaml.org,2002:map", [(key, root)], root.start_mark, root.end_mark)
        data = {list_key: data}
    if not isinstance(data, dict):
        line, col = root.start_mark.line + 1, root.start_mark.column + 1
        raise LocatedError([Problem(name, line, col, "expected a mapping (key: value) at the top level")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = translate(exc, Locator(name, root, data, model))
        raise LocatedError(sorted(problems, key=lambda p: (p.line, p.col))) from None
