"""Issue 20, items 3 and 5: one error boundary in the CLI, one writer per output folder, bounded reconstruct, EEG outputs."""

from __future__ import annotations

import errno
import gzip
import json
import os
import zlib

import numpy as np
import pytest
from click.testing import CliRunner

from cortexflow.cli._common import describe_error, env_int
from cortexflow.cli.main import cli
from cortexflow.exceptions import ConfigError, CortexFlowError, DataValidationError
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.data.corpora import get_corpus_info
from cortexflow.data.guard import drop_near_duplicates, require_distinct_stimuli
from cortexflow.utils.io import LOCK_NAME, atomic_write_with


def _err_line(res) -> str:
    """The single 'Error: ...' line of a failed command; fails on a traceback or a multi-line message."""
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert "Traceback" not in res.output
    return lines[0]


# ---------------------------------------------------------------- the boundary itself
@pytest.fixture
def failing_command(monkeypatch):
    """`cortexflow datasets fetch x` made to raise ``exc``."""
    import cortexflow.cli.main as main

    def install(exc):
        def boom(*args, **kwargs):
            raise exc
        monkeypatch.setattr(main, "get_dataset_info", boom)
    return install


FAIL = ["datasets", "fetch", "x"]


@pytest.mark.parametrize("exc, needles", [
    (OSError(errno.ENOSPC, "No space left on device", "/out/checkpoint.safetensors"),
     ["/out/checkpoint.safetensors", "No space left", "ENOSPC", "disk is full"]),
    (OSError(errno.EROFS, "Read-only file system", "/ro/x"), ["/ro/x", "read-only"]),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/a/file/b"), ["/a/file/b", "not a folder"]),
    (OSError(errno.ENAMETOOLONG, "File name too long", "/x/" + "a" * 300), ["File name too long", "255"]),
    (PermissionError(errno.EACCES, "Permission denied", "/root/x"), ["/root/x", "permission denied"]),
    (UnicodeDecodeError("utf-8", b"\xe9t\xe9", 0, 1, "invalid continuation byte"), ["utf-8", "0xe9"]),
    (zlib.error("Error -3 while decompressing data: incorrect header check"), ["corrupt", "incorrect header"]),
    (EOFError("Compressed file ended before the end-of-stream marker was reached"), ["truncated"]),
    (ValueError("Found array with 0 sample(s) (shape=(0, 40)) while a minimum of 1 is required by Ridge."),
     ["ValueError", "0 sample(s)"]),
    (TypeError("unhashable type: 'list'"), ["TypeError", "unhashable"]),
    (KeyError("recon_mse"), ["KeyError", "recon_mse"]),
])
def test_foreign_errors_become_one_line(exc, needles, failing_command):
    failing_command(exc)
    line = _err_line(CliRunner().invoke(cli, FAIL))
    for needle in needles:
        assert needle.lower() in line.lower(), line


def test_safetensors_error_is_described():
    from safetensors import SafetensorError

    msg = describe_error(SafetensorError("Error while deserializing header: HeaderTooLarge"))
    assert msg and "safetensors" in msg and "HeaderTooLarge" in msg


def test_debug_flag_and_env_show_the_traceback(failing_command, monkeypatch):
    failing_command(OSError(errno.ENOSPC, "No space left on device", "/out/x"))
    res = CliRunner().invoke(cli, ["--debug", *FAIL])
    assert isinstance(res.exception, OSError)  # re-raised: the traceback reaches the user
    monkeypatch.setenv("CORTEXFLOW_DEBUG", "1")
    res = CliRunner().invoke(cli, FAIL)
    assert isinstance(res.exception, OSError)


def test_a_programming_error_is_not_hidden(failing_command):
    failing_command(AttributeError("'NoneType' object has no attribute 'x'"))
    res = CliRunner().invoke(cli, FAIL)
    assert isinstance(res.exception, AttributeError)


def test_disk_full_during_a_write_is_one_line_and_leaves_nothing(failing_command, tmp_path, monkeypatch):
    """A real write through atomic_write_with that fails with ENOSPC: one line, no partial file."""
    import cortexflow.cli.main as main

    target = tmp_path / "out.json"

    def full(fh):
        fh.write(b"{")
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(main, "get_dataset_info", lambda name: atomic_write_with(target, full))
    line = _err_line(CliRunner().invoke(cli, FAIL))
    assert "No space left" in line and str(target) in line
    assert list(tmp_path.iterdir()) == []  # no .part file, no half-written file


