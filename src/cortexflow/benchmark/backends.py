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
from typing import Any, Callable, Iterable, Iterator, Sequence

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


#: environment variables the driver forwards to Ray workers
_WORKER_ENV = ("CORTEXFLOW_DATA", "CORTEXFLOW_DETERMINISTIC", "CUBLAS_WORKSPACE_CONFIG")


def _run_in_worker(fn: Callable[[Any], Any], item: Any, threads: int, env: dict | None = None) -> Any:
    """What a Ray worker runs: the driver's settings, the thread policy, then ``fn(item)``.

    PyTorch reads ``OMP_NUM_THREADS`` when it starts; a worker that already
    imported it is set with :func:`~cortexflow.training.devices.configure_threads`.
    """
    import sys

    for k, v in (env or {}).items():
        os.environ.setdefault(k, v)
    n = str(max(1, threads))
    os.environ["CORTEXFLOW_NUM_THREADS"] = n
    os.environ["OMP_NUM_THREADS"] = n
    os.environ.setdefault("CORTEXFLOW_PROGRESS", "0")
    deterministic = os.environ.get("CORTEXFLOW_DETERMINISTIC", "0") not in {"", "0", "false"}
    if "torch" in sys.modules or deterministic:
        from cortexflow.training.devices import configure_threads, set_deterministic

        configure_threads(max(1, threads))
        if deterministic:
            set_deterministic(True)
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

    def imap(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
        """Yield ``(item, result)`` as each Ray task finishes (any order).

        Failed items (after ``max_retries`` retries) are collected and raised
        together as :class:`TaskFailure` once every other item has been
        yielded (``keep_going``), or at once.
        """
        for i, result in self._run(fn, items):
            yield items[i], result

    def _run(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, result)`` as each Ray task finishes."""
        ray = self._ensure_ray()
        remote = ray.remote(_run_in_worker).options(
            num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task,
            max_retries=self.max_retries, retry_exceptions=True,
        )
        threads = max(1, int(self.cpus_per_task))
        env = {k: os.environ[k] for k in _WORKER_ENV if k in os.environ}
        fn_ref = ray.put(fn)
        pending = {remote.remote(fn_ref, item, threads, env): i for i, item in enumerate(items)}
        failures = []
        t0 = time.perf_counter()
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # RayTaskError wraps the task's own exception
                    cause = getattr(exc, "cause", None) or exc
                    logger.error("task %s failed after %d retries: %s", _label(items[i]), self.max_retries, cause)
                    failures.append((items[i], cause))
                    if not self.keep_going:
                        for other in pending:
                            ray.cancel(other)
                        raise TaskFailure(failures) from exc
                    continue
                yield i, result
        logger.info("Ray: %d task(s) in %.1f s", len(items), time.perf_counter() - t0)
        if failures:
            raise TaskFailure(failures)

    def map(self, fn, items, on_result=None):
        results: list[Any] = [None] * len(items)
        for i, result in self._run(fn, items):
            results[i] = result
            if on_result is not None:
                on_result(items[i], result)
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


# ======================================================= benchmark integration
# The runner (cortexflow.benchmark.runner) calls an executor
# ``executor(tasks, *, jobs, threads, progress, **backend_options)`` that yields
# one TaskResult per task as each finishes, and stores each at once. Methods
# registered with ``supports_batched`` hand all their tasks to a
# ``fit_predict_many(tasks, progress=...)`` hook; an executor with a
# ``run_batched`` attribute runs those hooks itself (Ray: one Ray task per group).

def _batch_key(task) -> tuple:
    return (task.dataset, task.dataset_name, task.checksum, task.method, task.split, task.n_folds, task.split_seed,
            task.fast, task.options, getattr(task, "train", ()), task.data_dir)


def group_batched_tasks(tasks: Sequence[Any]) -> list[list[Any]]:
    """Tasks that can train in one stack: same dataset, method, split, options (all folds and seeds)."""
    groups: dict[tuple, list[Any]] = {}
    for t in tasks:
        groups.setdefault(_batch_key(t), []).append(t)
    return list(groups.values())


def cccv1_fit_predict_many(tasks: Sequence[Any], *, progress: bool | None = False,
                           max_group: int | None = None) -> Iterator[tuple[Any, Any]]:
    """The batched ``fit_predict_many`` hook of the ``cccv1`` benchmark method.

    Trains the folds x seeds of each (dataset, split, options) group together
    with :func:`cortexflow.training.batched.fit_many` (each member built by the
    method's own factory, so configuration, device and seed are those of the
    sequential path) and yields ``(task, TaskResult)`` per task, scored exactly
    as :func:`cortexflow.benchmark.runner.run_task` scores. A task's
    ``fit_seconds`` is its group's training time divided by the group size.
    Tasks whose estimator cannot train batched (extra loss terms, another
    network) fall back to ``run_task``.
    """
    from cortexflow.benchmark.methods import make_estimator
    from cortexflow.benchmark.runner import _load, run_task, score_task, split_rows
    from cortexflow.exceptions import ChecksumError
    from cortexflow.models.estimator import CCCV1Decoder
    from cortexflow.training.batched import fit_many

    for group in group_batched_tasks(tasks):
        t0 = group[0]
        ds = _load(t0.dataset, t0.data_dir)
        if ds.checksum != t0.checksum:
            raise ChecksumError(f"dataset {t0.dataset!r} has checksum {ds.checksum[:12]}..., but task {t0.label} "
                                f"was planned for {t0.checksum[:12]}...")
        members, fallback = [], []
        for t in group:
            rows = split_rows(ds, t.split, t.fold, t.n_folds, t.split_seed)
            est = make_estimator(t.method, t.seed, t.dataset_name, len(rows[0]), fast=t.fast, **dict(t.options))
            if type(est) is CCCV1Decoder and not est.loss_terms:
                members.append((t, est, rows))
            else:
                fallback.append(t)
        if members:
            devices = {est.device for _, est, _ in members}
            if len(devices) > 1:
                raise ConfigError(f"batched tasks of one group ask for different devices {sorted(devices)}")
            amp = dict(getattr(t0, "train", ())).get("amp", "off")
            w0 = time.perf_counter()
            decs = fit_many([r[0] for _, _, r in members], [r[1] for _, _, r in members],
                            [est.random_state for _, est, _ in members], config=[est.config for _, est, _ in members],
                            dataset=t0.dataset_name, device=devices.pop(), amp=amp, progress=progress,
                            max_group=max_group)
            fit_s = (time.perf_counter() - w0) / len(members)
            for (t, _, (_, _, X_te, Y_te, test_index, stim)), dec in zip(members, decs):
                p0 = time.perf_counter()
                pred = dec.predict(X_te)
                yield t, score_task(t, pred, Y_te, test_index, stim, fit_s, time.perf_counter() - p0)
        for t in fallback:
            yield t, run_task(t)


_RAY_SESSION: RayBackend | None = None


def _ray_session(jobs: int, threads: int | None, address: str | None, max_retries: int) -> RayBackend:
    """One RayBackend per driver process (a local instance stays up until the process exits)."""
    global _RAY_SESSION
    from cortexflow.training.devices import available_cores

    cpus = float(max(1, int(threads or 1)))
    if _RAY_SESSION is None or _RAY_SESSION.address != address:
        _RAY_SESSION = RayBackend(address=address, num_cpus=jobs if jobs > 1 else available_cores(),
                                  cpus_per_task=cpus, max_retries=max_retries)
    else:
        _RAY_SESSION.cpus_per_task, _RAY_SESSION.max_retries = cpus, max_retries
    return _RAY_SESSION


def ray_executor(tasks: Sequence[Any], *, jobs: int = 1, threads: int | None = 1, progress: bool | None = True,
                 address: str | None = None, max_retries: int = 2) -> Iterator[Any]:
    """``--backend ray``: every task is one Ray task running ``run_task``; yields TaskResults as they finish."""
    from cortexflow.benchmark.runner import run_task
    from cortexflow.utils.progress import progress_bar

    if not tasks:
        return
    backend = _ray_session(jobs, threads, address, max_retries)
    bar = progress_bar(total=len(tasks), progress=progress, desc="benchmark (ray)", unit="run", leave=True)
    try:
        for task, res in backend.imap(run_task, list(tasks)):
            bar.set_postfix_str(task.label)
            bar.update(1)
            yield res
    finally:
        bar.close()


def _run_group(args: tuple) -> list:
    hook, group = args
    return list(hook(group, progress=False))


def ray_run_batched(hook: Callable[..., Iterable], tasks: Sequence[Any], *, jobs: int = 1,
                    threads: int | None = 1, progress: bool | None = True, address: str | None = None,
                    max_retries: int = 2) -> Iterator[tuple[Any, Any]]:
    """Batched groups on Ray: each (dataset, split, options) group of tasks is one Ray task."""
    from cortexflow.utils.progress import progress_bar

    groups = group_batched_tasks(tasks)
    if not groups:
        return
    backend = _ray_session(jobs, threads, address, max_retries)
    bar = progress_bar(total=len(tasks), progress=progress, desc="batched (ray)", unit="run", leave=True)
    try:
        for _, pairs in backend.imap(_run_group, [(hook, g) for g in groups]):
            for pair in pairs:
                bar.update(1)
                yield pair
    finally:
        bar.close()


ray_executor.run_batched = ray_run_batched  # type: ignore[attr-defined]


def register_with_runner() -> None:
    """Register the ``ray`` backend with the benchmark runner (done on import of ``cortexflow.benchmark``)."""
    from cortexflow.benchmark.runner import BACKENDS as RUNNER_BACKENDS, register_backend

    if "ray" not in RUNNER_BACKENDS:
        register_backend("ray", ray_executor)
