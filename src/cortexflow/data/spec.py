"""Data set specification files: point CortexFlow at the files you have (TOML).

A spec describes the signals, the stimuli and the trials by paths (relative
to the spec file), keys and columns::

    name = "sub01"                     # optional; default: the spec file's stem

    [signals]
    path = "betas.nii.gz"              # .npy .npz .mat .h5/.hdf5 .nii/.nii.gz -epo.fif
    mask = "mask_visual.nii.gz"        # NIfTI: a mask, or atlas = "..." with labels = [..]

    [stimuli]
    path = "images/"                   # a folder of PNG/JPEG files, or an array file (+ key)
    size = [64, 64]                    # declared size (height, width); images are resized to it
    color = "grayscale"                # or "rgb"

    [trials]
    table = "trials.tsv"               # CSV or TSV; one row per signal row, in order
    stimulus = "image"                 # file name in the folder, or a 0-based row of the stimulus array
    split = "split"                    # optional: "train" / "test"
    group = "run"                      # optional: run or session of each trial
    label = "category"                 # optional: class of each trial
    id = "trial_id"                    # optional: trial ids (must be unique)

Signals
    ``.npy`` (memory-mapped), ``.npz``/``.mat`` v4-7.2 (``key``), ``.mat``
    v7.3 and HDF5 (``key`` is the dataset path inside the file); arrays are
    (n_trials, n_features), or (n_features, n_trials) with
    ``orientation = "features-by-trials"``; a 3-D array (n, channels, times)
    is flattened channel after channel. A 4D NIfTI of per-trial maps is
    masked by ``mask`` (non-zero voxels) or by ``atlas`` and ``labels``; its
    voxel indices and world coordinates are kept in the dataset's metadata.
    MNE epochs (``-epo.fif``) keep ``picks`` channels; they feed the EEG
    pathway (:func:`cortexflow.data.eeg.load_eeg`, ``cortexflow eeg evaluate``) and, with
    stimuli, flatten into rows for everything else.
Stimuli
    A folder of image files (named by the table's stimulus column, or every
    image in it in name order when there is no table), or an array of
    (n, H, W), (n, H, W, 3), (n, 3, H, W) or flat rows (n, H*W[*3]); flat rows
    need ``size`` (unless square) and ``pixel_order = "row-major"`` (C) or
    ``"column-major"`` (MATLAB, F). ``scale`` is the value of white (default:
    inferred as for ``.mat`` files). Sizes are 8..256 px per side.
Trials
    Without a table, signal row i goes with stimulus i and every row is a
    training row. Without a split column there are no official test rows:
    only the ``kfold`` and ``novel-stimulus`` splits can be used.

:func:`read_spec_data` returns the arrays; ``load_dataset("spec.toml")``
returns a :class:`~cortexflow.data.loading.BrainDataset`. A parsed spec is
cached (``<cache root>/specs/<key>.npz``, the cache root being
``$CORTEXFLOW_CACHE`` or the user cache) under a key that is the sha256 of the
spec and of every source file it reads; the entry stores the sha256 of its
own arrays and is rebuilt when that does not match, so a second load neither
re-reads NIfTI images nor image folders, and never trusts a damaged entry.
``.npy`` signals are not copied into the cache: they are memory-mapped again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cortexflow.data.fetch import cached_sha256, get_cache_dir
from cortexflow.data.readers._optional import require
from cortexflow.data.readers.arrays import ARRAY_SUFFIXES, read_array
from cortexflow.data.readers.images import (
    COLORS,
    IMAGE_SUFFIXES,
    RESAMPLE_FILTERS,
    check_image_size,
    read_image_files,
)
from cortexflow.data.readers.mne_epochs import is_mne_epochs_path, read_mne_epochs
from cortexflow.data.readers.nifti import is_nifti_path, read_nifti_trials
from cortexflow.data.validation import infer_stimulus_scale, validate_signals
from cortexflow.exceptions import ConfigError, DataValidationError
from cortexflow.utils.io import atomic_write_with

try:  # Python >= 3.11
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as _toml
    except ModuleNotFoundError:
        _toml = None

__all__ = [
    "SPEC_SUFFIXES",
    "SpecData",
    "is_spec_path",
    "read_spec",
    "read_spec_data",
    "read_spec_epochs",
    "spec_cache_dir",
    "no_official_split_message",
]

logger = logging.getLogger(__name__)

SPEC_SUFFIXES = (".toml",)
#: Bumped when the parsed content of a spec changes for the same files (old cache entries are then ignored).
CACHE_FORMAT = 1
PIXEL_ORDERS = {"row-major": "C", "column-major": "F"}
SPLIT_VALUES = ("train", "test")
ORIENTATIONS = ("trials-by-features", "features-by-trials")

_SECTIONS = {
    None: {"name", "modality", "cache", "signals", "stimuli", "trials"},
    "signals": {"path", "key", "mask", "atlas", "labels", "picks", "volumes", "orientation"},
    "stimuli": {"path", "key", "size", "color", "pixel_order", "scale", "resample", "channels"},
    "trials": {"table", "delimiter", "stimulus", "split", "group", "label", "id"},
}


def is_spec_path(path: str | os.PathLike) -> bool:
    """True when ``path`` names a spec file (``.toml``)."""
    return str(path).lower().endswith(SPEC_SUFFIXES)


def no_official_split_message(name: str) -> str:
    """Why the official split is refused for a data set without test rows, and what to use."""
    return (f"{name} has no official test rows (its spec's trial table has no split column): use --split kfold or "
            f"--split novel-stimulus, or add a split column with the values train/test to the trial table")


def spec_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder of parsed specs: ``<cache_dir or $CORTEXFLOW_CACHE or the user cache>/specs``."""
    root = get_cache_dir(cache_dir)
    return Path(root).expanduser() / "specs"