def test_long_path_component_is_one_line(tmp_path):
    long = tmp_path / ("a" * 300 + ".npz")
    line = _err_line(CliRunner().invoke(cli, ["datasets", "info", str(long)]))
    assert "too long" in line.lower()


# ---------------------------------------------------------------- environment variables
@pytest.mark.parametrize("var", ["CORTEXFLOW_NUM_THREADS", "CORTEXFLOW_WORKERS"])
@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5"])
def test_thread_and_worker_variables_are_validated(var, value, monkeypatch):
    monkeypatch.setenv(var, value)
    line = _err_line(CliRunner().invoke(cli, ["datasets", "list"]))
    assert var in line and repr(value) in line
    with pytest.raises(ConfigError, match=var):
        env_int(var)


def test_num_threads_is_applied(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("CORTEXFLOW_NUM_THREADS", "2")
    try:
        assert CliRunner().invoke(cli, ["datasets", "list"]).exit_code == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- plausible inputs
def test_prior_option_of_the_wrong_type_names_the_option():
    for bad in (["mnist-t10k"], {"a": 1}):
        with pytest.raises(ConfigError, match="must be one corpus name"):
            get_corpus_info(bad)


def test_train_prior_list_value_is_one_line(data_dir, tmp_path):
    res = CliRunner().invoke(cli, ["train", "--dataset", "vangerven", "--data-dir", str(data_dir), "--method",
                                   "ridge-prior", "--set", 'prior=["mnist-t10k"]', "--out", str(tmp_path / "o"),
                                   "--no-progress"])
    line = _err_line(res)
    assert "option prior=" in line and "allowed: str" in line and "unhashable" not in line


def test_identical_stimuli_are_refused_by_the_guard():
    s = np.zeros((30, 28, 28), np.float32)
    s[:, 5:9, 5:9] = 1
    with pytest.raises(DataValidationError, match="one and the same image"):
        drop_near_duplicates(np.random.default_rng(0).random((10, 28, 28)), s)
    require_distinct_stimuli(s[:1])  # one stimulus alone is not refused
    s[3, 0, 0] = 0.5
    require_distinct_stimuli(s)


def test_set_without_key_is_refused():
    from cortexflow.cli._common import parse_sets
    import click

    with pytest.raises(click.BadParameter, match="empty KEY"):
        parse_sets(("=3",))


# ---------------------------------------------------------------- MindBigData inputs
def _mw_line(event, code=3, channel="FP1", n=600):
    body = ",".join(str(v) for v in np.random.default_rng(event).integers(-100, 100, n))
    return f"{event}\t{event}\tMW\t{channel}\t{code}\t{n}\t{body}\n"


@pytest.mark.parametrize("name, payload, needle", [
    ("rec.fif", os.urandom(4000), "FIF data, not MindBigData"),
    ("rec.edf", b"0       X X X X" + os.urandom(4000), "EDF data, not MindBigData"),
    ("latin.txt", "1\t1\tMW\tFP1\t3\t2\t1,2 caf\xe9\n".encode("latin-1"), "not UTF-8 text"),
    ("bad.txt.gz", b"this is not gzip at all", "corrupt or truncated gzip"),
    ("cut.txt.gz", gzip.compress(("".join(_mw_line(e) for e in range(40))).encode())[:300], "corrupt or truncated gzip"),
])
def test_mindbigdata_unreadable_files_are_one_line(name, payload, needle, tmp_path):
    src = tmp_path / name
    src.write_bytes(payload)
    line = _err_line(CliRunner().invoke(cli, ["eeg", "mindbigdata", str(src), "--out", str(tmp_path / "o.npz")]))
    assert needle in line and str(src) in line
    assert not (tmp_path / "o.npz").exists()


def test_mindbigdata_with_one_event_is_one_line(tmp_path):
    src = tmp_path / "one.txt"
    src.write_text(_mw_line(1000))
    line = _err_line(CliRunner().invoke(cli, ["eeg", "mindbigdata", str(src), "--out", str(tmp_path / "o.npz")]))
    assert "at least 2" in line


def test_mindbigdata_two_devices_names_the_headset_flag(tmp_path):
    src = tmp_path / "two.txt"
    src.write_text(_mw_line(1000) + _mw_line(1001).replace("\tMW\t", "\tEP\t").replace("\tFP1\t", "\tAF3\t"))
    line = _err_line(CliRunner().invoke(cli, ["eeg", "mindbigdata", str(src), "--out", str(tmp_path / "o.npz")]))
    assert "--headset" in line and "pass device=" not in line


@pytest.fixture
def mw_file(tmp_path):
    src = tmp_path / "mw.txt"
    src.write_text("".join(_mw_line(1000 + i, code=i % 10) for i in range(20)))
    return src


def test_eeg_output_never_replaces_a_users_file(mw_file, tmp_path):
    precious = tmp_path / "precious.npz"
    precious.write_bytes(b"my thesis data")
    line = _err_line(CliRunner().invoke(cli, ["eeg", "mindbigdata", str(mw_file), "--out", str(precious)]))
    assert "exists" in line and "--overwrite" in line
    assert precious.read_bytes() == b"my thesis data"
    res = CliRunner().invoke(cli, ["eeg", "mindbigdata", str(mw_file), "--out", str(precious), "--overwrite"])
    assert res.exit_code == 0, res.output
    with np.load(precious) as z:
        assert "fmriTrn" in z.files


def test_eeg_output_symlink_is_refused(mw_file, tmp_path):
    target = tmp_path / "elsewhere.npz"
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    line = _err_line(CliRunner().invoke(cli, ["eeg", "mindbigdata", str(mw_file), "--out", str(link), "--overwrite"]))
    assert "symbolic link" in line and not target.exists()


def test_atomic_write_without_replace_keeps_an_existing_file(tmp_path):
    p = tmp_path / "f"
    p.write_text("mine")
    with pytest.raises(CortexFlowError, match="refusing to replace"):
        atomic_write_with(p, lambda fh: fh.write(b"new"), replace=False)
    assert p.read_text() == "mine" and sorted(x.name for x in tmp_path.iterdir()) == ["f"]


# ---------------------------------------------------------------- reconstruct
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, make_synthetic, tiny_config):
    X, Y, _ = make_synthetic(n=32, n_features=30, seed=2)
    model = CCCV1Decoder(config=tiny_config, random_state=0, device="cpu").fit(X, Y)
    return model.save(tmp_path_factory.mktemp("ckpt") / "checkpoint"), model


