"""Executors: where the tasks of a benchmark run.

Every executor implements one interface, :class:`Executor`:

``run(tasks)``
    Run each task alone (:func:`~cortexflow.benchmark.tasks.run_task`).
``run_groups(groups)``
    Run each group (a list of tasks of one method that train together)
    through the method's batched hook (:func:`~cortexflow.benchmark.tasks.run_group`).
``run_all(groups, tasks)``
    Both; an executor may interleave them (the local pool does).

Each yields one :class:`~cortexflow.benchmark.tasks.TaskResult` per task as
soon as it finishes (in any order) to the driver process, which stores it at
once; workers never need to see the driver's file system.

``local`` (:class:`LocalExecutor`)
    This process (``jobs=1``) or a pool of ``jobs`` worker processes. Workers
    ignore Ctrl-C (the driver stops them at once and keeps what finished) and
    exit when the driver dies, even by SIGKILL.
``ray`` (:class:`RayExecutor`)
    Every task, or every group, becomes one Ray task (``cpus_per_task`` CPUs,
    ``max_retries`` retries on worker crashes and on exceptions). With no
    address a private local Ray instance is started; ``"auto"`` joins the
    cluster this machine belongs to, ``"HOST:PORT"`` (or
    ``"ray://HOST:10001"``) a remote one. Ray is an optional extra
    (``pip install 'cortexflow[ray]'``), imported only when this executor is used.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator, Sequence

import torch
from threadpoolctl import threadpool_limits

from cortexflow.benchmark.tasks import Task, TaskResult, run_group, run_task
from cortexflow.exceptions import ConfigError, CortexFlowError
from cortexflow.training.devices import available_cores, configure_threads, set_deterministic
from cortexflow.utils.progress import progress_bar

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "TaskFailure", "BACKENDS", "make_executor",
           "register_backend", "split_groups"]

logger = logging.getLogger(__name__)

Group = Sequence[Task]


class TaskFailure(CortexFlowError, RuntimeError):
    """One or more tasks failed (after retries); the finished ones were still delivered.

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
    if isinstance(item, Task):
        return item.label
    if isinstance(item, (list, tuple)) and item and all(isinstance(t, Task) for t in item):
        return f"group of {len(item)} ({item[0].label}, ...)"
    for attr in ("key", "name", "label"):
        v = getattr(item, attr, None)
        if isinstance(v, str):
            return v
    return repr(item)[:80]


def split_groups(groups: Sequence[Group], parts: int) -> list[list[Task]]:
    """Deal each group round-robin into ``parts`` smaller groups (non-empty ones only).

    A member's result does not depend on which members share its stack
    (``tests/test_batched.py``), so splitting changes the timing, not the numbers.
    """
    return [list(p) for g in groups for p in (list(g)[i::parts] for i in range(parts)) if p]


class Executor:
    """Interface of an executor (see the module docstring)."""

    name = "base"

    def run(self, tasks: Sequence[Task]) -> Iterator[TaskResult]:
        """Run each task alone; yield its result as it finishes."""
        raise NotImplementedError

    def run_groups(self, groups: Sequence[Group]) -> Iterator[TaskResult]:
        """Run each group through its method's batched hook; yield one result per task."""
        raise NotImplementedError

    def run_all(self, groups: Sequence[Group], tasks: Sequence[Task]) -> Iterator[TaskResult]:
        """Groups, then single tasks (executors may interleave them)."""
        yield from self.run_groups(groups)
        yield from self.run(tasks)

    def describe(self) -> dict[str, Any]:
        """Parameters worth recording with the results."""
        return {"backend": self.name}

    def close(self) -> None:
        """Release what the executor started."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------ local
_PR_SET_PDEATHSIG = 1


def _exit_with_parent(parent_pid: int) -> None:
    """Make this worker die with its parent: the kernel's parent-death signal, and a watchdog thread."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="cortexflow-parent-watch", daemon=True).start()


