"""scikit-learn's estimator checks on CCCV1Decoder.

Every check runs as its own test. The checks known to fail are listed, with the
reason, in ``EXPECTED_FAILED_CHECKS`` (and in ``docs/sklearn_checks.md``); they
are strict xfails, so a check that starts passing fails the suite until the list
is updated, and any other failing check fails it too.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import check_regressors_train, parametrize_with_checks

from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.training.config import CCCV1Config, get_config

# Two epochs of a 16-unit network: the checks test the API contract, not accuracy.
CHECK_CONFIG = get_config("small").replace(epochs=2, patience=2, hidden_dim=16, embed_dim=8, batch_size=8)

EXPECTED_FAILED_CHECKS = {
    "check_regressors_train": (
        "asserts R^2 > 0.5 on the training data of a toy regression; two epochs of the test configuration "
        "are not enough training (with 20 epochs at lr 1e-3 the check passes: see "
        "test_regressors_train_passes_with_enough_training)"
    ),
    "check_regressor_multioutput": (
        "asserts float64 predictions; CCCV1Decoder returns float32 images by design (the network computes "
        "in float32, and float64 would only double the memory of reconstructions)"
    ),
}

_kw = {"expected_failed_checks": lambda est: EXPECTED_FAILED_CHECKS}
if "xfail_strict" in inspect.signature(parametrize_with_checks).parameters:  # scikit-learn >= 1.8
    _kw["xfail_strict"] = True


@parametrize_with_checks([CCCV1Decoder(config=CHECK_CONFIG, device="cpu")], **_kw)
def test_sklearn_compatible_estimator(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check(estimator)


def test_regressors_train_passes_with_enough_training():
    # measured R^2 on the training data: 0.76 (seed 0) and 0.68 (seed 1); the check asks for > 0.5
    est = CCCV1Decoder(config=CHECK_CONFIG.replace(epochs=20, patience=20, lr=1e-3), device="cpu")
    check_regressors_train("CCCV1Decoder", est)


@pytest.mark.parametrize("config", ["auto", "vangerven", CHECK_CONFIG, CHECK_CONFIG.to_dict()])
def test_clone_with_every_kind_of_config(config):
    est = CCCV1Decoder(config=config, random_state=4)
    c = clone(est)
    assert c is not est and c.get_params() == est.get_params()
    assert isinstance(CHECK_CONFIG, CCCV1Config)
    # the clone is usable: its config resolves to the same settings
    assert get_config(c.config, n_train=50) == get_config(est.config, n_train=50)


def test_embedding_dtype_and_fit_transform_consistency(make_synthetic):
    X, Y, _ = make_synthetic(n=20, n_features=6)
    est = CCCV1Decoder(config=CHECK_CONFIG, device="cpu")
    emb = est.fit_transform(X.astype(np.float64), Y)
    assert emb.dtype == np.float32
    np.testing.assert_array_equal(emb, est.transform(X))
