"""engine/ declares its public API, and the worker, connectors and benchmarks use only it."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import engine

REPO = Path(__file__).resolve().parents[2]
CALLERS = ("streams", "connectors", "bench")
GENERATED = ("bench/out/",)
"""Ignored by git: `make bench` keeps a snapshot of the sources of each run there."""
INTERNAL_USES = {
    ("bench/patterns.py", "compile_test"): "times the condition operators themselves",
    **{
        ("connectors/mapping.py", name): "mappings are read with the bundles' located YAML"
        for name in ("_DuplicateKey", "_Forbidden", "_Located", "_LocatedList", "_LocatingLoader")
    },
}


def engine_imports(path: Path) -> list[tuple[str, int]]:
    """(name, line) of every name ``path`` imports from ``engine`` or a module of it."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "engine" or node.module.startswith("engine."):
                names.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.Import):
            names.extend(
                (alias.name, node.lineno)
                for alias in node.names
                if alias.name.startswith("engine.")
            )
    return names


def test_every_declared_name_exists_once() -> None:
    assert [name for name, n in Counter(engine.__all__).items() if n > 1] == []
    missing = [name for name in engine.__all__ if not hasattr(engine, name)]
    assert missing == []


def test_the_worker_connectors_and_benchmarks_use_only_what_engine_declares() -> None:
    declared = set(engine.__all__)
    undeclared = []
    for folder in CALLERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if relative.startswith(GENERATED):
                continue
            for name, line in engine_imports(path):
                if name not in declared and (relative, name) not in INTERNAL_USES:
                    undeclared.append(f"{relative}:{line}: {name}")
    assert undeclared == [], "imported from engine/ but not in engine.__all__"


def test_the_scan_sees_imports_from_engine_modules() -> None:
    # The check above would pass vacuously if the scan found nothing.
    found = engine_imports(REPO / "streams" / "web.py")
    assert {"explain", "explain_journeys", "CustomerState"} <= {name for name, _ in found}
