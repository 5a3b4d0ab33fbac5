"""The distribution name: not `watcher` (an unrelated PyPI project), and what the install examples use."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_distribution_name_is_not_the_unrelated_pypi_project() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "watcher-llm"
    assert project["scripts"] == {"watcher": "watcher.cli:main"}  # the command keeps its name


def test_ci_example_installs_the_distribution() -> None:
    workflow = yaml.safe_load((ROOT / "deploy/ci/github-actions.yaml").read_text())
    installs = [
        step["run"]
        for job in workflow["jobs"].values()
        for step in job["steps"]
        if "pip install" in str(step.get("run", ""))
    ]
    assert installs
    for command in installs:
        names = re.findall(r"pip install \"?([A-Za-z0-9_.-]+)", command)
        assert names == ["watcher-llm"], command


def test_docs_never_install_the_bare_name() -> None:
    bare = re.compile(r"pip install ['\"]?watcher(\[|['\"\s]|$)", re.M)
    for path in [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "deploy").rglob("*")),
    ]:
        if path.is_file() and path.suffix in {".md", ".yaml", ".yml", ".service", ""}:
            text = path.read_text(errors="replace")
            assert not bare.search(text), f"{path.relative_to(ROOT)} installs `watcher` from PyPI"
