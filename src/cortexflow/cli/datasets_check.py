"""``cortexflow datasets check SPEC.toml``: read and validate a data set of your own, print its facts.

::

    cortexflow datasets check sub01.toml            # a spec (see docs/datasets.md, "Your own data")
    cortexflow datasets check sub01.toml --json
    cortexflow datasets check my_data.h5            # a plain file with the four keys

Every file the spec names is read and checked (signals, mask, stimuli, trial
table), exactly as ``cortexflow benchmark`` and ``cortexflow train`` will read
it; the facts printed are those of ``cortexflow datasets info`` (rows,
features, image shape, unique stimuli, test stimuli also seen in training)
plus how often stimuli repeat, the memory the arrays take, and the splits the
data set supports. A spec whose signals are MNE epochs and that has no
stimuli is checked as EEG epochs (what ``cortexflow eeg evaluate`` reads). A
problem is one line on stderr and exit code 2; nothing is written but the
spec cache entry of a valid spec.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from cortexflow.data.eeg.registered import describe_eeg, load_eeg
from cortexflow.data.loading import BrainDataset, load_dataset
from cortexflow.data.readers.mne_epochs import is_mne_epochs_path
from cortexflow.data.spec import is_spec_path, read_spec
from cortexflow.data.splits import SPLIT_KINDS, stimulus_groups
from cortexflow.data.summary import describe_dataset

__all__ = ["check", "check_facts"]

_KEYS = ("name", "source", "n_train", "n_test", "n_features", "image_shape", "n_unique_stimuli",
         "n_test_seen_in_train", "repeats", "labels", "groups", "splits", "memory_mb", "pixel_order", "modality")


def check_facts(ds: BrainDataset) -> dict[str, Any]:
    """:func:`describe_dataset` plus repeats, groups, memory and the usable splits of a loaded dataset."""
    info = describe_dataset(ds)
    ids = stimulus_groups(np.concatenate([ds.Y_train, ds.Y_test]))
    counts = np.bincount(ids)
    info["repeats"] = {"min": int(counts.min()), "max": int(counts.max()), "mean": round(float(counts.mean()), 3)}
    groups = ds.metadata.get("groups_train")
    info["groups"] = int(len(np.unique(groups))) if groups is not None else None
    arrays = (ds.X_train, ds.Y_train, ds.X_test, ds.Y_test)
    info["memory_mb"] = round(sum(a.nbytes for a in arrays) / 2**20, 2)
    kinds = [k for k in SPLIT_KINDS if k != "stratified" or getattr(ds, "labels_train", None) is not None]
    info["splits"] = kinds if len(ds.Y_test) else [k for k in kinds if k != "official"]
    md = ds.metadata
    for k in ("spec", "has_official_split", "color"):
        if k in md:
            info[k] = md[k]
    if "voxel_coords" in md:
        info["n_voxels_with_coordinates"] = int(len(md["voxel_coords"]))
    return info


def _eeg_only(path: str) -> bool:
    if is_mne_epochs_path(path):
        return True
    if not is_spec_path(path):
        return False
    spec = read_spec(path)
    return "stimuli" not in spec and is_mne_epochs_path(spec["signals"]["path"])


@click.command("check")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--allow-degenerate", is_flag=True, help="Accept even a signal whose rows are all identical.")
def check(spec: str, as_json: bool, allow_degenerate: bool) -> None:
    """Read and validate SPEC (a .toml spec, or a data file) and print its facts."""
    if _eeg_only(spec):
        info = describe_eeg(load_eeg(spec))
        keys: tuple[str, ...] = ("name", "source", "modality", "format", "n_epochs", "n_channels", "n_times",
                                 "sfreq", "class_counts")
    else:
        info = check_facts(load_dataset(Path(spec), allow_degenerate=allow_degenerate))
        keys = _KEYS
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    for k in keys:
        click.echo(f"{k:<22} {info.get(k)}")
    if info.get("splits") is not None and "official" not in info["splits"]:
        click.echo("note: no split column, so no official test rows: use --split kfold or --split novel-stimulus")
    for c in info.get("caveats", []):
        click.echo(f"caveat: {c}")
    click.echo("ok")
