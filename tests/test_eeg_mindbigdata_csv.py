"""MindBigData spreadsheet exports (the public MW-sample.csv) and the registered recording mindbigdata-mw-sample.

Small files are written here in the export's layout (BOM, quoted first cell
holding the header fields and the first value joined by tabs, one value per
further cell, padding, a row of empty cells); the real file is used when the
data folder holds it, and those tests skip otherwise.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from _loopback import serve_folder
from click.testing import CliRunner

from cortexflow.cli.main import cli
from cortexflow.data import load_dataset
from cortexflow.data.eeg import load_eeg, read_mindbigdata
from cortexflow.data.fetch import dataset_path, fetch_dataset
from cortexflow.data.registry import DATASETS
from cortexflow.exceptions import ChecksumError, DataValidationError
from cortexflow.utils.io import sha256_file

NAME = "mindbigdata-mw-sample"
INFO = DATASETS[NAME]
BOM = "\ufeff"


def _row(event: int, code: int, values, size: int | None = None, pad: int = 0) -> str:
    """One line of the spreadsheet export: quoted header cell + first value, then one value per cell."""
    vals = [str(v) for v in values]
    size = len(vals) if size is None else size
    head = f'"{event}\t{event}\tMW\tFP1\t{code}\t{size}\t{vals[0]}"'
    return ",".join([head] + vals[1:] + [""] * pad)


def _export(path, rows, *, bom: bool = True, blank_row: bool = True) -> None:
    width = max(r.count(",") for r in rows)
    text = "\n".join(rows) + "\n" + ("," * width + "\n" if blank_row else "")
    path.write_text((BOM if bom else "") + text, encoding="utf-8")


@pytest.fixture
def real_file(data_dir):
    path = data_dir / INFO.directory / INFO.filename
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.mark.parametrize("bom", [True, False])
def test_small_export_reads_with_and_without_bom(tmp_path, bom, caplog):
    rng = np.random.default_rng(0)
    vals = [rng.integers(-200, 200, 20) for _ in range(4)]
    rows = [_row(10 + i, c, v, size=s, pad=p)
            for i, (c, v, s, p) in enumerate(zip((3, 7, 0, 3), vals, (20, 25, 20, 22), (0, 0, 3, 0)))]
    f = tmp_path / "export.csv"
    _export(f, rows, bom=bom)
    with caplog.at_level(logging.WARNING, logger="cortexflow.data.eeg.mindbigdata"):
        ep = read_mindbigdata(f)
    assert ep.n_epochs == 4 and ep.n_channels == 1 and ep.n_times == 20 and ep.sfreq == 512.0
    assert ep.labels.tolist() == [3, 7, 0, 3] and ep.event_ids.tolist() == [10, 11, 12, 13]
    np.testing.assert_array_equal(ep.data[:, 0, :], np.stack(vals).astype(np.float32))
    md = ep.metadata
    assert md["format"] == "mindbigdata-v1-spreadsheet" and md["blank_lines"] == 1
    assert md["size_mismatch_lines"] == 2 and md["size_field_range"] == [22, 25] and md["n_values_range"] == [20, 20]
    assert [m[:2] for m in md["size_mismatches"]] == [[2, 11], [4, 13]]  # (line, event)
    assert "2 of 4 line(s) have a [size] field that disagrees" in md["size_mismatch"]
    assert "2 of 4 line(s)" in caplog.text and "values present: 20" in caplog.text


def test_raw_text_format_is_unchanged(tmp_path):
    f = tmp_path / "mw.txt"
    f.write_text("1\t1\tMW\tFP1\t2\t5\t1,2,3,4,5\n2\t2\tMW\tFP1\t3\t5\t5,4,3,2,1\n")
    ep = read_mindbigdata(f)
    assert ep.metadata["format"] == "mindbigdata-v1" and ep.metadata["size_mismatch_lines"] == 0
    assert ep.metadata["size_mismatch"] is None and ep.data.shape == (2, 1, 5)


@pytest.mark.parametrize(
    "line, match",
    [
        ('"0\t0\tMW\tFP1\t0",5', "first cell must hold 7 tab-separated fields"),  # header fields missing
        ('"0\t0\tMW\tFP1\t0', "cut off inside its quoted first cell"),  # cut inside the header
        ('"0\t0\tMW\tFP1\t0\t5\t1,2,3', "cut off inside its quoted first cell"),  # the closing quote is missing
        ('"0\t0\tMW\tFP1\t0\t3\t1",abc,3', r"value 2 of \[data\] is not a number: 'abc'"),
        ('"0\t0\tMW\tFP1\t0\t3\t1",,3', "value 2 of 3 is an empty cell"),
        ('"0\t0\tMW\tFP1\tx\t3\t1",2,3', "must be integers"),
        ('"0\t0\tEP\tFP1\t0\t3\t1",2,3', "channel 'FP1' is not one of device EP"),
    ],
)
def test_bad_export_lines_are_named(tmp_path, line, match):
    f = tmp_path / "bad.csv"
    f.write_text(BOM + _row(1, 4, range(3)) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match=match) as info:
        read_mindbigdata(f)
    assert "bad.csv:2" in str(info.value)


def test_truncated_last_line_is_dropped_as_too_short(tmp_path):
    rows = [_row(i, i % 10, range(100 + i, 140 + i)) for i in range(5)]
    rows.append(_row(9, 9, range(7), size=40))  # the file was cut: 7 of 40 values
    f = tmp_path / "cut.csv"
    _export(f, rows, blank_row=False)
    ep = read_mindbigdata(f)
    assert ep.n_epochs == 5 and ep.n_times == 40 and ep.dropped["too_short"] == 1
    assert ep.metadata["size_mismatch_lines"] == 1


def test_real_file_is_read_as_it_is(real_file, caplog):
    with caplog.at_level(logging.WARNING, logger="cortexflow.data.eeg.mindbigdata"):
        ep = read_mindbigdata(real_file)
    assert ep.data.shape == (174, 1, 952) and ep.ch_names == ("FP1",) and ep.sfreq == 512.0
    assert ep.class_counts() == {"0": 24, "1": 18, "2": 17, "3": 15, "4": 21, "5": 19, "6": 7, "7": 12,
                                 "8": 20, "9": 21}
    md = ep.metadata
    assert md["format"] == "mindbigdata-v1-spreadsheet" and md["blank_lines"] == 1 and ep.n_dropped == 0
    # 51 signals say size 952; the other 123 say 953..1017 but hold 952 values
    assert md["size_mismatch_lines"] == 123 and md["size_field_range"] == [953, 1017]
    assert md["n_values_range"] == [952, 952]
    assert "123 of 174 line(s)" in caplog.text
    assert ep.data[0, 0, :3].tolist() == [38.0, 48.0, 51.0]  # the first value comes from the header cell


def test_registry_entry():
    assert INFO.modality == "eeg-raw" and INFO.directory == "mindbigdata_raw" and INFO.filename == "MW-sample.csv"
    assert INFO.url == ("https://raw.githubusercontent.com/alik604/bioMedical-imaging/"
                        "c22a1e1994bde333da93483e9d4961f09912368c/MW-sample.csv")
    assert INFO.sha256 == "e7b877a6fab7baafd1e6e35551ebecb8e7c141080ee8f063a84c67cb943ec785"
    assert (INFO.n_train, INFO.n_test, INFO.n_features, INFO.n_channels, INFO.sfreq) == (174, 0, 952, 1, 512.0)
    assert dataset_path(NAME, "/d").as_posix() == "/d/mindbigdata_raw/MW-sample.csv"
    assert INFO.to_dict()["folder"] == "mindbigdata_raw"


def test_load_dataset_names_the_eeg_tools(tmp_path):
    with pytest.raises(DataValidationError, match="raw EEG recording") as info:
        load_dataset(NAME, tmp_path)
    assert "cortexflow eeg evaluate --dataset mindbigdata-mw-sample" in str(info.value)


def test_fetch_over_loopback_and_cli(real_file, tmp_path):
    dest = tmp_path / "data"
    with serve_folder(real_file.parents[1]) as url:
        path = fetch_dataset(NAME, dest, mirror=url, progress=False)
        assert path == dest / "mindbigdata_raw" / "MW-sample.csv" and sha256_file(path) == INFO.sha256
        res = CliRunner().invoke(cli, ["datasets", "fetch", NAME, "--data-dir", str(tmp_path / "cli"),
                                       "--mirror", url, "--no-progress"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(tmp_path / "cli" / "mindbigdata_raw" / "MW-sample.csv")
    assert sorted(p.name for p in (tmp_path / "cli").rglob("*") if p.is_file()) == ["MW-sample.csv"]


def test_checksum_is_verified_without_download(real_file, tmp_path):
    copy = tmp_path / "mindbigdata_raw" / "MW-sample.csv"
    copy.parent.mkdir()
    shutil.copy(real_file, copy)
    assert load_eeg(NAME, tmp_path, download=False).metadata["checksum"] == "ok"
    with copy.open("ab") as fh:
        fh.write(b"\n")
    with pytest.raises(ChecksumError, match="sha256"):
        load_eeg(NAME, tmp_path, download=False)
    with pytest.raises(DataValidationError, match="not found; fetch it with `cortexflow datasets fetch"):
        load_eeg(NAME, tmp_path / "empty", download=False)


def test_datasets_list_and_info(real_file):
    runner = CliRunner()
    res = runner.invoke(cli, ["datasets", "list"])
    assert res.exit_code == 0 and "[raw EEG: 174 trials, 1 channel(s), 512 Hz; no split]" in res.stdout
    res = runner.invoke(cli, ["datasets", "info", NAME, "--data-dir", str(real_file.parents[1]), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["checksum"] == "ok" and info["n_epochs"] == 174 and info["n_times"] == 952
    assert info["size_mismatch_lines"] == 123 and info["class_counts"]["6"] == 7
    text = runner.invoke(cli, ["datasets", "info", NAME, "--data-dir", str(real_file.parents[1])]).stdout
    assert "format                 mindbigdata-v1-spreadsheet" in text and "caveat: one frontal channel" in text
