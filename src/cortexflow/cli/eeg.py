"""``cortexflow eeg``: raw EEG recordings to dataset files, and the EEG evaluations.

::

    cortexflow eeg mindbigdata MindBigData-EP-v1.0.txt --headset EP --out mbd_ep.npz --max-per-class 120
    cortexflow eeg mindbigdata mindbigdata-mw-sample --out mw.npz      # a registered recording
    cortexflow eeg crell --subjects 1 --out crell_s01.npz
    cortexflow eeg stimuli --classes digits --out digits.png
    cortexflow eeg evaluate --dataset mindbigdata-mw-sample --frontends flatten,shallow,eegnet \\
        --folds 5 --seeds 3 --out runs/eeg_mw
    cortexflow eeg simulate --frontends eegnet,shallow,flatten --seeds 3

``mindbigdata`` and ``crell`` read the recording, preprocess it, pair every
trial with its class image (rendered, or from ``--stimuli DIR``), split it
(stratified) and write an ``.npz`` that ``load_dataset`` and ``cortexflow
benchmark`` read; they print a JSON summary with the counts of dropped and
rejected trials and the benchmark options the file needs. ``evaluate`` runs
stratified cross-validation of the EEG front-ends with a shuffled-label
control on a recording (see :mod:`cortexflow.benchmark.eeg`); ``simulate``
runs the pathway check on simulated EEG.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click
import numpy as np
import torch

from cortexflow.models.eeg_estimator import EEG_METHODS
from cortexflow.cli._common import parse_sets, progress_setting
from cortexflow.data.eeg import MINDBIGDATA_DEVICES, describe_eeg, load_eeg, preprocess_epochs
from cortexflow.data.eeg import crell as crell_module
from cortexflow.data.eeg.export import check_eeg_output, save_eeg_dataset
from cortexflow.data.stimuli import CRELL_LETTERS, DIGIT_CLASSES, class_images
from cortexflow.benchmark.eeg import (
    DEFAULT_PREPROCESS,
    format_summary_table,
    run_eeg_evaluation,
    simulated_identification,
)
from cortexflow.models.frontends import FRONTENDS
from cortexflow.reporting.figures import save_stimulus_sheet
from cortexflow.training.config import get_config
from cortexflow.utils.io import atomic_write_json

__all__ = ["eeg"]

#: Values of ``--reref`` (re-referencing of the EEG channels).
REREF_CHOICES = ("average", "none")
_HEADSETS = click.Choice(list(MINDBIGDATA_DEVICES), case_sensitive=False)


def _reref(value: str, n_channels: int) -> str | None:
    """``--reref`` as the ``reference`` argument of the preprocessing (None for one channel or 'none')."""
    return None if value == "none" or n_channels < 2 else value


def _preprocess_options(f):
    for opt in reversed([
        click.option("--l-freq", type=float, default=1.0, show_default=True, help="High-pass edge in Hz (0: none)."),
        click.option("--h-freq", type=float, default=40.0, show_default=True, help="Low-pass edge in Hz (0: none)."),
        click.option("--notch", type=float, default=50.0, show_default=True, help="Line frequency in Hz (0: none)."),
        click.option("--reref", type=click.Choice(REREF_CHOICES), default="average", show_default=True,
                     help="Re-reference the EEG channels to their average (skipped for one channel), or not."),
        click.option("--resample", "new_sfreq", type=float, default=None, help="New sampling rate in Hz."),
        click.option("--reject", "reject", type=float, default=None,
                     help="Peak-to-peak rejection threshold in microvolts (after filtering)."),
        click.option("--stimuli", "stimuli", type=click.Path(exists=True, file_okay=False), default=None,
                     help="Folder of class images named <class>.<ext> (default: rendered glyphs)."),
        click.option("--test-fraction", type=float, default=0.2, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/test split."),
        click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Output .npz file."),
        click.option("--overwrite", is_flag=True, help="Replace an existing --out file (by default it is never replaced)."),
    ]):
        f = opt(f)
    return f


def benchmark_hint(path: Path, n_channels: int, sfreq: float) -> str:
    """The ``cortexflow benchmark`` command line that reads a file written by this CLI."""
    opts = []
    for method, frontend in EEG_METHODS.items():
        opts.append(f"--set {method}:n_channels={n_channels}")
        if frontend != "flatten":
            opts.append(f"--set {method}:sfreq={sfreq:g}")
    methods = ",".join(list(EEG_METHODS) + ["ridge", "mean-image"])
    return f"cortexflow benchmark --datasets {path} --methods {methods} " + " ".join(opts) + " --out runs/eeg"


def _finish(ep, *, stimuli, test_fraction, seed, out, overwrite, extra: dict) -> None:
    images = class_images(ep.class_names, stimuli)
    path = save_eeg_dataset(ep, images, out, test_fraction=test_fraction, seed=seed, overwrite=overwrite)
    summary = {
        "out": str(path),
        "n_epochs": ep.n_epochs,
        "n_channels": ep.n_channels,
        "n_times": ep.n_times,
        "sfreq": ep.sfreq,
        "class_counts": ep.class_counts(),
        "n_dropped": ep.n_dropped,
        "dropped": {k: v for k, v in ep.dropped.items() if v},
        **extra,
        "benchmark": benchmark_hint(path, ep.n_channels, ep.sfreq),
    }
    click.echo(json.dumps(summary, indent=2))


@click.group("eeg")
def eeg() -> None:
    """Raw EEG (MindBigData, Crell / BNCI 2024-001): dataset files, cross-validated evaluation, simulation."""


@eeg.command("mindbigdata")
@click.argument("source")
@click.option("--headset", type=_HEADSETS, default=None,
              help="MindBigData headset whose lines are kept (default: the first line's).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Data folder of a registered recording (default: $CORTEXFLOW_DATA or the user cache).")
@click.option("--n-times", type=int, default=None, help="Common epoch length in samples (default: see docs).")
@click.option("--max-per-class", type=int, default=None, help="Keep at most N events per digit.")
@_preprocess_options
def mindbigdata_cmd(source, headset, data_dir, n_times, max_per_class, l_freq, h_freq, notch, reref, new_sfreq,
                    reject, stimuli, test_fraction, seed, out, overwrite) -> None:
    """Read a MindBigData file (text format or spreadsheet export, streamed), preprocess and save it.

    SOURCE is a file path or a registered raw EEG data set (mindbigdata-mw-sample).
    """
    check_eeg_output(out, overwrite=overwrite)  # before reading a large recording
    ep = load_eeg(source, data_dir, device=headset.upper() if headset else None, n_times=n_times,
                  max_per_class=max_per_class)
    X, keep, rep = preprocess_epochs(
        ep.data, ep.sfreq, l_freq=l_freq or None, h_freq=h_freq or None, notch=notch or None,
        reference=_reref(reref, ep.n_channels), baseline="epoch", new_sfreq=new_sfreq, reject_ptp=reject,
        ch_names=ep.ch_names,
    )
    ep = ep.subset(np.flatnonzero(keep)).with_data(X, sfreq=rep.sfreq)
    _finish(ep, stimuli=stimuli, test_fraction=test_fraction, seed=seed, out=out, overwrite=overwrite,
            extra={"device": ep.metadata["device"], "format": ep.metadata["format"],
                   "size_mismatch": ep.metadata.get("size_mismatch"), "preprocessing": rep.to_dict()["steps"],
                   "n_rejected": rep.rejection.n_rejected if rep.rejection else 0})


@eeg.command("crell")
@click.option("--subjects", default="1", show_default=True, help="Comma list of subjects 1..20.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Where MOABB keeps the files.")
@click.option("--tmin", type=float, default=0.0, show_default=True, help="Window start after the letter marker (s).")
@click.option("--tmax", type=float, default=2.0, show_default=True, help="Window end (s); 2.0 = the fade-in.")
@_preprocess_options
def crell_cmd(subjects, data_dir, tmin, tmax, l_freq, h_freq, notch, reref, new_sfreq, reject, stimuli,
              test_fraction, seed, out, overwrite) -> None:
    """Load BNCI 2024-001 with MOABB (downloads on first use), epoch the fade-in, save as a dataset."""
    check_eeg_output(out, overwrite=overwrite)
    pre = {"l_freq": l_freq or None, "h_freq": h_freq or None, "notch": notch or None,
           "reference": None if reref == "none" else reref, "new_sfreq": new_sfreq}
    try:
        subject_ids = [int(s) for s in subjects.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"{subjects!r} is not a comma list of subject numbers", param_hint="--subjects")
    ep = crell_module.load_crell(subject_ids, data_dir=data_dir, tmin=tmin, tmax=tmax,
                                 preprocess={k: v for k, v in pre.items() if v is not None}, reject_ptp=reject)
    _finish(ep, stimuli=stimuli, test_fraction=test_fraction, seed=seed, out=out, overwrite=overwrite,
            extra={"runs": ep.metadata.get("runs"), "window_s": [tmin, tmax]})


@eeg.command("stimuli")
@click.option("--classes", type=click.Choice(["digits", "letters"]), default="digits", show_default=True)
@click.option("--stimuli", type=click.Path(exists=True, file_okay=False), default=None,
              help="Read this folder instead of rendering.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG sheet of the class images.")
def stimuli_cmd(classes, stimuli, out) -> None:
    """Save the 28x28 target image of every class as one PNG, to check them by eye."""
    names = DIGIT_CLASSES if classes == "digits" else CRELL_LETTERS
    click.echo(str(save_stimulus_sheet(class_images(names, stimuli), names, Path(out))))


def _frontend_list(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in FRONTENDS]
    if not names or unknown:
        raise click.BadParameter(f"unknown front-end(s) {unknown or [value]}; allowed: {', '.join(FRONTENDS)}",
                                 param_hint="--frontends")
    return names


def _set_threads(threads: int) -> None:
    if threads < 0:
        raise click.BadParameter(f"{threads} is negative; use 0 for torch's default or a positive count",
                                 param_hint="--threads")
    if threads:
        torch.set_num_threads(threads)


@eeg.command("evaluate")
@click.option("--dataset", "source", required=True,
              help="Registered raw EEG data set (mindbigdata-mw-sample) or a MindBigData file.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--headset", type=_HEADSETS, default=None, help="MindBigData headset (files with several).")
@click.option("--frontends", default="flatten,shallow,eegnet", show_default=True,
              help=f"Comma list of EEG front-ends ({', '.join(FRONTENDS)}).")
@click.option("--folds", default=5, show_default=True, type=click.IntRange(min=2), help="Stratified folds.")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1), help="Model seeds 0..N-1.")
@click.option("--split-seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of the folds.")
@click.option("--no-control", is_flag=True, help="Skip the shuffled-label control (not recommended).")
@click.option("--l-freq", type=float, default=DEFAULT_PREPROCESS["l_freq"], show_default=True,
              help="High-pass edge in Hz (0: none).")
@click.option("--h-freq", type=float, default=DEFAULT_PREPROCESS["h_freq"], show_default=True,
              help="Low-pass edge in Hz (0: none).")
@click.option("--notch", type=float, default=DEFAULT_PREPROCESS["notch"], show_default=True,
              help="Line frequency in Hz (0: none).")
@click.option("--resample", "new_sfreq", type=float, default=DEFAULT_PREPROCESS["new_sfreq"], show_default=True,
              help="Sampling rate after filtering, in Hz (0: keep).")
@click.option("--crop", "crop_s", type=float, default=None, help="Keep the first N seconds of each trial.")
@click.option("--no-normalize", is_flag=True, help="Skip the per-trial z-scoring.")
@click.option("--stimuli", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of class images named <class>.<ext> (default: rendered digit glyphs).")
@click.option("--config", default="auto", show_default=True, help="'auto' or a preset of CCCV1Config.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a config field, e.g. --set patience=10 (repeatable).")
@click.option("--device", default="cpu", show_default=True, help="Torch device of training ('cpu', 'cuda', ...).")
@click.option("--threads", default=1, show_default=True, type=int, help="Torch threads (0: torch's default).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for results.csv, fits.csv, summary.json, summary.md and the per-fit records (runs/).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def evaluate_cmd(source, data_dir, headset, frontends, folds, seeds, split_seed, no_control, l_freq, h_freq, notch,
                 new_sfreq, crop_s, no_normalize, stimuli, config, sets, device, threads, out_dir,
                 no_progress) -> None:
    """Cross-validate the EEG front-ends on a recording, next to a shuffled-label control.

    Stratified K-fold over the trials; targets are the class images; each
    front-end and seed is trained on the true and on permuted training
    targets; preprocessing is per trial and fitted on training trials only.
    Every fit is a benchmark task stored in OUT/runs (run again into the same
    folder, only missing fits are computed). Prints the table; writes
    results.csv, fits.csv, summary.json, summary.md.
    """
    names = _frontend_list(frontends)
    _set_threads(threads)
    if crop_s is not None and crop_s <= 0:
        raise click.BadParameter(f"{crop_s} is not a positive number of seconds", param_hint="--crop")
    ep = load_eeg(source, data_dir, device=headset.upper() if headset else None)
    images = class_images(ep.class_names, stimuli)
    preprocess = {"l_freq": l_freq or None, "h_freq": h_freq or None, "notch": notch or None,
                  "new_sfreq": new_sfreq or None, "crop_s": crop_s, "normalize": not no_normalize}
    command = "cortexflow " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None
    res = run_eeg_evaluation(
        ep, images, out_dir, frontends=names, n_folds=folds, seeds=list(range(seeds)), split_seed=split_seed,
        control=not no_control, preprocess=preprocess, config=config, config_overrides=parse_sets(sets),
        device=device, progress=progress_setting(no_progress), extra={"dataset": describe_eeg(ep), "command": command},
        source=str(source), data_dir=data_dir, load_options={"headset": headset, "stimuli": stimuli},
    )
    click.echo(format_summary_table(res))
    click.echo(f"{len(names) * folds * seeds * (1 if no_control else 2)} fits in {res['wall_seconds']:.0f} s")
    if res["runs_resumed"]:
        click.echo(f"{res['runs_resumed']} of {res['runs_total']} runs (fits and floors) were found in {out_dir}/runs "
                   "and not recomputed")
    for k, v in res["paths"].items():
        click.echo(f"{k:<8} {v}")


@eeg.command("simulate")
@click.option("--frontends", default="eegnet,shallow,flatten", show_default=True,
              help=f"Comma list of EEG front-ends ({', '.join(FRONTENDS)}).")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1), help="Seeds 0..N-1.")
@click.option("--n-classes", default=10, show_default=True, type=click.IntRange(2, 10))
@click.option("--n-per-class", default=40, show_default=True, type=click.IntRange(min=4))
@click.option("--config", default="auto", show_default=True, help="'auto' or a preset of CCCV1Config.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config field (repeatable).")
@click.option("--no-control", is_flag=True, help="Skip the shuffled-label control.")
@click.option("--threads", default=1, show_default=True, type=int, help="Torch threads (0: torch's default).")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Also write every result as JSON here.")
def simulate_cmd(frontends, seeds, n_classes, n_per_class, config, sets, no_control, threads, out) -> None:
    """Pathway check on simulated EEG: one stratified 25 % hold-out per seed, true vs shuffled labels."""
    names = _frontend_list(frontends)
    _set_threads(threads)
    overrides = parse_sets(sets)
    if overrides:  # the preset of the (about 75 %) training trials, with the overrides
        config = get_config(config, n_train=int(0.75 * n_classes * n_per_class), **overrides)
    rows = []
    conditions = [False] if no_control else [False, True]
    for fe in names:
        for shuffle in conditions:
            for seed in range(seeds):
                r = simulated_identification(fe, n_classes=n_classes, n_per_class=n_per_class, seed=seed,
                                             shuffle_labels=shuffle, config=config)
                rows.append(r)
                click.echo(f"{fe:8s} shuffled={shuffle!s:5s} seed={seed} two_way={r['two_way']:.3f} "
                           f"acc={r['class_accuracy']:.3f} n_test={r['n_test']} {r['seconds']:.0f}s")
    click.echo(f"\nfrontend  labels    two-way mean ± sd   class acc mean ± sd   (seeds 0..{seeds - 1})")
    for fe in names:
        for shuffle in conditions:
            sel = [r for r in rows if r["frontend"] == fe and r["shuffle_labels"] == shuffle]
            tw = np.array([r["two_way"] for r in sel])
            ac = np.array([r["class_accuracy"] for r in sel])
            sd_tw, sd_ac = (float(a.std(ddof=1)) if len(a) > 1 else 0.0 for a in (tw, ac))
            click.echo(f"{fe:8s}  {'shuffled' if shuffle else 'true':8s}  {tw.mean():.3f} ± {sd_tw:.3f}       "
                       f"{ac.mean():.3f} ± {sd_ac:.3f}")
    if out:
        if Path(out).is_symlink():
            raise click.BadParameter(f"{out} is a symbolic link; refusing to write through it", param_hint="--out")
        atomic_write_json(out, rows)
