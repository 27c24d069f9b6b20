"""Checkpoints of ridge-prior, cccv1-prior and cccv1-ensemble: round trips, self-containment, damage, CLI.

Every test uses a tiny prior on the generated ``miyawaki-patterns`` corpus (no
data file needed) and small synthetic problems.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

import cortexflow.priors.cccv1_prior as cccv1_prior_module
import cortexflow.priors.ridge_prior as ridge_prior_module
import cortexflow.training.prior as prior_training
from cortexflow.cli.main import cli
from cortexflow.exceptions import CheckpointError
from cortexflow.models.checkpoint import CHECKPOINT_META, CHECKPOINT_WEIGHTS, StateField
from cortexflow.models.ensemble import CCCV1EnsembleDecoder
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.models.loader import DECODER_KINDS, load_decoder
from cortexflow.priors import PriorConfig
from cortexflow.priors.cccv1_prior import CCCV1PriorDecoder
from cortexflow.data.generators import miyawaki_patterns
from cortexflow.priors.persistence import RIDGE_PRIOR_SCHEMA
from cortexflow.priors.ridge_prior import RidgePriorDecoder
from cortexflow.training.config import get_config
from cortexflow.utils.io import sha256_file
from _priors import fit_resolved

TINY = {"embed_dim": 8, "widths": [4, 8, 8], "epochs": 1, "batch_size": 32, "max_images": 120}
TRAIN = get_config("small").replace(epochs=3, patience=2, hidden_dim=32, batch_size=8)


def _problem(n=24, p=30, seed=0):
    rng = np.random.default_rng(seed)
    Y, _ = miyawaki_patterns(n_random=n, n_shapes=0, seed=seed)
    X = Y.reshape(n, -1) @ rng.normal(size=(784, p)) + 0.1 * rng.normal(size=(n, p))
    return X.astype(np.float32), Y


def _ridge_prior(cache, **kw):
    kw = {"prior": "miyawaki-patterns", "prior_config": PriorConfig(**{**TINY, "widths": (4, 8, 8)}), "n_samples": 6,
          "residual_grid": (0.0, 0.5), "cache_dir": cache, **kw}
    return RidgePriorDecoder(**kw)


def _cccv1_prior(cache, **kw):
    kw = {"prior": "miyawaki-patterns", "prior_config": TINY, "config": TRAIN, "device": "cpu", "cache_dir": cache,
          "residual_scale": 0.0, **kw}
    return CCCV1PriorDecoder(**kw)


CASES = {
    "ridge-prior": lambda c: _ridge_prior(c, residual_scale=0.5),
    "ridge-prior-auto": lambda c: _ridge_prior(c),
    "ridge-prior-knn": lambda c: _ridge_prior(c, decoding="corpus-knn", knn=3),
    "cccv1-prior-2-members-posterior": lambda c: _cccv1_prior(c, n_members=2, residual_scale=0.5, decoding="prior"),
    "cccv1-prior-hybrid": lambda c: _cccv1_prior(c, pixel_blend="auto"),
    "cccv1-prior-attention-finetuned": lambda c: _cccv1_prior(c, encoder="attention", fine_tune_decoder=True),
    "cccv1-prior-no-skip": lambda c: _cccv1_prior(c, ridge_skip=False),
    "cccv1-ensemble": lambda c: CCCV1EnsembleDecoder(2, config=TRAIN.replace(embed_dim=16), device="cpu"),
}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Every case fitted once on 18 rows, saved, and its prior cache then deleted."""
    root = tmp_path_factory.mktemp("ckpt")
    cache = root / "prior-cache"
    X, Y = _problem()
    out = {}
    for name, make in CASES.items():
        est = make(cache)
        est = fit_resolved(est, X[:18], Y[:18]) if "prior" in est.get_params() else est.fit(X[:18], Y[:18])
        est.save(root / name)
        out[name] = (est, root / name)
    shutil.rmtree(cache, ignore_errors=True)
    return out, X[18:]


