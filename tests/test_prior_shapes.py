"""The image-prior stack at any image shape and colour (issue 18, item 1).

Every prior-backed method fits, predicts, saves and loads on 10x10, 20x16 and
64x64 grayscale and 32x32 RGB toy problems with a tiny prior built for that
shape; corpora are converted at use; the guard works at any shape; a checkpoint
refuses a prior of another image shape; and 28x28 is unchanged (values recorded
before images of other shapes existed).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cortexflow.data.corpora import convert_images, get_corpus_info, load_corpus, resize_images
from cortexflow.data.grids import upscale_grid
from cortexflow.data.guard import drop_near_duplicates, nearest_mse, pairwise_mse
from cortexflow.exceptions import CheckpointError, ConfigError, DataValidationError
from cortexflow.methods.build import make_estimator, resolve_prior
from cortexflow.registry.methods import get_method, list_methods
from cortexflow.models.loader import load_decoder
from cortexflow.models.prior import ImagePrior, PriorConfig, pyramid_sizes
from cortexflow.training.prior import FittedPrior, get_prior, prior_cache_key
from _priors import fit_resolved, toy_prior

SHAPES = [(10, 10), (20, 16), (64, 64), (32, 32, 3)]
TINY = PriorConfig(embed_dim=8, widths=(4, 8, 8), epochs=1, batch_size=32)
PRIOR_METHODS = sorted(m for m in list_methods() if "prior" in get_method(m).needs)


def _images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Smooth random images of ``shape`` in [0, 1]: a 4x4 random grid (per channel) resized bilinearly."""
    rng = np.random.default_rng(seed)
    grid = rng.random((n, 4, 4, *shape[2:])).astype(np.float32)
    return resize_images(grid, shape[:2])


def _problem(shape, n=24, p=40, seed=0):
    Y = _images(n, shape, seed)
    rng = np.random.default_rng(seed + 1)
    X = Y.reshape(n, -1) @ rng.normal(size=(Y[0].size, p)) + 0.1 * rng.normal(size=(n, p))
    return X.astype(np.float32), Y


def _tiny_prior(shape, corpus_images=None) -> FittedPrior:
    images = _images(64, shape, 99) if corpus_images is None else corpus_images
    return toy_prior(images, TINY.replace(image_shape=shape))


@pytest.fixture(scope="module")
def priors():
    return {shape: _tiny_prior(shape) for shape in SHAPES}


# ---------------------------------------------------------------- the network
def test_pyramid_follows_the_shape():
    assert pyramid_sizes((28, 28)) == [(7, 7), (14, 14), (28, 28)]
    assert pyramid_sizes((10, 10)) == [(3, 3), (5, 5), (10, 10)]
    assert pyramid_sizes((20, 16)) == [(5, 4), (10, 8), (20, 16)]
    assert pyramid_sizes((64, 64)) == [(8, 8), (16, 16), (32, 32), (64, 64)]
    assert pyramid_sizes((256, 256))[0] == (8, 8)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_network_at_any_shape(shape, kind):
    model = ImagePrior(TINY.replace(kind=kind, image_shape=shape)).eval()
    x = torch.rand(3, *shape)
    z = model.encode(x)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))
    outs = model.decode_pyramid(z)
    assert tuple(outs[-1].shape) == (3, *shape)
    assert [tuple(o.shape[1:3]) for o in outs] == pyramid_sizes(shape)
    loss, parts = model.train().loss(x, torch.Generator().manual_seed(0))
    assert len([k for k in parts if k.startswith("mse")]) == len(pyramid_sizes(shape))
    loss.backward()


def test_config_image_shape_is_checked_and_round_trips():
    assert PriorConfig(image_shape=(10, 10, 1)).image_shape == (10, 10)
    cfg = PriorConfig(image_shape=[32, 32, 3])
    assert PriorConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert PriorConfig.from_dict({k: v for k, v in PriorConfig().to_dict().items() if k != "image_shape"}).image_shape \
        == (28, 28)  # a config written before the field existed
    for bad in [(4, 4), (300, 28), (28, 28, 2), (28,)]:
        with pytest.raises(ConfigError, match="image_shape"):
            PriorConfig(image_shape=bad)


def test_cache_key_includes_the_shape_and_keeps_28x28_keys():
    d = np.zeros(0, np.int64)
    k28 = prior_cache_key("c", "x", PriorConfig(), 0.01, d)
    assert k28 == "8cd7e55e24d2b29d2caa715ba6494e77ed6538f59421c50807f9a2f6175ff66d"  # recorded before the change
    keys = {prior_cache_key("c", "x", PriorConfig(image_shape=s), 0.01, d) for s in SHAPES}
    assert len(keys) == len(SHAPES) and k28 not in keys


