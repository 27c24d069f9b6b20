"""Shared fixtures of the CortexFlow test suite.

* ``data_dir`` (alias ``DATA_DIR``): the folder of real dataset files, from
  ``$CORTEXFLOW_DATA`` or ``<repo>/../shared/datasets``; tests that need it are
  skipped cleanly when it is absent.
* An autouse fixture isolates every test: ``HOME`` and ``XDG_CACHE_HOME`` point
  into the test's temporary folder (no test touches the user's home or cache),
  progress bars are off, ``$CORTEXFLOW_MIRROR`` points at a closed loopback
  port (an accidental download fails at once instead of reaching the network),
  and PyTorch uses ``$CORTEXFLOW_TEST_THREADS`` intra-op threads (default 1: on
  a small shared CI machine more threads make tiny networks several times
  slower).
* ``tiny_config`` and ``make_synthetic`` give fast model tests.
* ``loopback_mirror``: the data folder served over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _loopback import serve_folder

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "datasets"
# Captured at import time, before any fixture rewrites the environment.
_DATA_DIR = Path(os.environ.get("CORTEXFLOW_DATA") or DEFAULT_DATA_DIR).expanduser()
_TEST_THREADS = int(os.environ.get("CORTEXFLOW_TEST_THREADS", "1"))
torch.set_num_threads(_TEST_THREADS)  # also for session- and module-scoped fixtures
# A loopback URL on which nothing listens (port 9, "discard", is closed on CI machines).
CLOSED_MIRROR = "http://127.0.0.1:9"


def has_dataset(name: str, data_dir: Path = _DATA_DIR) -> bool:
    """True when ``<data_dir>/<name>/`` holds the registered file."""
    from cortexflow.data.registry import DATASETS

    return (data_dir / name / DATASETS[name].filename).is_file()


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("CORTEXFLOW_PROGRESS", "0")
    monkeypatch.setenv("CORTEXFLOW_MIRROR", CLOSED_MIRROR)
    if _DATA_DIR.is_dir():
        monkeypatch.setenv("CORTEXFLOW_DATA", str(_DATA_DIR))
    else:
        monkeypatch.setenv("CORTEXFLOW_DATA", str(home / "no-data"))
    if torch.get_num_threads() != _TEST_THREADS:  # another test changed it
        torch.set_num_threads(_TEST_THREADS)
    yield


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder of the real dataset files; skips the test when it is absent."""
    if not _DATA_DIR.is_dir():
        pytest.skip(f"dataset folder {_DATA_DIR} not found (set CORTEXFLOW_DATA)")
    return _DATA_DIR


@pytest.fixture(scope="session")
def DATA_DIR(data_dir) -> Path:  # noqa: N802 - the name the test plan uses
    """Alias of :func:`data_dir`."""
    return data_dir


def _load(name: str, data_dir: Path):
    from cortexflow.data.loading import load_dataset

    if not has_dataset(name, data_dir):
        pytest.skip(f"{name} not found under {data_dir}")
    return load_dataset(name, data_dir, download=False)


@pytest.fixture(scope="session")
def vangerven(data_dir):
    """The vangerven dataset (shared: copy before modifying)."""
    return _load("vangerven", data_dir)


@pytest.fixture(scope="session")
def miyawaki(data_dir):
    """The miyawaki dataset (shared: copy before modifying)."""
    return _load("miyawaki", data_dir)


@pytest.fixture(scope="session")
def tiny_config():
    """A CCCV1Config that trains in well under a second on a CPU."""
    from cortexflow.training.config import get_config

    return get_config("small").replace(epochs=5, patience=3, hidden_dim=64, embed_dim=32, batch_size=8)


def synthetic_data(n: int = 40, n_features: int = 30, seed: int = 0, noise: float = 0.1):
    """Signals that carry the image: each row of X is a noisy linear code of one of 4 blobs.

    Returns
    -------
    X : ndarray (n, n_features) float32
    Y : ndarray (n, 28, 28) float32 in [0, 1]
    labels : ndarray (n,) int
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    centres = [(8, 8), (8, 20), (20, 8), (20, 20)]
    protos = np.stack([np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0) for cy, cx in centres]).astype(np.float32)
    labels = np.arange(n) % len(centres)
    rng.shuffle(labels)
    codes = rng.normal(size=(len(centres), n_features))
    X = codes[labels] + noise * rng.normal(size=(n, n_features))
    return X.astype(np.float32), protos[labels], labels


@pytest.fixture(scope="session")
def make_synthetic():
    """The :func:`synthetic_data` generator."""
    return synthetic_data


@pytest.fixture
def loopback_mirror(data_dir):
    """Serve the data folder at ``http://127.0.0.1:<free port>`` for the test's duration; yield the URL."""
    with serve_folder(data_dir) as url:
        yield url
