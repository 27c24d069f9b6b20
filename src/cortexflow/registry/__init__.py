"""The method registry and its typed options (the core layer: every estimator module registers its method here).

:mod:`~cortexflow.registry.methods` holds the registry, :mod:`~cortexflow.registry.options` the typed
option schemas, :mod:`~cortexflow.registry.sklearn_notes` the reasons of known scikit-learn check
failures. The builder of estimators, which sits above the methods, is :mod:`cortexflow.methods.build`.
"""
