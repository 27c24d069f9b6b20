"""Reader for the MindBigData "MNIST of brain digits" text files (v1.0x).

The public files (MindBigData-MW/EP/MU/IN) hold one line per channel per
event, seven tab-separated fields::

    [id] [event] [device] [channel] [code] [size] [data]

``id`` numbers the line, ``event`` groups the lines (channels) of one 2-second
recording, ``device`` is ``MW`` (NeuroSky MindWave), ``EP`` (Emotiv EPOC),
``MU`` (Interaxon Muse) or ``IN`` (Emotiv Insight), ``channel`` is a 10/20
location of that device, ``code`` is the digit seen (0-9) or -1 for a random
recording without a digit, ``size`` the number of values, and ``data`` the
values separated by commas. The files are read line by line, so the 2.7 GB
EPOC file never has to fit in memory as text.

Spreadsheet exports of that format are read as they are, without conversion
(the public ``MW-sample.csv`` is one): a UTF-8 byte-order mark, the header
fields and the first value joined by tabs in one quoted cell
(``"0<TAB>0<TAB>MW<TAB>FP1<TAB>0<TAB>1017<TAB>38",48,51,...``), empty trailing
cells that pad short rows, and lines of empty cells only (skipped). Such an
export may cut the signals, so the ``size`` field then disagrees with the
values present: the values present are used, and the disagreement is counted
and logged (see :func:`read_mindbigdata`).

Sampling rates are the devices' nominal rates (the files do not carry them);
``size`` varies a little from event to event, so events are cropped to a
common length (see :func:`read_mindbigdata`).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from cortexflow.data.eeg.epochs import EEGEpochs
from cortexflow.exceptions import DataValidationError

__all__ = [
    "DeviceInfo",
    "MINDBIGDATA_DEVICES",
    "DIGIT_CLASSES",
    "MindBigDataLine",
    "parse_mindbigdata_line",
    "split_mindbigdata_line",
    "size_mismatch_message",
    "iter_mindbigdata_events",
    "read_mindbigdata",
    "format_mindbigdata_line",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceInfo:
    """One MindBigData headset: its code, channel set (file order) and nominal rate."""

    code: str
    name: str
    channels: tuple[str, ...]
    sfreq: float


#: The four headsets of MindBigData v1.0x, channel sets as the dataset's description lists them.
MINDBIGDATA_DEVICES: dict[str, DeviceInfo] = {
    "MW": DeviceInfo("MW", "NeuroSky MindWave", ("FP1",), 512.0),
    "EP": DeviceInfo(
        "EP",
        "Emotiv EPOC",
        ("AF3", "F7", "F3", "FC5", "T7", "P7", "O1", "O2", "P8", "T8", "FC6", "F4", "F8", "AF4"),
        128.0,
    ),
    "MU": DeviceInfo("MU", "Interaxon Muse", ("TP9", "FP1", "FP2", "TP10"), 220.0),
    "IN": DeviceInfo("IN", "Emotiv Insight", ("AF3", "AF4", "T7", "T8", "PZ"), 128.0),
}

#: Class names of the digits; a trial's label is the digit itself.
DIGIT_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))

_N_FIELDS = 7


@dataclass(frozen=True)
class MindBigDataLine:
    """One parsed line: one channel of one event."""

    id: int
    event: int
    device: str
    channel: str
    code: int
    size: int
    data: np.ndarray


def _is_blank_row(line: str) -> bool:
    """True for an empty line or a spreadsheet row of empty cells (``,,,``)."""
    return not line.strip().strip('\ufeff').replace(",", "").replace('"', "").strip()


def split_mindbigdata_line(line: str, *, source: str = "<text>", lineno: int = 0) -> tuple[list[str], list[str], bool]:
    """Split one line of the text format or of its spreadsheet export into header fields and value cells.

    Parameters
    ----------
    line : str
        ``[id]\\t[event]\\t[device]\\t[channel]\\t[code]\\t[size]\\t[v1,v2,...]`` as in the
        text files, or its spreadsheet export ``"[id]\\t...\\t[size]\\t[v1]",v2,v3,...``
        (the first cell quoted; a leading byte-order mark is ignored).
    source, lineno :
        Named in error messages.

    Returns
    -------
    header : list of str
        The six header fields ``id, event, device, channel, code, size``.
    values : list of str
        The value cells, with empty trailing cells (spreadsheet padding) removed.
    quoted : bool
        Whether the line had the spreadsheet export's quoted first cell.

    Raises
    ------
    DataValidationError
        Wrong number of header fields, an unterminated quoted cell, or an
        empty cell between values; the message names the file and line.
    """
    where = f"{source}:{lineno}"
    line = line.rstrip("\r\n").lstrip("\ufeff")
    quoted = line.startswith('"')
    if quoted:
        try:
            cells = next(csv.reader([line], strict=True))
        except csv.Error as exc:
            raise DataValidationError(f"{where}: cannot split the line into comma-separated cells ({exc}); "
                                      "is the line cut off inside its quoted first cell?") from None
        fields = cells[0].split("\t")
        if len(fields) != _N_FIELDS:
            raise DataValidationError(
                f"{where}: the first cell must hold {_N_FIELDS} tab-separated fields [id] [event] [device] "
                f"[channel] [code] [size] [first value], found {len(fields)}: {cells[0][:80]!r}"
            )
        values = [fields[-1]] + cells[1:]
    else:
        fields = line.split("\t")
        if len(fields) != _N_FIELDS:
            raise DataValidationError(
                f"{where}: expected {_N_FIELDS} tab-separated fields [id] [event] [device] [channel] [code] "
                f"[size] [data], found {len(fields)}"
            )
        values = fields[-1].split(",")
    while values and not values[-1].strip():
        values.pop()
    empty = [i for i, v in enumerate(values) if not v.strip()]
    if empty:
        raise DataValidationError(
            f"{where}: value {empty[0] + 1} of {len(values)} is an empty cell (between values; only trailing "
            "empty cells are read as padding)"
        )
    return fields[:-1], values, quoted


def parse_mindbigdata_line(line: str, *, source: str = "<text>", lineno: int = 0) -> MindBigDataLine:
    """Parse one MindBigData line (text format or its spreadsheet export, see :func:`split_mindbigdata_line`).

    Raises
    ------
    DataValidationError
        Wrong number of fields, unknown device or channel, a code outside
        -1..9, an empty cell between values, or values that are not numbers;
        the message names the file, the line number and the bad value.
    """
    where = f"{source}:{lineno}"
    (sid, sev, device, channel, scode, ssize), cells, _ = split_mindbigdata_line(line, source=source, lineno=lineno)
    try:
        id_, event, code, size = int(sid), int(sev), int(scode), int(ssize)
    except ValueError:
        raise DataValidationError(
            f"{where}: [id], [event], [code] and [size] must be integers; got {sid!r}, {sev!r}, {scode!r}, {ssize!r}"
        ) from None
    device = device.strip().upper()
    if device not in MINDBIGDATA_DEVICES:
        raise DataValidationError(f"{where}: unknown device {device!r}; allowed: {', '.join(MINDBIGDATA_DEVICES)}")
    channel = channel.strip().upper()
    allowed = MINDBIGDATA_DEVICES[device].channels
    if channel not in allowed:
        raise DataValidationError(f"{where}: channel {channel!r} is not one of device {device}'s channels {allowed}")
    if not -1 <= code <= 9:
        raise DataValidationError(f"{where}: code {code} is not a digit 0..9 or -1 (random)")
    try:
        data = np.array(cells, dtype=np.float64)
    except ValueError:
        k, bad = next(((i, v) for i, v in enumerate(cells) if not _is_float(v)), (0, "?"))
        raise DataValidationError(
            f"{where}: value {k + 1} of [data] is not a number: {bad[:40]!r}"
        ) from None
    if data.size == 0 or not np.all(np.isfinite(data)):
        raise DataValidationError(f"{where}: [data] is empty or holds NaN/Inf")
    return MindBigDataLine(id_, event, device, channel, code, size, data)


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def format_mindbigdata_line(id_: int, event: int, device: str, channel: str, code: int, data: Iterable[float]) -> str:
    """Write one line in the MindBigData text format (the inverse of :func:`parse_mindbigdata_line`).

    Integer-valued data are written without a decimal point, as in the MW and
    MU files; others with up to 6 significant decimals, as in the EP and IN files.
    """
    vals = np.asarray(list(data), dtype=np.float64)
    if np.all(vals == np.round(vals)):
        body = ",".join(str(int(v)) for v in vals)
    else:
        body = ",".join(f"{v:.6g}" for v in vals)
    return f"{id_}\t{event}\t{device}\t{channel}\t{code}\t{vals.size}\t{body}"


class _Event:
    __slots__ = ("event", "code", "channels", "bad")

    def __init__(self, event: int, code: int):
        self.event = event
        self.code = code
        self.channels: dict[str, np.ndarray] = {}
        self.bad: str | None = None


def _open_text(path) -> io.TextIOBase:
    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        if not p.is_file():
            raise DataValidationError(f"{p}: no such file")
        # utf-8-sig drops the byte-order mark that spreadsheet exports start with
        if p.suffix.lower() == ".gz":
            return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8-sig", errors="strict")
        return open(p, encoding="utf-8-sig", errors="strict")
    return path  # an open text stream


def _count_size_mismatch(stats: dict, lineno: int, rec: MindBigDataLine) -> None:
    stats["size_mismatch_lines"] += 1
    if len(stats["size_mismatches"]) < 20:
        stats["size_mismatches"].append((lineno, rec.event, rec.channel, rec.size, int(rec.data.size)))
    for key, v in (("size_field_range", rec.size), ("n_values_range", int(rec.data.size))):
        lo, hi = stats.get(key, (v, v))
        stats[key] = (min(lo, v), max(hi, v))


def _span(lo: int, hi: int) -> str:
    return f"{lo}" if lo == hi else f"{lo}..{hi}"


def size_mismatch_message(stats: dict, source) -> str | None:
    """One sentence on the lines whose ``size`` field disagrees with their values (None when none do)."""
    n = stats.get("size_mismatch_lines", 0)
    if not n:
        return None
    (s_lo, s_hi), (v_lo, v_hi) = stats["size_field_range"], stats["n_values_range"]
    first = stats["size_mismatches"][0]
    return (
        f"{source}: {n} of {stats.get('lines', n)} line(s) have a [size] field that disagrees with the values "
        f"present ([size] says {_span(s_lo, s_hi)}, values present: {_span(v_lo, v_hi)}; first at line {first[0]}, "
        f"event {first[1]}: size {first[3]}, {first[4]} values); the values present were used"
    )


#: Suffixes of binary formats that are not MindBigData text (named in the error).
_BINARY_FORMATS = {".fif": "MNE/Neuromag FIF", ".edf": "EDF", ".bdf": "BDF", ".set": "EEGLAB", ".vhdr": "BrainVision",
                   ".eeg": "BrainVision", ".cnt": "Neuroscan", ".gdf": "GDF", ".npz": "NumPy", ".npy": "NumPy",
                   ".mat": "MATLAB"}


def _undecodable(source: str, exc: BaseException) -> str:
    """The one-line message of a file that cannot be read as MindBigData text."""
    suffixes = [s.lower() for s in Path(source).suffixes]
    binary = next((_BINARY_FORMATS[s] for s in suffixes if s in _BINARY_FORMATS), None)
    if binary is not None:
        return (f"{source}: {binary} data, not MindBigData text; `cortexflow eeg mindbigdata` reads the "
                "tab-separated MindBigData .txt (or .txt.gz, .csv) files")
    if isinstance(exc, UnicodeDecodeError):
        return (f"{source}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at byte {exc.start}); MindBigData "
                "files are UTF-8/ASCII text: convert it (e.g. iconv -f latin1 -t utf-8) or check that it is the "
                "right file")
    if suffixes and suffixes[-1] == ".gz":
        return f"{source}: a corrupt or truncated gzip file ({type(exc).__name__}: {exc})"
    return f"{source}: cannot be read ({type(exc).__name__}: {exc})"


def iter_mindbigdata_events(
    path,
    device: str | None = None,
    *,
    errors: str = "raise",
    stats: dict | None = None,
) -> Iterator[tuple[int, int, np.ndarray | None, str | None]]:
    """Stream the events of a MindBigData file, one at a time.

    Lines of one event are gathered until every channel of the device is
    present; the event is then yielded. Lines of one event need not be
    adjacent (only the events still open are kept in memory). Events still
    incomplete at the end of the file are yielded last, flagged.

    Parameters
    ----------
    path : path-like or text stream
        A MindBigData ``.txt`` file (or ``.txt.gz``), or a spreadsheet
        export of one (``.csv``, see the module docstring); the layout is
        detected line by line.
    device : {"MW", "EP", "MU", "IN"}, optional
        Keep only this device's lines. When omitted, the device of the first
        line is used and a second device in the file is an error.
    errors : {"raise", "skip"}
        What to do with a malformed line: raise :class:`DataValidationError`
        naming it, or skip it and count it in ``stats["malformed_lines"]``.
    stats : dict, optional
        Filled with counters: ``lines``, ``malformed_lines``,
        ``other_device_lines``, ``size_mismatch_lines``, ``blank_lines``
        (empty lines and rows of empty cells, skipped), ``quoted_lines``
        (spreadsheet-export lines), ``device``, and ``size_mismatches``: the
        first 20 lines whose ``size`` field disagrees with the number of
        values present, as ``(line, event, channel, size, n_values)``, and
        ``size_field_range``/``n_values_range`` over all such lines.

    Yields
    ------
    event : int
    code : int
    data : ndarray (n_channels, n_times) or None
        Channels in the device's order, cropped to the shortest channel;
        ``None`` for a flagged event.
    problem : str or None
        ``None`` for a good event, else ``"incomplete"`` (missing channels),
        ``"inconsistent"`` (channels disagree on the code) or
        ``"duplicate"`` (a channel given twice).
    """
    if errors not in ("raise", "skip"):
        raise DataValidationError(f"errors={errors!r} is not one of 'raise', 'skip'")
    if device is not None:
        device = str(device).upper()
        if device not in MINDBIGDATA_DEVICES:
            raise DataValidationError(f"unknown device {device!r}; allowed: {', '.join(MINDBIGDATA_DEVICES)}")
    stats = stats if stats is not None else {}
    for k in ("lines", "malformed_lines", "other_device_lines", "size_mismatch_lines", "blank_lines", "quoted_lines"):
        stats.setdefault(k, 0)
    stats.setdefault("size_mismatches", [])
    source = str(path) if isinstance(path, (str, os.PathLike)) else getattr(path, "name", "<stream>")
    chosen = device
    info = MINDBIGDATA_DEVICES[chosen] if chosen else None
    pending: dict[int, _Event] = {}

    def finish(ev: _Event) -> tuple[int, int, np.ndarray | None, str | None]:
        if ev.bad is not None:
            return ev.event, ev.code, None, ev.bad
        arrays = [ev.channels[ch] for ch in info.channels]
        n = min(a.size for a in arrays)
        return ev.event, ev.code, np.stack([a[:n] for a in arrays]).astype(np.float32), None

    fh = _open_text(path)
    try:
        for lineno, line in enumerate(fh, 1):
            if _is_blank_row(line):
                stats["blank_lines"] += 1
                continue
            stats["lines"] += 1
            if line.lstrip("\ufeff").startswith('"'):
                stats["quoted_lines"] += 1
            try:
                rec = parse_mindbigdata_line(line, source=source, lineno=lineno)
            except DataValidationError:
                if errors == "raise":
                    raise
                stats["malformed_lines"] += 1
                continue
            if chosen is None:
                chosen, info = rec.device, MINDBIGDATA_DEVICES[rec.device]
                stats["device"] = chosen
            if rec.device != chosen:
                if device is None:
                    raise DataValidationError(
                        f"{source}:{lineno}: the file holds lines of devices {chosen!r} and {rec.device!r}; "
                        f"choose one of them (device= in Python, --headset on the command line)"
                    )
                stats["other_device_lines"] += 1
                continue
            if rec.size != rec.data.size:
                _count_size_mismatch(stats, lineno, rec)
            ev = pending.get(rec.event)
            if ev is None:
                ev = pending[rec.event] = _Event(rec.event, rec.code)
            if rec.code != ev.code:
                ev.bad = "inconsistent"
            if rec.channel in ev.channels:
                ev.bad = ev.bad or "duplicate"
            ev.channels[rec.channel] = rec.data
            if len(ev.channels) == len(info.channels):
                del pending[rec.event]
                yield finish(ev)
    except (UnicodeDecodeError, OSError, EOFError, zlib.error) as exc:  # binary, Latin-1 or corrupt .gz input
        raise DataValidationError(_undecodable(source, exc)) from exc
    finally:
        if isinstance(path, (str, os.PathLike)):
            fh.close()
    stats.setdefault("device", chosen)
    for ev in pending.values():
        yield ev.event, ev.code, None, ev.bad or "incomplete"


def read_mindbigdata(
    path,
    device: str | None = None,
    *,
    n_times: int | None = None,
    pad: bool = False,
    min_length_fraction: float = 0.9,
    include_random: bool = False,
    codes: Iterable[int] | None = None,
    max_events: int | None = None,
    max_per_class: int | None = None,
    errors: str = "raise",
) -> EEGEpochs:
    """Read a MindBigData text file into epochs of shape (n_events, n_channels, n_times).

    Parameters
    ----------
    path : path-like or text stream
        ``MindBigData-EP-v1.0.txt`` or any file in that format (``.gz`` too).
    device : {"MW", "EP", "MU", "IN"}, optional
        Which device's lines to keep; by default the device of the first line
        (a file with several devices then needs this argument).
    n_times : int, optional
        Common length of the epochs, in samples. Longer events are cropped
        (their first ``n_times`` samples are kept: the digit is shown from
        sample 0). Shorter events are dropped (counted as ``"too_short"``), or
        padded with their last value when ``pad=True`` (counted as
        ``"padded"``, not dropped). When omitted, the length is the shortest
        event among those at least ``min_length_fraction`` times the median
        event length; shorter (truncated) events are dropped as ``"too_short"``.
    pad : bool
        Pad short events instead of dropping them (only with ``n_times``).
    min_length_fraction : float
        See ``n_times``.
    include_random : bool
        Keep the random recordings (code -1, no digit shown) with label -1;
        by default they are dropped and counted as ``"random"``.
    codes : iterable of int, optional
        Keep only these digits.
    max_events : int, optional
        Stop after this many kept events (a quick look at a large file).
    max_per_class : int, optional
        Keep at most this many events of each code (the first ones in the
        file; later ones are counted as ``"over_cap"``, not as dropped); the
        reading stops once every kept code is full. A balanced subset of the
        2.7 GB EPOC file, e.g. 120 per digit like the translated file the CCCV1 design document used.
    errors : {"raise", "skip"}
        Malformed lines raise (default) or are skipped and counted.

    Returns
    -------
    EEGEpochs
        ``labels`` are the digits (or -1), ``event_ids`` the ``[event]``
        fields, ``n_dropped`` the number of incomplete, inconsistent,
        duplicated or too-short events, and ``dropped`` the count per reason
        (with ``"random"`` and ``"malformed_lines"`` too). ``sfreq`` is the
        device's nominal rate. ``metadata`` records the device, the layout
        (``format``: ``"mindbigdata-v1"`` for the text format,
        ``"mindbigdata-v1-spreadsheet"`` for a spreadsheet export), the
        lengths seen, the line counts, and where the ``size`` fields
        disagree with the values present (``size_mismatch_lines``, the
        sentence ``size_mismatch`` that is also logged as a warning,
        ``size_mismatches`` with the first 20 such lines, and the ranges
        ``size_field_range``/``n_values_range``).

    Raises
    ------
    DataValidationError
        Missing file, malformed line (with ``errors="raise"``), no complete
        event, or bad arguments.
    """
    if n_times is not None and int(n_times) < 1:
        raise DataValidationError(f"n_times must be a positive number of samples; got {n_times}")
    if not 0 < min_length_fraction <= 1:
        raise DataValidationError(f"min_length_fraction must be in (0, 1]; got {min_length_fraction}")
    keep_codes = None if codes is None else {int(c) for c in codes}
    if keep_codes is not None and not keep_codes <= set(range(-1, 10)):
        raise DataValidationError(f"codes must be digits 0..9 (or -1); got {sorted(keep_codes)}")
    stats: dict = {}
    if max_per_class is not None and int(max_per_class) < 1:
        raise DataValidationError(f"max_per_class must be a positive number of events; got {max_per_class}")
    dropped = {"incomplete": 0, "inconsistent": 0, "duplicate": 0, "too_short": 0, "random": 0, "other_code": 0,
               "over_cap": 0}
    per_class: dict[int, int] = {}
    wanted = (set(range(10)) | ({-1} if include_random else set())) if keep_codes is None else set(keep_codes)
    dropped_event_ids: list[int] = []
    events: list[np.ndarray] = []
    labels: list[int] = []
    ids: list[int] = []
    for event, code, data, problem in iter_mindbigdata_events(path, device, errors=errors, stats=stats):
        if problem is not None:
            dropped[problem] += 1
            dropped_event_ids.append(event)
            continue
        if code == -1 and not include_random:
            dropped["random"] += 1
            continue
        if keep_codes is not None and code not in keep_codes:
            dropped["other_code"] += 1
            continue
        if max_per_class is not None and per_class.get(code, 0) >= max_per_class:
            dropped["over_cap"] += 1
            continue
        events.append(data)
        labels.append(code)
        ids.append(event)
        per_class[code] = per_class.get(code, 0) + 1
        if max_events is not None and len(events) >= max_events:
            break
        if max_per_class is not None and all(per_class.get(c, 0) >= max_per_class for c in wanted):
            break
    dev = stats.get("device") or device
    if not events:
        raise DataValidationError(
            f"{path}: no complete event found (lines read: {stats.get('lines', 0)}, dropped: "
            f"{ {k: v for k, v in dropped.items() if v} })"
        )
    info = MINDBIGDATA_DEVICES[dev]
    lengths = np.array([e.shape[1] for e in events])
    n_padded = 0
    if n_times is None:
        floor = min_length_fraction * float(np.median(lengths))
        ok = lengths >= floor
        target = int(lengths[ok].min())
    else:
        target = int(n_times)
        ok = lengths >= target if not pad else np.ones(len(events), dtype=bool)
    out = []
    for e, good in zip(events, ok):
        if not good:
            continue
        if e.shape[1] < target:
            e = np.pad(e, ((0, 0), (0, target - e.shape[1])), mode="edge")
            n_padded += 1
        out.append(e[:, :target])
    dropped["too_short"] += int((~ok).sum())
    keep = np.flatnonzero(ok)
    n_dropped = dropped["incomplete"] + dropped["inconsistent"] + dropped["duplicate"] + dropped["too_short"]
    if n_dropped:
        logger.info("%s: dropped %d event(s): %s", path, n_dropped, {k: v for k, v in dropped.items() if v})
    mismatch = size_mismatch_message(stats, path)
    if mismatch:
        logger.warning("%s", mismatch)
    if not out:
        raise DataValidationError(f"{path}: every event is shorter than n_times={target}")
    dropped["malformed_lines"] = int(stats.get("malformed_lines", 0))
    return EEGEpochs(
        data=np.stack(out),
        labels=np.asarray(labels)[keep],
        ch_names=info.channels,
        sfreq=info.sfreq,
        class_names=DIGIT_CLASSES,
        event_ids=np.asarray(ids)[keep],
        n_dropped=int(n_dropped),
        dropped=dropped,
        metadata={
            "source": str(path),
            "format": "mindbigdata-v1-spreadsheet" if stats.get("quoted_lines") else "mindbigdata-v1",
            "blank_lines": int(stats.get("blank_lines", 0)),
            "size_mismatch": mismatch,
            "size_mismatches": [list(m) for m in stats.get("size_mismatches", [])],
            "size_field_range": list(stats.get("size_field_range", ())),
            "n_values_range": list(stats.get("n_values_range", ())),
            "device": dev,
            "device_name": info.name,
            "n_lines": int(stats.get("lines", 0)),
            "other_device_lines": int(stats.get("other_device_lines", 0)),
            "size_mismatch_lines": int(stats.get("size_mismatch_lines", 0)),
            "n_padded": int(n_padded),
            "length_min": int(lengths.min()),
            "length_median": float(np.median(lengths)),
            "length_max": int(lengths.max()),
            "dropped_event_ids": dropped_event_ids[:1000],
        },
    )
