"""Write registered real data sets in researchers' own file formats, with a spec file for each.

The tests (tests/test_spec_real.py) use these functions to show that the
spec readers give exactly what the registered loaders give; the docs show
them as worked examples. Run as a script to write all of them::

    python benchmarks/write_spec_examples.py --out /tmp/spec_examples

* ``vangerven``: its 100 real voxel rows as a 4D NIfTI (one volume per trial)
  with a mask, a trial table with a split column, and one 8-bit PNG per
  stimulus. The file has no voxel positions, so the 3092 voxels are laid out
  in C order on a 16 x 16 x 13 grid of 2 mm voxels: the values are real, the
  positions are not.
* ``mindbigdata-mw-sample``: the 174 real MindWave trials as an MNE
  ``-epo.fif`` (event codes 1..10 for the digits 0..9, the MindBigData event
  ids as the events' sample numbers).
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np

from cortexflow.data.eeg.registered import load_eeg
from cortexflow.data.loading import load_dataset

__all__ = ["write_vangerven_nifti_spec", "write_mindbigdata_epochs_spec", "png_exact"]

VANGERVEN_GRID = (16, 16, 13)


def png_exact(images: np.ndarray) -> bool:
    """True when float32 images in [0, 1] are exactly ``v / 255`` for 8-bit ``v`` (lossless as 8-bit PNG)."""
    u8 = np.round(images.astype(np.float64) * 255).astype(np.uint8)
    return bool(np.array_equal(u8.astype(np.float32) / np.float32(255), images))


def write_vangerven_nifti_spec(out: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path:
    """Write ``betas.nii.gz``, ``mask.nii.gz``, ``trials.csv``, ``stimuli/*.png`` and ``vangerven-nifti.toml``.

    Returns the spec's path. Stimuli go to PNG only when they are exactly
    representable in 8 bits (:func:`png_exact`); otherwise to ``stimuli.npy``.
    """
    import nibabel as nib
    from PIL import Image

    out = Path(out)
    (out / "stimuli").mkdir(parents=True, exist_ok=True)
    ds = load_dataset("vangerven", data_dir)
    X = np.concatenate([ds.X_train, ds.X_test]).astype(np.float32)
    Y = np.concatenate([ds.Y_train, ds.Y_test])
    labels = np.concatenate([ds.labels_train, ds.labels_test])
    split = ["train"] * len(ds.X_train) + ["test"] * len(ds.X_test)
    n, n_vox = X.shape
    mask = np.zeros(int(np.prod(VANGERVEN_GRID)), dtype=bool)
    mask[:n_vox] = True
    mask = mask.reshape(VANGERVEN_GRID)
    data = np.zeros(VANGERVEN_GRID + (n,), dtype=np.float32)
    data[mask] = X.T
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), str(out / "betas.nii.gz"))
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), str(out / "mask.nii.gz"))
    exact = png_exact(Y)
    if exact:
        names = [f"stim_{i:03d}.png" for i in range(n)]
        for name, img in zip(names, Y):
            Image.fromarray(np.round(img.astype(np.float64) * 255).astype(np.uint8), mode="L").save(out / "stimuli" / name)
        stim_section = '[stimuli]\npath = "stimuli"\ncolor = "grayscale"\nsize = [28, 28]\n'
    else:
        names = [str(i) for i in range(n)]
        np.save(out / "stimuli.npy", Y)
        stim_section = '[stimuli]\npath = "stimuli.npy"\n'
    with open(out / "trials.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["trial", "stimulus", "split", "label"])
        for i in range(n):
            w.writerow([f"t{i:03d}", names[i], split[i], int(labels[i])])
    spec = out / "vangerven-nifti.toml"
    spec.write_text(
        'name = "vangerven-nifti"\nmodality = "fmri"\n\n'
        '[signals]\npath = "betas.nii.gz"\nmask = "mask.nii.gz"\n\n'
        + stim_section +
        '\n[trials]\ntable = "trials.csv"\nid = "trial"\nstimulus = "stimulus"\nsplit = "split"\nlabel = "label"\n'
    )
    return spec


def write_mindbigdata_epochs_spec(out: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path:
    """Write ``mw-epo.fif`` (the 174 MindWave trials) and ``mw-epochs.toml``; return the spec's path."""
    import mne

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ep = load_eeg("mindbigdata-mw-sample", data_dir)
    info = mne.create_info(list(ep.ch_names), ep.sfreq, ch_types="eeg")
    events = np.column_stack([ep.event_ids, np.zeros(ep.n_epochs, dtype=np.int64), ep.labels + 1]).astype(np.int64)
    event_id = {name: i + 1 for i, name in enumerate(ep.class_names)}
    epochs = mne.EpochsArray(ep.data.astype(np.float64), info, events=events, event_id=event_id, tmin=ep.tmin,
                             verbose="error")
    path = out / "mw-epo.fif"
    epochs.save(path, overwrite=True, verbose="error")
    spec = out / "mw-epochs.toml"
    spec.write_text('name = "mw-epochs"\nmodality = "eeg"\n\n[signals]\npath = "mw-epo.fif"\npicks = ["FP1"]\n')
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    print(write_vangerven_nifti_spec(Path(args.out) / "vangerven", args.data_dir))
    print(write_mindbigdata_epochs_spec(Path(args.out) / "mindbigdata", args.data_dir))


if __name__ == "__main__":
    main()
