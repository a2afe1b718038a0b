"""The channel analysis modules import one another in one direction only (no circle, not even one
hidden in a function body); names imported for type checkers alone do not count."""

from __future__ import annotations

import ast
from pathlib import Path

ANALYSIS = Path(__file__).resolve().parents[2] / "onnxslim" / "analysis"
PACKAGE = "onnxslim.analysis"


def _runtime_imports(tree: ast.Module) -> set[str]:
    """Modules of this package that ``tree`` imports when it runs (``if TYPE_CHECKING:`` skipped)."""
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
               for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PACKAGE:
                found |= {alias.name for alias in node.names}
            elif node.module.startswith(PACKAGE + "."):
                found.add(node.module.rsplit(".", 1)[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.rsplit(".", 1)[1] for a in node.names if a.name.startswith(PACKAGE + ".")}
    return found


def _graph() -> dict[str, set[str]]:
    return {path.stem: _runtime_imports(ast.parse(path.read_text(encoding="utf-8")))
            for path in ANALYSIS.glob("*.py") if path.stem != "__init__"}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(graph.get(name, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        state[name] = 2
        stack.pop()
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name)):
            return found
    return None


def test_channel_modules_import_in_one_direction():
    graph = _graph()
    assert {"channel_deps", "channel_rules", "channel_rule_base"} <= set(graph)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))
    assert "channel_rules" in graph["channel_deps"]  # the analysis uses the rules, not the other way


def test_the_cycle_finder_finds_a_circle_hidden_in_a_function():
    deps = ast.parse("def analyze():\n    from onnxslim.analysis.channel_rules import RULES\n")
    rules = ast.parse("from onnxslim.analysis.channel_deps import Builder\n")
    typed = ast.parse("if TYPE_CHECKING:\n    from onnxslim.analysis.channel_deps import Builder\n")
    assert _cycle({"channel_deps": _runtime_imports(deps), "channel_rules": _runtime_imports(rules)})
    assert _cycle({"channel_deps": _runtime_imports(deps), "channel_rules": _runtime_imports(typed)}) is None
