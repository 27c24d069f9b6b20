"""Download and cache the registered datasets, checksum-verified.

The data folder is found, in order, from the ``data_dir`` argument, the
``CORTEXFLOW_DATA`` environment variable, and the user's cache folder
(``pooch.os_cache("cortexflow")``). Files live at ``<data_dir>/<folder>/<file>``
(``folder`` is the dataset's name unless its registry entry says otherwise),
the same layout as the project's shared data folder, so pointing
``CORTEXFLOW_DATA`` at such a folder needs no network at all.

Every pinned file (:class:`~cortexflow.data.pinned.PinnedFile`: a data set's
file, a corpus file of :mod:`cortexflow.data.corpora`) is verified and
downloaded by one function, :func:`ensure_pinned_file`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pooch

from cortexflow.data.pinned import PinnedFile
from cortexflow.data.registry import DatasetInfo, get_dataset_info
from cortexflow.exceptions import ChecksumError, CortexFlowError, DataValidationError
from cortexflow.utils.io import removed_if_empty_on_error, sha256_file
from cortexflow.utils.progress import progress_enabled

__all__ = [
    "get_data_dir",
    "dataset_path",
    "fetch_dataset",
    "checksum_status",
    "cached_sha256",
    "verify_registered_file",
    "download_verified",
    "ensure_pinned_file",
    "DATA_ENV",
    "MIRROR_ENV",
]

logger = logging.getLogger(__name__)

DATA_ENV = "CORTEXFLOW_DATA"
CACHE_ENV = "CORTEXFLOW_CACHE"
MIRROR_ENV = "CORTEXFLOW_MIRROR"

# sha256 of files already hashed in this process, keyed by (real path, size, mtime in ns): a file that
# changes gets a new key, so the cache never vouches for bytes it has not read.
_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def cached_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, computed once per process for each (path, size, modification time)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    digest = _SHA256_CACHE.get(key)
    if digest is None:
        digest = _SHA256_CACHE[key] = sha256_file(path)
    return digest


def _user_folder(value: str | os.PathLike | None, env: str) -> Path:
    """A folder from an argument, then the environment variable ``env``, then the user cache folder."""
    if value is not None:
        return Path(value).expanduser()
    from_env = os.environ.get(env)
    if from_env:
        return Path(from_env).expanduser()
    return Path(pooch.os_cache("cortexflow"))


def get_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Resolve the data folder: argument, then ``$CORTEXFLOW_DATA``, then the user cache."""
    return _user_folder(data_dir, DATA_ENV)


def get_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Resolve the cache root (priors, corpora, embeddings, parsed specs): argument, then ``$CORTEXFLOW_CACHE``,
    then the user cache folder."""
    return _user_folder(cache_dir, CACHE_ENV)


def dataset_path(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Where the file of dataset ``name`` lives (it may not exist yet)."""
    info = get_dataset_info(name)
    return get_data_dir(data_dir) / info.directory / info.filename


def checksum_status(path: str | os.PathLike, info: PinnedFile | DatasetInfo) -> str:
    """Return ``"ok"``, ``"missing"`` or ``"mismatch"`` for a file against its pinned sha256."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    return "ok" if cached_sha256(path) == info.sha256 else "mismatch"


def ensure_pinned_file(
    pinned: PinnedFile,
    dest: str | os.PathLike,
    *,
    mirror_path: str,
    label: str,
    hint: str,
    download: bool = True,
    mirror: str | None = None,
    progress: bool | None = None,
    timeout: float = 60.0,
) -> Path:
    """The verified local copy ``dest`` of a pinned file, downloaded when missing or not the pinned file.

    The one fetch path of the data sets and the corpus files. A present file
    whose sha256 matches is returned without touching the network. Otherwise,
    with ``download``, the file is downloaded (:func:`download_verified`: to a
    temporary file beside ``dest``, moved into place only after its checksum
    matches; a failed or interrupted download leaves nothing behind, not even
    an empty folder).

    Parameters
    ----------
    pinned : PinnedFile
        The file: its public URL and sha256.
    dest : path-like
        Where the local copy lives.
    mirror_path : str
        Its path under a mirror (``<mirror>/<mirror_path>``).
    label : str
        What the file is, for messages (e.g. ``"dataset 'vangerven'"``).
    hint : str
        How to get the file, appended to the error when ``download`` is false.
    download : bool
        Download a missing or mismatching file; ``False`` raises instead.
    mirror : str, optional
        Base URL of a mirror; defaults to ``$CORTEXFLOW_MIRROR``; without one
        the pinned public URL is used.
    progress : bool, optional
        Show a download progress bar.
    timeout : float
        Seconds to wait for the server before giving up.

    Raises
    ------
    DataValidationError
        The file is missing and ``download`` is false.
    ChecksumError
        The file there is not the pinned one and ``download`` is false, or the
        downloaded file does not match the pinned sha256.
    CortexFlowError
        The download failed (network error, server stopped mid-file, ...).
    """
    dest = Path(dest)
    status = checksum_status(dest, pinned)
    if status == "ok":
        logger.debug("using cached %s", dest)
        return dest
    if not download:
        if status == "missing":
            raise DataValidationError(f"{label}: {dest} not found; {hint}")
        raise ChecksumError(
            f"{label}: {dest} is not the registered file (sha256 {cached_sha256(dest)}, {dest.stat().st_size} "
            f"bytes; expected sha256 {pinned.sha256}, {pinned.size_bytes} bytes): it is another file or a damaged "
            f"copy; {hint}"
        )
    if status == "mismatch":
        logger.warning("%s exists but its sha256 does not match the registry; downloading it again", dest)
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    url = f"{mirror.rstrip('/')}/{mirror_path}" if mirror else pinned.url
    logger.info("downloading %s from %s", label, url)
    with removed_if_empty_on_error(dest.parent):  # a failed download leaves no empty folder behind
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CortexFlowError(f"cannot create data folder {dest.parent}: {exc}") from exc
        download_verified(url, dest, pinned.sha256, label=label, progress=progress, timeout=timeout)
    return dest


def _ensure_dataset_file(name: str, data_dir, **kwargs) -> Path:
    info = get_dataset_info(name)
    return ensure_pinned_file(info.file, dataset_path(name, data_dir), mirror_path=f"{info.directory}/{info.filename}",
                              label=f"dataset {info.name!r}",
                              hint=f"fetch it with `cortexflow datasets fetch {info.name}` "
                                   "(or load with download=True)",
                              **kwargs)


def verify_registered_file(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Path of dataset ``name``'s file in the data folder, after checking its sha256 (no network).

    Raises
    ------
    DataValidationError
        The file is not there.
    ChecksumError
        The file there is not the registered one (another dataset's file, or damaged).
    """
    return _ensure_dataset_file(name, data_dir, download=False)


