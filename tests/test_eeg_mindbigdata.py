"""MindBigData reader: small files written in exactly the public text format, read back."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest

from cortexflow.data.eeg import (
    MINDBIGDATA_DEVICES,
    format_mindbigdata_line,
    iter_mindbigdata_events,
    parse_mindbigdata_line,
    read_mindbigdata,
)
from cortexflow.exceptions import DataValidationError

# (device, n_times of its events) -- sizes vary around 2 s x nominal rate, as in the real files
SIZES = {"MW": [1017, 1020, 1012], "EP": [260, 256, 262], "MU": [476, 440, 452], "IN": [256, 258, 257]}


def _values(rng, device, n):
    if device in ("MW", "MU"):  # integer device units, as in those files
        return rng.integers(-500, 1000, size=n).astype(float)
    return np.round(4200 + 50 * rng.standard_normal(n), 6)  # EPOC/Insight: floats around 4200


def _write_device_file(path, device, *, seed=0, incomplete=True, random_event=True):
    """Write events 0..2 (digits 3, 7, 0) of ``device``, one incomplete event, one random event.

    Lines are built by hand in the published layout:
    ``[id]\\t[event]\\t[device]\\t[channel]\\t[code]\\t[size]\\t[v1,v2,...]``.
    """
    rng = np.random.default_rng(seed)
    chans = MINDBIGDATA_DEVICES[device].channels
    truth = {}
    lines = []
    line_id = 67635
    for k, (code, n) in enumerate(zip((3, 7, 0), SIZES[device])):
        event = 1000 + k
        arr = []
        for ch in chans:
            vals = _values(rng, device, n)
            arr.append(vals)
            body = ",".join(str(int(v)) if device in ("MW", "MU") else f"{v:.6f}" for v in vals)
            lines.append(f"{line_id}\t{event}\t{device}\t{ch}\t{code}\t{n}\t{body}")
            line_id += 1
        truth[event] = (code, np.stack(arr))
    if random_event:
        for ch in chans:
            vals = _values(rng, device, SIZES[device][0])
            lines.append(f"{line_id}\t2000\t{device}\t{ch}\t-1\t{vals.size}\t" + ",".join(f"{v:g}" for v in vals))
            line_id += 1
    if incomplete and len(chans) > 1:  # all channels but the last one
        for ch in chans[:-1]:
            vals = _values(rng, device, 250)
            lines.append(f"{line_id}\t3000\t{device}\t{ch}\t5\t{vals.size}\t" + ",".join(f"{v:g}" for v in vals))
            line_id += 1
    path.write_text("\n".join(lines) + "\n")
    return truth


@pytest.mark.parametrize("device", ["MW", "EP", "MU", "IN"])
def test_each_device_reads_back(tmp_path, device):
    f = tmp_path / f"MindBigData-{device}-v1.0.txt"
    truth = _write_device_file(f, device)
    ep = read_mindbigdata(f)
    info = MINDBIGDATA_DEVICES[device]
    common = min(SIZES[device])
    assert ep.data.shape == (3, len(info.channels), common)
    assert ep.ch_names == info.channels
    assert ep.sfreq == info.sfreq
    assert ep.labels.tolist() == [3, 7, 0]
    assert ep.event_ids.tolist() == [1000, 1001, 1002]
    for i, event in enumerate(ep.event_ids):
        code, arr = truth[int(event)]
        np.testing.assert_allclose(ep.data[i], arr[:, :common], rtol=1e-6)
    expected_incomplete = 1 if len(info.channels) > 1 else 0
    assert ep.dropped["incomplete"] == expected_incomplete
    assert ep.n_dropped == expected_incomplete
    assert ep.dropped["random"] == 1
    if expected_incomplete:
        assert 3000 in ep.metadata["dropped_event_ids"]
    assert ep.metadata["device"] == device


def test_random_events_kept_on_request(tmp_path):
    f = tmp_path / "ep.txt"
    _write_device_file(f, "EP")
    ep = read_mindbigdata(f, include_random=True)
    assert sorted(ep.labels.tolist()) == [-1, 0, 3, 7]
    assert ep.label_names.tolist().count("") == 1
    assert ep.class_counts()["random"] == 1


def test_fixed_length_crop_pad_and_drop(tmp_path):
    f = tmp_path / "in.txt"
    _write_device_file(f, "IN", incomplete=False, random_event=False)  # lengths 256, 258, 257
    ep = read_mindbigdata(f, n_times=200)
    assert ep.data.shape == (3, 5, 200)
    ep = read_mindbigdata(f, n_times=257)  # the 256-sample event is too short
    assert ep.data.shape == (2, 5, 257)
    assert ep.dropped["too_short"] == 1 and ep.n_dropped == 1
    ep = read_mindbigdata(f, n_times=257, pad=True)
    assert ep.data.shape == (3, 5, 257) and ep.metadata["n_padded"] == 1
    short = ep.data[ep.event_ids.tolist().index(1001 - 1)]  # event 1000 had 256 samples
    assert short[0, -1] == short[0, -2]  # edge padding


def test_truncated_event_does_not_shorten_everything(tmp_path):
    f = tmp_path / "ep.txt"
    lines = []
    for k, n in enumerate([260, 258, 30]):  # the last event is truncated
        for ch in MINDBIGDATA_DEVICES["EP"].channels:
            lines.append(format_mindbigdata_line(k * 100, k, "EP", ch, k, np.arange(n) + 0.5))
    f.write_text("\n".join(lines) + "\n")
    ep = read_mindbigdata(f)
    assert ep.n_times == 258 and ep.n_epochs == 2
    assert ep.dropped["too_short"] == 1


def test_mixed_devices_need_a_choice(tmp_path):
    f = tmp_path / "mixed.txt"
    _write_device_file(f, "MU", incomplete=False, random_event=False)
    extra = tmp_path / "in.txt"
    _write_device_file(extra, "IN", incomplete=False, random_event=False)
    f.write_text(f.read_text() + extra.read_text())
    with pytest.raises(DataValidationError, match="devices 'MU' and 'IN'"):
        read_mindbigdata(f)
    ep = read_mindbigdata(f, device="IN")
    assert ep.n_channels == 5 and ep.metadata["other_device_lines"] == 3 * 4


def test_interleaved_lines_and_inconsistent_codes(tmp_path):
    f = tmp_path / "mu.txt"
    chans = MINDBIGDATA_DEVICES["MU"].channels
    lines = []
    for ch in chans:  # two events interleaved channel by channel
        lines.append(format_mindbigdata_line(1, 10, "MU", ch, 4, range(440)))
        lines.append(format_mindbigdata_line(2, 11, "MU", ch, 4 if ch != "TP10" else 5, range(440)))
    f.write_text("\n".join(lines))
    ep = read_mindbigdata(f)
    assert ep.event_ids.tolist() == [10]
    assert ep.dropped["inconsistent"] == 1 and ep.n_dropped == 1


def test_streams_a_gzip_file_and_an_open_stream(tmp_path):
    f = tmp_path / "ep.txt"
    _write_device_file(f, "EP")
    gz = tmp_path / "ep.txt.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(f.read_text())
    a = read_mindbigdata(f)
    b = read_mindbigdata(gz)
    c = read_mindbigdata(io.StringIO(f.read_text()))
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.data, c.data)


def test_iterator_yields_events_as_they_complete(tmp_path):
    f = tmp_path / "ep.txt"
    _write_device_file(f, "EP")
    stats = {}
    it = iter_mindbigdata_events(f, stats=stats)
    first = next(it)
    assert first[0] == 1000 and first[3] is None and first[2].shape[0] == 14
    assert stats["lines"] == 14  # only the first event's lines were read so far
    rest = list(it)
    assert [r[3] for r in rest][-1] == "incomplete"


def test_max_events_and_codes(tmp_path):
    f = tmp_path / "ep.txt"
    _write_device_file(f, "EP")
    assert read_mindbigdata(f, max_events=2).n_epochs == 2
    ep = read_mindbigdata(f, codes=[7])
    assert ep.labels.tolist() == [7] and ep.dropped["other_code"] == 2


def test_max_per_class_stops_when_every_class_is_full(tmp_path):
    f = tmp_path / "mw.txt"
    codes = [1, 2, 1, 1, 2, 2, 1, 9]
    f.write_text("".join(format_mindbigdata_line(i, i, "MW", "FP1", c, range(i, i + 8)) + "\n" for i, c in enumerate(codes)))
    ep = read_mindbigdata(f, codes=[1, 2], max_per_class=2)
    assert ep.labels.tolist() == [1, 2, 1, 2] and ep.event_ids.tolist() == [0, 1, 2, 4]
    assert ep.dropped["over_cap"] == 1 and ep.n_dropped == 0  # reading stopped at event 4


@pytest.mark.parametrize(
    "line, match",
    [
        ("1\t1\tEP\tAF3\t3\t3", "7 tab-separated fields"),
        ("1\t1\tXX\tAF3\t3\t3\t1,2,3", "unknown device 'XX'"),
        ("1\t1\tEP\tCZ\t3\t3\t1,2,3", "channel 'CZ'"),
        ("1\t1\tEP\tAF3\t12\t3\t1,2,3", "code 12"),
        ("1\t1\tEP\tAF3\tx\t3\t1,2,3", "must be integers"),
        ("1\t1\tEP\tAF3\t3\t3\t1,abc,3", "not a number: 'abc'"),
        ("1\t1\tEP\tAF3\t3\t3\t1,nan,3", "NaN"),
    ],
)
def test_malformed_lines_are_named(line, match):
    with pytest.raises(DataValidationError, match=match):
        parse_mindbigdata_line(line, source="f.txt", lineno=7)


def test_malformed_line_raises_with_line_number_or_is_skipped(tmp_path):
    f = tmp_path / "ep.txt"
    _write_device_file(f, "EP", incomplete=False, random_event=False)
    text = f.read_text().splitlines()
    text.insert(5, "garbage line")
    f.write_text("\n".join(text))
    with pytest.raises(DataValidationError, match=r"ep.txt:6"):
        read_mindbigdata(f)
    ep = read_mindbigdata(f, errors="skip")
    assert ep.n_epochs == 3 and ep.dropped["malformed_lines"] == 1


def test_size_field_mismatch_is_counted(tmp_path):
    f = tmp_path / "mw.txt"
    f.write_text("1\t1\tMW\tFP1\t2\t99\t1,2,3,4,5\n2\t2\tMW\tFP1\t3\t5\t1,2,3,4,6\n")
    ep = read_mindbigdata(f)
    assert ep.metadata["size_mismatch_lines"] == 1 and ep.n_times == 5


def test_empty_or_missing_file(tmp_path):
    with pytest.raises(DataValidationError, match="no such file"):
        read_mindbigdata(tmp_path / "nope.txt")
    f = tmp_path / "only_incomplete.txt"
    f.write_text(format_mindbigdata_line(1, 1, "IN", "AF3", 1, [1, 2, 3]) + "\n")
    with pytest.raises(DataValidationError, match="no complete event"):
        read_mindbigdata(f)


def test_format_line_round_trip():
    line = format_mindbigdata_line(5, 9, "EP", "O1", 8, [4200.5, 4199.25, 4201.0])
    rec = parse_mindbigdata_line(line)
    assert (rec.id, rec.event, rec.device, rec.channel, rec.code, rec.size) == (5, 9, "EP", "O1", 8, 3)
    np.testing.assert_allclose(rec.data, [4200.5, 4199.25, 4201.0])
