"""Issue 13: bad input never passes silently, and the CLI never loses a user's files.

Every case ends in a named error with a one-line message (no traceback) or is
handled correctly. All of it runs on small synthetic files, without the shared
data folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from cortexflow.cli.main import cli
from cortexflow.data.fetch import cached_sha256
from cortexflow.data.loading import load_dataset, read_arrays
from cortexflow.data.registry import DATASETS, get_dataset_info
from cortexflow.data.validation import infer_stimulus_scale, validate_signals, validate_stimuli
from cortexflow.exceptions import ChecksumError, ConfigError, CortexFlowError, DataValidationError
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.training.config import get_config
from cortexflow.utils.io import OUTPUT_MARKER, atomic_write_json, json_safe

TINY = ["--set", "epochs=2", "--set", "hidden_dim=16", "--set", "embed_dim=8", "--set", "patience=1"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _err_line(res) -> str:
    """The single 'Error: ...' line of a failed command; fails on a traceback or a multi-line message."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def user_file(tmp_path_factory, make_synthetic):
    """A small dataset file of the user's (.npz, stimuli in [0, 1])."""
    X, Y, _ = make_synthetic(n=40, n_features=30, seed=1)
    path = tmp_path_factory.mktemp("data") / "subject.npz"
    np.savez(path, fmriTrn=X[:32], stimTrn=Y[:32], fmriTest=X[32:], stimTest=Y[32:])
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, make_synthetic, tiny_config):
    X, Y, _ = make_synthetic(n=32, n_features=30, seed=2)
    model = CCCV1Decoder(config=tiny_config, random_state=0, device="cpu").fit(X, Y)
    return model.save(tmp_path_factory.mktemp("ckpt") / "checkpoint")


def _mat(path, **over):
    rng = np.random.default_rng(0)
    arrays = {"fmriTrn": rng.normal(size=(8, 5)), "stimTrn": rng.random((8, 784)),
              "fmriTest": rng.normal(size=(2, 5)), "stimTest": rng.random((2, 784))}
    arrays.update(over)
    scipy.io.savemat(path, arrays)
    return path


# ------------------------------------------------------------------ stimulus scale
@pytest.mark.parametrize("values, dtype, scale", [
    ([0, 1], np.float64, 1.0), ([0, 0.5, 1], np.float32, 1.0), ([0, 1], np.uint8, 1.0), ([False, True], bool, 1.0),
    ([0, 17, 255], np.uint8, 255.0), ([0, 200], np.float64, 255.0), ([0, 128], np.int32, 255.0),
])
def test_stimulus_scale_is_inferred_from_dtype_and_range(values, dtype, scale):
    assert infer_stimulus_scale(np.array(values, dtype=dtype)) == scale


@pytest.mark.parametrize("values, dtype, why", [
    ([0, 1.5, 2], np.float64, "fractional values above 1"),
    ([0, 1, 2], np.int64, "a maximum of 2 is too small for an 8-bit image"),
    ([0, 2], np.float32, "a maximum of 2 is too small"),
    ([0, 1000], np.uint16, "whole numbers above 255"),
    ([0, 254.5], np.float64, "fractional values above 1"),
])
def test_unexplained_stimulus_ranges_are_refused(values, dtype, why):
    Y = np.zeros((2, 784), dtype=dtype)
    Y[0, : len(values)] = values
    with pytest.raises(DataValidationError, match=why) as err:
        validate_stimuli(Y, source="f.mat", key="stimTrn")
    assert "stimulus_scale" in str(err.value) and "'stimTrn'" in str(err.value)


def test_stimuli_in_0_2_are_not_divided_by_255(tmp_path):
    path = _mat(tmp_path / "twos.mat", stimTrn=np.random.default_rng(1).random((8, 784)) * 2)
    with pytest.raises(DataValidationError, match=r"values in \[0, 2\]|values in \[\d"):
        load_dataset(path)
    ds = load_dataset(path, stimulus_scale=2)  # an explicit scale is used as given
    assert 0 <= ds.Y_train.min() and ds.Y_train.max() <= 1 and ds.Y_train.max() > 0.9


