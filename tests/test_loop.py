"""The shared epoch loop (cortexflow.training.loop): early stopping, best weights, schedule, stacks, progress."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cortexflow.data.splits import inner_validation_split
from cortexflow.training.config import TrainingConfig
from cortexflow.training.loop import EpochSteps, Plateau, TrainResult, run_epochs
from cortexflow.training.trainer import train_model


class Scripted(EpochSteps):
    """Members whose validation losses follow fixed scripts; records what the loop asks."""

    def __init__(self, scripts, validates=True, lr=1.0):
        self.scripts = [list(s) for s in scripts]
        self.validates = validates
        self.active = list(range(len(scripts)))
        self.lrs = [lr] * len(scripts)
        self.epoch = 0
        self.calls: list[tuple] = []

    def train_epoch(self, epoch):
        self.epoch = epoch
        self.calls.append(("train", epoch, tuple(self.active)))
        return [float(10 * i + epoch) for i in self.active]

    def validate(self):
        if not self.validates:
            return None
        return [self.scripts[i][self.epoch - 1] for i in self.active]

    def lr(self, row):
        return self.lrs[self.active[row]]

    def set_lr(self, row, lr):
        self.lrs[self.active[row]] = lr

    def keep_best(self, rows):
        self.calls.append(("best", self.epoch, tuple(self.active[r] for r in rows)))

    def finish(self, rows):
        self.calls.append(("finish", self.epoch, tuple(self.active[r] for r in rows)))

    def drop(self, keep):
        self.active = [self.active[r] for r in keep]


def test_early_stopping_stops_at_patience_and_restores_the_best_epoch():
    steps = Scripted([[1.0, 0.5, 0.6, 0.7, 0.8, 0.1, 0.1]])
    (res,) = run_epochs(steps, 1, 7, patience=3)
    assert isinstance(res, TrainResult)
    assert res.stopped_epoch == 5 and res.best_epoch == 2 and res.best_val_loss == 0.5
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4, 5]
    assert list(res.history[0]) == ["epoch", "train_loss", "val_loss", "lr"]
    # best kept at the improving epochs; the best weights handed back once, at the stop
    assert [c for c in steps.calls if c[0] != "train"] == [("best", 1, (0,)), ("best", 2, (0,)), ("finish", 5, (0,))]


def test_an_improvement_must_exceed_the_threshold():
    steps = Scripted([[1.0, 1.0 - 1e-8, 0.9]])
    (res,) = run_epochs(steps, 1, 3, patience=1)
    assert res.stopped_epoch == 2 and res.best_epoch == 1


def test_a_loop_without_validation_runs_every_epoch():
    steps = Scripted([[]], validates=False)
    (res,) = run_epochs(steps, 1, 6, patience=1, plateau=(0.5, 0))
    assert res.stopped_epoch == 6 and len(res.history) == 6
    assert all("val_loss" not in h for h in res.history)
    assert res.history[-1]["train_loss"] == 6.0 and res.best_val_loss == float("inf")
    assert steps.lrs == [1.0]  # no plateau without a validation loss
    assert [c for c in steps.calls if c[0] != "train"] == [("finish", 6, (0,))]


def test_zero_epochs_hands_back_the_starting_weights():
    steps = Scripted([[], []])
    results = run_epochs(steps, 2, 0, patience=2)
    assert [r.history for r in results] == [[], []]
    assert steps.calls == [("finish", 0, (0, 1))]


def test_plateau_follows_pytorchs_reduce_on_plateau():
    vals = [1.0, 0.9, 0.95, 0.97, 0.99, 0.89, 0.9, 0.91, 0.92, 0.93, 0.5, 0.6]
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=2)
    expected = []
    for v in vals:
        ref.step(v)
        expected.append(opt.param_groups[0]["lr"])
    steps = Scripted([vals])
    (res,) = run_epochs(steps, 1, len(vals), patience=100, plateau=(0.5, 2))
    assert [h["lr"] for h in res.history] == expected
    assert min(expected) < 1.0  # the sequence does reduce the rate
    p, lr = Plateau(0.5, 2), 1.0
    assert [lr := p.step(v, lr) for v in vals] == expected


def test_members_stop_on_their_own_and_leave_the_stack():
    # member 1 stops after epoch 3 (patience 2); member 0 and 2 run to the last epoch
    scripts = [[5, 4, 3, 2, 1, 0.5], [1, 2, 3, 4, 5, 6], [3, 2, 1, 2, 0.9, 0.1]]
    steps = Scripted(scripts)
    results = run_epochs(steps, 3, 6, patience=2, plateau=(0.1, 10), label=lambda i: f"member {i}: ")
    assert [r.stopped_epoch for r in results] == [6, 3, 6]
    assert [r.best_epoch for r in results] == [6, 1, 6]
    assert [len(r.history) for r in results] == [6, 3, 6]
    trains = [c for c in steps.calls if c[0] == "train"]
    assert trains[2] == ("train", 3, (0, 1, 2)) and trains[3] == ("train", 4, (0, 2))
    # the training loss recorded belongs to the member, not to its row
    assert results[2].history[4]["train_loss"] == 25.0
    finishes = [c for c in steps.calls if c[0] == "finish"]
    assert finishes == [("finish", 3, (1,)), ("finish", 6, (0, 2))]
    assert ("best", 1, (0, 1, 2)) in steps.calls and ("best", 4, (0,)) in steps.calls


@pytest.mark.parametrize("progress", [False, True])
def test_the_progress_bar_can_be_switched_off(progress, capsys):
    run_epochs(Scripted([[1.0, 0.5]]), 1, 2, patience=5, progress=progress, desc="loop-bar")
    err = capsys.readouterr().err
    assert ("loop-bar" in err) is progress


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def encode(self, x):
        return self.lin(x)

    def decode(self, e):
        return torch.sigmoid(e)


def test_train_model_restores_the_weights_of_its_best_epoch():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    Y = rng.uniform(size=(40, 3)).astype(np.float32)
    cfg = TrainingConfig(epochs=12, batch_size=8, lr=0.3, patience=3, val_fraction=0.25)
    torch.manual_seed(0)
    model = _Tiny()
    res = train_model(model, X, Y, cfg, seed=1, device="cpu")
    assert res.stopped_epoch <= cfg.epochs and len(res.history) == res.stopped_epoch
    assert res.best_val_loss == min(h["val_loss"] for h in res.history)
    _, va = inner_validation_split(len(X), cfg.val_fraction, 1)  # the validation loss of the restored weights
    with torch.no_grad():
        pred = model.decode(model.encode(torch.from_numpy(X[va])))
        val = float(torch.nn.functional.mse_loss(pred, torch.from_numpy(Y[va])))
    assert val == pytest.approx(res.best_val_loss, rel=1e-6)
    assert not model.training
