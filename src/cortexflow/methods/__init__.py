"""Methods: the registry (:mod:`~cortexflow.registry.methods`), typed options
(:mod:`~cortexflow.registry.options`) and the one layer that builds estimators
(:mod:`~cortexflow.methods.build`).

The registry is filled lazily: the first lookup imports the modules that
declare CortexFlow's methods (:data:`~cortexflow.registry.methods.BUILTIN_MODULES`).
"""

from cortexflow.registry.options import Option
from cortexflow.registry.methods import (
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
