"""Checkpoint folders of every CortexFlow estimator: layout, atomic replacement, and value-by-value validation.

A checkpoint is a folder holding ``model.safetensors`` (the weights and arrays)
and ``checkpoint.json`` (strict JSON: format, kind, parameters, fitted state,
image shape, and the sha256 of the weights file). Format 2 is the only format
read: a format-1 checkpoint has no hash, so its weights cannot be verified, and
it is refused. The ``kind`` field names the estimator a checkpoint holds (see
:func:`cortexflow.models.loader.load_decoder`); a checkpoint without it (written
before the field existed) holds a single CCCV1-family network.

Shared by every kind: :func:`write_checkpoint` (atomic folder replacement, the
sha256), :func:`read_checkpoint_meta` (:func:`check_header`) and
:func:`read_checkpoint_weights` (hash, readable file, finite network weights).

The generic estimator checkpoint (:func:`save_estimator`, :func:`load_estimator`,
used by :meth:`cortexflow.models.base.BaseDecoder.save` / ``load`` and the
prior-backed decoders) stores ``get_params(deep=False)`` (minus
:data:`FIT_ONLY_PARAMS`) and the fitted attributes that the class declares in its
``checkpoint_schema`` (``{name: StateField}``). Loading builds ``cls(**params)``
(unknown names refused), runs the estimator's own ``_check_params``, checks each
state entry against the schema (undeclared names refused, never set; types,
ranges, allowed strings, finiteness, scaler scales > 0, and array shapes against
``n_features_in``, the image shape and each other), then sets the entries by name
and rebuilds declared networks. Every failure is a one-line
:class:`CheckpointError` naming the file, the key and the allowed values.

The CCCV1 family (``cccv1``, ``cccv1-semantic``, ``cccv1-eeg``, ``cccv1-ensemble``)
writes the same header and files with its network's body (:func:`check_body`,
:func:`check_scalers`); its parameters are validated the same way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.utils.validation import check_is_fitted
from torch import nn

from cortexflow._version import __version__
from cortexflow.data.preprocessing import ImageScaler, SignalScaler
from cortexflow.exceptions import CheckpointError, CortexFlowError
from cortexflow.training.config import CCCV1Config
from cortexflow.training.trainer import TrainResult
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
    "FIT_ONLY_PARAMS",
    "QUANTISE_MIN_SIZE",
    "IMAGE_DIMS",
    "StateField",
    "StatePacker",
    "StateUnpacker",
    "PendingModule",
    "register_state_type",
    "register_shared_section",
    "register_state_schema",
    "checkpoint_schema",
    "checkpoint_params",
    "checkpoint_state",
    "check_state",
    "fitted_attributes",
    "restore_estimator",
    "one_line",
    "save_estimator",
    "load_estimator",
]

CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_META = "checkpoint.json"
#: Format 2 stores ``weights_sha256``. Format 1 (no hash) is refused: its weights cannot be verified.
CHECKPOINT_FORMAT = 2
READABLE_FORMATS = (2,)

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
    if fmt == 1 and not isinstance(fmt, bool):
        raise _where(meta_path, "format", "is 1: a format-1 checkpoint has no weights hash, so its weights cannot be "
                                          f"verified; this CortexFlow reads formats {list(READABLE_FORMATS)} (train "
                                          "and save the model again)")
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
    if fmt not in READABLE_FORMATS or "weights_sha256" not in meta:  # check_header refuses these first
        raise CheckpointError(f"checkpoint {w_path.parent}: no weights hash to verify the weights against")
    digest = sha256_file(w_path)
    if digest != meta["weights_sha256"]:
        raise CheckpointError(
            f"checkpoint {w_path}: the weights file's sha256 {digest} differs from the one recorded in "
            f"{CHECKPOINT_META} ({meta['weights_sha256']}); the weights were changed or damaged"
        )
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


# =====================================================================================================
# The generic estimator checkpoint: parameters and declared fitted state, validated value by value.
# =====================================================================================================
#
# Every estimator opts in with three class attributes (see :class:`cortexflow.models.base.BaseDecoder`):
#
# ``checkpoint_kind``
#     the ``kind`` field of its checkpoints;
# ``checkpoint_schema``
#     ``{attribute name: StateField}``: the fitted attributes a checkpoint may hold, with their type,
#     range, allowed strings and shape (names of dimensions shared between attributes);
# ``_check_params()``
#     its parameter validation (a ``ConfigError`` naming the value and the allowed ones), run on every
#     load on the instance built from the stored parameters.
#
# :func:`save_estimator` writes ``params`` (``get_params(deep=False)`` minus :data:`FIT_ONLY_PARAMS`) and
# the declared fitted attributes; an undeclared fitted attribute is refused when saving (a checkpoint that
# could not be loaded again is never written). :func:`load_estimator` builds ``cls(**params)`` (unknown
# parameter names refused), runs ``_check_params``, checks every state entry against the schema (an
# undeclared name is refused, never set), then sets the entries by name and builds declared networks.

#: Parameters not stored: the guard's stimuli, extra unlabelled signals and the training machine's folders
#: (fit-time inputs only); they come back as their defaults.
FIT_ONLY_PARAMS = ("stimuli", "data_dir", "cache_dir", "unlabelled")
#: Float32 arrays at least this large are stored as uint8 codes when that is exact.
QUANTISE_MIN_SIZE = 65_536
_T = "__type__"
_DATACLASSES = {"TrainResult": TrainResult}
#: A shape entry that stands for every dimension of the image shape.
IMAGE_DIMS = "*image"


@dataclass(frozen=True)
class StateField:
    """One declared fitted attribute of a checkpoint and the values it may take.

    Parameters
    ----------
    kind : str
        ``"int"``, ``"float"``, ``"str"``, ``"bool"``, ``"shape"`` (tuple of ints >= 1), ``"array"``,
        ``"scaler"`` (a fitted scaler of :mod:`cortexflow.data.preprocessing`), ``"ridge"`` (a fitted
        scikit-learn ``Ridge``), ``"module"`` (a torch network, rebuilt by ``build``) or ``"any"``
        (any storable value, checked by ``check`` only).
    required : bool
        Whether a checkpoint must hold it.
    nullable : bool
        Whether ``None`` is allowed.
    low, high : float, optional
        Range of a number, or of every value of an array.
    low_open : bool
        ``low`` itself is excluded (``> low`` rather than ``>= low``).
    allowed : tuple, optional
        Allowed values of a string.
    shape : tuple, optional
        Shape of an array: ints, names of dimensions (``"n_features"``, ``"n_pixels"`` and ``"*image"``
        are bound from the checkpoint; another name is bound where it first occurs and must agree
        everywhere else) or None (any size). For a ``"ridge"``: ``(outputs,)``. For a ``"scaler"``: unused
        (its length is ``n_features``).
    finite : bool
        A float array must hold finite values only.
    build : callable, optional
        ``build(estimator) -> nn.Module`` of a ``"module"`` (called after the other attributes are set);
        the stored weights are then loaded into it, strictly.
    check : callable, optional
        ``check(value) -> str | None``: a problem with the value, or None.
    """

    kind: str
    required: bool = True
    nullable: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    allowed: tuple | None = None
    shape: tuple | None = None
    finite: bool = True
    build: Callable[[Any], Any] | None = None
    check: Callable[[Any], str | None] | None = None

    def describe(self) -> str:
        """The allowed values, in words (for error messages)."""
        if self.kind in ("int", "float") or (self.kind == "array" and (self.low is not None or self.high is not None)):
            lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
            hi = "" if self.high is None else f"<= {self.high:g}"
            rng = " and ".join(x for x in (lo, hi) if x)
            what = {"int": "an integer", "float": "a finite number"}.get(self.kind, "an array of values")
            return f"{what}{' ' + rng if rng else ''}{' or null' if self.nullable else ''}"
        if self.allowed is not None:
            return "one of " + ", ".join(map(repr, self.allowed))
        return {"str": "a string", "bool": "true or false", "shape": "a list of integers >= 1",
                "array": f"an array{' of shape ' + str(list(self.shape)) if self.shape else ''}",
                "scaler": "a fitted scaler", "ridge": "a fitted ridge", "module": "a network"}.get(self.kind, "a value")


def _number_ok(v: Any, f: StateField) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return False
    if f.kind == "int" and not isinstance(v, (int, np.integer)):
        return False
    if not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(float(v)):
        return False
    v = float(v)
    if f.low is not None and (v < f.low or (f.low_open and v == f.low)):
        return False
    return f.high is None or v <= f.high


#: Codecs of value types the packer does not know itself (registered by the layers that define them).
_STATE_TYPES: dict[str, tuple[type, Callable, Callable]] = {}
#: Sections of objects stored once however often they are referenced (e.g. ``"priors"``).
_SHARED_SECTIONS: dict[str, tuple[Callable, Callable]] = {}


def register_state_type(name: str, cls: type, pack: Callable[["StatePacker", Any, str], dict],
                        unpack: Callable[["StateUnpacker", dict, str], Any]) -> None:
    """Teach checkpoints a value type: ``pack(packer, value, key) -> node fields``, ``unpack(unpacker, node, key)``.

    Used by layers above :mod:`cortexflow.models` (the image priors register theirs in
    :mod:`cortexflow.priors.persistence`), so that this module imports none of them.
    """
    _STATE_TYPES[name] = (cls, pack, unpack)


def register_shared_section(section: str, pack: Callable[["StatePacker", Any, int], dict],
                            unpack: Callable[["StateUnpacker", Any, int], Any]) -> None:
    """A top-level list of ``section`` entries, each stored once: ``pack(packer, obj, index) -> JSON entry``
    (its tensors named ``"<section>.<index>.*"``), ``unpack(unpacker, entry, index) -> obj``."""
    _SHARED_SECTIONS[section] = (pack, unpack)


def fitted_attributes(est: Any, skip: Iterable[str] = ()) -> dict[str, Any]:
    """The estimator's fitted attributes: public names ending in ``_`` (scikit-learn's convention)."""
    skip = set(skip) | {"checkpoint_meta_"}  # the metadata a loaded decoder was read from
    return {k: v for k, v in vars(est).items() if k.endswith("_") and not k.startswith("_") and k not in skip}


def _exact_uint8(a: np.ndarray) -> np.ndarray | None:
    """uint8 codes ``q`` with ``q / 255 == a`` bit for bit (float32 arithmetic), or None."""
    if a.dtype != np.float32 or a.size < QUANTISE_MIN_SIZE or not np.isfinite(a).all():
        return None
    q = np.rint(a * np.float32(255))
    if q.min() < 0 or q.max() > 255:
        return None
    q = q.astype(np.uint8)
    return q if np.array_equal(q.astype(np.float32) / np.float32(255), a) else None


class StatePacker:
    """Turns estimator state into JSON nodes plus named tensors.

    Storable: None, bools, ints, floats (non-finite ones too), strings, paths, numpy arrays and scalars
    (dtype kept; large float32 arrays that are exactly ``k / 255`` as uint8 codes), torch tensors, lists,
    tuples and dicts of those (any key type), :class:`~cortexflow.training.CCCV1Config`,
    :class:`~cortexflow.training.trainer.TrainResult`, the scalers of :mod:`cortexflow.data.preprocessing`,
    scikit-learn ``Ridge``/``RidgeCV`` (rebuilt as a ``Ridge`` that predicts identically), torch networks
    (their ``state_dict``), nested estimators, and the types of :func:`register_state_type`.

    Attributes
    ----------
    tensors : dict of str to torch.Tensor
        The tensors to write (each its own copy: no two share memory).
    shared : dict of str to list
        The entries of each shared section (see :func:`register_shared_section`).
    """

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.shared: dict[str, list] = {}
        self._shared_index: dict[tuple[str, int], int] = {}

    def add_tensor(self, name: str, tensor: torch.Tensor) -> str:
        """Store a copy of ``tensor`` under ``name`` (a name used twice is an error)."""
        if name in self.tensors:
            raise CheckpointError(f"checkpoint tensor {name!r} written twice")
        self.tensors[name] = tensor.detach().cpu().contiguous().clone()
        return name

    def add_shared(self, section: str, obj: Any) -> int:
        """Index of ``obj`` in ``section`` (stored once however often it is referenced)."""
        if section not in _SHARED_SECTIONS:
            raise CheckpointError(f"checkpoint section {section!r} is not registered")
        if (section, id(obj)) not in self._shared_index:
            entries = self.shared.setdefault(section, [])
            i = len(entries)
            entries.append(None)
            entries[i] = _SHARED_SECTIONS[section][0](self, obj, i)
            self._shared_index[(section, id(obj))] = i
        return self._shared_index[(section, id(obj))]

    def add_prior(self, prior: Any) -> int:
        """Index of an image prior in the ``"priors"`` section (registered by :mod:`cortexflow.priors.persistence`)."""
        return self.add_shared("priors", prior)

    @property
    def priors(self) -> list:
        """The entries of the ``"priors"`` section."""
        return self.shared.get("priors", [])

    def pack(self, value: Any, key: str) -> Any:
        """The JSON node of ``value``; ``key`` names it in tensor names and error messages."""
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, np.generic):
            item = value.item()
            if not isinstance(item, (bool, int, float, str)):
                raise CheckpointError(f"cannot store {key}: numpy scalar of dtype {value.dtype}")
            return {_T: "scalar", "dtype": value.dtype.str, "value": self.pack(item, key)}
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value) if math.isfinite(value) else {_T: "float", "value": repr(float(value))}
        if isinstance(value, np.ndarray):
            return self._pack_array(value, key)
        if isinstance(value, torch.Tensor):
            return {_T: "tensor", "name": self.add_tensor(f"{key}", value)}
        if isinstance(value, os.PathLike):
            return {_T: "path", "value": os.fspath(value)}
        if isinstance(value, (list, tuple)):
            return {_T: type(value).__name__, "items": [self.pack(v, f"{key}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value):
                return {_T: "dict", "items": {k: self.pack(v, f"{key}.{k}") for k, v in value.items()}}
            return {_T: "dict", "pairs": [[self.pack(k, f"{key}.key{i}"), self.pack(v, f"{key}.{i}")]
                                          for i, (k, v) in enumerate(value.items())]}
        for name, (cls, pack, _) in _STATE_TYPES.items():
            if isinstance(value, cls):
                return {_T: name, **pack(self, value, key)}
        if isinstance(value, CCCV1Config):
            return {_T: "cccv1_config", "value": self.pack(value.to_dict(), f"{key}.config")}
        if isinstance(value, (SignalScaler, ImageScaler)):
            # per-feature statistics (lists in get_state) go to the weights file as float64 arrays, exactly
            state = {k: np.asarray(v, dtype=np.float64) if k.endswith("_") and isinstance(v, list) else v
                     for k, v in value.get_state().items()}
            return {_T: type(value).__name__, "state": self.pack(state, f"{key}.state")}
        if isinstance(value, (Ridge, RidgeCV)):
            check_is_fitted(value, "coef_")
            alpha = getattr(value, "alpha_", getattr(value, "alpha", None))
            return {_T: "ridge", "alpha": self.pack(alpha, f"{key}.alpha"), "coef": self.pack(value.coef_, f"{key}.coef"),
                    "intercept": self.pack(value.intercept_, f"{key}.intercept"),
                    "n_features_in": int(value.n_features_in_)}
        if isinstance(value, nn.Module):
            for k, v in value.state_dict().items():
                self.add_tensor(f"{key}.{k}", v)
            return {_T: "module", "class": type(value).__name__, "prefix": f"{key}."}
        if dataclasses.is_dataclass(value) and type(value).__name__ in _DATACLASSES:
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            return {_T: "dataclass", "class": type(value).__name__, "fields": self.pack(fields, key)}
        if hasattr(value, "get_params") and hasattr(value, "predict") and getattr(value, "checkpoint_kind", None):
            return self.pack_estimator(value, key)
        raise CheckpointError(
            f"cannot store {key} of type {type(value).__name__} in a checkpoint; storable: None, bool, int, float, "
            "str, numpy arrays and scalars, lists, tuples and dicts of those, CCCV1Config, TrainResult, "
            "SignalScaler, ImageScaler, Ridge/RidgeCV, torch networks, nested decoders"
            + (f", {', '.join(t[0].__name__ for t in _STATE_TYPES.values())}" if _STATE_TYPES else "")
            + " (add the type with cortexflow.models.checkpoint.register_state_type)"
        )

    def _pack_array(self, a: np.ndarray, key: str) -> dict[str, Any]:
        if a.dtype.kind in "OUS":
            return {_T: "strarray", "items": [str(v) for v in a.ravel().tolist()], "shape": list(a.shape),
                    "dtype": "str" if a.dtype.kind in "US" else "object"}
        q = _exact_uint8(a)
        if q is not None:
            return {_T: "array", "name": self.add_tensor(key, torch.from_numpy(q)), "shape": list(a.shape),
                    "encoding": "uint8/255"}
        a = np.ascontiguousarray(a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("=")))
        try:
            tensor = torch.from_numpy(a.copy())
        except TypeError as exc:
            raise CheckpointError(f"cannot store {key}: numpy dtype {a.dtype} has no torch equivalent") from exc
        return {_T: "array", "name": self.add_tensor(key, tensor), "shape": list(a.shape)}

    def pack_estimator(self, est: Any, key: str, skip: Iterable[str] = ()) -> dict[str, Any]:
        """Node of a fitted estimator: its class, parameters (minus :data:`FIT_ONLY_PARAMS`) and declared state."""
        prefix = f"{key}." if key else ""
        return {_T: "estimator", "class": type(est).__name__,
                "params": self.pack(checkpoint_params(est), prefix + "params"),
                "state": self.pack(checkpoint_state(est, skip, nested=bool(key)), prefix + "state")}


def checkpoint_params(est: Any) -> dict[str, Any]:
    """The parameters a checkpoint stores: ``get_params(deep=False)`` minus :data:`FIT_ONLY_PARAMS`.

    A ``random_state`` that is not an int is stored as the seed it gave (``seed_``, else None).

    Raises
    ------
    CheckpointError
        A parameter that is a function (it cannot be stored; name it and its type).
    """
    params = {k: v for k, v in est.get_params(deep=False).items() if k not in FIT_ONLY_PARAMS}
    if "random_state" in params and params["random_state"] is not None \
            and not isinstance(params["random_state"], (int, np.integer)):
        params["random_state"] = getattr(est, "seed_", None)
    for k, v in params.items():
        if callable(v) and not isinstance(v, (type, nn.Module)) and not hasattr(v, "get_params"):
            raise CheckpointError(f"cannot save {type(est).__name__}: parameter {k}={v!r} is a function, which a "
                                  "checkpoint cannot hold; use the default (None) to save this estimator")
    return params


def checkpoint_schema(cls: type) -> dict[str, StateField]:
    """The declared fitted attributes of ``cls`` (its ``checkpoint_schema``, else one registered for its kind)."""
    schema = getattr(cls, "checkpoint_schema", None)
    if schema is None:
        schema = _KIND_SCHEMAS.get(getattr(cls, "checkpoint_kind", None))
    if schema is None:
        raise CheckpointError(f"{cls.__name__} declares no checkpoint_schema (the fitted attributes its checkpoints "
                              "hold); add one to save or load it")
    return schema


_KIND_SCHEMAS: dict[str, dict[str, StateField]] = {}


def register_state_schema(kind: str, schema: dict[str, StateField]) -> None:
    """The checkpoint schema of the estimators of ``kind`` whose class does not declare ``checkpoint_schema``."""
    _KIND_SCHEMAS[kind] = dict(schema)


def checkpoint_state(est: Any, skip: Iterable[str] = (), nested: bool = False) -> dict[str, Any]:
    """The declared fitted attributes of ``est`` (minus ``skip``).

    ``nested``: ``est`` is a part of another estimator (which may set only some of its attributes);
    its required attributes are not enforced.

    Raises
    ------
    CheckpointError
        A fitted attribute that the class's schema does not declare (a checkpoint without it could
        not predict the same), or a required one that is missing.
    """
    schema = checkpoint_schema(type(est))
    skip = set(skip)
    state = fitted_attributes(est, skip)
    undeclared = sorted(set(state) - set(schema))
    if undeclared:
        raise CheckpointError(
            f"cannot save {type(est).__name__}: fitted attribute(s) {', '.join(undeclared)} are not declared in its "
            f"checkpoint_schema (declared: {', '.join(sorted(schema))})")
    missing = sorted(k for k, f in schema.items() if f.required and k not in state and k not in skip)
    if missing and not nested:
        raise CheckpointError(f"cannot save {type(est).__name__}: required fitted attribute(s) {', '.join(missing)} "
                              "are missing")
    return state


class PendingModule:
    """A stored network's weights, waiting for its schema's ``build`` (see :func:`load_estimator`)."""

    def __init__(self, class_name: str, state: dict[str, torch.Tensor]):
        self.class_name = class_name
        self.state = state


class StateUnpacker:
    """Inverse of :class:`StatePacker`: JSON nodes and tensors back to objects.

    Parameters
    ----------
    tensors : dict of str to torch.Tensor
        The checkpoint's tensors; each one read is removed (what is left over was not used).
    meta : dict or list
        The checkpoint's metadata (its shared sections are rebuilt first); a list is read as the
        ``"priors"`` section (the older signature).
    classes : iterable of type
        Decoder classes that nested ``estimator`` nodes may name.
    where : path
        The checkpoint, for error messages.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], meta: Any, classes: Iterable[type], where: Path):
        self.tensors = dict(tensors)
        self.classes = {c.__name__: c for c in classes}
        self.where = where
        #: named dimensions of the checkpoint (set by :func:`load_estimator`), shared with nested estimators
        self.dims: dict[str, Any] = {}
        if isinstance(meta, list):
            meta = {"priors": meta}
        self.shared: dict[str, list] = {}
        for section, (_, unpack) in _SHARED_SECTIONS.items():
            entries = meta.get(section, [])
            if not isinstance(entries, list):
                raise CheckpointError(f"checkpoint {where}: field {section!r} is {entries!r}; expected a JSON array")
            self.shared[section] = [unpack(self, entry, i) for i, entry in enumerate(entries)]

    @property
    def priors(self) -> list:
        """The objects of the ``"priors"`` section."""
        return self.shared.get("priors", [])

    def error(self, key: str, problem: str) -> CheckpointError:
        """A :class:`CheckpointError` naming the checkpoint and the metadata ``key``."""
        return CheckpointError(f"checkpoint {self.where}: {key} {problem}")

    def take(self, name: Any, key: str) -> torch.Tensor:
        """Remove and return tensor ``name`` (a clear error when the weights file lacks it)."""
        if not isinstance(name, str) or name not in self.tensors:
            raise self.error(key, f"refers to tensor {name!r}, which the weights file does not hold")
        return self.tensors.pop(name)

    def take_prefix(self, prefix: str) -> dict[str, torch.Tensor]:
        """Remove and return every tensor whose name starts with ``prefix`` (the prefix stripped)."""
        names = [k for k in self.tensors if k.startswith(prefix)]
        return {k[len(prefix):]: self.tensors.pop(k) for k in names}

    def unpack(self, node: Any, key: str) -> Any:
        """The object of a JSON node (malformed nodes raise :class:`CheckpointError` naming ``key``)."""
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if not isinstance(node, dict) or not isinstance(node.get(_T), str):
            raise self.error(key, f"is {str(node)[:80]!r}; expected a value or a typed object")
        try:
            return self._unpack_typed(node, key)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, CortexFlowError) as exc:
            raise self.error(key, f"is malformed ({type(exc).__name__}: {exc})") from exc

    def _unpack_typed(self, node: dict, key: str) -> Any:
        kind = node[_T]
        if kind == "float":
            return float(node["value"])
        if kind == "scalar":
            return np.dtype(node["dtype"]).type(self.unpack(node["value"], key))
        if kind == "array":
            a = self.take(node["name"], key).numpy()
            if node.get("encoding") == "uint8/255":
                a = a.astype(np.float32) / np.float32(255)
            elif "encoding" in node:
                raise self.error(key, f"has unknown encoding {node['encoding']!r}")
            shape = tuple(int(v) for v in node["shape"])
            if math.prod(shape) != a.size:
                raise self.error(key, f"has {a.size} values in the weights file; its shape {list(shape)} needs "
                                      f"{math.prod(shape)}")
            return a.reshape(shape)
        if kind == "strarray":
            dtype = str if node["dtype"] == "str" else object
            return np.array(node["items"], dtype=dtype).reshape(node["shape"])
        if kind == "tensor":
            return self.take(node["name"], key)
        if kind == "path":
            return Path(node["value"])
        if kind in ("list", "tuple"):
            items = [self.unpack(v, f"{key}.{i}") for i, v in enumerate(node["items"])]
            return items if kind == "list" else tuple(items)
        if kind == "dict":
            if "items" in node:
                return {k: self.unpack(v, f"{key}.{k}") for k, v in node["items"].items()}
            return {self.unpack(k, f"{key}.key{i}"): self.unpack(v, f"{key}.{i}") for i, (k, v) in enumerate(node["pairs"])}
        if kind in _STATE_TYPES:
            return _STATE_TYPES[kind][2](self, node, key)
        if kind == "cccv1_config":
            return CCCV1Config.from_dict(self.unpack(node["value"], key))
        if kind in ("SignalScaler", "ImageScaler"):
            cls = SignalScaler if kind == "SignalScaler" else ImageScaler
            return cls.from_state(self.unpack(node["state"], key))
        if kind == "ridge":
            alpha = self.unpack(node["alpha"], f"{key}.alpha")
            ridge = Ridge(alpha=alpha)
            ridge.coef_ = self.unpack(node["coef"], f"{key}.coef")
            ridge.intercept_ = self.unpack(node["intercept"], f"{key}.intercept")
            ridge.alpha_ = alpha
            ridge.n_features_in_ = int(node["n_features_in"])
            return ridge
        if kind == "module":
            prefix = node["prefix"]
            if not isinstance(prefix, str) or not prefix:
                raise self.error(key, f"has prefix {prefix!r}; expected a tensor-name prefix")
            state = self.take_prefix(prefix)
            for name, t in state.items():
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    raise self.error(key, f"weight tensor {name!r} holds {int((~torch.isfinite(t)).sum())} NaN or "
                                          "infinite value(s)")
            return PendingModule(str(node["class"]), state)
        if kind == "dataclass":
            cls = _DATACLASSES.get(node["class"])
            if cls is None:
                raise self.error(key, f"names class {node['class']!r}; known: {', '.join(_DATACLASSES)}")
            return cls(**self.unpack(node["fields"], key))
        if kind == "estimator":
            return self.unpack_estimator(node, key)
        raise self.error(key, f"has unknown type {kind!r}")

    def unpack_estimator(self, node: dict, key: str, cls: type | None = None, **overrides: Any) -> Any:
        """A fitted, validated estimator from its node; ``overrides`` replace stored parameters (e.g. ``device``)."""
        if cls is None:
            cls = self.classes.get(node.get("class"))
            if cls is None:
                raise self.error(key, f"names class {node.get('class')!r}; this loader knows: "
                                      f"{', '.join(sorted(self.classes)) or 'none'}")
        prefix = f"{key}." if key else ""
        params = self.unpack(node["params"], prefix + "params")
        state = self.unpack(node["state"], prefix + "state")
        if not isinstance(params, dict) or not isinstance(state, dict):
            raise self.error(key or "metadata", "has params or state that is not an object")
        return restore_estimator(cls, params, state, self.where, prefix, overrides, dims=self.dims, nested=True)


