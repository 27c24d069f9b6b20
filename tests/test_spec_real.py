"""Real data through the spec readers give exactly what the registered loaders give.

* vangerven's real voxels as a 4D NIfTI with a mask, a trial table with a
  split column and a folder of 8-bit PNG stimuli: the same X, Y and labels,
  and ``cortexflow benchmark`` gives the same metrics (max |diff| 0);
* the 174 real MindWave trials as an MNE ``-epo.fif``: the same epochs as the
  MindBigData reader, and ``cortexflow eeg evaluate`` the same per-trial results.

The files are written by benchmarks/write_spec_examples.py (the docs' worked
examples). Skipped, with the reason, when the registered files are absent.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cortexflow.cli.main import cli
from cortexflow.data.eeg.registered import load_eeg
from cortexflow.data.loading import load_dataset
from cortexflow.data.spec import read_spec_data

pytest.importorskip("nibabel")
pytest.importorskip("PIL")

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "write_spec_examples.py"
METRICS = ("mse", "pearson", "ssim", "psnr", "two_way")


def _examples():
    spec = importlib.util.spec_from_file_location("write_spec_examples", _SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def vangerven_spec(data_dir, tmp_path_factory):
    return _examples().write_vangerven_nifti_spec(tmp_path_factory.mktemp("vg"), data_dir)


@pytest.fixture(scope="module")
def mw_spec(data_dir, tmp_path_factory):
    pytest.importorskip("mne")
    return _examples().write_mindbigdata_epochs_spec(tmp_path_factory.mktemp("mw"), data_dir)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_vangerven_stimuli_are_exact_in_8_bit_png(data_dir):
    ds = load_dataset("vangerven", data_dir)
    assert _examples().png_exact(np.concatenate([ds.Y_train, ds.Y_test]))


def test_vangerven_through_nifti_mask_table_and_pngs_is_identical(data_dir, vangerven_spec):
    assert (vangerven_spec.parent / "stimuli" / "stim_099.png").is_file()  # the PNG path, not the .npy fallback
    ref = load_dataset("vangerven", data_dir)
    ds = load_dataset(vangerven_spec)
    for k in ("X_train", "Y_train", "X_test", "Y_test", "labels_train", "labels_test"):
        a, b = getattr(ref, k), getattr(ds, k)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), k
    assert ds.metadata["voxel_coords"].shape == (3092, 3) and ds.metadata["modality"] == "fmri"
    again = read_spec_data(vangerven_spec)
    assert again.from_cache and np.array_equal(again.X[:90], ref.X_train)


def test_vangerven_benchmark_through_the_spec_gives_the_same_metrics(data_dir, vangerven_spec, tmp_path):
    runner = CliRunner()
    outs = {}
    for name, dataset in (("registered", "vangerven"), ("spec", str(vangerven_spec))):
        outs[name] = tmp_path / name
        res = runner.invoke(cli, ["benchmark", "--datasets", dataset, "--methods", "mean-image,ridge", "--split",
                                  "official", "--seeds", "1", "--out", str(outs[name]), "--data-dir", str(data_dir)])
        assert res.exit_code == 0, res.output
    a, b = _rows(outs["registered"] / "results.csv"), _rows(outs["spec"] / "results.csv")
    assert len(a) == len(b) == 20
    diff = max(abs(float(x[m]) - float(y[m])) for x, y in zip(a, b) for m in METRICS)
    assert diff == 0.0
    assert [(x["method"], x["image"]) for x in a] == [(y["method"], y["image"]) for y in b]


def test_mindwave_trials_through_mne_epochs_are_identical(data_dir, mw_spec):
    ref = load_eeg("mindbigdata-mw-sample", data_dir)
    assert ref.n_epochs == 174
    for ep in (load_eeg(mw_spec.parent / "mw-epo.fif"), load_eeg(mw_spec)):
        assert ep.data.dtype == np.float32 and np.array_equal(ep.data, ref.data)  # max |diff| 0
        assert np.array_equal(ep.labels, ref.labels) and np.array_equal(ep.event_ids, ref.event_ids)
        assert ep.class_names == ref.class_names and ep.ch_names == ref.ch_names
        assert ep.sfreq == ref.sfreq and ep.tmin == ref.tmin


@pytest.mark.slow
def test_mindwave_eeg_evaluate_through_mne_epochs_gives_the_same_results(data_dir, mw_spec, tmp_path):
    runner = CliRunner()
    outs = {}
    for name, dataset in (("registered", "mindbigdata-mw-sample"), ("fif", str(mw_spec.parent / "mw-epo.fif")),
                          ("spec", str(mw_spec))):
        outs[name] = tmp_path / name
        res = runner.invoke(cli, ["eeg", "evaluate", "--dataset", dataset, "--data-dir", str(data_dir), "--frontends",
                                  "flatten", "--folds", "2", "--seeds", "1", "--no-control", "--set", "epochs=2",
                                  "--out", str(outs[name]), "--no-progress"])
        assert res.exit_code == 0, res.output
    ref = (outs["registered"] / "results.csv").read_text()
    rows = _rows(outs["registered"] / "results.csv")
    assert sum(r["frontend"] == "flatten" for r in rows) == 174  # every trial scored once (plus mean-template rows)
    assert (outs["fif"] / "results.csv").read_text() == ref
    assert (outs["spec"] / "results.csv").read_text() == ref
