"""Atomic writes, checksums, output-folder checks and strict JSON.

Every result, checkpoint and downloaded file of CortexFlow is written through
these helpers: the bytes go to a temporary file in the destination folder,
are flushed to disk, and only then renamed over the destination. A crash or
an interrupt leaves either the old file or the new one, never half of one.

Files get the mode an ordinary ``open()`` would give them (``0o666`` less the
process umask) and folders ``0o777`` less the umask, whether they were made
through a temporary file or not, so that every file CortexFlow writes has the
same permissions. JSON is written strictly: NaN and Infinity are not JSON, so
:func:`atomic_write_json` refuses them, naming the key; a caller that means
"no value" converts them with :func:`json_safe` (to ``null``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, IO, Iterator

import numpy as np

from cortexflow.exceptions import CortexFlowError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

logger = logging.getLogger(__name__)

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_with",
    "check_writable_dir",
    "OUTPUT_MARKER",
    "read_output_marker",
    "write_output_marker",
    "prepare_output_dir",
    "remove_stale_outputs",
    "removed_if_empty_on_error",
    "file_mode",
    "dir_mode",
    "json_safe",
    "NonFiniteJSONError",
    "sha256_bytes",
    "sha256_file",
    "sha256_json",
    "json_roundtrip",
    "file_lock",
    "LOCK_NAME",
    "output_lock",
    "acquire_output_lock",
    "release_output_lock",
    "atomic_npy_writer",
    "NpyAppender",
]


class NonFiniteJSONError(CortexFlowError, ValueError):
    """A value to be written as JSON is NaN or infinite (not valid JSON)."""


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux), else set and restored."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new file: ``0o666`` less the process umask (what ``open()`` gives)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """Mode of a new folder: ``0o777`` less the process umask (what ``mkdir`` gives)."""
    return 0o777 & ~_umask()


def check_writable_dir(path: str | os.PathLike, *, what: str = "output folder") -> Path:
    """Create ``path`` if needed and prove that a file can be written in it.

    Called before any long work starts, so that a read-only or otherwise
    unusable output folder fails at once rather than after training.

    Parameters
    ----------
    path : path-like
        The folder.
    what : str
        How the folder is named in the error message.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    CortexFlowError
        ``path`` is a file, cannot be created, or is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CortexFlowError(f"{what} {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".cortexflow-write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CortexFlowError(f"{what} {path} is not writable ({exc.strerror or exc})") from exc
    return path


#: The small file that marks a folder as written by a CortexFlow command, listing the files it wrote.
OUTPUT_MARKER = ".cortexflow-output.json"


def read_output_marker(folder: str | os.PathLike) -> dict | None:
    """The marker of ``folder`` (``{"command": ..., "files": [...]}``), or None when it has none or it is unreadable."""
    path = Path(folder) / OUTPUT_MARKER
    if not path.is_file() or path.is_symlink():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("files", []), list):
        return None
    return marker


def write_output_marker(folder: str | os.PathLike, command: str, files: list[str]) -> Path:
    """Mark ``folder`` as written by ``command``; ``files`` are the names it wrote (relative to ``folder``)."""
    return atomic_write_json(Path(folder) / OUTPUT_MARKER, {"command": command, "files": sorted(set(files))})