#: Parameter and fitted-attribute names a release renamed (old -> new), so that checkpoints written before the
#: rename still load: :func:`restore_estimator` reads an old name as the new one when the class has the new one.
RENAMED_NAMES = {
    "finetune_decoder": "fine_tune_decoder",  # cccv1-prior family
    "finetune_lr_factor": "fine_tune_lr_factor",
    "finetune_epochs": "fine_tune_epochs",  # mindvis-lite, mindvis-prior
    "finetune_result_": "fine_tune_result_",
}


def _current_names(stored: dict[str, Any], known: Iterable[str]) -> dict[str, Any]:
    """``stored`` with every renamed key (:data:`RENAMED_NAMES`) spelled as ``known`` spells it now."""
    known = set(known)
    out = {}
    for key, value in stored.items():
        new = RENAMED_NAMES.get(key)
        if key not in known and new in known and new not in stored:
            key = new
        out[key] = value
    return out


def restore_estimator(cls: type, params: dict[str, Any], state: dict[str, Any], where: Path, prefix: str = "",
                      overrides: dict[str, Any] | None = None, dims: dict[str, Any] | None = None,
                      nested: bool = False) -> Any:
    """Build ``cls(**params)``, validate its parameters and the ``state`` entries, then set them by name.

    ``nested``: a part of another estimator (its required attributes are not enforced, its values are).

    Raises
    ------
    CheckpointError
        An unknown parameter, a parameter its own validation refuses, a state entry that is not
        declared in the class's schema, a missing required entry, or a value of the wrong type, range,
        shape or finiteness; the message names the checkpoint, the key and the allowed values.
    """
    names = set(cls._get_param_names())
    params = _current_names(params, names)
    unknown = sorted(set(params) - names)
    if unknown:
        raise CheckpointError(f"checkpoint {where}: field '{prefix}params' has unknown parameter(s) "
                              f"{', '.join(map(repr, unknown))} for {cls.__name__}; allowed: {', '.join(sorted(names))}")
    params = {**params, **{k: v for k, v in (overrides or {}).items() if k in names}}
    try:
        obj = cls(**params)
        check = getattr(obj, "_check_params", None)
        if check is not None:
            check()
    except (TypeError, ValueError, CortexFlowError) as exc:
        raise CheckpointError(f"checkpoint {where}: field '{prefix}params' is invalid for {cls.__name__}: {exc}") from exc
    schema = checkpoint_schema(cls)
    state = _current_names(state, schema)
    for name in state:
        if name not in schema:
            raise CheckpointError(f"checkpoint {where}: state entry '{prefix}state.{name}' is not a fitted attribute of "
                                  f"{cls.__name__}; allowed: {', '.join(sorted(schema))}")
    dims = dict(dims or {})
    check_state(cls, schema, state, where, prefix + "state.", dims, nested=nested)
    for name, value in state.items():
        if not isinstance(value, PendingModule):
            setattr(obj, name, value)
    for name, value in state.items():
        if isinstance(value, PendingModule):
            setattr(obj, name, _build_module(obj, name, schema[name], value, where, prefix + "state."))
    return obj


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``exc`` as one line of at most ``limit`` characters (PyTorch's size-mismatch reports span many)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _build_module(obj: Any, name: str, field: StateField, pending: PendingModule, where: Path, prefix: str):
    if field.build is None:
        raise CheckpointError(f"checkpoint {where}: state entry '{prefix}{name}' holds a network, but "
                              f"{type(obj).__name__} declares no way to build it")
    try:
        with torch.random.fork_rng(devices=[]):  # construction draws throw-away weights; the global stream is kept
            module = field.build(obj)
        module.load_state_dict(pending.state, strict=True)
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError, CortexFlowError) as exc:
        raise CheckpointError(f"checkpoint {where}: the weights of '{prefix}{name}' do not match the stored "
                              f"parameters and state ({type(exc).__name__}: {one_line(exc)})") from exc
    return module.eval()


