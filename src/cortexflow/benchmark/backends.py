"""Execution backends of the benchmark: run work items here, or on a Ray cluster.

A backend maps a pure function over work items and hands each result to a
callback *in the driver process* as soon as it arrives, so the driver writes
the resumable results store (atomically, one file per finished run) whatever
the backend. Workers never need to see the driver's file system: results come
back through Ray's object store.

``local``
    A plain loop in this process. Needs nothing beyond CortexFlow.
``ray``
    Every item becomes one Ray task (``num_cpus`` CPUs each, ``max_retries``
    retries on worker crashes *and* on exceptions raised by the task). With no
    address a private local Ray instance is started with ``num_cpus`` CPUs in
    total (2 by default); ``address="auto"`` joins the cluster this machine
    belongs to and ``"HOST:PORT"`` (or ``"ray://HOST:10001"``) a remote one.
    Ray is an optional extra (``pip install 'cortexflow[ray]'``), imported only
    here and only when this backend is chosen.

Worker threads: each Ray task sets PyTorch to as many intra-op threads as CPUs
it reserved (see :mod:`cortexflow.training.devices`), so tasks packed onto one
machine do not oversubscribe its cores.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from cortexflow.exceptions import ConfigError, CortexFlowError

__all__ = ["BACKENDS", "Backend", "LocalBackend", "RayBackend", "TaskFailure", "make_backend"]

logger = logging.getLogger(__name__)

BACKENDS = ("local", "ray")

OnResult = Callable[[Any, Any], None]


class TaskFailure(CortexFlowError, RuntimeError):
    """One or more work items failed (after retries); finished ones were still delivered.

    Attributes
    ----------
    failures : list of (item, exception)
    """

    def __init__(self, failures: list[tuple[Any, BaseException]]):
        self.failures = failures
        lines = "; ".join(f"{_label(item)}: {type(exc).__name__}: {exc}" for item, exc in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} benchmark task(s) failed: {lines}{more}")


def _label(item: Any) -> str:
    for attr in ("key", "name", "label"):
        v = getattr(item, attr, None)
        if isinstance(v, str):
            return v
    if isinstance(item, (list, tuple)) and item and not isinstance(item, str):
        return f"group of {len(item)}" if all(hasattr(x, "__dict__") for x in item) else repr(item)[:80]
    return repr(item)[:80]


@dataclass
class Backend:
    """Interface of an execution backend.

    Attributes
    ----------
    keep_going : bool
        On a failed item, go on with the others and raise :class:`TaskFailure`
        at the end (True), or raise at once (False).
    """

    name: str = "base"
    keep_going: bool = True

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], on_result: OnResult | None = None) -> list[Any]:
        """Apply ``fn`` to every item; call ``on_result(item, result)`` as each finishes.

        Returns
        -------
        list
            Results in the order of ``items`` (None for failed items when ``keep_going``).
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release what the backend started."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """Parameters worth recording with the results."""
        return {"backend": self.name}


@dataclass
class LocalBackend(Backend):
    """Run items one after another in this process."""

    name: str = "local"
    keep_going: bool = False

    def map(self, fn, items, on_result=None):
        results: list[Any] = [None] * len(items)
        failures = []
        for i, item in enumerate(items):
            try:
                results[i] = fn(item)
            except Exception as exc:
                if not self.keep_going:
                    raise
                logger.error("task %s failed: %s: %s", _label(item), type(exc).__name__, exc)
                failures.append((item, exc))
                continue
            if on_result is not None:
                on_result(item, results[i])
        if failures:
            raise TaskFailure(failures)
        return results


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "--backend ray needs Ray, an optional extra: pip install 'cortexflow[ray]' "
            f"(or pip install 'ray[default]'); import failed: {exc}"
        ) from exc
    return ray


def _run_in_worker(fn: Callable[[Any], Any], item: Any, threads: int) -> Any:
    """What a Ray worker runs: set the thread policy, then ``fn(item)``."""
    os.environ["CORTEXFLOW_NUM_THREADS"] = str(max(1, threads))
    os.environ.setdefault("CORTEXFLOW_PROGRESS", "0")
    from cortexflow.training.devices import configure_threads

    configure_threads(max(1, threads))
    return fn(item)


@dataclass
class RayBackend(Backend):
    """Send each item to Ray as one task.

    Parameters
    ----------
    address : str, optional
        None starts a local instance; ``"auto"`` or ``"HOST:PORT"`` /
        ``"ray://HOST:10001"`` connects to a running cluster.
    num_cpus : int
        CPUs of the local instance (ignored with an address).
    cpus_per_task : float
        CPUs reserved by each task (and its PyTorch threads).
    gpus_per_task : float
        GPUs reserved by each task (0 on CPU-only clusters).
    max_retries : int
        Retries of a task after a worker crash or an exception.
    init_kwargs : dict
        Extra arguments of ``ray.init`` (for example ``runtime_env``).
    """

    name: str = "ray"
    keep_going: bool = True
    address: str | None = None
    num_cpus: int = 2
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    max_retries: int = 2
    init_kwargs: dict = field(default_factory=dict)
    _started: bool = field(default=False, init=False, repr=False)

    def __post_init__(self):
        if self.max_retries < 0:
            raise ConfigError(f"max_retries={self.max_retries} must be >= 0")
        if self.cpus_per_task <= 0:
            raise ConfigError(f"cpus_per_task={self.cpus_per_task} must be > 0")
        if self.address is None and self.num_cpus < 1:
            raise ConfigError(f"num_cpus={self.num_cpus} must be >= 1")

    def _ensure_ray(self):
        ray = _import_ray()
        if ray.is_initialized():
            return ray
        kwargs = dict(self.init_kwargs)
        kwargs.setdefault("ignore_reinit_error", True)
        kwargs.setdefault("logging_level", logging.WARNING)
        if self.address:
            ray.init(address=self.address, **kwargs)
        else:
            kwargs.setdefault("include_dashboard", False)
            ray.init(num_cpus=int(self.num_cpus), **kwargs)
        self._started = True
        logger.info("Ray: %s", ray.cluster_resources())
        return ray

    def map(self, fn, items, on_result=None):
        ray = self._ensure_ray()
        remote = ray.remote(_run_in_worker).options(
            num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task,
            max_retries=self.max_retries, retry_exceptions=True,
        )
        threads = max(1, int(self.cpus_per_task))
        fn_ref = ray.put(fn)
        pending = {remote.remote(fn_ref, item, threads): i for i, item in enumerate(items)}
        results: list[Any] = [None] * len(items)
        failures = []
        t0 = time.perf_counter()
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                try:
                    results[i] = ray.get(ref)
                except Exception as exc:  # RayTaskError wraps the task's own exception
                    cause = getattr(exc, "cause", None) or exc
                    logger.error("task %s failed after %d retries: %s", _label(items[i]), self.max_retries, cause)
                    failures.append((items[i], cause))
                    if not self.keep_going:
                        for other in pending:
                            ray.cancel(other)
                        raise TaskFailure(failures) from exc
                    continue
                if on_result is not None:
                    on_result(items[i], results[i])
        logger.info("Ray: %d task(s) in %.1f s", len(items), time.perf_counter() - t0)
        if failures:
            raise TaskFailure(failures)
        return results

    def close(self) -> None:
        if self._started:
            ray = _import_ray()
            ray.shutdown()
            self._started = False

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "address": self.address or "local", "cpus_per_task": self.cpus_per_task,
                "max_retries": self.max_retries}


def make_backend(name: str = "local", *, address: str | None = None, **kwargs) -> Backend:
    """The backend for ``--backend NAME [--address ADDRESS]``.

    Raises
    ------
    ConfigError
        Unknown name, an address without ``--backend ray``, or Ray missing.
    """
    if name not in BACKENDS:
        raise ConfigError(f"--backend {name!r}; allowed: {', '.join(BACKENDS)}")
    if name == "local":
        if address:
            raise ConfigError("--address only applies to --backend ray")
        return LocalBackend(**{k: v for k, v in kwargs.items() if k == "keep_going"})
    _import_ray()  # fail early, with the name of the extra
    return RayBackend(address=address, **kwargs)


def iter_chunks(items: Sequence[Any], size: int) -> Iterable[list[Any]]:
    """Consecutive chunks of at most ``size`` items."""
    for start in range(0, len(items), max(1, size)):
        yield list(items[start : start + size])