def _worker_init(threads: int | None, parent_pid: int) -> None:
    """Initialiser of a local worker process: no Ctrl-C (the driver stops it), die with the driver, threads."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(parent_pid)
    if os.environ.get("CORTEXFLOW_DETERMINISTIC", "0") not in {"", "0", "false"}:
        set_deterministic(True)
    if threads:
        torch.set_num_threads(int(threads))
        threadpool_limits(int(threads))


def _pool_job(kind: str, payload: Any) -> list[TaskResult]:
    return run_group(payload) if kind == "group" else [run_task(payload)]


class LocalExecutor(Executor):
    """Run tasks in this process (``jobs=1``) or in a pool of ``jobs`` worker processes.

    Parameters
    ----------
    jobs : int
        Worker processes; 1 runs everything here.
    threads : int or None
        Torch (and BLAS) threads of each single task, and of each worker
        process; None leaves torch's setting. Batched groups run in this
        process keep the process's own setting (one stack uses intra-op threads).
    progress : bool or None
        Progress bar over runs.
    """

    name = "local"

    def __init__(self, jobs: int = 1, threads: int | None = 1, progress: bool | None = True):
        if int(jobs) < 1:
            raise ConfigError(f"jobs={jobs} must be at least 1")
        self.jobs, self.threads, self.progress = int(jobs), threads, progress

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "jobs": self.jobs, "threads": self.threads}

    def run(self, tasks: Sequence[Task]) -> Iterator[TaskResult]:
        return self.run_all([], tasks)

    def run_groups(self, groups: Sequence[Group]) -> Iterator[TaskResult]:
        return self.run_all(groups, [])

    def run_all(self, groups: Sequence[Group], tasks: Sequence[Task]) -> Iterator[TaskResult]:
        if self.jobs > 1:
            return self._pool(groups, tasks)
        return self._here(groups, tasks)

    def _here(self, groups: Sequence[Group], tasks: Sequence[Task]) -> Iterator[TaskResult]:
        for g in groups:
            yield from run_group(g, progress=self.progress)
        if not tasks:
            return
        bar = progress_bar(total=len(tasks), progress=self.progress, desc="benchmark", unit="run", leave=True)
        old = torch.get_num_threads()
        limits = threadpool_limits(int(self.threads)) if self.threads else contextlib.nullcontext()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        try:
            with limits:
                for t in tasks:
                    bar.set_postfix_str(t.label)
                    res = run_task(t)
                    bar.update(1)
                    yield res
        finally:
            torch.set_num_threads(old)
            bar.close()

    def _pool(self, groups: Sequence[Group], tasks: Sequence[Task]) -> Iterator[TaskResult]:
        """Groups (dealt into ``jobs`` parts, submitted first: they are the longest) and tasks in one pool.

        Every worker takes the next job as soon as it is free. On Ctrl-C (or
        any error) the workers are stopped at once; results already yielded
        have been stored by the driver.
        """
        parts = split_groups(groups, self.jobs)
        jobs = [("group", p) for p in parts] + [("task", t) for t in tasks]
        if not jobs:
            return
        bar = progress_bar(total=sum(len(p) for p in parts) + len(tasks), progress=self.progress,
                           desc="benchmark", unit="run", leave=True)
        pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=mp.get_context("spawn"),
                                   initializer=_worker_init, initargs=(self.threads, os.getpid()))
        finished = False
        try:
            pending = {pool.submit(_pool_job, kind, payload) for kind, payload in jobs}
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for fut in done:
                    for res in fut.result():
                        bar.set_postfix_str(res.task.label)
                        bar.update(1)
                        yield res
            finished = True
        finally:
            bar.close()
            if finished:
                pool.shutdown(wait=True)
            else:  # Ctrl-C, an error, or the consumer stopped: stop the workers now
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    with contextlib.suppress(Exception):
                        proc.terminate()
                pool.shutdown(wait=False, cancel_futures=True)


# -------------------------------------------------------------------- ray
def _import_ray():
    try:
        import ray  # optional extra
    except ImportError as exc:
        raise ConfigError(
            "--backend ray needs Ray, an optional extra: pip install 'cortexflow[ray]' "
            f"(or pip install 'ray[default]'); import failed: {exc}"
        ) from exc
    return ray


#: environment variables the driver forwards to Ray workers
_WORKER_ENV = ("CORTEXFLOW_DATA", "CORTEXFLOW_DETERMINISTIC", "CUBLAS_WORKSPACE_CONFIG")


def _run_in_worker(fn: Callable[[Any], Any], item: Any, threads: int, env: dict | None = None) -> Any:
    """What a Ray worker runs: the driver's settings, the thread policy, then ``fn(item)``."""
    for k, v in (env or {}).items():
        os.environ.setdefault(k, v)
    n = str(max(1, threads))
    os.environ["CORTEXFLOW_NUM_THREADS"] = n
    os.environ["OMP_NUM_THREADS"] = n
    os.environ.setdefault("CORTEXFLOW_PROGRESS", "0")
    configure_threads(max(1, threads))
    if os.environ.get("CORTEXFLOW_DETERMINISTIC", "0") not in {"", "0", "false"}:
        set_deterministic(True)
    return fn(item)


