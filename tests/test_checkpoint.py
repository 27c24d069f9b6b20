"""Checkpoints: round trip, atomic replacement, and clear errors for every kind of damage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cortexflow.exceptions import CheckpointError, DataValidationError
from cortexflow.models.estimator import CHECKPOINT_META, CHECKPOINT_WEIGHTS, CCCV1Decoder, save_checkpoint_dir


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
    assert meta["format"] == 1 and meta["estimator"] == "CCCV1Decoder"
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
    with pytest.raises(CheckpointError, match="corrupt weights file") as err:
        CCCV1Decoder.load(saved)
    assert str(w) in str(err.value)


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
