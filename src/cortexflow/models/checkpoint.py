"""Checkpoint folders of the decoders: layout, atomic replacement and the metadata schema.

A checkpoint is a folder holding ``model.safetensors`` (the weights) and
``checkpoint.json`` (configuration, preprocessing statistics, training facts
and, from format 2 on, the sha256 of the weights file). :func:`check_meta`
and :func:`check_scalers` validate the metadata before anything is built from
it, so that an edited or damaged file gives a :class:`CheckpointError` naming
the field rather than a traceback or silent NaN output.

The ``kind`` field names the decoder a checkpoint holds (``"cccv1"``,
``"cccv1-ensemble"``, ``"ridge-prior"``, ``"cccv1-prior"``, ...; see
:func:`cortexflow.models.loader.load_decoder`); a checkpoint without it
(written before the field existed) holds a single CCCV1-family network.
:func:`write_checkpoint`, :func:`read_checkpoint_meta` and
:func:`read_checkpoint_weights` are the shared write and read steps of every
kind: atomic folder replacement, the sha256 of the weights, and the checks of
the weights file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors

from cortexflow.data.preprocessing import ImageScaler, SignalScaler
from cortexflow.exceptions import CheckpointError
from cortexflow.utils.io import atomic_write_bytes, atomic_write_json, dir_mode, sha256_bytes, sha256_file

__all__ = [
    "CHECKPOINT_WEIGHTS",
    "CHECKPOINT_META",
    "CHECKPOINT_FORMAT",
    "READABLE_FORMATS",
    "TRAINING_KEYS",
    "SINGLE_NETWORK_KINDS",
    "check_header",
    "check_body",
    "check_meta",
    "checkpoint_kind",
    "read_checkpoint_meta",
    "read_checkpoint_weights",
    "write_checkpoint",
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

#: Kinds written by :meth:`cortexflow.models.estimator.CCCV1Decoder.save` (one network, its scalers and config);
#: a checkpoint without a ``kind`` field is one of these.
SINGLE_NETWORK_KINDS = ("cccv1", "cccv1-semantic", "cccv1-eeg")

logger = logging.getLogger(__name__)

TRAINING_KEYS = {"best_epoch": int, "stopped_epoch": int, "best_val_loss": float, "seconds": float}


def reject_json_constant(name: str):
    """``parse_constant`` hook of ``json.loads``: NaN and Infinity tokens are an error."""
    raise ValueError(f"non-standard JSON constant {name} (NaN and Infinity are not JSON)")


def _where(meta_path: Path, key: str, problem: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {meta_path}: field {key!r} {problem}")


def check_header(meta: Any, meta_path: Path) -> int:
    """Check the fields every kind of checkpoint has (format, weights hash, kind); return the format."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {meta_path}: metadata is a JSON {type(meta).__name__}, expected an object")
    if "format" not in meta:
        raise _where(meta_path, "format", f"is missing; this CortexFlow reads formats {list(READABLE_FORMATS)}")
    fmt = meta["format"]
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt not in READABLE_FORMATS:
        raise _where(meta_path, "format", f"is {fmt!r}; this CortexFlow reads formats {list(READABLE_FORMATS)} "
                                          "(a newer version may have written it)")
    if fmt >= 2:
        if "weights_sha256" not in meta:
            raise _where(meta_path, "weights_sha256", "is missing")
        sha = meta["weights_sha256"]
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise _where(meta_path, "weights_sha256", f"is {sha!r}; expected 64 hex digits")
    if "kind" in meta and not isinstance(meta["kind"], str):
        raise _where(meta_path, "kind", f"is {meta['kind']!r}; expected a JSON string")
    return fmt


