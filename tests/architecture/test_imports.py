"""The import graph of the project's packages, read with ``ast``: no cycle between modules (type-only imports
included), no Dagster below ``assets/``, and no import from a layer above (``pipelines`` -> ``assets`` ->
``router`` / ``collectors`` -> ``warehouse``)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("warehouse", "collectors", "router", "assets", "pipelines")
# a package may import the ones on its right only (besides itself)
MAY_IMPORT = {
    "warehouse": set(),
    "collectors": {"warehouse"},
    "router": {"warehouse"},
    "assets": {"warehouse", "collectors", "router"},
    "pipelines": {"warehouse", "collectors", "router", "assets"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that ``name`` (a module or a module.attribute) names."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _module_level_imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Modules imported at module level (``if TYPE_CHECKING:`` blocks included; imports inside functions are
    the deliberate late ones and are left out)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                out.update(filter(None, (_resolve(a.name, known) for a in node.names)))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for a in node.names:
                    hit = _resolve(f"{base}.{a.name}", known) or _resolve(base, known)
                    if hit:
                        out.add(hit)
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)
    visit(tree.body)
    out.discard(module)
    return out


def _graph() -> nx.DiGraph:
    mods = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for name, path in mods.items():
        for dep in _module_level_imports(path, name, set(mods)):
            g.add_edge(name, dep)
    return g


def test_no_cycle_between_modules():
    g = _graph()
    # a package's __init__ re-exporting its own submodules is not a cycle of the design: drop edges from a
    # package to its own children before looking
    g.remove_edges_from([(a, b) for a, b in list(g.edges) if b.startswith(a + ".")])
    cycles = list(nx.simple_cycles(g))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join([*c, c[0]]) for c in cycles[:20])


@pytest.mark.parametrize("package", PACKAGES)
def test_layers_import_downwards_only(package):
    bad = []
    for name, path in _modules().items():
        if name.split(".")[0] != package:
            continue
        for line_no, target in _all_imports(path):
            top = target.split(".")[0]
            if top in PACKAGES and top != package and top not in MAY_IMPORT[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line_no} imports {target}")
            if top == "dagster" and package not in ("assets", "pipelines"):
                bad.append(f"{path.relative_to(ROOT)}:{line_no} imports dagster")
    assert not bad, "\n".join(bad)


def _all_imports(path: Path) -> list[tuple[int, str]]:
    """Every import in the file, late ones inside functions included (a layer rule holds for those too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.append((node.lineno, node.module))
    return out
