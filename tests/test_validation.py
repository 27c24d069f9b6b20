"""Every kind of bad input gives a DataValidationError that names the file, the key and the value."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from cortexflow.data.loading import load_dataset
from cortexflow.data.registry import DATASETS
from cortexflow.data.validation import validate_signals, validate_stimuli
from cortexflow.exceptions import DataValidationError


def good_arrays(n_train: int = 8, n_test: int = 4, n_features: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "fmriTrn": rng.normal(size=(n_train, n_features)),
        "stimTrn": rng.integers(0, 256, size=(n_train, 784)).astype(np.uint8),
        "fmriTest": rng.normal(size=(n_test, n_features)),
        "stimTest": rng.integers(0, 256, size=(n_test, 784)).astype(np.uint8),
        "labelTrn": np.arange(n_train).reshape(-1, 1) % 2,
        "labelTest": np.arange(n_test).reshape(-1, 1) % 2,
    }


def write_mat(tmp_path, arrays, name: str = "bad.mat"):
    path = tmp_path / name
    scipy.io.savemat(path, arrays)
    return path


def load_error(path, **kw) -> str:
    with pytest.raises(DataValidationError) as err:
        load_dataset(path, **kw)
    return str(err.value)


def assert_names(msg: str, *parts) -> None:
    for p in parts:
        assert str(p) in msg, f"{p!r} not in message: {msg}"


def test_good_file_loads(tmp_path):
    ds = load_dataset(write_mat(tmp_path, good_arrays(), "good.mat"))
    assert ds.X_train.shape == (8, 12) and ds.Y_test.shape == (4, 28, 28)


def test_missing_key(tmp_path):
    arrays = good_arrays()
    del arrays["stimTest"]
    path = write_mat(tmp_path, arrays)
    assert_names(load_error(path), path, "missing key", "'stimTest'", "fmriTrn")


def test_mismatched_row_counts(tmp_path):
    arrays = good_arrays()
    arrays["stimTrn"] = arrays["stimTrn"][:7]
    path = write_mat(tmp_path, arrays)
    assert_names(load_error(path), path, "'fmriTrn' has 8 rows", "'stimTrn' has 7")


def test_wrong_pixel_count(tmp_path):
    arrays = good_arrays()
    arrays["stimTrn"] = arrays["stimTrn"][:, :700]
    path = write_mat(tmp_path, arrays)
    assert_names(load_error(path), path, "'stimTrn'", "700 pixels", "784")


def test_test_features_differ_from_train(tmp_path):
    arrays = good_arrays()
    arrays["fmriTest"] = arrays["fmriTest"][:, :10]
    path = write_mat(tmp_path, arrays)
    assert_names(load_error(path), path, "'fmriTest'", "10 features", "expected 12")


def test_nan_in_signals(tmp_path):
    arrays = good_arrays()
    arrays["fmriTrn"][3, 5] = np.nan
    path = write_mat(tmp_path, arrays)
    assert_names(load_error(path), path, "'fmriTrn'", "NaN", "row 3", "column 5", "nan")


def test_inf_in_signals(tmp_path):
    arrays = good_arrays()
    arrays["fmriTest"][1, 2] = -np.inf
    arrays["fmriTest"][2, 0] = np.inf
    path = write_mat(tmp_path, arrays)
    assert_names(load_error(path), path, "'fmriTest'", "2 NaN or Inf", "row 1", "column 2", "-inf")


def test_nan_in_stimuli(tmp_path):
    arrays = good_arrays()
    arrays["stimTest"] = arrays["stimTest"].astype(np.float64)
    arrays["stimTest"][0, 10] = np.nan
    path = write_mat(tmp_path, arrays)
    assert_names(load_error(path), path, "'stimTest'", "NaN", "row 0", "column 10")


def test_stimulus_out_of_range(tmp_path):
    arrays = good_arrays()
    arrays["stimTrn"] = arrays["stimTrn"].astype(np.int16)
    arrays["stimTrn"][0, 0] = -3
    path = write_mat(tmp_path, arrays)
    assert_names(load_error(path), path, "'stimTrn'", "-3", "expected [0, 255")


def test_non_numeric_data(tmp_path):
    arrays = good_arrays()
    arrays["fmriTrn"] = np.array(["voxel", "data!"])
    path = write_mat(tmp_path, arrays)
    assert isinstance(scipy.io.loadmat(path)["fmriTrn"].dtype.type(), np.str_)  # really a string array
    assert_names(load_error(path), path, "'fmriTrn'", "non-numeric", "<U5")


def test_non_numeric_labels(tmp_path):
    arrays = good_arrays()
    arrays["labelTest"] = np.array(["a", "b", "c", "d"])
    path = write_mat(tmp_path, arrays)
    assert_names(load_error(path), path, "'labelTest'", "non-numeric")


def test_label_count_mismatch(tmp_path):
    arrays = good_arrays()
    arrays["labelTrn"] = arrays["labelTrn"][:5]
    path = write_mat(tmp_path, arrays)
    assert_names(load_error(path), path, "'labelTrn'", "5 labels", "8 rows")


def test_truncated_mat(tmp_path, data_dir):
    src = data_dir / "vangerven" / DATASETS["vangerven"].filename
    if not src.is_file():
        pytest.skip(f"{src} not found")
    data = src.read_bytes()
    path = tmp_path / "truncated.mat"
    path.write_bytes(data[: len(data) // 2])
    assert_names(load_error(path), path, "cannot be read as a MATLAB .mat file", "truncated")


def test_non_mat_file(tmp_path):
    path = tmp_path / "notes.mat"
    path.write_text("this is a text file, not MATLAB data\n" * 20)
    assert_names(load_error(path), path, "cannot be read as a MATLAB .mat file", "another format")


def test_non_npz_file(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("this is a text file\n" * 20)
    assert_names(load_error(path), path, "cannot be read as an .npz archive")


def test_identical_rows(tmp_path):
    arrays = good_arrays()
    arrays["fmriTrn"][:] = arrays["fmriTrn"][0]
    path = write_mat(tmp_path, arrays)
    assert_names(load_error(path), path, "'fmriTrn'", "all 8 rows are identical", "allow_degenerate")
    assert load_dataset(path, allow_degenerate=True).X_train.shape == (8, 12)


def test_constant_row(tmp_path):
    arrays = good_arrays()
    arrays["fmriTest"][2] = 0.5
    path = write_mat(tmp_path, arrays)
    assert_names(load_error(path), path, "'fmriTest'", "1 constant row", "row 2", "0.5")


def test_validate_signals_on_arrays():
    with pytest.raises(DataValidationError, match=r"<array>: key 'X' has shape \(5,\); expected 2-D"):
        validate_signals(np.arange(5.0))
    with pytest.raises(DataValidationError, match=r"key 'X' is empty"):
        validate_signals(np.zeros((0, 3)))
    with pytest.raises(DataValidationError, match=r"has 4 features per row; expected 3"):
        validate_signals(np.random.default_rng(0).normal(size=(2, 4)), n_features=3)
    out = validate_signals(np.arange(6).reshape(2, 3))
    assert out.dtype == np.float32


def test_validate_stimuli_shapes_and_order():
    assert validate_stimuli(np.zeros((2, 27, 28))).shape == (2, 27, 28)  # any size from 8 to 256 (issue 18)
    with pytest.raises(DataValidationError, match=r"images of 7 x 28 pixels; height and width must each be between 8 and 256"):
        validate_stimuli(np.zeros((2, 7, 28)))
    with pytest.raises(DataValidationError, match=r"images of shape \(27, 28\); expected \(28, 28\)"):
        validate_stimuli(np.zeros((2, 27, 28)), image_shape=(28, 28))
    with pytest.raises(DataValidationError, match=r"pixel_order 'X' is not one of"):
        validate_stimuli(np.zeros((2, 784)), pixel_order="X")
    img = np.zeros((1, 28, 28))
    img[0, 0, 5] = 255  # row 0, column 5
    assert validate_stimuli(img.reshape(1, 784), pixel_order="C")[0, 0, 5] == 1.0
    assert validate_stimuli(img.reshape(1, 784, order="F"), pixel_order="F")[0, 0, 5] == 1.0