def test_reconstruct_streams_rows_and_caps_the_pngs(checkpoint, tmp_path):
    path, model = checkpoint
    X = np.random.default_rng(0).normal(size=(37, 30)).astype(np.float32)
    inp = tmp_path / "x.npy"
    np.save(inp, X)
    out = tmp_path / "r"
    res = CliRunner().invoke(cli, ["reconstruct", "--checkpoint", str(path), "--input", str(inp), "--out", str(out),
                                   "--chunk-size", "8", "--max-png", "5"])
    assert res.exit_code == 0, res.output
    assert "wrote 37 reconstructions" in res.output and "first 5" in res.output
    pngs = sorted(p.name for p in out.glob("recon_*.png"))
    assert pngs == [f"recon_{i}.png" for i in range(5)]
    got = np.load(out / "reconstructions.npy")
    assert got.shape[0] == 37
    np.testing.assert_allclose(got, model.predict(X), atol=1e-5)  # chunking does not change a row
    assert not list(out.glob(".*.part")) and not (out / LOCK_NAME).exists()
    marker = json.loads((out / ".cortexflow-output.json").read_text())
    assert "reconstructions.npy" in marker["files"] and "recon_5.png" not in marker["files"]


def _hold_lock_in_another_process(folder):
    """A child process that holds the output lock of ``folder`` until it is killed."""
    import subprocess
    import sys

    code = ("import sys, time; from cortexflow.utils.io import acquire_output_lock; "
            "acquire_output_lock(sys.argv[1], 'train'); print('held', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert child.stdout.readline().strip() == "held"
    return child


@pytest.mark.parametrize("command", ["reconstruct", "train"])
def test_second_writer_of_an_output_folder_is_refused(command, checkpoint, tmp_path, user_file):
    path, _ = checkpoint
    inp = tmp_path / "x.npy"
    np.save(inp, np.random.default_rng(0).normal(size=(3, 30)).astype(np.float32))
    out = tmp_path / "r"
    args = {"reconstruct": ["reconstruct", "--checkpoint", str(path), "--input", str(inp), "--out", str(out)],
            "train": ["train", "--method", "cccv1", "--dataset", str(user_file), "--out", str(out), "--set", "epochs=1", "--no-progress"]}
    child = _hold_lock_in_another_process(out)
    try:
        line = _err_line(CliRunner().invoke(cli, args[command]))
    finally:
        child.kill()
        child.wait()
    assert "another cortexflow process" in line
    assert not (out / "reconstructions.npy").exists() and not (out / "checkpoint").exists()
    if command == "reconstruct":  # the other writer has gone: this run may write
        res = CliRunner().invoke(cli, args[command])
        assert res.exit_code == 0, res.output
        assert not (out / LOCK_NAME).exists()  # released when the command ended


def test_a_failed_command_leaves_no_folder_behind_its_lock(checkpoint, tmp_path):
    path, _ = checkpoint
    inp = tmp_path / "x.npy"
    np.save(inp, np.full((3, 30), np.nan, np.float32))
    out = tmp_path / "r"
    _err_line(CliRunner().invoke(cli, ["reconstruct", "--checkpoint", str(path), "--input", str(inp), "--out", str(out)]))
    assert not out.exists()


@pytest.fixture(scope="module")
def user_file(tmp_path_factory, make_synthetic):
    X, Y, _ = make_synthetic(n=40, n_features=30, seed=1)
    path = tmp_path_factory.mktemp("data") / "subject.npz"
    np.savez(path, fmriTrn=X[:32], stimTrn=Y[:32], fmriTest=X[32:], stimTest=Y[32:])
    return path


@pytest.mark.parametrize("arrays, needle", [
    ({"X": np.zeros((3, 30)), "fmriTest": np.zeros((3, 30)), "signals": np.zeros((3, 30))}, "several signal arrays"),
    ({"fmriTest": np.zeros((3, 30)), "FMRITEST": np.ones((3, 30))}, "differ only in case"),
    ({"fmriTest": np.random.default_rng(0).normal(size=(30, 10))}, "looks transposed"),
    ({"fmriTest": np.random.default_rng(0).random((4, 30)) > 0.5}, "boolean"),
])
def test_reconstruct_ambiguous_or_odd_inputs_are_one_line(arrays, needle, checkpoint, tmp_path):
    path, _ = checkpoint
    inp = tmp_path / "in.npz"
    np.savez(inp, **arrays)
    line = _err_line(CliRunner().invoke(cli, ["reconstruct", "--checkpoint", str(path), "--input", str(inp), "--out",
                                              str(tmp_path / "r")]))
    assert needle in line
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- datasets info
def test_datasets_info_reports_test_signals_copied_from_training(tmp_path, caplog):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 20)).astype(np.float32)
    Y = rng.random((12, 784)).astype(np.float32)
    test_X = np.concatenate([X[:3], rng.normal(size=(2, 20)).astype(np.float32)])  # 3 rows copied from training
    p = tmp_path / "leak.npz"
    np.savez(p, fmriTrn=X, stimTrn=Y, fmriTest=test_X, stimTest=rng.random((5, 784)).astype(np.float32))
    res = CliRunner().invoke(cli, ["datasets", "info", str(p), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["n_test_signals_in_train"] == 3 and info["n_test_seen_in_train"] == 0
    assert any("exact copies of training rows" in c for c in info["caveats"])


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs (root only): a real full disk."""
    import subprocess

    mnt = tmp_path / "full"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (no privilege in this container)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_reconstruct_on_a_full_disk_is_one_line_and_half_writes_nothing(checkpoint, tmp_path, tiny_tmpfs):
    path, _ = checkpoint
    inp = tmp_path / "x.npy"
    np.save(inp, np.random.default_rng(0).normal(size=(200, 30)).astype(np.float32))  # 627 KB of output
    out = tiny_tmpfs / "r"
    line = _err_line(CliRunner().invoke(cli, ["reconstruct", "--checkpoint", str(path), "--input", str(inp),
                                              "--out", str(out), "--max-png", "0", "--chunk-size", "16"]))
    assert "No space left on device" in line and "ENOSPC" in line
    assert not out.exists() or not [p for p in out.iterdir() if p.suffix in (".npy", ".part")]
