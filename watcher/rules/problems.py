"""Turning validation errors into ``Problem``s that point at the YAML and say what to do.

This module owns mapping a pydantic error ``loc`` (``("groups", 0, "rules", 2, "for")``) to the
YAML node it came from (so to ``file:line:col``), naming the group and rule, and rewording
pydantic's messages (unknown field with a suggestion, unknown detector kind, wrong type, missing
field). It does not own reading files or the checks that span files (``loader``), nor the rule
format (``schema``).
"""

from __future__ import annotations

import difflib
import re
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import Problem
from .schema import RuleFile

Loc = tuple[str | int, ...]

_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
}
_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "multiple_of")
_NAME_RULE = "use letters, digits and _ only, not starting with a digit"


class Locator:
    """Find the YAML node, the group and the rule behind a validation ``loc`` in one file."""

    def __init__(
        self, file: str, root: Node, data: dict[str, Any], schema: type[BaseModel] = RuleFile
    ) -> None:
        self.file = file
        self.root = root
        self.data = data
        self.schema = schema
        """The model the data is validated against (the rule file; the settings for the config)."""

    def found(self, loc: Loc) -> bool:
        """Tell whether the section ``loc`` starts in is in this file (an environment value is not)."""
        return not loc or self.walk(loc)[2] > 0

    def walk(self, loc: Loc) -> tuple[Node, Node | None, int, set[int]]:
        """Follow ``loc`` down the node tree as far as the YAML goes.

        Returns the node reached, the key node it hangs from (``None`` for list items), how many
        segments were consumed, and the indexes of segments skipped because they name a union
        branch (a detector kind, ``str``), not a YAML key.
        """
        node, key, consumed, skipped = self.root, None, 0, set()
        i = 0
        while i < len(loc):
            seg = loc[i]
            if seg == "[key]" and key is not None:
                node, consumed = key, i + 1
                break
            child = _child(node, seg)
            if child is None:
                if i + 1 < len(loc) and _child(node, loc[i + 1]) is not None:
                    skipped.add(i)
                    i += 1
                    continue
                break
            node, key = child
            i += 1
            consumed = i
        return node, key, consumed, skipped

    def position(self, loc: Loc, *, prefer_key: bool = False) -> tuple[int, int]:
        """Return the 1-based line and column of the value (or key) that ``loc`` names."""
        node, key, consumed, _ = self.walk(loc)
        target = node
        if key is not None and ((prefer_key and consumed == len(loc)) or not isinstance(node, ScalarNode)):
            target = key
        return target.start_mark.line + 1, target.start_mark.column + 1

    def context(self, loc: Loc) -> tuple[str | None, str | None, int | None, int]:
        """Return the group name, rule name, rule index, and how many ``loc`` segments they cover."""
        group_name = rule_name = None
        rule_index = None
        covered = 0
        groups = self.data.get("groups")
        if len(loc) >= 2 and loc[0] == "groups" and isinstance(loc[1], int) and isinstance(groups, list):
            covered = 2
            group = groups[loc[1]] if loc[1] < len(groups) else None
            if isinstance(group, dict):
                name = group.get("name")
                group_name = name if isinstance(name, str) else None
                rules = group.get("rules")
                in_rule = len(loc) >= 4 and loc[2] == "rules" and isinstance(loc[3], int)
                if in_rule and isinstance(rules, list) and isinstance(loc[3], int):
                    covered, rule_index = 4, loc[3]
                    rule = rules[loc[3]] if loc[3] < len(rules) else None
                    alert = rule.get("alert") if isinstance(rule, dict) else None
                    rule_name = alert if isinstance(alert, str) else None
        return group_name, rule_name, rule_index, covered

    def problem(self, loc: Loc, message: str, *, prefer_key: bool = False) -> Problem:
        """Build the problem ``message`` at the node ``loc`` names, with its group and rule."""
        line, col = self.position(loc, prefer_key=prefer_key)
        group, rule, rule_index, _ = self.context(loc)
        return Problem(self.file, line, col, message, group, rule, rule_index)


