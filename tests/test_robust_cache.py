"""Issue 20, item 1: a verified cache (priors, generated corpora, embeddings), one lock per entry, the chosen cache folder."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import threading
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from cortexflow.cli.main import cli
from cortexflow.exceptions import ConfigError, CortexFlowError
from cortexflow.priors import PriorConfig, get_prior, load_corpus
from cortexflow.data import corpora
from cortexflow.training import prior as training
from cortexflow.training.prior import TRAINING_COUNTER
from cortexflow.semantic.cache import cache_path, embed_images, images_checksum
from cortexflow.semantic.encoders import PixelEncoder

TINY = PriorConfig(embed_dim=8, widths=(4, 8, 8), epochs=1, batch_size=32, max_images=120)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CORTEXFLOW_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def small_patterns(monkeypatch):
    """miyawaki-patterns with 60 images (a generated corpus that generates in milliseconds)."""
    info = dataclasses.replace(corpora.CORPORA["miyawaki-patterns"], n_images=60,
                               params={"n_random": 30, "n_shapes": 30, "seed": 0})
    monkeypatch.setitem(corpora.CORPORA, "miyawaki-patterns", info)
    return info


def _state(prior):
    return {k: v.clone() for k, v in prior.model.state_dict().items()}


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


# ---------------------------------------------------------------- prior entries
def _overwrite_4k(entry):
    w = entry / "weights.safetensors"
    raw = bytearray(w.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 4096] = os.urandom(min(4096, len(raw) - len(raw) // 2))
    w.write_bytes(bytes(raw))


def _truncate(entry):
    w = entry / "weights.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 3])


def _scale(entry, factor=1.5):
    w = entry / "weights.safetensors"
    state = load_file(str(w))
    save_file({k: v * factor if v.is_floating_point() else v for k, v in state.items()}, str(w))


def _nan_tensor(entry):
    w = entry / "weights.safetensors"
    state = load_file(str(w))
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name][0] = float("nan")
    save_file(state, str(w))


def _nan_tensor_with_forged_hashes(entry):
    """A NaN tensor whose sha256 (and prior.json's own) were recomputed: the finiteness check still refuses it."""
    _nan_tensor(entry)
    meta = json.loads((entry / "prior.json").read_text())
    meta["weights_sha256"] = training.sha256_bytes((entry / "weights.safetensors").read_bytes())
    meta["meta_sha256"] = training._meta_hash(meta)
    (entry / "prior.json").write_text(json.dumps(meta))


def _edit_meta(entry):
    meta = json.loads((entry / "prior.json").read_text())
    meta["info"]["n_images"] = 10000
    meta["config"]["epochs"] = 8
    (entry / "prior.json").write_text(json.dumps(meta))


def _drop_meta_key(entry):
    meta = json.loads((entry / "prior.json").read_text())
    del meta["info"]["recon_mse"]
    (entry / "prior.json").write_text(json.dumps(meta))


def _not_json(entry):
    (entry / "prior.json").write_bytes(b"\xff\xfe{not json")


TAMPERS = [_overwrite_4k, _truncate, _scale, _nan_tensor, _nan_tensor_with_forged_hashes, _edit_meta, _drop_meta_key,
           _not_json]


@pytest.fixture(scope="module")
def clean_prior(tmp_path_factory, data_dir):
    if not (data_dir / "priors" / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("mnist-t10k files not found in the data folder")
    root = tmp_path_factory.mktemp("clean-cache")
    prior = get_prior("mnist-t10k", config=TINY, data_dir=data_dir, cache_dir=root)
    return prior, _state(prior), root


@pytest.mark.parametrize("tamper", TAMPERS, ids=lambda f: f.__name__.strip("_"))
def test_tampered_prior_entry_is_rebuilt_never_used(tamper, clean_prior, data_dir, tmp_path, caplog):
    prior, clean, root = clean_prior
    cache = tmp_path / "c"
    shutil.copytree(root, cache)
    entry = cache / prior.path.relative_to(root)
    assert get_prior("mnist-t10k", config=TINY, data_dir=data_dir, cache_dir=cache).info["from_cache"]
    tamper(entry)
    before = TRAINING_COUNTER["trainings"]
    with caplog.at_level(logging.WARNING, logger="cortexflow.training.prior"):
        again = get_prior("mnist-t10k", config=TINY, data_dir=data_dir, cache_dir=cache)
    assert not again.info["from_cache"] and TRAINING_COUNTER["trainings"] == before + 1
    assert any("damaged or unreadable" in r.getMessage() for r in caplog.records)
    _assert_same_weights(_state(again), clean)  # the rebuilt prior equals a clean one
    assert again.info["n_images"] == prior.info["n_images"]
    # the rebuilt entry is intact again: the next call reads it
    third = get_prior("mnist-t10k", config=TINY, data_dir=data_dir, cache_dir=cache)
    assert third.info["from_cache"]
    _assert_same_weights(_state(third), clean)


def test_swapped_prior_entries_are_both_rebuilt(clean_prior, data_dir, tmp_path):
    prior, clean, root = clean_prior
    cache = tmp_path / "c"
    shutil.copytree(root, cache)
    other_cfg = TINY.replace(seed=3, max_images=60)
    other = get_prior("mnist-t10k", config=other_cfg, data_dir=data_dir, cache_dir=cache)
    other_clean = _state(other)
    a, b = cache / prior.path.relative_to(root), other.path
    # the weights files swapped
    wa, wb = (a / "weights.safetensors").read_bytes(), (b / "weights.safetensors").read_bytes()
    (a / "weights.safetensors").write_bytes(wb)
    (b / "weights.safetensors").write_bytes(wa)
    first = get_prior("mnist-t10k", config=TINY, data_dir=data_dir, cache_dir=cache)
    second = get_prior("mnist-t10k", config=other_cfg, data_dir=data_dir, cache_dir=cache)
    assert not first.info["from_cache"] and not second.info["from_cache"]
    _assert_same_weights(_state(first), clean)
    _assert_same_weights(_state(second), other_clean)
    # whole entries (weights and prior.json) swapped: each belongs to the other's cache key
    tmp = a.parent / "tmp-swap"
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    first = get_prior("mnist-t10k", config=TINY, data_dir=data_dir, cache_dir=cache)
    second = get_prior("mnist-t10k", config=other_cfg, data_dir=data_dir, cache_dir=cache)
    assert not first.info["from_cache"] and not second.info["from_cache"]
    assert first.info["n_images"] == 120 and second.info["n_images"] == 60
    _assert_same_weights(_state(first), clean)


def test_cli_prior_info_skips_an_edited_entry(clean_prior, data_dir, tmp_path):
    prior, _, root = clean_prior
    cache = tmp_path / "c"
    shutil.copytree(root, cache)
    _drop_meta_key(cache / prior.path.relative_to(root))
    res = CliRunner().invoke(cli, ["prior", "info", "mnist-t10k", "--data-dir", str(data_dir), "--cache-dir", str(cache)])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output and "no trained prior" in res.output


def test_concurrent_trainings_of_one_prior_train_once(clean_prior, data_dir, tmp_path, monkeypatch):
    _, clean, _ = clean_prior
    real = training.train_prior

    def slow(*args, **kwargs):
        time.sleep(0.6)  # long enough for the second caller to find no entry and wait for the lock
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_prior", slow)
    cache, results, errors = tmp_path / "c", [], []

    def run():
        try:
            results.append(get_prior("mnist-t10k", config=TINY, data_dir=data_dir, cache_dir=cache))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    before = TRAINING_COUNTER["trainings"]
    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 2
    assert TRAINING_COUNTER["trainings"] == before + 1
    assert sorted(r.info["from_cache"] for r in results) == [False, True]
    for r in results:
        _assert_same_weights(_state(r), clean)


# ---------------------------------------------------------------- cache folders
def test_cache_root_that_is_a_file_is_refused_before_training(clean_prior, data_dir, tmp_path):
    before = TRAINING_COUNTER["trainings"]
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CortexFlowError, match="not a folder"):
        get_prior("mnist-t10k", config=TINY, data_dir=data_dir, cache_dir=f)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "priors").write_text("x")
    with pytest.raises(CortexFlowError, match="not a folder"):
        get_prior("mnist-t10k", config=TINY, data_dir=data_dir, cache_dir=tmp_path / "c")
    assert TRAINING_COUNTER["trainings"] == before


