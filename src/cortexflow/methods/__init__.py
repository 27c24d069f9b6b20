"""Methods: the registry (:mod:`~cortexflow.methods.registry`), typed options
(:mod:`~cortexflow.methods.options`) and the one layer that builds estimators
(:mod:`~cortexflow.methods.build`).

The registry is filled lazily: the first lookup imports the modules that
declare CortexFlow's methods (:data:`~cortexflow.methods.registry.BUILTIN_MODULES`).
"""

from cortexflow.methods.options import Option
from cortexflow.methods.registry import (
    METHODS,
    REFERENCE_METHOD,
    MethodSpec,
    accepted_options,
    check_options,
    checkpoint_kinds,
    get_method,
    list_methods,
    register_method,
    resolve_methods,
    unregister_method,
)

__all__ = [
    "Option",
    "METHODS",
    "REFERENCE_METHOD",
    "MethodSpec",
    "accepted_options",
    "check_options",
    "checkpoint_kinds",
    "get_method",
    "list_methods",
    "register_method",
    "resolve_methods",
    "unregister_method",
]