def _bind(dims: dict[str, Any], name: str, size: int, where: Path, key: str, axis: int) -> None:
    if name not in dims:
        dims[name] = size
    elif dims[name] != size:
        raise CheckpointError(f"checkpoint {where}: '{key}' has {size} along axis {axis}, but {name} is {dims[name]} "
                              "elsewhere in the checkpoint; the arrays do not fit together")


def _check_shape(shape: tuple[int, ...], spec: tuple, dims: dict[str, Any], where: Path, key: str) -> None:
    expect: list[Any] = []
    for s in spec:
        expect.extend(list(dims.get(IMAGE_DIMS, ())) if s == IMAGE_DIMS else [s])
    if len(shape) != len(expect):
        raise CheckpointError(f"checkpoint {where}: '{key}' has shape {list(shape)}; expected {len(expect)} "
                              f"dimension(s) {[str(e) for e in expect]}")
    for axis, (size, e) in enumerate(zip(shape, expect)):
        if isinstance(e, int) and size != e:
            raise CheckpointError(f"checkpoint {where}: '{key}' has shape {list(shape)}; expected {e} along axis {axis}")
        if isinstance(e, str):
            _bind(dims, e, int(size), where, key, axis)


def _check_array(a: np.ndarray, f: StateField, where: Path, key: str, dims: dict[str, Any]) -> None:
    if f.shape is not None:
        _check_shape(a.shape, f.shape, dims, where, key)
    if a.dtype.kind in "fc" and f.finite and not np.all(np.isfinite(a)):
        raise CheckpointError(f"checkpoint {where}: '{key}' holds {int((~np.isfinite(a)).sum())} NaN or infinite "
                              f"value(s); expected {f.describe()}")
    if a.dtype.kind in "fiu" and a.size and (f.low is not None or f.high is not None):
        bad = np.zeros(a.shape, dtype=bool)
        if f.low is not None:
            bad |= (a <= f.low) if f.low_open else (a < f.low)
        if f.high is not None:
            bad |= a > f.high
        if bad.any():
            raise CheckpointError(f"checkpoint {where}: '{key}' holds {int(bad.sum())} value(s) out of range (first: "
                                  f"{a[bad].ravel()[0]!r}); expected {f.describe()}")


