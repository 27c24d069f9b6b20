"""The layer contract of docs/architecture.md: no module imports a module of a higher layer.

The import graph is read with :mod:`ast` (``tests/test_import_graph.py``); every
module-level import of a CortexFlow module is an edge. Each module belongs to
the first layer whose prefix matches it (longest prefix wins); a module may
import its own layer and the layers below it. ``cortexflow/__init__.py`` (the
public facade) is exempt.
"""

from __future__ import annotations

from test_import_graph import _modules, import_graph

#: Lowest first; a module may import only its own layer and those before it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("cortexflow.exceptions", "cortexflow._version", "cortexflow.utils", "cortexflow.registry")),
    ("data", ("cortexflow.data",)),
    ("evaluation", ("cortexflow.evaluation",)),
    ("models+training", ("cortexflow.models", "cortexflow.training")),
    ("semantic", ("cortexflow.semantic",)),
    ("methods", ("cortexflow.baselines", "cortexflow.priors", "cortexflow.methods")),
    ("reporting", ("cortexflow.reporting",)),
    ("benchmark", ("cortexflow.benchmark",)),
    ("cli", ("cortexflow.cli",)),
]
EXEMPT = {"cortexflow"}


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of ``module`` (the longest matching prefix)."""
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    if best is None:
        raise AssertionError(f"module {module} is in no layer of tests/test_layers.py")
    return best


def violations(graph: dict[str, set[str]]) -> list[str]:
    """``"a -> b (layer x -> higher layer y)"`` for every import that runs up a layer."""
    out = []
    for mod, deps in sorted(graph.items()):
        if mod in EXEMPT:
            continue
        for dep in sorted(deps):
            if dep in EXEMPT:
                continue
            if layer_of(dep) > layer_of(mod):
                out.append(f"{mod} -> {dep} ({LAYERS[layer_of(mod)][0]} -> {LAYERS[layer_of(dep)][0]})")
    return out


def test_every_module_is_in_a_layer():
    for mod in _modules():
        if mod not in EXEMPT:
            layer_of(mod)


def test_the_checker_finds_an_upward_import():
    assert violations({"cortexflow.data.x": {"cortexflow.benchmark.y"}, "cortexflow.benchmark.y": set()}) == [
        "cortexflow.data.x -> cortexflow.benchmark.y (data -> benchmark)"]
    assert violations({"cortexflow.cli.a": {"cortexflow.data.b"}}) == []


def test_no_import_runs_up_a_layer():
    bad = violations(import_graph())
    assert not bad, "imports that run up a layer:\n" + "\n".join(bad)
