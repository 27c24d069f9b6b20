"""Image priors (issue 11): corpora, near-duplicate guard, prior training and cache, ridge-prior, CLI."""

from __future__ import annotations

import copy
import gzip
import json
import shutil
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cortexflow.benchmark.methods import get_method, list_methods, make_estimator
from cortexflow.cli.main import cli
from cortexflow.exceptions import ChecksumError, ConfigError, CortexFlowError, DataValidationError
from cortexflow.priors import (
    PriorConfig,
    default_prior,
    drop_near_duplicates,
    get_corpus_info,
    get_prior,
    list_corpora,
    load_corpus,
)
from cortexflow.data import generators
from cortexflow.data.corpora import read_idx
from cortexflow.data.guard import DEFAULT_THRESHOLD, nearest_mse
from cortexflow.models.prior import ImagePrior, downsample_targets
from cortexflow.baselines.ridge import RidgeDecoder
from cortexflow.priors.ridge_prior import BLEND_GRID, RidgePriorDecoder, inner_group_folds
from cortexflow.training.prior import TRAINING_COUNTER, FittedPrior, cached_prior, fine_tune_prior, train_prior
from _priors import fit_resolved
from cortexflow.methods.build import with_prior

MNIST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TINY = PriorConfig(embed_dim=8, widths=(4, 8, 8), epochs=1, batch_size=32, max_images=120)
FAST = {"prior_config": TINY, "residual_grid": (0.0, 0.5), "n_samples": 8}


@pytest.fixture(scope="module")
def mnist_dir(data_dir):
    folder = data_dir / "priors" / "mnist"
    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"mnist-t10k files not found under {folder}")
    return data_dir


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return load_corpus("mnist-t10k", mnist_dir, download=False)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CORTEXFLOW_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- corpora
def test_registry_and_defaults():
    assert list_corpora() == ["color-shapes", "font-letters", "miyawaki-patterns", "mnist-t10k"]
    assert default_prior("vangerven") == "mnist-t10k"
    assert default_prior("miyawaki") == default_prior("miyawaki-10x10") == "miyawaki-patterns"
    assert default_prior("mindbigdata") == default_prior("mindbigdata_raw") == "mnist-t10k"
    assert default_prior("crell") == "font-letters"
    assert default_prior("my_data.mat") is None and default_prior(None) is None
    with pytest.raises(ConfigError, match="mnist-t10k"):
        get_corpus_info("imagenet")


def test_mnist_checksum_and_counts(mnist):
    assert mnist.images.shape == (10000, 28, 28) and mnist.images.dtype == np.float32
    assert 0.0 <= mnist.images.min() and mnist.images.max() == 1.0
    assert np.bincount(mnist.labels).tolist() == MNIST_COUNTS
    info = get_corpus_info("mnist-t10k")
    h = __import__("hashlib").sha256()
    for f in info.files:
        h.update(f"{f.filename}:{f.sha256}\n".encode())
    assert mnist.checksum == h.hexdigest()


def _copy_mnist(src_dir, tmp_path):
    dst = tmp_path / "data" / "priors" / "mnist"
    dst.mkdir(parents=True)
    for f in (src_dir / "priors" / "mnist").glob("*.gz"):
        shutil.copy(f, dst / f.name)
    return tmp_path / "data", dst


def test_checksum_mismatch_is_refused(mnist_dir, tmp_path):
    root, folder = _copy_mnist(mnist_dir, tmp_path)
    with open(folder / "t10k-labels-idx1-ubyte.gz", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ChecksumError, match="is not the registered file"):
        load_corpus("mnist-t10k", root, download=False)
    # with download allowed it tries the (closed) mirror and fails cleanly, keeping nothing new
    with pytest.raises(CortexFlowError, match="download of corpus"):
        load_corpus("mnist-t10k", root, download=True)


def test_missing_file_without_download(tmp_path):
    with pytest.raises(DataValidationError, match="corpus .* not found; pass download=True"):
        load_corpus("mnist-t10k", tmp_path, download=False)