def _check_scaler(sc: Any, where: Path, key: str, dims: dict[str, Any]) -> None:
    if isinstance(sc, ImageScaler):
        if not (math.isfinite(sc.data_min_) and math.isfinite(sc.data_max_)) or sc.data_max_ < sc.data_min_:
            raise CheckpointError(f"checkpoint {where}: '{key}' has data_min_={sc.data_min_!r}, data_max_="
                                  f"{sc.data_max_!r}; expected finite values with data_min_ <= data_max_")
        _bind(dims, "n_pixels", int(sc.n_pixels_), where, f"{key}.n_pixels_", 0)
        return
    for name, value in vars(sc).items():
        if not name.endswith("_") or not isinstance(value, (np.ndarray, float, int)) or isinstance(value, bool):
            continue
        arr = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise CheckpointError(f"checkpoint {where}: '{key}.{name}' holds {int((~np.isfinite(arr)).sum())} NaN or "
                                  "infinite value(s); expected finite values")
        if name == "scale_" and np.any(arr <= 0):
            raise CheckpointError(f"checkpoint {where}: '{key}.scale_' holds {int((arr <= 0).sum())} value(s) <= 0 "
                                  "(first: {!r}); a scale must be a finite number > 0".format(arr[arr <= 0].ravel()[0]))
    if isinstance(sc, SignalScaler):
        if np.ndim(sc.mean_) != 1 or np.shape(sc.scale_) != np.shape(sc.mean_):
            raise CheckpointError(f"checkpoint {where}: '{key}' has mean_ of shape {list(np.shape(sc.mean_))} and "
                                  f"scale_ of shape {list(np.shape(sc.scale_))}; expected one value per feature each")
        _bind(dims, "n_features", len(sc.mean_), where, f"{key}.mean_", 0)


