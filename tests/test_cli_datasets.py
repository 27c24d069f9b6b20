"""``cortexflow datasets list | fetch | info`` through click's CliRunner."""

from __future__ import annotations

import json

import pytest
import scipy.io
from click.testing import CliRunner

from cortexflow.cli.main import cli
from cortexflow.data.registry import DATASETS
from cortexflow.utils.io import sha256_file


@pytest.fixture
def runner():
    return CliRunner()


def info_json(runner, *args) -> dict:
    res = runner.invoke(cli, ["datasets", "info", *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_info_vangerven(runner, data_dir):
    info = info_json(runner, "vangerven", "--data-dir", str(data_dir))
    assert info["n_train"] == 90 and info["n_test"] == 10 and info["n_features"] == 3092
    assert info["n_unique_stimuli"] == 100 and info["n_test_seen_in_train"] == 0
    assert info["checksum"] == "ok" and info["labels"] == [1, 2]
    assert info["url"] == DATASETS["vangerven"].url and info["image_shape"] == [28, 28]


def test_info_miyawaki_uses_environment_data_dir(runner, data_dir):
    info = info_json(runner, "miyawaki")  # $CORTEXFLOW_DATA, set by conftest to data_dir
    assert (info["n_train"], info["n_test"], info["n_features"]) == (107, 12, 967)
    assert info["n_unique_stimuli"] == 20 and info["n_test_seen_in_train"] == 12
    assert any("novel-stimulus" in c for c in info["caveats"])


def test_info_text_output(runner, data_dir):
    res = runner.invoke(cli, ["datasets", "info", "miyawaki", "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.output
    lines = dict(line.split(None, 1) for line in res.stdout.splitlines() if line and not line.startswith("caveat"))
    assert lines["n_test_seen_in_train"] == "12" and lines["n_features"] == "967"
    assert "caveat: only 20 unique images" in res.stdout


def test_info_on_users_mat_file(runner, vangerven, tmp_path):
    path = tmp_path / "mine.mat"
    scipy.io.savemat(path, {
        "fmriTrn": vangerven.X_train, "stimTrn": vangerven.Y_train.reshape(90, 784),
        "fmriTest": vangerven.X_test, "stimTest": vangerven.Y_test.reshape(10, 784),
    })
    info = info_json(runner, str(path))
    assert info["name"] == "mine" and info["checksum"] == "unregistered"
    assert (info["n_train"], info["n_test"], info["n_features"]) == (90, 10, 3092)
    assert info["n_unique_stimuli"] == 100 and info["labels"] is None
    assert info["sha256"] == sha256_file(path)


def test_info_mindbigdata_is_refused_with_clear_message(runner, data_dir):
    res = runner.invoke(cli, ["datasets", "info", "mindbigdata", "--data-dir", str(data_dir)])
    assert res.exit_code == 2
    assert "Traceback" not in res.output
    assert "identical" in res.stderr and "fmriTrn" in res.stderr and "--allow-degenerate" in res.stderr
    ok = info_json(runner, "mindbigdata", "--data-dir", str(data_dir), "--allow-degenerate")
    assert ok["n_train"] == 40 and ok["format_tests_only"] is True


def test_info_unknown_name_exits_2(runner, tmp_path):
    res = runner.invoke(cli, ["datasets", "info", str(tmp_path / "missing.mat")])
    assert res.exit_code == 2
    assert "missing.mat" in res.stderr and "vangerven" in res.stderr


def test_list(runner):
    res = runner.invoke(cli, ["datasets", "list"])
    assert res.exit_code == 0
    for name, info in DATASETS.items():
        assert name in res.stdout
        assert f"{info.n_train}/{info.n_test} x {info.n_features}" in res.stdout
    assert res.stdout.count("[format tests only]") == sum(i.format_tests_only for i in DATASETS.values())
    listed = json.loads(runner.invoke(cli, ["datasets", "list", "--json"]).stdout)
    assert set(listed) == set(DATASETS)
    assert listed["vangerven"]["sha256"] == DATASETS["vangerven"].sha256


def test_fetch_with_mirror(runner, loopback_mirror, tmp_path):
    dest = tmp_path / "data"
    res = runner.invoke(cli, ["datasets", "fetch", "vangerven", "--data-dir", str(dest),
                              "--mirror", loopback_mirror, "--no-progress"])
    assert res.exit_code == 0, res.output
    path = dest / "vangerven" / DATASETS["vangerven"].filename
    assert res.stdout.strip() == str(path)
    assert sha256_file(path) == DATASETS["vangerven"].sha256
    # and the fetched copy is usable
    info = info_json(runner, "vangerven", "--data-dir", str(dest))
    assert info["checksum"] == "ok" and info["n_train"] == 90


def test_fetch_bad_checksum_exits_2(runner, tmp_path):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    bad = tmp_path / "mirror" / "vangerven" / DATASETS["vangerven"].filename
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\0" * 1000)
    quiet = type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    handler = functools.partial(quiet, directory=str(tmp_path / "mirror"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        res = runner.invoke(cli, ["datasets", "fetch", "vangerven", "--data-dir", str(tmp_path / "data"),
                                  "--mirror", f"http://127.0.0.1:{server.server_address[1]}", "--no-progress"])
    finally:
        server.shutdown()
        server.server_close()
    assert res.exit_code == 2
    assert "checksum mismatch" in res.stderr and DATASETS["vangerven"].sha256 in res.stderr
    assert not any(p.is_file() for p in (tmp_path / "data").rglob("*"))


def test_version(runner):
    import cortexflow

    res = runner.invoke(cli, ["--version"])
    assert res.exit_code == 0 and cortexflow.__version__ in res.stdout
