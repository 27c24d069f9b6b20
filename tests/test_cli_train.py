"""``cortexflow train | evaluate | reconstruct`` end to end on vangerven, with a tiny fast configuration."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from cortexflow.cli.main import cli

FAST = ["--set", "epochs=3", "--set", "hidden_dim=64", "--set", "embed_dim=32", "--set", "patience=2"]
METRIC_KEYS = {"mse", "pearson", "ssim", "psnr", "two_way"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("run") / "vangerven"
    res = CliRunner().invoke(cli, ["train", "--method", "cccv1", "--dataset", "vangerven", "--data-dir", str(data_dir), "--seed", "0",
                                   "--out", str(out), "--device", "cpu", "--no-progress", *FAST])
    assert res.exit_code == 0, res.output
    return out, res


def test_train_writes_checkpoint_metrics_and_figure(trained):
    out, res = trained
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == ["checkpoint.json", "model.safetensors"]
    assert (out / "reconstructions.png").read_bytes()[:8] == PNG_MAGIC
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert set(metrics["per_image"]) == METRIC_KEYS
    for k in METRIC_KEYS:
        per = metrics["per_image"][k]
        assert isinstance(per, list) and len(per) == 10
        assert metrics[k] == pytest.approx(np.mean(per))
    assert 0 <= metrics["two_way"] <= 1 and metrics["mse"] > 0
    assert metrics["dataset"] == "vangerven" and metrics["split"] == "official" and metrics["seed"] == 0
    assert metrics["config"]["epochs"] == 3 and metrics["config"]["hidden_dim"] == 64
    assert metrics["config"]["pattern"] == "vangerven"  # the dataset preset, with the overrides on top
    assert 1 <= metrics["best_epoch"] <= metrics["stopped_epoch"] <= 3
    printed = json.loads(res.stdout)
    assert printed["out"] == str(out) and printed["mse"] == pytest.approx(metrics["mse"])


def test_evaluate_prints_the_same_metrics(trained, data_dir, tmp_path):
    out, _ = trained
    metrics = json.loads((out / "metrics.json").read_text())
    res = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(out), "--dataset", "vangerven",
                                   "--data-dir", str(data_dir), "--out", str(tmp_path / "eval")])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout)
    assert set(printed) == METRIC_KEYS
    for k in METRIC_KEYS:
        assert printed[k] == pytest.approx(metrics[k], rel=1e-6)
    assert (tmp_path / "eval" / "reconstructions.png").is_file()
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["per_image"]["ssim"] == pytest.approx(
        metrics["per_image"]["ssim"], rel=1e-6)
    # the checkpoint folder itself is accepted too
    res2 = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(out / "checkpoint"), "--dataset", "vangerven"])
    assert res2.exit_code == 0 and json.loads(res2.stdout)["mse"] == pytest.approx(metrics["mse"], rel=1e-6)


def test_evaluate_on_data_with_other_feature_count_exits_2(trained):
    out, _ = trained
    res = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(out), "--dataset", "miyawaki"])
    assert res.exit_code == 2
    assert "967" in res.stderr and "3092" in res.stderr and "Traceback" not in res.output


def test_reconstruct_from_npy(trained, vangerven, tmp_path):
    out, _ = trained
    inp = tmp_path / "new.npy"
    np.save(inp, vangerven.X_test[:3])
    dest = tmp_path / "recon"
    res = CliRunner().invoke(cli, ["reconstruct", "--checkpoint", str(out), "--input", str(inp), "--out", str(dest)])
    assert res.exit_code == 0, res.output
    pngs = sorted(p.name for p in dest.glob("*.png"))
    assert pngs == ["grid.png", "recon_0.png", "recon_1.png", "recon_2.png"]
    assert all((dest / p).read_bytes()[:8] == PNG_MAGIC for p in pngs)
    arr = np.load(dest / "reconstructions.npy")
    assert arr.shape == (3, 28, 28) and arr.min() >= 0 and arr.max() <= 1
    assert "3 reconstructions" in res.stdout


def test_reconstruct_from_mat_with_key(trained, vangerven, tmp_path):
    out, _ = trained
    inp = tmp_path / "session.mat"
    scipy.io.savemat(inp, {"fmriTest": vangerven.X_test})
    dest = tmp_path / "recon"
    res = CliRunner().invoke(cli, ["reconstruct", "--checkpoint", str(out), "--input", str(inp), "--out", str(dest)])
    assert res.exit_code == 0, res.output
    assert len(list(dest.glob("recon_*.png"))) == 10 and (dest / "grid.png").is_file()
    # the reconstructions are the model's predictions on the official test rows
    metrics = json.loads((out / "metrics.json").read_text())
    arr = np.load(dest / "reconstructions.npy")
    mse = ((arr - vangerven.Y_test) ** 2).reshape(10, -1).mean(axis=1)
    np.testing.assert_allclose(mse, metrics["per_image"]["mse"], rtol=1e-5)


def test_reconstruct_with_wrong_feature_count_exits_2(trained, tmp_path):
    out, _ = trained
    inp = tmp_path / "wrong.npy"
    np.save(inp, np.zeros((2, 3091), dtype=np.float32))
    res = CliRunner().invoke(cli, ["reconstruct", "--checkpoint", str(out), "--input", str(inp),
                                   "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "3091" in res.stderr and "3092" in res.stderr and "Traceback" not in res.output
    assert not (tmp_path / "r").exists()


def test_reconstruct_with_missing_key_exits_2(trained, tmp_path):
    out, _ = trained
    inp = tmp_path / "other.npz"
    np.savez(inp, something=np.zeros((2, 3092)))
    res = CliRunner().invoke(cli, ["reconstruct", "--checkpoint", str(out), "--input", str(inp),
                                   "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "something" in res.stderr and "--key" in res.stderr


def test_train_rejects_unknown_setting(data_dir, tmp_path):
    res = CliRunner().invoke(cli, ["train", "--method", "cccv1", "--dataset", "vangerven", "--out", str(tmp_path / "x"),
                                   "--set", "epoch=3", "--no-progress"])
    assert res.exit_code == 2
    assert "epoch" in res.stderr and "epochs" in res.stderr
    res = CliRunner().invoke(cli, ["train", "--method", "cccv1", "--dataset", "vangerven", "--set", "epochs"])
    assert res.exit_code == 2 and "KEY=VALUE" in res.output
    assert not (tmp_path / "x").exists()


def test_train_device_options(data_dir, tmp_path):
    """--amp and --deterministic reach training and metrics.json; an unavailable device is a clear exit-2 error."""
    import torch

    from cortexflow.training.devices import set_deterministic

    out = tmp_path / "run"
    try:
        res = CliRunner().invoke(cli, ["train", "--method", "cccv1", "--dataset", "vangerven", "--data-dir", str(data_dir), "--out", str(out),
                                       "--device", "cpu", "--amp", "bf16", "--deterministic", "--no-progress", *FAST])
        assert res.exit_code == 0, res.output
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        set_deterministic(False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["device"], metrics["amp"], metrics["deterministic"]) == ("cpu", "bf16", True)
    assert json.loads((out / "checkpoint" / "checkpoint.json").read_text())["params"]["amp"] == "bf16"
    res = CliRunner().invoke(cli, ["train", "--method", "cccv1", "--dataset", "vangerven", "--amp", "fp8"])
    assert res.exit_code == 2 and "fp8" in res.output
    if not torch.cuda.is_available():
        res = CliRunner().invoke(cli, ["train", "--method", "cccv1", "--dataset", "vangerven", "--data-dir", str(data_dir),
                                       "--out", str(tmp_path / "gpu"), "--device", "cuda", "--no-progress", *FAST])
        assert res.exit_code == 2 and "CUDA is not available" in res.stderr
        assert not (tmp_path / "gpu").exists()


def test_train_on_a_users_file(vangerven, tmp_path):
    path = tmp_path / "subject01.npz"
    np.savez(path, fmriTrn=vangerven.X_train[:40], stimTrn=vangerven.Y_train[:40],
             fmriTest=vangerven.X_test[:4], stimTest=vangerven.Y_test[:4])
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", "--method", "cccv1", "--dataset", str(path), "--out", str(out), "--device", "cpu",
                                   "--no-progress", "--set", "epochs=2", "--set", "hidden_dim=32",
                                   "--set", "embed_dim=16"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "subject01" and metrics["n_test"] == 4
    assert metrics["config"]["pattern"] == "small"  # 40 rows: the design's small-data pattern


def test_no_progress_also_silences_the_bars_of_a_prior_trained_inside_a_benchmark(tmp_path, monkeypatch, data_dir):
    """``benchmark --no-progress`` hides every bar, the prior's epoch bar included (it shows without the flag)."""
    from cortexflow.cli.benchmark import benchmark

    def run(flag: list[str], name: str) -> str:
        monkeypatch.setenv("CORTEXFLOW_PROGRESS", "1")
        monkeypatch.setenv("CORTEXFLOW_CACHE", str(tmp_path / f"cache_{name}"))  # an empty cache: the prior trains
        res = CliRunner().invoke(benchmark, ["--datasets", "vangerven", "--methods", "ridge-prior", "--fast",
                                             "--seeds", "1", "--data-dir", str(data_dir), "--out",
                                             str(tmp_path / name), *flag])
        assert res.exit_code == 0, res.output
        return res.output + (res.stderr if res.stderr_bytes is not None else "")

    shown = run([], "shown")
    assert "prior mnist" in shown and "epoch" in shown  # the prior's bar, with the default setting
    hidden = run(["--no-progress"], "hidden")
    assert "prior mnist" not in hidden and "it/s" not in hidden and "epoch/s" not in hidden