def translate(exc: ValidationError, locator: Locator) -> list[Problem]:
    """Turn every error of ``exc`` into a problem; union branches of one value become one problem."""
    return translate_errors(exc.errors(include_url=False), locator)


def translate_errors(errors: list[ErrorDetails], locator: Locator) -> list[Problem]:
    """Turn validation ``errors`` into problems (see ``translate``)."""
    out: list[Problem] = []
    merged: dict[tuple[int, int, str], tuple[Loc, list[str], Any, str, str]] = {}
    for err in errors:
        loc: Loc = tuple(err["loc"])
        node, _, consumed, skipped = locator.walk(loc)
        *_, covered = locator.context(loc)
        path = _path([s for i, s in enumerate(loc[:consumed]) if i not in skipped and i >= covered])
        if err["type"] in _TYPE_WORDS and err["type"] != "missing":
            line, col = locator.position(loc)
            key = (line, col, path)
            word = _TYPE_WORDS[err["type"]]
            text = node.value if isinstance(node, ScalarNode) else ""
            entry = merged.setdefault(key, (loc[:consumed], [], err["input"], text, path))
            if word not in entry[1]:
                entry[1].append(word)
            continue
        parent = _path([s for i, s in enumerate(loc[: len(loc) - 1]) if i not in skipped and i >= covered])
        target, message, prefer_key = _reword(err, loc, path, parent, locator.schema)
        out.append(locator.problem(target, message, prefer_key=prefer_key))
    for loc, words, value, text, path in merged.values():
        message = f"expected {' or '.join(words)}, got {_describe(value)}{_type_hint(words, value, text)}"
        out.append(locator.problem(loc, f"{path}: {message}" if path else message))
    return out


def _reword(
    err: ErrorDetails, loc: Loc, path: str, parent: str, schema: type[BaseModel] = RuleFile
) -> tuple[Loc, str, bool]:
    """Return where to report ``err``, its friendly message, and whether to point at the key.

    ``path`` names the value within its rule (or group), ``parent`` the mapping that holds it.
    """
    kind, value, ctx = err["type"], err["input"], err.get("ctx") or {}
    msg = re.sub(r"^(Value error|Assertion failed), ", "", err["msg"])
    prefix = f"{path}: " if path else ""
    if kind == "value_error" and isinstance(value, dict):
        prefix = ""  # a check across the fields of a block: the position names the block
    if kind == "extra_forbidden":
        name = str(loc[-1])
        where = f" in {parent}" if parent else ""
        if name == "record" and "rules" in loc:
            return loc, "recording rules are not supported: watcher runs alerting rules only", True
        allowed = _fields_at(loc[:-1], schema)
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        hint = f'did you mean "{close[0]}"?' if close else f"valid here: {', '.join(allowed)}"
        return loc, f'unknown field "{name}"{where}' + (f"; {hint}" if allowed else ""), True
    if kind == "missing":
        where = f" in {parent}" if parent else ""
        choices = _choices_at(loc, schema)
        also = f" (one of: {', '.join(choices)})" if choices else ""
        return loc, f'missing required field "{loc[-1]}"{where}; add it{also}', False
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        disc = str(ctx.get("discriminator", "kind")).strip("'")
        tags = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", ""))) or _tags_at(loc, disc, schema)
        what = path.rsplit(".", 1)[-1] or "value"
        known = ", ".join(sorted(tags))
        if kind == "union_tag_not_found":
            return loc, f'{prefix}needs "{disc}" (one of: {known})', False
        tag = ctx.get("tag", "")
        close = difflib.get_close_matches(str(tag), tags, n=1)
        also = f' (did you mean "{close[0]}"?)' if close else ""
        return (*loc, disc), f'unknown {what} {disc} "{tag}"; known: {known}{also}', False
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        close = difflib.get_close_matches(str(value), choices, n=1)
        also = f'; did you mean "{close[0]}"?' if close else ""
        return loc, f"{prefix}{_describe(value)} is not one of: {', '.join(choices)}{also}", False
    if kind == "string_pattern_mismatch":
        if loc and loc[-1] == "[key]":
            section = str(loc[-3]).rstrip("s") if len(loc) >= 3 else "key"
            return loc, f'{section} name "{value}" is not valid: {_NAME_RULE}', False
        if path == "alert":
            return loc, f'alert name "{value}" is not valid: {_NAME_RULE} (e.g. HighSpend)', False
        return loc, f'{prefix}"{value}" does not match {ctx.get("pattern")}', False
    if kind == "too_short":
        if path.endswith("rules") and isinstance(value, list):
            return (
                loc,
                "empty rules list: a group needs at least one rule; add one or remove the group",
                False,
            )
        if isinstance(value, str):
            return loc, f"{prefix}must not be empty", False
        return loc, f"{prefix}needs at least {ctx.get('min_length')} item(s)", False
    if kind == "string_too_long":
        most = ctx.get("max_length")
        return loc, f"{prefix}is {len(str(value)):,} characters long; at most {most} characters", False
    if kind == "finite_number":
        never = "NaN is never crossed: the rule could not fire"
        return loc, f"{prefix}must be a finite number, got {value!r} ({never})", False
    if kind in _BOUNDS:
        return loc, f"{prefix}must be {msg.removeprefix('Input should be ')}, got {_describe(value)}", False
    return loc, f"{prefix}{msg}", False