def test_cli_cache_that_is_a_file_is_one_line(clean_prior, data_dir, tmp_path, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    monkeypatch.setenv("CORTEXFLOW_CACHE", str(f))
    before = TRAINING_COUNTER["trainings"]
    res = CliRunner().invoke(cli, ["prior", "train", "--corpus", "mnist-t10k", "--embed-dim", "8", "--epochs", "1",
                                   "--max-images", "40", "--data-dir", str(data_dir), "--no-progress"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.strip().startswith("Error:") and "not a folder" in res.output
    assert TRAINING_COUNTER["trainings"] == before


def test_read_only_cache_is_refused_before_training(clean_prior, data_dir, tmp_path, monkeypatch):
    """By permissions where the tests are not root, else by a patched write that fails with EROFS."""
    import errno
    import tempfile

    before = TRAINING_COUNTER["trainings"]
    cache = tmp_path / "ro"
    cache.mkdir()
    if os.geteuid() != 0:
        cache.chmod(0o555)
    else:
        real = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):
            if dir is not None and str(dir).startswith(str(cache)):
                raise OSError(errno.EROFS, "Read-only file system")
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    try:
        with pytest.raises(CortexFlowError, match="not writable"):
            get_prior("mnist-t10k", config=TINY, data_dir=data_dir, cache_dir=cache)
    finally:
        cache.chmod(0o755)
    assert TRAINING_COUNTER["trainings"] == before


def test_prior_train_cache_dir_is_honoured_for_generated_corpora(small_patterns, tmp_path, monkeypatch):
    monkeypatch.delenv("CORTEXFLOW_CACHE", raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    chosen = tmp_path / "chosen"
    res = CliRunner().invoke(cli, ["prior", "train", "--corpus", "miyawaki-patterns", "--embed-dim", "8", "--epochs", "1",
                                   "--cache-dir", str(chosen), "--no-progress", "--json"])
    assert res.exit_code == 0, res.output
    assert list((chosen / "corpora").glob("miyawaki-patterns-*.npz"))
    assert list((chosen / "priors" / "miyawaki-patterns").glob("*/prior.json"))
    assert not (home / ".cache").exists()  # nothing written outside the chosen cache folder


# ---------------------------------------------------------------- generated corpora
def _corpus_file(cache):
    files = list((cache / "corpora").glob("miyawaki-patterns-*.npz"))
    assert len(files) == 1
    return files[0]


def _replace_images(path, images):
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    d["images"] = images.astype(np.float32)
    np.savez(path, **d)


@pytest.mark.parametrize("damage", ["constant", "one_pixel", "truncate", "garbage", "nan"])
def test_damaged_generated_corpus_is_generated_again(damage, small_patterns, cache, caplog):
    clean = load_corpus("miyawaki-patterns")
    path = _corpus_file(cache)
    if damage == "constant":
        _replace_images(path, np.full_like(clean.images, 0.5))
    elif damage == "one_pixel":
        im = clean.images.copy()
        im[3, 10, 10] = 1 - im[3, 10, 10]
        _replace_images(path, im)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 4096)
    else:
        im = clean.images.copy()
        im[0, 0, 0] = np.nan
        _replace_images(path, im)
    with caplog.at_level(logging.WARNING, logger="cortexflow.data.corpora"):
        again = load_corpus("miyawaki-patterns")
    assert any("damaged or unreadable" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(again.images, clean.images)
    assert again.checksum == clean.checksum
    # and the copy written again is intact: read without a warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cortexflow.data.corpora"):
        np.testing.assert_array_equal(load_corpus("miyawaki-patterns").images, clean.images)
    assert not caplog.records


def test_generated_corpus_checksum_covers_its_images(small_patterns, cache):
    c = load_corpus("miyawaki-patterns")
    assert c.checksum == corpora.content_checksum(c.images, c.labels)
    assert c.checksum != corpora.content_checksum(np.full_like(c.images, 0.5), c.labels)


# ---------------------------------------------------------------- embeddings
class _Counting(PixelEncoder):
    def __init__(self):
        super().__init__()
        self.name = "counting-pixels"
        self.calls = 0

    def _encode_batch(self, images, layers):
        self.calls += 1
        return super()._encode_batch(images, layers)


def _rewrite_npz(path, **changes):
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    d.update(changes)
    np.savez(path, **d)


@pytest.mark.parametrize("damage", ["scaled", "nan", "truncate", "swap"])
def test_damaged_embedding_entry_is_recomputed(damage, cache, caplog):
    enc = _Counting()
    rng = np.random.default_rng(0)
    imgs, other = rng.uniform(size=(2, 5, 28, 28)).astype(np.float32)
    clean = embed_images(imgs, enc)["final"]
    path = cache_path(enc, images_checksum(imgs))
    if damage == "scaled":
        with np.load(path) as z:
            _rewrite_npz(path, final=z["final"] * 1.5)
    elif damage == "nan":
        with np.load(path) as z:
            bad = z["final"].copy()
        bad[0, 0] = np.nan
        _rewrite_npz(path, final=bad)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:300])
    else:
        embed_images(other, enc)
        shutil.copyfile(cache_path(enc, images_checksum(other)), path)
    calls = enc.calls
    with caplog.at_level(logging.WARNING, logger="cortexflow.semantic.cache"):
        again = embed_images(imgs, enc)["final"]
    assert enc.calls == calls + 1 and any("damaged or unreadable" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(again, clean)
    embed_images(imgs, enc)
    assert enc.calls == calls + 1  # the rewritten entry is intact


# ---------------------------------------------------------------- prior train options (issue 20, minor)
@pytest.mark.parametrize("args, needle", [
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**70)], "--seed"),
    (["--embed-dim", "100000"], "--embed-dim"),
    (["--max-images", "0"], "--max-images"),
])
def test_prior_train_refuses_out_of_range_options(args, needle, cache):
    res = CliRunner().invoke(cli, ["prior", "train", "--corpus", "miyawaki-patterns", "--no-progress", *args])
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("field, value", [("seed", -1), ("seed", 2**70), ("embed_dim", 100_000), ("epochs", 1.5),
                                          ("seed", True), ("embed_dim", float("nan"))])
def test_prior_config_refuses_out_of_range_values(field, value):
    with pytest.raises(ConfigError, match=field):
        PriorConfig(**{field: value})


def test_disk_full_while_caching_a_prior_keeps_the_trained_prior(clean_prior, data_dir, tmp_path, monkeypatch, caplog):
    import errno

    _, clean, _ = clean_prior

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(training, "atomic_write_bytes", full)
    cache = tmp_path / "c"
    with caplog.at_level(logging.WARNING, logger="cortexflow.training.prior"):
        prior = get_prior("mnist-t10k", config=TINY, data_dir=data_dir, cache_dir=cache)
    assert prior.path is None and not prior.info["from_cache"]
    assert any("could not write prior cache entry" in r.getMessage() for r in caplog.records)
    _assert_same_weights(_state(prior), clean)
    assert not list(cache.rglob("weights.safetensors")) and not list(cache.rglob("*.part"))