# ------------------------------------------------------------------ parsing
def read_spec(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and check a spec file's structure (not yet the files it names).

    Returns
    -------
    dict
        The TOML content, plus ``"_path"`` (the spec) and ``"_dir"`` (its folder).

    Raises
    ------
    ConfigError
        A TOML syntax error, an unknown section or key (the allowed ones are
        named), or a missing ``[signals]`` path.
    DataValidationError
        The spec file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"{path}: no such spec file")
    if _toml is None:  # pragma: no cover - Python 3.10 without tomli
        raise ConfigError(f"{path}: reading a spec needs Python >= 3.11 (tomllib) or the package tomli "
                          "(pip install tomli)")
    try:
        spec = _toml.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:  # TOMLDecodeError is a ValueError
        raise ConfigError(f"{path}: not a valid TOML file ({' '.join(str(exc).split())})") from exc
    for section, allowed in _SECTIONS.items():
        body = spec if section is None else spec.get(section, {})
        if section is not None and not isinstance(body, dict):
            raise ConfigError(f"{path}: {section!r} must be a [{section}] table")
        unknown = sorted(set(body) - allowed)
        if unknown:
            where = "at the top level" if section is None else f"in [{section}]"
            raise ConfigError(f"{path}: unknown key(s) {unknown} {where}; allowed: {', '.join(sorted(allowed))}")
    if "signals" not in spec or "path" not in spec["signals"]:
        raise ConfigError(f"{path}: [signals] path is required (the file of brain signals)")
    for section in ("signals", "stimuli"):
        if section in spec and "path" not in spec[section]:
            raise ConfigError(f"{path}: [{section}] needs a path")
    if "trials" in spec and "table" not in spec["trials"]:
        raise ConfigError(f"{path}: [trials] needs table (the CSV/TSV file of trials)")
    spec["_path"] = path
    spec["_dir"] = path.resolve().parent
    return spec


