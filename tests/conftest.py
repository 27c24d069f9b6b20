"""Shared fixtures of the CortexFlow test suite.

* ``data_dir`` (alias ``DATA_DIR``): a folder that holds the registered data
  files the suite reads (:data:`TEST_DATASETS`). It is ``$CORTEXFLOW_DATA`` (or
  ``<repo>/../shared/datasets``, the CI layout) when that folder holds them;
  otherwise the per-user cache of :func:`cortexflow.data.fetch.get_data_dir`,
  filled once through the project's own checksummed :func:`fetch_dataset`
  when the network answers (probed once per session, in a few seconds). With
  neither, every test that needs the files is skipped with one reason; no test
  fails because data are absent.
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

import functools
import os
import socket
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pooch
import pytest
import torch
from _loopback import serve_folder

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "datasets"
# Captured at import time, before any fixture rewrites the environment.
_DATA_DIR = Path(os.environ.get("CORTEXFLOW_DATA") or DEFAULT_DATA_DIR).expanduser()
# The per-user cache (``cortexflow datasets fetch`` without a data folder writes here too).
_USER_CACHE = Path(pooch.os_cache("cortexflow"))
_USER_MIRROR = os.environ.get("CORTEXFLOW_MIRROR", "")
# The registered files that the suite reads.
TEST_DATASETS = ("vangerven", "miyawaki", "crell", "mindbigdata", "mindbigdata-mw-sample")
NETWORK_PROBE_SECONDS = 3.0
_TEST_THREADS = int(os.environ.get("CORTEXFLOW_TEST_THREADS", "1"))
# computed artefacts (generated corpora, tiny priors, embeddings) go to a throw-away folder, never the user's cache
os.environ.setdefault("CORTEXFLOW_CACHE", tempfile.mkdtemp(prefix="cortexflow-test-cache-"))
torch.set_num_threads(_TEST_THREADS)  # also for session- and module-scoped fixtures
# A loopback URL on which nothing listens (port 9, "discard", is closed on CI machines).
CLOSED_MIRROR = "http://127.0.0.1:9"


def has_dataset(name: str, data_dir: Path = _DATA_DIR) -> bool:
    """True when ``<data_dir>/<folder>/`` (the dataset's registry folder) holds the registered file."""
    from cortexflow.data.registry import DATASETS

    return (data_dir / DATASETS[name].directory / DATASETS[name].filename).is_file()


def _local_data_dir() -> Path | None:
    """The first of ``$CORTEXFLOW_DATA`` and the user cache that holds every test file, else None."""
    for folder in (_DATA_DIR, _USER_CACHE):
        if all(has_dataset(name, folder) for name in TEST_DATASETS):
            return folder
    return None


@functools.lru_cache(maxsize=None)
def network_reachable(url: str, timeout: float = NETWORK_PROBE_SECONDS) -> bool:
    """True when a TCP connection to ``url``'s host opens within ``timeout`` seconds (asked once per URL).

    Name resolution runs in a daemon thread, so a resolver that hangs costs
    ``timeout`` seconds, not minutes.
    """
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((parts.hostname, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


@functools.lru_cache(maxsize=None)
def _resolve_data_dir() -> tuple[Path | None, str]:
    """(folder holding :data:`TEST_DATASETS`, "") or (None, why not); fetches into the user cache once."""
    from cortexflow.data.fetch import fetch_dataset
    from cortexflow.data.registry import DATASETS
    from cortexflow.exceptions import CortexFlowError

    folder = _local_data_dir()
    if folder is not None:
        return folder, ""
    source = _USER_MIRROR or DATASETS[TEST_DATASETS[0]].url
    if not network_reachable(source):
        return None, (
            f"registered data files not found in {_DATA_DIR} (set CORTEXFLOW_DATA) nor in the user cache "
            f"{_USER_CACHE}, and {urlsplit(source).hostname} is not reachable to fetch them"
        )
    try:
        for name in TEST_DATASETS:
            fetch_dataset(name, _USER_CACHE, mirror=_USER_MIRROR, progress=False, timeout=15)
    except CortexFlowError as exc:
        return None, f"fetching the test data files into {_USER_CACHE} failed: {exc}"
    return _USER_CACHE, ""


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("CORTEXFLOW_PROGRESS", "0")
    monkeypatch.setenv("CORTEXFLOW_MIRROR", CLOSED_MIRROR)
    local = _local_data_dir()
    if local is not None:
        monkeypatch.setenv("CORTEXFLOW_DATA", str(local))
    elif _DATA_DIR.is_dir():
        monkeypatch.setenv("CORTEXFLOW_DATA", str(_DATA_DIR))
    else:
        monkeypatch.setenv("CORTEXFLOW_DATA", str(home / "no-data"))
    if torch.get_num_threads() != _TEST_THREADS:  # another test changed it
        torch.set_num_threads(_TEST_THREADS)
    yield


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder holding the registered test data files (fetched once if needed); skips when unavailable."""
    folder, why = _resolve_data_dir()
    if folder is None:
        pytest.skip(why)
    return folder


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
