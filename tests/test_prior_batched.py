"""cccv1-prior ensembles trained together by the batched trainer equal the members trained one by one."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cortexflow.exceptions import ConfigError
from cortexflow.models.ensemble import member_seeds
from cortexflow.priors import PriorConfig, get_prior
from cortexflow.priors.cccv1_prior import CCCV1PriorDecoder
from cortexflow.data.generators import miyawaki_patterns
from cortexflow.training.batched import BatchedNotSupported
from cortexflow.training.config import get_config
from _priors import fit_resolved

TINY = PriorConfig(embed_dim=8, widths=(4, 8, 8), epochs=1, batch_size=32, max_images=120)
# patience 3 over 8 epochs, random_state 2: the members below stop at different epochs (they leave the stack
# mid-training, with and without the ridge read-out)
TRAIN = get_config("small").replace(epochs=8, patience=3, hidden_dim=32, batch_size=8)
# observed on CPU float32: 1.2e-07 (summation order of stacked matrix products differs from one member's)
ATOL = 1e-5


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    return get_prior("miyawaki-patterns", config=TINY, cache_dir=tmp_path_factory.mktemp("prior-cache"))


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    n, p = 30, 40
    Y, _ = miyawaki_patterns(n_random=n, n_shapes=0, seed=0)
    X = Y.reshape(n, -1) @ rng.normal(size=(784, p)) + 0.1 * rng.normal(size=(n, p))
    return X.astype(np.float32), Y


def _fit(prior, X, Y, **kw):
    kw = {"config": TRAIN, "device": "cpu", "random_state": 2, "residual_scale": 0.0, "decoding": "prior", "n_members": 3,
          **kw}
    return fit_resolved(CCCV1PriorDecoder(prior=prior, **kw), X, Y)


def _member_images(est, X):
    with torch.no_grad():
        xt = torch.as_tensor(est.signal_scaler_.transform(X))
        return np.stack([m(xt).numpy() for m in est.model_.members])


@pytest.mark.parametrize("ridge_skip", [True, False])
def test_batched_members_equal_sequential_members(tiny_prior, problem, ridge_skip):
    X, Y = problem
    seq = _fit(tiny_prior, X, Y, ridge_skip=ridge_skip, batched=False)
    bat = _fit(tiny_prior, X, Y, ridge_skip=ridge_skip, batched=True)
    np.testing.assert_allclose(_member_images(bat, X), _member_images(seq, X), rtol=0, atol=ATOL)
    np.testing.assert_allclose(bat.predict(X), seq.predict(X), rtol=0, atol=ATOL)
    assert len(bat.histories_) == 3
    for hb, hs in zip(bat.histories_, seq.histories_):  # same epochs, schedule and early stop per member
        assert [h["epoch"] for h in hb] == [h["epoch"] for h in hs]
        assert [h["lr"] for h in hb] == [h["lr"] for h in hs]
        np.testing.assert_allclose([h["val_loss"] for h in hb], [h["val_loss"] for h in hs], rtol=0, atol=1e-6)
        np.testing.assert_allclose([h["train_loss"] for h in hb], [h["train_loss"] for h in hs], rtol=1e-5)
    # the batched members differ from each other (own seeds) and stopped at different epochs here
    assert not np.allclose(_member_images(bat, X)[0], _member_images(bat, X)[1])
    assert len({len(h) for h in bat.histories_}) > 1


def test_batched_member_is_the_single_model_of_its_seed(tiny_prior, problem):
    X, Y = problem
    bat = _fit(tiny_prior, X, Y, n_members=2, batched=True)
    single = _fit(tiny_prior, X, Y, n_members=1, random_state=member_seeds(2, 2)[1])
    np.testing.assert_allclose(_member_images(bat, X)[1], single.predict(X).reshape(len(X), -1), rtol=0, atol=ATOL)


def test_batched_fit_leaves_global_random_state_alone(tiny_prior, problem):
    X, Y = problem
    torch.manual_seed(3)
    before = torch.get_rng_state()
    _fit(tiny_prior, X, Y, batched=True)
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize("option", [{"encoder": "attention"}, {"fine_tune_decoder": True}])
def test_unsupported_options_fall_back_to_sequential(tiny_prior, problem, option, caplog):
    X, Y = problem
    small = {"n_members": 2, "config": TRAIN.replace(epochs=2)}
    with caplog.at_level(logging.INFO, logger="cortexflow.priors.cccv1_prior"):
        auto = _fit(tiny_prior, X, Y, **small, **option)
    assert "train one after another" in caplog.text and next(iter(option)) in caplog.text
    np.testing.assert_array_equal(auto.predict(X), _fit(tiny_prior, X, Y, **small, **option, batched=False).predict(X))
    with pytest.raises(BatchedNotSupported, match=f"batched=True: {next(iter(option))}"):
        _fit(tiny_prior, X, Y, **small, **option, batched=True)


def test_bad_batched_value_is_named(tiny_prior, problem):
    X, Y = problem
    with pytest.raises(ConfigError, match="batched='yes' is not one of 'auto', True, False"):
        _fit(tiny_prior, X, Y, batched="yes")
