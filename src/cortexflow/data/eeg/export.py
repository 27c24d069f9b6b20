"""Write epoched EEG and its class images as a CortexFlow dataset file (.npz).

The file has the keys every dataset file has (``fmriTrn``, ``stimTrn``,
``fmriTest``, ``stimTest``, ``labelTrn``, ``labelTest``; the signal rows are
the epochs flattened channel after channel) plus ``eeg_n_channels``,
``eeg_n_times``, ``eeg_sfreq`` and ``eeg_ch_names``. ``load_dataset`` and
``cortexflow benchmark`` read it like any other dataset; the EEG methods
(``cccv1-eeg-*``) get their epoch shape back with the option
``n_channels``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from cortexflow.data.eeg.epochs import EEGEpochs, targets_for_labels
from cortexflow.exceptions import DataValidationError
from cortexflow.utils.io import atomic_write_with

__all__ = ["save_eeg_dataset", "check_eeg_output"]

logger = logging.getLogger(__name__)


def save_eeg_dataset(
    epochs: EEGEpochs,
    images: np.ndarray,
    path: str | os.PathLike,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Split ``epochs`` (stratified by class) and save them with their target images.

    Parameters
    ----------
    epochs : EEGEpochs
        Trials with labels ``0..len(images)-1`` (drop random trials first).
    images : ndarray (n_classes, 28, 28)
        Target image of each class, in [0, 1].
    path : path-like
        Destination ``.npz`` (written atomically).
    test_fraction : float
        Share of trials in the official test split.
    seed : int
        Seed of the split.
    overwrite : bool
        Replace an existing file at ``path``; by default an existing file (a
        user's) is never replaced.

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise DataValidationError(f"{path}: the EEG dataset file must end in .npz")
    if not 0 < test_fraction < 1:
        raise DataValidationError(f"test_fraction must be in (0, 1); got {test_fraction}")
    check_eeg_output(path, overwrite=overwrite)
    if epochs.n_epochs < 2:
        raise DataValidationError(
            f"only {epochs.n_epochs} usable trial(s) left; a dataset file needs at least 2 (one for training, one "
            "for testing): use a longer recording, or loosen --reject / --max-per-class"
        )
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.min() < 0 or images.max() > 1:
        raise DataValidationError(f"images must be (n_classes, 28, 28) in [0, 1]; got shape {images.shape}")
    Y = targets_for_labels(epochs.labels, images)
    counts = np.bincount(epochs.labels, minlength=len(images))
    n_classes = int((counts > 0).sum())
    n_test = int(np.ceil(test_fraction * epochs.n_epochs))
    ok = counts[counts > 0].min() >= 2 and n_classes <= n_test <= epochs.n_epochs - n_classes
    stratify = epochs.labels if ok else None
    if not ok:
        logger.warning("save_eeg_dataset: too few trials to stratify %d classes; the split is not stratified", n_classes)
    tr, te = train_test_split(np.arange(epochs.n_epochs), test_size=test_fraction, random_state=seed,
                              stratify=stratify)
    X = epochs.data.reshape(epochs.n_epochs, -1)
    arrays = {
        "fmriTrn": X[tr], "stimTrn": Y[tr].reshape(len(tr), -1), "labelTrn": epochs.labels[tr],
        "fmriTest": X[te], "stimTest": Y[te].reshape(len(te), -1), "labelTest": epochs.labels[te],
        "eeg_n_channels": np.int64(epochs.n_channels), "eeg_n_times": np.int64(epochs.n_times),
        "eeg_sfreq": np.float64(epochs.sfreq), "eeg_ch_names": np.array(epochs.ch_names),
        "eeg_class_names": np.array(epochs.class_names),
    }
    return atomic_write_with(path, lambda fh: np.savez(fh, **arrays), replace=overwrite)


def check_eeg_output(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Check the destination of :func:`save_eeg_dataset` before any work (called again when it writes).

    Raises
    ------
    DataValidationError
        Not ``.npz``, a link or a folder, or an existing file while ``overwrite`` is off.
    """
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise DataValidationError(f"{path}: the EEG dataset file must end in .npz")
    if path.is_symlink():
        raise DataValidationError(f"{path} is a symbolic link; refusing to write through it (remove the link)")
    if path.is_dir():
        raise DataValidationError(f"{path} is a folder; --out must name a .npz file")
    if path.exists() and not overwrite:
        raise DataValidationError(f"{path} exists; refusing to replace it (choose another --out, or pass --overwrite)")
    return path
