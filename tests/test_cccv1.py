"""The CCCV1 network, the model registry, the trainer and the CCCV1Decoder estimator."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from sklearn.base import clone
from torch import nn

from cortexflow.data.splits import inner_validation_split
from cortexflow.exceptions import ConfigError, DataValidationError
from cortexflow.models import CCCV1, build_model, list_models
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.training import PRESETS, CCCV1Config, get_config, pattern_for_size, train_model
from cortexflow.training.trainer import make_adam


def _layers(seq: nn.Sequential) -> list[str]:
    out = []
    for m in seq:
        if isinstance(m, nn.Linear):
            out.append(f"Linear({m.in_features},{m.out_features})")
        elif isinstance(m, nn.LayerNorm):
            out.append(f"LayerNorm({m.normalized_shape[0]})")
        elif isinstance(m, nn.Dropout):
            out.append(f"Dropout({m.p:.4g})")
        else:
            out.append(type(m).__name__)
    return out


# ------------------------------------------------------------------ network
def test_architecture_matches_the_design():
    model = CCCV1(3092, dropout_encoder=0.06, dropout_decoder=0.02, alpha=0.1)
    assert _layers(model.encoder.net) == [
        "Linear(3092,1024)", "LayerNorm(1024)", "SiLU", "Dropout(0.06)",
        "Linear(1024,1024)", "LayerNorm(1024)", "SiLU", "Dropout(0.042)",
        "Linear(1024,512)", "LayerNorm(512)", "SiLU", "Dropout(0.03)",
        "Linear(512,512)", "LayerNorm(512)", "Tanh",
    ]
    assert _layers(model.enhancer.net) == ["Linear(512,256)", "SiLU", "Linear(256,512)", "Tanh"]
    assert model.enhancer.alpha == 0.1
    assert _layers(model.decoder.net) == ["Linear(512,512)", "LayerNorm(512)", "SiLU", "Dropout(0.02)",
                                          "Linear(512,784)", "Sigmoid"]
    dropouts = [m.p for m in model.encoder.net if isinstance(m, nn.Dropout)]
    np.testing.assert_allclose(dropouts, [0.06, 0.042, 0.03])  # progressive: d, 0.7 d, 0.5 d
    n_params = sum(p.numel() for p in model.parameters())
    expected = (
        (3092 * 1024 + 1024) + 2 * 1024 + (1024 * 1024 + 1024) + 2 * 1024 + (1024 * 512 + 512) + 2 * 512
        + (512 * 512 + 512) + 2 * 512  # encoder
        + (512 * 256 + 256) + (256 * 512 + 512)  # enhancer
        + (512 * 512 + 512) + 2 * 512 + (512 * 784 + 784)  # decoder
    )
    assert n_params == expected


def test_registry_builds_presets_with_their_settings():
    cfg = PRESETS["vangerven"]
    model = build_model("cccv1", 3092, (1, 28, 28), cfg)
    np.testing.assert_allclose([m.p for m in model.encoder.net if isinstance(m, nn.Dropout)], [0.05, 0.035, 0.025])
    assert [m.p for m in model.decoder.net if isinstance(m, nn.Dropout)] == [0.015]
    assert model.enhancer.alpha == 0.08
    with pytest.raises(ConfigError, match="unknown model 'nope'.*cccv1"):
        build_model("nope", 10, (784,), cfg)


def test_forward_shapes_range_and_unit_embeddings():
    torch.manual_seed(0)
    model = CCCV1(50).eval()
    x = torch.randn(7, 50) * 10
    with torch.no_grad():
        _check_forward(model, x)


def _check_forward(model, x):
    out = model(x)
    assert out.shape == (7, 1, 28, 28)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    emb = model.encode(x)
    assert emb.shape == (7, 512)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(7))
    torch.testing.assert_close(model.decode(emb), out)
    # the enhancer is a residual refinement, renormalised
    e = model.encoder(x)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(7))
    manual = torch.nn.functional.normalize(e + 0.1 * model.enhancer.net(e), dim=-1)
    torch.testing.assert_close(emb, manual)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("output_shape", [(784,), (1, 28, 28)])
def test_model_registry_contract(name, output_shape, tiny_config):
    torch.manual_seed(0)
    model = build_model(name, 64, output_shape, tiny_config)
    assert isinstance(model, nn.Module)
    x = torch.randn(5, 64)
    model.train()
    out = model(x)
    assert out.shape == (5, *output_shape)
    assert float(out.detach().min()) >= 0.0 and float(out.detach().max()) <= 1.0
    emb = model.encode(x)
    assert emb.shape == (5, tiny_config.embed_dim)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(5))
    loss = ((out - 0.5) ** 2).mean() + emb[:, 0].sum()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))  # eval mode is deterministic (no dropout)


# ------------------------------------------------------------------- config
def test_presets_follow_the_design():
    v = get_config("vangerven")
    assert (v.lr, v.batch_size, v.weight_decay, v.epochs, v.patience) == (5e-4, 12, 5e-8, 150, 20)
    assert (v.dropout_encoder, v.dropout_decoder, v.alpha) == (0.05, 0.015, 0.08)
    large = get_config("large")
    assert (large.lr, large.batch_size, large.epochs, large.patience, large.alpha) == (1e-3, 32, 100, 12, 0.05)
    assert get_config("auto", dataset="miyawaki").pattern == "miyawaki"
    assert [pattern_for_size(n) for n in (199, 200, 800, 801)] == ["small", "medium", "medium", "large"]
    assert get_config("auto", n_train=500).pattern == "medium"
    assert get_config("auto").pattern == "small"


def test_config_replace_from_strings_and_errors():
    cfg = get_config("small").replace(epochs="3", lr="1e-3", loss_weights='{"a": 2}')
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int) and cfg.lr == 1e-3 and cfg.loss_weights == {"a": 2}
    assert CCCV1Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown CCCV1Config key 'epoch'.*epochs"):
        cfg.replace(epoch=3)
    with pytest.raises(ConfigError, match=r"dropout_encoder=1\.5"):
        cfg.replace(dropout_encoder=1.5)
    with pytest.raises(ConfigError, match="cannot read epochs='many'"):
        cfg.replace(epochs="many")
    with pytest.raises(ConfigError, match="unknown configuration 'huge'.*vangerven"):
        get_config("huge")
    with pytest.raises(ConfigError, match="unknown CCCV1Config key"):
        CCCV1Config.from_dict({"nope": 1})


# ---------------------------------------------------------------- estimator
def test_estimator_outputs(tiny_config, make_synthetic):
    X, Y, _ = make_synthetic(n=40, n_features=30)
    est = CCCV1Decoder(config=tiny_config, random_state=0, device="cpu")
    assert est.fit(X, Y) is est
    assert est.n_features_in_ == 30 and est.output_shape_ == (28, 28)
    pred = est.predict(X[:6])
    assert pred.shape == (6, 28, 28) and pred.dtype == np.float32
    assert pred.min() >= 0.0 and pred.max() <= 1.0
    emb = est.transform(X[:6])
    assert emb.shape == (6, tiny_config.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert len(est.history_) == est.train_result_.stopped_epoch <= tiny_config.epochs
    assert 1 <= est.train_result_.best_epoch <= est.train_result_.stopped_epoch
    assert isinstance(est.score(X, Y), float)


def test_estimator_learns_something(make_synthetic, tiny_config):
    X, Y, labels = make_synthetic(n=80, n_features=30, seed=1)
    cfg = tiny_config.replace(epochs=40, patience=10, lr=2e-3)
    est = CCCV1Decoder(config=cfg, random_state=0, device="cpu").fit(X[:60], Y[:60])
    pred = est.predict(X[60:])
    mse_model = ((pred - Y[60:]) ** 2).mean()
    mse_mean = ((Y[:60].mean(axis=0) - Y[60:]) ** 2).mean()
    assert mse_model < 0.5 * mse_mean  # clearly better than predicting the training mean image


def test_clone_keeps_the_config(tiny_config):
    est = CCCV1Decoder(config=tiny_config, dataset="vangerven", random_state=3)
    c = clone(est)
    assert c.get_params()["config"] == tiny_config and c.random_state == 3
    assert clone(CCCV1Decoder(config="vangerven")).config == "vangerven"
    assert clone(CCCV1Decoder(config=tiny_config.to_dict())).config == tiny_config.to_dict()


def test_config_resolution_by_dataset_and_size(make_synthetic, tiny_config):
    X, Y, _ = make_synthetic(n=12, n_features=8)
    est = CCCV1Decoder(config=tiny_config.to_dict(), device="cpu").fit(X, Y)
    assert est.config_ == tiny_config
    est = CCCV1Decoder(config="auto", dataset="vangerven")
    assert get_config(est.config, n_train=90, dataset=est.dataset).pattern == "vangerven"


def _weights(est) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in est.model_.state_dict().items()}


def test_same_seed_same_model_other_seed_other_model(tiny_config, make_synthetic):
    X, Y, _ = make_synthetic(n=40, n_features=30)
    a = CCCV1Decoder(config=tiny_config, random_state=7, device="cpu").fit(X, Y)
    b = CCCV1Decoder(config=tiny_config, random_state=7, device="cpu").fit(X, Y)
    c = CCCV1Decoder(config=tiny_config, random_state=8, device="cpu").fit(X, Y)
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert a.history_ == b.history_
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    assert not np.array_equal(a.predict(X), c.predict(X))


def test_test_rows_never_reach_training(vangerven, tiny_config):
    """Training on a dataset whose test split is all NaN gives exactly the same model."""
    poisoned = copy.deepcopy(vangerven)
    poisoned.X_test[:] = np.nan
    poisoned.Y_test[:] = np.nan
    cfg = tiny_config.replace(epochs=3)
    normal = CCCV1Decoder(config=cfg, dataset="vangerven", random_state=0, device="cpu")
    normal.fit(vangerven.X_train, vangerven.Y_train)
    isolated = CCCV1Decoder(config=cfg, dataset="vangerven", random_state=0, device="cpu")
    isolated.fit(poisoned.X_train, poisoned.Y_train)
    assert np.isnan(poisoned.X_test).all()  # the poison is really there
    np.testing.assert_array_equal(isolated.predict(vangerven.X_test), normal.predict(vangerven.X_test))
    assert isolated.signal_scaler_.get_state() == normal.signal_scaler_.get_state()
    assert isolated.target_scaler_.get_state() == normal.target_scaler_.get_state()
    np.testing.assert_allclose(isolated.signal_scaler_.mean_, vangerven.X_train.astype(np.float64).mean(axis=0))


def test_early_stopping_restores_best_weights(make_synthetic, tiny_config):
    # very noisy signals: the validation loss falls for a while, reaches a minimum (epoch 38
    # with these seeds), then rises as the model fits the noise, and training stops early
    X, Y, _ = make_synthetic(n=40, n_features=20, seed=0, noise=2.0)
    Y = Y.reshape(40, -1)
    cfg = tiny_config.replace(epochs=60, patience=4, lr=3e-3, lr_patience=100)
    torch.manual_seed(0)
    model = build_model("cccv1", 20, (784,), cfg)
    res = train_model(model, X, Y, cfg, seed=0, device="cpu")
    val_losses = [h["val_loss"] for h in res.history]
    assert res.stopped_epoch == len(res.history) < cfg.epochs  # it stopped early
    assert 1 < res.best_epoch < res.stopped_epoch
    assert res.stopped_epoch - res.best_epoch == cfg.patience
    assert res.best_val_loss == min(val_losses) == val_losses[res.best_epoch - 1]
    assert val_losses[-1] > res.best_val_loss
    _, va = inner_validation_split(len(X), cfg.val_fraction, 0)
    model.eval()
    with torch.no_grad():
        restored = float(((model(torch.as_tensor(X[va])) - torch.as_tensor(Y[va])) ** 2).mean())
    assert restored == pytest.approx(res.best_val_loss, rel=1e-5)
    assert restored != pytest.approx(val_losses[-1], rel=1e-3)


def test_loss_terms_receive_the_batch_and_module_terms_train(make_synthetic, tiny_config):
    X, Y, _ = make_synthetic(n=24, n_features=10)
    seen: list[set] = []

    class Term(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(1.0))

        def forward(self, batch):
            seen.append(set(batch))
            assert batch["embedding"].shape[1] == tiny_config.embed_dim
            assert torch.equal(batch["x"], torch.as_tensor(X)[batch["index"]])
            return (self.w - 3.0) ** 2

    term = Term()
    cfg = tiny_config.replace(epochs=3, lr=0.1, loss_weights={"pull": 2.0})
    torch.manual_seed(0)
    train_model(build_model("cccv1", 10, (1, 28, 28), cfg), X, Y, cfg, seed=0, device="cpu", loss_terms={"pull": term})
    assert seen and all(s == {"x", "embedding", "pred", "target", "index"} for s in seen)
    assert float(term.w.detach()) > 1.0  # its parameter was optimised towards 3


def test_estimator_input_errors(tiny_config, make_synthetic):
    X, Y, _ = make_synthetic(n=20, n_features=6)
    est = CCCV1Decoder(config=tiny_config, device="cpu")
    with pytest.raises(DataValidationError, match="Reshape your data"):
        est.fit(X[0], Y)
    with pytest.raises(DataValidationError, match="at least 4 training samples.*n_samples = 3"):
        est.fit(X[:3], Y[:3])
    with pytest.raises(DataValidationError, match="requires y"):
        est.fit(X, None)
    with pytest.raises(DataValidationError, match="20 rows but Y has shape"):
        est.fit(X, Y[:5])
    bad = X.copy()
    bad[4, 2] = np.nan
    with pytest.raises(DataValidationError, match="row 4, column 2"):
        est.fit(bad, Y)
    with pytest.raises(DataValidationError, match="Input Y contains 1 NaN"):
        Ybad = Y.copy()
        Ybad[0, 0, 0] = np.nan
        est.fit(X, Ybad)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        est.predict(X)
    est.fit(X, Y)
    with pytest.raises(DataValidationError, match="X has 5 features, but CCCV1Decoder is expecting 6 features"):
        est.predict(X[:, :5])
    with pytest.raises(DataValidationError, match="X has 7 features.*expecting 6"):
        est.transform(np.ones((2, 7)))


def test_one_dimensional_targets(make_synthetic, tiny_config):
    X, _, labels = make_synthetic(n=30, n_features=10)
    y = labels.astype(np.float64)
    est = CCCV1Decoder(config=tiny_config, device="cpu").fit(X, y)
    assert est.output_shape_ == () and est.predict(X).shape == (30,)
    y2 = np.c_[y, 2 * y, y + 1.0]
    assert CCCV1Decoder(config=tiny_config, device="cpu").fit(X, y2).predict(X).shape == (30, 3)
    assert math.prod(()) == 1


def test_trainer_uses_fused_adam_on_cpu(tiny_config):
    params = list(CCCV1(10, hidden_dim=8, embed_dim=4).parameters())
    opt = make_adam(params, tiny_config, torch.device("cpu"))
    assert opt.defaults["lr"] == tiny_config.lr and opt.defaults["weight_decay"] == tiny_config.weight_decay
    major, minor = (int(v) for v in torch.__version__.split(".")[:2])
    if (major, minor) >= (2, 4):  # fused Adam exists on CPU
        assert opt.defaults["fused"] is True
    half = [p.detach().half().requires_grad_() for p in params[:2]]
    assert not make_adam(half, tiny_config, torch.device("cpu")).defaults.get("fused")


def test_training_config_is_separate_from_the_model_fields():
    from cortexflow.training import TrainingConfig

    cfg = get_config("vangerven")
    assert isinstance(cfg, TrainingConfig)
    train = cfg.training
    assert type(train) is TrainingConfig and train.lr == cfg.lr and train.batch_size == cfg.batch_size
    assert not hasattr(train, "dropout_encoder") and not hasattr(train, "pattern")
    assert CCCV1Config.from_dict(cfg.to_dict()) == cfg  # checkpoints keep their flat dict
    with pytest.raises(ConfigError, match=r"TrainingConfig\.lr=-1"):
        TrainingConfig(lr=-1)
    with pytest.raises(ConfigError, match="unknown TrainingConfig key"):
        TrainingConfig().replace(dropout_encoder=0.1)
    with pytest.raises(ConfigError, match=r"CCCV1Config\.dropout_encoder"):
        CCCV1Config(dropout_encoder=2.0)


def test_compute_loss_hook_replaces_the_default_loss(make_synthetic):
    from cortexflow.training import TrainingConfig

    X, Y, _ = make_synthetic(n=20, n_features=6)
    Yf = Y.reshape(len(Y), -1).astype(np.float32)
    cfg = TrainingConfig(epochs=3, patience=3)
    torch.manual_seed(0)
    model = nn.Linear(6, Yf.shape[1])
    seen = []

    def loss(m, batch):
        seen.append(sorted(batch))
        pred = m(batch["x"])
        pix = ((pred - batch["target"]) ** 2).mean()
        return pix + 0.0 * pred.abs().mean(), pix

    res = train_model(model, X.astype(np.float32), Yf, cfg, device="cpu", compute_loss=loss)
    assert seen[0] == ["index", "target", "x"] and len(res.history) == 3
    with pytest.raises(ConfigError, match="not both"):
        train_model(model, X, Yf, cfg, device="cpu", compute_loss=loss, loss_terms={"t": lambda out: 0.0})