def test_stimulus_scale_flag_on_the_command_line(tmp_path):
    path = _mat(tmp_path / "twos.mat", stimTrn=np.random.default_rng(1).random((8, 784)) * 2)
    line = _err_line(CliRunner().invoke(cli, ["datasets", "info", str(path)]))
    assert "cannot tell which value stands for white" in line and "--stimulus-scale" in line
    assert CliRunner().invoke(cli, ["datasets", "info", str(path), "--stimulus-scale", "2"]).exit_code == 0
    assert "is not a finite number > 0" in _err_line(CliRunner().invoke(
        cli, ["datasets", "info", str(path), "--stimulus-scale", "nan"]))


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), 0, -255, "255", True])
def test_invalid_stimulus_scale_is_refused(tmp_path, scale):
    with pytest.raises(DataValidationError, match="stimulus_scale=.* is not a finite number > 0"):
        load_dataset(_mat(tmp_path / "d.mat"), stimulus_scale=scale)


# ------------------------------------------------------------------ files and arrays
def test_registered_name_always_verifies_the_checksum(tmp_path, monkeypatch):
    folder = tmp_path / "vangerven"
    folder.mkdir()
    _mat(folder / DATASETS["vangerven"].filename)  # another file under vangerven's name
    with pytest.raises(ChecksumError, match="is not the registered file") as err:
        load_dataset("vangerven", tmp_path, download=False)
    assert DATASETS["vangerven"].sha256 in str(err.value)


def test_verified_hash_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    import cortexflow.data.fetch as fetch

    calls = []
    real = fetch.sha256_file
    monkeypatch.setattr(fetch, "sha256_file", lambda p: calls.append(p) or real(p))
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    first = cached_sha256(path)
    assert cached_sha256(path) == first and len(calls) == 1
    path.write_bytes(b"abcd")  # new size (and mtime): hashed again
    assert cached_sha256(path) != first and len(calls) == 2


def test_complex_signals_are_refused(tmp_path):
    X = np.random.default_rng(0).normal(size=(8, 5)) * (1 + 1j)
    with pytest.raises(DataValidationError, match="'fmriTrn' holds complex values"):
        load_dataset(_mat(tmp_path / "c.mat", fmriTrn=X))


def test_values_that_overflow_float32_are_refused_at_load(tmp_path):
    X = np.random.default_rng(0).normal(size=(8, 5))
    X[2, 3] = 1e300
    with pytest.raises(DataValidationError, match=r"too large for float32 .* first at index \(2, 3\)"):
        load_dataset(_mat(tmp_path / "big.mat", fmriTrn=X))
    res = CliRunner().invoke(cli, ["datasets", "info", str(tmp_path / "big.mat")])
    assert "too large for float32" in _err_line(res)


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.mat").write_bytes(b"")
    with pytest.raises(DataValidationError, match=r"empty\.mat: is empty \(0 bytes\)"):
        load_dataset(tmp_path / "empty.mat")
    assert "is empty (0 bytes)" in _err_line(CliRunner().invoke(cli, ["datasets", "info", str(tmp_path / "empty.mat")]))


def test_directory_passed_as_data_file(tmp_path):
    (tmp_path / "d.mat").mkdir()
    with pytest.raises(DataValidationError, match="is a directory"):
        read_arrays(tmp_path / "d.mat")
    with pytest.raises(DataValidationError, match="is a directory"):
        load_dataset(tmp_path / "d.mat")


def test_empty_dataset_name(tmp_path):
    with pytest.raises(DataValidationError, match="empty dataset name"):
        load_dataset("")
    res = CliRunner().invoke(cli, ["train", "--method", "cccv1", "--dataset", "", "--out", str(tmp_path / "o")])
    assert "empty dataset name" in _err_line(res)


