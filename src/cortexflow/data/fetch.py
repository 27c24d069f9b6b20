"""Download and cache the registered datasets, checksum-verified.

The data folder is found, in order, from the ``data_dir`` argument, the
``CORTEXFLOW_DATA`` environment variable, and the user's cache folder
(``pooch.os_cache("cortexflow")``). Files live at ``<data_dir>/<folder>/<file>``
(``folder`` is the dataset's name unless its registry entry says otherwise),
the same layout as the project's shared data folder, so pointing
``CORTEXFLOW_DATA`` at such a folder needs no network at all.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pooch

from cortexflow.data.registry import DatasetInfo, get_dataset_info
from cortexflow.exceptions import ChecksumError, CortexFlowError
from cortexflow.utils.io import sha256_file
from cortexflow.utils.progress import progress_enabled

__all__ = ["get_data_dir", "dataset_path", "fetch_dataset", "checksum_status", "DATA_ENV", "MIRROR_ENV"]

logger = logging.getLogger(__name__)

DATA_ENV = "CORTEXFLOW_DATA"
MIRROR_ENV = "CORTEXFLOW_MIRROR"


def get_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Resolve the data folder: argument, then ``$CORTEXFLOW_DATA``, then the user cache."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path(pooch.os_cache("cortexflow"))


def dataset_path(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Where the file of dataset ``name`` lives (it may not exist yet)."""
    info = get_dataset_info(name)
    return get_data_dir(data_dir) / info.directory / info.filename


def checksum_status(path: str | os.PathLike, info: DatasetInfo) -> str:
    """Return ``"ok"``, ``"missing"`` or ``"mismatch"`` for a file against its registry entry."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    return "ok" if sha256_file(path) == info.sha256 else "mismatch"


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
    or interrupted download leaves nothing behind.

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
    info = get_dataset_info(name)
    dest = get_data_dir(data_dir) / info.directory / info.filename
    status = checksum_status(dest, info)
    if status == "ok":
        logger.debug("using cached %s", dest)
        return dest
    if status == "mismatch":
        logger.warning("%s exists but its sha256 does not match the registry; downloading it again", dest)

    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    url = f"{mirror.rstrip('/')}/{info.directory}/{info.filename}" if mirror else info.url
    logger.info("downloading %s from %s", info.name, url)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CortexFlowError(f"cannot create data folder {dest.parent}: {exc}") from exc
    downloader = pooch.HTTPDownloader(progressbar=progress_enabled(progress), timeout=timeout)
    try:
        pooch.retrieve(
            url,
            known_hash=f"sha256:{info.sha256}",
            fname=info.filename,
            path=dest.parent,
            downloader=downloader,
        )
    except ValueError as exc:
        if "hash" in str(exc).lower():
            raise ChecksumError(
                f"checksum mismatch for dataset {info.name!r} downloaded from {url}: expected sha256 "
                f"{info.sha256}; the file was discarded ({exc})"
            ) from exc
        raise CortexFlowError(f"download of dataset {info.name!r} from {url} failed: {exc}") from exc
    except Exception as exc:  # requests' ConnectionError, ChunkedEncodingError, HTTPError, ...
        raise CortexFlowError(
            f"download of dataset {info.name!r} from {url} failed ({type(exc).__name__}: {exc}); "
            f"nothing was written to {dest}"
        ) from exc
    return dest
