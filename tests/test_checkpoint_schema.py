"""Checkpoints validated value by value: every edited value is refused with a CheckpointError naming file and key.

The cases of issue 20 (``params.knn`` 0, ``scaler_.scale_`` NaN or 0,
``pixel_blend_ = 7``, a state entry named ``predict``, ``residual_scale_ =
-40``, ``decoding = "telepathy"``, a format-1 checkpoint without a hash, a
non-finite prediction) and their kin for the baselines.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cortexflow.baselines import BrainDiffuserLite, MeanImageDecoder, MindVisLite, RidgeDecoder
from cortexflow.exceptions import CheckpointError
from cortexflow.models.base import NonFinitePredictionError
from cortexflow.models.checkpoint import CHECKPOINT_META, CHECKPOINT_WEIGHTS
from cortexflow.models.ensemble import CCCV1EnsembleDecoder
from cortexflow.models.loader import load_decoder
from cortexflow.priors import PriorConfig
from cortexflow.priors.cccv1_prior import CCCV1PriorDecoder
from cortexflow.data.generators import miyawaki_patterns
from cortexflow.priors.ridge_prior import RidgePriorDecoder
from cortexflow.training.config import get_config
from cortexflow.utils.io import sha256_file
from _priors import fit_resolved

TINY = PriorConfig(embed_dim=8, widths=(4, 8, 8), epochs=1, batch_size=32, max_images=120)
TRAIN = get_config("small").replace(epochs=2, patience=1, hidden_dim=32, embed_dim=16, batch_size=8)


def _problem(n=20, p=30, seed=0):
    rng = np.random.default_rng(seed)
    Y, _ = miyawaki_patterns(n_random=n, n_shapes=0, seed=seed)
    X = Y.reshape(n, -1) @ rng.normal(size=(784, p)) + 0.1 * rng.normal(size=(n, p))
    return X.astype(np.float32), Y.astype(np.float32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One checkpoint of each estimator the cases edit, fitted once on 20 rows."""
    root = tmp_path_factory.mktemp("schema")
    cache = root / "cache"
    X, Y = _problem()
    prior = {"prior": "miyawaki-patterns", "prior_config": TINY, "cache_dir": cache}
    makers = {
        "ridge-prior": lambda: RidgePriorDecoder(**prior, n_samples=4, residual_grid=(0.0, 0.5), pixel_blend="auto"),
        "cccv1-prior": lambda: CCCV1PriorDecoder(**prior, config=TRAIN, device="cpu", residual_scale=0.5),
        "mean-image": lambda: MeanImageDecoder(),
        "ridge": lambda: RidgeDecoder(),
        "brain-diffuser-lite": lambda: BrainDiffuserLite(vae_epochs=1, denoiser_epochs=1, patience=1, steps=2),
        "mindvis-lite": lambda: MindVisLite(dim=16, depth=1, heads=2, pretrain_epochs=1, fine_tune_epochs=1,
                                            patience=1),
        "cccv1-ensemble": lambda: CCCV1EnsembleDecoder(2, config=TRAIN, device="cpu"),
    }
    out = {}
    for name, make in makers.items():
        est = fit_resolved(make(), X, Y) if hasattr(make(), "prior") else make().fit(X, Y)
        out[name] = (est, est.save(root / name))
    return out, X


@pytest.fixture
def copy_of(saved, tmp_path):
    count = iter(range(100))

    def make(name):
        dest = tmp_path / f"{name}-{next(count)}"
        shutil.copytree(saved[0][name][1], dest)
        return dest
    return make


def _edit_meta(path, fn):
    meta = json.loads((path / CHECKPOINT_META).read_text())
    fn(meta)
    (path / CHECKPOINT_META).write_text(json.dumps(meta))


def _edit_tensors(path, fn):
    """Change the tensors and record the new hash (a deliberate edit, not damage)."""
    w = path / CHECKPOINT_WEIGHTS
    state = load_file(str(w))
    fn(state)
    save_file(state, str(w))
    _edit_meta(path, lambda m: m.update(weights_sha256=sha256_file(w)))


def _params(meta):
    return meta["params"]["items"]


def _state(meta):
    return meta["state"]["items"]


def _refused(path, *fragments):
    with pytest.raises(CheckpointError) as err:
        load_decoder(path, device="cpu")
    message = str(err.value)
    assert str(path) in message, message  # the file is named
    for f in fragments:
        assert f in message, message
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------ issue 20's cases
def test_knn_0_in_params_is_refused(copy_of):
    path = copy_of("ridge-prior")
    _edit_meta(path, lambda m: _params(m).update(knn=0))
    _refused(path, "'params' is invalid for RidgePriorDecoder", "knn=0 must be an integer >= 1")


