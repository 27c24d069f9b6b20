"""Loading the registered datasets and a user's own .mat / .npz files."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from cortexflow.data.loading import REQUIRED_KEYS, BrainDataset, load_dataset
from cortexflow.data.registry import DATASETS
from cortexflow.exceptions import DataValidationError


def _check_images(Y: np.ndarray, n: int) -> None:
    assert Y.shape == (n, 28, 28)
    assert Y.dtype == np.float32
    assert Y.min() >= 0.0 and Y.max() <= 1.0
    assert Y.max() == pytest.approx(1.0)  # the scale was divided out, not left at 255


def test_vangerven_shapes_and_range(vangerven):
    ds = vangerven
    assert isinstance(ds, BrainDataset) and ds.name == "vangerven"
    assert ds.X_train.shape == (90, 3092) and ds.X_test.shape == (10, 3092)
    assert ds.X_train.dtype == np.float32 and ds.n_features == 3092
    _check_images(ds.Y_train, 90)
    _check_images(ds.Y_test, 10)
    assert set(np.unique(ds.labels_train)) == {1, 2}  # 1 = six, 2 = nine
    assert len(ds.labels_test) == 10
    assert ds.checksum == DATASETS["vangerven"].sha256 == ds.metadata["sha256"]
    assert ds.metadata["pixel_order"] == "F" and ds.metadata["registered"]


def test_vangerven_matches_raw_file_in_column_major_order(vangerven, data_dir):
    raw = scipy.io.loadmat(data_dir / "vangerven" / DATASETS["vangerven"].filename)
    expected = raw["stimTrn"].astype(np.float32).reshape(-1, 28, 28, order="F") / 255.0
    np.testing.assert_array_equal(vangerven.Y_train, expected)
    transposed = raw["stimTrn"].astype(np.float32).reshape(-1, 28, 28, order="C") / 255.0
    assert not np.allclose(vangerven.Y_train, transposed)
    np.testing.assert_allclose(vangerven.X_train, raw["fmriTrn"].astype(np.float32))


def test_vangerven_digits_are_upright(vangerven):
    """A 6 has its loop at the bottom, a 9 at the top: the 6s' extra ink lies low, not to one side.

    On the mean images, the difference six - nine is positive in the lower half
    and negative in the upper half. Transposed (the classic C-order mistake), the
    same difference would split left/right instead.
    """
    ds = vangerven
    six = ds.Y_train[ds.labels_train == 1].mean(axis=0)
    nine = ds.Y_train[ds.labels_train == 2].mean(axis=0)
    diff = six - nine
    vertical = diff[14:].sum() - diff[:14].sum()  # lower minus upper
    horizontal = diff[:, 14:].sum() - diff[:, :14].sum()  # right minus left
    assert vertical > 0
    assert vertical > 1.2 * abs(horizontal)
    # the share of a six's ink in the lower half exceeds a nine's (measured: 0.59 vs 0.51)
    lower_share = lambda img: img[14:].sum() / img.sum()  # noqa: E731
    assert lower_share(six) > lower_share(nine) + 0.05
    # the transposed images fail the same test
    dT = diff.T
    assert not dT[14:].sum() - dT[:14].sum() > 1.2 * abs(dT[:, 14:].sum() - dT[:, :14].sum())
    assert not lower_share(six.T) > lower_share(nine.T) + 0.05


def test_miyawaki_shapes_and_binary_images(miyawaki):
    ds = miyawaki
    assert ds.X_train.shape == (107, 967) and ds.X_test.shape == (12, 967)
    _check_images(ds.Y_train, 107)
    _check_images(ds.Y_test, 12)
    assert set(np.unique(ds.Y_train)) <= {0.0, 1.0}
    assert set(np.unique(ds.labels_train)) == {2, 3, 4, 5}


def test_miyawaki_letters_are_upright(miyawaki, data_dir):
    # pixel order F is what the raw file needs; the registered loader applies it
    raw = scipy.io.loadmat(data_dir / "miyawaki" / DATASETS["miyawaki"].filename)
    np.testing.assert_array_equal(miyawaki.Y_test, raw["stimTest"].reshape(-1, 28, 28, order="F").astype(np.float32))


def test_crell_loads(data_dir):
    ds = load_dataset("crell", data_dir, download=False)
    assert ds.X_train.shape == (40, 3092) and ds.X_test.shape == (10, 3092)
    _check_images(ds.Y_train, 40)
    assert ds.metadata["format_tests_only"] is True
    assert ds.metadata["pixel_order"] == "C"


def test_mindbigdata_is_refused_unless_degenerate_allowed(data_dir):
    path = data_dir / "mindbigdata" / DATASETS["mindbigdata"].filename
    with pytest.raises(DataValidationError) as err:
        load_dataset("mindbigdata", data_dir, download=False)
    msg = str(err.value)
    assert "identical" in msg and "fmriTrn" in msg and str(path) in msg and "allow_degenerate" in msg
    ds = load_dataset("mindbigdata", data_dir, download=False, allow_degenerate=True)
    assert ds.X_train.shape == (40, 3092) and ds.X_test.shape == (10, 3092)
    assert np.all(ds.X_train == ds.X_train[0])
    _check_images(ds.Y_train, 40)


def _user_arrays(ds, *, order: str = "C") -> dict[str, np.ndarray]:
    """A user's file: uint8 stimuli stored row-major (the default for a user's file)."""
    to_rows = lambda Y: np.round(Y * 255).astype(np.uint8).reshape(len(Y), 784, order=order)  # noqa: E731
    return {
        "fmriTrn": ds.X_train.astype(np.float64),
        "stimTrn": to_rows(ds.Y_train),
        "fmriTest": ds.X_test.astype(np.float64),
        "stimTest": to_rows(ds.Y_test),
        "labelTrn": ds.labels_train.reshape(-1, 1),
        "labelTest": ds.labels_test.reshape(-1, 1),
    }


@pytest.mark.parametrize("suffix", [".mat", ".npz"])
def test_users_own_file(vangerven, tmp_path, suffix):
    arrays = _user_arrays(vangerven)
    path = tmp_path / f"my_recording{suffix}"
    if suffix == ".mat":
        scipy.io.savemat(path, arrays)
    else:
        np.savez(path, **arrays)
    ds = load_dataset(path)
    assert ds.name == "my_recording"
    assert ds.metadata["registered"] is False and ds.metadata["pixel_order"] == "C"
    np.testing.assert_allclose(ds.X_train, vangerven.X_train)
    np.testing.assert_allclose(ds.Y_train, vangerven.Y_train, atol=1 / 255)
    np.testing.assert_array_equal(ds.labels_test, vangerven.labels_test)


def test_users_file_in_column_major_order(vangerven, tmp_path):
    path = tmp_path / "matlab_style.mat"
    scipy.io.savemat(path, _user_arrays(vangerven, order="F"))
    assert not np.allclose(load_dataset(path).Y_train, vangerven.Y_train, atol=1 / 255)
    np.testing.assert_allclose(load_dataset(path, pixel_order="F").Y_train, vangerven.Y_train, atol=1 / 255)


def test_users_file_without_labels_and_with_3d_images(tmp_path, make_synthetic):
    X, Y, _ = make_synthetic(n=20, n_features=12)
    path = tmp_path / "nolabels.npz"
    np.savez(path, fmriTrn=X[:16], stimTrn=Y[:16], fmriTest=X[16:], stimTest=Y[16:])
    ds = load_dataset(path)
    assert ds.labels_train is None and ds.labels_test is None
    np.testing.assert_allclose(ds.Y_train, Y[:16], rtol=1e-6)
    assert set(REQUIRED_KEYS) == {"fmriTrn", "stimTrn", "fmriTest", "stimTest"}


def test_unknown_name_that_is_not_a_file(tmp_path):
    with pytest.raises(DataValidationError) as err:
        load_dataset(str(tmp_path / "nowhere.mat"))
    assert "nowhere.mat" in str(err.value)
    for name in DATASETS:
        assert name in str(err.value)