def _file(spec: dict, section: str, key: str = "path") -> Path:
    """A path of the spec, resolved against the spec's folder; must exist."""
    value = spec[section][key]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{spec['_path']}: [{section}] {key} must be a file name (a string); got {value!r}")
    p = Path(value).expanduser()
    p = p if p.is_absolute() else spec["_dir"] / p
    if not p.exists():
        raise DataValidationError(f"{spec['_path']}: [{section}] {key} = {value!r}: {p} does not exist")
    return p


def _choice(spec: dict, section: str, key: str, allowed, default):
    value = spec.get(section, {}).get(key, default)
    if value not in allowed:
        raise ConfigError(f"{spec['_path']}: [{section}] {key} = {value!r}; allowed: {', '.join(map(str, allowed))}")
    return value


# -------------------------------------------------------------- trial table
@dataclass
class _Table:
    n: int
    stimulus: list[str] | None = None
    split: np.ndarray | None = None  # bool: True = test
    groups: np.ndarray | None = None
    labels: np.ndarray | None = None
    label_names: list[str] | None = None
    ids: list[str] | None = None


def _read_table(spec: dict) -> _Table | None:
    if "trials" not in spec:
        return None
    t = spec["trials"]
    path = _file(spec, "trials", "table")
    delim = t.get("delimiter") or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"{path}: not a UTF-8 text table ({exc})") from exc
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delim) if any(c.strip() for c in r)]
    if not rows:
        raise DataValidationError(f"{path}: the trial table is empty")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    if not body:
        raise DataValidationError(f"{path}: the trial table has a header but no trial")
    for i, r in enumerate(body):
        if len(r) != len(header):
            raise DataValidationError(f"{path}: row {i + 2} has {len(r)} cells but the header has {len(header)}")

    def column(key: str, required: bool = False) -> list[str] | None:
        name = t.get(key)
        if name is None:
            if required:
                raise ConfigError(f"{spec['_path']}: [trials] {key} (the column naming each trial's stimulus) is "
                                  f"required; columns of {path.name}: {header}")
            return None
        if name not in header:
            raise DataValidationError(f"{path}: no column {name!r} ([trials] {key}); columns: {header}")
        j = header.index(name)
        return [r[j].strip() for r in body]

    out = _Table(n=len(body))
    out.stimulus = column("stimulus", required="stimuli" in spec)
    ids = column("id")
    if ids is not None:
        seen: dict[str, int] = {}
        for i, v in enumerate(ids):
            if v in seen:
                raise DataValidationError(f"{path}: duplicate trial id {v!r} in rows {seen[v] + 2} and {i + 2} "
                                          f"(column {t['id']!r}); trial ids must be unique")
            seen[v] = i
        out.ids = ids
    split = column("split")
    if split is not None:
        bad = [(i, v) for i, v in enumerate(split) if v.lower() not in SPLIT_VALUES]
        if bad:
            i, v = bad[0]
            raise DataValidationError(f"{path}: row {i + 2}, column {t['split']!r}: {v!r} is not a split; allowed: "
                                      f"{', '.join(SPLIT_VALUES)}")
        out.split = np.array([v.lower() == "test" for v in split])
        if out.split.all():
            raise DataValidationError(f"{path}: every row of column {t['split']!r} is 'test'; training rows are needed")
    groups = column("group")
    if groups is not None:
        names = sorted(set(groups))
        out.groups = np.array([names.index(g) for g in groups], dtype=np.int64)
    labels = column("label")
    if labels is not None:
        empty = [i for i, v in enumerate(labels) if not v]
        if empty:
            raise DataValidationError(f"{path}: row {empty[0] + 2} has an empty label (column {t['label']!r})")
        try:
            out.labels = np.array([int(v) for v in labels], dtype=np.int64)
        except ValueError:
            names = sorted(set(labels))
            out.label_names = names
            out.labels = np.array([names.index(v) for v in labels], dtype=np.int64)
    return out


