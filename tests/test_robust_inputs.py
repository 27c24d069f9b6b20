"""Issue 20, what was left: training-data input checks, the thread and worker variables read from Python, clean
figure text, and format-1 prior-backed checkpoints refused.

* a dataset file (``load_dataset``, hence ``train``, ``evaluate``, ``datasets info``) with boolean signals, keys that
  differ only in case (``FMRITRN`` beside ``fmriTrn``) or signals stored transposed is refused with one line naming
  the file and the key; the same checks serve ``reconstruct``'s input (``select_signal_array``);
* ``CORTEXFLOW_WORKERS`` / ``CORTEXFLOW_NUM_THREADS`` set to ``abc``, ``0``, ``-1`` are a ConfigError in Python too
  (one parser, :func:`cortexflow.training.devices.env_int`, shared with the command line);
* figure titles and labels carry no control characters and no mathtext from a user-given name;
* a format-1 checkpoint of a prior-backed decoder (no weights hash) is refused, never loaded with a warning.

All of it runs on small synthetic files, without the shared data folder.
"""

from __future__ import annotations

import json
import logging

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from cortexflow.cli import _common
from cortexflow.cli.main import cli
from cortexflow.data.loading import check_case_variants, load_dataset, select_signal_array
from cortexflow.data.validation import check_orientation, validate_signals
from cortexflow.exceptions import CheckpointError, ConfigError, DataValidationError
from cortexflow.models.checkpoint import CHECKPOINT_META, CHECKPOINT_WEIGHTS
from cortexflow.models.loader import load_decoder
from cortexflow.reporting import figures
from cortexflow.training import devices
from cortexflow.utils.text import plain_label, strip_controls

N_TRAIN, N_TEST, N_FEATURES = 30, 10, 90


def _err_line(res) -> str:
    """The single 'Error: ...' line of a failed command; fails on a traceback or a multi-line message."""
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    return lines[0]


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "fmriTrn": rng.normal(size=(N_TRAIN, N_FEATURES)).astype(np.float32),
        "stimTrn": rng.random((N_TRAIN, 784)).astype(np.float32),
        "fmriTest": rng.normal(size=(N_TEST, N_FEATURES)).astype(np.float32),
        "stimTest": rng.random((N_TEST, 784)).astype(np.float32),
    }


