"""Data set spec files (cortexflow.data.spec): formats, trial tables, splits, the cache, and one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cortexflow.cli.main import cli
from cortexflow.data.eeg.registered import load_eeg
from cortexflow.data.loading import load_dataset
from cortexflow.data.spec import read_spec_data, spec_cache_dir
from cortexflow.data.splits import iter_splits, split_data
from cortexflow.exceptions import ConfigError, DataValidationError

nib = pytest.importorskip("nibabel")
Image = pytest.importorskip("PIL.Image")

RNG = np.random.default_rng(1)


def write_table(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t" if path.suffix == ".tsv" else ",")
        w.writerow(header)
        w.writerows(rows)
    return path


def write_spec(folder: Path, text: str, name: str = "spec.toml") -> Path:
    p = folder / name
    p.write_text(text)
    return p


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("CORTEXFLOW_CACHE", str(root))
    return spec_cache_dir()


@pytest.fixture
def arrays_spec(tmp_path, cache):
    """12 trials of 30 features, 6 images of 20x16 shown twice, a TSV table with split, run and label."""
    X = RNG.normal(size=(12, 30)).astype(np.float32)
    imgs = RNG.integers(0, 256, size=(6, 20, 16), dtype=np.uint8)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "stim.npy", imgs)
    stim = [i % 6 for i in range(12)]
    rows = [[f"t{i}", stim[i], "test" if i in (4, 11) else "train", i // 6, ["cat", "dog"][i % 2]] for i in range(12)]
    write_table(tmp_path / "trials.tsv", ["trial", "stim", "split", "run", "kind"], rows)
    spec = write_spec(tmp_path, '[signals]\npath = "X.npy"\n[stimuli]\npath = "stim.npy"\n'
                      '[trials]\ntable = "trials.tsv"\nid = "trial"\nstimulus = "stim"\nsplit = "split"\n'
                      'group = "run"\nlabel = "kind"\n')
    return spec, X, imgs, stim


def test_array_files_and_a_trial_table(arrays_spec):
    spec, X, imgs, stim = arrays_spec
    ds = load_dataset(spec)
    train = [i for i in range(12) if i not in (4, 11)]
    assert np.array_equal(ds.X_train, X[train]) and np.array_equal(ds.X_test, X[[4, 11]])
    assert ds.Y_train.shape == (10, 20, 16)
    assert np.array_equal(ds.Y_test, imgs[[stim[4], stim[11]]].astype(np.float32) / np.float32(255))
    assert ds.labels_train.tolist() == [i % 2 for i in train] and ds.metadata["label_names"] == ["cat", "dog"]
    assert ds.metadata["groups_train"].tolist() == [i // 6 for i in train]
    assert ds.metadata["trial_ids_test"] == ["t4", "t11"] and ds.metadata["has_official_split"]
    X_tr, Y_tr, X_te, Y_te, _ = split_data(ds, "official")
    assert len(X_te) == 2


def test_a_spec_without_split_column_offers_kfold_and_novel_stimulus_only(tmp_path, cache):
    np.save(tmp_path / "X.npy", RNG.normal(size=(8, 5)))
    np.save(tmp_path / "Y.npy", RNG.random((8, 10, 10)))
    spec = write_spec(tmp_path, '[signals]\npath = "X.npy"\n[stimuli]\npath = "Y.npy"\n')
    ds = load_dataset(spec)
    assert ds.X_train.shape == (8, 5) and ds.X_test.shape == (0, 5) and not ds.metadata["has_official_split"]
    with pytest.raises(ConfigError, match="only the kfold and novel-stimulus splits can be used"):
        list(iter_splits(ds, "official"))
    assert len(list(iter_splits(ds, "kfold", n_folds=2))) == 2
    res = CliRunner().invoke(cli, ["benchmark", "--datasets", str(spec), "--methods", "mean-image", "--split",
                                   "official", "--seeds", "1", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "use --split kfold or --split novel-stimulus" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_flat_rows_column_major_and_rgb_channel_first(tmp_path, cache):
    imgs = RNG.random((4, 9, 12)).astype(np.float32)
    rgb = RNG.random((4, 3, 10, 10)).astype(np.float32)
    np.save(tmp_path / "X.npy", RNG.normal(size=(4, 6)))
    np.savez(tmp_path / "stim.npz", flat=imgs.reshape(4, -1, order="F"), rgb=rgb)
    spec = write_spec(tmp_path, '[signals]\npath = "X.npy"\n[stimuli]\npath = "stim.npz"\nkey = "flat"\n'
                      'size = [9, 12]\npixel_order = "column-major"\n')
    assert np.array_equal(read_spec_data(spec).Y, imgs)
    spec = write_spec(tmp_path, '[signals]\npath = "X.npy"\n[stimuli]\npath = "stim.npz"\nkey = "rgb"\n', "rgb.toml")
    d = read_spec_data(spec)
    assert d.Y.shape == (4, 10, 10, 3) and np.array_equal(d.Y, np.moveaxis(rgb, 1, -1))
    assert d.metadata["color"] == "rgb"


def test_nifti_and_png_folder_with_resizing(tmp_path, cache):
    data = RNG.normal(size=(3, 4, 2, 6)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "betas.nii"))
    mask = np.zeros((3, 4, 2), np.uint8)
    mask[1:, :, 0] = 1
    nib.save(nib.Nifti1Image(mask, np.eye(4)), str(tmp_path / "mask.nii"))
    (tmp_path / "img").mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "img" / f"{name}.png")
    write_table(tmp_path / "t.csv", ["image", "split"], [[n, s] for n, s in zip("abcabc", ["train"] * 5 + ["test"])])
    spec = write_spec(tmp_path, '[signals]\npath = "betas.nii"\nmask = "mask.nii"\n'
                      '[stimuli]\npath = "img"\nsize = [32, 32]\ncolor = "rgb"\n'
                      '[trials]\ntable = "t.csv"\nstimulus = "image"\nsplit = "split"\n')
    ds = load_dataset(spec)
    assert ds.X_train.shape == (5, 8) and ds.Y_train.shape == (5, 32, 32, 3) and ds.metadata["modality"] == "fmri"
    assert np.array_equal(ds.X_train, data[mask != 0].T[:5]) and np.array_equal(ds.Y_train[0], ds.Y_train[3])
    assert ds.metadata["voxel_indices"].shape == (8, 3) and ds.metadata["voxel_coords"].shape == (8, 3)


def test_the_cache_is_used_verified_and_rebuilt(arrays_spec, cache):
    spec, X, _, _ = arrays_spec
    first = read_spec_data(spec)
    entries = list(cache.glob("*.npz"))
    assert not first.from_cache and len(entries) == 1
    second = read_spec_data(spec)
    assert second.from_cache and np.array_equal(second.X, first.X) and np.array_equal(second.Y, first.Y)
    assert second.trial_ids == first.trial_ids and second.metadata["label_names"] == ["cat", "dog"]
    # a damaged entry (valid npz, wrong content) is detected by its own checksum and rebuilt
    with np.load(entries[0]) as z:
        content = {k: z[k] for k in z.files}
    content["Y"] = content["Y"] * 0.5
    np.savez(entries[0], **content)
    third = read_spec_data(spec)
    assert not third.from_cache and np.array_equal(third.Y, first.Y)
    assert read_spec_data(spec).from_cache  # rebuilt and valid again
    # a changed source file gives another key
    np.save(spec.parent / "X.npy", X * 2)
    fourth = read_spec_data(spec)
    assert not fourth.from_cache and np.array_equal(fourth.X, X * 2) and len(list(cache.glob("*.npz"))) == 2


def test_mne_epochs_spec_feeds_the_eeg_pathway(tmp_path, cache):
    mne = pytest.importorskip("mne")
    data = RNG.normal(size=(6, 2, 30)) * 1e-5
    info = mne.create_info(["C3", "C4"], 50.0, ch_types="eeg")
    events = np.column_stack([np.arange(6) * 50, np.zeros(6, int), np.ones(6, int)])
    mne.EpochsArray(data, info, events=events, event_id={"x": 1}, verbose="error").save(
        tmp_path / "s-epo.fif", verbose="error")
    write_table(tmp_path / "t.csv", ["digit", "run"], [[i % 3, i // 3] for i in range(6)])
    spec = write_spec(tmp_path, '[signals]\npath = "s-epo.fif"\npicks = ["C4"]\n'
                      '[trials]\ntable = "t.csv"\nlabel = "digit"\ngroup = "run"\n')
    ep = load_eeg(spec)
    assert ep.ch_names == ("C4",) and ep.labels.tolist() == [0, 1, 2, 0, 1, 2] and ep.class_names == ("0", "1", "2")
    assert ep.groups.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(ep.data, data[:, [1]].astype(np.float32))
    res = CliRunner().invoke(cli, ["datasets", "check", str(spec), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["n_channels"] == 1


def test_datasets_check_prints_the_facts(arrays_spec):
    spec = arrays_spec[0]
    res = CliRunner().invoke(cli, ["datasets", "check", str(spec), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert (info["n_train"], info["n_test"], info["n_features"], info["image_shape"]) == (10, 2, 30, [20, 16])
    assert info["n_unique_stimuli"] == 6 and info["n_test_seen_in_train"] == 2
    assert info["repeats"] == {"min": 2, "max": 2, "mean": 2.0} and info["groups"] == 2
    assert info["splits"] == ["official", "kfold", "novel-stimulus", "stratified"] and info["memory_mb"] > 0  # labelled


# ------------------------------------------------------------------ errors
def _case(tmp_path: Path, case: str) -> Path:
    """A spec with one defect."""
    np.save(tmp_path / "X.npy", RNG.normal(size=(4, 5)))
    np.savez(tmp_path / "s.npz", stim=RNG.random((4, 10, 10)))
    (tmp_path / "img").mkdir(exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (12, 12), dtype=np.uint8)).save(tmp_path / "img" / "a.png")
    Image.fromarray(RNG.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "img" / "b.png")
    Image.fromarray(RNG.integers(0, 256, (300, 300), dtype=np.uint8)).save(tmp_path / "img" / "big.png")
    sig = '[signals]\npath = "X.npy"\n'
    table = '[trials]\ntable = "t.csv"\nstimulus = "s"\n'
    if case == "missing file":
        return write_spec(tmp_path, '[signals]\npath = "nope.npy"\n[stimuli]\npath = "s.npz"\n')
    if case == "wrong key":
        return write_spec(tmp_path, sig + '[stimuli]\npath = "s.npz"\nkey = "stimuli"\n')
    if case == "absent image":
        write_table(tmp_path / "t.csv", ["s"], [["a.png"], ["a"], ["a.png"], ["c.png"]])
        return write_spec(tmp_path, sig + '[stimuli]\npath = "img"\n' + table)
    if case == "mismatched counts":
        write_table(tmp_path / "t.csv", ["s"], [[0], [1], [2]])
        return write_spec(tmp_path, sig + '[stimuli]\npath = "s.npz"\n' + table)
    if case == "duplicate ids":
        write_table(tmp_path / "t.csv", ["s", "id"], [[0, "a"], [1, "b"], [2, "a"], [3, "c"]])
        return write_spec(tmp_path, sig + '[stimuli]\npath = "s.npz"\n' + table + 'id = "id"\n')
    if case == "too big":
        write_table(tmp_path / "t.csv", ["s"], [["big.png"]] * 4)
        return write_spec(tmp_path, sig + '[stimuli]\npath = "img"\n' + table)
    if case == "mixed colour":
        write_table(tmp_path / "t.csv", ["s"], [["a.png"], ["b.png"], ["a.png"], ["b.png"]])
        return write_spec(tmp_path, sig + '[stimuli]\npath = "img"\n' + table)
    if case == "bad split value":
        write_table(tmp_path / "t.csv", ["s", "sp"], [[0, "train"], [1, "Train"], [2, "validation"], [3, "test"]])
        return write_spec(tmp_path, sig + '[stimuli]\npath = "s.npz"\n' + table + 'split = "sp"\n')
    if case == "bad toml":
        return write_spec(tmp_path, '[signals]\npath = X.npy\n')
    if case == "unknown key":
        return write_spec(tmp_path, sig + '[stimuli]\npath = "s.npz"\ncolour = "rgb"\n')
    raise AssertionError(case)


ERRORS = {
    "missing file": (DataValidationError, r"\[signals\] path = 'nope.npy': .*nope.npy does not exist"),
    "wrong key": (DataValidationError, r"s.npz: no key 'stimuli'; keys in the file: \['stim'\]"),
    "absent image": (DataValidationError, r"t.csv: row 5 names stimulus 'c.png', which is not an image in"),
    "mismatched counts": (DataValidationError, r"4 signal rows but the trial table t.csv lists 3 trials"),
    "duplicate ids": (DataValidationError, r"duplicate trial id 'a' in rows 2 and 4 \(column 'id'\)"),
    "too big": (DataValidationError, r"big.png is 300x300 px; images must be 8..256 px per side"),
    "mixed colour": (DataValidationError, r"b.png is rgb but a.png is grayscale; grayscale and RGB images are mixed"),
    "bad split value": (DataValidationError, r"row 4, column 'sp': 'validation' is not a split; allowed: train, test"),
    "bad toml": (ConfigError, r"spec.toml: not a valid TOML file \(Invalid value"),
    "unknown key": (ConfigError, r"unknown key\(s\) \['colour'\] in \[stimuli\]; allowed: .*color"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_each_error_is_one_line_exit_2_and_nothing_is_written(tmp_path, cache, case):
    spec = _case(tmp_path, case)
    kind, pattern = ERRORS[case]
    with pytest.raises(kind, match=pattern):
        read_spec_data(spec)
    res = CliRunner().invoke(cli, ["datasets", "check", str(spec)])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert not cache.exists() or not any(cache.iterdir())


def test_the_docs_hdf5_and_mat73_example(tmp_path, cache):
    h5py = pytest.importorskip("h5py")
    from test_readers import write_mat73

    X = RNG.normal(size=(6, 9)).astype(np.float32)
    imgs = RNG.random((3, 64, 64))
    with h5py.File(tmp_path / "sub01_betas.h5", "w") as f:
        f.create_dataset("visual/betas", data=X)
    write_mat73(tmp_path / "stimuli.mat", {"images": imgs.reshape(3, -1, order="F")})
    write_table(tmp_path / "trials.csv", ["image_index", "split", "session"],
                [[i % 3, "test" if i == 5 else "train", i // 3] for i in range(6)])
    spec = write_spec(tmp_path, '[signals]\npath = "sub01_betas.h5"\nkey = "visual/betas"\n'
                      '[stimuli]\npath = "stimuli.mat"\nkey = "images"\nsize = [64, 64]\npixel_order = "column-major"\n'
                      '[trials]\ntable = "trials.csv"\nstimulus = "image_index"\nsplit = "split"\ngroup = "session"\n')
    ds = load_dataset(spec)
    assert np.array_equal(ds.X_test, X[[5]]) and ds.Y_train.shape == (5, 64, 64)
    assert np.array_equal(ds.Y_test[0], imgs[2].astype(np.float32))
    assert ds.metadata["groups_test"].tolist() == [1]


def test_mne_epochs_with_stimuli_flatten_into_rows(tmp_path, cache):
    mne = pytest.importorskip("mne")
    data = RNG.normal(size=(4, 2, 10)) * 1e-5
    events = np.column_stack([np.arange(4) * 20, np.zeros(4, int), [1, 2, 1, 2]])
    mne.EpochsArray(data, mne.create_info(["a", "b"], 100.0, "eeg"), events=events, event_id={"p": 1, "q": 2},
                    verbose="error").save(tmp_path / "s-epo.fif", verbose="error")
    (tmp_path / "img").mkdir()
    for name in ("p", "q"):
        Image.fromarray(RNG.integers(0, 256, (16, 16), dtype=np.uint8)).save(tmp_path / "img" / f"{name}.png")
    write_table(tmp_path / "t.csv", ["cls"], [["p"], ["q"], ["p"], ["q"]])
    spec = write_spec(tmp_path, '[signals]\npath = "s-epo.fif"\n[stimuli]\npath = "img"\n'
                      '[trials]\ntable = "t.csv"\nstimulus = "cls"\nlabel = "cls"\n')
    ds = load_dataset(spec)
    assert ds.X_train.shape == (4, 20) and np.array_equal(ds.X_train, data.reshape(4, -1).astype(np.float32))
    assert ds.labels_train.tolist() == [0, 1, 0, 1] and ds.metadata["modality"] == "eeg"
    assert np.array_equal(ds.Y_train[0], ds.Y_train[2]) and not np.array_equal(ds.Y_train[0], ds.Y_train[1])


def test_pixel_order_on_the_command_line(tmp_path):
    imgs = np.zeros((3, 28, 28), dtype=np.float32)
    imgs[:, :, :5] = 1  # a vertical bar: transposed it would be horizontal
    np.savez(tmp_path / "d.npz", fmriTrn=RNG.normal(size=(3, 4)), fmriTest=RNG.normal(size=(1, 4)),
             stimTrn=imgs.reshape(3, -1, order="F"), stimTest=imgs[:1].reshape(1, -1, order="F"))
    res = CliRunner().invoke(cli, ["datasets", "info", str(tmp_path / "d.npz"), "--pixel-order", "column-major",
                                   "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["pixel_order"] == "F"
    assert np.array_equal(load_dataset(tmp_path / "d.npz", pixel_order="F").Y_train, imgs)
    res = CliRunner().invoke(cli, ["datasets", "info", str(tmp_path / "d.npz"), "--pixel-order", "diagonal"])
    assert res.exit_code == 2 and "'diagonal' is not one of" in res.output


def test_a_nifti_or_epochs_file_given_directly_points_to_a_spec(tmp_path):
    for name in ("betas.nii.gz", "sub01-epo.fif"):
        (tmp_path / name).write_bytes(b"\x00" * 64)
        with pytest.raises(DataValidationError, match="describe it with its mask, stimuli and trials in a spec file"):
            load_dataset(tmp_path / name)


def test_npy_signals_are_not_copied_into_the_cache(arrays_spec, cache):
    spec, X, _, _ = arrays_spec
    read_spec_data(spec)
    (entry,) = cache.glob("*.npz")
    with np.load(entry) as z:
        assert "X" not in z.files and "Y" in z.files
    again = read_spec_data(spec)
    assert again.from_cache and np.array_equal(again.X, X)


def test_kfold_keeps_the_groups_of_the_trial_table_apart(arrays_spec, tmp_path):
    spec = arrays_spec[0]
    ds = load_dataset(spec)
    groups = ds.metadata["groups_train"]
    folds = list(iter_splits(ds, "kfold", n_folds=2, seed=0))
    assert len(folds) == 2
    for f in folds:
        assert not set(groups[f.train]) & set(groups[f.test])
    with pytest.raises(ConfigError, match="keeps runs/sessions .* apart, and there are 2; use between 2 and 2 folds"):
        list(iter_splits(ds, "kfold", n_folds=3))
    res = CliRunner().invoke(cli, ["benchmark", "--datasets", str(spec), "--methods", "mean-image", "--split", "kfold",
                                   "--folds", "3", "--seeds", "1", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "use between 2 and 2 folds" in res.output
    res = CliRunner().invoke(cli, ["benchmark", "--datasets", str(spec), "--methods", "mean-image", "--split", "kfold",
                                   "--folds", "2", "--seeds", "1", "--out", str(tmp_path / "ok")])
    assert res.exit_code == 0, res.output
    assert "group K-fold" in (tmp_path / "ok" / "summary.md").read_text()