# --- the schema's types, walked along a loc -----------------------------------------------------


def _unwrap(tp: Any) -> Any:
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif _is_union(tp) and len(members := [a for a in get_args(tp) if a is not type(None)]) == 1:
            tp = members[0]
        else:
            return tp


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _step(tp: Any, seg: str | int) -> Any:
    tp = _unwrap(tp)
    if _is_model(tp):
        for name, info in tp.model_fields.items():
            if seg in (name, info.alias):
                return info.annotation
        return None
    origin = get_origin(tp)
    if origin is list and isinstance(seg, int):
        return get_args(tp)[0]
    if origin is dict:
        return get_args(tp)[1]
    if _is_union(tp):
        for member in get_args(tp):
            kind = member.model_fields.get("kind") if _is_model(member) else None
            if kind is not None and get_args(kind.annotation) == (seg,):
                return member
    return None


def _type_at(loc: Loc, schema: type[BaseModel] = RuleFile) -> Any:
    tp: Any = schema
    for seg in loc:
        if seg == "[key]":
            return None
        tp = _step(tp, seg)
        if tp is None:
            return None
    return _unwrap(tp)


def _fields_at(loc: Loc, schema: type[BaseModel] = RuleFile) -> list[str]:
    tp = _type_at(loc, schema)
    if not _is_model(tp):
        return []
    return [info.alias or name for name, info in tp.model_fields.items()]


def _choices_at(loc: Loc, schema: type[BaseModel] = RuleFile) -> list[str]:
    tp = _type_at(loc, schema)
    if get_origin(tp) is Literal:
        return [str(a) for a in get_args(tp)]
    return []


def _tags_at(loc: Loc, disc: str, schema: type[BaseModel] = RuleFile) -> list[str]:
    tp = _type_at(loc, schema)
    members = get_args(tp) if _is_union(tp) else ()
    return [str(get_args(m.model_fields[disc].annotation)[0]) for m in members if _is_model(m)]


# --- small words -----------------------------------------------------------------------------


def _child(node: Node, seg: str | int) -> tuple[Node, Node | None] | None:
    if isinstance(node, MappingNode):
        for key, value in reversed(node.value):
            if isinstance(key, ScalarNode) and key.value == str(seg):
                return value, key
    elif isinstance(node, SequenceNode) and isinstance(seg, int) and 0 <= seg < len(node.value):
        return node.value[seg], None
    return None


def _path(segments: list[str | int]) -> str:
    out = ""
    for seg in segments:
        if seg == "[key]":
            continue
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else str(seg))
    return out


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return str(value)


def _type_hint(words: list[str], value: Any, text: str) -> str:
    if "a string" in words and value is not None and not isinstance(value, str | list | dict):
        return f'; quote it: "{text or _describe(value)}"'
    if "a list" in words and isinstance(value, str):
        return f'; write [{value}] or one "- {value}" per line'
    return ""
