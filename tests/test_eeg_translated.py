"""The design's translated 3092-dim EEG files keep working through the dataset layer,
and the EEG benchmark methods run on them through the benchmark protocol."""

from __future__ import annotations

import numpy as np
import pytest

from cortexflow.data import load_dataset
from cortexflow.data.fetch import dataset_path
from cortexflow.data.stimuli import CRELL_LETTERS, load_stimulus_folder


@pytest.fixture
def crell_dir(data_dir):
    """The data folder, when it holds the crell file (the test skips otherwise)."""
    if not dataset_path("crell", data_dir).is_file():
        pytest.skip(f"{dataset_path('crell', data_dir)} not found")
    return data_dir


def test_crell_translated_loads_through_load_dataset(crell_dir):
    data_dir = crell_dir
    ds = load_dataset("crell", data_dir, download=False)
    assert ds.X_train.shape == (40, 3092) and ds.X_test.shape == (10, 3092)
    assert ds.Y_train.shape == (40, 28, 28) and 0 <= ds.Y_train.min() and ds.Y_train.max() <= 1
    assert ds.metadata["modality"] == "eeg-translated" and ds.metadata["format_tests_only"]
    labels = np.concatenate([ds.labels_train, ds.labels_test])
    images = np.concatenate([ds.Y_train, ds.Y_test])
    assert sorted(set(labels.tolist())) == list(range(1, 11))
    for k in range(1, 11):  # one template image per label
        same = images[labels == k]
        np.testing.assert_array_equal(same, np.broadcast_to(same[0], same.shape))
    folder = data_dir / "stimuli" / "crell_letters"
    if folder.is_dir():  # label k is the letter CRELL_LETTERS[k - 1] (dark glyph on white in this file)
        letters, _ = load_stimulus_folder(folder, CRELL_LETTERS, invert=False)
        for k in range(1, 11):
            corr = [np.corrcoef(images[labels == k][0].ravel(), im.ravel())[0, 1] for im in letters]
            assert int(np.argmax(corr)) == k - 1


@pytest.mark.parametrize("method, options", [("cccv1-eeg-flatten", {}), ("cccv1-eeg-eegnet", {"n_channels": 4})])
def test_eeg_methods_run_in_the_benchmark_protocol(crell_dir, method, options):
    data_dir = crell_dir
    from cortexflow.benchmark.methods import list_methods
    from cortexflow.benchmark.tasks import Task, run_task

    assert method in list_methods()  # a built-in method (cortexflow.benchmark.builtin)
    ds = load_dataset("crell", data_dir, download=False)
    task = Task(dataset="crell", dataset_name="crell", checksum=ds.checksum, method=method, split="official",
                fold=0, n_folds=0, split_seed=0, seed=0, fast=True, options=tuple(sorted(options.items())),
                data_dir=str(data_dir))
    res = run_task(task)
    assert res.predictions.shape == (10, 28, 28) and len(res.rows) == 10
    assert all(np.isfinite(r["two_way"]) for r in res.rows)


def test_epochs_saved_as_a_dataset_file_run_in_the_benchmark(tmp_path):
    """Raw-EEG epochs -> .npz dataset file -> load_dataset -> an EEG method in the benchmark protocol."""
    from cortexflow.benchmark.tasks import Task, run_task
    from cortexflow.data.eeg import save_eeg_dataset, simulate_evoked_eeg
    from cortexflow.data.stimuli import class_images

    ep = simulate_evoked_eeg(n_per_class=5, class_names=("0", "1", "2", "3"), n_times=32, seed=0)
    f = save_eeg_dataset(ep, class_images(ep.class_names), tmp_path / "sim_eeg.npz", test_fraction=0.25)
    ds = load_dataset(f)
    assert ds.X_train.shape == (15, 14 * 32) and ds.X_test.shape == (5, 14 * 32)
    assert set(ds.labels_test.tolist()) == {0, 1, 2, 3}  # stratified: every class in the test split
    row = ds.X_train[0].reshape(14, 32)  # rows are epochs flattened channel after channel
    assert any(np.allclose(row, e) for e in ep.data)
    task = Task(dataset=str(f), dataset_name="sim_eeg", checksum=ds.checksum, method="cccv1-eeg-shallow",
                split="official", fold=0, n_folds=0, split_seed=0, seed=0, fast=True,
                options=(("n_channels", 14), ("sfreq", 128.0)))
    res = run_task(task)
    assert res.predictions.shape == (5, 28, 28)



def test_degenerate_hint_names_a_flag_that_exists(data_dir, tmp_path):
    """``train`` refuses the degenerate mindbigdata file; its hint names an option that exists."""
    from click.testing import CliRunner

    from cortexflow.cli.main import cli

    if not dataset_path("mindbigdata", data_dir).is_file():
        pytest.skip("mindbigdata file not in the data folder")
    res = CliRunner().invoke(cli, ["train", "--method", "cccv1", "--dataset", "mindbigdata", "--data-dir", str(data_dir),
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "cortexflow datasets info NAME --allow-degenerate" in res.stderr
    info = cli.commands["datasets"].commands["info"]
    assert "--allow-degenerate" in {o for p in info.params for o in p.opts}
    assert "allow_degenerate" not in {o for p in cli.commands["train"].params for o in p.opts}