# ------------------------------------------------------------------ signals
def _signals(spec: dict, n_trials: int | None, facts: dict) -> tuple[np.ndarray, dict]:
    s = spec["signals"]
    path = _file(spec, "signals")
    extra: dict[str, Any] = {}
    if is_nifti_path(path):
        if "key" in s or "picks" in s:
            raise ConfigError(f"{spec['_path']}: [signals] key/picks do not apply to a NIfTI image; use mask, or "
                              "atlas and labels")
        if ("mask" in s) == ("atlas" in s):
            raise ConfigError(f"{spec['_path']}: [signals] of a NIfTI image needs mask = \"...\" or atlas = \"...\" "
                              "with labels = [...] (exactly one of them)")
        labels = s.get("labels")
        if "atlas" in s and (not isinstance(labels, list) or not all(isinstance(v, int) for v in labels)):
            raise ConfigError(f"{spec['_path']}: [signals] labels must be a list of integer atlas labels; got {labels!r}")
        nt = read_nifti_trials(
            path, mask=_file(spec, "signals", "mask") if "mask" in s else None,
            atlas=_file(spec, "signals", "atlas") if "atlas" in s else None, labels=labels,
            n_trials=n_trials, volumes=_choice(spec, "signals", "volumes", ("auto", "trials"), "auto"))
        extra.update(voxel_indices=nt.voxel_indices, voxel_coords=nt.voxel_coords, affine=nt.affine)
        if nt.voxel_labels is not None:
            extra["voxel_labels"] = nt.voxel_labels
        facts.update(signal_format="nifti", modality="fmri", nifti=nt.info)
        return nt.X, extra
    if is_mne_epochs_path(path):
        ep = read_mne_epochs(path, picks=s.get("picks"))
        n, c, t = ep["data"].shape
        facts.update(signal_format="mne-epochs", modality="eeg", n_channels=c, n_times=t, sfreq=ep["sfreq"],
                     ch_names=list(ep["ch_names"]))
        extra["eeg_labels"] = ep["labels"]
        return ep["data"].reshape(n, -1), extra
    if not str(path).lower().endswith(ARRAY_SUFFIXES):
        raise ConfigError(f"{spec['_path']}: [signals] path {path.name!r} has an unknown suffix; allowed: "
                          f"{', '.join(ARRAY_SUFFIXES + ('.nii', '.nii.gz', '-epo.fif'))}")
    for k in ("mask", "atlas", "labels", "picks", "volumes"):
        if k in s:
            raise ConfigError(f"{spec['_path']}: [signals] {k} applies to NIfTI images or MNE epochs, not to {path.name}")
    X = read_array(path, s.get("key"))
    if _choice(spec, "signals", "orientation", ORIENTATIONS, "trials-by-features") == "features-by-trials":
        X = X.T
    if X.ndim == 3:
        facts.update(n_channels=int(X.shape[1]), n_times=int(X.shape[2]))
        X = X.reshape(len(X), -1)
    facts.update(signal_format=path.suffix.lower().lstrip("."))
    return X, extra


# ------------------------------------------------------------------ stimuli
def _resize_array(img: np.ndarray, hw: tuple[int, int], resample: str) -> np.ndarray:
    Image = require("PIL.Image", "resizing stimulus arrays")
    filt = getattr(Image.Resampling, resample.upper())
    chans = img[..., None] if img.ndim == 2 else img
    out = np.stack([np.asarray(Image.fromarray(chans[..., c].astype(np.float32), mode="F").resize((hw[1], hw[0]), filt))
                    for c in range(chans.shape[-1])], axis=-1)
    out = np.clip(out, 0, 1).astype(np.float32)
    return out[..., 0] if img.ndim == 2 else out


