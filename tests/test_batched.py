"""Batched training of many CCCV1 members against the sequential trainer, and device settings."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from cortexflow.exceptions import ConfigError
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.training import get_config
from cortexflow.training.batched import BatchedNotSupported, fit_many, supports_batched, train_batched
from cortexflow.training.devices import (
    configure_threads,
    default_num_threads,
    resolve_amp,
    resolve_device,
    set_deterministic,
)

# Agreement tolerance of batched vs sequential training on CPU. Each member's
# dropout masks come from its own stream, started where the sequential
# trainer's stream starts and drawn with the same shapes and operations, so
# the two paths differ only in floating-point summation order (batched matrix
# products, Gram-norm gradient clipping), which training can amplify. On the
# development machine (AVX2) the measured differences are below 1e-6; on a
# 16-core machine with another PyTorch build (2.11) validation losses agreed
# within 1e-4 but predictions differed by more than 1e-4. Stated tolerance:
# per-epoch validation loss rtol 1e-4, predictions (pixels in [0, 1]) atol
# 2e-3, held-out MSE rtol 1e-2 per member.
VAL_RTOL = 1e-4
PRED_ATOL = 2e-3
MSE_RTOL = 1e-2


def _synthetic(n=60, d=40, side=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    W = rng.normal(size=(d, side * side))
    Y = (1.0 / (1.0 + np.exp(-(X @ W) / np.sqrt(d)))).reshape(n, side, side)
    return X, Y


def test_without_dropout_batched_equals_sequential():
    """No dropout: the only randomness left is shared, so both paths agree to float noise.

    Members have different row counts (padding/masking), early stopping and
    learning-rate drops happen at different epochs (compaction of the stack).
    """
    X, Y = _synthetic()
    cfg = get_config("small").replace(hidden_dim=64, embed_dim=32, epochs=60, patience=4, lr_patience=1, lr=3e-3,
                                      dropout_encoder=0.0, dropout_decoder=0.0, batch_size=8)
    parts = [slice(0, 37), slice(5, 55), slice(0, 60)]
    seeds = [0, 1, 2]
    batched = fit_many([X[p] for p in parts], [Y[p] for p in parts], seeds, config=cfg, device="cpu")
    stopped = set()
    for p, seed, db in zip(parts, seeds, batched):
        ds = CCCV1Decoder(config=cfg, random_state=seed, device="cpu").fit(X[p], Y[p])
        assert db.train_result_.best_epoch == ds.train_result_.best_epoch
        assert db.train_result_.stopped_epoch == ds.train_result_.stopped_epoch
        stopped.add(ds.train_result_.stopped_epoch)
        np.testing.assert_allclose([h["val_loss"] for h in db.history_], [h["val_loss"] for h in ds.history_],
                                   rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose([h["lr"] for h in db.history_], [h["lr"] for h in ds.history_], rtol=1e-12)
        np.testing.assert_allclose(db.predict(X), ds.predict(X), atol=1e-4)
    assert len(stopped) > 1, "the members should stop at different epochs for this test to cover compaction"
    assert any(h["lr"] < cfg.lr for h in batched[0].history_), "a learning-rate drop should occur"


def test_with_dropout_metrics_agree_within_tolerance(vangerven):
    """Real data, the real configuration's dropout: batched and sequential training give the same metrics.

    vangerven, 3 folds of 5-fold CV x 2 seeds, a narrower network (for test time),
    early stopping at different epochs. Every member matches its sequential twin:
    same best and stopping epochs, validation losses, predictions and test MSE
    within the tolerances stated at the top of this file.
    """
    from cortexflow.data.splits import kfold_splits

    ds = vangerven
    cfg = get_config("vangerven").replace(hidden_dim=128, embed_dim=64, epochs=30, patience=8, lr=2e-3)
    assert cfg.dropout_encoder > 0 and cfg.dropout_decoder > 0
    splits = list(kfold_splits(len(ds.X_train), 5, seed=0))[:3]
    tasks = [(sp, s) for sp in splits for s in (0, 1)]
    batched = fit_many([ds.X_train[sp.train] for sp, _ in tasks], [ds.Y_train[sp.train] for sp, _ in tasks],
                       [s for _, s in tasks], config=cfg, device="cpu")
    mse_b, mse_s = [], []
    for db, (sp, seed) in zip(batched, tasks):
        dseq = CCCV1Decoder(config=cfg, random_state=seed, device="cpu").fit(ds.X_train[sp.train], ds.Y_train[sp.train])
        assert (db.train_result_.best_epoch, db.train_result_.stopped_epoch) == \
            (dseq.train_result_.best_epoch, dseq.train_result_.stopped_epoch)
        np.testing.assert_allclose([h["val_loss"] for h in db.history_], [h["val_loss"] for h in dseq.history_],
                                   rtol=VAL_RTOL)
        pb, ps = db.predict(ds.X_train[sp.test]), dseq.predict(ds.X_train[sp.test])
        np.testing.assert_allclose(pb, ps, atol=PRED_ATOL)
        truth = ds.Y_train[sp.test]
        mse_b.append(float(np.mean((pb - truth) ** 2)))
        mse_s.append(float(np.mean((ps - truth) ** 2)))
    mse_b, mse_s = np.array(mse_b), np.array(mse_s)
    np.testing.assert_allclose(mse_b, mse_s, rtol=MSE_RTOL)
    # and both actually learned something: better than predicting the mean training image
    floor = np.mean([np.mean((ds.Y_train[sp.train].mean(0) - ds.Y_train[sp.test]) ** 2) for sp, _ in tasks])
    assert mse_b.mean() < floor and mse_s.mean() < floor


def test_a_members_result_does_not_depend_on_its_stack():
    """With dropout, the same member trained alone, in a stack of three, or in another order gives the same model."""
    X, Y = _synthetic(n=40)
    cfg = get_config("small").replace(hidden_dim=32, embed_dim=16, epochs=6, dropout_encoder=0.3, dropout_decoder=0.2)
    three = fit_many([X, X[:30], X[5:]], [Y, Y[:30], Y[5:]], [4, 5, 6], config=cfg, device="cpu")
    alone = fit_many([X[5:]], [Y[5:]], [6], config=cfg, device="cpu")
    reordered = fit_many([X[5:], X], [Y[5:], Y], [6, 4], config=cfg, device="cpu")
    np.testing.assert_allclose(three[2].predict(X), alone[0].predict(X), atol=1e-5)
    np.testing.assert_allclose(three[2].predict(X), reordered[0].predict(X), atol=1e-5)
    np.testing.assert_allclose(three[0].predict(X), reordered[1].predict(X), atol=1e-5)
    assert not np.allclose(three[0].predict(X), three[2].predict(X), atol=1e-3)


def test_batched_decoder_checkpoint_round_trip(tmp_path):
    X, Y = _synthetic(n=30)
    cfg = get_config("small").replace(hidden_dim=32, embed_dim=16, epochs=3)
    (dec,) = fit_many([X], [Y], [5], config=cfg, device="cpu", metadata={"name": "synthetic"})
    assert dec.random_state == 5 and dec.n_features_in_ == X.shape[1] and dec.output_shape_ == (8, 8)
    assert len(dec.history_) == 3
    path = dec.save(tmp_path / "ckpt")
    loaded = CCCV1Decoder.load(path, device="cpu")
    np.testing.assert_array_equal(loaded.predict(X), dec.predict(X))
    assert dec.predict(X).shape == (30, 8, 8)


def test_initial_weights_follow_the_seed():
    """One epoch at lr ~ 0 leaves the weights at their seeded initialisation on both paths."""
    X, Y = _synthetic(n=20)
    cfg = get_config("small").replace(hidden_dim=16, embed_dim=8, epochs=1, lr=1e-12)
    a, b = fit_many([X, X], [Y, Y], [3, 4], config=cfg, device="cpu")
    s = CCCV1Decoder(config=cfg, random_state=3, device="cpu").fit(X, Y)
    for (n, p), (_, q) in zip(a.model_.state_dict().items(), s.model_.state_dict().items()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-9, msg=n)
    assert not torch.equal(a.model_.encoder.net[0].weight, b.model_.encoder.net[0].weight)


def test_max_group_splits_work_but_not_results():
    X, Y = _synthetic(n=30)
    cfg = get_config("small").replace(hidden_dim=16, embed_dim=8, epochs=4, dropout_encoder=0.0, dropout_decoder=0.0)
    one = fit_many([X] * 3, [Y] * 3, [0, 1, 2], config=cfg, device="cpu", max_group=32)
    split = fit_many([X] * 3, [Y] * 3, [0, 1, 2], config=cfg, device="cpu", max_group=2)
    for a, b in zip(one, split):
        np.testing.assert_allclose(a.predict(X), b.predict(X), atol=1e-5)


def test_unsupported_inputs_are_clear_errors():
    X, Y = _synthetic(n=20)
    cfg = get_config("small").replace(hidden_dim=16, embed_dim=8, epochs=1)
    with pytest.raises(BatchedNotSupported, match="loss terms"):
        fit_many([X], [Y], [0], config=cfg.replace(loss_weights={"x": 1.0}), device="cpu")
    with pytest.raises(ConfigError, match="as many"):
        fit_many([X, X], [Y], [0, 1], config=cfg)
    with pytest.raises(ConfigError, match="max_group"):
        fit_many([X], [Y], [0], config=cfg, max_group=-1)
    assert not supports_batched(torch.nn.Linear(3, 3))
    with pytest.raises(BatchedNotSupported):
        train_batched([torch.nn.Linear(3, 3)], [X], [Y], cfg, [0])


def test_bf16_autocast_on_cpu_trains():
    X, Y = _synthetic(n=30)
    cfg = get_config("small").replace(hidden_dim=32, embed_dim=16, epochs=2)
    (dec,) = fit_many([X], [Y], [0], config=cfg, device="cpu", amp="bf16")
    assert all(np.isfinite(h["val_loss"]) for h in dec.history_)
    assert np.isfinite(dec.predict(X)).all()


def test_sequential_trainer_mixed_precision():
    """``CCCV1Decoder(amp=...)``: bf16 autocast trains on CPU with float32 weights; fp16 needs CUDA; bad values are named."""
    X, Y = _synthetic(n=40)
    cfg = get_config("small").replace(hidden_dim=32, embed_dim=16, epochs=4, dropout_encoder=0.0, dropout_decoder=0.0)
    full = CCCV1Decoder(config=cfg, random_state=0, device="cpu").fit(X, Y)
    half = CCCV1Decoder(config=cfg, random_state=0, device="cpu", amp="bf16").fit(X, Y)
    assert all(p.dtype == torch.float32 for p in half.model_.parameters())
    assert half.get_params()["amp"] == "bf16"
    v_full = np.array([h["val_loss"] for h in full.history_])
    v_half = np.array([h["val_loss"] for h in half.history_])
    assert np.isfinite(v_half).all()
    assert not np.array_equal(v_full, v_half)  # autocast really ran in bf16 ...
    np.testing.assert_allclose(v_half, v_full, rtol=0.05)  # ... and trains the same model up to bf16 rounding
    with pytest.raises(ConfigError, match="fp16.*CUDA"):
        CCCV1Decoder(config=cfg, device="cpu", amp="fp16").fit(X, Y)
    with pytest.raises(ConfigError, match="amp='fp8'; allowed"):
        CCCV1Decoder(config=cfg, device="cpu", amp="fp8").fit(X, Y)


# ---------------------------------------------------------------- device settings
def test_resolve_device_and_amp():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu-9000")
    cpu = torch.device("cpu")
    assert resolve_amp("off", cpu) is None and resolve_amp("auto", cpu) is None
    assert resolve_amp("bf16", cpu) is torch.bfloat16
    with pytest.raises(ConfigError, match="fp16"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ConfigError, match="allowed"):
        resolve_amp("fp8", cpu)


def test_thread_policy(monkeypatch):
    monkeypatch.delenv("CORTEXFLOW_NUM_THREADS", raising=False)
    monkeypatch.setenv("CORTEXFLOW_WORKERS", "64")
    assert default_num_threads() == 1  # many workers share the cores: one thread each
    assert default_num_threads(workers=1) >= 1
    monkeypatch.setenv("CORTEXFLOW_NUM_THREADS", "3")
    assert default_num_threads() == 3
    assert configure_threads(2) == 2 and torch.get_num_threads() == 2
    monkeypatch.setenv("CORTEXFLOW_NUM_THREADS", "zero")
    with pytest.raises(ConfigError, match="CORTEXFLOW_NUM_THREADS"):
        default_num_threads()
    with pytest.raises(ConfigError, match="num_threads"):
        configure_threads("many")


def test_deterministic_switch(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled()


# ------------------------------------------------------------ benchmark integration
def test_train_mode_is_part_of_the_result_key_of_batched_methods_only(data_dir):
    from cortexflow.benchmark.runner import BenchmarkConfig, build_tasks

    cfg = BenchmarkConfig("vangerven", methods="mean-image,cccv1", splits="kfold", n_folds=2, seeds=1,
                          data_dir=data_dir)
    batched = build_tasks(cfg.replace(train_mode="batched")).tasks
    seq = build_tasks(cfg.replace(train_mode="sequential")).tasks
    for b, s in zip(batched, seq):
        if b.method == "cccv1":
            assert b.train == (("mode", "batched"),) and s.train == () and b.key != s.key
        else:
            assert b.train == s.train == () and b.key == s.key
    amp = build_tasks(cfg.replace(train_mode="batched", amp="bf16")).tasks
    assert {t.train for t in amp if t.method == "cccv1"} == {(("mode", "batched"), ("amp", "bf16"))}
    with pytest.raises(ConfigError, match="batched training only"):
        build_tasks(cfg.replace(train_mode="sequential", amp="bf16"))
    with pytest.raises(ConfigError, match="allowed: batched, sequential"):
        build_tasks(cfg.replace(train_mode="parallel"))


def test_batched_hook_scores_like_run_task(data_dir):
    """The cccv1 hook yields one TaskResult per task, with run_task's row layout."""
    from cortexflow.benchmark.builtin import cccv1_fit_predict_many
    from cortexflow.benchmark.runner import BenchmarkConfig, build_tasks
    from cortexflow.benchmark.tasks import run_task

    tasks = build_tasks(BenchmarkConfig("vangerven", methods="cccv1", splits="kfold", n_folds=3, seeds=1, fast=True,
                                        data_dir=data_dir)).tasks[:2]
    results = list(cccv1_fit_predict_many(tasks))
    assert [r.task.key for r in results] == [t.key for t in tasks]
    ref = run_task(tasks[0])
    got = results[0]
    assert [set(r) for r in got.rows] == [set(r) for r in ref.rows]
    assert [r["image"] for r in got.rows] == [r["image"] for r in ref.rows]
    np.testing.assert_array_equal(got.test_index, ref.test_index)
    assert got.predictions.shape == ref.predictions.shape and got.fit_seconds > 0
    if not torch.cuda.is_available():  # on CPU the batched path reproduces run_task's model
        np.testing.assert_allclose(got.predictions, ref.predictions, atol=PRED_ATOL)
        np.testing.assert_allclose([r["mse"] for r in got.rows], [r["mse"] for r in ref.rows], rtol=MSE_RTOL)