def _check_ridge(r: Any, f: StateField, where: Path, key: str, dims: dict[str, Any]) -> None:
    coef, intercept = np.asarray(r.coef_), np.asarray(r.intercept_)
    for name, a in (("coef_", coef), ("intercept_", intercept)):
        if a.dtype.kind not in "fiu" or not np.all(np.isfinite(a)):
            raise CheckpointError(f"checkpoint {where}: '{key}.{name}' holds NaN, infinite or non-numeric values; "
                                  "expected finite numbers")
    if coef.ndim not in (1, 2) or coef.shape[-1] != r.n_features_in_:
        raise CheckpointError(f"checkpoint {where}: '{key}.coef_' has shape {list(coef.shape)}; expected "
                              f"(outputs, {r.n_features_in_})")
    _bind(dims, "n_features", int(r.n_features_in_), where, f"{key}.coef_", coef.ndim - 1)
    n_out = coef.shape[0] if coef.ndim == 2 else 1
    if intercept.size != n_out:
        raise CheckpointError(f"checkpoint {where}: '{key}.intercept_' has {intercept.size} values; expected {n_out}")
    if f.shape:
        _bind(dims, f.shape[0], n_out, where, f"{key}.coef_", 0)


def check_state(cls: type, schema: dict[str, StateField], state: dict[str, Any], where: Path, prefix: str,
                dims: dict[str, Any], nested: bool = False) -> None:
    """Check every ``state`` entry against ``schema`` (types, ranges, allowed strings, shapes, finiteness).

    ``dims`` holds the named dimensions known so far (``n_features``, ``n_pixels``, ``*image``); the
    others are bound where they first occur.
    """
    missing = sorted(k for k, f in schema.items() if f.required and k not in state)
    if missing and not nested:
        raise CheckpointError(f"checkpoint {where}: state entr{'y' if len(missing) == 1 else 'ies'} "
                              f"{', '.join(prefix + m for m in missing)} of {cls.__name__} missing")
    if "image_shape_" in state and IMAGE_DIMS not in dims:
        _set_image_dims(dims, state["image_shape_"], where, prefix + "image_shape_")
    if "n_features_in_" in state and "n_features" not in dims and _number_ok(state["n_features_in_"],
                                                                              StateField("int", low=1)):
        dims["n_features"] = int(state["n_features_in_"])
    for name, value in state.items():
        f, key = schema[name], prefix + name
        if value is None:
            if f.nullable:
                continue
            raise CheckpointError(f"checkpoint {where}: '{key}' is null; expected {f.describe()}")
        problem = None
        if f.kind in ("int", "float"):
            if not _number_ok(value, f):
                problem = f"is {value!r}"
            elif name == "n_features_in_":
                _bind(dims, "n_features", int(value), where, key, 0)
        elif f.kind == "str":
            if not isinstance(value, str) or (f.allowed is not None and value not in f.allowed):
                problem = f"is {value!r}"
        elif f.kind == "bool":
            if not isinstance(value, (bool, np.bool_)):
                problem = f"is {value!r}"
        elif f.kind == "shape":
            if not isinstance(value, (tuple, list)) or not all(
                    isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in value):
                problem = f"is {value!r}"
            elif name == "output_shape_" and IMAGE_DIMS in dims and tuple(value) != dims[IMAGE_DIMS]:
                problem = f"is {list(value)!r} but the image shape is {list(dims[IMAGE_DIMS])}"
        elif f.kind == "array":
            if not isinstance(value, np.ndarray):
                problem = f"is a {type(value).__name__}"
            else:
                _check_array(value, f, where, key, dims)
        elif f.kind == "scaler":
            if not isinstance(value, (SignalScaler, ImageScaler)) and not hasattr(value, "transform"):
                problem = f"is a {type(value).__name__}"
            else:
                _check_scaler(value, where, key, dims)
        elif f.kind == "ridge":
            if not isinstance(value, (Ridge, RidgeCV)):
                problem = f"is a {type(value).__name__}"
            else:
                _check_ridge(value, f, where, key, dims)
        elif f.kind == "module":
            if not isinstance(value, PendingModule):
                problem = f"is a {type(value).__name__}, not stored network weights"
        if problem is None and f.check is not None:
            problem = f.check(value)
        if problem is not None:
            raise CheckpointError(f"checkpoint {where}: '{key}' {problem}; expected {f.describe()}")