def _stimuli_from_array(spec: dict, arr: np.ndarray, source: str) -> tuple[np.ndarray, str]:
    st = spec["stimuli"]
    key = st.get("key", "stimuli")
    arr = np.asarray(arr)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataValidationError(f"{source}: stimuli {key!r} hold non-numeric data of dtype {arr.dtype}")
    order = PIXEL_ORDERS[_choice(spec, "stimuli", "pixel_order", tuple(PIXEL_ORDERS), "row-major")]
    color = _choice(spec, "stimuli", "color", COLORS + (None,), None)
    resample = _choice(spec, "stimuli", "resample", RESAMPLE_FILTERS, "lanczos")
    size = check_image_size(st["size"], str(spec["_path"])) if "size" in st else None
    if arr.ndim == 2:  # flat rows
        n_pix = arr.shape[1]
        if size is None:
            side = math.isqrt(n_pix)
            side3 = math.isqrt(n_pix // 3) if n_pix % 3 == 0 else 0
            if side * side == n_pix and color != "rgb":
                size = (side, side)
            elif side3 * side3 * 3 == n_pix:
                size = (side3, side3)
            else:
                raise DataValidationError(f"{source}: stimuli {key!r} are flat rows of {n_pix} values; declare "
                                          "size = [height, width] in [stimuli]")
        h, w = size
        if n_pix == h * w:
            arr = arr.reshape(len(arr), h, w, order=order)
        elif n_pix == h * w * 3:
            arr = arr.reshape(len(arr), h, w, 3, order=order)
        else:
            raise DataValidationError(f"{source}: stimuli {key!r} have {n_pix} values per row; size {h}x{w} needs "
                                      f"{h * w} (grayscale) or {h * w * 3} (RGB)")
    elif arr.ndim == 4:
        channels = _choice(spec, "stimuli", "channels", ("auto", "last", "first"), "auto")
        if channels == "first" or (channels == "auto" and arr.shape[1] in (1, 3) and arr.shape[3] not in (1, 3)):
            arr = np.moveaxis(arr, 1, -1)
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
        elif arr.shape[-1] != 3:
            raise DataValidationError(f"{source}: stimuli {key!r} have shape {arr.shape}; expected (n, H, W, 3) or "
                                      "(n, 3, H, W) colour images")
    elif arr.ndim != 3:
        raise DataValidationError(f"{source}: stimuli {key!r} have shape {arr.shape}; expected (n, H, W), "
                                  "(n, H, W, 3), (n, 3, H, W) or flat rows (n, H*W)")
    if color == "grayscale" and arr.ndim == 4:
        raise DataValidationError(f"{source}: stimuli {key!r} are RGB (shape {arr.shape}) but color = \"grayscale\"")
    if color == "rgb" and arr.ndim == 3:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if not np.all(np.isfinite(arr)):
        raise DataValidationError(f"{source}: stimuli {key!r} contain NaN or Inf values")
    scale = st.get("scale")
    if scale is None:
        scale = infer_stimulus_scale(arr, source=source, key=key)
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ConfigError(f"{spec['_path']}: [stimuli] scale = {scale!r} must be a finite number > 0 (the value of white)")
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if lo < 0 or hi > scale:
        raise DataValidationError(f"{source}: stimuli {key!r} have values in [{lo:g}, {hi:g}]; expected [0, {scale:g}] "
                                  "(set [stimuli] scale to the value of white)")
    arr = arr.astype(np.float32) / np.float32(scale)
    hw = tuple(arr.shape[1:3])
    if size is None:
        check_image_size(hw, f"{source}: stimuli {key!r}")
    elif hw != tuple(size):
        arr = np.stack([_resize_array(a, size, resample) for a in arr])
    return arr, {"C": "row-major", "F": "column-major"}[order]


def _stimuli(spec: dict, table: _Table | None, n_rows: int, facts: dict) -> tuple[np.ndarray, list[str] | None]:
    """Stimulus of every trial, (n, H, W) or (n, H, W, 3) float32 in [0, 1]."""
    st = spec["stimuli"]
    path = _file(spec, "stimuli")
    if path.is_dir():
        files = sorted(p.name for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DataValidationError(f"{spec['_path']}: [stimuli] folder {path} holds no image "
                                      f"({', '.join(IMAGE_SUFFIXES)})")
        if table is None:
            names = files
        else:
            present = set(files)
            stems: dict[str, list[str]] = {}
            for f in files:
                stems.setdefault(Path(f).stem, []).append(f)
            names = []
            for i, v in enumerate(table.stimulus):
                if v not in present and len(stems.get(v, [])) > 1:
                    raise DataValidationError(
                        f"{_file(spec, 'trials', 'table')}: row {i + 2} names stimulus {v!r}, which matches "
                        f"{stems[v]} in {path}; give the file name with its suffix")
                name = v if v in present else (stems.get(v) or [None])[0]
                if name is None:
                    raise DataValidationError(
                        f"{_file(spec, 'trials', 'table')}: row {i + 2} names stimulus {v!r}, which is not an image "
                        f"in {path} ({len(files)} images there, e.g. {files[:3]})")
                names.append(name)
        uniq = sorted(set(names))
        pos = {n: i for i, n in enumerate(uniq)}
        if "pixel_order" in st or "key" in st:
            raise ConfigError(f"{spec['_path']}: [stimuli] pixel_order/key apply to array files, not to a folder of images")
        imgs = read_image_files([path / n for n in uniq], size=st.get("size"), color=st.get("color"),
                                resample=_choice(spec, "stimuli", "resample", RESAMPLE_FILTERS, "lanczos"),
                                source=str(spec["_path"]))
        facts.update(stimulus_format="image-folder", pixel_order="row-major")
        Y = imgs[[pos[n] for n in names]]
    else:
        arr = read_array(path, st.get("key"))
        imgs, order = _stimuli_from_array(spec, arr, str(path))
        facts.update(stimulus_format=path.suffix.lower().lstrip("."), pixel_order=order)
        if table is None:
            Y, names = imgs, None
        else:
            idx = []
            for i, v in enumerate(table.stimulus):
                try:
                    j = int(v)
                except ValueError:
                    j = -1
                if not 0 <= j < len(imgs):
                    raise DataValidationError(
                        f"{_file(spec, 'trials', 'table')}: row {i + 2} names stimulus {v!r}; with an array of "
                        f"stimuli it must be a row index 0..{len(imgs) - 1} of {path.name}")
                idx.append(j)
            Y, names = imgs[idx], [str(j) for j in idx]
    if len(Y) != n_rows:
        raise DataValidationError(
            f"{spec['_path']}: {n_rows} signal rows but {len(Y)} stimuli ({path.name}); they must match one to one "
            "(or give a [trials] table mapping each signal row to its stimulus)")
    facts.update(image_shape=list(Y.shape[1:]), color="rgb" if Y.ndim == 4 else "grayscale")
    return Y, names


# -------------------------------------------------------------------- cache
def _cache_key(spec: dict, allow_degenerate: bool = False) -> str:
    """sha256 of the spec and of every file it reads (paths and contents), and of the load options."""
    h = hashlib.sha256()
    h.update(f"cortexflow-spec-cache/{CACHE_FORMAT}/allow_degenerate={bool(allow_degenerate)}\n".encode())
    h.update(Path(spec["_path"]).read_bytes())
    files: list[Path] = []
    for section, keys in (("signals", ("path", "mask", "atlas")), ("stimuli", ("path",)), ("trials", ("table",))):
        for k in keys:
            if k in spec.get(section, {}):
                files.append(_file(spec, section, k))
    for f in files:
        if f.is_dir():
            for p in sorted(f.iterdir()):
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                    h.update(f"{p.name}\0{cached_sha256(p)}\n".encode())
        else:
            h.update(f"{f.resolve()}\0{cached_sha256(f)}\n".encode())
    return h.hexdigest()


def _content_sha256(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}\0{a.dtype.str}\0{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        stored = str(arrays.pop("__content_sha256__"))
    except Exception as exc:  # noqa: BLE001 - any damaged entry is rebuilt
        logger.warning("spec cache entry %s is unreadable (%s); rebuilding it", path, exc)
        return None
    if stored != _content_sha256(arrays):
        logger.warning("spec cache entry %s does not match its own checksum; rebuilding it", path)
        return None
    return arrays


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    payload = dict(arrays, __content_sha256__=np.array(_content_sha256(arrays)))
    try:
        atomic_write_with(path, lambda fh: np.savez(fh, **payload))
    except OSError as exc:  # a read-only cache must not stop the load
        logger.warning("could not write the spec cache entry %s (%s)", path, exc)


# --------------------------------------------------------------------- main
@dataclass
class SpecData:
    """What a spec describes, read and checked: every trial in table order.

    Attributes
    ----------
    name : str
    X : ndarray of float32, shape (n_trials, n_features)
    Y : ndarray of float32, shape (n_trials, H, W) or (n_trials, H, W, 3)
    is_test : ndarray of bool or None
        Split of each trial (None: no split column, every trial trains).
    labels, groups : ndarray of int64 or None
    trial_ids : list of str or None
    stimulus_names : list of str or None
        File name (folder) or array row of each trial's stimulus.
    metadata : dict
        ``source`` (the spec), ``sha256`` (the cache key), ``modality``,
        ``pixel_order``, ``image_shape``, ``color``, ``has_official_split``,
        the voxel indices and coordinates of NIfTI signals, ...
    from_cache : bool
    """

    name: str
    X: np.ndarray
    Y: np.ndarray
    is_test: np.ndarray | None = None
    labels: np.ndarray | None = None
    groups: np.ndarray | None = None
    trial_ids: list[str] | None = None
    stimulus_names: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    from_cache: bool = False


_ARRAY_META = ("voxel_indices", "voxel_coords", "affine", "voxel_labels")


def read_spec_data(
    path: str | os.PathLike,
    *,
    cache: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    allow_degenerate: bool = False,
) -> SpecData:
    """Read everything a spec describes, with every check, from the cache when it is valid.

    Parameters
    ----------
    path : path-like
        The ``.toml`` spec.
    cache : bool, optional
        Use and fill the cache (default: the spec's ``cache`` key, else True).
    cache_dir : path-like, optional
        Cache root (default ``$CORTEXFLOW_CACHE``, else the user cache).
    allow_degenerate : bool
        Accept constant signals (format tests only).

    Raises
    ------
    ConfigError
        A malformed spec: unknown key, bad value (the allowed ones named).
    DataValidationError
        A missing file, a wrong key, a table row naming an absent image,
        mismatched counts, duplicate trial ids, images above 256 px, grayscale
        and RGB mixed, a raw fMRI time series, ... Nothing is written then.
    """
    spec = read_spec(path)
    name = str(spec.get("name") or Path(path).stem)
    use_cache = spec.get("cache", True) if cache is None else cache
    key = _cache_key(spec, allow_degenerate)
    entry = spec_cache_dir(cache_dir) / f"{key}.npz"
    # .npy signals are memory-mapped at every load, never copied into the cache (they may be large)
    mapped = str(_file(spec, "signals")).lower().endswith(".npy")
    if use_cache:
        arrays = _read_cache(entry)
        if arrays is not None:
            meta = json.loads(str(arrays.pop("__metadata__")))
            meta.update({k: arrays.pop(k) for k in _ARRAY_META if k in arrays})
            meta.update(name=name, source=str(spec["_path"]))  # the same files may be named by another spec path
            logger.info("spec %s read from the cache (%s)", path, entry)
            opt = {k: arrays.get(k) for k in ("is_test", "labels", "groups")}
            X = arrays["X"] if "X" in arrays else validate_signals(
                _signals(spec, None, {})[0], source=str(_file(spec, "signals")), key="signals",
                allow_degenerate=allow_degenerate)
            return SpecData(name=name, X=X, Y=arrays["Y"], **opt, trial_ids=meta.pop("trial_ids", None),
                            stimulus_names=meta.pop("stimulus_names", None), metadata=meta, from_cache=True)
    facts: dict[str, Any] = {}
    table = _read_table(spec)
    X_raw, extra = _signals(spec, table.n if table else None, facts)
    source = str(_file(spec, "signals"))
    if table is not None and len(X_raw) != table.n:
        raise DataValidationError(f"{source}: {len(X_raw)} signal rows but the trial table "
                                  f"{_file(spec, 'trials', 'table').name} lists {table.n} trials; they must match")
    X = validate_signals(X_raw, source=source, key=spec["signals"].get("key", "signals"),
                         allow_degenerate=allow_degenerate)
    if "stimuli" not in spec:
        raise ConfigError(f"{spec['_path']}: [stimuli] is required to build a dataset of signals and images "
                          "(for EEG evaluation with class images: cortexflow eeg evaluate --dataset SPEC)")
    Y, names = _stimuli(spec, table, len(X), facts)
    labels = table.labels if table is not None and table.labels is not None else extra.pop("eeg_labels", None)
    extra.pop("eeg_labels", None)
    is_test = table.split if table is not None else None
    meta: dict[str, Any] = {
        "name": name, "source": str(spec["_path"]), "sha256": key,
        "pixel_order": PIXEL_ORDERS[facts.get("pixel_order", "row-major")],
        "modality": str(spec.get("modality") or facts.get("modality", "unknown")),
        "registered": False, "caveats": [], "format_tests_only": False, "spec": facts,
        "has_official_split": is_test is not None, "image_shape": list(Y.shape[1:]),
        "color": facts["color"],
    }
    if table is not None and table.label_names is not None:
        meta["label_names"] = table.label_names
    data = SpecData(name=name, X=X, Y=Y, is_test=is_test, labels=labels,
                    groups=table.groups if table is not None else None,
                    trial_ids=table.ids if table is not None else None, stimulus_names=names,
                    metadata={**meta, **extra})
    if use_cache:
        arrays = {"Y": Y, "__metadata__": np.array(json.dumps(
            {**meta, "trial_ids": data.trial_ids, "stimulus_names": names}))}
        if not mapped:
            arrays["X"] = X
        arrays.update({k: v for k, v in (("is_test", is_test), ("labels", labels), ("groups", data.groups))
                       if v is not None})
        arrays.update({k: extra[k] for k in _ARRAY_META if k in extra})
        _write_cache(entry, arrays)
    return data


def read_spec_epochs(path: str | os.PathLike) -> dict[str, Any]:
    """The MNE epochs a spec names, as ``EEGEpochs`` fields (see
    :func:`cortexflow.data.eeg.registered.load_eeg`, which makes the ``EEGEpochs``).

    ``[signals]`` must be an MNE epochs file (``picks`` kept). A ``[trials]``
    table, when given, must have one row per epoch; its ``label`` column
    replaces the epochs' event labels and its ``group`` column gives the
    epochs' groups.

    Raises
    ------
    ConfigError, DataValidationError
    """
    spec = read_spec(path)
    src = _file(spec, "signals")
    if not is_mne_epochs_path(src):
        raise ConfigError(f"{spec['_path']}: [signals] path {src.name!r} is not MNE epochs (-epo.fif); the EEG "
                          "pathway reads epochs")
    ep = read_mne_epochs(src, picks=spec["signals"].get("picks"))
    n = len(ep["data"])
    table = _read_table(spec)
    if table is not None:
        if table.n != n:
            raise DataValidationError(f"{src}: {n} epochs but the trial table lists {table.n} trials; they must match")
        if table.labels is not None:
            ep["labels"] = table.labels
            ep["class_names"] = tuple(table.label_names or [str(v) for v in range(int(table.labels.max()) + 1)])
        if table.groups is not None:
            ep["groups"] = table.groups
    ep["metadata"].update(name=str(spec.get("name") or Path(path).stem), registered=False, spec=str(spec["_path"]))
    return ep