def test_local_backend_splits_batched_groups_over_workers(data_dir, tmp_path):
    """--jobs 2: a batched group trains as two stacks in two workers, beside one-by-one tasks, with --jobs 1's results."""
    import pandas as pd

    from cortexflow.benchmark.runner import BenchmarkConfig, run_benchmark

    cfg = BenchmarkConfig("vangerven", "mean-image,cccv1", "kfold", 2, 2, fast=True, data_dir=data_dir,
                          train_mode="batched")
    one = run_benchmark(cfg.replace(out=tmp_path / "one", jobs=1), progress=False, report=False)
    two = run_benchmark(cfg.replace(out=tmp_path / "two", jobs=2), progress=False, report=False)
    assert one["computed"] == two["computed"] == 8
    a, b = pd.read_csv(tmp_path / "one" / "results.csv"), pd.read_csv(tmp_path / "two" / "results.csv")
    pd.testing.assert_frame_equal(a.drop(columns=["mse", "pearson", "ssim", "psnr", "two_way"]),
                                  b.drop(columns=["mse", "pearson", "ssim", "psnr", "two_way"]))
    np.testing.assert_allclose(a["mse"], b["mse"], rtol=MSE_RTOL, atol=1e-7)


def test_members_with_different_hyper_parameters_are_refused():
    from cortexflow.models.cccv1 import CCCV1

    X, Y = _synthetic(n=20)
    cfg = get_config("small").replace(hidden_dim=16, embed_dim=8, epochs=1)
    a = CCCV1(X.shape[1], hidden_dim=16, embed_dim=8, output_shape=(64,), alpha=0.1)
    b = CCCV1(X.shape[1], hidden_dim=16, embed_dim=8, output_shape=(64,), alpha=0.2)
    Yf = Y.reshape(len(Y), -1).astype(np.float32)
    with pytest.raises(BatchedNotSupported, match="one architecture"):
        train_batched([a, b], [X, X], [Yf, Yf], cfg, [0, 1], device="cpu")


