"""``EEGEpochs``: the one container that every EEG reader of CortexFlow returns."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from cortexflow.exceptions import DataValidationError

__all__ = ["EEGEpochs", "concatenate_epochs", "targets_for_labels"]


@dataclass
class EEGEpochs:
    """Epoched EEG with one class label per trial.

    Attributes
    ----------
    data : ndarray of float32, shape (n_epochs, n_channels, n_times)
        The signals, in the unit of the source (microvolts or device units for
        MindBigData, volts for MNE objects).
    labels : ndarray of int64, shape (n_epochs,)
        Class index of each trial: ``class_names[labels[i]]`` names it. For
        MindBigData the index is the digit itself; ``-1`` marks a random
        (no-stimulus) trial, which has no class name.
    ch_names : tuple of str
        Channel names, in the order of ``data``'s second axis.
    sfreq : float
        Sampling rate in Hz.
    class_names : tuple of str
        Name of each class index (``"0"``..``"9"`` or the letters).
    event_ids : ndarray of int64, shape (n_epochs,)
        Event id of each trial in its source (MindBigData ``[event]`` field,
        sample index of the MNE event for Crell).
    n_dropped : int
        Trials dropped for being incomplete (missing channels, too short or
        inconsistent); the reasons are counted in ``dropped``.
    dropped : dict of str to int
        Counts of dropped trials (or skipped lines) by reason.
    groups : ndarray of int64 or None
        Optional recording/run index of each trial (for grouped splits).
    tmin : float
        Time of the first sample relative to the event, in seconds.
    metadata : dict
        Source, device, and anything else a reader wants to record.
    """

    data: np.ndarray
    labels: np.ndarray
    ch_names: tuple[str, ...]
    sfreq: float
    class_names: tuple[str, ...]
    event_ids: np.ndarray
    n_dropped: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    groups: np.ndarray | None = None
    tmin: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.data = np.asarray(self.data, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.event_ids = np.asarray(self.event_ids, dtype=np.int64).reshape(-1)
        self.ch_names = tuple(self.ch_names)
        self.class_names = tuple(self.class_names)
        self.sfreq = float(self.sfreq)
        if self.data.ndim != 3:
            raise DataValidationError(f"EEGEpochs.data has shape {self.data.shape}; expected (n_epochs, n_channels, n_times)")
        n, c, _ = self.data.shape
        if len(self.labels) != n or len(self.event_ids) != n:
            raise DataValidationError(
                f"EEGEpochs: {n} epochs but {len(self.labels)} labels and {len(self.event_ids)} event ids"
            )
        if len(self.ch_names) != c:
            raise DataValidationError(f"EEGEpochs: {c} channels in data but {len(self.ch_names)} channel names")
        if self.groups is not None:
            self.groups = np.asarray(self.groups, dtype=np.int64).reshape(-1)
            if len(self.groups) != n:
                raise DataValidationError(f"EEGEpochs: {n} epochs but {len(self.groups)} group ids")
        if self.sfreq <= 0:
            raise DataValidationError(f"EEGEpochs.sfreq must be positive; got {self.sfreq}")

    # ------------------------------------------------------------ accessors
    @property
    def n_epochs(self) -> int:
        """Number of trials."""
        return int(self.data.shape[0])

    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return int(self.data.shape[1])

    @property
    def n_times(self) -> int:
        """Samples per trial."""
        return int(self.data.shape[2])

    @property
    def times(self) -> np.ndarray:
        """Time of each sample relative to the event, in seconds."""
        return self.tmin + np.arange(self.n_times) / self.sfreq

    @property
    def label_names(self) -> np.ndarray:
        """Class name of each trial (``""`` for label -1)."""
        names = np.array(list(self.class_names) + [""], dtype=object)
        return names[np.where(self.labels >= 0, self.labels, len(self.class_names))]

    def class_counts(self) -> dict[str, int]:
        """Number of trials per class name (``"random"`` for label -1)."""
        out: dict[str, int] = {}
        for lab in self.labels:
            key = self.class_names[lab] if lab >= 0 else "random"
            out[key] = out.get(key, 0) + 1
        return out

    def subset(self, index) -> "EEGEpochs":
        """A copy holding only the trials selected by ``index`` (mask or indices)."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return replace(
            self,
            data=self.data[index],
            labels=self.labels[index],
            event_ids=self.event_ids[index],
            groups=None if self.groups is None else self.groups[index],
            dropped=dict(self.dropped),
            metadata=dict(self.metadata),
        )

    def with_data(self, data: np.ndarray, *, sfreq: float | None = None, tmin: float | None = None) -> "EEGEpochs":
        """A copy with new signals (same trials), e.g. after preprocessing."""
        return replace(
            self,
            data=data,
            sfreq=self.sfreq if sfreq is None else sfreq,
            tmin=self.tmin if tmin is None else tmin,
            dropped=dict(self.dropped),
            metadata=dict(self.metadata),
        )

    def __repr__(self) -> str:
        return (
            f"EEGEpochs(n_epochs={self.n_epochs}, n_channels={self.n_channels}, n_times={self.n_times}, "
            f"sfreq={self.sfreq:g}, classes={len(self.class_names)}, n_dropped={self.n_dropped})"
        )


