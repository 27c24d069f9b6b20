"""Reconstruction metrics against reference implementations and known values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr

from cortexflow.evaluation.metrics import (
    DEFAULT_METRICS,
    METRICS,
    evaluate_reconstructions,
    mse_per_image,
    pearson_per_image,
    psnr_per_image,
    ssim_per_image,
    summarize,
    two_way_identification,
)


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    true = rng.uniform(size=(6, 28, 28))
    pred = np.clip(true + rng.normal(scale=0.2, size=true.shape), 0, 1)
    return pred, true


def test_ssim_matches_skimage(pair):
    skm = pytest.importorskip("skimage.metrics")
    pred, true = pair
    pred = np.concatenate([pred, np.random.default_rng(1).uniform(size=(2, 28, 28))])
    true = np.concatenate([true, np.random.default_rng(2).uniform(size=(2, 28, 28))])
    ours = ssim_per_image(pred=pred, true=true)
    ref = [
        skm.structural_similarity(p, t, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)
        for p, t in zip(pred, true)
    ]
    np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=1e-9)
    assert ssim_per_image(pred=true, true=true) == pytest.approx(np.ones(len(true)))


def test_ssim_on_structured_images_matches_skimage(vangerven):
    skm = pytest.importorskip("skimage.metrics")
    pred, true = vangerven.Y_train[:5].astype(np.float64), vangerven.Y_train[5:10].astype(np.float64)
    ref = [skm.structural_similarity(p, t, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=1) for p, t in zip(pred, true)]
    np.testing.assert_allclose(ssim_per_image(pred=pred, true=true), ref, rtol=1e-7, atol=1e-9)


def test_ssim_needs_images():
    with pytest.raises(ValueError, match=r"\(n, H, W\)"):
        ssim_per_image(pred=np.zeros((2, 784)), true=np.zeros((2, 784)))


def test_pearson_matches_scipy(pair):
    pred, true = pair
    ref = [pearsonr(p.ravel(), t.ravel())[0] for p, t in zip(pred, true)]
    np.testing.assert_allclose(pearson_per_image(pred=pred, true=true), ref, rtol=1e-10)
    # a constant reconstruction has no defined correlation: reported as 0
    assert pearson_per_image(pred=np.full((1, 28, 28), 0.3), true=true[:1])[0] == 0.0
    np.testing.assert_allclose(pearson_per_image(pred=true, true=true), 1.0)
    np.testing.assert_allclose(pearson_per_image(pred=1 - true, true=true), -1.0)


def test_mse_and_psnr_known_values():
    true = np.zeros((3, 28, 28))
    pred = np.stack([np.full((28, 28), 0.1), np.full((28, 28), 0.5), np.zeros((28, 28))])
    np.testing.assert_allclose(mse_per_image(pred=pred, true=true), [0.01, 0.25, 0.0])
    psnr = psnr_per_image(pred=pred, true=true)
    np.testing.assert_allclose(psnr[:2], [20.0, 10 * np.log10(4)])
    assert psnr[2] == 100.0  # perfect image: capped, not inf
    half = np.zeros((1, 28, 28))
    half[0, :14] = 1.0  # half the pixels off by 1
    assert mse_per_image(pred=half, true=np.zeros((1, 28, 28)))[0] == pytest.approx(0.5)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"\(2, 28, 28\).*\(3, 28, 28\)"):
        mse_per_image(pred=np.zeros((2, 28, 28)), true=np.zeros((3, 28, 28)))


def test_two_way_identification():
    rng = np.random.default_rng(0)
    true = rng.uniform(size=(20, 28, 28))
    np.testing.assert_array_equal(two_way_identification(pred=true, true=true), np.ones(20))
    # the right images in the wrong order: each reconstruction now matches another stimulus
    perm = np.roll(np.arange(20), 1)
    permuted = two_way_identification(pred=true[perm], true=true)
    assert np.all(permuted <= 18 / 19)  # each loses at least to the stimulus it copies
    assert permuted.mean() < 0.6
    # on real, mutually similar stimuli too (vangerven-like: half of them share a mean image)
    proto = rng.uniform(size=(2, 28, 28))
    digits = np.clip(proto[np.arange(20) % 2] + rng.normal(scale=0.3, size=(20, 28, 28)), 0, 1)
    assert two_way_identification(pred=digits[perm], true=digits).mean() < 0.6 < two_way_identification(pred=digits, true=digits).mean()
    # noisy but correct reconstructions stay well above chance
    noisy = np.clip(true + rng.normal(scale=0.5, size=true.shape), 0, 1)
    assert two_way_identification(pred=noisy, true=true).mean() > 0.9
    # unrelated random reconstructions: chance, 0.5 on average
    chance = [two_way_identification(pred=rng.uniform(size=(20, 28, 28)), true=true).mean() for _ in range(30)]
    assert abs(np.mean(chance) - 0.5) < 0.05
    # identical stimuli are ties and count one half
    same = np.repeat(true[:1], 3, axis=0)
    np.testing.assert_allclose(two_way_identification(pred=same, true=same), 0.5)
    assert np.isnan(two_way_identification(pred=true[:1], true=true[:1])).all()


def test_two_way_identification_with_features():
    rng = np.random.default_rng(3)
    true = rng.uniform(size=(10, 28, 28))
    pred = true[::-1].copy()
    # a feature map that ignores the image content makes everything a tie
    np.testing.assert_allclose(two_way_identification(pred=pred, true=true, features=lambda a: np.ones((len(a), 4)) + np.arange(4)), 0.5)
    assert two_way_identification(pred=true, true=true, features=lambda a: a.reshape(len(a), -1)[:, :50]).mean() == 1.0


def test_evaluate_and_summarize(pair):
    pred, true = pair
    per = evaluate_reconstructions(pred=pred, true=true)
    assert set(per) == set(DEFAULT_METRICS) == {"mse", "pearson", "ssim", "psnr", "two_way"}
    assert set(METRICS) == set(DEFAULT_METRICS) | {"ssim_skimage", "ssim_256"}  # the variants only by name
    assert all(len(v) == len(pred) for v in per.values())
    s = summarize(per)
    assert s["mse"] == pytest.approx(per["mse"].mean())
    assert evaluate_reconstructions(pred=pred, true=true, metrics=["mse"]).keys() == {"mse"}
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_reconstructions(pred=pred, true=true, metrics=["lpips"])


@pytest.mark.parametrize("name", sorted(METRICS) + ["evaluate_reconstructions"])
def test_metrics_refuse_positional_arguments(name):
    """Two-way identification is asymmetric: a swapped positional call must fail, not give another number."""
    fn = METRICS.get(name, evaluate_reconstructions)
    a = np.random.default_rng(0).uniform(size=(4, 28, 28))
    with pytest.raises(TypeError):
        fn(a, a)
    assert np.all(np.isfinite(fn(true=a, pred=a)["mse"] if name == "evaluate_reconstructions" else fn(true=a, pred=a)))