def _file(tmp_path, name="subject.npz", **changes):
    arrays = _arrays()
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _refused(path, *fragments) -> str:
    with pytest.raises(DataValidationError) as err:
        load_dataset(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message, message
    for f in fragments:
        assert f in message, message
    return message


def test_a_clean_file_loads(tmp_path):
    ds = load_dataset(_file(tmp_path))
    assert ds.X_train.shape == (N_TRAIN, N_FEATURES) and ds.X_test.shape == (N_TEST, N_FEATURES)


# ------------------------------------------------------------------------ boolean signals
@pytest.mark.parametrize("key", ["fmriTrn", "fmriTest"])
def test_boolean_signals_are_refused_naming_file_and_key(tmp_path, key):
    rows = N_TRAIN if key == "fmriTrn" else N_TEST
    mask = np.random.default_rng(1).random((rows, N_FEATURES)) > 0.5
    path = _file(tmp_path, **{key: mask})
    _refused(path, f"key {key!r} holds boolean values")


def test_boolean_stimuli_are_still_images(tmp_path):
    """Booleans are refused as signals only: a black-and-white stimulus is an image."""
    stim = np.random.default_rng(2).random((N_TRAIN, 784)) > 0.5
    test = np.random.default_rng(3).random((N_TEST, 784)) > 0.5
    ds = load_dataset(_file(tmp_path, stimTrn=stim, stimTest=test))
    assert set(np.unique(ds.Y_train)) == {0.0, 1.0}


def test_boolean_signals_are_one_line_on_the_command_line(tmp_path):
    path = _file(tmp_path, fmriTrn=np.random.default_rng(1).random((N_TRAIN, N_FEATURES)) > 0.5)
    line = _err_line(CliRunner().invoke(cli, ["datasets", "info", str(path)]))
    assert str(path) in line and "'fmriTrn' holds boolean values" in line


# ------------------------------------------------------------------------ keys that differ only in case
@pytest.mark.parametrize("variant, of", [("FMRITRN", "fmriTrn"), ("stimtest", "stimTest"), ("LabelTrn", "labelTrn")])
def test_case_variant_duplicate_keys_are_refused_naming_both(tmp_path, variant, of):
    extra = {variant: _arrays(5)[of] if of in _arrays() else np.arange(N_TRAIN)}
    if of == "labelTrn":
        extra[of] = np.arange(N_TRAIN)
    path = _file(tmp_path, **extra)
    message = _refused(path, repr(variant), repr(of), "differ only in case")
    assert "ambiguous" in message


def test_a_key_present_only_in_another_case_is_named(tmp_path):
    arrays = _arrays()
    path = _file(tmp_path, fmriTrn=None, FMRITRN=arrays["fmriTrn"])
    _refused(path, "missing key(s) ['fmriTrn']", "'FMRITRN' (differs only in case from 'fmriTrn')")


def test_case_variant_keys_on_the_command_line(tmp_path):
    path = _file(tmp_path, FMRITRN=_arrays(5)["fmriTrn"])
    line = _err_line(CliRunner().invoke(cli, ["datasets", "info", str(path)]))
    assert "'FMRITRN' and 'fmriTrn' differ only in case" in line


def test_check_case_variants_passes_unrelated_keys():
    check_case_variants({"fmriTrn": 1, "FMRI": 2, "notes": 3}, ("fmriTrn",), "f.npz")  # nothing raised


# ------------------------------------------------------------------------ transposed signals
def test_transposed_test_signals_say_so(tmp_path):
    path = _file(tmp_path, fmriTest=_arrays()["fmriTest"].T.copy())  # (90, 10): 10 "features", 90 = n_features
    _refused(path, "'fmriTest'", "looks transposed", "(n_features, n_rows)", f"({N_TEST}, {N_FEATURES})")


def test_transposed_training_signals_say_so(tmp_path):
    path = _file(tmp_path, fmriTrn=_arrays()["fmriTrn"].T.copy())
    _refused(path, "'fmriTrn'", "looks transposed", f"({N_TRAIN}, {N_FEATURES})")


def test_validate_signals_names_a_transposed_array_when_the_other_axis_matches():
    X = np.random.default_rng(0).normal(size=(90, 10))
    with pytest.raises(DataValidationError, match=r"looks transposed: its shape \(90, 10\) is \(n_features, n_rows\)"):
        validate_signals(X, source="s.npz", key="fmriTest", n_features=90)


def test_a_plain_feature_mismatch_has_no_transposition_hint():
    X = np.random.default_rng(0).normal(size=(12, 10))
    with pytest.raises(DataValidationError) as err:
        validate_signals(X, source="s.npz", key="fmriTest", n_features=90)
    assert "has 10 features per row" in str(err.value) and "transposed" not in str(err.value)


def test_check_orientation_accepts_square_and_well_oriented_arrays():
    check_orientation(np.zeros((10, 10)), 10, source="s", key="a", rows_key="b")
    check_orientation(np.zeros((10, 90)), 10, source="s", key="a", rows_key="b")
    with pytest.raises(DataValidationError, match="looks transposed"):
        check_orientation(np.zeros((90, 10)), 10, source="s", key="a", rows_key="b")


# ------------------------------------------------------------------------ several candidate signal keys
def test_several_candidate_signal_keys_are_ambiguous_and_named():
    arrays = {"X": np.zeros((3, 5)), "fmriTest": np.zeros((3, 5)), "signals": np.zeros((3, 5))}
    with pytest.raises(DataValidationError) as err:
        select_signal_array(arrays, "in.npz")
    message = str(err.value)
    assert "ambiguous" in message and "fmriTest, X, signals" in message and "--key" in message


def test_one_candidate_key_or_an_explicit_key_is_read():
    a = np.arange(6.0).reshape(2, 3)
    assert select_signal_array({"signals": a, "notes": np.zeros(1)}, "in.npz") is a
    assert select_signal_array({"X": a, "fmriTest": a + 1}, "in.npz", "X") is a
    with pytest.raises(DataValidationError, match=r"key 'Y' not found \(keys present: \['X'\]\)"):
        select_signal_array({"X": a}, "in.npz", "Y")
    with pytest.raises(DataValidationError, match="'FMRITEST' and 'fmriTest' differ only in case"):
        select_signal_array({"fmriTest": a, "FMRITEST": a}, "in.npz")
    with pytest.raises(DataValidationError, match="none of the keys"):
        select_signal_array({"notes": a}, "in.npz")


# ------------------------------------------------------------------------ thread and worker variables from Python
@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5", "99999"])
def test_workers_variable_is_validated_in_python(monkeypatch, value):
    monkeypatch.delenv("CORTEXFLOW_NUM_THREADS", raising=False)
    monkeypatch.setenv("CORTEXFLOW_WORKERS", value)
    with pytest.raises(ConfigError, match=rf"\$CORTEXFLOW_WORKERS={value!r} is"):
        devices.default_num_threads()
    with pytest.raises(ConfigError, match="CORTEXFLOW_WORKERS"):
        devices.configure_threads("auto")


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5"])
def test_num_threads_variable_is_validated_in_python(monkeypatch, value):
    monkeypatch.setenv("CORTEXFLOW_NUM_THREADS", value)
    with pytest.raises(ConfigError, match=rf"\$CORTEXFLOW_NUM_THREADS={value!r} is"):
        devices.default_num_threads()
    with pytest.raises(ConfigError, match="CORTEXFLOW_NUM_THREADS"):
        devices.configure_threads(None)


def test_valid_values_are_used(monkeypatch):
    monkeypatch.setenv("CORTEXFLOW_NUM_THREADS", " 3 ")
    assert devices.default_num_threads() == 3
    monkeypatch.delenv("CORTEXFLOW_NUM_THREADS")
    monkeypatch.setenv("CORTEXFLOW_WORKERS", "")  # empty is unset
    assert devices.default_num_threads() >= 1
    monkeypatch.setattr(devices, "available_cores", lambda: 16)
    monkeypatch.setenv("CORTEXFLOW_WORKERS", "4")
    assert devices.default_num_threads() == 4


@pytest.mark.parametrize("workers", [0, -2, 1.5, True])
def test_workers_argument_is_validated(monkeypatch, workers):
    monkeypatch.delenv("CORTEXFLOW_NUM_THREADS", raising=False)
    with pytest.raises(ConfigError, match="workers="):
        devices.default_num_threads(workers)


def test_the_command_line_uses_the_same_parser():
    assert _common.env_int is devices.env_int
    assert _common.num_threads_from_env is devices.num_threads_from_env
    assert _common.workers_from_env is devices.workers_from_env


# ------------------------------------------------------------------------ figure text
HOSTILE = "ridge\x1b[31m\x07 $\\frac$"


def test_plain_label_removes_controls_and_mathtext():
    assert plain_label(HOSTILE) == "ridge \\$\\frac\\$"
    assert plain_label(plain_label(HOSTILE)) == plain_label(HOSTILE)
    assert strip_controls("a\x1b]0;title\x07b\x00c") == "abc"


@pytest.fixture
def drawn(monkeypatch):
    """The figures that ``save_figure`` saved, kept for inspection."""
    seen = []
    original = figures.save_figure

    def keep(fig, path, dpi=110):
        seen.append(fig)
        return original(fig, path, dpi=dpi)
    monkeypatch.setattr(figures, "save_figure", keep)
    return seen


def _texts(fig) -> list[str]:
    out = [fig._suptitle.get_text()] if fig._suptitle is not None else []
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()] + [t.get_text() for t in ax.texts]
        out += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
    return [t for t in out if t]


