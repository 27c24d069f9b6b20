"""The benchmark's view of the method registry (:mod:`cortexflow.methods`).

Methods are declared in the modules that define their estimators and listed by
:mod:`cortexflow.registry.methods`; estimators are built by
:func:`cortexflow.methods.build.make_estimator`. This module re-exports both
under the names the benchmark has always used.

>>> from cortexflow.benchmark import get_method
>>> get_method("ridge").name
'ridge'
"""

from __future__ import annotations

from cortexflow.methods.build import make_estimator
from cortexflow.registry.methods import (
    METHODS,
    REFERENCE_METHOD,
    MethodSpec,
    accepted_options,
    check_options,
    get_method,
    list_methods,
    load_methods,
    load_plugins,
    register_method,
    resolve_methods,
    suggest,
    unregister_method,
)

__all__ = [
    "MethodSpec",
    "METHODS",
    "register_method",
    "unregister_method",
    "get_method",
    "list_methods",
    "resolve_methods",
    "make_estimator",
    "load_methods",
    "load_plugins",
    "accepted_options",
    "check_options",
    "suggest",
    "REFERENCE_METHOD",
]
