"""Dataset layer: registry, fetching, loading, validation, preprocessing and splits."""

from cortexflow.data.fetch import fetch_dataset, get_data_dir
from cortexflow.data.loading import BrainDataset, load_dataset
from cortexflow.data.preprocessing import ImageScaler, SignalScaler
from cortexflow.data.registry import DATASETS, DatasetInfo, get_dataset_info, list_datasets
from cortexflow.data.splits import count_seen, kfold_splits, novel_stimulus_splits, stimulus_groups

__all__ = [
    "BrainDataset",
    "DATASETS",
    "DatasetInfo",
    "ImageScaler",
    "SignalScaler",
    "count_seen",
    "fetch_dataset",
    "get_data_dir",
    "get_dataset_info",
    "kfold_splits",
    "list_datasets",
    "load_dataset",
    "novel_stimulus_splits",
    "stimulus_groups",
]
