"""Reading rule files from disk into validated groups, with every problem at ``file:line:col``.

This module owns finding rule files (files or folders, skipping ``tests/`` folders), parsing YAML
with node positions, validating against ``schema``, turning pydantic errors into messages that say
what is wrong and what to do, and the checks that span a file or several files (duplicate group
names, known receivers, template syntax). It reports every problem at once by raising
``RuleFileError``; bad input never raises anything else.

It does not own the rule format itself (``schema``), printing check results (``check``), nor
evaluating or reloading rules (``engine``).
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment
from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import Problem, RuleFileError
from .problems import Loc, Locator, translate
from .schema import Group, Rule, RuleFile

RULE_SUFFIXES = (".yml", ".yaml")
_TEMPLATE_FIELDS = ("annotations", "labels")
WATCHER_FILTERS = frozenset({"sig", "unit", "duration"})
"""The filters ``notify.templates`` adds to Jinja's own (a test checks the two agree)."""


def _checking_env() -> SandboxedEnvironment:
    env = SandboxedEnvironment()
    for name in WATCHER_FILTERS:
        env.filters[name] = lambda value, *args, **kwargs: value
    return env


_JINJA = _checking_env()


@dataclass(frozen=True, slots=True)
class LoadedGroup:
    """One validated group and the file it came from."""

    file: Path
    group: Group

    @property
    def name(self) -> str:
        """Return the group's name."""
        return self.group.name


@dataclass(frozen=True, slots=True)
class LoadedRules:
    """Every group of a set of rule files, validated; ``hash`` changes when any file does."""

    groups: tuple[LoadedGroup, ...]
    files: tuple[Path, ...]
    hash: str

    @property
    def rule_count(self) -> int:
        """Return the number of rules over all groups."""
        return sum(len(g.group.rules) for g in self.groups)


@dataclass(frozen=True, slots=True)
class RuleSite:
    """One valid rule, its group, and where the rule starts in its file (for checks beyond the format)."""

    file: str
    line: int
    col: int
    group: Group
    index: int
    """The rule's index in its group."""

    @property
    def rule(self) -> Rule:
        """Return the rule itself."""
        return self.group.rules[self.index]

    def problem(self, message: str) -> Problem:
        """Return ``message`` as a problem at this rule (a warning, for ``check``)."""
        return Problem(self.file, self.line, self.col, message, self.group.name, self.rule.alert, self.index)


@dataclass
class Inspection:
    """What reading a set of paths found: the valid groups, the files, and every problem.

    ``checked`` lists, in order, the name of every file read plus every path that could not be
    (missing, unreadable), as it appears in ``Problem.file``; ``check`` prints one block each.
    """

    groups: list[LoadedGroup] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    contents: dict[Path, bytes] = field(default_factory=dict)
    sites: list[RuleSite] = field(default_factory=list)
    """Every valid rule with its position, in file order."""

    def rules_in(self, name: str) -> int:
        """Return how many valid rules the file shown as ``name`` holds."""
        return sum(len(g.group.rules) for g in self.groups if str(g.file) == name)


def load_rule_files(
    paths: Sequence[str | Path], *, known_receivers: Collection[str] | None = None
) -> LoadedRules:
    """Load and validate every rule file under ``paths``; raise ``RuleFileError`` listing all problems.

    ``paths`` may be files or folders (every ``*.yml``/``*.yaml`` below, sorted, skipping folders
    named ``tests``). When ``known_receivers`` is given, a rule naming any other receiver is an error.
    """
    found = inspect_rule_files(paths, known_receivers=known_receivers)
    if found.problems:
        raise RuleFileError(found.problems)
    digest = hashlib.sha256()
    for path in sorted(found.files):
        content = found.contents[path]
        digest.update(len(content).to_bytes(8, "big"))
        digest.update(content)
    return LoadedRules(tuple(found.groups), tuple(found.files), digest.hexdigest())


