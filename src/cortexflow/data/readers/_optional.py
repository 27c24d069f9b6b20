"""Lazy imports of the optional reader libraries, with the extra to install named in the error."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require", "EXTRAS"]

#: Extra of ``cortexflow`` that installs each optional module.
EXTRAS = {"nibabel": "nifti", "nilearn": "nifti", "h5py": "hdf5", "PIL": "images", "mne": "eeg"}


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise an ImportError naming the ``pip install 'cortexflow[...]'`` to run.

    Parameters
    ----------
    module : str
        Top-level module name (``"nibabel"``, ``"h5py"``, ``"PIL"``, ``"mne"``).
    feature : str
        What needed it (named in the message), e.g. ``"reading mask.nii.gz"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = EXTRAS.get(module.split(".")[0], "dev")
        raise ImportError(
            f"{feature} needs the optional package {module.split('.')[0]!r}, which is not installed; "
            f"install it with: pip install 'cortexflow[{extra}]'"
        ) from exc
