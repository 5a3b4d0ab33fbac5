"""The hooks package is imported into applications: it must not pull in the daemon."""

from __future__ import annotations

import ast
from pathlib import Path

import watcher.instrument

FORBIDDEN = ("watcher.engine", "watcher.notify", "watcher.rules", "watcher.sources", "watcher.detectors")
PACKAGE_DIR = Path(watcher.instrument.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Return the absolute names of every module ``path`` imports (relative imports resolved)."""
    package = ("watcher." + ".".join(path.relative_to(PACKAGE_DIR.parent).parent.parts)).rstrip(".")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_instrument_imports_nothing_from_the_daemon() -> None:
    files = sorted(PACKAGE_DIR.rglob("*.py"))
    assert len(files) >= 4
    seen: set[str] = set()
    for path in files:
        modules = imported_modules(path)
        seen |= modules
        bad = sorted(m for m in modules if m.startswith(FORBIDDEN))
        assert not bad, f"{path.name} imports {bad}"
    assert "watcher.store.tables" in seen  # the scan does resolve relative imports


def test_vendor_sdks_are_not_imported_at_import_time() -> None:
    import subprocess
    import sys

    code = "import sys, watcher.instrument; print(sorted({'openai', 'anthropic'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_is_sorted_and_complete() -> None:
    assert watcher.instrument.__all__ == sorted(watcher.instrument.__all__)
    assert set(watcher.instrument.__all__) == {
        "CallRecord",
        "OnlineEvaluator",
        "Redactor",
        "Retrieval",
        "Sampler",
        "StoreWriter",
        "attribution",
        "configure",
        "flush",
        "instrument_anthropic",
        "instrument_openai",
        "llm_call",
        "metrics_app",
        "metrics_asgi_app",
        "record_eval_error",
        "record_feedback",
        "record_score",
        "reset",
        "retrieval",
        "span",
        "start_metrics_server",
        "uninstrument_anthropic",
        "uninstrument_openai",
    }
    for name in watcher.instrument.__all__:
        assert hasattr(watcher.instrument, name)