def concatenate_epochs(parts: list[EEGEpochs]) -> EEGEpochs:
    """Stack several :class:`EEGEpochs` with the same channels, rate and length.

    The ``groups`` of the result number the parts 0, 1, ... unless every part
    already has groups (then they are kept). Drop counts are summed.
    """
    if not parts:
        raise DataValidationError("concatenate_epochs: no parts given")
    first = parts[0]
    for i, p in enumerate(parts[1:], 1):
        if p.ch_names != first.ch_names or p.sfreq != first.sfreq or p.n_times != first.n_times:
            raise DataValidationError(
                f"concatenate_epochs: part {i} has channels/sfreq/n_times {len(p.ch_names)}/{p.sfreq}/{p.n_times}, "
                f"part 0 has {len(first.ch_names)}/{first.sfreq}/{first.n_times}; they must match"
            )
        if p.class_names != first.class_names:
            raise DataValidationError(f"concatenate_epochs: part {i} has other class names than part 0")
    if all(p.groups is not None for p in parts):
        groups = np.concatenate([p.groups for p in parts])
    else:
        groups = np.concatenate([np.full(p.n_epochs, i, dtype=np.int64) for i, p in enumerate(parts)])
    dropped: dict[str, int] = {}
    for p in parts:
        for k, v in p.dropped.items():
            dropped[k] = dropped.get(k, 0) + int(v)
    return EEGEpochs(
        data=np.concatenate([p.data for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        ch_names=first.ch_names,
        sfreq=first.sfreq,
        class_names=first.class_names,
        event_ids=np.concatenate([p.event_ids for p in parts]),
        n_dropped=sum(p.n_dropped for p in parts),
        dropped=dropped,
        groups=groups,
        tmin=first.tmin,
        metadata={**first.metadata, "n_parts": len(parts)},
    )


def targets_for_labels(labels, images: np.ndarray) -> np.ndarray:
    """The target image of each trial: ``images[labels]``.

    Raises
    ------
    DataValidationError
        A label outside ``0..len(images)-1`` (e.g. -1, a random trial with no
        stimulus image).
    """
    labels = np.asarray(labels).reshape(-1)
    images = np.asarray(images, dtype=np.float32)
    if labels.size and (labels.min() < 0 or labels.max() >= len(images)):
        bad = labels[(labels < 0) | (labels >= len(images))]
        raise DataValidationError(
            f"labels {sorted(set(bad.tolist()))[:5]} have no stimulus image (images exist for 0..{len(images) - 1}); "
            "drop random trials (label -1) first"
        )
    return images[labels.astype(np.int64)]
