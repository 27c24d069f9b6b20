"""EEG front-ends, their registered CCCV1 models, and the EEGDecoder estimator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone

from cortexflow.data.eeg import simulate_evoked_eeg
from cortexflow.data.stimuli import class_images, targets_for_labels
from cortexflow.exceptions import ConfigError, DataValidationError
from cortexflow.models import build_model, list_models
from cortexflow.models.eeg_estimator import EEGDecoder
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.models.frontends import FRONTENDS, build_frontend, eeg_input_shape
from cortexflow.training.config import CCCV1Config

TINY = {"hidden_dim": 64, "embed_dim": 32, "epochs": 3, "patience": 2, "batch_size": 8}


@pytest.mark.parametrize("name", sorted(FRONTENDS))
@pytest.mark.parametrize("shape", [(14, 256), (60, 100), (1, 6)])
def test_frontend_shapes(name, shape):
    fe = build_frontend(name, *shape, **({} if name == "flatten" else {"sfreq": 128.0}))
    fe.eval()
    x = torch.randn(3, *shape)
    out = fe(x)
    assert out.shape == (3, fe.out_dim) and torch.isfinite(out).all()
    torch.testing.assert_close(fe(x.reshape(3, -1)), out)  # flat rows are reshaped
    with pytest.raises(ValueError, match="expects input"):
        fe(torch.randn(3, shape[0] + 1, shape[1]))


def test_frontend_settings_scale_with_sfreq():
    a = build_frontend("shallow", 4, 500, sfreq=500.0)
    b = build_frontend("shallow", 4, 500, sfreq=125.0)
    assert (a.kernel, a.pool_size, a.stride) == (50, 150, 30)
    assert (b.kernel, b.pool_size, b.stride) == (12, 38, 8)
    with pytest.raises(ConfigError, match="unknown EEG front-end 'lstm'"):
        build_frontend("lstm", 4, 10)
    with pytest.raises(ConfigError, match="bad argument"):
        build_frontend("shallow", 4, 10, n_filterz=3)
    assert eeg_input_shape(12) == (1, 12) and eeg_input_shape((3, 4)) == (3, 4)
    with pytest.raises(ConfigError):
        eeg_input_shape("abc")


@pytest.mark.parametrize("name", ["eeg_flatten", "eeg_shallow", "eeg_eegnet"])
def test_registered_models_follow_the_contract(name):
    assert name in list_models()
    cfg = CCCV1Config(**{k: v for k, v in TINY.items() if k in ("hidden_dim", "embed_dim")})
    for input_dim, x in ((48, torch.randn(2, 48)), ((6, 40), torch.randn(2, 6, 40))):
        net = build_model(name, input_dim, (784,), cfg).eval()
        emb = net.encode(x)
        assert emb.shape == (2, 32)
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
        out = net(x)
        assert out.shape == (2, 784) and out.min() >= 0 and out.max() <= 1


@pytest.fixture(scope="module")
def small_data():
    ep = simulate_evoked_eeg(n_per_class=6, class_names=("0", "1", "2"), n_times=64, seed=3)
    Y = targets_for_labels(ep.labels, class_images(ep.class_names))
    return ep, Y


def test_eeg_decoder_fit_predict_save_load(small_data, tmp_path):
    ep, Y = small_data
    dec = EEGDecoder(frontend="eegnet", sfreq=ep.sfreq, config=TINY, random_state=1, device="cpu")
    assert dec.fit(ep.data, Y) is dec
    assert dec.config_.model == "eeg_eegnet" and (dec.n_channels_, dec.n_times_) == (14, 64)
    assert dec.n_features_in_ == 14 * 64
    P = dec.predict(ep.data[:5])
    assert P.shape == (5, 28, 28) and P.dtype == np.float32 and 0 <= P.min() and P.max() <= 1
    E = dec.transform(ep.data[:5])
    assert E.shape == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1, atol=1e-5)
    assert np.isfinite(dec.score(ep.data, Y))
    dec.save(tmp_path / "ckpt")
    back = EEGDecoder.load(tmp_path / "ckpt", device="cpu")
    assert (back.frontend, back.sfreq, back.clip) == ("eegnet", ep.sfreq, 20.0)
    assert (back.n_channels_, back.n_times_) == (14, 64)
    np.testing.assert_allclose(back.predict(ep.data[:5]), P, atol=1e-6)
    with pytest.raises(DataValidationError, match=r"trained on \(14, 64\)"):
        dec.predict(ep.data[:2, :10])
    with pytest.raises(DataValidationError, match=r"pass one epoch as X\[None\]"):
        dec.predict(ep.data[0])  # one epoch without its batch axis
    np.testing.assert_allclose(dec.predict(ep.data[:5].reshape(5, -1)), P, atol=1e-6)  # flat rows work too
    with pytest.raises(DataValidationError, match="3-D epochs"):
        dec.predict(ep.data[None])


def test_eeg_decoder_is_deterministic_and_clonable(small_data):
    ep, Y = small_data
    kw = dict(frontend="shallow", frontend_params={"n_filters": 8}, sfreq=ep.sfreq, config=TINY, device="cpu")
    a = EEGDecoder(random_state=4, **kw).fit(ep.data, Y).predict(ep.data[:4])
    b = EEGDecoder(random_state=4, **kw).fit(ep.data, Y).predict(ep.data[:4])
    np.testing.assert_array_equal(a, b)
    c = clone(EEGDecoder(random_state=4, **kw))
    assert c.get_params()["frontend_params"] == {"n_filters": 8} and not hasattr(c, "model_")
    with pytest.raises(ConfigError, match="unknown EEG front-end"):
        EEGDecoder(frontend="rnn", config=TINY).fit(ep.data, Y)
    bad = ep.data.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(DataValidationError, match="NaN or Inf"):
        EEGDecoder(config=TINY).fit(bad, Y)


def test_vector_decoder_checkpoints_still_load(tmp_path):
    """The hooks added to CCCV1Decoder for EEG leave its own save/load unchanged."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 20)).astype(np.float32)
    Y = rng.random((12, 28, 28)).astype(np.float32)
    dec = CCCV1Decoder(config=TINY, device="cpu").fit(X, Y)
    dec.save(tmp_path / "c")
    back = CCCV1Decoder.load(tmp_path / "c", device="cpu")
    np.testing.assert_allclose(back.predict(X), dec.predict(X), atol=1e-6)
    assert back.random_state == 0 and back.config_.model == "cccv1"
