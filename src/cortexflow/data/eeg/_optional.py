"""Lazy imports of the optional EEG dependencies (the ``cortexflow[eeg]`` extra)."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require", "EXTRA_HINT"]

EXTRA_HINT = "pip install 'cortexflow[eeg]'"


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise an ImportError that names the extra to install.

    Parameters
    ----------
    module : str
        ``"mne"`` or ``"moabb"``.
    feature : str
        What needed it (named in the message).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{feature} needs the optional package {module!r}, which is not installed; "
            f"install the EEG extra with: {EXTRA_HINT}"
        ) from exc
