"""Registered raw EEG recordings (modality ``"eeg-raw"`` in :mod:`cortexflow.data.registry`).

``load_eeg("mindbigdata-mw-sample")`` fetches the file (or finds it in the
data folder), verifies its sha256 and reads it with
:func:`~cortexflow.data.eeg.mindbigdata.read_mindbigdata`; a path to a
MindBigData file (text format or spreadsheet export) works the same way
without the checksum. :func:`describe_eeg` is what ``cortexflow datasets
info`` prints for such a data set.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from cortexflow.data.eeg.epochs import EEGEpochs
from cortexflow.data.eeg.mindbigdata import read_mindbigdata
from cortexflow.data.fetch import fetch_dataset, verify_registered_file
from cortexflow.data.readers.mne_epochs import is_mne_epochs_path, read_mne_epochs
from cortexflow.data.registry import DATASETS, get_dataset_info
from cortexflow.data.spec import is_spec_path, read_spec_epochs
from cortexflow.exceptions import DataValidationError

__all__ = ["raw_eeg_datasets", "is_raw_eeg_dataset", "load_eeg", "describe_eeg", "read_epochs_file"]


def read_epochs_file(path: str | os.PathLike, *, picks=None) -> EEGEpochs:
    """MNE epochs (``-epo.fif``) as :class:`EEGEpochs` (see :func:`cortexflow.data.readers.read_mne_epochs`)."""
    return EEGEpochs(**read_mne_epochs(path, picks=picks))


def raw_eeg_datasets() -> list[str]:
    """Names of the registered raw EEG recordings, sorted."""
    return sorted(name for name, info in DATASETS.items() if info.modality == "eeg-raw")


def is_raw_eeg_dataset(name: str) -> bool:
    """True when ``name`` is a registered raw EEG recording."""
    info = DATASETS.get(str(name))
    return info is not None and info.modality == "eeg-raw"


def load_eeg(
    name_or_path: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    **read_kwargs: Any,
) -> EEGEpochs:
    """Read a registered raw EEG recording by name, or a MindBigData file by path.

    Parameters
    ----------
    name_or_path : str or path-like
        A name from :func:`raw_eeg_datasets` (``"mindbigdata-mw-sample"``),
        the path of a MindBigData ``.txt``/``.txt.gz``/``.csv`` file, of MNE
        epochs (``sub01-epo.fif``, read with :func:`mne.read_epochs`), or of
        a spec file (``.toml``) whose signals are MNE epochs (see
        :func:`cortexflow.data.spec.read_spec_epochs`).
    data_dir : path-like, optional
        Data folder of registered recordings (see :func:`cortexflow.data.fetch.get_data_dir`).
    download : bool
        Fetch a registered recording that is not present (checksum-verified).
        With ``False`` the file must be there, and its checksum is verified too.
    **read_kwargs
        Passed to :func:`read_mindbigdata` (``n_times``, ``max_per_class``, ...);
        for MNE epochs and spec files only ``device=None`` is accepted (and ignored).

    Returns
    -------
    EEGEpochs
        ``metadata`` gains ``name``, ``registered`` and, for a registered
        recording, ``sha256`` and ``checksum``.

    Raises
    ------
    DataValidationError
        Neither a registered raw EEG name nor an existing file, or a bad file.
    ChecksumError
        A registered file whose sha256 differs from the registry's.
    """
    key = str(name_or_path)
    if key in DATASETS:
        info = get_dataset_info(key)
        if info.modality != "eeg-raw":
            raise DataValidationError(
                f"dataset {key!r} is a {info.modality} dataset file, not a raw EEG recording; raw EEG data sets: "
                f"{', '.join(raw_eeg_datasets())}"
            )
        path = fetch_dataset(key, data_dir) if download else verify_registered_file(key, data_dir)
        ep = read_mindbigdata(path, **read_kwargs)
        ep.metadata.update(name=key, registered=True, sha256=info.sha256, checksum="ok")
        return ep
    path = Path(name_or_path)
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "not an existing file"
        raise DataValidationError(
            f"{key!r} is neither a registered raw EEG data set ({', '.join(raw_eeg_datasets())}) nor a "
            f"MindBigData file: it is {what}"
        )
    if is_mne_epochs_path(path) or is_spec_path(path):
        given = sorted(k for k, v in read_kwargs.items() if v is not None)
        if given:
            raise DataValidationError(f"{path}: option(s) {given} apply to MindBigData files, not to MNE epochs or "
                                      "spec files (choose channels with picks = [...] in the spec)")
        if is_spec_path(path):
            return EEGEpochs(**read_spec_epochs(path))
        ep = read_epochs_file(path)
        ep.metadata.update(name=re.sub(r"[-_]epo\.fif(\.gz)?$", "", path.name, flags=re.I),
                           registered=False)
        return ep
    ep = read_mindbigdata(path, **read_kwargs)
    ep.metadata.update(name=path.stem, registered=False)
    return ep


def describe_eeg(ep: EEGEpochs) -> dict[str, Any]:
    """Summary of a raw EEG recording, as ``cortexflow datasets info`` prints it."""
    md = ep.metadata
    info = DATASETS.get(md.get("name", "")) if md.get("registered") else None
    out: dict[str, Any] = {
        "name": md.get("name"),
        "source": md.get("source"),
        "checksum": md.get("checksum", "unregistered"),
        "modality": "eeg-raw",
        "format": md.get("format"),
        "device": md.get("device_name") or md.get("device"),
        "n_epochs": ep.n_epochs,
        "n_channels": ep.n_channels,
        "ch_names": list(ep.ch_names),
        "n_times": ep.n_times,
        "sfreq": ep.sfreq,
        "class_counts": {k: ep.class_counts()[k] for k in sorted(ep.class_counts())},
        "n_dropped": ep.n_dropped,
        "dropped": {k: v for k, v in ep.dropped.items() if v},
        "blank_lines": md.get("blank_lines", 0),
        "size_mismatch_lines": md.get("size_mismatch_lines", 0),
        "size_mismatch": md.get("size_mismatch"),
        "caveats": list(info.caveats) if info else [],
    }
    if info:
        out.update(sha256=info.sha256, url=info.url, citation=info.citation, licence=info.licence)
    return out