def test_unknown_decoding_is_refused(copy_of):
    path = copy_of("ridge-prior")
    _edit_meta(path, lambda m: _params(m).update(decoding="telepathy"))
    _refused(path, "decoding='telepathy'; allowed: 'hybrid', 'prior', 'corpus-knn'")


@pytest.mark.parametrize("value, fragment", [(float("nan"), "NaN or infinite"), (0.0, "value(s) <= 0")])
def test_scaler_scale_nan_or_0_is_refused(copy_of, value, fragment):
    path = copy_of("ridge-prior")

    def poison(state):
        state["state.scaler_.state.scale_"][4] = value

    _edit_tensors(path, poison)
    _refused(path, "'state.scaler_.scale_'", fragment)


def test_pixel_blend_7_is_refused(copy_of):
    path = copy_of("ridge-prior")
    _edit_meta(path, lambda m: _state(m).update(pixel_blend_=7))
    _refused(path, "'state.pixel_blend_' is 7; expected a finite number >= 0 and <= 1")


def test_residual_scale_minus_40_is_refused(copy_of):
    path = copy_of("ridge-prior")
    _edit_meta(path, lambda m: _state(m).update(residual_scale_=-40))
    _refused(path, "'state.residual_scale_' is -40; expected a finite number >= 0")


@pytest.mark.parametrize("name", ["predict", "__class__", "_decode", "fit"])
def test_a_state_entry_that_is_not_a_declared_attribute_is_refused(copy_of, name):
    path = copy_of("ridge-prior")
    _edit_meta(path, lambda m: _state(m).update({name: 1}))
    _refused(path, f"state entry 'state.{name}' is not a fitted attribute of RidgePriorDecoder; allowed: alpha_, ")


def test_format_1_without_hash_is_refused(copy_of):
    path = copy_of("ridge-prior")
    _edit_meta(path, lambda m: [m.update(format=1), m.pop("weights_sha256")])
    _refused(path, "'format' is 1: a format-1 checkpoint has no weights hash")


def test_a_prediction_that_is_not_finite_is_refused(saved):
    est, path = saved[0]["ridge-prior"]
    loaded = load_decoder(path)
    loaded.corpus_images_ = loaded.corpus_images_.copy()
    loaded.corpus_images_[:] = np.nan
    with pytest.raises(NonFinitePredictionError, match="RidgePriorDecoder.predict produced NaN or infinite values "
                                                       "for 20 of 20 row"):
        loaded.predict(saved[1])


# ------------------------------------------------------------------------ shapes, nesting, missing entries
def test_arrays_whose_shapes_do_not_fit_together_are_refused(copy_of):
    path = copy_of("ridge-prior")
    _edit_tensors(path, lambda s: s.update({"state.residuals_": s["state.residuals_"][:, :5].contiguous()}))
    _edit_meta(path, lambda m: _state(m)["residuals_"].update(shape=[20, 5]))
    _refused(path, "'state.residuals_' has 5 along axis 1, but embed_dim is 8 elsewhere")


def test_corpus_images_of_another_image_shape_are_refused(copy_of):
    path = copy_of("ridge-prior")
    _edit_meta(path, lambda m: _state(m)["corpus_images_"].update(
        shape=[_state(m)["corpus_images_"]["shape"][0], 14, 56]))
    _refused(path, "'state.corpus_images_' has shape", "expected 28 along axis 1")


def test_a_missing_required_entry_is_refused(copy_of):
    path = copy_of("ridge-prior")
    _edit_meta(path, lambda m: _state(m).pop("alpha_"))
    _refused(path, "state entry state.alpha_ of RidgePriorDecoder missing")


def test_the_nested_posterior_decoder_is_validated_too(copy_of):
    path = copy_of("cccv1-prior")
    _edit_meta(path, lambda m: _state(m)["posterior_"]["state"]["items"].update(residual_scale_=-40))
    _refused(path, "'state.posterior_.state.residual_scale_' is -40")
    path = copy_of("cccv1-prior")
    _edit_meta(path, lambda m: _params(m).update(encoder="transformer-xl"))
    _refused(path, "encoder='transformer-xl' is not one of")


def test_an_unknown_parameter_is_refused(copy_of):
    path = copy_of("ridge-prior")
    _edit_meta(path, lambda m: _params(m).update(bogus=3))
    _refused(path, "unknown parameter(s) 'bogus' for RidgePriorDecoder; allowed: ")


def test_image_shape_is_checked(copy_of):
    path = copy_of("mean-image")
    _edit_meta(path, lambda m: m.update(image_shape=[14, 56]))
    _refused(path, "'state.mean_image_' has shape [28, 28]; expected 14 along axis 0")
    path = copy_of("mean-image")
    _edit_meta(path, lambda m: m.update(image_shape=[0, 28]))
    _refused(path, "'image_shape' is [0, 28]; expected at most 3 integers >= 1")