class RayExecutor(Executor):
    """Send each task, or each group, to Ray as one Ray task.

    Parameters
    ----------
    address : str, optional
        None starts a local instance; ``"auto"`` or ``"HOST:PORT"`` /
        ``"ray://HOST:10001"`` connects to a running cluster.
    num_cpus : int, optional
        CPUs of the local instance (ignored with an address; default: the cores available).
    cpus_per_task : float
        CPUs reserved by each Ray task (and its PyTorch threads).
    gpus_per_task : float
        GPUs reserved by each Ray task (0 on CPU-only clusters).
    max_retries : int
        Retries of a task after a worker crash or an exception.
    keep_going : bool
        On a failed task, go on with the others and raise :class:`TaskFailure`
        at the end (True), or raise at once (False).
    progress : bool or None
        Progress bar over runs.
    init_kwargs : dict, optional
        Extra arguments of ``ray.init`` (for example ``runtime_env``).
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, cpus_per_task: float = 1.0,
                 gpus_per_task: float = 0.0, max_retries: int = 2, keep_going: bool = True,
                 progress: bool | None = True, init_kwargs: dict | None = None):
        if max_retries < 0:
            raise ConfigError(f"max_retries={max_retries} must be >= 0")
        if cpus_per_task <= 0:
            raise ConfigError(f"cpus_per_task={cpus_per_task} must be > 0")
        if num_cpus is not None and num_cpus < 1:
            raise ConfigError(f"num_cpus={num_cpus} must be >= 1")
        self.address, self.num_cpus, self.cpus_per_task = address, num_cpus, float(cpus_per_task)
        self.gpus_per_task, self.max_retries, self.keep_going = float(gpus_per_task), int(max_retries), keep_going
        self.progress, self.init_kwargs = progress, dict(init_kwargs or {})
        self._started = False
        _import_ray()  # fail early, naming the extra

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "address": self.address or "local", "cpus_per_task": self.cpus_per_task,
                "max_retries": self.max_retries}

    def ensure_started(self):
        """Start or join Ray (once); return the ``ray`` module."""
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
            ray.init(num_cpus=int(self.num_cpus or available_cores()), **kwargs)
        self._started = True
        logger.info("Ray: %s", ray.cluster_resources())
        return ray

    def imap(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
        """Yield ``(item, fn(item))`` as each Ray task finishes (any order).

        Failed items (after ``max_retries`` retries) are raised together as
        :class:`TaskFailure` once every other item has been yielded
        (``keep_going``), or at once.
        """
        if not items:
            return
        ray = self.ensure_started()
        remote = ray.remote(_run_in_worker).options(
            num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task,
            max_retries=self.max_retries, retry_exceptions=True,
        )
        threads = max(1, int(self.cpus_per_task))
        env = {k: os.environ[k] for k in _WORKER_ENV if k in os.environ}
        fn_ref = ray.put(fn)
        pending = {remote.remote(fn_ref, item, threads, env): i for i, item in enumerate(items)}
        failures = []
        try:
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
                            raise TaskFailure(failures) from exc
                        continue
                    yield items[i], result
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
        if failures:
            raise TaskFailure(failures)

    def _results(self, fn: Callable[[Any], Any], items: Sequence[Any], total: int, desc: str) -> Iterator[TaskResult]:
        bar = progress_bar(total=total, progress=self.progress, desc=desc, unit="run", leave=True)
        try:
            for _, out in self.imap(fn, list(items)):
                for res in (out if isinstance(out, list) else [out]):
                    bar.set_postfix_str(res.task.label)
                    bar.update(1)
                    yield res
        finally:
            bar.close()

    def run(self, tasks: Sequence[Task]) -> Iterator[TaskResult]:
        return self._results(run_task, tasks, len(tasks), "benchmark (ray)")

    def run_groups(self, groups: Sequence[Group]) -> Iterator[TaskResult]:
        return self._results(run_group, [list(g) for g in groups], sum(len(g) for g in groups), "batched (ray)")

    def close(self) -> None:
        if self._started:
            _import_ray().shutdown()
            self._started = False


#: executor name -> class; ``--backend`` chooses among them
BACKENDS: dict[str, type[Executor]] = {"local": LocalExecutor, "ray": RayExecutor}


def register_backend(name: str, cls: type[Executor], *, overwrite: bool = False) -> None:
    """Register an :class:`Executor` class under ``name`` (built with ``make_executor(name, ...)``)."""
    if name in BACKENDS and not overwrite:
        raise ConfigError(f"backend {name!r} is already registered")
    BACKENDS[name] = cls


def make_executor(name: str = "local", *, jobs: int = 1, threads: int | None = 1, progress: bool | None = True,
                  address: str | None = None, **options: Any) -> Executor:
    """The executor of ``--backend NAME`` (``--jobs``, ``--threads``, ``--address``).

    Raises
    ------
    ConfigError
        Unknown name, ``address`` without the ray backend, or Ray missing.
    """
    if name not in BACKENDS:
        raise ConfigError(f"--backend {name!r}; allowed: {', '.join(BACKENDS)}")
    if name == "local":
        if address:
            raise ConfigError("--address only applies to --backend ray")
        return LocalExecutor(jobs=jobs, threads=threads, progress=progress)
    if name == "ray":
        cpus = float(max(1, int(threads or 1)))
        return RayExecutor(address=address, num_cpus=jobs if jobs > 1 else None, cpus_per_task=cpus,
                           progress=progress, **options)
    return BACKENDS[name](**({"address": address} if address else {}), **options)
