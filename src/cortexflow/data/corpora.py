"""Registry of image-prior corpora: external images of the same kind as a data set's stimuli.

A prior corpus teaches an image prior (:mod:`cortexflow.models.prior`) what
the stimuli of a data set look like, from many images that are never
evaluation data. Three corpora are registered:

``mnist-t10k``
    The 10,000 MNIST test digits, two IDX files pinned to a public commit and
    sha256, fetched like the data sets into ``<data_dir>/priors/mnist/``
    (``CORTEXFLOW_DATA`` pointing at the shared data folder needs no network).
``miyawaki-patterns``
    Random 10x10 binary patterns and random geometric shapes on the same
    10x10 grid, rendered to 28x28 exactly as the miyawaki file renders its
    patterns (nearest-neighbour zoom: cell rows/columns of 2, 3, ..., 3, 2
    pixels). Generated from a seed (and kept in ``<cache root>/corpora/``).
``font-letters``
    The 26 lower-case letters drawn with matplotlib's DejaVu fonts, with
    random affine and elastic deformation, black on white like the Crell
    letter targets. Generated from a seed (and kept in ``<cache root>/corpora/``).
``color-shapes``
    RGB images (32x32x3) of coloured rectangles, ellipses and triangles on a
    coloured background: a corpus for RGB data sets. Generated from a seed.

:func:`default_prior` names the corpus that a registered data set uses when a
method is not told which.

**Any image shape at use.** A corpus is stored at its own shape
(``CorpusInfo.image_shape``) and converted to a data set's shape when it is
loaded for it (``load_corpus(..., image_shape=)``, :func:`convert_images`):
the colour first (grayscale -> RGB copies the channel; RGB -> grayscale takes
the ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B``), then the size, each
axis on its own: **area** averaging where a side shrinks (every output pixel
the exact mean of the input area it covers), **bilinear** interpolation
(half-pixel centres, edges clamped) where it grows. A corpus drawn on a grid
(``grid_shape``: ``miyawaki-patterns``, 10x10) is first read back to its exact
grid and rendered at the target size by the nearest-neighbour rule of the
miyawaki file (:func:`cortexflow.data.grids.upscale_grid`), so at 10x10 it is
the binary grids themselves. At the stored shape nothing is changed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cortexflow.data.fetch import ensure_pinned_file, get_cache_dir, get_data_dir
from cortexflow.data.pinned import PinnedFile
from cortexflow.exceptions import ConfigError, DataValidationError
from cortexflow.data.generators import (COLOR_SHAPES_VERSION, LETTERS_VERSION, MIYAWAKI_VERSION, color_shapes,
                                        font_letters, miyawaki_patterns)
from cortexflow.data.grids import recover_grid, upscale_grid
from cortexflow.data.validation import normalize_image_shape
from cortexflow.utils.io import atomic_write_with

__all__ = [
    "CorpusFile",
    "CorpusInfo",
    "Corpus",
    "CORPORA",
    "list_corpora",
    "get_corpus_info",
    "load_corpus",
    "corpus_dir",
    "read_idx",
    "generated_checksum",
    "content_checksum",
    "default_prior",
    "DEFAULT_PRIORS",
    "convert_images",
    "resize_images",
]

logger = logging.getLogger(__name__)

IMAGE_SIZE = 28


#: One pinned public file of a corpus (the same type as a data set's file).
CorpusFile = PinnedFile


@dataclass(frozen=True)
class CorpusInfo:
    """Static description of one registered corpus.

    Attributes
    ----------
    name : str
        Registry key (``cortexflow prior train --corpus NAME``).
    kind : {"files", "generated"}
        Read from pinned files, or generated from a seed.
    description : str
        One line.
    n_images : int
        Number of images the corpus holds.
    folder : str
        Sub-folder of the data folder for ``"files"`` corpora (e.g. ``"priors/mnist"``).
    files : tuple of PinnedFile
        The pinned files (``"files"`` corpora).
    params : dict
        Generator parameters (``"generated"`` corpora); part of the checksum.
    generator_version : str
        Bumped whenever the generator's output changes; part of the checksum.
    citation, licence : str
        Human-readable text.
    image_shape : tuple of int
        Shape of one stored image: ``(H, W)`` or ``(H, W, 3)``.
    grid_shape : tuple of int or None
        The coarse grid the images are nearest-neighbour upscalings of (``(10, 10)``
        for ``miyawaki-patterns``); used to convert them to other shapes exactly.
    """

    name: str
    kind: str
    description: str
    n_images: int
    folder: str = ""
    files: tuple[PinnedFile, ...] = ()
    params: dict = field(default_factory=dict)
    generator_version: str = ""
    citation: str = ""
    licence: str = ""
    image_shape: tuple[int, ...] = (IMAGE_SIZE, IMAGE_SIZE)
    grid_shape: tuple[int, int] | None = None

    def to_dict(self) -> dict:
        """JSON-serialisable dict (with each file's ``url``)."""
        d = asdict(self)
        d["files"] = [f.to_dict() for f in self.files]
        return d


@dataclass
class Corpus:
    """The images of a corpus, loaded.

    Attributes
    ----------
    name : str
    images : ndarray of float32, shape (n, H, W) or (n, H, W, 3), values in [0, 1]
        At the corpus' own shape, or at the shape asked of :func:`load_corpus`.
    labels : ndarray of int64, shape (n,), or None
        Class of each image where the corpus has classes (digit, letter index, shape kind).
    checksum : str
        sha256 identifying the content: of the pinned files' checksums (each
        file is verified against its pin when read), or of the generated
        images and labels themselves (:func:`content_checksum`).
    info : CorpusInfo
    """

    name: str
    images: np.ndarray
    labels: np.ndarray | None
    checksum: str
    info: CorpusInfo

    def __len__(self) -> int:
        return len(self.images)


CORPORA: dict[str, CorpusInfo] = {}
_GENERATORS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {}


def _register(info: CorpusInfo, generator: Callable | None = None) -> None:
    CORPORA[info.name] = info
    if generator is not None:
        _GENERATORS[info.name] = generator


def list_corpora() -> list[str]:
    """Names of the registered corpora, sorted."""
    return sorted(CORPORA)


def get_corpus_info(name: str) -> CorpusInfo:
    """Registry entry of corpus ``name``.

    Raises
    ------
    ConfigError
        ``name`` is not registered (the message lists the corpora).
    """
    if not isinstance(name, str):
        raise ConfigError(f"prior corpus {name!r} is a {type(name).__name__}; it must be one corpus name (a string, "
                          f"e.g. prior=mnist-t10k), one of: {', '.join(list_corpora())}")
    try:
        return CORPORA[name]
    except KeyError:
        raise ConfigError(f"unknown prior corpus {name!r}; registered corpora: {', '.join(list_corpora())}") from None


def corpus_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Folder of a ``"files"`` corpus: ``<data_dir>/<info.folder>``."""
    info = get_corpus_info(name)
    return get_data_dir(data_dir) / info.folder


# ---------------------------------------------------------------- IDX files
_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: str | os.PathLike, *, expected_ndim: int) -> np.ndarray:
    """Read a gzip-compressed IDX file (the MNIST format) into a numpy array.

    Parameters
    ----------
    path : path-like
        ``*.gz`` IDX file: 2 zero bytes, a type byte (0x08 = uint8), a
        dimension-count byte, then that many big-endian uint32 sizes, then the data.
    expected_ndim : int
        3 for an image file, 1 for a label file.

    Returns
    -------
    ndarray of uint8

    Raises
    ------
    DataValidationError
        Not gzip, truncated, wrong magic number, dimension count or length.
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataValidationError(f"{path}: not a readable gzip IDX file ({type(exc).__name__}: {exc})") from exc
    if len(raw) < 4:
        raise DataValidationError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    zero, dtype_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or dtype_code not in _IDX_DTYPES:
        raise DataValidationError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()}; expected 0x000008{expected_ndim:02x} (unsigned bytes)"
        )
    if ndim != expected_ndim:
        raise DataValidationError(f"{path}: IDX file has {ndim} dimension(s); expected {expected_ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataValidationError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    n_values = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != n_values:
        raise DataValidationError(
            f"{path}: IDX header says {dims} = {n_values} values but the file holds {len(raw) - header} "
            "(truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=_IDX_DTYPES[dtype_code], offset=header).reshape(dims)


def _ensure_file(info: CorpusInfo, f: PinnedFile, data_dir, download: bool, progress: bool | None) -> Path:
    return ensure_pinned_file(f, corpus_dir(info.name, data_dir) / f.filename,
                              mirror_path=f"{info.folder}/{f.filename}", label=f"corpus {info.name!r} file {f.filename}", download=download, progress=progress,
                              hint="pass download=True (or point $CORTEXFLOW_DATA at a folder that holds it)")


def _files_checksum(info: CorpusInfo) -> str:
    h = hashlib.sha256()
    for f in info.files:
        h.update(f"{f.filename}:{f.sha256}\n".encode())
    return h.hexdigest()


def generated_checksum(info: CorpusInfo) -> str:
    """sha256 of a generated corpus' name, generator version and parameters."""
    blob = json.dumps({"name": info.name, "version": info.generator_version, "params": info.params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _load_mnist(info: CorpusInfo, data_dir, download: bool, progress) -> tuple[np.ndarray, np.ndarray]:
    paths = {f.filename: _ensure_file(info, f, data_dir, download, progress) for f in info.files}
    images = read_idx(paths["t10k-images-idx3-ubyte.gz"], expected_ndim=3)
    labels = read_idx(paths["t10k-labels-idx1-ubyte.gz"], expected_ndim=1)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or len(images) != len(labels):
        raise DataValidationError(f"corpus {info.name!r}: images {images.shape} and labels {labels.shape} do not match")
    return images.astype(np.float32) / 255.0, labels.astype(np.int64)


def content_checksum(images: np.ndarray, labels: np.ndarray | None) -> str:
    """sha256 of a corpus' images (float32, shape included) and labels (int64): what a cached copy must match."""
    h = hashlib.sha256()
    im = np.ascontiguousarray(images, dtype=np.float32)
    h.update(json.dumps({"images": list(im.shape)}).encode())
    h.update(im.tobytes())
    if labels is not None:
        lab = np.ascontiguousarray(labels, dtype=np.int64)
        h.update(json.dumps({"labels": list(lab.shape)}).encode())
        h.update(lab.tobytes())
    return h.hexdigest()


def _read_generated(path: Path, info: CorpusInfo, checksum: str) -> tuple[np.ndarray, np.ndarray, str]:
    """The verified images, labels and content checksum of a cached generated corpus (ValueError if not intact)."""
    with np.load(path, allow_pickle=False) as z:
        if str(z["checksum"]) != checksum:
            raise ValueError("it was generated with other parameters")
        images, labels, stored = z["images"], z["labels"], str(z["content_sha256"])
    if images.dtype != np.float32 or images.shape != (info.n_images, *info.image_shape):
        raise ValueError(f"images {images.dtype} {images.shape}; expected float32 {(info.n_images, *info.image_shape)}")
    if labels.shape != (info.n_images,) or labels.dtype != np.int64:
        raise ValueError(f"labels {labels.dtype} {labels.shape}; expected int64 ({info.n_images},)")
    if content_checksum(images, labels) != stored:
        raise ValueError("its images do not match the sha256 stored with them (edited or damaged)")
    if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError("its images are not finite values in [0, 1]")
    return images, labels, stored


def _generated(info: CorpusInfo, checksum: str, cache_dir=None) -> tuple[np.ndarray, np.ndarray, str]:
    """Images, labels and content checksum of a generated corpus, from ``<cache root>/corpora/`` when an intact copy is there.

    The cached ``.npz`` stores the sha256 of its images and labels
    (:func:`content_checksum`), checked on every read: a copy that fails
    (unreadable, truncated, other images) is logged and generated again.
    """
    path = get_cache_dir(cache_dir) / "corpora" / f"{info.name}-{checksum[:24]}.npz"
    if path.exists():
        try:
            return _read_generated(path, info, checksum)
        except Exception as exc:  # noqa: BLE001 - a damaged cache copy of any kind is regenerated, never used
            logger.warning("generated corpus cache %s is damaged or unreadable (%s: %s); generating again",
                           path, type(exc).__name__, str(exc)[:200])
    images, labels = _GENERATORS[info.name](**info.params)
    images = np.ascontiguousarray(images, dtype=np.float32)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    content = content_checksum(images, labels)
    try:
        atomic_write_with(path, lambda fh: np.savez(fh, images=images, labels=labels, checksum=np.array(checksum),
                                                    content_sha256=np.array(content)))
    except OSError as exc:  # a read-only cache only costs time
        logger.warning("could not cache generated corpus %s at %s: %s", info.name, path, exc)
    return images, labels, content


def load_corpus(
    name: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    *,
    progress: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    image_shape: tuple[int, ...] | None = None,
) -> Corpus:
    """Load (fetching or generating) the images of corpus ``name``.

    Parameters
    ----------
    name : str
        A registered corpus (:func:`list_corpora`).
    data_dir : path-like, optional
        Data folder of file corpora; see :func:`cortexflow.data.fetch.get_data_dir`.
    download : bool
        Fetch a missing or mismatching file. With ``False`` such a file raises.
    progress : bool, optional
        Download progress bar.
    cache_dir : path-like, optional
        Cache root where generated corpora are kept (default ``$CORTEXFLOW_CACHE``,
        else the user cache folder).
    image_shape : tuple of int, optional
        Return the images converted to this shape (``(H, W)`` or ``(H, W, 3)``; see
        the module docstring). The stored corpus and its ``checksum`` are unchanged.

    Returns
    -------
    Corpus

    Raises
    ------
    ConfigError
        Unknown corpus.
    ChecksumError
        A file does not match its pinned sha256 (and ``download=False``), or a
        download does not.
    DataValidationError
        A file is missing (``download=False``), truncated or corrupt.
    """
    info = get_corpus_info(name)
    if info.kind == "files":
        images, labels = _load_mnist(info, data_dir, download, progress)
        checksum = _files_checksum(info)
    else:
        images, labels, checksum = _generated(info, generated_checksum(info), cache_dir)
    images = np.ascontiguousarray(images, dtype=np.float32)
    if images.shape != (info.n_images, *info.image_shape):
        raise DataValidationError(f"corpus {name!r}: got images {images.shape}; expected {(info.n_images, *info.image_shape)}")
    if image_shape is not None:
        images = convert_images(images, image_shape, grid_shape=info.grid_shape, source=f"corpus {name!r}")
    return Corpus(name=name, images=images, labels=labels, checksum=checksum, info=info)


def _axis_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear map of one axis: identity, area average (shrink) or bilinear (grow)."""
    if n_out == n_in:
        return np.eye(n_in)
    M = np.zeros((n_out, n_in))
    if n_out < n_in:  # area: output pixel j covers [j * r, (j + 1) * r) of the input, r = n_in / n_out
        r = n_in / n_out
        for j in range(n_out):
            lo, hi = j * r, (j + 1) * r
            for i in range(int(np.floor(lo)), min(int(np.ceil(hi)), n_in)):
                M[j, i] = max(0.0, min(hi, i + 1) - max(lo, i)) / r
        return M
    for j in range(n_out):  # bilinear, half-pixel centres (align_corners=False), edges clamped
        src = min(max((j + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1.0)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, n_in - 1)
        M[j, i0] += 1.0 - (src - i0)
        M[j, i1] += src - i0
    return M


def resize_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Images (n, H, W[, C]) resized to (n, h, w[, C]): area average per shrinking axis, bilinear per growing one.

    Float32, clipped to [0, 1]; unchanged (the same array) at the same size.
    """
    images = np.asarray(images, dtype=np.float32)
    h, w = int(size[0]), int(size[1])
    if images.shape[1:3] == (h, w):
        return images
    R = _axis_matrix(images.shape[1], h)
    C = _axis_matrix(images.shape[2], w)
    out = np.einsum("hi,ni...->nh...", R, images.astype(np.float64))
    out = np.einsum("wj,nhj...->nhw...", C, out)
    return np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)


def convert_images(images: np.ndarray, image_shape: tuple[int, ...], *, grid_shape: tuple[int, int] | None = None,
                   source: str = "images") -> np.ndarray:
    """Corpus images (n, H, W[, 3]) converted to ``image_shape`` (colour, then size; see the module docstring).

    Parameters
    ----------
    images : ndarray (n, H, W) or (n, H, W, 3) in [0, 1]
    image_shape : tuple of int
        Target ``(h, w)`` or ``(h, w, 3)`` (sides 8..256; ``(h, w, 1)`` is ``(h, w)``).
    grid_shape : (int, int), optional
        The images are exact nearest-neighbour upscalings of this grid: read
        the grid back and render it at the target size (nearest neighbour,
        the rule of :mod:`cortexflow.data.grids`) instead of resampling.
    source : str
        Named in error messages.

    Returns
    -------
    ndarray of float32 (n, *image_shape); the input itself when it already has that shape.
    """
    target = normalize_image_shape(image_shape, source=source)
    images = np.asarray(images, dtype=np.float32)
    if images.shape[1:] == target:
        return images
    want_rgb, is_rgb = len(target) == 3, images.ndim == 4
    if is_rgb and not want_rgb:
        images = np.tensordot(images.astype(np.float64), np.array([0.299, 0.587, 0.114]), axes=([3], [0]))
        images = np.clip(images, 0.0, 1.0).astype(np.float32)
    elif want_rgb and not is_rgb:
        images = np.repeat(images[..., None], 3, axis=3)
    h, w = target[:2]
    if images.shape[1:3] == (h, w):
        return np.ascontiguousarray(images, dtype=np.float32)
    if grid_shape is not None:
        grid = recover_grid(images, grid_shape, source=source, key="images")
        if h >= grid.shape[1] and w >= grid.shape[2]:
            return np.ascontiguousarray(upscale_grid(grid, (h, w)), dtype=np.float32)
        return resize_images(grid, (h, w))
    return resize_images(images, (h, w))


# ---------------------------------------------------------------- registry
_register(
    CorpusInfo(
        name="mnist-t10k",
        kind="files",
        description="the 10,000 MNIST test digits (handwritten 0-9, 28x28): prior of vangerven and digit EEG targets",
        n_images=10000,
        folder="priors/mnist",
        files=(
            PinnedFile(
                filename="t10k-images-idx3-ubyte.gz",
                repository="kelas/mnist",
                commit="283b387221ab46655e600cfcc25d843bb14292b9",
                source_path="t10k-images-idx3-ubyte.gz",
                sha256="167310007f03058885c7e95e6c0b19c20de5c7fd3031f4cbdadc9014a523d80b",
                size_bytes=1648877,
            ),
            PinnedFile(
                filename="t10k-labels-idx1-ubyte.gz",
                repository="kelas/mnist",
                commit="283b387221ab46655e600cfcc25d843bb14292b9",
                source_path="t10k-labels-idx1-ubyte.gz",
                sha256="fc607395669ec21321ea83e4b82c0544b7e8e63ff5b34337c06bc0a17cc0da3c",
                size_bytes=4542,
            ),
        ),
        citation="LeCun, Y., Cortes, C., Burges, C. J. C. The MNIST database of handwritten digits.",
        licence="CC BY-SA 3.0 (MNIST); the holding repository states none",
    )
)

_register(
    CorpusInfo(
        name="miyawaki-patterns",
        kind="generated",
        description=(
            "random 10x10 binary patterns and random geometric shapes (squares, frames, crosses, lines, "
            "bar glyphs) rendered to 28x28 like the miyawaki stimuli: prior of miyawaki"
        ),
        n_images=10000,
        params={"n_random": 5000, "n_shapes": 5000, "seed": 0},
        generator_version=MIYAWAKI_VERSION,
        grid_shape=(10, 10),
        citation="Miyawaki, Y. et al. (2008). Neuron 60(5): decoders trained on random 10x10 patterns.",
        licence="generated by CortexFlow",
    ),
    miyawaki_patterns,
)

_register(
    CorpusInfo(
        name="font-letters",
        kind="generated",
        description=(
            "the 26 lower-case letters in matplotlib's DejaVu fonts, random affine + elastic deformation, "
            "black on white like the Crell targets: prior of crell"
        ),
        n_images=10400,
        params={"per_letter": 400, "seed": 0},
        generator_version=LETTERS_VERSION,
        citation="DejaVu fonts (shipped with matplotlib).",
        licence="glyphs: DejaVu font licence (free); generated by CortexFlow",
    ),
    font_letters,
)

_register(
    CorpusInfo(
        name="color-shapes",
        kind="generated",
        description=(
            "RGB 32x32 images of one to three coloured rectangles, ellipses and triangles on a coloured "
            "background: a small prior corpus for RGB data sets"
        ),
        n_images=6000,
        params={"n_images": 6000, "seed": 0, "size": 32},
        generator_version=COLOR_SHAPES_VERSION,
        citation="generated by CortexFlow",
        licence="generated by CortexFlow",
        image_shape=(32, 32, 3),
    ),
    color_shapes,
)

#: Default prior corpus of each registered data set (a prefix match for the digit EEG sets).
DEFAULT_PRIORS: dict[str, str] = {
    "vangerven": "mnist-t10k",
    "miyawaki": "miyawaki-patterns",
    "miyawaki-10x10": "miyawaki-patterns",
    "mindbigdata": "mnist-t10k",
    "crell": "font-letters",
}


def default_prior(dataset_name: str | None) -> str | None:
    """Default prior corpus of a data set, or ``None`` when it has none (a user's file).

    ``vangerven`` and the digit EEG data sets (``mindbigdata*``) use
    ``mnist-t10k``, ``miyawaki`` and ``miyawaki-10x10`` use ``miyawaki-patterns``
    (converted to each one's image shape at use: 28x28 and the exact 10x10 grids)
    and ``crell*`` uses ``font-letters``.
    """
    if not dataset_name:
        return None
    name = str(dataset_name).lower()
    if name in DEFAULT_PRIORS:
        return DEFAULT_PRIORS[name]
    if name.startswith("mindbigdata"):
        return "mnist-t10k"
    if name.startswith("crell"):
        return "font-letters"
    return None
