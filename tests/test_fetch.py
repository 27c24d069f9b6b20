"""Fetching datasets over a loopback HTTP server: download, cache, checksum, broken transfers.

No test here reaches the network: every URL is ``http://127.0.0.1:<port>``.
"""

from __future__ import annotations

import shutil
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from _loopback import serve, serve_folder

from cortexflow.data.fetch import DATA_ENV, fetch_dataset, get_data_dir
from cortexflow.data.registry import DATASETS
from cortexflow.exceptions import ChecksumError, ConfigError, CortexFlowError
from cortexflow.utils.io import sha256_file

NAME = "crell"  # the smallest registered file (1.2 MB)


class _HalfFileHandler(BaseHTTPRequestHandler):
    """Announces the whole file in Content-Length, sends half of it, then hangs up."""

    payload: bytes = b""

    def do_GET(self):  # noqa: N802 - http.server API
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload[: len(self.payload) // 2])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


def all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture
def source_file(data_dir) -> Path:
    path = data_dir / NAME / DATASETS[NAME].filename
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def test_fresh_download_then_cached_reuse_without_server(data_dir, source_file, tmp_path):
    dest_root = tmp_path / "data"
    with serve_folder(data_dir) as url:
        path = fetch_dataset(NAME, dest_root, mirror=url, progress=False)
    assert path == dest_root / NAME / DATASETS[NAME].filename
    assert sha256_file(path) == DATASETS[NAME].sha256
    assert path.read_bytes() == source_file.read_bytes()
    assert all_files(dest_root) == [path]  # no temporary files left beside it

    mtime = path.stat().st_mtime_ns
    # the server is gone: a second call must be served from the cache
    again = fetch_dataset(NAME, dest_root, mirror=url, progress=False)
    assert again == path and path.stat().st_mtime_ns == mtime


def test_stale_cached_file_is_replaced(data_dir, source_file, tmp_path):
    dest = tmp_path / "data" / NAME / DATASETS[NAME].filename
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"not the dataset")
    with serve_folder(data_dir) as url:
        path = fetch_dataset(NAME, tmp_path / "data", mirror=url, progress=False)
    assert path == dest and sha256_file(dest) == DATASETS[NAME].sha256