def prepare_output_dir(
    folder: str | os.PathLike,
    command: str,
    outputs: list[str],
    *,
    overwrite: bool = False,
) -> tuple[Path, list[str]]:
    """Check an output folder before any work starts; return it and the stale files of an earlier run.

    * ``folder`` must be a folder (it is created) and writable;
    * a non-empty folder that holds no marker of ``command`` (see
      :data:`OUTPUT_MARKER`) is refused unless ``overwrite``: CortexFlow does
      not mix its files into a folder it did not make;
    * none of ``outputs`` (names relative to ``folder``) may be a symbolic
      link or a folder: writing would replace the link (or fail late).

    The folder's lock is taken (:func:`acquire_output_lock`): a second
    process that prepares the same folder is refused until this one releases
    it. Nothing is deleted here. The second value lists the files that the
    earlier run of ``command`` recorded and this run will not write again
    (for example ``recon_11.png`` of a larger earlier input); the caller
    removes them with :func:`remove_stale_outputs` once its own files are
    written.

    Raises
    ------
    CortexFlowError
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CortexFlowError(f"output folder {folder} exists and is not a folder")
    for name in outputs:
        target = folder / name
        if target.is_symlink():
            raise CortexFlowError(f"output file {target} is a symbolic link; refusing to write there (remove the link)")
        if target.is_dir():
            raise CortexFlowError(f"output file {target} is a folder; refusing to write there")
    marker = read_output_marker(folder) if folder.is_dir() else None
    foreign = folder.is_dir() and any(p.name != LOCK_NAME for p in folder.iterdir()) and (marker is None or marker.get("command") != command)
    if foreign and not overwrite:
        raise CortexFlowError(
            f"output folder {folder} is not empty and was not written by `cortexflow {command}`; choose another "
            f"folder or pass --overwrite (CortexFlow then writes its files into it and deletes nothing it did not write)"
        )
    check_writable_dir(folder)
    acquire_output_lock(folder, command)  # one writer per output folder, until the command ends
    previous = [str(f) for f in (marker or {}).get("files", []) if isinstance(f, str)] if not foreign else []
    stale = [f for f in previous if f not in set(outputs) and Path(f).name == f]  # plain names inside folder only
    return folder, stale


def remove_stale_outputs(folder: str | os.PathLike, names: list[str]) -> list[str]:
    """Delete the regular files ``names`` in ``folder`` (never links or folders); return those removed."""
    removed = []
    for name in names:
        path = Path(folder) / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(name)
    return removed


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


@contextlib.contextmanager
def removed_if_empty_on_error(folder: str | os.PathLike) -> Iterator[Path]:
    """Inside the block, folders created on the way to ``folder`` are removed again if the block fails and they are empty.

    So a failed command or download leaves no empty folder behind; a folder
    that existed before, or that holds anything, is never touched.
    """
    folder = Path(folder)
    created = _missing_folders(folder)
    try:
        yield folder
    except BaseException:
        release_output_lock(folder)  # its lock file would keep the folder from looking empty
        for path in created:  # deepest first; stops at the first folder that holds anything
            try:
                path.rmdir()
            except OSError:
                break
        raise


def atomic_write_with(path: str | os.PathLike, writer: Callable[[IO[bytes]], None], *, replace: bool = True) -> Path:
    """Write a file atomically by calling ``writer(fileobj)`` on a temporary file.

    Parameters
    ----------
    path : path-like
        Destination. Its folder is created if needed.
    writer : callable
        Receives a binary file object open for writing.
    replace : bool
        Replace an existing destination (default). With ``False`` the file is
        put in place with a hard link, which fails if anything exists at
        ``path`` by then: a user's file is never replaced, even by a race.

    Returns
    -------
    pathlib.Path
        The destination path.

    Raises
    ------
    CortexFlowError
        ``replace=False`` and ``path`` exists (or is a link).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.chmod(tmp, file_mode())  # mkstemp creates 0600; results and checkpoints are ordinary files
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise CortexFlowError(f"{path} exists; refusing to replace it (choose another name, or "
                                      "pass --overwrite where the command offers it)") from None
            os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write_with(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, standard JSON to ``path`` atomically.

    Raises
    ------
    NonFiniteJSONError
        ``obj`` holds NaN or an infinity (named by its key path); nothing is
        written. Convert such values with :func:`json_safe` first when
        ``null`` is what is meant.
    """
    bad = _first_nonfinite(obj, "")
    if bad is not None:
        where, value = bad
        raise NonFiniteJSONError(
            f"refusing to write {path}: the value at {where or 'the top level'} is {value!r}, which is not "
            "valid JSON (NaN and Infinity are not allowed)"
        )
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def json_safe(obj: Any) -> Any:
    """Copy of ``obj`` with every NaN or infinite float replaced by ``None`` (JSON ``null``)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _first_nonfinite(obj: Any, where: str) -> tuple[str, float] | None:
    if isinstance(obj, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(obj))
    elif isinstance(obj, np.ndarray):
        if obj.dtype.kind in "fc" and not np.all(np.isfinite(obj)):
            i = int(np.flatnonzero(~np.isfinite(obj.ravel()))[0])
            return f"{where}[{i}]", float(obj.ravel()[i])
        return None
    elif isinstance(obj, (float, np.floating)):
        return None if math.isfinite(obj) else (where, float(obj))
    else:
        return None
    for key, value in items:
        found = _first_nonfinite(value, key)
        if found is not None:
            return found
    return None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def sha256_bytes(data: bytes) -> str:
    """Return the hex sha256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Return the hex sha256 digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def json_roundtrip(obj: Any) -> Any:
    """``obj`` as it reads back from the JSON that :func:`atomic_write_json` writes (tuples as lists, numpy as Python)."""
    return json.loads(json.dumps(obj, default=_json_default))


def sha256_json(obj: Any) -> str:
    """sha256 of ``obj`` as canonical JSON (sorted keys, no whitespace): a content hash of a JSON record."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _flock(fd: int, blocking: bool) -> bool:
    """Take an exclusive ``flock`` on ``fd``; False when ``blocking`` is off and another process holds it."""
    if fcntl is None:  # pragma: no cover - not POSIX: no advisory locks, every writer proceeds
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except OSError as exc:
        if not blocking and exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, file_mode())


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, what: str = "cache entry") -> Iterator[Path]:
    """Hold an exclusive lock on the file ``path`` (created if needed) for the block, waiting for it if needed.

    One lock per cache entry: a second process that wants to build the same
    entry waits here, then finds the first one's result. The lock is an
    advisory ``flock``, released by the system when the process dies (a
    killed training never leaves a stale lock). The lock file is kept.

    Parameters
    ----------
    path : path-like
        The lock file.
    what : str
        How the locked thing is named in the log message shown while waiting.

    Raises
    ------
    CortexFlowError
        The lock file cannot be created (read-only folder, a file in the way).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_lock(path)
    except OSError as exc:
        raise CortexFlowError(f"cannot create the lock file {path} of the {what} ({exc.strerror or exc})") from exc
    try:
        if not _flock(fd, blocking=False):
            logger.warning("%s %s is being written by another process; waiting for it", what, path.parent)
            t0 = time.monotonic()
            _flock(fd, blocking=True)
            logger.info("waited %.1f s for %s %s", time.monotonic() - t0, what, path.parent)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


#: Lock file of an output folder (see :func:`output_lock`); not counted as content of the folder.
LOCK_NAME = ".cortexflow-lock"


#: Output folders whose lock this process holds: real path -> (lock path, descriptor).
_HELD_OUTPUT_LOCKS: dict[str, tuple[Path, int]] = {}


def acquire_output_lock(folder: str | os.PathLike, command: str) -> Path:
    """Make this process the one writer of ``folder`` (``<folder>/.cortexflow-lock``) until it releases it.

    Taken by :func:`prepare_output_dir`; released by :func:`release_output_lock`
    (the command line does it when a command ends, and
    :func:`removed_if_empty_on_error` when it fails), at the latest when the
    process exits (the system drops an ``flock`` with its process, so a
    killed command leaves no stale lock). Taking a lock this process holds
    already is a no-op.

    Raises
    ------
    CortexFlowError
        Another process holds the folder (a second ``cortexflow`` run writing
        there), or the lock cannot be created.
    """
    folder = Path(folder)
    real = os.path.realpath(folder)
    if real in _HELD_OUTPUT_LOCKS:
        return folder
    lock = folder / LOCK_NAME
    if lock.is_symlink():
        raise CortexFlowError(f"lock file {lock} is a symbolic link; refusing to use the folder (remove the link)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = _open_lock(lock)
    except OSError as exc:
        raise CortexFlowError(f"output folder {folder} is not writable ({exc.strerror or exc})") from exc
    try:
        busy = not _flock(fd, blocking=False)
        if not busy:  # the file locked must still be the one at the path (a finishing writer removes it)
            try:
                busy = os.fstat(fd).st_ino != os.stat(lock).st_ino
            except FileNotFoundError:
                busy = True
    except BaseException:
        os.close(fd)
        raise
    if busy:
        os.close(fd)
        raise CortexFlowError(
            f"output folder {folder} is being written by another cortexflow process right now; wait for it "
            f"to finish or choose another --out for `cortexflow {command}`"
        )
    _HELD_OUTPUT_LOCKS[real] = (lock, fd)
    return folder


def release_output_lock(folder: str | os.PathLike | None = None) -> None:
    """Release this process's lock of ``folder`` (every output lock it holds when ``folder`` is None)."""
    keys = list(_HELD_OUTPUT_LOCKS) if folder is None else [os.path.realpath(folder)]
    for key in keys:
        held = _HELD_OUTPUT_LOCKS.pop(key, None)
        if held is None:
            continue
        lock, fd = held
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still held: the folder keeps only what the command wrote
        os.close(fd)


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, command: str) -> Iterator[Path]:
    """One writer per output folder for the block: :func:`acquire_output_lock`, released after it.

    Raises
    ------
    CortexFlowError
        Another process holds the folder, or the lock cannot be created there.
    """
    held_before = os.path.realpath(folder) in _HELD_OUTPUT_LOCKS
    acquire_output_lock(folder, command)
    try:
        yield Path(folder)
    finally:
        if not held_before:
            release_output_lock(folder)


