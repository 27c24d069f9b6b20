"""EEG pathway: readers for raw EEG (MindBigData, Crell / BNCI 2024-001), preprocessing, simulation.

Registered raw recordings (``mindbigdata-mw-sample``) load with
:func:`load_eeg`. Everything here returns :class:`EEGEpochs` (``data`` of shape
(n_epochs, n_channels, n_times), ``labels``, ``ch_names``, ``sfreq``, ...).
:mod:`cortexflow.data.stimuli` turns the labels into 28x28 target images and
:class:`cortexflow.models.eeg_estimator.EEGDecoder` trains CCCV1 with an EEG
front-end on them.

The MindBigData reader and the preprocessing need only NumPy/SciPy; the
Crell reader needs the optional extra ``cortexflow[eeg]`` (MNE, MOABB), which
is imported only when it runs.
"""

from cortexflow.data.eeg.crell import (
    CRELL_EVENT_ID,
    CRELL_LETTERS,
    CRELL_SFREQ,
    FADE_IN_WINDOW,
    crell_events,
    epoch_crell_raw,
    load_crell,
)
from cortexflow.data.eeg.epochs import EEGEpochs, concatenate_epochs, targets_for_labels
from cortexflow.data.eeg.export import save_eeg_dataset
from cortexflow.data.eeg.mindbigdata import (
    DIGIT_CLASSES,
    MINDBIGDATA_DEVICES,
    DeviceInfo,
    format_mindbigdata_line,
    iter_mindbigdata_events,
    parse_mindbigdata_line,
    read_mindbigdata,
)
from cortexflow.data.eeg.preprocessing import (
    EEGRobustScaler,
    EpochPreprocessor,
    PreprocessReport,
    RejectionReport,
    bandpass_filter,
    baseline_correct,
    notch_filter,
    peak_to_peak,
    normalize_trials,
    preprocess_epochs,
    preprocess_raw,
    reject_by_peak_to_peak,
    rereference,
    resample,
)
from cortexflow.data.eeg.registered import describe_eeg, is_raw_eeg_dataset, load_eeg, raw_eeg_datasets
from cortexflow.data.eeg.simulate import simulate_evoked_eeg

__all__ = [
    "CRELL_EVENT_ID",
    "CRELL_LETTERS",
    "CRELL_SFREQ",
    "DIGIT_CLASSES",
    "DeviceInfo",
    "EEGEpochs",
    "EEGRobustScaler",
    "EpochPreprocessor",
    "FADE_IN_WINDOW",
    "MINDBIGDATA_DEVICES",
    "PreprocessReport",
    "RejectionReport",
    "bandpass_filter",
    "baseline_correct",
    "concatenate_epochs",
    "crell_events",
    "describe_eeg",
    "epoch_crell_raw",
    "format_mindbigdata_line",
    "is_raw_eeg_dataset",
    "iter_mindbigdata_events",
    "load_crell",
    "load_eeg",
    "normalize_trials",
    "notch_filter",
    "parse_mindbigdata_line",
    "peak_to_peak",
    "preprocess_epochs",
    "preprocess_raw",
    "raw_eeg_datasets",
    "read_mindbigdata",
    "reject_by_peak_to_peak",
    "rereference",
    "resample",
    "save_eeg_dataset",
    "simulate_evoked_eeg",
    "targets_for_labels",
]
