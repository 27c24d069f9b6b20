"""Crell & Mueller-Putz (2024) letters EEG: BNCI 2024-001 through MOABB and MNE.

Needs the optional extra ``cortexflow[eeg]`` (``mne``, ``moabb``); both are
imported only when a function here runs.

The recording (20 subjects, 60 EEG + 4 EOG channels, 500 Hz) shows one of ten
letters per trial: the letter fades in over 2 s, stays 0.5 s, fades out over
2 s, then the participant writes it for 4 s. MOABB's ``BNCI2024_001`` turns
each run into an :class:`mne.io.Raw` with a stim channel ``STI`` holding the
letter codes 1..10 at the letter markers of the paradigm (the markers that
open each trial's presentation), and its default pipeline adds annotations
``letter_a`` .. ``letter_v`` at the same onsets. :func:`epoch_crell_raw`
reads either and cuts the visual fade-in window, 0 to 2 s after the marker by
default; :func:`load_crell` feeds it MOABB's raws, so the code path is the
same for a user's own Raw and for the public download.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable

import numpy as np

from cortexflow.data.eeg._optional import require
from cortexflow.data.eeg.epochs import EEGEpochs, concatenate_epochs
from cortexflow.data.eeg.preprocessing import preprocess_raw, reject_by_peak_to_peak
from cortexflow.exceptions import CortexFlowError, DataValidationError

__all__ = [
    "CRELL_LETTERS",
    "CRELL_EVENT_ID",
    "CRELL_SFREQ",
    "FADE_IN_WINDOW",
    "crell_events",
    "epoch_crell_raw",
    "load_crell",
]

logger = logging.getLogger(__name__)

#: The ten letters, in the order of MOABB's event codes 1..10; a trial's label indexes this tuple.
CRELL_LETTERS: tuple[str, ...] = ("a", "d", "e", "f", "j", "n", "o", "s", "t", "v")
#: MOABB's event names and codes for BNCI2024_001.
CRELL_EVENT_ID: dict[str, int] = {f"letter_{c}": i + 1 for i, c in enumerate(CRELL_LETTERS)}
#: Nominal sampling rate of the recording.
CRELL_SFREQ = 500.0
#: Seconds after the letter marker during which the letter fades in.
FADE_IN_WINDOW = (0.0, 2.0)


def _letter_of(description: str) -> str | None:
    d = str(description).strip().lower()
    for prefix in ("letter_", "letter/", "letter "):
        if d.startswith(prefix):
            d = d[len(prefix):]
    return d if d in CRELL_LETTERS else None


def crell_events(raw) -> tuple[np.ndarray, np.ndarray, str]:
    """The letter events of a Raw: from annotations when present, else from its stim channel.

    Annotations named ``letter_a`` (MOABB's names) or just ``a`` count;
    other annotations are ignored. Without such annotations, the first stim
    channel is read with :func:`mne.find_events` and codes 1..10 are taken as
    MOABB's letter codes.

    Returns
    -------
    events : ndarray (n, 3)
        MNE events (sample, 0, code) with code = label + 1.
    labels : ndarray (n,)
        Index into :data:`CRELL_LETTERS`.
    source : {"annotations", "stim"}

    Raises
    ------
    DataValidationError
        When the Raw holds no letter event.
    """
    mne = require("mne", "crell_events")
    ann = raw.annotations
    mapping = {}
    for desc in set(ann.description) if len(ann) else ():
        letter = _letter_of(desc)
        if letter is not None:
            mapping[desc] = CRELL_LETTERS.index(letter) + 1
    if mapping:
        events, _ = mne.events_from_annotations(raw, event_id=mapping, verbose="error")
        source = "annotations"
    else:
        stim = mne.pick_types(raw.info, meg=False, stim=True)
        if len(stim) == 0:
            raise DataValidationError(
                "this Raw has neither letter annotations (letter_a .. letter_v, or a .. v) nor a stim channel; "
                f"annotations found: {sorted(set(ann.description))[:10]}"
            )
        events = mne.find_events(raw, stim_channel=raw.ch_names[stim[0]], shortest_event=1, verbose="error")
        events = events[(events[:, 2] >= 1) & (events[:, 2] <= len(CRELL_LETTERS))]
        source = "stim"
    if len(events) == 0:
        raise DataValidationError(f"no letter event found in this Raw (looked in its {'annotations' if mapping else 'stim channel'})")
    events = events[np.argsort(events[:, 0], kind="stable")]
    return events, events[:, 2].astype(np.int64) - 1, source


def epoch_crell_raw(
    raw,
    *,
    tmin: float = FADE_IN_WINDOW[0],
    tmax: float = FADE_IN_WINDOW[1],
    include_eog: bool = False,
    preprocess: dict[str, Any] | None = None,
    baseline: tuple[float | None, float | None] | None = None,
    reject_ptp: float | None = None,
    units: str = "uV",
) -> EEGEpochs:
    """Cut one epoch per letter from a Raw shaped like BNCI 2024-001.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        Continuous EEG with letter annotations or a stim channel (see
        :func:`crell_events`).
    tmin, tmax : float
        Window in seconds relative to the letter marker; ``[tmin, tmax)`` so
        that 0-2 s at 500 Hz gives exactly 1000 samples. The default is the
        2-s fade-in; ``tmax=2.5`` adds the 0.5 s of full visibility.
    include_eog : bool
        Keep the EOG channels (dropped by default: only EEG channels).
    preprocess : dict, optional
        Keyword arguments of
        :func:`cortexflow.data.eeg.preprocessing.preprocess_raw` (``l_freq``,
        ``h_freq``, ``notch``, ``reference``, ``new_sfreq``), applied to the
        continuous recording before epoching.
    baseline : (start, stop), optional
        MNE baseline window in seconds (needs ``tmin < 0`` for a pre-stimulus one).
    reject_ptp : float, optional
        Drop trials whose peak-to-peak amplitude on any kept channel exceeds
        this value, in ``units``; counted in ``dropped["artefact"]``.
    units : {"uV", "V"}
        Unit of the returned data (MNE stores volts).

    Returns
    -------
    EEGEpochs
        ``labels`` index :data:`CRELL_LETTERS`; ``event_ids`` are the event
        samples; ``dropped`` counts trials lost at the recording's edges or
        under annotations marked bad (``"edge_or_bad"``) and artefacts.
    """
    mne = require("mne", "epoch_crell_raw")
    if units not in ("uV", "V"):
        raise DataValidationError(f"units={units!r} is not one of 'uV', 'V'")
    if not tmax > tmin:
        raise DataValidationError(f"tmax={tmax} must be greater than tmin={tmin}")
    events, labels, source = crell_events(raw)
    raw = raw.copy()
    if source == "stim":  # carry the events as annotations, which survive resampling
        sfreq0 = raw.info["sfreq"]
        desc = {i + 1: f"letter_{c}" for i, c in enumerate(CRELL_LETTERS)}
        raw.set_annotations(
            raw.annotations + mne.annotations_from_events(events, sfreq0, event_desc=desc, first_samp=raw.first_samp,
                                                          orig_time=raw.annotations.orig_time, verbose="error")
        )
    if preprocess:
        raw = preprocess_raw(raw, copy=False, **preprocess)
    mapping = {d: CRELL_LETTERS.index(_letter_of(d)) + 1 for d in set(raw.annotations.description) if _letter_of(d)}
    events, _ = mne.events_from_annotations(raw, event_id=mapping, verbose="error")
    events = events[np.argsort(events[:, 0], kind="stable")]
    sfreq = float(raw.info["sfreq"])
    picks = mne.pick_types(raw.info, meg=False, eeg=True, eog=include_eog, stim=False, exclude=[])
    if len(picks) == 0:
        raise DataValidationError("this Raw has no EEG channel")
    epochs = mne.Epochs(
        raw, events, event_id=None, tmin=tmin, tmax=tmax - 1.0 / sfreq, baseline=baseline, picks=picks,
        preload=True, reject=None, reject_by_annotation=True, event_repeated="drop", verbose="error",
    )
    n_lost = len(events) - len(epochs)
    data = epochs.get_data(copy=True)
    if units == "uV":
        data = data * 1e6
    ch_names = tuple(epochs.ch_names)
    labels = epochs.events[:, 2].astype(np.int64) - 1
    ids = epochs.events[:, 0].astype(np.int64)
    dropped = {"edge_or_bad": int(n_lost), "artefact": 0}
    report = None
    if reject_ptp is not None and len(data):
        keep, report = reject_by_peak_to_peak(data, reject_ptp, ch_names=ch_names)
        data, labels, ids = data[keep], labels[keep], ids[keep]
        dropped["artefact"] = report.n_rejected
    if len(data) == 0:
        raise DataValidationError(f"no epoch left from {len(events)} letter events (dropped: {dropped})")
    return EEGEpochs(
        data=data,
        labels=labels,
        ch_names=ch_names,
        sfreq=sfreq,
        class_names=CRELL_LETTERS,
        event_ids=ids,
        n_dropped=int(sum(dropped.values())),
        dropped=dropped,
        tmin=float(epochs.tmin),
        metadata={
            "format": "bnci2024-001",
            "event_source": source,
            "units": units,
            "window_s": [float(tmin), float(tmax)],
            "preprocess": dict(preprocess or {}),
            "rejection": None if report is None else report.to_dict(),
        },
    )


def load_crell(
    subjects: Iterable[int] = (1,),
    *,
    data_dir: str | os.PathLike | None = None,
    tmin: float = FADE_IN_WINDOW[0],
    tmax: float = FADE_IN_WINDOW[1],
    include_eog: bool = False,
    preprocess: dict[str, Any] | None = None,
    baseline: tuple[float | None, float | None] | None = None,
    reject_ptp: float | None = None,
    units: str = "uV",
) -> EEGEpochs:
    """Load BNCI 2024-001 with MOABB and epoch every run with :func:`epoch_crell_raw`.

    MOABB downloads each subject's file on first use (from NEMAR's mirror or
    the BNCI Horizon 2020 server; see ``moabb.set_download_provider``) into its data folder (``data_dir`` if given,
    else MNE's ``MNE_DATASETS_BNCI_PATH`` / ``MNE_DATA`` configuration).

    Parameters
    ----------
    subjects : iterable of int
        Subject numbers 1..20.
    data_dir : path-like, optional
        Where MOABB keeps the files (sets ``MNE_DATASETS_BNCI_PATH`` for this call).
    tmin, tmax, include_eog, preprocess, baseline, reject_ptp, units
        As in :func:`epoch_crell_raw`.

    Returns
    -------
    EEGEpochs
        All runs stacked; ``groups`` numbers the runs in loading order and
        ``metadata["runs"]`` lists (subject, session, run) per group.
    """
    require("mne", "load_crell")
    require("moabb", "load_crell")
    from moabb.datasets import BNCI2024_001

    subjects = [int(s) for s in subjects]
    bad = [s for s in subjects if not 1 <= s <= 20]
    if bad or not subjects:
        raise DataValidationError(f"BNCI 2024-001 has subjects 1..20; got {subjects}")
    env_key = "MNE_DATASETS_BNCI_PATH"
    old = os.environ.get(env_key)
    if data_dir is not None:
        os.environ[env_key] = str(data_dir)
    try:
        try:
            data = BNCI2024_001().get_data(subjects=subjects)
        except Exception as exc:  # network, disk or server errors from MOABB/pooch
            raise CortexFlowError(
                f"MOABB could not load BNCI 2024-001 subject(s) {subjects}: {type(exc).__name__}: {exc}. "
                "MOABB downloads the files on first use (NEMAR mirror or BNCI Horizon 2020 server); check the network "
                f"or put the files in {data_dir or 'MNE_DATASETS_BNCI_PATH'}"
            ) from exc
    finally:
        if data_dir is not None:
            if old is None:
                os.environ.pop(env_key, None)
            else:
                os.environ[env_key] = old
    parts: list[EEGEpochs] = []
    runs: list[tuple[int, str, str]] = []
    for subject in sorted(data):
        for session in sorted(data[subject]):
            for run in sorted(data[subject][session]):
                part = epoch_crell_raw(
                    data[subject][session][run], tmin=tmin, tmax=tmax, include_eog=include_eog,
                    preprocess=preprocess, baseline=baseline, reject_ptp=reject_ptp, units=units,
                )
                parts.append(part)
                runs.append((int(subject), str(session), str(run)))
    out = concatenate_epochs(parts)
    out.metadata.update({"runs": runs, "subjects": subjects, "source": "moabb:BNCI2024_001"})
    return out
