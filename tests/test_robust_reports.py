"""Issue 20, item 4: results that cannot be faked or merged by accident; reports safe to open."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cortexflow.benchmark.runner import BenchmarkConfig, run_benchmark
from cortexflow.exceptions import CortexFlowError
from cortexflow.reporting.report import csv_cell, md_escape, strip_controls


def _write_dataset(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    stims = rng.uniform(0, 1, size=(12, 784)).astype(np.float32)
    W = rng.normal(size=(784, 30)) / 28
    X = stims @ W + 0.2 * rng.normal(size=(12, 30))
    np.savez(path, fmriTrn=X[:8].astype(np.float32), stimTrn=stims[:8], fmriTest=X[8:].astype(np.float32),
             stimTest=stims[8:])
    return path


def _run(datasets, out, **kw):
    cfg = BenchmarkConfig(datasets, "mean-image,ridge", "official", 10, 1, str(out), reference="ridge", **kw)
    return run_benchmark(cfg, progress=False, report=True)


def test_byte_copies_of_a_dataset_keep_their_own_rows(tmp_path):
    a = _write_dataset(tmp_path / "a.npz")
    b = tmp_path / "b.npz"
    shutil.copyfile(a, b)
    out = tmp_path / "bench"
    res = _run(f"{a},{b}", out)
    assert res["computed"] == 4  # 2 data sets x 2 methods: nothing merged
    df = pd.read_csv(out / "results.csv")
    assert set(df["dataset"]) == {"a", "b"}
    assert len(df[df["dataset"] == "a"]) == len(df[df["dataset"] == "b"]) == 8  # 4 test images x 2 methods
    stats = pd.read_csv(out / "stats.csv")
    assert set(stats["dataset"]) == {"a", "b"}
    # resumed: nothing recomputed, nothing merged
    again = _run(f"{a},{b}", out)
    assert again["computed"] == 0 and again["done_before"] == 4


def test_a_record_edited_by_hand_is_recomputed(tmp_path, caplog):
    a = _write_dataset(tmp_path / "a.npz")
    out = tmp_path / "bench"
    _run(str(a), out)
    clean = pd.read_csv(out / "results.csv")
    mean_mse = clean[clean["method"] == "mean-image"]["mse"].to_numpy()
    edited = 0
    for p in (out / "runs").glob("*.json"):
        rec = json.loads(p.read_text())
        if rec["task"]["method"] == "mean-image":
            for row in rec["rows"]:
                row["mse"] = 0.0001  # plausible, better than ridge
            p.write_text(json.dumps(rec))
            edited += 1
    assert edited == 1
    with caplog.at_level(logging.WARNING, logger="cortexflow.benchmark.store"):
        res = _run(str(a), out)
    assert res["computed"] == 1
    assert any("does not match its sha256" in r.getMessage() for r in caplog.records)
    df = pd.read_csv(out / "results.csv")
    np.testing.assert_allclose(df[df["method"] == "mean-image"]["mse"].to_numpy(), mean_mse)


def test_replaced_predictions_file_is_recomputed(tmp_path):
    a = _write_dataset(tmp_path / "a.npz")
    out = tmp_path / "bench"
    _run(str(a), out)
    npz = sorted((out / "runs").glob("*.npz"))
    with np.load(npz[0]) as z:
        pred, idx = z["predictions"], z["test_index"]
    np.savez_compressed(npz[0], predictions=pred * 0, test_index=idx)
    assert _run(str(a), out)["computed"] == 1


@pytest.mark.parametrize("existing_out", [False, True])
def test_refused_benchmark_leaves_no_empty_runs_folder(tmp_path, existing_out):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip file")  # exists (passes the option checks), fails to load
    out = tmp_path / "bench"
    if existing_out:
        out.mkdir()
    with pytest.raises(CortexFlowError):
        _run(str(bad), out)
    assert not (out / "runs").exists()
    assert out.exists() == existing_out


INJECTION = "=cmd|' -c calc'!A0"
XSS = "<img src=x onerror=alert(1)>"


def test_reports_escape_formulas_markup_and_control_characters(tmp_path):
    evil = _write_dataset(tmp_path / f"{INJECTION}.npz")
    xss = _write_dataset(tmp_path / f"{XSS}\x1b[31mred.npz", seed=1)
    out = tmp_path / "bench"
    _run(f"{evil},{xss}", out)
    for name in ("results.csv", "summary.csv", "stats.csv"):
        text = (out / name).read_text()
        assert "\x1b" not in text, name
        cells = [c for line in text.splitlines() for c in line.split(",")]
        assert not any(c.startswith(("=", "+", "@")) for c in cells), name
        assert f"'{INJECTION}".split(",")[0] in text or "'=cmd" in text, name
    md = (out / "summary.md").read_text()
    html = (out / "report.html").read_text()
    for text in (md, html):
        assert "\x1b" not in text
    assert not re.search(r"(?<!\\)<img", md)  # only backslash-escaped, shown literally
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "\\<img src=x onerror=alert(1)\\>" in md


def test_cell_and_text_helpers():
    assert csv_cell("=1+2") == "'=1+2" and csv_cell("+1") == "'+1" and csv_cell("-x") == "'-x"
    assert csv_cell("@SUM(A1)") == "'@SUM(A1)" and csv_cell("ridge") == "ridge" and csv_cell(-0.5) == -0.5
    assert csv_cell("\t=1") == "'=1" or csv_cell("\t=1") == " =1"
    assert strip_controls("a\x1b[1;31mb\x1b[0m\x00c\x9b") == "abc"
    assert md_escape("a\nb\x1b[2Jc") == "a bc"
