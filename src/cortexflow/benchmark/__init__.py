"""Benchmark: method registry, tasks, executors, a resumable result store, the runner and its CLI.

Importing this package registers the built-in methods
(:mod:`cortexflow.benchmark.builtin`).
"""

from cortexflow.benchmark import builtin as _builtin
from cortexflow.benchmark.executors import BACKENDS, Executor, LocalExecutor, RayExecutor, make_executor, register_backend
from cortexflow.benchmark.methods import METHODS, get_method, list_methods, make_estimator, register_method
from cortexflow.benchmark.runner import BenchmarkConfig, build_tasks, run_benchmark
from cortexflow.benchmark.store import ResultStore
from cortexflow.benchmark.tasks import Task, TaskResult, run_group, run_task, score_task

_builtin.register()

__all__ = [
    "BACKENDS",
    "BenchmarkConfig",
    "Executor",
    "LocalExecutor",
    "METHODS",
    "RayExecutor",
    "ResultStore",
    "Task",
    "TaskResult",
    "build_tasks",
    "get_method",
    "list_methods",
    "make_estimator",
    "make_executor",
    "register_backend",
    "register_method",
    "run_benchmark",
    "run_group",
    "run_task",
    "score_task",
]