def _set_image_dims(dims: dict[str, Any], shape: Any, where: Path, key: str) -> None:
    if not isinstance(shape, (tuple, list)) or len(shape) > 3 or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in shape):
        raise CheckpointError(f"checkpoint {where}: '{key}' is {shape!r}; expected at most 3 integers >= 1 "
                              "((H, W) or (H, W, C))")
    shape = tuple(int(v) for v in shape)
    dims[IMAGE_DIMS] = shape
    _bind(dims, "n_pixels", math.prod(shape), where, key, 0)


def save_estimator(est: Any, path: str | os.PathLike, *, skip: Iterable[str] = (),
                   extra: Callable[[StatePacker], dict] | None = None) -> Path:
    """Write the checkpoint of a fitted estimator: its parameters and declared fitted state.

    Parameters
    ----------
    est : estimator
        Fitted; its class has ``checkpoint_kind`` and a checkpoint schema (see :func:`checkpoint_schema`).
    path : path-like
        Checkpoint folder (written atomically; an old checkpoint is replaced).
    skip : iterable of str
        Fitted attributes that ``extra`` stores itself (e.g. a torch network).
    extra : callable, optional
        ``extra(packer) -> dict``: adds tensors through the packer and returns the metadata stored
        under ``"network"``.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    sklearn.exceptions.NotFittedError
        ``est`` is not fitted.
    CheckpointError
        A parameter or fitted attribute that cannot be stored or is not declared.
    """
    check_is_fitted(est)
    packer = StatePacker()
    body = packer.pack_estimator(est, "", skip)
    image_shape = getattr(est, "image_shape_", getattr(est, "output_shape_", None))
    if image_shape is None:
        raise CheckpointError(f"cannot save {type(est).__name__}: it has no image_shape_ (set by fit)")
    meta = {
        "format": CHECKPOINT_FORMAT,
        "kind": type(est).checkpoint_kind,
        "estimator": type(est).__name__,
        "cortexflow_version": __version__,
        "torch_version": torch.__version__,
        "n_features_in": int(est.n_features_in_),
        "image_shape": [int(v) for v in image_shape],
        "output_shape": [int(v) for v in getattr(est, "output_shape_", image_shape)],
        "params": body["params"],
        "state": body["state"],
    }
    if extra is not None:
        meta["network"] = extra(packer)
    meta.update(packer.shared)
    return write_checkpoint(path, meta, packer.tensors)