def fetch_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    mirror: str | None = None,
    progress: bool | None = None,
    timeout: float = 60.0,
) -> Path:
    """Return the local path of dataset ``name``, downloading it if needed.

    A present file whose sha256 matches is returned without touching the
    network. Otherwise the file is downloaded to a temporary file beside its
    destination and moved into place only after its checksum matches; a failed
    or interrupted download leaves nothing behind (see :func:`ensure_pinned_file`).

    Parameters
    ----------
    name : str
        A registered dataset (see ``cortexflow datasets list``).
    data_dir : path-like, optional
        Data folder; see :func:`get_data_dir`.
    mirror : str, optional
        Base URL of a mirror laid out as ``<mirror>/<folder>/<file>`` (for
        example a local copy served over HTTP). Defaults to
        ``$CORTEXFLOW_MIRROR``; without one the pinned public URL is used.
    progress : bool, optional
        Show a download progress bar.
    timeout : float
        Seconds to wait for the server before giving up.

    Returns
    -------
    pathlib.Path
        Path of the verified file.

    Raises
    ------
    ChecksumError
        The downloaded file does not match the registry's sha256.
    CortexFlowError
        The download failed (network error, server stopped mid-file, ...).
    """
    return _ensure_dataset_file(name, data_dir, mirror=mirror, progress=progress, timeout=timeout)


def download_verified(
    url: str,
    dest: str | os.PathLike,
    sha256: str,
    *,
    label: str,
    progress: bool | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` through pooch, moved into place only after its sha256 matches.

    The bytes go to a temporary file beside ``dest``; a failed, interrupted or
    mismatching download leaves nothing behind (the folder of ``dest`` must exist).

    Parameters
    ----------
    url : str
        Where to download from.
    dest : path-like
        Final path of the file.
    sha256 : str
        Expected hex digest.
    label : str
        What the file is, for messages (e.g. ``"dataset 'vangerven'"``).
    progress : bool, optional
        Show a download progress bar.
    timeout : float
        Seconds to wait for the server before giving up.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    ChecksumError
        The downloaded file does not match ``sha256``.
    CortexFlowError
        The download failed.
    """
    dest = Path(dest)
    downloader = pooch.HTTPDownloader(progressbar=progress_enabled(progress), timeout=timeout)
    try:
        pooch.retrieve(
            url,
            known_hash=f"sha256:{sha256}",
            fname=dest.name,
            path=dest.parent,
            downloader=downloader,
        )
    except ValueError as exc:
        if "hash" in str(exc).lower():
            raise ChecksumError(
                f"checksum mismatch for {label} downloaded from {url}: expected sha256 "
                f"{sha256}; the file was discarded ({exc})"
            ) from exc
        raise CortexFlowError(f"download of {label} from {url} failed: {exc}") from exc
    except Exception as exc:  # requests' ConnectionError, ChunkedEncodingError, HTTPError, ...
        raise CortexFlowError(
            f"download of {label} from {url} failed ({type(exc).__name__}: {exc}); "
            f"nothing was written to {dest}"
        ) from exc
    return dest