def test_deferred_weight_gradients_equal_clip_after_compute():
    """Gram-matrix norms and the deferred, pre-scaled weight gradient equal the direct computation."""
    from cortexflow.training.batched import _DeferredWeightGrads

    gen = torch.Generator().manual_seed(0)
    x, g = torch.randn(3, 5, 40, generator=gen), torch.randn(3, 5, 24, generator=gen)
    direct = torch.bmm(x.transpose(1, 2), g)
    d = _DeferredWeightGrads()
    out = torch.full((3, 40, 24), float("nan"))
    d.add(x, g, out)
    d.add(x[:, :2], g[:, :2], torch.empty(3, 40, 24))  # norms of several layers add up
    expected = direct.flatten(1).norm(dim=1) ** 2 + torch.bmm(x[:, :2].transpose(1, 2), g[:, :2]).flatten(1).norm(dim=1) ** 2
    torch.testing.assert_close(d.sq_norm, expected, rtol=1e-5, atol=1e-5)
    coef = torch.tensor([1.0, 0.5, 0.1])
    d.finish(coef)
    torch.testing.assert_close(out, direct * coef.view(3, 1, 1), rtol=1e-5, atol=1e-6)
    assert d.items == [] and d.sq_norm is None


def test_fit_many_prepares_each_member_with_the_estimators_own_step(monkeypatch):
    """The batched path shares CCCV1Decoder's preparation step (validation, scaling, split, seeding): one copy."""
    X, Y = _synthetic(n=24)
    cfg = get_config("small").replace(hidden_dim=16, embed_dim=8, epochs=2)
    calls = []
    real = CCCV1Decoder._prepare_fit

    def spy(self, Xa, Ya, **kw):
        prep = real(self, Xa, Ya, **kw)
        calls.append((self.random_state, prep.val_index))
        return prep

    monkeypatch.setattr(CCCV1Decoder, "_prepare_fit", spy)
    decs = fit_many([X, X[:20]], [Y, Y[:20]], [3, 4], config=cfg, device="cpu", metadata={"name": "syn"})
    seq = CCCV1Decoder(config=cfg, random_state=3, device="cpu").fit(X, Y)
    assert [c[0] for c in calls] == [3, 4, 3]  # two members, then the sequential fit
    np.testing.assert_array_equal(calls[0][1][1], calls[2][1][1])  # the same inner validation rows
    assert decs[0].seed_ == seq.seed_ == 3 and decs[0].metadata_ == {"name": "syn"}
    np.testing.assert_array_equal(decs[0].signal_scaler_.mean_, seq.signal_scaler_.mean_)


def test_fit_leaves_the_global_random_state_alone():
    X, Y = _synthetic(n=24)
    cfg = get_config("small").replace(hidden_dim=16, embed_dim=8, epochs=2)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = CCCV1Decoder(config=cfg, random_state=0, device="cpu").fit(X, Y)
    fit_many([X], [Y], [0], config=cfg, device="cpu")
    assert torch.equal(torch.rand(3), expected)
    # and the global state does not reach the fit: same seed, same model, whatever the global stream
    torch.manual_seed(999)
    b = CCCV1Decoder(config=cfg, random_state=0, device="cpu").fit(X, Y)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert all(getattr(m, "generator", None) is None for m in b.model_.modules())  # no stream left attached