def _clean(texts) -> None:
    assert texts
    for t in texts:
        assert not any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f for c in t), repr(t)
        assert "$" not in t.replace("\\$", "") or t.startswith("$\\mathdefault"), repr(t)


def test_bar_chart_text_is_clean(drawn, tmp_path):
    figures.bar_chart({HOSTILE: 0.5, "b": 0.4}, {HOSTILE: 0.1}, tmp_path / "bar.png", ylabel="mse\x1b[0m",
                      title="title\x1b[1m $x", marks={HOSTILE: "*\x07"})
    assert (tmp_path / "bar.png").stat().st_size > 0
    texts = _texts(drawn[0])
    _clean(texts)
    assert "ridge \\$\\frac\\$" in texts and "mse" in texts


def test_reconstruction_grid_text_is_clean(drawn, tmp_path):
    imgs = np.random.default_rng(0).random((3, 10, 10)).astype(np.float32)
    figures.reconstruction_grid(imgs, {HOSTILE: imgs}, tmp_path / "grid.png", title="set\x1b[2J $\\frac$",
                                column_labels=["a\x00", "b\x1b[31m", "$c"])
    _clean(_texts(drawn[0]))


def test_a_figure_drawn_elsewhere_is_cleaned_when_saved(tmp_path):
    """save_figure cleans any figure (the benchmark's metric panel draws its own): fixed and categorical ticks."""
    fig, (a, b) = plt.subplots(1, 2)
    a.bar([0, 1], [1, 2])
    a.set_xticks([0, 1])
    a.set_xticklabels([HOSTILE, "b\x1b[0m"])
    b.bar([HOSTILE, "plain"], [1, 2])
    b.set_yscale("log")  # numeric mathtext tick labels are left alone
    fig.suptitle("dataset\x1b[31m, official split $\\frac$")
    figures.save_figure(fig, tmp_path / "panel.png")
    assert (tmp_path / "panel.png").stat().st_size > 0
    texts = _texts(fig)
    _clean(texts)
    assert "ridge \\$\\frac\\$" in [t.get_text() for t in a.get_xticklabels()]
    assert "ridge \\$\\frac\\$" in [t.get_text() for t in b.get_xticklabels()]