# ---------------------------------------------------------------- corpora at use
def test_convert_images_resizes_and_converts():
    rng = np.random.default_rng(0)
    gray = rng.random((5, 28, 28)).astype(np.float32)
    assert convert_images(gray, (28, 28)) is gray  # the stored shape: unchanged
    small = convert_images(gray, (14, 14))  # area: exact 2x2 means
    np.testing.assert_allclose(small, gray.reshape(5, 14, 2, 14, 2).mean((2, 4)), atol=1e-6)
    big = convert_images(gray, (56, 40, 3))
    assert big.shape == (5, 56, 40, 3) and np.array_equal(big[..., 0], big[..., 2])
    assert 0 <= big.min() and big.max() <= 1
    rgb = rng.random((2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(convert_images(rgb, (16, 16)), rgb @ np.array([0.299, 0.587, 0.114]), atol=1e-6)
    const = np.full((1, 20, 20), 0.3, np.float32)  # bilinear and area keep a constant image
    np.testing.assert_allclose(convert_images(const, (33, 9)), 0.3, atol=1e-6)


def test_grid_corpus_converts_exactly_to_its_grid(tmp_path):
    corpus = load_corpus("miyawaki-patterns", cache_dir=tmp_path)
    at10 = load_corpus("miyawaki-patterns", cache_dir=tmp_path, image_shape=(10, 10))
    assert at10.images.shape == (10000, 10, 10) and set(np.unique(at10.images)) <= {0.0, 1.0}
    assert at10.checksum == corpus.checksum  # the stored corpus is unchanged
    assert np.array_equal(upscale_grid(at10.images, (28, 28)), corpus.images)  # exact: the grids themselves


@pytest.mark.slow
def test_rgb_corpus_is_registered(tmp_path):
    info = get_corpus_info("color-shapes")
    assert info.image_shape == (32, 32, 3)
    c = load_corpus("color-shapes", cache_dir=tmp_path)
    assert c.images.shape == (6000, 32, 32, 3) and c.images.dtype == np.float32
    assert 0 <= c.images.min() and c.images.max() <= 1
    assert load_corpus("color-shapes", cache_dir=tmp_path, image_shape=(28, 28)).images.shape == (6000, 28, 28)


# ---------------------------------------------------------------- the guard
@pytest.mark.parametrize("shape", SHAPES)
def test_guard_at_any_shape(shape):
    stim = _images(6, shape, 1)
    corpus = np.concatenate([_images(30, shape, 2), stim[:2], np.clip(stim[2:3] + 0.01, 0, 1)])
    kept, dropped = drop_near_duplicates(corpus, stim, threshold=0.01)
    assert dropped.tolist() == [30, 31, 32] and kept.shape == (30, *shape)
    assert nearest_mse(corpus[:3], stim).shape == (3,)


def test_guard_brings_the_corpus_to_the_stimuli_shape():
    stim = _images(4, (14, 14), 3)
    corpus = np.concatenate([_images(10, (28, 28), 4), upscale_grid(stim, (28, 28))])  # 2x copies of the stimuli
    kept, dropped = drop_near_duplicates(corpus, stim, threshold=0.005)
    assert kept.shape[1:] == (14, 14) and set(dropped.tolist()) >= {10, 11, 12, 13}
    with pytest.raises(DataValidationError, match="one shape"):
        pairwise_mse(corpus, stim)


# ---------------------------------------------------------------- every prior-backed method
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", PRIOR_METHODS)
def test_prior_method_fits_predicts_saves_loads(name, shape, priors, tmp_path):
    X, Y = _problem(shape)
    est = make_estimator(name, 0, "toy", 18, fast=True, stimuli=Y, resolve=False)
    est.set_params(prior=priors[shape])
    est.fit(X[:18], Y[:18])
    P = est.predict(X[18:])
    assert P.shape == (6, *shape) and P.dtype == np.float32 and np.isfinite(P).all()
    assert 0 <= P.min() and P.max() <= 1  # ridge-prior-stacked's pixel-ridge blend too (clipped)
    if name in ("ridge-prior", "cccv1-prior"):
        est.save(tmp_path / "ckpt")
        back = load_decoder(tmp_path / "ckpt")
        assert back.prior_.image_shape == tuple(shape)
        np.testing.assert_array_equal(back.predict(X[18:]), P)


def test_prior_of_another_shape_is_refused(priors):
    X, Y = _problem((10, 10))
    est = make_estimator("ridge-prior", 0, "toy", 18, fast=True, stimuli=Y, resolve=False)
    est.set_params(prior=priors[(20, 16)])
    with pytest.raises(DataValidationError, match=r"\(20, 16\).*\(10, 10\)"):
        est.fit(X, Y)


def test_checkpoint_refuses_a_prior_of_another_image_shape(priors, tmp_path):
    X, Y = _problem((10, 10))
    est = make_estimator("ridge-prior", 0, "toy", 24, fast=True, stimuli=Y, resolve=False, decoding="prior")
    est.set_params(prior=priors[(10, 10)]).fit(X, Y)
    path = est.save(tmp_path / "ckpt")
    meta_path = tmp_path / "ckpt" / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    meta["priors"][0]["config"]["image_shape"] = [20, 16]  # another prior's shape (its weights do not fit either)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError):
        load_decoder(path)


def test_prior_reference_with_another_shape_is_refused(priors, tmp_path):
    """A prior whose weights and config agree, but for another image shape than the checkpoint's."""
    from cortexflow.priors.persistence import _prior_ref

    other = priors[(20, 16)]

    class _U:
        priors = [other]
        dims = {"*image": (10, 10)}

        def error(self, key, problem):
            return CheckpointError(f"{key} {problem}")

    with pytest.raises(CheckpointError, match=r"\[20, 16\].*\[10, 10\]"):
        _prior_ref(_U(), {"index": 0}, "state.prior_")


def test_builder_resolves_the_prior_at_the_data_shape(tmp_path):
    """miyawaki-patterns for a 10x10 data set: prior and corpus images at 10x10, the cache key per shape."""
    rng = np.random.default_rng(0)
    stim = (rng.random((12, 10, 10)) < 0.5).astype(np.float32)
    cfg = {"embed_dim": 8, "widths": [4, 8, 8], "epochs": 1, "batch_size": 64, "max_images": 200}
    est = make_estimator("ridge-prior", 0, "miyawaki-10x10", 12, fast=True, stimuli=stim, cache_dir=tmp_path,
                         prior_config=cfg)
    assert est.prior.image_shape == (10, 10) and est.prior.info["corpus"] == "miyawaki-patterns"
    assert est.prior.corpus_images.shape[1:] == (10, 10)
    again = get_prior("miyawaki-patterns", exclude=stim, config=PriorConfig.from_dict({**cfg, "image_shape": [10, 10]}),
                      cache_dir=tmp_path)
    assert again.info["from_cache"] and again.info["cache_key"] == est.prior.info["cache_key"]
    with pytest.raises(DataValidationError, match="built for images of shape"):
        resolve_prior(est, np.zeros((3, 28, 28), np.float32))


@pytest.mark.slow
def test_rgb_builder_path(tmp_path):
    """A prior trained on RGB images (color-shapes), ridge-prior and cccv1-prior at 32x32x3 through the builder."""
    X, Y = _problem((32, 32, 3), n=20)
    cfg = {"embed_dim": 8, "widths": [4, 8, 8], "epochs": 1, "batch_size": 64, "max_images": 200}
    for name in ("ridge-prior", "cccv1-prior"):
        est = make_estimator(name, 0, "toy-rgb", 16, fast=True, stimuli=Y, cache_dir=tmp_path, prior="color-shapes",
                             prior_config=cfg)
        assert est.prior.image_shape == (32, 32, 3)
        P = est.fit(X[:16], Y[:16]).predict(X[16:])
        assert P.shape == (4, 32, 32, 3)


# ---------------------------------------------------------------- 28x28 unchanged
def test_28x28_prior_unchanged():
    """A tiny 28x28 prior's initial weights and one training step, as recorded before other shapes existed."""
    torch.manual_seed(0)
    model = ImagePrior(PriorConfig(embed_dim=4, widths=(2, 3, 4)))
    names = list(model.state_dict())
    assert names[:4] == ["encoder.0.0.weight", "encoder.0.0.bias", "encoder.0.1.weight", "encoder.0.1.bias"]
    assert list(dict.fromkeys(n.split(".")[0] for n in names)) == [
        "encoder", "to_embedding", "from_embedding", "block7", "block14", "block28", "heads"]
    total = sum(float(v.double().sum()) for v in model.state_dict().values() if v.is_floating_point())
    assert total == pytest.approx(RECORDED_28["init_sum"], abs=1e-9)
    x = torch.from_numpy(_images(8, (28, 28), 5))
    loss, parts = model.train().loss(x)
    assert float(loss.detach()) == RECORDED_28["loss"]
    assert sorted(parts) == ["mse14", "mse28", "mse7"]


def test_28x28_ridge_prior_unchanged():
    """A tiny prior trained at 28x28 and a ridge-prior prediction with it, bit for bit as recorded before."""
    prior = _tiny_prior((28, 28))
    total = sum(float(v.double().sum()) for v in prior.model.state_dict().values() if v.is_floating_point())
    assert total == RECORDED_28["prior_sum"]
    X, Y = _problem((28, 28))
    from cortexflow.priors.ridge_prior import RidgePriorDecoder

    est = fit_resolved(RidgePriorDecoder(prior=prior, stimuli=Y, residual_grid=(0.0, 0.5), n_samples=8, knn=5), X[:18], Y[:18])
    P = est.predict(X[18:])
    assert float(P.astype(np.float64).sum()) == RECORDED_28["pred_sum"] and float(P[0, 10, 10]) == RECORDED_28["pixel"]


#: Recorded with the code before this change (main at 70ad1c7), one torch thread, on the same inputs.
RECORDED_28 = {"init_sum": 31.428357702890935, "loss": 0.08784051239490509, "prior_sum": 81.25945158443938,
               "pred_sum": 2431.693395316601, "pixel": 0.5239647626876831}
