"""The SSIM definitions of the metric registry (issue 19, item 1), each against scikit-image on the same settings.

scikit-image is a test dependency only: CortexFlow computes every variant itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import cortexflow
from cortexflow.evaluation.metrics import (
    METRICS,
    SSIM_DEFINITIONS,
    SSIM_MIN_SIDE,
    evaluate_reconstructions,
    resize_bilinear,
    ssim_256_per_image,
    ssim_per_image,
    ssim_skimage_per_image,
)

skm = pytest.importorskip("skimage.metrics")
skt = pytest.importorskip("skimage.transform")

SHAPES = [(28, 28), (10, 10), (8, 8), (7, 9), (20, 16), (64, 64), (32, 32, 3), (12, 9, 3)]


def pair(shape, n: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    true = rng.uniform(size=(n,) + shape)
    pred = np.clip(0.7 * true + 0.3 * rng.uniform(size=true.shape) + 0.1 * rng.normal(size=true.shape), 0, 1)
    return true, pred


def _channel_axis(shape):
    return -1 if len(shape) == 3 else None


def strict_reference(true, pred, shape):
    """scikit-image with CortexFlow's settings; the crop window is 11, or the largest odd side for smaller images."""
    side = min(shape[:2])
    win = 11 if side >= 11 else (side if side % 2 else side - 1)
    return np.array([skm.structural_similarity(p, t, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                               data_range=1.0, win_size=win, channel_axis=_channel_axis(shape))
                     for p, t in zip(pred, true)])


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_strict_ssim_matches_scikit_image(shape):
    true, pred = pair(shape)
    np.testing.assert_allclose(ssim_per_image(true=true, pred=pred), strict_reference(true, pred, shape), atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_skimage_default_ssim_matches_scikit_image(shape):
    true, pred = pair(shape, seed=1)
    ref = [skm.structural_similarity(p, t, data_range=1.0, channel_axis=_channel_axis(shape)) for p, t in zip(pred, true)]
    np.testing.assert_allclose(ssim_skimage_per_image(true=true, pred=pred), ref, atol=1e-12)


@pytest.mark.parametrize("shape", [(28, 28), (10, 10), (32, 32, 3)], ids=lambda s: "x".join(map(str, s)))
def test_ssim_256_matches_scikit_image_resize_then_ssim(shape):
    true, pred = pair(shape, n=2, seed=2)
    up = lambda a: skt.resize(a, (256, 256) + a.shape[2:], order=1, mode="edge", anti_aliasing=False)  # noqa: E731
    ref = [skm.structural_similarity(up(p), up(t), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=1.0, channel_axis=_channel_axis(shape)) for p, t in zip(pred, true)]
    np.testing.assert_allclose(ssim_256_per_image(true=true, pred=pred), ref, atol=1e-12)


def test_bilinear_resize_is_torch_align_corners_false():
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(3).uniform(size=(2, 10, 14))
    ref = torch.nn.functional.interpolate(torch.tensor(a)[:, None], size=(256, 256), mode="bilinear",
                                          align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(resize_bilinear(a, (256, 256)), ref, atol=1e-12)


def test_the_three_definitions_differ():
    yy, xx = np.mgrid[0:28, 0:28]
    true = np.stack([np.exp(-((yy - 14) ** 2 + (xx - c) ** 2) / 20.0) for c in (9, 14, 19)])
    pred = np.clip(true + 0.15 * np.random.default_rng(4).normal(size=true.shape), 0, 1)
    s = {k: evaluate_reconstructions(true=true, pred=pred, metrics=[k])[k].mean() for k in SSIM_DEFINITIONS}
    assert len(set(np.round(list(s.values()), 6))) == 3
    assert set(SSIM_DEFINITIONS) <= set(METRICS)


@pytest.mark.parametrize("name", ["ssim", "ssim_skimage", "ssim_256"])
def test_no_nan_for_constant_or_identical_images_and_a_clear_error_when_too_small(name):
    fn = METRICS[name]
    for shape in [(10, 10), (8, 12), (16, 16, 3)]:
        z = np.zeros((2,) + shape)
        assert np.isfinite(fn(true=z, pred=z)).all() and np.allclose(fn(true=z, pred=z), 1.0)
        a = np.random.default_rng(5).uniform(size=(2,) + shape)
        np.testing.assert_allclose(fn(true=a, pred=a), 1.0)
        assert np.isfinite(fn(true=a, pred=np.full_like(a, 0.5))).all()
    with pytest.raises(ValueError, match=rf"at least {SSIM_MIN_SIDE} x {SSIM_MIN_SIDE} pixels .*got 6 x 10"):
        fn(true=np.zeros((2, 6, 10)), pred=np.zeros((2, 6, 10)))
    with pytest.raises(ValueError, match=r"\(n, H, W\) or \(n, H, W, C\); got \(2, 100\)"):
        fn(true=np.zeros((2, 100)), pred=np.zeros((2, 100)))


def test_evaluate_reconstructions_accepts_the_variants_by_name():
    true, pred = pair((28, 28))
    per = evaluate_reconstructions(true=true, pred=pred, metrics=["ssim", "ssim_skimage", "ssim_256"])
    assert list(per) == ["ssim", "ssim_skimage", "ssim_256"]
    np.testing.assert_array_equal(per["ssim"], ssim_per_image(true=true, pred=pred))
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['ssim_512'\]; allowed: .*'ssim_256'"):
        evaluate_reconstructions(true=true, pred=pred, metrics=["ssim_512"])


def test_the_library_does_not_import_scikit_image():
    root = Path(cortexflow.__file__).resolve().parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "skimage" for n in names), path