def test_mat_renamed_to_npz_and_back(tmp_path):
    mat = _mat(tmp_path / "d.mat")
    shutil.copy(mat, tmp_path / "d.npz")
    with pytest.raises(DataValidationError, match=r"not an \.npz file \(it looks like a MATLAB file\)"):
        load_dataset(tmp_path / "d.npz")
    np.savez(tmp_path / "e.npz", x=np.zeros(3))
    shutil.copy(tmp_path / "e.npz", tmp_path / "e.mat")
    with pytest.raises(DataValidationError, match=r"not a MATLAB \.mat file \(it looks like an \.npz"):
        load_dataset(tmp_path / "e.mat")


def test_one_training_row_says_so(tmp_path):
    rng = np.random.default_rng(0)
    path = _mat(tmp_path / "one.mat", fmriTrn=rng.normal(size=(1, 5)), stimTrn=rng.random((1, 784)))
    with pytest.raises(DataValidationError, match="has 1 row.*needs at least 2 rows"):
        load_dataset(path)
    X, Y = rng.normal(size=(1, 5)), rng.random((1, 28, 28))
    with pytest.raises(DataValidationError, match="needs at least 4 training samples"):
        CCCV1Decoder().fit(X, Y)


def test_three_d_signals_name_the_dimension():
    with pytest.raises(DataValidationError, match=r"shape \(1, 10, 3092\); expected 2-D .* it is 3-D"):
        validate_signals(np.zeros((1, 10, 3092)))


@pytest.mark.parametrize("typo, suggestion", [("vangervn", "vangerven"), ("Miyawaki", "miyawaki"), ("crel", "crell")])
def test_unknown_dataset_names_get_a_suggestion(typo, suggestion):
    with pytest.raises(ConfigError, match=f"did you mean {suggestion}\\?"):
        get_dataset_info(typo)
    with pytest.raises(DataValidationError, match=f"did you mean {suggestion}\\?"):
        load_dataset(typo)
    assert f"did you mean {suggestion}?" in _err_line(CliRunner().invoke(cli, ["datasets", "fetch", typo]))


def test_failed_train_leaves_no_empty_output_folder(tmp_path):
    out = tmp_path / "runs" / "new"
    line = _err_line(CliRunner().invoke(cli, ["train", "--method", "cccv1", "--dataset", "vangervn", "--out", str(out)]))
    assert "did you mean vangerven?" in line
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ downloads
def test_failed_download_leaves_no_empty_folder(tmp_path):
    from cortexflow.data.fetch import fetch_dataset

    with pytest.raises(CortexFlowError, match="download of dataset 'vangerven'"):
        fetch_dataset("vangerven", tmp_path / "data")  # $CORTEXFLOW_MIRROR is a closed port in the tests
    assert not (tmp_path / "data").exists()


def test_fetch_all_goes_on_past_failures_and_reports_all(tmp_path):
    res = CliRunner().invoke(cli, ["datasets", "fetch", "all", "--data-dir", str(tmp_path / "d"), "--no-progress"])
    assert res.exit_code == 2
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == len(DATASETS) + 1  # one per dataset, then the summary
    for name in DATASETS:
        assert any(ln.startswith(f"Error: {name}: ") for ln in errors)
    assert f"{len(DATASETS)} of {len(DATASETS)} dataset(s) could not be fetched" in errors[-1]
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------ options
@pytest.mark.parametrize("setting, message", [
    ("epochs=inf", "epochs=inf is not an integer"),
    ("epochs=2.7", "epochs=2.7 is not an integer"),
    ("lr_factor=5", "lr_factor=5.0 is out of range"),
    ("lr_factor=-1", "lr_factor=-1.0 is out of range"),
    ("lr_patience=-3", "lr_patience=-3 is out of range"),
    ("loss_weights=[1,2]", r"loss_weights=\[1, 2\] is not a dict"),
    ("loss_weights={\"x\": -1}", r"loss_weights\['x'\]=-1 is not a finite number >= 0"),
    ("lr=nan", "lr=nan is not a finite number"),
])
def test_bad_settings_are_refused_before_any_work(setting, message, tmp_path):
    key, value = setting.split("=", 1)
    with pytest.raises(ConfigError, match=message):
        get_config("small").replace(**{key: value})
    out = tmp_path / "o"
    line = _err_line(CliRunner().invoke(cli, ["train", "--method", "cccv1", "--dataset", "no-such-file.mat", "--out", str(out),
                                              "--set", setting]))
    # refused before the data or the folder were touched, naming the setting
    assert key in line and ("CCCV1Config" in line or "option" in line) and not out.exists()