def test_checksum_mismatch_leaves_nothing(source_file, tmp_path):
    mirror = tmp_path / "mirror"
    bad = mirror / NAME / DATASETS[NAME].filename
    bad.parent.mkdir(parents=True)
    data = bytearray(source_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    bad.write_bytes(bytes(data))
    dest_root = tmp_path / "data"
    with serve_folder(mirror) as url, pytest.raises(ChecksumError) as err:
        fetch_dataset(NAME, dest_root, mirror=url, progress=False)
    msg = str(err.value)
    assert NAME in msg and DATASETS[NAME].sha256 in msg and url in msg
    assert all_files(dest_root) == []
    assert not list(tmp_path.rglob("*.part"))
    assert isinstance(err.value, CortexFlowError)


def test_server_stopping_mid_file_leaves_nothing(source_file, tmp_path):
    handler = type("Half", (_HalfFileHandler,), {"payload": source_file.read_bytes()})
    dest_root = tmp_path / "data"
    with serve(handler) as url, pytest.raises(CortexFlowError) as err:
        fetch_dataset(NAME, dest_root, mirror=url, progress=False, timeout=10)
    assert NAME in str(err.value) and url in str(err.value)
    assert all_files(dest_root) == []
    assert not list(tmp_path.rglob("*.part"))


def test_missing_file_on_mirror_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with serve_folder(tmp_path / "empty") as url, pytest.raises(CortexFlowError, match="404|Not Found"):
        fetch_dataset(NAME, tmp_path / "data", mirror=url, progress=False)
    assert all_files(tmp_path / "data") == []


def test_unknown_dataset_names_the_registered_ones(tmp_path):
    with pytest.raises(ConfigError) as err:
        fetch_dataset("nope", tmp_path)
    assert "'nope'" in str(err.value)
    for name in DATASETS:
        assert name in str(err.value)


def test_data_dir_resolution_order(tmp_path, monkeypatch):
    arg, env = tmp_path / "arg", tmp_path / "env"
    monkeypatch.setenv(DATA_ENV, str(env))
    assert get_data_dir(arg) == arg  # argument first
    assert get_data_dir() == env  # then $CORTEXFLOW_DATA
    monkeypatch.delenv(DATA_ENV)
    cache = get_data_dir()  # then the user cache, which conftest moved into a temporary HOME
    import os

    assert cache.is_relative_to(Path(os.environ["XDG_CACHE_HOME"]))
    assert "cortexflow" in cache.parts


def test_fetch_writes_where_resolution_says(data_dir, source_file, tmp_path, monkeypatch):
    import os

    arg, env = tmp_path / "arg", tmp_path / "env"
    fname = DATASETS[NAME].filename
    with serve_folder(data_dir) as url:
        monkeypatch.setenv(DATA_ENV, str(env))
        assert fetch_dataset(NAME, arg, mirror=url, progress=False) == arg / NAME / fname
        assert not env.exists()
        assert fetch_dataset(NAME, mirror=url, progress=False) == env / NAME / fname
        monkeypatch.delenv(DATA_ENV)
        cached = fetch_dataset(NAME, mirror=url, progress=False)
    assert cached.is_relative_to(Path(os.environ["XDG_CACHE_HOME"]))
    for p in (arg / NAME / fname, env / NAME / fname, cached):
        assert sha256_file(p) == DATASETS[NAME].sha256


def test_mirror_from_environment(data_dir, source_file, tmp_path, monkeypatch):
    with serve_folder(data_dir) as url:
        monkeypatch.setenv("CORTEXFLOW_MIRROR", url + "/")
        path = fetch_dataset(NAME, tmp_path, progress=False)
    assert sha256_file(path) == DATASETS[NAME].sha256


def test_copy_of_shared_folder_needs_no_network(source_file, tmp_path):
    # a data folder laid out like the shared one is used as is (mirror points at a closed port)
    dest = tmp_path / NAME / DATASETS[NAME].filename
    dest.parent.mkdir()
    shutil.copy(source_file, dest)
    assert fetch_dataset(NAME, tmp_path, progress=False) == dest


def test_data_sets_and_corpus_files_are_one_pinned_type_fetched_by_one_path(tmp_path, monkeypatch):
    """``DatasetInfo.file`` and the corpus files are PinnedFile; both download through ``ensure_pinned_file``."""
    from cortexflow.data import corpora, fetch
    from cortexflow.data.pinned import PinnedFile

    info = DATASETS["vangerven"]
    assert isinstance(info.file, PinnedFile) and info.file.url == info.url and info.file.sha256 == info.sha256
    files = corpora.get_corpus_info("mnist-t10k").files
    assert corpora.CorpusFile is PinnedFile and all(isinstance(f, PinnedFile) for f in files)
    assert corpora.get_corpus_info("mnist-t10k").to_dict()["files"][0]["url"] == files[0].url
    seen = []

    def refuse(url, dest, sha256, *, label, **kwargs):
        seen.append((url, Path(dest).name, sha256, label))
        raise CortexFlowError(f"download of {label} refused by the test")

    monkeypatch.setattr(fetch, "download_verified", refuse)
    monkeypatch.delenv("CORTEXFLOW_MIRROR", raising=False)
    with pytest.raises(CortexFlowError, match="refused by the test"):
        fetch_dataset("vangerven", tmp_path / "d")
    with pytest.raises(CortexFlowError, match="refused by the test"):
        corpora.load_corpus("mnist-t10k", tmp_path / "c", download=True, cache_dir=tmp_path / "cache")
    assert seen[0] == (info.url, info.filename, info.sha256, "dataset 'vangerven'")
    assert seen[1][:3] == (files[0].url, files[0].filename, files[0].sha256)
    assert not (tmp_path / "d").exists() and not (tmp_path / "c" / "priors").exists()
