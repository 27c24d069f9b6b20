"""``cortexflow eeg``: turn raw EEG recordings into CortexFlow dataset files.

::

    cortexflow eeg mindbigdata MindBigData-EP-v1.0.txt --out mbd_ep.npz --max-per-class 120
    cortexflow eeg crell --subjects 1 --out crell_s01.npz
    cortexflow eeg stimuli --classes digits --out digits.png

Each dataset command reads the recording, preprocesses it, pairs every trial
with its class image (rendered, or from ``--stimuli DIR``), splits it
(stratified) and writes an ``.npz`` that ``load_dataset`` and
``cortexflow benchmark`` read; it prints a JSON summary with the counts of
dropped and rejected trials and the benchmark options the file needs.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

__all__ = ["eeg"]


def _preprocess_options(f):
    for opt in reversed([
        click.option("--l-freq", type=float, default=1.0, show_default=True, help="High-pass edge in Hz (0: none)."),
        click.option("--h-freq", type=float, default=40.0, show_default=True, help="Low-pass edge in Hz (0: none)."),
        click.option("--notch", type=float, default=50.0, show_default=True, help="Line frequency in Hz (0: none)."),
        click.option("--reference", type=click.Choice(["average", "none"]), default="average", show_default=True),
        click.option("--resample", "new_sfreq", type=float, default=None, help="New sampling rate in Hz."),
        click.option("--reject", "reject", type=float, default=None,
                     help="Peak-to-peak rejection threshold in microvolts (after filtering)."),
        click.option("--stimuli", "stimuli", type=click.Path(exists=True, file_okay=False), default=None,
                     help="Folder of class images named <class>.<ext> (default: rendered glyphs)."),
        click.option("--test-fraction", type=float, default=0.2, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/test split."),
        click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Output .npz file."),
    ]):
        f = opt(f)
    return f


def _finish(ep, *, stimuli, test_fraction, seed, out, extra: dict) -> None:
    from cortexflow.data.eeg.export import save_eeg_dataset
    from cortexflow.data.stimuli import class_images

    images = class_images(ep.class_names, stimuli)
    path = save_eeg_dataset(ep, images, out, test_fraction=test_fraction, seed=seed)
    method_opts = [f"--set {m}:n_channels={ep.n_channels} --set {m}:sfreq={ep.sfreq:g}"
                   for m in ("cccv1-eeg-eegnet", "cccv1-eeg-shallow")]
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
        "benchmark": f"cortexflow benchmark --datasets {path} --methods cccv1-eeg-eegnet,cccv1-eeg-shallow,ridge,"
                     f"mean-image " + " ".join(method_opts) + " --out runs/eeg",
    }
    click.echo(json.dumps(summary, indent=2))


@click.group("eeg")
def eeg() -> None:
    """Raw EEG (MindBigData, Crell / BNCI 2024-001) to CortexFlow dataset files."""


@eeg.command("mindbigdata")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--device", type=click.Choice(["MW", "EP", "MU", "IN"]), default=None,
              help="Device whose lines are kept (default: the first line's).")
@click.option("--n-times", type=int, default=None, help="Common epoch length in samples (default: see docs).")
@click.option("--max-per-class", type=int, default=None, help="Keep at most N events per digit.")
@_preprocess_options
def mindbigdata_cmd(path, device, n_times, max_per_class, l_freq, h_freq, notch, reference, new_sfreq, reject,
                    stimuli, test_fraction, seed, out) -> None:
    """Read a MindBigData text file (streamed), preprocess and save it as a dataset."""
    from cortexflow.data.eeg.mindbigdata import read_mindbigdata
    from cortexflow.data.eeg.preprocessing import preprocess_epochs

    ep = read_mindbigdata(path, device, n_times=n_times, max_per_class=max_per_class)
    X, keep, rep = preprocess_epochs(
        ep.data, ep.sfreq, l_freq=l_freq or None, h_freq=h_freq or None, notch=notch or None,
        reference=None if reference == "none" or ep.n_channels < 2 else reference, baseline="epoch",
        new_sfreq=new_sfreq, reject_ptp=reject, ch_names=ep.ch_names,
    )
    ep = ep.subset(np.flatnonzero(keep)).with_data(X, sfreq=rep.sfreq)
    _finish(ep, stimuli=stimuli, test_fraction=test_fraction, seed=seed, out=out,
            extra={"device": ep.metadata["device"], "preprocessing": rep.to_dict()["steps"],
                   "n_rejected": rep.rejection.n_rejected if rep.rejection else 0})


@eeg.command("crell")
@click.option("--subjects", default="1", show_default=True, help="Comma list of subjects 1..20.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Where MOABB keeps the files.")
@click.option("--tmin", type=float, default=0.0, show_default=True, help="Window start after the letter marker (s).")
@click.option("--tmax", type=float, default=2.0, show_default=True, help="Window end (s); 2.0 = the fade-in.")
@_preprocess_options
def crell_cmd(subjects, data_dir, tmin, tmax, l_freq, h_freq, notch, reference, new_sfreq, reject, stimuli,
              test_fraction, seed, out) -> None:
    """Load BNCI 2024-001 with MOABB (downloads on first use), epoch the fade-in, save as a dataset."""
    from cortexflow.data.eeg.crell import load_crell

    pre = {"l_freq": l_freq or None, "h_freq": h_freq or None, "notch": notch or None,
           "reference": None if reference == "none" else reference, "new_sfreq": new_sfreq}
    ep = load_crell([int(s) for s in subjects.split(",") if s.strip()], data_dir=data_dir, tmin=tmin, tmax=tmax,
                    preprocess={k: v for k, v in pre.items() if v is not None}, reject_ptp=reject)
    _finish(ep, stimuli=stimuli, test_fraction=test_fraction, seed=seed, out=out,
            extra={"runs": ep.metadata.get("runs"), "window_s": [tmin, tmax]})


@eeg.command("stimuli")
@click.option("--classes", type=click.Choice(["digits", "letters"]), default="digits", show_default=True)
@click.option("--stimuli", type=click.Path(exists=True, file_okay=False), default=None,
              help="Read this folder instead of rendering.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG sheet of the class images.")
def stimuli_cmd(classes, stimuli, out) -> None:
    """Save the 28x28 target image of every class as one PNG, to check them by eye."""
    from cortexflow.data.stimuli import CRELL_LETTERS, DIGIT_CLASSES, class_images, save_stimulus_sheet

    names = DIGIT_CLASSES if classes == "digits" else CRELL_LETTERS
    click.echo(str(save_stimulus_sheet(class_images(names, stimuli), names, Path(out))))
