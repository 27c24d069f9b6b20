"""Images of any shape (issue 18, item 1): validation, loading, preprocessing, methods, metrics and figures.

Stimuli are (n, H, W) grayscale or (n, H, W, 3) RGB (channel-last; (n, H, W, 1)
and channel-first (n, C, H, W) are converted), H and W from 8 to 256. The
miyawaki 10 x 10 round trip (issue 18, item 3) is checked on the real file.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cortexflow.baselines.brain_diffuser_lite import BrainDiffuserLite
from cortexflow.baselines.mean_image import MeanImageDecoder
from cortexflow.baselines.mindvis_lite import MindVisLite
from cortexflow.baselines.ridge import RidgeDecoder
from cortexflow.data.grids import grid_index, recover_grid, upscale_grid
from cortexflow.data.loading import load_dataset
from cortexflow.data.preprocessing import ImageScaler
from cortexflow.data.registry import DATASETS
from cortexflow.data.validation import normalize_image_shape, validate_stimuli
from cortexflow.evaluation.metrics import METRICS, evaluate_reconstructions
from cortexflow.exceptions import DataValidationError
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.reporting.figures import reconstruction_grid, save_image

from conftest import has_dataset

SHAPES = [(10, 10), (20, 16), (64, 64), (32, 32, 3)]


def toy_problem(shape, n: int = 24, n_features: int = 12, seed: int = 0):
    """Signals that are a noisy linear code of one of 3 smooth images of ``shape`` (values in [0, 1])."""
    rng = np.random.default_rng(seed)
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    protos = []
    for cy, cx in [(0.3, 0.3), (0.7, 0.5), (0.4, 0.8)]:
        blob = np.exp(-(((yy / h - cy) ** 2) + ((xx / w - cx) ** 2)) / 0.03)
        protos.append(np.stack([blob, blob[::-1], blob[:, ::-1]], axis=-1) if len(shape) == 3 else blob)
    protos = np.stack(protos).astype(np.float32)
    labels = np.arange(n) % 3
    codes = rng.normal(size=(3, n_features))
    X = (codes[labels] + 0.1 * rng.normal(size=(n, n_features))).astype(np.float32)
    return X, protos[labels]


# ----------------------------------------------------------------------------------------- validation
def test_images_of_any_size_and_rgb():
    rng = np.random.default_rng(0)
    g = rng.uniform(size=(3, 20, 16))
    assert validate_stimuli(g).shape == (3, 20, 16)
    np.testing.assert_array_equal(validate_stimuli(g[..., None]), g.astype(np.float32))  # (n, H, W, 1) -> (n, H, W)
    rgb = rng.uniform(size=(3, 32, 24, 3))
    out = validate_stimuli(rgb)
    assert out.shape == (3, 32, 24, 3) and out.dtype == np.float32
    # channel-first (PyTorch layout) is moved to channel-last
    np.testing.assert_array_equal(validate_stimuli(np.moveaxis(rgb, -1, 1)), out)
    np.testing.assert_array_equal(validate_stimuli(g[:, None]), validate_stimuli(g))
    assert validate_stimuli(rng.uniform(size=(2, 8, 256))).shape == (2, 8, 256)  # both ends of the range


def test_flat_rows_need_an_image_shape():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(2, 20, 16)).astype(np.uint8)
    img[0, 0, 0] = 255
    assert validate_stimuli(img.reshape(2, -1), image_shape=(20, 16))[0, 0, 0] == 1.0
    np.testing.assert_array_equal(validate_stimuli(img.reshape(2, -1), image_shape=(20, 16)), img / np.float32(255))
    # column-major (MATLAB) rows of an H x W x C array
    rgb = rng.uniform(size=(2, 12, 10, 3))
    flat_f = np.stack([r.reshape(-1, order="F") for r in rgb])
    np.testing.assert_allclose(validate_stimuli(flat_f, image_shape=(12, 10, 3), pixel_order="F"), rgb, atol=1e-7)
    np.testing.assert_allclose(validate_stimuli(rgb.reshape(2, -1), image_shape=(12, 10, 3)), rgb, atol=1e-7)
    # without image_shape: a square grayscale image of side sqrt(P)
    assert validate_stimuli(rng.uniform(size=(2, 100))).shape == (2, 10, 10)
    with pytest.raises(DataValidationError, match=r"key 'Y' has 320 pixels per row, which is not a square .*image_shape=\(H, W\)"):
        validate_stimuli(img.reshape(2, -1))
    with pytest.raises(DataValidationError, match=r"320 pixels per row; expected 300 \(10 x 10 x 3"):
        validate_stimuli(img.reshape(2, -1), image_shape=(10, 10, 3))


@pytest.mark.parametrize("shape, pattern", [
    ((2, 7, 28), r"images of 7 x 28 pixels; height and width must each be between 8 and 256"),
    ((2, 28, 257), r"images of 28 x 257 pixels; height and width must each be between 8 and 256"),
    ((2, 49), r"images of 7 x 7 pixels"),
    ((2, 16, 16, 4), r"neither axis 1 \(16\) nor axis 3 \(4\) is 1 or 3"),
    ((2, 4, 16, 16), r"neither axis 1 \(4\) nor axis 3 \(16\) is 1 or 3"),
    ((2, 3, 4, 5, 6), r"expected \(n, P\) flat rows, \(n, H, W\), \(n, H, W, C\) or \(n, C, H, W\)"),
])
def test_shape_errors_name_the_value_and_the_range(shape, pattern):
    with pytest.raises(DataValidationError, match=pattern):
        validate_stimuli(np.zeros(shape), source="f.npz", key="stimTrn")


def test_image_shape_argument_is_checked():
    assert normalize_image_shape((10, 10, 1)) == (10, 10) and normalize_image_shape([32, 32, 3]) == (32, 32, 3)
    for bad, pattern in [((10,), "is not \\(H, W\\) or \\(H, W, C\\)"), ((10, 10, 2), "has 2 channels; expected 1"),
                         ((4, 10), "4 x 10 pixels"), ((10.5, 10), "whole numbers"), ("28x28", "whole numbers")]:
        with pytest.raises(DataValidationError, match=pattern):
            normalize_image_shape(bad)
    with pytest.raises(DataValidationError, match=r"images of shape \(20, 16\); expected \(16, 20\) \(image_shape\)"):
        validate_stimuli(np.zeros((2, 20, 16)), image_shape=(16, 20))


# -------------------------------------------------------------------------------------------- loading
def _npz(tmp_path, Ytr, Yte, name="own.npz"):
    rng = np.random.default_rng(0)
    path = tmp_path / name
    np.savez(path, fmriTrn=rng.normal(size=(len(Ytr), 9)), stimTrn=Ytr, fmriTest=rng.normal(size=(len(Yte), 9)),
             stimTest=Yte)
    return path


def test_load_user_files_of_other_shapes(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.uniform(size=(6, 32, 32, 3))
    ds = load_dataset(_npz(tmp_path, np.moveaxis(rgb[:4], -1, 1), rgb[4:]))  # channel-first train, channel-last test
    assert ds.Y_train.shape == (4, 32, 32, 3) and ds.Y_test.shape == (2, 32, 32, 3) and ds.image_shape == (32, 32, 3)
    np.testing.assert_allclose(ds.Y_train, rgb[:4], atol=1e-7)
    assert ds.metadata["image_shape"] == [32, 32, 3]
    flat = rng.uniform(size=(6, 320))
    ds = load_dataset(_npz(tmp_path, flat[:4], flat[4:], "flat.npz"), image_shape=(20, 16))
    assert ds.Y_train.shape == (4, 20, 16) and ds.Y_test.shape == (2, 20, 16)
    with pytest.raises(DataValidationError, match=r"flat.npz: key 'stimTrn' has 320 pixels per row, which is not a square"):
        load_dataset(tmp_path / "flat.npz")
    # train and test stimuli must have one shape
    with pytest.raises(DataValidationError, match=r"mixed.npz: key 'stimTest' has images of shape \(10, 10\); expected \(12, 12\)"):
        load_dataset(_npz(tmp_path, rng.uniform(size=(4, 12, 12)), rng.uniform(size=(2, 10, 10)), "mixed.npz"))


def test_registered_datasets_keep_their_shape(data_dir):
    if not has_dataset("vangerven", data_dir):
        pytest.skip("vangerven not found")
    ds = load_dataset("vangerven", data_dir, download=False, image_shape=(28, 28))
    assert ds.Y_train.shape == (90, 28, 28)
    with pytest.raises(DataValidationError, match=r"dataset 'vangerven' has images of shape \(28, 28\); image_shape=\(14, 14\)"):
        load_dataset("vangerven", data_dir, download=False, image_shape=(14, 14))


# ------------------------------------------------------------------------------- miyawaki at 10 x 10
def test_grid_index_rule():
    # 10 cells into 28 pixels: the first and last cells 2 pixels wide, the eight inner ones 3
    assert np.bincount(grid_index(28, 10)).tolist() == [2, 3, 3, 3, 3, 3, 3, 3, 3, 2]
    assert grid_index(28, 28).tolist() == list(range(28))
    rng = np.random.default_rng(3)
    grid = rng.integers(0, 2, size=(5, 10, 10)).astype(np.float32)
    up = upscale_grid(grid, (28, 28))
    np.testing.assert_array_equal(recover_grid(up, (10, 10)), grid)
    rgb = rng.uniform(size=(2, 7, 9, 3))
    np.testing.assert_array_equal(recover_grid(upscale_grid(rgb, (20, 30)), (7, 9)), rgb)
    up[3, 12, 5] = 1 - up[3, 12, 5]  # one pixel off its cell's value
    with pytest.raises(DataValidationError, match=r"1 of 5 image\(s\) are not exact nearest-neighbour upscalings of a 10 x 10 grid \(first: row 3\)"):
        recover_grid(up, (10, 10))


def test_miyawaki_10x10_round_trip_on_all_119_trials(data_dir):
    if not has_dataset("miyawaki", data_dir):
        pytest.skip("miyawaki not found")
    full = load_dataset("miyawaki", data_dir, download=False)
    native = load_dataset("miyawaki-10x10", data_dir, download=False)
    Y28 = np.concatenate([full.Y_train, full.Y_test])
    Y10 = np.concatenate([native.Y_train, native.Y_test])
    assert Y28.shape == (119, 28, 28) and Y10.shape == (119, 10, 10)
    assert set(np.unique(Y10).tolist()) == {0.0, 1.0}  # binary patterns
    np.testing.assert_array_equal(upscale_grid(Y10, (28, 28)), Y28)  # upsampling the recovered grid gives the file back
    np.testing.assert_array_equal(recover_grid(Y28, (10, 10)), Y10)
    np.testing.assert_array_equal(native.X_train, full.X_train)  # the same trials, only the images differ
    # the same file, but a results store keyed by the checksum must keep the two apart
    assert native.metadata["sha256"] == full.metadata["sha256"] and native.checksum != full.checksum
    assert native.name == "miyawaki-10x10" and native.metadata["native_grid"] == [10, 10]
    assert DATASETS["miyawaki-10x10"].native_shape == (10, 10) and DATASETS["miyawaki-10x10"].directory == "miyawaki"
    with pytest.raises(DataValidationError, match=r"image_shape=\(10, 10\) is not its shape; load the registered dataset 'miyawaki-10x10' for its \(10, 10\) grid"):
        load_dataset("miyawaki", data_dir, download=False, image_shape=(10, 10))
    assert load_dataset("miyawaki-10x10", data_dir, download=False, image_shape=(10, 10)).Y_test.shape == (12, 10, 10)
    with pytest.raises(DataValidationError, match=r"dataset 'miyawaki-10x10' has images of shape \(10, 10\); image_shape=\(28, 28\)"):
        load_dataset("miyawaki-10x10", data_dir, download=False, image_shape=(28, 28))


# ------------------------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("shape", SHAPES)
def test_image_scaler_gives_the_shape_back(shape):
    Y = np.random.default_rng(0).uniform(size=(4,) + shape)
    sc = ImageScaler().fit(Y)
    Z = sc.transform(Y)
    assert Z.shape == (4, int(np.prod(shape)))
    back = ImageScaler.from_state(sc.get_state()).inverse_transform(Z)
    assert back.shape == (4,) + shape
    np.testing.assert_allclose(back, Y, atol=1e-6)


# --------------------------------------------------------------------------------- methods on shapes
def _fast_methods(tiny_config):
    return {
        "mean-image": lambda: MeanImageDecoder(),
        "ridge": lambda: RidgeDecoder(),
        "cccv1": lambda: CCCV1Decoder(tiny_config.replace(epochs=2), device="cpu"),
        "brain-diffuser-lite": lambda: BrainDiffuserLite(vae_epochs=2, denoiser_epochs=2, patience=2, steps=2),
        "mindvis-lite": lambda: MindVisLite(pretrain_epochs=2, fine_tune_epochs=2, patience=2, dim=16, depth=1),
    }


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("method", ["mean-image", "ridge", "cccv1", "brain-diffuser-lite", "mindvis-lite"])
def test_methods_fit_and_predict_any_shape(method, shape, tiny_config):
    X, Y = toy_problem(shape)
    model = _fast_methods(tiny_config)[method]().fit(X[:18], Y[:18])
    P = model.predict(X[18:])
    assert P.shape == (6,) + shape and P.dtype == np.float32
    assert np.isfinite(P).all() and P.min() >= 0 and P.max() <= 1
    scores = evaluate_reconstructions(true=Y[18:], pred=P, metrics=list(METRICS))
    for name, v in scores.items():
        assert v.shape == (6,) and np.isfinite(v).all(), name


def test_ridge_recovers_images_of_other_shapes():
    for shape in [(20, 16), (32, 32, 3)]:
        X, Y = toy_problem(shape, n=30)
        P = RidgeDecoder().fit(X[:24], Y[:24]).predict(X[24:])
        assert evaluate_reconstructions(true=Y[24:], pred=P, metrics=["pearson"])["pearson"].mean() > 0.9


def test_cccv1_checkpoint_keeps_an_rgb_shape(tmp_path, tiny_config):
    X, Y = toy_problem((16, 12, 3))
    est = CCCV1Decoder(tiny_config.replace(epochs=2), device="cpu").fit(X, Y)
    assert est.model_.decoder.net[-2].out_features == 16 * 12 * 3
    loaded = CCCV1Decoder.load(est.save(tmp_path / "ckpt"), device="cpu")
    assert loaded.output_shape_ == (16, 12, 3)
    np.testing.assert_array_equal(loaded.predict(X[:3]), est.predict(X[:3]))


# ---------------------------------------------------------------------------------------- figures
def test_figures_of_rgb_and_non_square_images(tmp_path):
    _, rgb = toy_problem((32, 32, 3), n=4)
    _, gray = toy_problem((20, 16), n=4)
    p = save_image(rgb[0], tmp_path / "rgb.png", scale=2)
    with Image.open(p) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.int64)
    assert arr.shape == (64, 64, 3)
    assert np.abs(arr[..., 0] - arr[..., 1]).max() > 50  # colour survives (the channels differ)
    with Image.open(save_image(gray[0], tmp_path / "gray.png", scale=3)) as im:
        assert im.size == (48, 60)  # (width, height)
    for stim, name in [(rgb, "grid_rgb.png"), (gray, "grid_gray.png")]:
        out = reconstruction_grid(stim, {"method": stim[::-1]}, tmp_path / name, title="t")
        with Image.open(out) as im:
            assert im.size[0] > 100 and im.size[1] > 50
    with pytest.raises(ValueError, match=r"an image must be \(H, W\) grayscale or \(H, W, 3\) RGB; got shape \(8, 8, 2\)"):
        save_image(np.zeros((8, 8, 2)), tmp_path / "bad.png")