def inspect_rule_files(
    paths: Sequence[str | Path], *, known_receivers: Collection[str] | None = None
) -> Inspection:
    """Read and validate every rule file under ``paths``, collecting problems instead of raising."""
    found = Inspection()
    first_seen: dict[str, str] = {}
    for path, exists in _expand(paths):
        name = str(path)
        found.checked.append(name)
        if not exists:
            msg = "no such file or directory; check the path to the rule file or folder"
            found.problems.append(Problem(name, 1, 1, msg))
            continue
        try:
            content = path.read_bytes()
        except OSError as exc:
            found.problems.append(Problem(name, 1, 1, f"cannot read the file: {exc.strerror or exc}"))
            continue
        found.files.append(path)
        found.contents[path] = content
        before = len(found.problems)
        try:
            _check_file(path, content, known_receivers, first_seen, found)
        except Exception as exc:  # a safety net: a checker bug must not crash `watcher check` or a reload
            found.problems.append(Problem(name, 1, 1, f"internal error while checking this file: {exc!r}"))
        found.problems[before:] = sorted(found.problems[before:], key=lambda p: (p.line, p.col))
    return found


def find_rule_files(paths: Sequence[str | Path]) -> list[Path]:
    """List the rule files under ``paths`` in order, skipping paths that do not exist."""
    return [path for path, exists in _expand(paths) if exists]


def _expand(paths: Sequence[str | Path]) -> list[tuple[Path, bool]]:
    """Expand folders into their rule files (sorted, without ``tests/``); flag missing paths."""
    out: list[tuple[Path, bool]] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            children = sorted(
                p
                for p in path.rglob("*")
                if p.suffix in RULE_SUFFIXES and p.is_file() and "tests" not in p.relative_to(path).parts[:-1]
            )
        elif path.exists():
            children = [path]
        else:
            out.append((path, False))
            continue
        for child in children:
            key = child.resolve()
            if key not in seen:
                seen.add(key)
                out.append((child, True))
    return out


# --- one file --------------------------------------------------------------------------------


def _check_file(
    path: Path,
    content: bytes,
    known_receivers: Collection[str] | None,
    first_seen: dict[str, str],
    found: Inspection,
) -> None:
    name = str(path)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _line_col(content[: exc.start].decode("utf-8", "replace"))
        found.problems.append(Problem(name, line, col, "the file is not UTF-8 text; save it as UTF-8"))
        return
    try:
        root, data, duplicates = parse_yaml(text)
    except yaml.YAMLError as exc:
        found.problems.append(yaml_problem(name, text, exc))
        return
    except RecursionError:
        found.problems.append(Problem(name, 1, 1, TOO_DEEP))
        return
    if root is None:
        return  # an empty file (or only comments) holds no groups, which is fine
    if not isinstance(data, dict):
        found.problems.append(
            _at(name, root, f'a rule file is a mapping with a "groups:" list, got {_kind(data)}')
        )
        return
    if not data:
        found.problems.append(
            _at(name, root, 'missing "groups:": a rule file is a mapping with a "groups:" list')
        )
        return
    if data.get("groups") is None and "groups" in data:
        data["groups"] = []  # `groups:` with nothing under it is an empty list
    locator = Locator(name, root, data)
    for loc, key, msg in duplicates:
        group, rule, rule_index, _ = locator.context(loc)
        line, col = key.start_mark.line + 1, key.start_mark.column + 1
        found.problems.append(Problem(name, line, col, msg, group, rule, rule_index))
    try:
        parsed = RuleFile.model_validate(data)
    except ValidationError as exc:
        found.problems.extend(translate(exc, locator))
        parsed = None
    found.problems.extend(_cross_checks(locator, known_receivers, first_seen))
    if parsed is not None:
        found.groups.extend(LoadedGroup(path, g) for g in parsed.groups)
        for gi, parsed_group in enumerate(parsed.groups):
            for ri in range(len(parsed_group.rules)):
                line, col = locator.position(("groups", gi, "rules", ri))
                found.sites.append(RuleSite(name, line, col, parsed_group, ri))


TOO_DEEP = "malformed YAML: nested too deeply (more than a few hundred levels); flatten the document"
MAX_NODES = 200_000
"""Most values one document may expand to, aliases counted at each use ("billion laughs" files)."""