def test_raw_mathtext_would_break_saving(tmp_path):
    """Why ``$`` is escaped: matplotlib cannot even save a figure whose label is bad mathtext."""
    fig, ax = plt.subplots()
    ax.set_title("$\\frac$")
    with pytest.raises(ValueError):
        fig.savefig(tmp_path / "raw.png")
    plt.close(fig)


# ------------------------------------------------------------------------ format-1 prior-backed checkpoints
def _format_1_checkpoint(path, kind):
    """A checkpoint folder as format 1 wrote it: no ``weights_sha256``."""
    path.mkdir()
    save_file({"priors.0.decoder.weight": torch.zeros(4, 4)}, str(path / CHECKPOINT_WEIGHTS))
    meta = {"format": 1, "kind": kind, "params": {"type": "dict", "items": {}},
            "state": {"type": "dict", "items": {}}, "priors": []}
    (path / CHECKPOINT_META).write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize("kind", ["ridge-prior", "cccv1-prior", "brain-diffuser-prior", "mindvis-prior"])
def test_a_format_1_prior_checkpoint_is_refused_not_warned(tmp_path, kind, caplog):
    path = _format_1_checkpoint(tmp_path / kind, kind)
    with caplog.at_level(logging.WARNING):
        with pytest.raises(CheckpointError) as err:
            load_decoder(path, device="cpu")
    message = str(err.value)
    assert str(path) in message and "format-1 checkpoint has no weights hash" in message and "\n" not in message
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records


