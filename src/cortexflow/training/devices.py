"""Device, thread, mixed-precision and determinism settings.

One place decides where training runs and how:

* **device** -- ``"auto"`` picks CUDA when present, else CPU.
* **threads** (CPU) -- ``"auto"`` gives one intra-op thread on a small
  machine (two cores or fewer), ``cores // workers`` threads when several
  worker processes share a larger machine (a Ray task, or
  ``CORTEXFLOW_WORKERS>1``), otherwise as many threads as cores this process
  may run on, capped at 8. ``CORTEXFLOW_NUM_THREADS`` overrides the policy.
  Why one thread on small machines: a CCCV1 mini-batch step is a few small
  matrix products, too little work to split well, and when anything else runs
  on the machine OpenMP threads that outnumber the free cores spin at
  barriers; on the 2-core development machine under load, 2 threads made the
  sequential trainer 2-15x *slower* than 1 thread (see ``docs/scale.md``).
* **AMP** -- ``"off"`` (default), ``"bf16"``, ``"fp16"`` or ``"auto"``
  (bf16 on CUDA devices that support it, fp16 on older CUDA devices, off on
  CPU). fp16 uses a gradient scaler.
* **deterministic** -- ``torch.use_deterministic_algorithms(True)``, cuDNN
  deterministic mode, and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (which CUDA's
  cuBLAS needs for reproducible GEMMs; it must be set before the first cuBLAS
  call, so set it early or export it in the shell).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, ContextManager

import torch

from cortexflow.exceptions import ConfigError

__all__ = [
    "AMP_MODES",
    "resolve_device",
    "resolve_amp",
    "autocast",
    "make_grad_scaler",
    "available_cores",
    "NUM_THREADS_ENV",
    "WORKERS_ENV",
    "env_int",
    "num_threads_from_env",
    "workers_from_env",
    "default_num_threads",
    "configure_threads",
    "set_deterministic",
]

logger = logging.getLogger(__name__)

AMP_MODES = ("off", "auto", "bf16", "fp16")
#: Intra-op threads of PyTorch (and BLAS) for training and prediction.
NUM_THREADS_ENV = "CORTEXFLOW_NUM_THREADS"
#: Worker processes that share this machine's cores (parallel benchmark workers).
WORKERS_ENV = "CORTEXFLOW_WORKERS"
#: Largest value either variable accepts.
MAX_ENV_COUNT = 4096


def resolve_device(device: "str | torch.device | None" = "auto") -> torch.device:
    """``"auto"`` (or None) gives CUDA when available, else CPU.

    Raises
    ------
    ConfigError
        ``"cuda"`` asked for on a machine without CUDA, or an unknown device string.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}; allowed: 'auto', 'cpu', 'cuda', 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return dev


def resolve_amp(amp: "str | bool | None", device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, or None for full precision.

    Parameters
    ----------
    amp : {"off", "auto", "bf16", "fp16"} or bool
        ``True`` means ``"auto"``, ``False``/None means ``"off"``.
    device : torch.device
    """
    if amp is None or amp is False:
        amp = "off"
    if amp is True:
        amp = "auto"
    if amp not in AMP_MODES:
        raise ConfigError(f"amp={amp!r}; allowed: {', '.join(AMP_MODES)}")
    if amp == "off":
        return None
    if device.type != "cuda":
        if amp == "auto":
            return None
        if amp == "fp16":
            raise ConfigError("amp='fp16' needs a CUDA device; on CPU use amp='bf16' or 'off'")
        return torch.bfloat16  # CPU autocast supports bf16 (useful only on CPUs with bf16 units)
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager[Any]:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op context when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, dtype: torch.dtype | None):
    """A gradient scaler for fp16 on CUDA, else None (bf16 and fp32 need none)."""
    if dtype is torch.float16 and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def available_cores() -> int:
    """Cores this process may run on (CPU affinity, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def env_int(name: str, *, minimum: int = 1, maximum: int | None = None) -> int | None:
    """The integer value of environment variable ``name``, or None when it is unset or empty.

    The one parser of CortexFlow's numeric environment variables: the
    command line (:mod:`cortexflow.cli._common`) and the Python API
    (:func:`default_num_threads`) both read them through it.

    Raises
    ------
    ConfigError
        The value is not an integer in ``[minimum, maximum]`` (one line naming the variable).
    """
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    allowed = f"an integer >= {minimum}" if maximum is None else f"an integer in {minimum}..{maximum}"
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"${name}={raw!r} is not an integer; allowed: {allowed} (or unset)") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(f"${name}={raw!r} is out of range; allowed: {allowed} (or unset)")
    return value


def num_threads_from_env() -> int | None:
    """``$CORTEXFLOW_NUM_THREADS``, validated (an integer in 1..4096), or None when unset."""
    return env_int(NUM_THREADS_ENV, minimum=1, maximum=MAX_ENV_COUNT)


def workers_from_env() -> int | None:
    """``$CORTEXFLOW_WORKERS``, validated (an integer in 1..4096), or None when unset."""
    return env_int(WORKERS_ENV, minimum=1, maximum=MAX_ENV_COUNT)


def default_num_threads(workers: int | None = None) -> int:
    """The thread policy described in the module docstring.

    Parameters
    ----------
    workers : int, optional
        Number of worker processes sharing this machine; read from
        ``CORTEXFLOW_WORKERS`` when not given (1 by default).

    Raises
    ------
    ConfigError
        ``CORTEXFLOW_NUM_THREADS`` or ``CORTEXFLOW_WORKERS`` is set to
        something other than an integer in 1..4096 (``abc``, ``0``, ``-1``),
        or ``workers`` is not an integer >= 1.
    """
    n = num_threads_from_env()
    if n is not None:
        return n
    if workers is None:
        workers = workers_from_env() or 1
    elif isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r}; allowed: an integer >= 1")
    cores = available_cores()
    if cores <= 2:
        return 1
    if workers > 1:
        return max(1, cores // workers)
    return max(1, min(cores, 8))


def configure_threads(num_threads: "int | str | None" = "auto", *, workers: int | None = None) -> int:
    """Set torch's intra-op threads (and inter-op threads to 1 where still allowed).

    Parameters
    ----------
    num_threads : int, "auto" or None
        ``"auto"``/None applies :func:`default_num_threads`.
    workers : int, optional
        Worker processes sharing the machine (for ``"auto"``).

    Returns
    -------
    int
        The number of intra-op threads now in force.
    """
    if num_threads is None or num_threads == "auto":
        n = default_num_threads(workers)
    else:
        try:
            n = int(num_threads)
        except (TypeError, ValueError):
            raise ConfigError(f"num_threads={num_threads!r}; allowed: 'auto' or an integer >= 1") from None
        if n < 1:
            raise ConfigError(f"num_threads={num_threads!r} must be >= 1")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:  # only possible before any inter-op parallel work started
        if torch.get_num_interop_threads() != 1:
            torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    logger.debug("torch threads: %d intra-op, %d inter-op", torch.get_num_threads(), torch.get_num_interop_threads())
    return n


def set_deterministic(enabled: bool = True) -> None:
    """Switch PyTorch's deterministic algorithms on or off.

    Sets ``CUBLAS_WORKSPACE_CONFIG`` (unless already set) because deterministic
    cuBLAS needs it; it only takes effect if no cuBLAS handle exists yet.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(bool(enabled))
    torch.backends.cudnn.deterministic = bool(enabled)
    if enabled:
        torch.backends.cudnn.benchmark = False