def parse_yaml(text: str) -> tuple[Node | None, Any, list[tuple[Loc, Node, str]]]:
    """Parse one YAML document into (its node tree, its data, its duplicate keys).

    Raise ``yaml.YAMLError`` (with a position) for malformed YAML or too many aliases, and
    ``RecursionError`` for a document nested too deeply.
    """
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None, []
        _check_expansion(root)
        duplicates = _duplicate_keys(root)  # before constructing: merge keys rewrite the nodes
        return root, loader.construct_document(root), duplicates
    finally:
        loader.dispose()


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: Node) -> None:
    """Raise a positioned ``YAMLError`` when the document expands to more than ``MAX_NODES`` values."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:  # iterative post-order, each node sized once however often it is aliased
        node, expanded = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if not expanded:
            if id(node) in open_:
                raise yaml.MarkedYAMLError(
                    problem="a value contains itself through an alias (*name)", problem_mark=node.start_mark
                )
            open_.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        open_.discard(id(node))
        total = 1 + sum(sizes.get(id(c), 1) for c in children)
        sizes[id(node)] = total
        if total > MAX_NODES:
            raise yaml.MarkedYAMLError(
                problem=f"the document expands to more than {MAX_NODES:,} values through its aliases "
                "(*name); write the values out",
                problem_mark=node.start_mark,
            )


def _duplicate_keys(root: Node) -> list[tuple[Loc, Node, str]]:
    """Find mapping keys given twice: YAML silently keeps the last, hiding the first."""
    out: list[tuple[Loc, Node, str]] = []
    stack: list[tuple[Node, Loc]] = [(root, ())]
    seen_nodes: set[int] = set()
    while stack:
        node, loc = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, MappingNode):
            first: dict[str, Node] = {}
            for key, value in node.value:
                if not isinstance(key, ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                if key.value in first:
                    line = first[key.value].start_mark.line + 1
                    msg = f'duplicate key "{key.value}": the one on line {line} is ignored; keep one'
                    out.append(((*loc, key.value), key, msg))
                first[key.value] = key
                stack.append((value, (*loc, key.value)))
        elif isinstance(node, SequenceNode):
            stack.extend((item, (*loc, i)) for i, item in enumerate(node.value))
    return out


def yaml_problem(name: str, text: str, exc: yaml.YAMLError) -> Problem:
    """Return the problem a YAML parse error describes, at its position, with what to do."""
    if isinstance(exc, yaml.reader.ReaderError):
        line, col = _line_col(text[: exc.position])
        return Problem(name, line, col, "malformed YAML: the file contains a control character; remove it")
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return Problem(name, 1, 1, f"malformed YAML: {' '.join(str(exc).split())}")
    mark = exc.problem_mark
    problem = (exc.problem or "").strip()
    if isinstance(exc, yaml.composer.ComposerError) and "another document" in problem:
        msg = 'a rule file holds one YAML document, found a second; put all groups in one "groups:" list'
    elif "\\t" in problem or "\t" in problem:
        msg = "a tab character; YAML is indented with spaces, not tabs"
    elif "alias" in problem:
        msg = problem
    elif "mapping values are not allowed" in problem:
        msg = f'{problem}; quote a value that contains ": " or fix the indentation'
    else:
        msg = problem
        if exc.context and exc.context_mark is not None:
            msg += f" ({exc.context} started at line {exc.context_mark.line + 1})"
        msg += "; check the indentation, quotes and brackets here"
    return Problem(name, mark.line + 1, mark.column + 1, f"malformed YAML: {msg}")


# --- checks that span rules or files -----------------------------------------------------------


def _cross_checks(
    loc: Locator, known_receivers: Collection[str] | None, first_seen: dict[str, str]
) -> list[Problem]:
    """Check group names across files, receivers and template syntax on the raw data."""
    out: list[Problem] = []
    groups = loc.data.get("groups")
    if not isinstance(groups, list):
        return out
    for gi, group in enumerate(groups):
        if not isinstance(group, dict):
            continue
        gname = group.get("name")
        if isinstance(gname, str) and gname:
            where = loc.position(("groups", gi, "name"))
            if gname in first_seen:
                msg = (
                    f'duplicate group name "{gname}", first defined at {first_seen[gname]}; '
                    "group names must be unique across all rule files, rename one"
                )
                out.append(loc.problem(("groups", gi, "name"), msg))
            else:
                first_seen[gname] = f"{loc.file}:{where[0]}:{where[1]}"
        rules = group.get("rules")
        if not isinstance(rules, list):
            continue
        for ri, rule in enumerate(rules):
            if isinstance(rule, dict):
                base = ("groups", gi, "rules", ri)
                out += _check_templates(loc, base, rule)
                out += _check_expr(loc, base, rule)
                if known_receivers is not None:
                    out += _check_receivers(loc, base, rule, known_receivers)
    return out


def _check_templates(loc: Locator, base: tuple[str | int, ...], rule: dict[str, Any]) -> list[Problem]:
    out: list[Problem] = []
    for section in _TEMPLATE_FIELDS:
        values = rule.get(section)
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if not isinstance(value, str):
                continue
            try:
                _JINJA.from_string(value)
            except jinja2.TemplateAssertionError as exc:
                out.append(loc.problem((*base, section, key), f"{section}.{key}: {_filter_hint(exc)}"))
            except jinja2.TemplateSyntaxError as exc:
                line = f" (line {exc.lineno} of the template)" if "\n" in value.strip() else ""
                msg = (
                    f"{section}.{key}: template does not parse: {exc.message}{line}; "
                    "check the {{ ... }} and {% ... %} pairs"
                )
                out.append(loc.problem((*base, section, key), msg))
    return out


def _filter_hint(exc: jinja2.TemplateAssertionError) -> str:
    """Reword "No filter named 'roundd'." with the filters there are and the closest one."""
    m = re.search(r"No (filter|test) named '([^']*)'", exc.message or "")
    if m is None:
        return f"template does not compile: {exc.message}"
    kind, name = m.groups()
    known = sorted(_JINJA.filters if kind == "filter" else _JINJA.tests)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f'did you mean "{close[0]}"?' if close else f"known: {', '.join(known)}"
    return f'unknown template {kind} "{name}"; {hint}'


def _check_expr(loc: Locator, base: tuple[str | int, ...], rule: dict[str, Any]) -> list[Problem]:
    """Parse a Prometheus rule's ``expr`` with a real PromQL parser (``promql-parser``)."""
    expr = rule.get("expr")
    if not isinstance(expr, str) or not expr.strip() or rule.get("source", "prometheus") != "prometheus":
        return []
    if "\x00" in expr or len(expr) > 65_536:
        return []  # the schema reports these
    try:
        import promql_parser
    except ImportError:  # pragma: no cover - a declared dependency; without it the check is skipped
        return []
    try:
        promql_parser.parse(expr)
    except Exception as exc:  # the parser raises ValueError; any failure means "does not parse"
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return [loc.problem((*base, "expr"), f"expr: PromQL does not parse: {reason}")]
    return []


def _check_receivers(
    loc: Locator, base: tuple[str | int, ...], rule: dict[str, Any], known: Collection[str]
) -> list[Problem]:
    out: list[Problem] = []
    receivers = rule.get("receivers")
    if not isinstance(receivers, list):
        return out
    defined = ", ".join(sorted(known)) or "none"
    for i, name in enumerate(receivers):
        if isinstance(name, str) and name not in known:
            msg = f'unknown receiver "{name}"; defined: {defined}'
            close = difflib.get_close_matches(name, list(known), n=1)
            if close:
                msg += f' (did you mean "{close[0]}"?)'
            out.append(loc.problem((*base, "receivers", i), msg))
    return out


# --- helpers ---------------------------------------------------------------------------------


def _at(name: str, node: Node, message: str) -> Problem:
    return Problem(name, node.start_mark.line + 1, node.start_mark.column + 1, message)


def _line_col(prefix: str) -> tuple[int, int]:
    lines = prefix.split("\n")
    return len(lines), len(lines[-1]) + 1


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f'the text "{value[:40]}"'
    return f"{value!r}"