@pytest.mark.parametrize("cls_path", ["cortexflow.priors.ridge_prior.RidgePriorDecoder",
                                      "cortexflow.priors.cccv1_prior.CCCV1PriorDecoder"])
def test_the_decoder_classes_refuse_format_1_themselves(tmp_path, cls_path):
    import importlib

    module, name = cls_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    path = _format_1_checkpoint(tmp_path / "ckpt", cls.checkpoint_kind)
    with pytest.raises(CheckpointError, match="format-1 checkpoint has no weights hash"):
        cls.load(path, device="cpu")


def test_a_format_1_prior_checkpoint_is_one_line_on_the_command_line(tmp_path):
    path = _format_1_checkpoint(tmp_path / "ckpt", "ridge-prior")
    data = _file(tmp_path)
    line = _err_line(CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(path), "--dataset", str(data)]))
    assert "format-1 checkpoint has no weights hash" in line


# ------------------------------------------------------------------------ non-finite output on the command line
def _nan_decoder():
    """A fitted decoder whose predictions are NaN (its predict goes through BaseDecoder's finiteness check)."""
    from cortexflow.baselines import MeanImageDecoder

    class DamagedDecoder(MeanImageDecoder):
        def predict(self, X):
            return np.full((len(X), 28, 28), np.nan, dtype=np.float32)

    arrays = _arrays()
    return DamagedDecoder().fit(arrays["fmriTrn"], arrays["stimTrn"].reshape(-1, 28, 28))


@pytest.mark.parametrize("command", ["evaluate", "reconstruct"])
def test_non_finite_predictions_are_one_line_and_write_nothing(command, tmp_path, monkeypatch):
    import cortexflow.cli.main as main

    monkeypatch.setattr(main, "load_decoder", lambda path, device="auto": _nan_decoder())
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    data = _file(tmp_path)
    inp = tmp_path / "x.npy"
    np.save(inp, _arrays(1)["fmriTest"])
    out = tmp_path / "out"
    args = {"evaluate": ["--dataset", str(data)], "reconstruct": ["--input", str(inp)]}[command]
    line = _err_line(CliRunner().invoke(cli, [command, "--checkpoint", str(ckpt), *args, "--out", str(out)]))
    assert "DamagedDecoder.predict produced NaN or infinite values for 10 of 10 row(s)" in line
    assert not out.exists()


def test_non_finite_embeddings_name_the_prior_and_the_row():
    from cortexflow.models.prior import ImagePrior, PriorConfig
    from cortexflow.training.prior import FittedPrior

    torch.manual_seed(0)
    prior = FittedPrior(ImagePrior(PriorConfig(embed_dim=8, widths=(4, 8, 8))), {"corpus": "miyawaki-patterns"})
    z = np.zeros((4, 8), np.float32)
    z[2, 3] = np.nan
    with pytest.raises(DataValidationError, match=r"'miyawaki-patterns' prior hold NaN or infinite values in 1 of 4 "
                                                  r"row\(s\) \(first: row 2\)"):
        prior.decode_embeddings(z)


# ------------------------------------------------------------------------ a full disk while train writes its checkpoint
def test_disk_full_while_train_writes_the_checkpoint_is_one_line(tmp_path, monkeypatch):
    """The checkpoint write of every method (ridge-prior's included) fails with ENOSPC: one line, no checkpoint."""
    import errno

    import cortexflow.models.checkpoint as checkpoint

    def full(path, data, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", full)
    out = tmp_path / "out"
    line = _err_line(CliRunner().invoke(cli, ["train", "--method", "ridge", "--dataset", str(_file(tmp_path)),
                                              "--out", str(out), "--no-progress"]))
    assert "No space left on device" in line and "ENOSPC" in line and "disk is full" in line
    assert not (out / CHECKPOINT_META).exists() and not (out / CHECKPOINT_WEIGHTS).exists()
