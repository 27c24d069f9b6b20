"""Arrays from ``.npy``, ``.npz``, ``.mat`` (v4-7.2 and v7.3) and HDF5 files.

``.npy`` files are memory-mapped (``np.load(..., mmap_mode="r")``): nothing is
read until rows are used. HDF5 and MATLAB v7.3 files are opened with h5py and
only the dataset asked for is read. MATLAB writes arrays column-major, so an
array read from a v7.3 file is transposed back to the shape MATLAB (and
:func:`scipy.io.loadmat`) shows; a plain HDF5 file is returned as stored.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import scipy.io

from cortexflow.data.readers._optional import require
from cortexflow.exceptions import DataValidationError

__all__ = ["ARRAY_SUFFIXES", "HDF5_SUFFIXES", "is_hdf5", "is_mat73", "list_keys", "read_array", "read_hdf5_arrays"]

ARRAY_SUFFIXES = (".npy", ".npz", ".mat", ".h5", ".hdf5", ".hdf")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def check_data_file(path: str | os.PathLike) -> Path:
    """Raise a clear :class:`DataValidationError` unless ``path`` is a non-empty regular file."""
    if isinstance(path, str) and not path.strip():
        raise DataValidationError("empty file name: give a registered dataset name or the path of a .mat/.npz file")
    path = Path(path)
    if path.is_dir():
        raise DataValidationError(f"{path}: is a directory, not a data file")
    if not path.exists():
        raise DataValidationError(f"{path}: no such file")
    if not path.is_file():
        raise DataValidationError(f"{path}: is not a regular file")
    if path.stat().st_size == 0:
        raise DataValidationError(f"{path}: is empty (0 bytes)")
    return path


_check_file = check_data_file


def is_mat73(path: str | os.PathLike) -> bool:
    """True when ``path`` is a MATLAB v7.3 file (an HDF5 file with MATLAB's 512-byte header)."""
    with open(path, "rb") as fh:
        head = fh.read(520)
    return head.startswith(b"MATLAB 7.3") or (head[:6] == b"MATLAB" and head[512:520] == _HDF5_MAGIC)


def is_hdf5(path: str | os.PathLike) -> bool:
    """True when ``path`` is an HDF5 file (plain, or MATLAB v7.3), judged by its bytes."""
    with open(path, "rb") as fh:
        head = fh.read(520)
    return head.startswith(_HDF5_MAGIC) or head[512:520] == _HDF5_MAGIC


def _h5_datasets(h5file) -> list[str]:
    names: list[str] = []
    h5file.visititems(lambda name, obj: names.append(name) if hasattr(obj, "shape") and hasattr(obj, "dtype") else None)
    return sorted(n for n in names if not n.startswith("#"))  # MATLAB's "#refs#" group holds cell contents


def list_keys(path: str | os.PathLike) -> list[str]:
    """Names of the arrays in a file (dataset paths for HDF5; ``[]`` for a ``.npy``)."""
    path = _check_file(Path(path))
    if path.suffix.lower() == ".npy":
        return []
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return sorted(z.files)
    if is_hdf5(path):
        h5py = require("h5py", f"reading {path}")
        with h5py.File(path, "r") as f:
            return _h5_datasets(f)
    try:
        return sorted(k for k, *_ in scipy.io.whosmat(path))
    except (ValueError, TypeError, OSError, NotImplementedError) as exc:
        raise DataValidationError(f"{path}: cannot be read as a MATLAB .mat file ({type(exc).__name__}: {exc})") from exc


def _h5_read(f, key: str, path: Path, mat73: bool) -> np.ndarray:
    if key not in f:
        raise DataValidationError(f"{path}: no dataset {key!r}; datasets in the file: {_h5_datasets(f)}")
    ds = f[key]
    if not hasattr(ds, "shape"):
        raise DataValidationError(f"{path}: {key!r} is an HDF5 group, not a dataset; datasets: {_h5_datasets(f)}")
    if ds.dtype.kind == "O" or ds.dtype.kind == "V":
        raise DataValidationError(
            f"{path}: dataset {key!r} has dtype {ds.dtype} (references, cells or compound values); "
            "expected a numeric array"
        )
    arr = ds[()]
    arr = np.asarray(arr)
    return arr.T if mat73 and arr.ndim > 1 else arr


def read_hdf5_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every numeric dataset at the root of an HDF5 or MATLAB v7.3 file (v7.3 arrays transposed to MATLAB's shape)."""
    path = _check_file(Path(path))
    h5py = require("h5py", f"reading {path}")
    mat73 = is_mat73(path)
    try:
        with h5py.File(path, "r") as f:
            return {k: _h5_read(f, k, path, mat73) for k in f.keys()
                    if hasattr(f[k], "shape") and f[k].dtype.kind not in "OV"}
    except OSError as exc:
        raise DataValidationError(f"{path}: cannot be read as an HDF5 file ({exc})") from exc


def read_array(path: str | os.PathLike, key: str | None = None, *, mmap: bool = True) -> np.ndarray:
    """One array from a file.

    Parameters
    ----------
    path : path-like
        ``.npy`` (``key`` must be omitted), ``.npz``, ``.mat`` (v4-7.2 or v7.3)
        or HDF5 (``.h5``/``.hdf5``; the format is judged by the file's bytes).
    key : str, optional
        Variable name (``.npz``/``.mat``) or dataset path inside an HDF5 file
        (``"betas/session1"``). Optional when the file holds one array.
    mmap : bool
        Memory-map a ``.npy`` file (read-only) instead of reading it.

    Returns
    -------
    ndarray
        As stored (dtype kept); a ``numpy.memmap`` for ``.npy`` with ``mmap``.

    Raises
    ------
    DataValidationError
        Missing or empty file, a key that is not in the file (the message lists
        those that are), or an unreadable file.
    """
    path = _check_file(Path(path))
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if key:
            raise DataValidationError(f"{path}: a .npy file holds one array; remove key {key!r}")
        try:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataValidationError(f"{path}: cannot be read as a .npy array ({exc})") from exc
    if is_hdf5(path):
        h5py = require("h5py", f"reading {path}")
        try:
            with h5py.File(path, "r") as f:
                if key is None:
                    names = _h5_datasets(f)
                    if len(names) != 1:
                        raise DataValidationError(f"{path}: give the dataset to read with key; datasets: {names}")
                    key = names[0]
                return _h5_read(f, key, path, is_mat73(path))
        except OSError as exc:
            raise DataValidationError(f"{path}: cannot be read as an HDF5 file ({exc})") from exc
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files} if key is None else None
                if key is not None:
                    if key not in z.files:
                        raise DataValidationError(f"{path}: no key {key!r}; keys in the file: {sorted(z.files)}")
                    return z[key]
        else:
            arrays = {k: v for k, v in scipy.io.loadmat(path, variable_names=[key] if key else None).items()
                      if not k.startswith("__")}
    except (ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
        kind = "an .npz archive" if suffix == ".npz" else "a MATLAB .mat file"
        raise DataValidationError(f"{path}: cannot be read as {kind} ({type(exc).__name__}: {exc})") from exc
    if key is not None:
        if key not in arrays:
            raise DataValidationError(f"{path}: no key {key!r}; keys in the file: {list_keys(path)}")
        return np.asarray(arrays[key])
    if len(arrays) != 1:
        raise DataValidationError(f"{path}: give the array to read with key; keys in the file: {sorted(arrays)}")
    return np.asarray(next(iter(arrays.values())))
