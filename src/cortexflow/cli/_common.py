"""Small pieces shared by the command-line modules: ``--set`` parsing, the error boundary, environment settings.

The error boundary (:func:`error_boundary`, used by ``cortexflow``'s command
groups) turns every failure that plausible input can cause into one line on
stderr and exit code 2: CortexFlow's own errors, I/O errors (disk full,
read-only folder, a file where a folder should be, a name too long), decode
errors (a binary file read as text, a corrupt ``.gz``), damaged safetensors
files and the ``ValueError``/``TypeError`` of numpy and scikit-learn. The
traceback is shown only with ``cortexflow --debug`` or ``CORTEXFLOW_DEBUG=1``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import traceback
import zlib
from typing import Iterator

import click
import torch

from cortexflow.exceptions import CortexFlowError
# The one parser of the thread and worker variables lives with the thread policy (re-exported here).
from cortexflow.training.devices import NUM_THREADS_ENV, WORKERS_ENV, env_int, num_threads_from_env, workers_from_env

__all__ = [
    "parse_sets",
    "error_boundary",
    "describe_error",
    "one_line",
    "debug_enabled",
    "DEBUG_ENV",
    "env_int",
    "NUM_THREADS_ENV",
    "WORKERS_ENV",
    "num_threads_from_env",
    "workers_from_env",
    "apply_num_threads",
]

#: Environment variable that shows the full traceback of a failed command (like ``--debug``).
DEBUG_ENV = "CORTEXFLOW_DEBUG"


def progress_setting(no_progress: bool) -> bool | None:
    """``False`` for ``--no-progress`` (and every bar of this process and its workers off), else ``None`` (default).

    A command's ``--no-progress`` must also silence the bars that library code
    deeper down opens with its default setting (a prior trained inside a
    benchmark task, a worker process), so it sets ``CORTEXFLOW_PROGRESS=0`` for
    the rest of the command (see :func:`cortexflow.utils.progress.progress_enabled`).
    """
    if not no_progress:
        return None
    os.environ["CORTEXFLOW_PROGRESS"] = "0"
    return False


def parse_sets(values: tuple[str, ...], *, option: str = "--set") -> dict[str, str]:
    """Turn repeated ``KEY=VALUE`` options into a dict (values stay strings; the config checks them).

    Raises
    ------
    click.BadParameter
        An item without ``=``, or with an empty key.
    """
    out = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        k, v = item.split("=", 1)
        if not k.strip():
            raise click.BadParameter(f"{item!r} has an empty KEY; expected KEY=VALUE", param_hint=option)
        out[k.strip()] = v.strip()
    return out


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def debug_enabled(ctx: click.Context | None = None) -> bool:
    """True when ``--debug`` was given to ``cortexflow`` or ``$CORTEXFLOW_DEBUG`` is set to a true value."""
    if os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and root.params.get("debug"))


_ERRNO_HINTS = {
    errno.ENOSPC: "the disk is full; free some space or choose another folder (nothing was half-written)",
    errno.EDQUOT: "the disk quota is exceeded; free some space or choose another folder",
    errno.EROFS: "the file system is read-only; choose a writable folder",
    errno.EACCES: "permission denied; choose a folder you can write to, or fix its permissions",
    errno.EPERM: "operation not permitted; choose another folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "the path is a folder, not a file",
    errno.ENAMETOOLONG: "a file or folder name is longer than the file system allows (usually 255 bytes); "
                        "choose a shorter name",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "the path exists already",
    errno.ELOOP: "too many levels of symbolic links",
}


def _origin(exc: BaseException) -> str:
    """``module.py:line`` of the innermost frame of ``exc`` (where a foreign error was raised)."""
    tb = traceback.extract_tb(exc.__traceback__)
    if not tb:
        return ""
    frame = tb[-1]
    return f"{os.path.basename(frame.filename)}:{frame.lineno}"


def _is_safetensors_error(exc: BaseException) -> bool:
    return type(exc).__name__ == "SafetensorError" or type(exc).__module__.startswith("safetensors")


def describe_error(exc: BaseException) -> str | None:
    """The one-line message of an error that plausible input can cause, or None for any other error.

    Parameters
    ----------
    exc : BaseException

    Returns
    -------
    str or None
    """
    if isinstance(exc, CortexFlowError):
        return one_line(exc)
    if isinstance(exc, OSError):
        names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
        code = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
        hint = _ERRNO_HINTS.get(exc.errno)
        what = exc.strerror or one_line(exc) or type(exc).__name__
        where = f"{' -> '.join(names)}: " if names else ""
        text = f"{where}{what}" + (f" [{code}]" if code else "")
        return text + (f"; {hint}" if hint and hint.lower() != what.lower() else "")
    if isinstance(exc, UnicodeDecodeError):
        return (f"a file could not be decoded as {exc.encoding} text (byte 0x{exc.object[exc.start]:02x} at "
                f"position {exc.start}): it is binary or in another encoding; check the file format "
                f"(raised in {_origin(exc)})")
    if isinstance(exc, UnicodeError):
        return f"text encoding error: {one_line(exc)} (raised in {_origin(exc)})"
    if isinstance(exc, zlib.error) or isinstance(exc, EOFError):
        return (f"a compressed file is corrupt or truncated ({type(exc).__name__}: {one_line(exc)}; raised in "
                f"{_origin(exc)})")
    if _is_safetensors_error(exc):
        return f"a .safetensors weights file is damaged or truncated ({one_line(exc)}); replace it or train again"
    if isinstance(exc, (ValueError, TypeError, KeyError, IndexError)):
        return f"{type(exc).__name__}: {one_line(exc)} (raised in {_origin(exc)})"
    return None


@contextlib.contextmanager
def error_boundary(ctx: click.Context) -> Iterator[None]:
    """Turn a failure of plausible input into ``Error: <one line>`` on stderr and exit code 2.

    Errors of the command line itself (click's usage errors, ``ctx.exit``) and
    other exceptions pass through unchanged. With ``--debug`` or
    ``CORTEXFLOW_DEBUG=1`` the exception is re-raised, traceback and all.
    """
    try:
        yield
    except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
        raise
    except Exception as exc:  # noqa: BLE001 - described below, or re-raised
        message = describe_error(exc)
        if message is None or debug_enabled(ctx):
            raise
        suffix = "" if isinstance(exc, CortexFlowError) else f" (run `cortexflow --debug ...` or set {DEBUG_ENV}=1 for the traceback)"
        click.echo(f"Error: {message}{suffix}", err=True)
        ctx.exit(2)


# ---------------------------------------------------------------- environment settings
def apply_num_threads() -> int | None:
    """Set PyTorch's intra-op threads from ``$CORTEXFLOW_NUM_THREADS`` (validated); return the value or None."""
    n = num_threads_from_env()
    if n is not None:
        torch.set_num_threads(n)
    return n