class NpyAppender:
    """Rows appended in order to a ``.npy`` file opened by :func:`atomic_npy_writer`."""

    def __init__(self, fh: IO[bytes], shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._fh, self.shape, self.dtype, self.n = fh, tuple(shape), np.dtype(dtype), 0

    def append(self, rows: np.ndarray) -> None:
        """Write ``rows`` (shape ``(k, *shape[1:])``) after the rows written so far."""
        a = np.ascontiguousarray(rows, dtype=self.dtype)
        if a.shape[1:] != self.shape[1:] or self.n + len(a) > self.shape[0]:
            raise ValueError(f"rows of shape {a.shape} do not fit a .npy of shape {self.shape} after {self.n} rows")
        self._fh.write(a.tobytes())
        self.n += len(a)


@contextlib.contextmanager
def atomic_npy_writer(path: str | os.PathLike, shape: tuple[int, ...], dtype=np.float32) -> Iterator[NpyAppender]:
    """A ``.npy`` file of known shape written row chunk by row chunk, renamed over ``path`` only when complete.

    Lets a command write an array larger than memory with the guarantee of
    :func:`atomic_write_with`: a failure (a full disk included: plain writes,
    no memory map, so it is an ``OSError`` and not a crash) leaves the old
    file or none, never half of a new one.

    Yields
    ------
    NpyAppender
        Call ``append(rows)`` until ``shape[0]`` rows are written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.chmod(tmp, file_mode())
        with os.fdopen(fd, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                      "fortran_order": False, "shape": tuple(int(v) for v in shape)})
            appender = NpyAppender(fh, shape, dtype)
            yield appender
            if appender.n != shape[0]:
                raise ValueError(f"{appender.n} rows written to {path}; expected {shape[0]}")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