def test_config_types_are_checked_in_python():
    with pytest.raises(ConfigError, match="epochs=2.7 is not an integer"):
        get_config("small", epochs=2.7)
    with pytest.raises(ConfigError, match="batch_size=True is not an integer"):
        get_config("small", batch_size=True)
    assert get_config("small", epochs=50.0).epochs == 50 and isinstance(get_config("small", epochs=50.0).epochs, int)


@pytest.mark.parametrize("seed", ["-1", "2147483648", "abc"])
def test_train_seed_out_of_range_is_a_usage_error(seed, tmp_path):
    res = CliRunner().invoke(cli, ["train", "--method", "cccv1", "--dataset", "vangerven", "--seed", seed, "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--seed" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("random_state", [None, 3, np.int64(3), np.random.RandomState(0)])
def test_any_sklearn_random_state_works(random_state, make_synthetic, tiny_config, tmp_path):
    X, Y, _ = make_synthetic(n=16, n_features=10)
    model = CCCV1Decoder(config=tiny_config.replace(epochs=1), random_state=random_state, device="cpu").fit(X, Y)
    assert isinstance(model.seed_, int) and model.predict(X[:2]).shape == (2, 28, 28)
    loaded = CCCV1Decoder.load(model.save(tmp_path / "c"), device="cpu")
    assert loaded.random_state == model.seed_ or loaded.random_state == random_state


def test_int_random_state_is_reproducible(make_synthetic, tiny_config):
    X, Y, _ = make_synthetic(n=16, n_features=10)
    a, b = (CCCV1Decoder(config=tiny_config.replace(epochs=1), random_state=5, device="cpu").fit(X, Y) for _ in "ab")
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


@pytest.mark.parametrize("random_state", [-1, 2**31, "seed", 1.5])
def test_invalid_random_state_is_a_config_error(random_state, make_synthetic):
    X, Y, _ = make_synthetic(n=16, n_features=10)
    with pytest.raises(ConfigError, match="random_state="):
        CCCV1Decoder(random_state=random_state).fit(X, Y)


def test_huge_feature_count_warns_before_allocating(caplog):
    model = CCCV1Decoder()
    cfg = get_config("small")
    with caplog.at_level(logging.WARNING, logger="cortexflow.models.estimator"):
        n_params = model._warn_if_huge(200_000, (784,), cfg)
    assert n_params > 200_000 * cfg.hidden_dim
    assert "200000 input features" in caplog.text and "million parameters" in caplog.text and "GB" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cortexflow.models.estimator"):
        model._warn_if_huge(3092, (784,), cfg)
    assert caplog.text == ""


# ------------------------------------------------------------------ JSON
def test_json_never_holds_nan(tmp_path):
    with pytest.raises(CortexFlowError, match=r"value at metrics\.mse\[1\] is nan"):
        atomic_write_json(tmp_path / "m.json", {"metrics": {"mse": [0.1, float("nan")]}})
    assert not (tmp_path / "m.json").exists()
    atomic_write_json(tmp_path / "m.json", json_safe({"a": float("inf"), "b": np.array([1.0, np.nan])}))
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": None, "b": [1.0, None]}


# ------------------------------------------------------------------ output folders
def test_train_refuses_a_foreign_non_empty_folder(user_file, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    args = ["train", "--method", "cccv1", "--dataset", str(user_file), "--out", str(out), "--device", "cpu", "--no-progress", *TINY]
    assert "not written by `cortexflow train`" in _err_line(CliRunner().invoke(cli, args))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    res = CliRunner().invoke(cli, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert (out / "notes.txt").read_text() == "my notes" and (out / OUTPUT_MARKER).is_file()
    res = CliRunner().invoke(cli, args)  # now it is CortexFlow's own folder: re-running needs no flag
    assert res.exit_code == 0, res.output
    assert (out / "notes.txt").read_text() == "my notes"


def test_train_never_deletes_a_users_file_in_the_checkpoint_folder(user_file, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--method", "cccv1", "--dataset", str(user_file), "--out", str(out), "--device", "cpu", "--no-progress", *TINY]
    assert CliRunner().invoke(cli, args).exit_code == 0
    (out / "checkpoint" / "README.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        line = _err_line(CliRunner().invoke(cli, [*args, *extra]))
        assert "did not write (README.txt)" in line
    assert (out / "checkpoint" / "README.txt").read_text() == "keep me"


def test_output_files_have_consistent_permissions(user_file, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", "--method", "cccv1", "--dataset", str(user_file), "--out", str(out), "--device", "cpu",
                                   "--no-progress", *TINY])
    assert res.exit_code == 0, res.output
    umask = _umask()
    for path in [out, *out.rglob("*")]:
        want = (0o777 if path.is_dir() else 0o666) & ~umask
        assert path.stat().st_mode & 0o777 == want, path


def test_unwritable_output_fails_before_any_work(user_file, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = CliRunner().invoke(cli, ["train", "--method", "cccv1", "--dataset", str(user_file), "--out", str(blocker / "run"), *TINY])
    assert "is not writable" in _err_line(res)
    res = CliRunner().invoke(cli, ["train", "--method", "cccv1", "--dataset", str(user_file), "--out", str(blocker), *TINY])
    assert res.exit_code == 2 and "is a file" in res.output  # click's own check of --out


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user (root writes anywhere)")
@pytest.mark.parametrize("command", ["train", "reconstruct", "evaluate"])
def test_read_only_output_folder_fails_first(command, user_file, checkpoint, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    inp = tmp_path / "x.npy"
    np.save(inp, np.zeros((2, 30), dtype=np.float32))
    args = {"train": ["train", "--method", "cccv1", "--dataset", str(user_file), *TINY],
            "reconstruct": ["reconstruct", "--checkpoint", str(checkpoint), "--input", str(inp)],
            "evaluate": ["evaluate", "--checkpoint", str(checkpoint), "--dataset", str(user_file)]}[command]
    try:
        assert "is not writable" in _err_line(CliRunner().invoke(cli, [*args, "--out", str(out)]))
    finally:
        out.chmod(0o700)


@pytest.mark.parametrize("command", ["train", "reconstruct", "evaluate"])
def test_unwritable_output_folder_fails_first_even_as_root(command, user_file, checkpoint, tmp_path, monkeypatch):
    """The same check with the write refused by the operating system stood in for (root ignores chmod)."""
    import cortexflow.utils.io as io

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io.tempfile, "mkstemp", refuse)
    monkeypatch.setattr(CCCV1Decoder, "fit", lambda *a, **k: pytest.fail("training started"))
    monkeypatch.setattr(CCCV1Decoder, "predict", lambda *a, **k: pytest.fail("prediction started"))
    inp = tmp_path / "x.npy"
    np.save(inp, np.zeros((2, 30), dtype=np.float32))
    args = {"train": ["train", "--method", "cccv1", "--dataset", str(user_file), *TINY],
            "reconstruct": ["reconstruct", "--checkpoint", str(checkpoint), "--input", str(inp)],
            "evaluate": ["evaluate", "--checkpoint", str(checkpoint), "--dataset", str(user_file)]}[command]
    line = _err_line(CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "out")]))
    assert "is not writable (Permission denied)" in line


def test_reconstruct_does_not_write_through_a_symlink(checkpoint, tmp_path):
    outside = tmp_path / "precious.png"
    outside.write_bytes(b"precious")
    out = tmp_path / "r"
    out.mkdir()
    (out / "recon_0.png").symlink_to(outside)
    inp = tmp_path / "x.npy"
    np.save(inp, np.random.default_rng(0).normal(size=(2, 30)).astype(np.float32))
    args = ["reconstruct", "--checkpoint", str(checkpoint), "--input", str(inp), "--out", str(out)]
    for extra in ([], ["--overwrite"]):
        assert "is a symbolic link" in _err_line(CliRunner().invoke(cli, [*args, *extra]))
    assert outside.read_bytes() == b"precious" and (out / "recon_0.png").is_symlink()


def test_reconstruct_removes_its_own_stale_images_only(checkpoint, tmp_path):
    out = tmp_path / "r"
    rng = np.random.default_rng(0)
    big, small = tmp_path / "big.npy", tmp_path / "small.npy"
    np.save(big, rng.normal(size=(5, 30)).astype(np.float32))
    np.save(small, rng.normal(size=(2, 30)).astype(np.float32))
    run = ["reconstruct", "--checkpoint", str(checkpoint), "--out", str(out), "--input"]
    assert CliRunner().invoke(cli, [*run, str(big)]).exit_code == 0
    (out / "recon_9.png").write_bytes(b"a user's file with a matching name")
    res = CliRunner().invoke(cli, [*run, str(small)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.glob("recon_*.png")) == ["recon_0.png", "recon_1.png", "recon_9.png"]
    assert np.load(out / "reconstructions.npy").shape == (2, 28, 28)


def test_reconstruct_names_3d_input(checkpoint, tmp_path):
    inp = tmp_path / "x.npy"
    np.save(inp, np.zeros((1, 10, 30), dtype=np.float32))
    line = _err_line(CliRunner().invoke(cli, ["reconstruct", "--checkpoint", str(checkpoint), "--input", str(inp),
                                              "--out", str(tmp_path / "r")]))
    assert "input is 3-D with shape (1, 10, 30)" in line and "features but" not in line
    assert not (tmp_path / "r").exists()


def test_nan_checkpoint_is_refused_by_reconstruct_and_evaluate(checkpoint, user_file, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(checkpoint, bad)
    meta = json.loads((bad / "checkpoint.json").read_text())
    meta["preprocessing"]["signal"]["scale_"][0] = 0.0
    (bad / "checkpoint.json").write_text(json.dumps(meta))
    inp = tmp_path / "x.npy"
    np.save(inp, np.zeros((2, 30), dtype=np.float32))
    for args in (["reconstruct", "--input", str(inp), "--out", str(tmp_path / "r")],
                 ["evaluate", "--dataset", str(user_file), "--out", str(tmp_path / "e")]):
        line = _err_line(CliRunner().invoke(cli, [*args, "--checkpoint", str(bad)]))
        assert "scale_' holds 1 value(s) <= 0" in line
    assert not (tmp_path / "r").exists() and not (tmp_path / "e").exists()


def test_evaluate_writes_standard_json(checkpoint, user_file, tmp_path):
    res = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(checkpoint), "--dataset", str(user_file),
                                   "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "e" / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert set(json.loads(res.stdout)) == {"mse", "pearson", "ssim", "psnr", "two_way"}


def test_written_files_respect_the_umask(tmp_path):
    from cortexflow.utils.io import atomic_write_text, check_writable_dir

    old = os.umask(0o077)
    try:
        path = atomic_write_text(tmp_path / "a" / "f.txt", "x")
        folder = check_writable_dir(tmp_path / "b")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600 and folder.stat().st_mode & 0o777 == 0o700
