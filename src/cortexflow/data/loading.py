"""Load a registered dataset, or a user's own .mat/.npz file, into a typed object."""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from cortexflow.data.fetch import cached_sha256, fetch_dataset, verify_registered_file
from cortexflow.data.readers.arrays import check_data_file, is_hdf5, read_hdf5_arrays
from cortexflow.data.readers.mne_epochs import is_mne_epochs_path
from cortexflow.data.readers.nifti import is_nifti_path
from cortexflow.data.registry import DATASETS, DatasetInfo, did_you_mean
from cortexflow.data.grids import recover_grid
from cortexflow.data.spec import is_spec_path, read_spec_data
from cortexflow.data.validation import (
    check_orientation,
    check_same_rows,
    normalize_image_shape,
    validate_signals,
    validate_stimuli,
)
from cortexflow.exceptions import DataValidationError

__all__ = [
    "BrainDataset",
    "load_dataset",
    "read_arrays",
    "check_data_file",
    "check_case_variants",
    "select_signal_array",
    "REQUIRED_KEYS",
    "LABEL_KEYS",
    "SIGNAL_KEYS",
]

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("fmriTrn", "stimTrn", "fmriTest", "stimTest")
#: Optional class labels of a dataset file.
LABEL_KEYS = ("labelTrn", "labelTest")
#: Keys that may hold the signals of a new recording (``cortexflow reconstruct --input``), in this order.
SIGNAL_KEYS = ("fmriTest", "X", "fmri", "signals")
# Fewer training rows than this cannot say whether a feature varies across trials.
MIN_TRAIN_ROWS = 2
# What the first bytes of a file say it is.
_MAGIC = (
    (b"PK\x03\x04", "an .npz (zip) archive"),
    (b"PK\x05\x06", "an empty .npz (zip) archive"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (MATLAB v7.3)"),
    (b"MATLAB", "a MATLAB file"),
    (b"\x93NUMPY", "a .npy array"),
)


@dataclass
class BrainDataset:
    """Signals and stimuli of one dataset, split as its file defines.

    Attributes
    ----------
    name : str
        Registry name, or the file stem for a user's file.
    X_train, X_test : ndarray of float32, shape (n, n_features)
        Brain signals.
    Y_train, Y_test : ndarray of float32, shape (n, H, W) or (n, H, W, 3)
        Stimulus images in [0, 1], upright: grayscale (n, H, W) or RGB
        channel-last (n, H, W, 3); (28, 28) for the registered files, except
        ``miyawaki-10x10`` (10, 10).
    labels_train, labels_test : ndarray of int or None
        Class labels when the file has them.
    metadata : dict
        Source path, sha256, modality, pixel order, caveats, ...
    """

    name: str
    X_train: np.ndarray
    Y_train: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    labels_train: np.ndarray | None = None
    labels_test: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        """Number of signal features per row."""
        return int(self.X_train.shape[1])

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one stimulus image: ``(H, W)`` (grayscale) or ``(H, W, 3)`` (RGB)."""
        return tuple(int(v) for v in self.Y_train.shape[1:])

    @property
    def checksum(self) -> str:
        """sha256 of the source file (or of the arrays, when built in memory).

        For a dataset whose stimuli were turned into their native grid
        (``metadata["native_grid"]``, e.g. ``miyawaki-10x10``), the sha256 of
        the file's sha256 and that grid, so that results stores keyed by the
        checksum keep it apart from the same file at its stored size.
        """
        if "sha256" in self.metadata:
            grid = self.metadata.get("native_grid")
            if grid:
                return hashlib.sha256(f"{self.metadata['sha256']}:native_grid={list(grid)}".encode()).hexdigest()
            return self.metadata["sha256"]
        h = hashlib.sha256()
        for a in (self.X_train, self.Y_train, self.X_test, self.Y_test):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:
        return (
            f"BrainDataset(name={self.name!r}, train={self.X_train.shape}, test={self.X_test.shape}, "
            f"labels={'yes' if self.labels_train is not None else 'no'})"
        )


def _sniff(path: Path) -> str | None:
    """What the first bytes of ``path`` say it is, or None."""
    with open(path, "rb") as fh:
        head = fh.read(128)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if b"MATLAB" in head[:116]:  # v4 files have no text header; v5+ headers start with it after padding
        return "a MATLAB file"
    return None


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read the variables of a .mat (v4-v7) or .npz file, with a clear error for a bad file.

    Raises
    ------
    DataValidationError
        The path is missing, a folder or an empty file; its content is of
        another format than its suffix says (for example a .mat renamed to
        .npz); or it is corrupt.
    """
    path = check_data_file(path)
    suffix = path.suffix.lower()
    kind = _sniff(path)
    if suffix == ".npz" and kind is not None and "npz" not in kind:
        raise DataValidationError(f"{path}: not an .npz file (it looks like {kind}); rename it or convert it")
    if suffix != ".npz" and kind is not None and "npz" in kind:
        raise DataValidationError(
            f"{path}: not a MATLAB .mat file (it looks like {kind}); give it the .npz suffix"
        )
    if kind == "a .npy array":
        raise DataValidationError(
            f"{path}: is a single .npy array; a dataset file holds the named arrays {list(REQUIRED_KEYS)} "
            "(.mat, .npz or HDF5), or describe it (with its stimuli) in a spec file: see docs/datasets.md "
            "'Your own data'"
        )
    if suffix != ".npz" and is_hdf5(path):  # HDF5, or MATLAB v7.3 (transposed back to MATLAB's shapes)
        return read_hdf5_arrays(path)
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        data = scipy.io.loadmat(path)
    except (ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError, KeyError) as exc:
        kind = "an .npz archive" if suffix == ".npz" else "a MATLAB .mat file (v4-v7.2)"
        raise DataValidationError(
            f"{path}: cannot be read as {kind}; it is corrupt, truncated or of another format "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return {k: v for k, v in data.items() if not k.startswith("__")}


def check_case_variants(arrays: dict, keys, source: str, *, hint: str = "rename or remove one of them") -> None:
    """Refuse a file in which one of ``keys`` sits beside a key that differs from it only in case.

    ``FMRITRN`` beside ``fmriTrn`` is ambiguous: reading ``fmriTrn`` would
    silently ignore the other array.

    Raises
    ------
    DataValidationError
        Naming the file and both keys.
    """
    folded: dict[str, list[str]] = {}
    for k in arrays:
        folded.setdefault(str(k).lower(), []).append(str(k))
    for wanted in keys:
        names = folded.get(wanted.lower(), [])
        if len(names) > 1:
            raise DataValidationError(
                f"{source}: keys {' and '.join(repr(n) for n in sorted(names))} differ only in case, so which one "
                f"is {wanted!r} is ambiguous; {hint}"
            )


def _case_hint(arrays: dict, missing: list[str]) -> str:
    """``; found 'FMRITRN' (differs only in case from 'fmriTrn')`` for each missing key present in another case."""
    found = [f"{k!r} (differs only in case from {m!r})" for m in missing for k in arrays if str(k).lower() == m.lower()]
    return f"; found {', '.join(found)}: rename it" if found else ""


def select_signal_array(arrays: dict, source: str, key: str | None = None, *,
                        candidates: tuple[str, ...] = SIGNAL_KEYS, option: str = "--key") -> np.ndarray:
    """The signal array of a file of new recordings: ``key``, or the one candidate key the file holds.

    Parameters
    ----------
    arrays : dict of str to ndarray
        The file's variables (:func:`read_arrays`).
    source : str
        The file, named in messages.
    key : str, optional
        The variable to read; without it the file must hold exactly one of
        ``candidates`` (and no key that differs from one only in case).
    candidates : tuple of str
    option : str
        How the user chooses a key (named in messages).

    Raises
    ------
    DataValidationError
        ``key`` is not in the file; several candidates are (ambiguous: the
        message names them); keys that differ only in case; no candidate.
    """
    if key:
        if key in arrays:
            return arrays[key]
        raise DataValidationError(f"{source}: key {key!r} not found (keys present: {sorted(arrays)}); choose one "
                                  f"with {option}")
    check_case_variants(arrays, candidates, source, hint=f"choose one with {option}")
    found = [k for k in candidates if k in arrays]
    if len(found) > 1:
        raise DataValidationError(f"{source}: holds several signal arrays ({', '.join(found)}), so which one to read "
                                  f"is ambiguous; choose one with {option}")
    if found:
        return arrays[found[0]]
    raise DataValidationError(f"{source}: none of the keys {list(candidates)} found (keys present: {sorted(arrays)}); "
                              f"choose one with {option}")


def _labels(arrays: dict, key: str, n: int, source: str) -> np.ndarray | None:
    if key not in arrays:
        return None
    lab = np.asarray(arrays[key]).reshape(-1)
    if lab.shape[0] != n:
        raise DataValidationError(f"{source}: key {key!r} has {lab.shape[0]} labels for {n} rows")
    if not np.issubdtype(lab.dtype, np.number):
        raise DataValidationError(f"{source}: key {key!r} holds non-numeric labels of dtype {lab.dtype}")
    return lab.astype(np.int64)


def load_dataset(
    name_or_path: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    pixel_order: str | None = None,
    stimulus_scale: float | None = None,
    allow_degenerate: bool = False,
    download: bool = True,
    image_shape: tuple[int, ...] | None = None,
) -> BrainDataset:
    """Load a dataset by registry name or from a .mat/.npz path.

    Parameters
    ----------
    name_or_path : str or path-like
        A registered name (``"vangerven"``, ``"miyawaki"``, ...) or a file
        holding ``fmriTrn``, ``stimTrn``, ``fmriTest``, ``stimTest`` and
        optionally ``labelTrn``, ``labelTest`` (.mat v4-7.3, .npz, .h5/.hdf5), or a data set spec
        (``.toml``, see :mod:`cortexflow.data.spec`; ``pixel_order`` and ``stimulus_scale`` are then
        declared in the spec).
    data_dir : path-like, optional
        Data folder for registered datasets (see :func:`get_data_dir`).
    pixel_order : {"C", "F"}, optional
        Memory order of flat stimulus rows. Registered datasets know theirs;
        a user's file defaults to ``"C"`` (row-major).
    stimulus_scale : float, optional
        Value of white (a finite number > 0). Registered datasets know theirs;
        for a user's file it is inferred from the data type and range (see
        :func:`cortexflow.data.validation.infer_stimulus_scale`), and a range
        that cannot be explained is refused.
    allow_degenerate : bool
        Accept signals whose rows are all identical (format tests only).
    download : bool
        Fetch a registered dataset that is not present. Either way, a
        registered file's sha256 is verified before it is read.
    image_shape : tuple of int, optional
        ``(H, W)`` or ``(H, W, 3)`` of one stimulus. For a user's file whose
        stimuli are flat rows it says how a row is shaped (without it, rows
        are square grayscale images of side sqrt(n_pixels)); for image
        arrays it is the shape they must have. Stimuli may be (n, H, W),
        (n, H, W, C) or channel-first (n, C, H, W) with C = 1 or 3 and H, W
        in [8, 256] (see :func:`cortexflow.data.validation.validate_stimuli`).
        A registered dataset knows its shape; a different one is refused
        (miyawaki's native 10 x 10 grid is the registered dataset
        ``miyawaki-10x10``).

    Returns
    -------
    BrainDataset

    Raises
    ------
    DataValidationError
        For every defect listed in :mod:`cortexflow.data.validation` and for
        unreadable files.
    """
    info: DatasetInfo | None = None
    key = str(name_or_path)
    if not key.strip():
        raise DataValidationError(
            f"empty dataset name; give a registered dataset ({', '.join(sorted(DATASETS))}) or the path of a "
            ".mat/.npz file"
        )
    if key in DATASETS:
        info = DATASETS[key]
        if info.modality == "eeg-raw":
            raise DataValidationError(
                f"dataset {key!r} is a raw EEG recording, not a .mat/.npz dataset file: read it with "
                f"cortexflow.data.eeg.load_eeg({key!r}), evaluate it with `cortexflow eeg evaluate --dataset {key}`, "
                f"or turn it into a dataset file with `cortexflow eeg mindbigdata {key} --out FILE.npz`"
            )
        # Both ways verify the file's sha256 (cached per path, size and mtime), so another file placed
        # under the registered name is refused rather than loaded as this dataset.
        path = fetch_dataset(key, data_dir) if download else verify_registered_file(key, data_dir)
        name = info.name
        pixel_order = pixel_order or info.pixel_order
        stimulus_scale = info.stimulus_scale if stimulus_scale is None else stimulus_scale
        image_shape = _registered_image_shape(info, image_shape)
    else:
        path = Path(name_or_path)
        if not path.exists() and not path.is_symlink():
            raise DataValidationError(
                f"{key!r} is neither a registered dataset{did_you_mean(key, DATASETS)} "
                f"({', '.join(sorted(DATASETS))}) nor an existing file"
            )
        if is_nifti_path(path) or is_mne_epochs_path(path):
            raise DataValidationError(
                f"{path}: a {'NIfTI image' if is_nifti_path(path) else 'file of MNE epochs'} holds signals only; "
                "describe it with its mask, stimuli and trials in a spec file (.toml): see docs/datasets.md "
                "'Your own data'")
        if is_spec_path(path):
            if pixel_order is not None or stimulus_scale is not None:
                raise DataValidationError(f"{path}: a spec declares its stimuli's pixel_order and scale in "
                                          "[stimuli]; pixel_order/stimulus_scale arguments do not apply to it")
            return _dataset_from_spec(path, allow_degenerate=allow_degenerate)
        name = path.stem
        pixel_order = pixel_order or "C"
    source = str(path)
    arrays = read_arrays(path)
    check_case_variants(arrays, REQUIRED_KEYS + LABEL_KEYS, source)
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise DataValidationError(
            f"{source}: missing key(s) {missing}; a dataset file must hold {list(REQUIRED_KEYS)} "
            f"(found {sorted(arrays)}){_case_hint(arrays, missing)}"
        )
    for sig, stim in (("fmriTrn", "stimTrn"), ("fmriTest", "stimTest")):
        if np.ndim(arrays[stim]) >= 1:  # signals stored (n_features, n_rows): say so, not "wrong feature count"
            check_orientation(arrays[sig], int(np.shape(arrays[stim])[0]), source=source, key=sig, rows_key=stim)
    X_train = validate_signals(arrays["fmriTrn"], source=source, key="fmriTrn", allow_degenerate=allow_degenerate)
    if len(X_train) < MIN_TRAIN_ROWS:
        raise DataValidationError(
            f"{source}: key 'fmriTrn' has {len(X_train)} row(s); a training split needs at least "
            f"{MIN_TRAIN_ROWS} rows (one per trial)"
        )
    X_test = validate_signals(
        arrays["fmriTest"], source=source, key="fmriTest", n_features=X_train.shape[1], allow_degenerate=allow_degenerate
    )
    if not allow_degenerate and np.array_equal(X_train.min(axis=0), X_train.max(axis=0)):
        raise DataValidationError(f"{source}: key 'fmriTrn' is constant across all rows")
    Y_train = validate_stimuli(arrays["stimTrn"], source=source, key="stimTrn", scale=stimulus_scale,
                               pixel_order=pixel_order, image_shape=image_shape)
    Y_test = validate_stimuli(arrays["stimTest"], source=source, key="stimTest", scale=stimulus_scale,
                              pixel_order=pixel_order, image_shape=image_shape or Y_train.shape[1:])
    if info is not None and info.native_shape is not None:
        Y_train = recover_grid(Y_train, info.native_shape, source=source, key="stimTrn")
        Y_test = recover_grid(Y_test, info.native_shape, source=source, key="stimTest")
    check_same_rows(X_train, Y_train, source=source, key_a="fmriTrn", key_b="stimTrn")
    check_same_rows(X_test, Y_test, source=source, key_a="fmriTest", key_b="stimTest")
    labels_train = _labels(arrays, "labelTrn", len(X_train), source)
    labels_test = _labels(arrays, "labelTest", len(X_test), source)
    metadata: dict[str, Any] = {
        "name": name,
        "source": source,
        "sha256": cached_sha256(path),
        "pixel_order": pixel_order,
        "image_shape": list(Y_train.shape[1:]),
        **({"native_grid": list(info.native_shape)} if info is not None and info.native_shape is not None else {}),
        "modality": info.modality if info else "unknown",
        "registered": info is not None,
        "caveats": list(info.caveats) if info else [],
        "format_tests_only": bool(info.format_tests_only) if info else False,
    }
    if info is not None and info.format_tests_only:
        logger.warning("dataset %r is for format and pipeline tests only: %s", name, "; ".join(info.caveats))
    return BrainDataset(name, X_train, Y_train, X_test, Y_test, labels_train, labels_test, metadata)


def _registered_image_shape(info: DatasetInfo, image_shape) -> tuple[int, ...]:
    """The stored image shape of a registered dataset's file; refuse an ``image_shape`` that is not its own."""
    loaded = tuple(info.native_shape or info.image_shape)
    if image_shape is not None:
        wanted = normalize_image_shape(image_shape, source=f"dataset {info.name!r}")
        if wanted != loaded:
            variants = [d.name for d in DATASETS.values() if d.directory == info.directory and d.name != info.name
                        and d.native_shape is not None and tuple(d.native_shape) == wanted]
            hint = f"; load the registered dataset {variants[0]!r} for its {wanted} grid" if variants else ""
            raise DataValidationError(
                f"dataset {info.name!r} has images of shape {loaded}; image_shape={tuple(image_shape)!r} is not "
                f"its shape{hint}"
            )
    return tuple(info.image_shape)


def _dataset_from_spec(path: Path, *, allow_degenerate: bool = False) -> BrainDataset:
    """A :class:`BrainDataset` from a spec file (:mod:`cortexflow.data.spec`); without a split column every
    trial is a training row and the test arrays have 0 rows (``metadata["has_official_split"]`` is False)."""
    d = read_spec_data(path, allow_degenerate=allow_degenerate)
    test = d.is_test if d.is_test is not None else np.zeros(len(d.X), dtype=bool)
    tr, te = np.flatnonzero(~test), np.flatnonzero(test)
    if len(tr) < MIN_TRAIN_ROWS:
        raise DataValidationError(f"{path}: {len(tr)} training row(s); a training split needs at least {MIN_TRAIN_ROWS}")
    md = dict(d.metadata, train_rows=tr, test_rows=te)
    for part, rows in (("train", tr), ("test", te)):
        if d.groups is not None:
            md[f"groups_{part}"] = d.groups[rows]
        if d.trial_ids is not None:
            md[f"trial_ids_{part}"] = [d.trial_ids[i] for i in rows]
    lab = (None, None) if d.labels is None else (d.labels[tr], d.labels[te])
    return BrainDataset(d.name, d.X[tr], d.Y[tr], d.X[te], d.Y[te], lab[0], lab[1], md)
