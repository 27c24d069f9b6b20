"""MNE epochs (``-epo.fif`` and anything ``mne.read_epochs`` reads) as plain arrays.

:func:`read_mne_epochs` returns the fields of
:class:`~cortexflow.data.eeg.epochs.EEGEpochs` as a dict (this module does
not import the EEG package, which imports the readers);
:func:`cortexflow.data.eeg.registered.read_epochs_file` makes the
``EEGEpochs``.

Class labels come from the epochs' events: the class names are the keys of
``event_id`` ordered by their event code, and a trial's label is the index of
its class in that order. The trial ids (``event_ids``) are the events' sample
numbers (first column of ``epochs.events``). The data stay in MNE's unit
(volts for EEG, tesla or T/m for MEG), as float32.
"""

from __future__ import annotations

import inspect
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cortexflow.data.readers._optional import require
from cortexflow.exceptions import DataValidationError

__all__ = ["MNE_SUFFIXES", "is_mne_epochs_path", "read_mne_epochs", "epochs_from_mne"]

MNE_SUFFIXES = ("-epo.fif", "-epo.fif.gz", "_epo.fif", "_epo.fif.gz")


def is_mne_epochs_path(path: str | os.PathLike) -> bool:
    """True when the file name ends like MNE's epochs files (``-epo.fif``, ``_epo.fif``, ``.gz`` too)."""
    return str(path).lower().endswith(MNE_SUFFIXES)


def epochs_from_mne(epochs, *, picks: Sequence[str] | str | None = None, source: str = "<mne.Epochs>") -> dict[str, Any]:
    """The ``EEGEpochs`` fields of an ``mne.Epochs`` object (see :func:`read_mne_epochs`)."""
    if picks is not None:
        names = [picks] if isinstance(picks, str) else list(picks)
        missing = [p for p in names if p not in epochs.ch_names and p not in ("eeg", "meg", "mag", "grad", "data")]
        if missing:
            raise DataValidationError(f"{source}: channel(s) {missing} not in the file; channels: {list(epochs.ch_names)}")
        epochs = epochs.copy().pick(names)
    inv = {code: name for name, code in epochs.event_id.items()}
    codes = sorted(inv)
    class_names = tuple(inv[c] for c in codes)
    index = {c: i for i, c in enumerate(codes)}
    ev = np.asarray(epochs.events)
    unknown = sorted({int(c) for c in ev[:, 2]} - set(index))
    if unknown:
        raise DataValidationError(f"{source}: event code(s) {unknown} are not in the file's event_id {dict(epochs.event_id)}")
    labels = np.array([index[int(c)] for c in ev[:, 2]], dtype=np.int64)
    data = epochs.get_data(copy=True) if "copy" in _get_data_args(epochs) else epochs.get_data()
    return dict(
        data=np.asarray(data, dtype=np.float32), labels=labels, ch_names=tuple(epochs.ch_names),
        sfreq=float(epochs.info["sfreq"]), class_names=class_names, event_ids=ev[:, 0].astype(np.int64),
        tmin=float(epochs.tmin),
        metadata={"source": source, "format": "mne-epochs", "event_id": {k: int(v) for k, v in epochs.event_id.items()},
                  "ch_types": sorted(set(epochs.get_channel_types()))},
    )


def _get_data_args(epochs) -> tuple[str, ...]:
    return tuple(inspect.signature(epochs.get_data).parameters)


def read_mne_epochs(path: str | os.PathLike, *, picks: Sequence[str] | str | None = None) -> dict[str, Any]:
    """Read an MNE epochs file.

    Parameters
    ----------
    path : path-like
        ``sub01-epo.fif`` (or any file ``mne.read_epochs`` reads).
    picks : str or list of str, optional
        Channel names (or a channel type such as ``"eeg"``) to keep, in that order.

    Returns
    -------
    dict
        ``data`` (float32, n_epochs x n_channels x n_times), ``labels``,
        ``ch_names``, ``sfreq``, ``class_names``, ``event_ids``, ``tmin``,
        ``metadata``: the arguments of ``EEGEpochs``.

    Raises
    ------
    DataValidationError
        Missing or unreadable file, channels that are not in it, or events
        whose code is not in its ``event_id``.
    ImportError
        MNE is not installed (``pip install 'cortexflow[eeg]'``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"{path}: no such file")
    mne = require("mne", f"reading {path}")
    try:
        with warnings.catch_warnings():  # event ids used as sample numbers need not be in time order
            warnings.filterwarnings("ignore", message=".*not chronologically ordered.*")
            epochs = mne.read_epochs(str(path), preload=True, verbose="error")
    except Exception as exc:  # MNE raises ValueError, OSError, RuntimeError, KeyError for a bad file
        raise DataValidationError(
            f"{path}: cannot be read as MNE epochs ({type(exc).__name__}: {' '.join(str(exc).split())})"
        ) from exc
    return epochs_from_mne(epochs, picks=picks, source=str(path))
