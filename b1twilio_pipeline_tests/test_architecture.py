"""The layout shows the architecture: stages import along the flow only (core <- b1 <- alerts <-
notifications; reporting reads b1 and alerts; housekeeping only core), no import cycle, no simulator code
in the product, small modules, and a snapshot of the asset graph so an accidental change to it shows up
in review."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from b1twilio_pipeline.definitions import build_definitions

PACKAGE = Path(__file__).resolve().parents[1] / "b1twilio_pipeline"
GRAPH = Path(__file__).with_name("data") / "asset_graph.json"
# What each stage may import (besides itself); the top level (definitions, cli) may import everything.
ALLOWED = {
    "core": set(),
    "b1": {"core"},
    "alerts": {"core", "b1"},
    "notifications": {"core", "b1", "alerts"},
    "reporting": {"core", "b1", "alerts"},
    "migrations": {"core"},
    "housekeeping": {"core"},
}


def _modules() -> dict[str, set[str]]:
    """module name -> the b1twilio_pipeline modules it imports."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        imports: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imports.update({node.module} | {f"{node.module}.{alias.name}" for alias in node.names})
            elif isinstance(node, ast.Import):
                imports.update(alias.name for alias in node.names)
        found[name] = {i for i in imports if i.startswith(("b1twilio_pipeline", "b1twilio_sim"))}
    return found


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None


def test_stages_import_along_the_flow_only() -> None:
    wrong = []
    for module, imports in _modules().items():
        stage = _stage(module)
        if stage is None:
            continue
        for imported in imports:
            other = _stage(imported)
            if other is not None and other != stage and other not in ALLOWED[stage]:
                wrong.append(f"{module} imports {imported}")
    assert not wrong, wrong


def test_no_import_cycle() -> None:
    modules = _modules()
    known = set(modules)
    graph = {m: {i for i in imports if i in known and i != m} for m, imports in modules.items()}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        assert module not in visiting, " -> ".join([*visiting[visiting.index(module):], module])
        if module in done:
            return
        visiting.append(module)
        for imported in graph[module]:
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_the_product_holds_no_simulator_code_and_no_big_module() -> None:
    assert not [m for m, imports in _modules().items() if any(i.startswith("b1twilio_sim") for i in imports)
                and m != "b1twilio_pipeline.cli"]
    sizes = {path.name: len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    assert max(sizes.values()) <= 400, sorted(sizes.items(), key=lambda item: -item[1])[:3]


def _graph() -> dict[str, dict[str, object]]:
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    return {
        node.key.to_user_string(): {
            "group": node.group_name,
            "deps": sorted(dep.to_user_string() for dep in node.parent_keys),
            "partitioned": node.partitions_def is not None,
            "automated": node.automation_condition is not None,
            "checks": sorted(check.name for check in node.check_keys),
        }
        for node in sorted(graph.asset_nodes, key=lambda n: n.key.to_user_string())
    }


def test_the_asset_graph_is_the_reviewed_one(request: pytest.FixtureRequest) -> None:
    """Regenerate with `B1TWILIO_UPDATE_GRAPH=1 pytest -k asset_graph` after a deliberate change."""
    current = _graph()
    if __import__("os").environ.get("B1TWILIO_UPDATE_GRAPH"):
        GRAPH.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    assert current == json.loads(GRAPH.read_text())