# ------------------------------------------------------------------------ baselines
@pytest.mark.parametrize("name, edit, fragments", [
    ("mean-image", lambda m: _state(m).update(predict=1), ["state entry 'state.predict' is not a fitted attribute"]),
    ("mean-image", lambda m: _params(m).update(random_state="seven"), ["random_state='seven' is not valid"]),
    ("ridge", lambda m: _state(m).update(alpha_=-1.0), ["'state.alpha_' is -1.0; expected a finite number > 0"]),
    ("ridge", lambda m: _params(m).update(cv=1), ["cv=1 is not allowed; allowed: None"]),
    ("brain-diffuser-lite", lambda m: _params(m).update(strength=1.5), ["strength=1.5 is not allowed"]),
    ("brain-diffuser-lite", lambda m: _params(m).update(latent_dim=4), ["weights of 'state.vae_' do not match"]),
    ("mindvis-lite", lambda m: _params(m).update(heads=0), ["heads=0 is not allowed; allowed: an integer >= 1"]),
    ("mindvis-lite", lambda m: _params(m).update(dim=32, heads=2), ["weights of 'state.model_' do not match"]),
    ("cccv1-ensemble", lambda m: m["params"].update(bogus=1), ["unknown parameter(s) 'bogus'"]),
    ("cccv1-ensemble", lambda m: m["params"].update(n_members=3), ["'params.n_members' is 3, but the checkpoint "
                                                                   "holds 2"]),
])
def test_edited_baseline_values_are_refused(copy_of, name, edit, fragments):
    path = copy_of(name)
    _edit_meta(path, edit)
    _refused(path, *fragments)


def test_feature_scale_0_is_refused(copy_of):
    path = copy_of("brain-diffuser-lite")
    _edit_tensors(path, lambda s: s["state.feature_scale_"].__setitem__(0, 0.0))
    _refused(path, "'state.feature_scale_' holds 1 value(s) out of range", "expected an array of values > 0")


def test_non_finite_network_weights_are_refused(copy_of):
    path = copy_of("brain-diffuser-lite")

    def poison(state):
        name = next(k for k in state if k.startswith("state.vae_.") and state[k].is_floating_point())
        state[name].view(-1)[0] = float("inf")

    _edit_tensors(path, poison)
    _refused(path, "state.vae_ weight tensor", "NaN or infinite")


def test_ridge_coefficients_of_the_wrong_width_are_refused(copy_of):
    path = copy_of("ridge")
    _edit_tensors(path, lambda s: s.update({"state.ridge_.coef": s["state.ridge_.coef"][:, :29].contiguous()}))
    _edit_meta(path, lambda m: _state(m)["ridge_"]["coef"].update(shape=[784, 29]))
    _refused(path, "'state.ridge_.coef_' has shape [784, 29]; expected (outputs, 30)")


def test_a_valid_checkpoint_still_loads_and_predicts_identically(saved):
    X = saved[1]
    for name, (est, path) in saved[0].items():
        loaded = load_decoder(path, device="cpu")
        np.testing.assert_array_equal(loaded.predict(X), est.predict(X), err_msg=name)
        assert torch.is_grad_enabled()


def _respell(items, new, old):
    items[old] = items.pop(new)


def test_checkpoints_written_before_the_fine_tune_rename_still_load(saved, copy_of):
    """``finetune_*`` (the spelling before ``fine_tune_*``) in a stored checkpoint is read as the new name."""
    X = saved[1]
    path = copy_of("cccv1-prior")
    _edit_meta(path, lambda m: (_respell(_params(m), "fine_tune_decoder", "finetune_decoder"),
                                _respell(_params(m), "fine_tune_lr_factor", "finetune_lr_factor"),
                                _params(m).update(finetune_lr_factor=0.25)))
    assert "finetune_decoder" in json.loads((path / CHECKPOINT_META).read_text())["params"]["items"]
    loaded = load_decoder(path, device="cpu")
    assert loaded.fine_tune_decoder is False and loaded.fine_tune_lr_factor == 0.25
    np.testing.assert_array_equal(loaded.predict(X), saved[0]["cccv1-prior"][0].predict(X))
    path = copy_of("mindvis-lite")
    _edit_meta(path, lambda m: (_respell(_params(m), "fine_tune_epochs", "finetune_epochs"),
                                _respell(_state(m), "fine_tune_result_", "finetune_result_")))
    loaded = load_decoder(path, device="cpu")
    assert loaded.fine_tune_epochs == 1 and loaded.fine_tune_result_ is not None
    assert "finetune_epochs" not in loaded.get_params()


def test_the_old_spelling_beside_the_new_one_is_refused(copy_of):
    path = copy_of("mindvis-lite")
    _edit_meta(path, lambda m: _params(m).update(finetune_epochs=3))
    _refused(path, "unknown parameter(s) 'finetune_epochs' for MindVisLite; allowed: ", "fine_tune_epochs")