def check_body(body: Any, meta_path: Path, prefix: str = "") -> None:
    """Check the fields of one CCCV1-family network (config, sizes, preprocessing, training facts).

    ``prefix`` names where ``body`` sits in the metadata (e.g. ``"members[0]."``) in error messages.
    """
    if not isinstance(body, dict):
        raise _where(meta_path, prefix.rstrip(".") or "(root)", f"is a JSON {type(body).__name__}, expected an object")
    required = {"config": dict, "n_features_in": int, "output_shape": list, "preprocessing": dict}
    for key, typ in required.items():
        if key not in body:
            raise _where(meta_path, prefix + key, "is missing")
        if not isinstance(body[key], typ) or isinstance(body[key], bool):
            raise _where(meta_path, prefix + key, f"is {body[key]!r}; expected a JSON {_JSON_NAMES[typ]}")
    if body["n_features_in"] < 1:
        raise _where(meta_path, prefix + "n_features_in", f"is {body['n_features_in']}; expected an int >= 1")
    shape = body["output_shape"]
    if len(shape) > 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape):
        raise _where(meta_path, prefix + "output_shape", f"is {shape!r}; expected a list of at most 3 ints >= 1")
    for key in ("signal", "target"):
        if not isinstance(body["preprocessing"].get(key), dict):
            raise _where(meta_path, f"{prefix}preprocessing.{key}", "is missing or not a JSON object")
    for key, typ in (("params", dict), ("dataset", dict), ("training", dict)):
        if key in body and not isinstance(body[key], typ):
            raise _where(meta_path, prefix + key, f"is {body[key]!r}; expected a JSON object")
    for key, value in body.get("training", {}).items():
        if key not in TRAINING_KEYS:
            continue
        if value is None and TRAINING_KEYS[key] is float:
            continue  # a loss or time that was not finite is stored as null
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not is_number or (TRAINING_KEYS[key] is int and not float(value).is_integer()):
            raise _where(meta_path, f"{prefix}training.{key}", f"is {value!r}; expected a {TRAINING_KEYS[key].__name__}")


def check_meta(meta: Any, meta_path: Path) -> int:
    """Check the metadata's structure and types (the schema of format 1 and 2); return the format."""
    fmt = check_header(meta, meta_path)
    check_body(meta, meta_path)
    return fmt


def checkpoint_kind(meta: dict) -> str | None:
    """The ``kind`` field of checkpoint metadata (None for a checkpoint written before the field existed)."""
    return meta.get("kind")


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


def write_checkpoint(path: str | os.PathLike, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``tensors`` (``model.safetensors``) and ``meta`` plus their sha256 (``checkpoint.json``) atomically.

    Parameters
    ----------
    path : path-like
        The checkpoint folder (replaced when it holds only checkpoint files,
        see :func:`save_checkpoint_dir`).
    meta : dict
        JSON-serialisable metadata (``format`` and ``kind`` included by the caller).
    tensors : dict of str to torch.Tensor
        Contiguous CPU tensors that share no memory.

    Returns
    -------
    pathlib.Path
    """
    blob = save_tensors(tensors)
    meta = {**meta, "weights_sha256": sha256_bytes(blob)}
    return save_checkpoint_dir(path, lambda d: (atomic_write_bytes(d / CHECKPOINT_WEIGHTS, blob),
                                                atomic_write_json(d / CHECKPOINT_META, meta)))


def read_checkpoint_meta(path: str | os.PathLike) -> tuple[dict[str, Any], int, Path, Path]:
    """Read and check a checkpoint's metadata (:func:`check_header`; nothing kind-specific).

    Returns
    -------
    (meta, format, metadata path, weights path)

    Raises
    ------
    CheckpointError
        A missing file, metadata that is not standard JSON, or a bad header field.
    """
    path = Path(path)
    meta_path, w_path = path / CHECKPOINT_META, path / CHECKPOINT_WEIGHTS
    for p in (meta_path, w_path):
        if not p.is_file():
            raise CheckpointError(f"checkpoint {path}: missing file {p.name} (expected {CHECKPOINT_META} and {CHECKPOINT_WEIGHTS})")
    try:
        meta = json.loads(meta_path.read_text(), parse_constant=reject_json_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {meta_path}: corrupt or incomplete metadata ({type(exc).__name__}: {exc})") from exc
    return meta, check_header(meta, meta_path), meta_path, w_path


def read_checkpoint_weights(w_path: Path, meta: dict[str, Any], fmt: int,
                            finite_prefixes: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """The weight tensors of a checkpoint, after checking the file against the recorded sha256.

    ``finite_prefixes``: only tensors whose names start with one of them must
    be finite (network weights); None checks every floating-point tensor.

    Raises
    ------
    CheckpointError
        The hash differs (format 2), the file is not a readable safetensors
        file, or a floating-point tensor holds NaN or infinite values.
    """
    if fmt >= 2:
        digest = sha256_file(w_path)
        if digest != meta["weights_sha256"]:
            raise CheckpointError(
                f"checkpoint {w_path}: the weights file's sha256 {digest} differs from the one recorded in "
                f"{CHECKPOINT_META} ({meta['weights_sha256']}); the weights were changed or damaged"
            )
    else:
        logger.warning("checkpoint %s has format 1 (no weights hash): its weights cannot be verified", w_path.parent)
    try:
        state = load_file(str(w_path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {w_path}: corrupt weights file ({exc})") from exc
    for name, tensor in state.items():
        if finite_prefixes is not None and not name.startswith(finite_prefixes):
            continue
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            n_bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"checkpoint {w_path}: weight tensor {name!r} holds {n_bad} NaN or infinite value(s)")
    return state