def load_estimator(cls: type, path: str | os.PathLike, device: str = "auto", *, classes: Iterable[type] = (),
                   network: Callable[[Any, Any, StateUnpacker], None] | None = None) -> Any:
    """Load a checkpoint written by :func:`save_estimator` as a fitted instance of ``cls``, validated value by value.

    Parameters
    ----------
    cls : type
        The estimator class; the checkpoint's ``kind`` must be ``cls.checkpoint_kind``.
    path : path-like
    device : str
        Stored as the ``device`` parameter when ``cls`` has one.
    classes : iterable of type
        Classes of nested estimators.
    network : callable, optional
        ``network(obj, meta_network, unpacker)``: rebuilds what ``extra`` stored.

    Raises
    ------
    CheckpointError
        Missing or corrupt files, a weights hash that differs, another kind of checkpoint, parameters
        the class refuses, a state entry that is undeclared, missing or out of its allowed values, or
        arrays whose shapes do not fit together.
    """
    kind = cls.checkpoint_kind
    meta, fmt, meta_path, w_path = read_checkpoint_meta(path)
    found = checkpoint_kind(meta)
    if found != kind:
        raise CheckpointError(
            f"checkpoint {path} holds a {found or 'cccv1'!r} decoder, not {kind!r}; load it with "
            "cortexflow.models.loader.load_decoder"
        )
    for key, typ in (("params", dict), ("state", dict), ("n_features_in", int)):
        if not isinstance(meta.get(key), typ) or isinstance(meta.get(key), bool):
            raise CheckpointError(f"checkpoint {meta_path}: field {key!r} is {meta.get(key, 'missing')!r}; "
                                  f"expected a JSON {'integer' if typ is int else 'object'}")
    if meta["n_features_in"] < 1:
        raise _where(meta_path, "n_features_in", f"is {meta['n_features_in']}; expected an integer >= 1")
    dims: dict[str, Any] = {"n_features": meta["n_features_in"]}
    image_key = "image_shape" if "image_shape" in meta else "output_shape"  # older checkpoints: output_shape
    _set_image_dims(dims, meta.get(image_key), meta_path, image_key)
    tensors = read_checkpoint_weights(w_path, meta, fmt, finite_prefixes=("priors.", "model."))
    unpacker = StateUnpacker(tensors, meta, classes, meta_path)
    unpacker.dims = dict(dims)
    params = unpacker.unpack(meta["params"], "params")
    state = unpacker.unpack(meta["state"], "state")
    if not isinstance(params, dict) or not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {meta_path}: params or state is not an object")
    state.setdefault("image_shape_", dims[IMAGE_DIMS])  # checkpoints written before the attribute existed
    overrides = {"device": device} if "device" in cls._get_param_names() else {}
    obj = restore_estimator(cls, params, state, meta_path, "", overrides, dims)
    if obj.image_shape_ != dims[IMAGE_DIMS]:
        raise CheckpointError(f"checkpoint {meta_path}: state entry 'state.image_shape_' is {list(obj.image_shape_)}, "
                              f"but field {image_key!r} is {list(dims[IMAGE_DIMS])}")
    obj.image_shape_ = tuple(int(v) for v in obj.image_shape_)
    if network is not None:
        network(obj, meta.get("network"), unpacker)
    if unpacker.tensors:
        names = sorted(unpacker.tensors)
        raise CheckpointError(f"checkpoint {w_path}: {len(names)} tensor(s) that the metadata does not refer to "
                              f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    if getattr(obj, "n_features_in_", None) != meta["n_features_in"]:
        raise CheckpointError(f"checkpoint {meta_path}: field 'n_features_in' is {meta['n_features_in']}, but the "
                              f"stored state has {getattr(obj, 'n_features_in_', None)}")
    obj.checkpoint_meta_ = meta
    return obj