def test_mnist_fetched_from_mirror(mnist_dir, tmp_path, loopback_mirror, monkeypatch):
    monkeypatch.setenv("CORTEXFLOW_MIRROR", loopback_mirror)
    c = load_corpus("mnist-t10k", tmp_path / "fresh", download=True, progress=False)
    assert len(c) == 10000 and (tmp_path / "fresh" / "priors" / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()


def _write_gz(path, payload: bytes):
    with gzip.open(path, "wb") as fh:
        fh.write(payload)
    return path


def test_idx_reader_rejects_corrupt_files(tmp_path):
    header = (0x803).to_bytes(4, "big") + (3).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    good = _write_gz(tmp_path / "good.gz", header + bytes(3 * 784))
    assert read_idx(good, expected_ndim=3).shape == (3, 28, 28)
    with pytest.raises(DataValidationError, match="truncated or corrupt"):
        read_idx(_write_gz(tmp_path / "short.gz", header + bytes(2 * 784 + 5)), expected_ndim=3)
    with pytest.raises(DataValidationError, match="magic"):
        read_idx(_write_gz(tmp_path / "magic.gz", b"\x01\x02" + header[2:] + bytes(3 * 784)), expected_ndim=3)
    with pytest.raises(DataValidationError, match="dimension"):
        read_idx(good, expected_ndim=1)
    raw = good.read_bytes()
    (tmp_path / "cut.gz").write_bytes(raw[: len(raw) // 2])  # gzip stream cut in the middle
    with pytest.raises(DataValidationError, match="gzip"):
        read_idx(tmp_path / "cut.gz", expected_ndim=3)
    (tmp_path / "plain.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataValidationError, match="gzip"):
        read_idx(tmp_path / "plain.gz", expected_ndim=3)


def test_miyawaki_rendering_matches_the_file(miyawaki):
    stimuli = np.concatenate([miyawaki.Y_train, miyawaki.Y_test])
    grids = generators.grid_from_image(stimuli)
    assert grids.shape == (len(stimuli), 10, 10)
    np.testing.assert_array_equal(generators.render_grid(grids), stimuli)
    # cells are 2, 3, ..., 3, 2 pixels wide
    assert np.bincount(generators.GRID_INDEX).tolist() == [2, 3, 3, 3, 3, 3, 3, 3, 3, 2]


def test_miyawaki_patterns_corpus():
    a = load_corpus("miyawaki-patterns")
    b = load_corpus("miyawaki-patterns")
    assert a.images.shape == (10000, 28, 28) and set(np.unique(a.images)) <= {0.0, 1.0}
    np.testing.assert_array_equal(a.images, b.images)
    assert a.checksum == b.checksum
    np.testing.assert_array_equal(generators.render_grid(generators.grid_from_image(a.images)), a.images)
    assert set(np.unique(a.labels)) == set(range(1 + len(generators.SHAPE_KINDS)))
    other, _ = generators.miyawaki_patterns(n_random=5, n_shapes=5, seed=1)
    same, _ = generators.miyawaki_patterns(n_random=5, n_shapes=5, seed=0)
    assert not np.array_equal(other, same)


def test_generated_corpus_is_cached(cache, monkeypatch):
    first = load_corpus("miyawaki-patterns")
    files = list((cache / "corpora").glob("miyawaki-patterns-*.npz"))
    assert len(files) == 1

    def boom(**kwargs):
        raise AssertionError("generated again despite the cache")

    monkeypatch.setitem(__import__("cortexflow.data.corpora", fromlist=["_GENERATORS"])._GENERATORS,
                        "miyawaki-patterns", boom)
    np.testing.assert_array_equal(load_corpus("miyawaki-patterns").images, first.images)
    files[0].write_bytes(b"garbage")  # unreadable: generated again (here: the patched generator raises)
    with pytest.raises(AssertionError, match="generated again"):
        load_corpus("miyawaki-patterns")


def test_font_letters_generator():
    a, la = generators.font_letters(per_letter=2, seed=0)
    b, _ = generators.font_letters(per_letter=2, seed=0)
    c, _ = generators.font_letters(per_letter=2, seed=1)
    assert a.shape == (52, 28, 28) and la.tolist() == list(np.repeat(np.arange(26), 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    border = np.concatenate([a[:, 0], a[:, -1], a[:, :, 0], a[:, :, -1]], axis=1)
    assert border.mean() > 0.97  # black ink on white paper, like the Crell targets
    ink = (a < 0.5).sum(axis=(1, 2))
    assert ink.min() > 10
    info = get_corpus_info("font-letters")
    assert info.n_images == 26 * info.params["per_letter"]


def test_generated_checksum_tracks_version_and_params():
    from dataclasses import replace

    from cortexflow.data.corpora import generated_checksum

    info = get_corpus_info("miyawaki-patterns")
    assert generated_checksum(info) != generated_checksum(replace(info, generator_version="999"))
    assert generated_checksum(info) != generated_checksum(replace(info, params={**info.params, "seed": 1}))


# ---------------------------------------------------------------- guard
def test_guard_drops_injected_stimuli(mnist, vangerven):
    rng = np.random.default_rng(0)
    stimuli = np.concatenate([vangerven.Y_train, vangerven.Y_test])
    corpus = mnist.images[:2000].copy()
    noisy = np.clip(vangerven.Y_test[:3] + rng.normal(0, 0.05, size=(3, 28, 28)), 0, 1)
    slots = np.array([10, 500, 1500, 1700, 1999])
    corpus[slots] = np.concatenate([vangerven.Y_test[:2], noisy])
    kept, dropped = drop_near_duplicates(corpus, stimuli)
    assert dropped.tolist() == sorted(slots.tolist())
    assert len(kept) == 2000 - 5
    # on the real corpus nothing is dropped: the nearest digit is 0.0108 away (README), above the threshold
    near = nearest_mse(mnist.images, stimuli)
    assert near.min() > DEFAULT_THRESHOLD
    assert abs(near.min() - 0.0108) < 5e-4


def test_guard_rejects_bad_input():
    with pytest.raises(DataValidationError, match="threshold"):
        drop_near_duplicates(np.zeros((2, 28, 28)), np.zeros((1, 28, 28)), threshold=-1)
    with pytest.raises(DataValidationError, match="shape"):
        drop_near_duplicates(np.zeros((2, 27, 28, 5)), np.zeros((1, 28, 28)))
    # a corpus of another shape is converted to the stimuli's (tests/test_prior_shapes.py)
    assert drop_near_duplicates(np.zeros((2, 27, 28)), np.ones((1, 28, 28)))[0].shape == (2, 28, 28)
    kept, dropped = drop_near_duplicates(np.zeros((2, 28, 28)), np.zeros((0, 28, 28)))
    assert len(kept) == 2 and len(dropped) == 0


# ---------------------------------------------------------------- model
def test_prior_config_validation():
    with pytest.raises(ConfigError, match="kind"):
        PriorConfig(kind="gan")
    with pytest.raises(ConfigError, match="unknown PriorConfig"):
        PriorConfig().replace(colour=3)
    cfg = PriorConfig(kind="vae", embed_dim=16)
    assert PriorConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert PriorConfig().embed_dim == 512


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_image_prior_shapes(kind):
    model = ImagePrior(TINY.replace(kind=kind)).eval()
    x = torch.rand(5, 28, 28)
    z = model.encode(x)
    assert z.shape == (5, 8)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    outs = model.decode_pyramid(z)
    assert [tuple(o.shape) for o in outs] == [(5, 7, 7), (5, 14, 14), (5, 28, 28)]
    assert all(float(o.detach().min()) >= 0 and float(o.detach().max()) <= 1 for o in outs)
    loss, parts = model.train().loss(x, torch.Generator().manual_seed(0))
    assert {"mse7", "mse14", "mse28"} <= set(parts) and ("kl" in parts) == (kind == "vae")
    loss.backward()
    t7, t14, t28 = downsample_targets(x)
    torch.testing.assert_close(t7.mean(), x.mean())
    assert t14.shape == (5, 14, 14) and t28 is x


def test_training_is_deterministic_per_seed(mnist):
    images = mnist.images[:96]
    state = torch.random.get_rng_state()
    a, _ = train_prior(images, TINY)
    b, _ = train_prior(images, TINY)
    c, _ = train_prior(images, TINY.replace(seed=1))
    assert torch.equal(state, torch.random.get_rng_state())  # no global seeding
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa if wa[k].is_floating_point())


def test_corpus_image_round_trips(mnist):
    images = mnist.images[:48]
    cfg = PriorConfig(embed_dim=32, widths=(8, 16, 32), epochs=30, batch_size=16, lr=3e-3)
    model, stats = train_prior(images, cfg)
    floor = float(((images - images.mean(0)) ** 2).mean())  # the mean-image reconstruction
    assert stats["recon_mse"] < 0.5 * floor, (stats, floor)
    np.testing.assert_allclose(float(((model(torch.from_numpy(images)).detach().numpy() - images) ** 2).mean()),
                               stats["recon_mse"], rtol=1e-4)


# ---------------------------------------------------------------- cache
def test_get_prior_cache_hit_costs_nothing(mnist_dir, vangerven, cache):
    stimuli = np.concatenate([vangerven.Y_train, vangerven.Y_test])
    before = TRAINING_COUNTER["trainings"]
    first = get_prior("mnist-t10k", exclude=stimuli, config=TINY, data_dir=mnist_dir)
    assert TRAINING_COUNTER["trainings"] == before + 1 and not first.info["from_cache"]
    assert first.info["n_dropped"] == 0 and first.info["n_images"] == TINY.max_images
    assert (first.path / "weights.safetensors").is_file() and (first.path / "prior.json").is_file()
    t0 = time.perf_counter()
    second = get_prior("mnist-t10k", exclude=stimuli, config=TINY, data_dir=mnist_dir)
    assert time.perf_counter() - t0 < 5.0
    assert TRAINING_COUNTER["trainings"] == before + 1 and second.info["from_cache"]
    x = vangerven.Y_test
    np.testing.assert_array_equal(first.encode_images(x), second.encode_images(x))
    np.testing.assert_array_equal(first.reconstruct(x), second.reconstruct(x))
    assert cached_prior("mnist-t10k", exclude=stimuli, config=TINY, data_dir=mnist_dir) is not None
    assert cached_prior("mnist-t10k", exclude=stimuli, config=TINY.replace(seed=5), data_dir=mnist_dir) is None
    # a different guard (other stimuli dropped) is another entry
    injected = np.concatenate([stimuli, load_corpus("mnist-t10k", mnist_dir).images[:3]])
    third = get_prior("mnist-t10k", exclude=injected, config=TINY, data_dir=mnist_dir)
    assert {0, 1, 2} <= set(third.info["dropped_indices"]) and third.info["n_dropped"] >= 3  # and their near-copies
    assert third.info["cache_key"] != first.info["cache_key"]
    # an unreadable entry is trained again, not trusted
    (first.path / "prior.json").write_text("{broken")
    again = get_prior("mnist-t10k", exclude=stimuli, config=TINY, data_dir=mnist_dir)
    assert not again.info["from_cache"]


def test_fitted_prior_api(mnist_dir, cache):
    prior = get_prior("mnist-t10k", config=TINY, data_dir=mnist_dir)
    z = prior.encode_images(np.zeros((3, 28, 28), np.float32))
    assert z.shape == (3, 8) and np.allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)
    img = prior.decode_embeddings(z * 7.0)  # re-normalised
    np.testing.assert_allclose(img, prior.decode_embeddings(z), atol=1e-6)
    assert all(not p.requires_grad for p in prior.model.parameters()) and not prior.model.training
    with pytest.raises(DataValidationError, match="expected"):
        prior.decode_embeddings(np.zeros((2, 5)))
    with pytest.raises(DataValidationError, match="NaN"):
        prior.encode_images(np.full((1, 28, 28), np.nan))
    tuned = fine_tune_prior(prior, np.zeros((6, 28, 28), np.float32), epochs=2, batch_size=3)
    assert "fine_tuned" in tuned.info and tuned.path is None
    assert all(not p.requires_grad for p in prior.model.parameters())  # the cached prior is untouched


# ---------------------------------------------------------------- ridge-prior
def _problem(n=20, p=30, seed=0):
    from cortexflow.data.generators import miyawaki_patterns

    rng = np.random.default_rng(seed)
    Y, _ = miyawaki_patterns(n_random=n, n_shapes=0, seed=seed)
    X = Y.reshape(n, -1) @ rng.normal(size=(784, p)) + 0.1 * rng.normal(size=(n, p))
    return X.astype(np.float32), Y


def test_ridge_prior_fits_and_predicts(mnist, cache):
    X, Y = _problem()
    est = with_prior(RidgePriorDecoder(prior="mnist-t10k", random_state=0, **FAST), Y[:15])
    assert est.fit(X[:15], Y[:15]) is est
    P = est.predict(X[15:])
    assert P.shape == (5, 28, 28) and P.dtype == np.float32 and 0 <= P.min() and P.max() <= 1
    Z = est.transform(X[15:])
    assert Z.shape == (5, 8) and np.allclose(np.linalg.norm(Z, axis=1), 1, atol=1e-5)
    info = json.loads(json.dumps(est.report_info_))
    assert info["prior_corpus"] == "mnist-t10k" and info["prior_cache_key"] == est.prior_.info["cache_key"]
    assert info["prior_n_dropped"] == 0  # guarded against the 15 training stimuli, none of which is a digit
    with pytest.raises(DataValidationError, match="expecting 30 features"):
        est.predict(X[:, :5])
    assert est.residual_scale_ in est.residual_grid and set(est.residual_cv_mse_) == set(est.residual_grid)
    assert est.residuals_.shape == (15, 8)
    np.testing.assert_array_equal(est.predict(X[15:]), P)  # seeded


def test_ridge_prior_residual_scale(mnist, cache):
    X, Y = _problem()
    plain = fit_resolved(RidgePriorDecoder(prior="mnist-t10k", prior_config=TINY, residual_scale=0, decoding="prior"), X, Y)
    np.testing.assert_allclose(plain.predict(X), plain.prior_.decode_embeddings(plain.transform(X)), atol=1e-6)
    blurred = fit_resolved(RidgePriorDecoder(prior="mnist-t10k", prior_config=TINY, residual_scale=1.0, n_samples=5,
                                decoding="prior"), X, Y)
    assert blurred.residual_scale_ == 1.0 and not np.allclose(blurred.predict(X), plain.predict(X))
    with pytest.raises(ConfigError, match="residual_scale"):
        fit_resolved(RidgePriorDecoder(prior="mnist-t10k", prior_config=TINY, residual_scale=-1), X, Y)


def test_ridge_prior_corpus_knn_decoding(mnist, cache):
    X, Y = _problem()
    est = fit_resolved(RidgePriorDecoder(prior="mnist-t10k", prior_config=TINY, decoding="corpus-knn", knn=3), X, Y)
    P = est.predict(X[:4])
    sims = est.transform(X[:4]) @ est.corpus_embeddings_.T
    top = np.argsort(-sims, axis=1)[:, :3]
    np.testing.assert_allclose(P, mnist.images[top].mean(axis=1), atol=1e-6)  # nothing dropped: the images are the corpus
    assert est.report_info_["decoding"] == "corpus-knn"
    with pytest.raises(ConfigError, match="decoding"):
        fit_resolved(RidgePriorDecoder(prior="mnist-t10k", prior_config=TINY, decoding="gan"), X, Y)


def test_ridge_prior_hybrid_is_the_mean_of_the_two_decodings(mnist, cache):
    X, Y = _problem()
    kw = {"prior": "mnist-t10k", "prior_config": TINY, "residual_scale": 0.5, "n_samples": 6, "knn": 4}
    hybrid = fit_resolved(RidgePriorDecoder(**kw), X, Y)
    assert hybrid.decoding == "hybrid" and hybrid.report_info_["decoding"] == "hybrid"
    prior = fit_resolved(RidgePriorDecoder(decoding="prior", **kw), X, Y)
    knn = fit_resolved(RidgePriorDecoder(decoding="corpus-knn", **kw), X, Y)
    np.testing.assert_allclose(hybrid.predict(X[:5]), 0.5 * (prior.predict(X[:5]) + knn.predict(X[:5])), atol=1e-6)
    for bad, match in (({"decoding": "gan"}, "decoding='gan'.*'hybrid', 'prior', 'corpus-knn'"),
                       ({"knn": 0}, "knn=0"), ({"pixel_blend": 2}, "pixel_blend=2"),
                       ({"pixel_blend": "most"}, "pixel_blend='most'")):
        with pytest.raises(ConfigError, match=match):
            fit_resolved(RidgePriorDecoder(**{**kw, **bad}), X, Y)


def test_inner_folds_keep_repeated_images_together():
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    unique = inner_group_folds(np.arange(23), rng_a)
    plain = np.array_split(rng_b.permutation(23), 10)
    assert [sorted(te) for _, te in unique] == [sorted(te) for te in plain]  # distinct images: the old folds
    groups = np.repeat(np.arange(7), 3)
    folds = inner_group_folds(groups, np.random.default_rng(0))
    assert len(folds) == 7 and sorted(np.concatenate([te for _, te in folds])) == list(range(21))
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])


def test_ridge_prior_residuals_of_repeated_images_come_from_other_images(mnist, cache):
    """With each image shown 3 times, an out-of-fold residual never comes from a fit that saw the same image."""
    X, Y = _problem()
    X3, Y3 = np.concatenate([X, X + 0.01, X - 0.01]), np.concatenate([Y, Y, Y])
    est = fit_resolved(RidgePriorDecoder(prior="mnist-t10k", prior_config=TINY, decoding="prior", residual_scale=0, alpha=1.0), X3, Y3)
    A = est.scaler_.transform(X3).astype(np.float64)
    T = est.prior_.encode_images(Y3).astype(np.float64)
    folds = inner_group_folds(np.tile(np.arange(20), 3), np.random.default_rng(0))
    expected = T - est._out_of_fold(A, T, folds)
    np.testing.assert_allclose(est.residuals_, expected, atol=1e-5)


def test_ridge_prior_pixel_blend(mnist, cache):
    X, Y = _problem()
    pixel = RidgeDecoder().fit(X, Y).predict(X[:5])
    only_pixels = fit_resolved(RidgePriorDecoder(prior="mnist-t10k", prior_config=TINY, pixel_blend=1.0), X, Y)
    np.testing.assert_allclose(only_pixels.predict(X[:5]), pixel, atol=1e-5)
    auto = fit_resolved(RidgePriorDecoder(prior="mnist-t10k", prior_config=TINY, pixel_blend="auto", n_samples=6), X, Y)
    assert auto.pixel_blend_ in BLEND_GRID and set(auto.blend_cv_mse_) == set(BLEND_GRID)
    assert auto.report_info_["pixel_blend"] == auto.pixel_blend_
    off = fit_resolved(RidgePriorDecoder(prior="mnist-t10k", prior_config=TINY), X, Y)
    assert off.pixel_blend_ == 0 and off.pixel_ridge_ is None


def test_ridge_prior_guard_counts_duplicates(mnist, cache):
    X, Y = _problem()
    stimuli = np.concatenate([Y, mnist.images[[3, 4, 5000, 9999]]])
    est = fit_resolved(RidgePriorDecoder(prior="mnist-t10k", stimuli=stimuli, **FAST), X, Y)
    assert est.report_info_["prior_n_dropped"] >= 4
    assert {3, 4, 5000, 9999} <= set(est.prior_.info["dropped_indices"])


def test_ridge_prior_without_prior_on_user_data_is_a_clear_error(cache):
    X, Y = _problem()
    for dataset in (None, "my_recording.mat"):
        with pytest.raises(ConfigError, match="no default image prior.*font-letters, miyawaki-patterns, mnist-t10k"):
            fit_resolved(RidgePriorDecoder(dataset=dataset, prior_config=TINY), X, Y)
    with pytest.raises(ConfigError, match="unknown prior corpus 'imagenet'"):
        fit_resolved(RidgePriorDecoder(prior="imagenet"), X, Y)
    with pytest.raises(ConfigError, match="alpha"):  # refused before the prior is trained or its corpus fetched
        fit_resolved(RidgePriorDecoder(prior="mnist-t10k", alpha=-1.0, prior_config=TINY, data_dir="/nonexistent"), X, Y)


@pytest.mark.parametrize("options", [{}, {"pixel_blend": "auto", "decoding": "prior"}])
def test_ridge_prior_never_sees_test_rows(vangerven, cache, options):
    """Training on a data set whose test split is all NaN gives exactly the same model."""
    poisoned = copy.deepcopy(vangerven)
    poisoned.X_test[:] = np.nan
    poisoned.Y_test[:] = np.nan
    normal = fit_resolved(RidgePriorDecoder(dataset="vangerven", **FAST, **options), vangerven.X_train, vangerven.Y_train)
    isolated = fit_resolved(RidgePriorDecoder(dataset="vangerven", **FAST, **options), poisoned.X_train, poisoned.Y_train)
    assert np.isnan(poisoned.X_test).all()
    np.testing.assert_array_equal(isolated.predict(vangerven.X_test), normal.predict(vangerven.X_test))
    np.testing.assert_allclose(isolated.scaler_.mean_, vangerven.X_train.astype(np.float64).mean(axis=0))
    assert isolated.report_info_ == normal.report_info_


def test_ridge_prior_is_a_benchmark_method(cache):
    assert "ridge-prior" in list_methods() and get_method("ridge-prior").in_all
    stim = np.zeros((4, 28, 28), np.float32)
    est = make_estimator("ridge-prior", 3, "vangerven", 90, fast=True, stimuli=stim, resolve=False)
    assert isinstance(est, RidgePriorDecoder) and est.random_state == 3 and np.array_equal(est.stimuli, stim)
    assert est.prior_config["max_images"] <= 500
    est = make_estimator("ridge-prior", 0, "my.mat", 20, prior="mnist-t10k", embed_dim=16, stimuli=stim,
                         resolve=False)
    assert est.prior == "mnist-t10k" and est.embed_dim == 16


def test_ridge_prior_rows_do_not_depend_on_each_other(mnist, cache):
    """A row's reconstruction is the same whether it is predicted alone, with others or in another order."""
    X, Y = _problem()
    est = fit_resolved(RidgePriorDecoder(prior="mnist-t10k", prior_config=TINY, residual_scale=0.5, n_samples=4), X, Y)
    P = est.predict(X[:6])
    for i in range(6):
        np.testing.assert_allclose(est.predict(X[i:i + 1])[0], P[i], atol=1e-6)
    np.testing.assert_allclose(est.predict(X[:6][::-1]), P[::-1], atol=1e-6)


def test_ridge_prior_refit_with_other_options_drops_old_attributes(mnist, cache):
    X, Y = _problem()
    est = fit_resolved(RidgePriorDecoder(prior="mnist-t10k", prior_config=TINY, pixel_blend="auto", n_samples=4), X, Y)
    assert hasattr(est, "corpus_images_") and hasattr(est, "blend_cv_mse_")
    est.set_params(decoding="prior", pixel_blend=0, residual_scale=0.5).fit(X, Y)
    for name in ("corpus_images_", "corpus_embeddings_", "blend_cv_mse_", "residual_cv_mse_"):
        assert not hasattr(est, name), name


def test_ridge_prior_stacked_is_a_benchmark_method(mnist, cache):
    assert "ridge-prior-stacked" in list_methods() and get_method("ridge-prior-stacked").description
    X, Y = _problem()
    est = make_estimator("ridge-prior-stacked", 2, "my.mat", 15, fast=True, prior="mnist-t10k", stimuli=Y)
    assert isinstance(est, RidgePriorDecoder) and est.pixel_blend == "auto" and est.random_state == 2
    P = est.fit(X[:15], Y[:15]).predict(X[15:])
    assert P.shape == (5, 28, 28) and np.isfinite(P).all() and est.pixel_blend_ in BLEND_GRID
    assert est.report_info_["prior_corpus"] == "mnist-t10k" and "pixel_blend" in est.report_info_


# ---------------------------------------------------------------- CLI
def test_cli_prior_train_and_info(mnist_dir, cache):
    runner = CliRunner()
    res = runner.invoke(cli, ["prior", "list"])
    assert res.exit_code == 0 and "mnist-t10k" in res.output
    args = ["prior", "train", "--corpus", "mnist-t10k", "--embed-dim", "8", "--epochs", "1", "--max-images", "64",
            "--for-dataset", "vangerven", "--no-progress", "--json"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["n_images"] == 64 and out["n_dropped"] == 0 and not out["from_cache"]
    res = runner.invoke(cli, args)
    assert json.loads(res.output)["from_cache"]
    res = runner.invoke(cli, ["prior", "info", "mnist-t10k", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["n_images"] == 10000 and len(info["priors"]) == 1
    assert info["priors"][0]["embed_dim"] == 8 and info["priors"][0]["path"] == out["path"]
    res = runner.invoke(cli, ["prior", "info", "mnist-t10k"])
    assert "near-duplicates dropped" in res.output and "reconstruction MSE" in res.output


def test_cli_prior_errors(cache):
    runner = CliRunner()
    res = runner.invoke(cli, ["prior", "info", "imagenet"])
    assert res.exit_code == 2 and "registered corpora" in res.output
    res = runner.invoke(cli, ["prior", "train", "--corpus", "nope", "--no-progress"])
    assert res.exit_code == 2 and "unknown prior corpus" in res.output


@pytest.mark.slow
def test_full_mnist_prior_trains_in_under_five_minutes(mnist_dir, vangerven, cache):
    stimuli = np.concatenate([vangerven.Y_train, vangerven.Y_test])
    t0 = time.perf_counter()
    prior = get_prior("mnist-t10k", exclude=stimuli, data_dir=mnist_dir)
    assert time.perf_counter() - t0 < 300
    assert prior.info["n_images"] == 10000 and prior.info["recon_mse"] < 0.02


@pytest.mark.slow
def test_benchmark_runs_ridge_prior_end_to_end(vangerven, tmp_path, cache):
    import pandas as pd

    out = tmp_path / "bench"
    args = ["benchmark", "--datasets", "vangerven", "--methods", "ridge-prior,ridge", "--split", "official",
            "--seeds", "1", "--out", str(out), "--reference", "ridge", "--fast", "--no-progress"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out / "results.csv")
    assert set(df["method"]) == {"ridge-prior", "ridge"} and len(df[df["method"] == "ridge-prior"]) == 10


def test_get_prior_leaves_the_global_random_stream_alone_on_a_miss_and_a_hit(mnist_dir, cache):
    """A method's later global-stream draws (e.g. dropout) must not depend on whether the prior was cached."""
    config = PriorConfig(embed_dim=8, epochs=1, max_images=64, widths=(4, 8, 8))
    draws = []
    for _ in range(2):  # a miss (trains and writes the cache), then a hit (reads it)
        torch.manual_seed(1)
        get_prior("mnist-t10k", config=config, data_dir=mnist_dir)
        draws.append(torch.rand(1).item())
    torch.manual_seed(1)
    assert draws == [torch.rand(1).item()] * 2


def test_ridge_prior_fit_does_no_io_and_with_prior_resolves(tmp_path, mnist):
    """fit refuses a prior by corpus name and touches no cache; with_prior trains it there, with guarded corpus images."""
    X, Y = _problem()
    cache = tmp_path / "cache"
    est = RidgePriorDecoder(prior="mnist-t10k", prior_config=TINY, cache_dir=cache)
    with pytest.raises(ConfigError, match="needs a fitted prior, got prior='mnist-t10k'.*with_prior"):
        est.fit(X, Y)
    assert not cache.exists()  # nothing read or written
    with_prior(est, Y)
    assert isinstance(est.prior, FittedPrior) and cache.is_dir() and est.prior.corpus_images is not None
    assert est.fit(X, Y).prior_ is est.prior
    bare = FittedPrior(est.prior.model, est.prior.info)  # a fitted prior without its corpus images
    with pytest.raises(ConfigError, match="holds no corpus images"):
        RidgePriorDecoder(prior=bare).fit(X, Y)  # hybrid decoding needs them; fit does not load them
    assert RidgePriorDecoder(prior=bare, decoding="prior").fit(X, Y).prior_ is bare
    with_prior(RidgePriorDecoder(prior=bare), Y)
    assert bare.corpus_images is not None and len(bare.corpus_images) > 0  # the helper adds them, guarded