@pytest.fixture
def no_prior_source(monkeypatch):
    """Any attempt to train, read from the cache or load a corpus fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("loading a checkpoint must not need a prior cache or a corpus")

    for name in ("get_prior", "load_corpus", "train_prior", "_load"):
        monkeypatch.setattr(prior_training, name, refuse)
    for module in (ridge_prior_module, cccv1_prior_module):
        for name in ("get_prior", "load_corpus"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse)


def _copy(saved, tmp_path):
    dest = tmp_path / saved.name
    shutil.copytree(saved, dest)
    return dest


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_predicts_identically_without_prior_cache(fitted, name, no_prior_source):
    models, X_new = fitted
    est, path = models[name]
    torch.manual_seed(7)
    before = torch.get_rng_state()
    loaded = load_decoder(path, device="cpu")
    assert torch.equal(before, torch.get_rng_state())  # loading leaves the global random stream alone
    assert type(loaded) is type(est) and loaded.checkpoint_meta_["kind"] == est.checkpoint_kind
    np.testing.assert_array_equal(loaded.predict(X_new), est.predict(X_new))
    np.testing.assert_array_equal(loaded.transform(X_new), est.transform(X_new))
    assert loaded.n_features_in_ == est.n_features_in_
    # a loaded decoder saves again and still predicts the same
    again = loaded.save(path.parent / f"{name}-again")
    np.testing.assert_array_equal(load_decoder(again, device="cpu").predict(X_new), est.predict(X_new))
    assert type(est).load(path, device="cpu").get_params().keys() == est.get_params().keys()


def test_prior_state_and_facts_travel_with_the_checkpoint(fitted):
    models, _ = fitted
    est, path = models["cccv1-prior-2-members-posterior"]
    loaded = load_decoder(path)
    # prior_ and posterior_.prior_ are one prior in the file and one object after loading
    assert loaded.posterior_.prior_ is loaded.prior_
    assert len(loaded.checkpoint_meta_["priors"]) == 1
    assert loaded.prior_.info["corpus"] == "miyawaki-patterns" and loaded.prior_.info["from_checkpoint"]
    assert loaded.prior_.info["n_dropped"] == est.prior_.info["n_dropped"]
    assert loaded.prior_.config == est.prior_.config
    assert loaded.report_info_ == est.report_info_ and loaded.posterior_.residual_scale_ == 0.5
    np.testing.assert_array_equal(loaded.posterior_.residuals_, est.posterior_.residuals_)
    assert len(loaded.model_.members) == 2
    # members whose decoder is the prior's own do not store it twice
    assert loaded.checkpoint_meta_["network"]["decoder_from_prior"] == [True, True]
    names = load_file(str(path / CHECKPOINT_WEIGHTS)).keys()
    assert not any(".decoder." in k for k in names)
    # the fixed ridge read-out, the same in every member, is stored once
    assert "model.members.0.encoder.linear.weight" in names and "model.members.1.encoder.linear.weight" not in names
    assert "linear.weight" in " ".join(loaded.checkpoint_meta_["network"]["same_as_member_0"][1])
    assert torch.equal(loaded.model_.members[1].encoder.linear.weight, est.model_.members[1].encoder.linear.weight)
    assert any(k.startswith("model.members.1.encoder.deep.") for k in names)  # the learned parts differ: stored
    fine = load_decoder(models["cccv1-prior-attention-finetuned"][1])
    assert fine.checkpoint_meta_["network"]["decoder_from_prior"] == [False]


def test_large_exact_arrays_are_stored_as_uint8_and_come_back_bit_for_bit(fitted):
    models, _ = fitted
    est, path = models["ridge-prior-knn"]
    node = json.loads((path / CHECKPOINT_META).read_text())["state"]["items"]["corpus_images_"]
    assert node["encoding"] == "uint8/255"
    assert load_file(str(path / CHECKPOINT_WEIGHTS))["state.corpus_images_"].dtype == torch.uint8
    loaded = load_decoder(path)
    assert loaded.corpus_images_.dtype == np.float32
    np.testing.assert_array_equal(loaded.corpus_images_, est.corpus_images_)


class _ExtendedRidgePrior(RidgePriorDecoder):
    """A ridge-prior that declares more fitted attributes (as a subclass or a later version would)."""

    checkpoint_schema = {**RIDGE_PRIOR_SCHEMA, "calibration_": StateField("array"), "table_": StateField("any"),
                         "counts_": StateField("array", low=0), "mask_": StateField("array"),
                         "names_": StateField("array"), "handle_": StateField("any", required=False)}


def _extended(tmp_path):
    X, Y = _problem()
    return fit_resolved(_ExtendedRidgePrior(**_ridge_prior(tmp_path / "cache", residual_scale=0.0).get_params()), X, Y)


def test_declared_fitted_attributes_of_any_storable_type_round_trip(tmp_path):
    """Declared attributes of every storable type (a calibration array, a dict with float keys...) round-trip."""
    est = _extended(tmp_path)
    rng = np.random.default_rng(1)
    est.calibration_ = rng.normal(size=(5, 3))  # float64
    est.table_ = {0.25: np.float32(1.5), "nested": [1, None, (2.0, "x")], "bad": float("nan")}
    est.counts_ = rng.integers(0, 9, size=7).astype(np.int32)
    est.mask_ = np.array([True, False])
    est.names_ = np.array(["a", "b"], dtype=object)
    loaded = _ExtendedRidgePrior.load(est.save(tmp_path / "ckpt"))
    np.testing.assert_array_equal(loaded.calibration_, est.calibration_)
    assert loaded.calibration_.dtype == np.float64 and loaded.counts_.dtype == np.int32
    assert loaded.table_[0.25] == np.float32(1.5) and isinstance(loaded.table_[0.25], np.float32)
    assert loaded.table_["nested"] == [1, None, (2.0, "x")] and np.isnan(loaded.table_["bad"])
    np.testing.assert_array_equal(loaded.mask_, est.mask_)
    assert list(loaded.names_) == ["a", "b"]
    assert loaded.stimuli is None and loaded.cache_dir is None  # fit-time inputs are not stored
    # per-feature scaler statistics live in the weights file, not as long JSON lists
    assert "state.scaler_.state.mean_" in load_file(str(tmp_path / "ckpt" / CHECKPOINT_WEIGHTS))
    np.testing.assert_array_equal(loaded.scaler_.scale_, est.scaler_.scale_)


def test_undeclared_or_unstorable_attributes_are_refused_when_saving(tmp_path):
    est = _extended(tmp_path)
    plain = RidgePriorDecoder(**est.get_params())
    plain.__dict__.update(vars(est))
    plain.calibration_ = np.zeros(3)
    with pytest.raises(CheckpointError, match="fitted attribute\\(s\\) calibration_ are not declared in its "
                                              "checkpoint_schema \\(declared: alpha_, "):
        plain.save(tmp_path / "ckpt")
    est.calibration_, est.table_, est.counts_ = np.zeros(3), {}, np.zeros(2)
    est.mask_, est.names_ = np.zeros(1, bool), np.array(["a"])
    est.handle_ = object()
    with pytest.raises(CheckpointError, match="cannot store state.handle_ of type object"):
        est.save(tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


def _edit_meta(path, fn):
    meta = json.loads((path / CHECKPOINT_META).read_text())
    fn(meta)
    (path / CHECKPOINT_META).write_text(json.dumps(meta))


def _rewrite_weights(path, fn):
    """Change the tensors and record the new hash (a deliberate edit, not damage)."""
    w = path / CHECKPOINT_WEIGHTS
    state = load_file(str(w))
    fn(state)
    save_file(state, str(w))
    _edit_meta(path, lambda m: m.update(weights_sha256=sha256_file(w)))


@pytest.mark.parametrize("name", ["ridge-prior", "cccv1-prior-2-members-posterior", "cccv1-ensemble"])
def test_truncated_or_edited_weights_are_refused(fitted, name, tmp_path):
    path = _copy(fitted[0][name][1], tmp_path)
    w = path / CHECKPOINT_WEIGHTS
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="sha256 .* differs .* changed or damaged"):
        load_decoder(path)
    _edit_meta(path, lambda m: m.update(weights_sha256=sha256_file(w)))  # hash fixed: the file itself is corrupt
    with pytest.raises(CheckpointError, match="corrupt weights file"):
        load_decoder(path)
    w.write_bytes(data)
    state = load_file(str(w))
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first] + 1
    save_file(state, str(w))
    with pytest.raises(CheckpointError, match="sha256 .* differs"):
        load_decoder(path)


def test_missing_and_extra_tensors_and_bad_prior_weights(fitted, tmp_path):
    path = _copy(fitted[0]["ridge-prior"][1], tmp_path)
    _rewrite_weights(path, lambda s: s.pop("state.residuals_"))
    with pytest.raises(CheckpointError, match="state.residuals_ refers to tensor 'state.residuals_', which the "
                                              "weights file does not hold"):
        load_decoder(path)
    path = _copy(fitted[0]["ridge-prior"][1], tmp_path / "b")
    _rewrite_weights(path, lambda s: s.update(stray=torch.zeros(2)))
    with pytest.raises(CheckpointError, match="1 tensor\\(s\\) that the metadata does not refer to \\(stray\\)"):
        load_decoder(path)
    path = _copy(fitted[0]["cccv1-prior-no-skip"][1], tmp_path / "c")
    _rewrite_weights(path, lambda s: s.pop(next(k for k in s if k.startswith("priors.0.") and k.endswith("weight"))))
    with pytest.raises(CheckpointError, match="priors\\[0\\] weights do not match its config"):
        load_decoder(path)
    path = _copy(fitted[0]["cccv1-prior-no-skip"][1], tmp_path / "d")

    def poison(state):
        name = next(k for k in state if k.startswith("model.") and state[k].is_floating_point())
        state[name].view(-1)[0] = float("nan")

    _rewrite_weights(path, poison)
    with pytest.raises(CheckpointError, match="holds 1 NaN or infinite value"):
        load_decoder(path)


def test_unknown_kind_truncated_json_and_wrong_class(fitted, tmp_path):
    path = _copy(fitted[0]["ridge-prior"][1], tmp_path)
    _edit_meta(path, lambda m: m.update(kind="diffusion-xl"))
    with pytest.raises(CheckpointError, match="kind 'diffusion-xl' is unknown .* known kinds: .*cccv1-prior.*ridge-prior"):
        load_decoder(path)
    _edit_meta(path, lambda m: m.update(kind=3))
    with pytest.raises(CheckpointError, match="'kind' is 3; expected a JSON string"):
        load_decoder(path)
    text = (fitted[0]["ridge-prior"][1] / CHECKPOINT_META).read_text()
    (path / CHECKPOINT_META).write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="corrupt or incomplete metadata"):
        load_decoder(path)
    with pytest.raises(CheckpointError, match="holds a 'ridge-prior' decoder .*not a single CCCV1 network.*load_decoder"):
        CCCV1Decoder.load(fitted[0]["ridge-prior"][1])
    with pytest.raises(CheckpointError, match="holds a 'cccv1-prior' decoder, not 'ridge-prior'"):
        RidgePriorDecoder.load(fitted[0]["cccv1-prior-no-skip"][1])
    with pytest.raises(CheckpointError, match="holds a 'cccv1-ensemble' decoder"):
        CCCV1PriorDecoder.load(fitted[0]["cccv1-ensemble"][1])
    path = _copy(fitted[0]["cccv1-prior-no-skip"][1], tmp_path / "b")
    _edit_meta(path, lambda m: m["network"].update(n_members=3))
    with pytest.raises(CheckpointError, match="network does not describe the members' networks"):
        load_decoder(path)
    path = _copy(fitted[0]["cccv1-ensemble"][1], tmp_path / "c")
    _edit_meta(path, lambda m: m["members"][1].pop("config"))
    with pytest.raises(CheckpointError, match="field 'members\\[1\\].config' is missing"):
        load_decoder(path)


def test_old_cccv1_checkpoint_without_kind_loads_as_cccv1(tiny_config, tmp_path):
    X, Y = _problem()
    est = CCCV1Decoder(config=tiny_config, device="cpu").fit(X, Y)
    path = est.save(tmp_path / "ckpt")
    assert json.loads((path / CHECKPOINT_META).read_text())["kind"] == "cccv1"
    _edit_meta(path, lambda m: [m.pop("kind"), m.pop("estimator")])
    loaded = load_decoder(path, device="cpu")
    assert type(loaded) is CCCV1Decoder
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    assert set(DECODER_KINDS) >= {"cccv1", "cccv1-ensemble", "ridge-prior", "cccv1-prior"}


def test_checkpoint_size_is_small_for_shared_priors(fitted):
    """The prior is stored once: a 2-member cccv1-prior is far smaller than two copies of its decoder would make."""
    models, _ = fitted
    one = sum(p.stat().st_size for p in models["cccv1-prior-no-skip"][1].iterdir())
    two = sum(p.stat().st_size for p in models["cccv1-prior-2-members-posterior"][1].iterdir())
    prior_bytes = sum(v.numel() * v.element_size() for v in models["cccv1-prior-no-skip"][0].prior_.model.state_dict().values())
    assert two < one + 2 * prior_bytes


# ------------------------------------------------------------------------ CLI
def _user_file(tmp_path):
    X, Y = _problem(n=30)
    path = tmp_path / "user.npz"
    np.savez(path, fmriTrn=X[:24], stimTrn=Y[:24], fmriTest=X[24:], stimTest=Y[24:])
    return path, X[24:]


def test_cli_train_ridge_prior_then_reconstruct_without_prior_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CORTEXFLOW_CACHE", str(cache))
    data, X_new = _user_file(tmp_path)
    run = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", "--dataset", str(data), "--method", "ridge-prior", "--out", str(run),
                                   "--set", "prior=miyawaki-patterns", "--set", f"prior_config={json.dumps(TINY)}",
                                   "--set", "n_samples=4", "--no-progress"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == "ridge-prior" and metrics["options"]["prior"] == "miyawaki-patterns"
    assert metrics["report_info"]["prior_corpus"] == "miyawaki-patterns"
    assert json.loads((run / "checkpoint" / CHECKPOINT_META).read_text())["kind"] == "ridge-prior"
    assert (run / "reconstructions.png").is_file()
    shutil.rmtree(cache)
    signals = tmp_path / "signals.npz"
    np.savez(signals, signals=X_new)
    res = CliRunner().invoke(cli, ["reconstruct", "--checkpoint", str(run), "--input", str(signals),
                                   "--out", str(tmp_path / "rec")])
    assert res.exit_code == 0, res.output
    assert not cache.exists()  # nothing was trained or cached to reconstruct
    recon = np.load(tmp_path / "rec" / "reconstructions.npy")
    np.testing.assert_array_equal(recon, RidgePriorDecoder.load(run / "checkpoint").predict(X_new))
    assert len(list((tmp_path / "rec").glob("recon_*.png"))) == len(X_new)
    res = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(run), "--dataset", str(data)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["mse"] == pytest.approx(metrics["mse"], rel=1e-9)


def test_cli_train_cccv1_prior_with_two_members(tmp_path, monkeypatch):
    monkeypatch.setenv("CORTEXFLOW_CACHE", str(tmp_path / "cache"))
    data, X_new = _user_file(tmp_path)
    run = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", "--dataset", str(data), "--method", "cccv1-prior", "--out", str(run),
                                   "--device", "cpu", "--set", "prior=miyawaki-patterns",
                                   "--set", f"prior_config={json.dumps(TINY)}", "--set", "n_members=2",
                                   "--set", "epochs=2", "--set", "hidden_dim=32", "--no-progress"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == "cccv1-prior" and metrics["config"]["epochs"] == 2
    loaded = load_decoder(run / "checkpoint", device="cpu")
    assert isinstance(loaded, CCCV1PriorDecoder) and len(loaded.model_.members) == 2


def test_cli_train_rejects_unknown_method_and_options(tmp_path):
    data, _ = _user_file(tmp_path)
    res = CliRunner().invoke(cli, ["train", "--dataset", str(data), "--method", "diffusion", "--out", str(tmp_path / "a")])
    assert res.exit_code == 2 and "methods with a checkpoint: mean-image, ridge, cccv1" in res.output
    res = CliRunner().invoke(cli, ["train", "--dataset", str(data), "--method", "ridge-prior", "--config", "small",
                                   "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "--config applies to --method cccv1" in res.output
    res = CliRunner().invoke(cli, ["train", "--dataset", str(data), "--method", "ridge-prior", "--set", "prior=miyawaki-patterns",
                                   "--set", "bogus=1", "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "bogus" in res.output and "residual_scale" in res.output
    assert not (tmp_path / "c").exists()
