"""Checkpoints: round trip, atomic replacement, and clear errors for every kind of damage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cortexflow.exceptions import CheckpointError, CortexFlowError, DataValidationError
from cortexflow.models.estimator import CHECKPOINT_META, CHECKPOINT_WEIGHTS, CCCV1Decoder, save_checkpoint_dir
from cortexflow.utils.io import sha256_file


@pytest.fixture(scope="module")
def data(make_synthetic):
    return make_synthetic(n=32, n_features=20, seed=0)[:2]


@pytest.fixture(scope="module")
def fitted(data, tiny_config):
    X, Y = data
    return CCCV1Decoder(config=tiny_config, dataset="synthetic", random_state=0, device="cpu").fit(
        X, Y, metadata={"name": "synthetic", "sha256": "abc"}
    )


@pytest.fixture
def saved(fitted, tmp_path):
    return fitted.save(tmp_path / "ckpt")


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_round_trip_gives_identical_predictions(fitted, saved, data):
    X, _ = data
    assert _entries(saved) == sorted([CHECKPOINT_META, CHECKPOINT_WEIGHTS])
    loaded = CCCV1Decoder.load(saved, device="cpu")
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))
    np.testing.assert_array_equal(loaded.transform(X), fitted.transform(X))
    assert loaded.config_ == fitted.config_ and loaded.n_features_in_ == 20 and loaded.output_shape_ == (28, 28)
    assert loaded.random_state == 0 and loaded.dataset == "synthetic"
    assert loaded.metadata_ == {"name": "synthetic", "sha256": "abc"}
    assert loaded.train_result_.best_epoch == fitted.train_result_.best_epoch
    meta = json.loads((saved / CHECKPOINT_META).read_text())
    assert meta["format"] == 2 and meta["estimator"] == "CCCV1Decoder"
    assert meta["weights_sha256"] == sha256_file(saved / CHECKPOINT_WEIGHTS)
    assert meta["config"]["hidden_dim"] == 64 and len(meta["preprocessing"]["signal"]["mean_"]) == 20


def test_save_is_atomic_and_overwrites(fitted, data, tiny_config, tmp_path):
    X, Y = data
    path = tmp_path / "ckpt"
    fitted.save(path)
    assert _entries(tmp_path) == ["ckpt"]  # no temporary folders left
    other = CCCV1Decoder(config=tiny_config, random_state=1, device="cpu").fit(X, Y)
    other.save(path)  # replaces the old checkpoint
    assert _entries(tmp_path) == ["ckpt"]
    np.testing.assert_array_equal(CCCV1Decoder.load(path, device="cpu").predict(X), other.predict(X))
    assert not np.array_equal(other.predict(X), fitted.predict(X))


def test_failed_save_keeps_the_old_checkpoint(saved, fitted, data):
    X, _ = data
    before = (saved / CHECKPOINT_WEIGHTS).read_bytes()

    def broken_writer(tmp):
        (tmp / CHECKPOINT_WEIGHTS).write_bytes(b"half")
        raise KeyboardInterrupt  # interrupted mid-save

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint_dir(saved, broken_writer)
    assert _entries(saved.parent) == ["ckpt"]
    assert (saved / CHECKPOINT_WEIGHTS).read_bytes() == before
    np.testing.assert_array_equal(CCCV1Decoder.load(saved, device="cpu").predict(X), fitted.predict(X))


def test_corrupt_json(saved):
    (saved / CHECKPOINT_META).write_text('{"format": 1, "config": {')
    with pytest.raises(CheckpointError, match="corrupt or incomplete metadata") as err:
        CCCV1Decoder.load(saved)
    assert str(saved / CHECKPOINT_META) in str(err.value)


def test_incomplete_json(saved):
    meta = json.loads((saved / CHECKPOINT_META).read_text())
    del meta["preprocessing"]
    (saved / CHECKPOINT_META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="preprocessing"):
        CCCV1Decoder.load(saved)


def test_unknown_config_key_in_json(saved):
    meta = json.loads((saved / CHECKPOINT_META).read_text())
    meta["config"]["warp_speed"] = 9
    (saved / CHECKPOINT_META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="warp_speed"):
        CCCV1Decoder.load(saved)


def test_truncated_safetensors(saved):
    w = saved / CHECKPOINT_WEIGHTS
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="sha256 .* differs .* changed or damaged") as err:
        CCCV1Decoder.load(saved)
    assert str(w) in str(err.value)
    _edit(saved, weights_sha256=sha256_file(w))  # with a matching hash, the file itself is found corrupt
    with pytest.raises(CheckpointError, match="corrupt weights file"):
        CCCV1Decoder.load(saved)


def _edit(saved, **fields):
    """Rewrite checkpoint.json with some top-level fields replaced (a value of ... deletes the field)."""
    meta = json.loads((saved / CHECKPOINT_META).read_text())
    for k, v in fields.items():
        if v is ...:
            meta.pop(k, None)
        else:
            meta[k] = v
    (saved / CHECKPOINT_META).write_text(json.dumps(meta))
    return meta


def _weights_with(saved, fn):
    """Apply ``fn`` to the weight tensors, rewrite the file and record its new hash (a deliberate edit)."""
    from safetensors.torch import load_file, save_file

    w = saved / CHECKPOINT_WEIGHTS
    state = load_file(str(w))
    fn(state)
    save_file(state, str(w))
    _edit(saved, weights_sha256=sha256_file(w))


@pytest.mark.parametrize("fmt, message", [
    (99, "'format' is 99; this CortexFlow reads formats"),
    ("garbage", "'format' is 'garbage'"),
    (..., "'format' is missing"),
    (True, "'format' is True"),
])
def test_format_field_is_checked(saved, fmt, message):
    _edit(saved, format=fmt)
    with pytest.raises(CheckpointError, match=message):
        CCCV1Decoder.load(saved)


@pytest.mark.parametrize("sha", [..., "keep"])
def test_format_1_is_refused_its_weights_cannot_be_verified(saved, sha):
    _edit(saved, format=1, **({"weights_sha256": ...} if sha is ... else {}))
    with pytest.raises(CheckpointError, match="'format' is 1: a format-1 checkpoint has no weights hash, so its "
                                              "weights cannot be verified; this CortexFlow reads formats \\[2\\]"):
        CCCV1Decoder.load(saved, device="cpu")


def test_image_shape_must_agree_with_output_shape(saved):
    _edit(saved, image_shape=[14, 56])
    with pytest.raises(CheckpointError, match="'image_shape' is \\[14, 56\\], but 'output_shape' is \\[28, 28\\]"):
        CCCV1Decoder.load(saved)


@pytest.mark.parametrize("edit, message", [
    ({"bogus": 1}, "unknown parameter\\(s\\) 'bogus' for CCCV1Decoder; allowed: amp, dataset, device"),
    ({"amp": "fp64"}, "'params' is invalid for CCCV1Decoder: amp='fp64' is not allowed; allowed: 'off'"),
    ({"random_state": -3}, "'params' is invalid for CCCV1Decoder: random_state=-3 is out of range"),
    ({"progress": "yes"}, "progress='yes' is not allowed; allowed: True, False"),
])
def test_stored_params_are_validated(saved, edit, message):
    meta = json.loads((saved / CHECKPOINT_META).read_text())
    meta["params"].update(edit)
    (saved / CHECKPOINT_META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=message):
        CCCV1Decoder.load(saved)


def test_weights_changed_after_saving_fail_the_hash(saved):
    from safetensors.torch import load_file, save_file

    w = saved / CHECKPOINT_WEIGHTS
    state = load_file(str(w))
    first = next(iter(state))
    state[first] = state[first] + 1
    save_file(state, str(w))
    with pytest.raises(CheckpointError, match="sha256 .* differs"):
        CCCV1Decoder.load(saved)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(saved, bad):
    def poison(state):
        name = next(k for k, v in state.items() if v.is_floating_point())
        state[name].view(-1)[3] = bad

    _weights_with(saved, poison)
    with pytest.raises(CheckpointError, match="holds 1 NaN or infinite value"):
        CCCV1Decoder.load(saved)


@pytest.mark.parametrize("field, value, message", [
    ("mean_", "nan", "preprocessing.signal.mean_' holds 1 NaN or infinite"),
    ("scale_", "inf", "preprocessing.signal.scale_' holds 1 NaN or infinite"),
    ("scale_", 0.0, "preprocessing.signal.scale_' holds 1 value\\(s\\) <= 0"),
])
def test_bad_scaler_statistics_are_refused(saved, field, value, message):
    text = (saved / CHECKPOINT_META).read_text()
    meta = json.loads(text)
    meta["preprocessing"]["signal"][field][0] = 12345.678  # a marker replaced by the raw token below
    text = json.dumps(meta).replace("12345.678", {"nan": "NaN", "inf": "Infinity"}.get(value, str(value)), 1)
    (saved / CHECKPOINT_META).write_text(text)
    if value in ("nan", "inf"):  # NaN/Infinity tokens are not JSON at all: refused when parsed
        with pytest.raises(CheckpointError, match="not JSON"):
            CCCV1Decoder.load(saved)
    else:
        with pytest.raises(CheckpointError, match=message):
            CCCV1Decoder.load(saved)


def test_huge_scaler_values_are_refused(saved):
    meta = json.loads((saved / CHECKPOINT_META).read_text())
    meta["preprocessing"]["signal"]["mean_"][0] = 12345.678
    text = json.dumps(meta).replace("12345.678", "1e999", 1)  # a standard JSON number that parses to inf
    (saved / CHECKPOINT_META).write_text(text)
    with pytest.raises(CheckpointError, match="mean_' holds 1 NaN or infinite"):
        CCCV1Decoder.load(saved)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(output_shape=[28, "x"]), "'output_shape' is \\[28, 'x'\\]"),
    (lambda m: m.update(output_shape=[14, 14]), "n_pixels_' is 784; output_shape \\[14, 14\\] has 196"),
    (lambda m: m.update(output_shape="28x28"), "'output_shape' is '28x28'; expected a JSON array"),
    (lambda m: m["preprocessing"]["signal"].update(scale_=[1.0] * 3), "scale_' has 3 values; expected 20"),
    (lambda m: m["preprocessing"]["target"].update(n_pixels_=100), "n_pixels_' is 100"),
    (lambda m: m.update(training="garbage"), "'training' is 'garbage'; expected a JSON object"),
    (lambda m: m["training"].update(best_epoch="three"), "'training.best_epoch' is 'three'"),
    (lambda m: m.update(n_features_in="20"), "'n_features_in' is '20'; expected a JSON integer"),
    (lambda m: m.update(weights_sha256="abc"), "'weights_sha256' is 'abc'; expected 64 hex digits"),
    (lambda m: m.pop("preprocessing"), "'preprocessing' is missing"),
    (lambda m: m.update(params=[1]), "'params' is \\[1\\]; expected a JSON object"),
])
def test_edited_metadata_gives_a_clear_error(saved, edit, message):
    meta = json.loads((saved / CHECKPOINT_META).read_text())
    edit(meta)
    (saved / CHECKPOINT_META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=message):
        CCCV1Decoder.load(saved)


def test_metadata_that_is_not_an_object(saved):
    (saved / CHECKPOINT_META).write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="metadata is a JSON list"):
        CCCV1Decoder.load(saved)


def test_non_finite_predictions_are_refused(fitted, data):
    import copy

    import torch

    broken = copy.deepcopy(fitted)
    with torch.no_grad():
        next(broken.model_.parameters()).fill_(float("nan"))
    with pytest.raises(CortexFlowError, match="NaN or infinite values for 32 of 32 input row"):
        broken.predict(data[0])


def test_checkpoint_files_have_ordinary_permissions(saved):
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert (saved.stat().st_mode & 0o777) == 0o777 & ~umask
    for f in saved.iterdir():
        assert (f.stat().st_mode & 0o777) == 0o666 & ~umask, f.name


def test_weights_that_do_not_fit_the_config(saved):
    meta = json.loads((saved / CHECKPOINT_META).read_text())
    meta["config"]["hidden_dim"] = 32
    (saved / CHECKPOINT_META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match the stored configuration"):
        CCCV1Decoder.load(saved)


@pytest.mark.parametrize("missing", [CHECKPOINT_META, CHECKPOINT_WEIGHTS])
def test_missing_file(saved, missing):
    (saved / missing).unlink()
    with pytest.raises(CheckpointError, match=f"missing file {missing}"):
        CCCV1Decoder.load(saved)


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="missing file"):
        CCCV1Decoder.load(tmp_path / "never-saved")


def test_loaded_model_rejects_wrong_feature_count(saved):
    loaded = CCCV1Decoder.load(saved)
    with pytest.raises(DataValidationError) as err:
        loaded.predict(np.zeros((3, 19)))
    assert "19" in str(err.value) and "20" in str(err.value)


def test_unfitted_estimator_cannot_save(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        CCCV1Decoder().save(tmp_path / "x")
    assert not (tmp_path / "x").exists()
