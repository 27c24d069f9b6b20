"""Checkpoint folders of the decoders: layout, atomic replacement and the metadata schema.

A checkpoint is a folder holding ``model.safetensors`` (the weights) and
``checkpoint.json`` (configuration, preprocessing statistics, training facts
and, from format 2 on, the sha256 of the weights file). :func:`check_meta`
and :func:`check_scalers` validate the metadata before anything is built from
it, so that an edited or damaged file gives a :class:`CheckpointError` naming
the field rather than a traceback or silent NaN output.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cortexflow.data.preprocessing import ImageScaler, SignalScaler
from cortexflow.exceptions import CheckpointError
from cortexflow.utils.io import dir_mode

__all__ = [
    "CHECKPOINT_WEIGHTS",
    "CHECKPOINT_META",
    "CHECKPOINT_FORMAT",
    "READABLE_FORMATS",
    "TRAINING_KEYS",
    "check_meta",
    "check_scalers",
    "check_replaceable_checkpoint",
    "reject_json_constant",
    "save_checkpoint_dir",
]

CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_META = "checkpoint.json"
#: Format 2 stores ``weights_sha256``; format 1 (no hash) is still read, with a warning.
CHECKPOINT_FORMAT = 2
READABLE_FORMATS = (1, 2)

TRAINING_KEYS = {"best_epoch": int, "stopped_epoch": int, "best_val_loss": float, "seconds": float}


def reject_json_constant(name: str):
    """``parse_constant`` hook of ``json.loads``: NaN and Infinity tokens are an error."""
    raise ValueError(f"non-standard JSON constant {name} (NaN and Infinity are not JSON)")


def _where(meta_path: Path, key: str, problem: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {meta_path}: field {key!r} {problem}")


def check_meta(meta: Any, meta_path: Path) -> int:
    """Check the metadata's structure and types (the schema of format 1 and 2); return the format."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {meta_path}: metadata is a JSON {type(meta).__name__}, expected an object")
    if "format" not in meta:
        raise _where(meta_path, "format", f"is missing; this CortexFlow reads formats {list(READABLE_FORMATS)}")
    fmt = meta["format"]
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt not in READABLE_FORMATS:
        raise _where(meta_path, "format", f"is {fmt!r}; this CortexFlow reads formats {list(READABLE_FORMATS)} "
                                          "(a newer version may have written it)")
    required = {"config": dict, "n_features_in": int, "output_shape": list, "preprocessing": dict}
    if fmt >= 2:
        required["weights_sha256"] = str
    for key, typ in required.items():
        if key not in meta:
            raise _where(meta_path, key, "is missing")
        if not isinstance(meta[key], typ) or isinstance(meta[key], bool):
            raise _where(meta_path, key, f"is {meta[key]!r}; expected a JSON {_JSON_NAMES[typ]}")
    if fmt >= 2 and (len(meta["weights_sha256"]) != 64 or any(c not in "0123456789abcdef" for c in meta["weights_sha256"])):
        raise _where(meta_path, "weights_sha256", f"is {meta['weights_sha256']!r}; expected 64 hex digits")
    if meta["n_features_in"] < 1:
        raise _where(meta_path, "n_features_in", f"is {meta['n_features_in']}; expected an int >= 1")
    shape = meta["output_shape"]
    if len(shape) > 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape):
        raise _where(meta_path, "output_shape", f"is {shape!r}; expected a list of at most 3 ints >= 1")
    for key in ("signal", "target"):
        if not isinstance(meta["preprocessing"].get(key), dict):
            raise _where(meta_path, f"preprocessing.{key}", "is missing or not a JSON object")
    for key, typ in (("params", dict), ("dataset", dict), ("training", dict)):
        if key in meta and not isinstance(meta[key], typ):
            raise _where(meta_path, key, f"is {meta[key]!r}; expected a JSON object")
    for key, value in meta.get("training", {}).items():
        if key not in TRAINING_KEYS:
            continue
        if value is None and TRAINING_KEYS[key] is float:
            continue  # a loss or time that was not finite is stored as null
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not is_number or (TRAINING_KEYS[key] is int and not float(value).is_integer()):
            raise _where(meta_path, f"training.{key}", f"is {value!r}; expected a {TRAINING_KEYS[key].__name__}")
    return fmt


_JSON_NAMES = {dict: "object", int: "integer", list: "array", str: "string"}


def check_scalers(sig, tgt: ImageScaler, n_in: int, out_shape: tuple[int, ...], meta_path: Path) -> None:
    """Refuse preprocessing statistics that would silently give NaN or wrong-sized output."""
    n_out = math.prod(out_shape) or 1
    if getattr(sig, "n_features_in_", n_in) != n_in:
        raise CheckpointError(f"checkpoint {meta_path}: preprocessing has {sig.n_features_in_} features but n_features_in is {n_in}")
    for name, value in vars(sig).items():
        if not name.endswith("_") or not isinstance(value, (np.ndarray, float, int)) or isinstance(value, bool):
            continue
        arr = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise _where(meta_path, f"preprocessing.signal.{name}", f"holds {int((~np.isfinite(arr)).sum())} NaN or infinite value(s)")
        if name == "scale_" and np.any(arr <= 0):
            raise _where(meta_path, "preprocessing.signal.scale_", f"holds {int((arr <= 0).sum())} value(s) <= 0 (a scale must be > 0)")
    if isinstance(sig, SignalScaler) and len(sig.scale_) != len(sig.mean_):
        raise _where(meta_path, "preprocessing.signal.scale_", f"has {len(sig.scale_)} values; expected {n_in} (one per feature)")
    if tgt.n_pixels_ != n_out:
        raise _where(meta_path, "preprocessing.target.n_pixels_", f"is {tgt.n_pixels_}; output_shape {list(out_shape)} has {n_out}")
    if not (math.isfinite(tgt.data_min_) and math.isfinite(tgt.data_max_)) or tgt.data_max_ < tgt.data_min_:
        raise _where(meta_path, "preprocessing.target", f"has data_min_={tgt.data_min_!r}, data_max_={tgt.data_max_!r}; "
                                                        "expected finite values with data_min_ <= data_max_")


def check_replaceable_checkpoint(path: str | os.PathLike) -> None:
    """Raise unless ``path`` is absent, an empty folder, or a checkpoint folder holding only checkpoint files.

    Replacing a checkpoint removes the old folder; this makes sure that no file
    CortexFlow did not write is removed with it.
    """
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise CheckpointError(f"refusing to replace {path}: it is {'a symbolic link' if path.is_symlink() else 'a file'}, "
                              "not a checkpoint folder")
    if path.is_dir():
        foreign = sorted(p.name for p in path.iterdir() if p.name not in {CHECKPOINT_META, CHECKPOINT_WEIGHTS}
                         or p.is_symlink() or not p.is_file())
        if foreign:
            raise CheckpointError(
                f"refusing to replace {path}: it holds {len(foreign)} entr{'y' if len(foreign) == 1 else 'ies'} that "
                f"CortexFlow did not write ({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); move "
                "them away or save elsewhere"
            )


def save_checkpoint_dir(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmpdir)`` then move ``tmpdir`` onto ``path`` atomically (replacing an old checkpoint).

    An existing ``path`` is replaced only when it holds nothing but checkpoint
    files (see :func:`check_replaceable_checkpoint`).
    """
    path = Path(path)
    check_replaceable_checkpoint(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        os.chmod(tmp, dir_mode())  # mkdtemp makes 0700; a checkpoint folder is an ordinary folder
        write(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "ckpt")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
