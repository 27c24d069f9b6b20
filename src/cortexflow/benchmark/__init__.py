"""Benchmark: method registry, protocol runner with a resumable results store, CLI."""

from cortexflow.benchmark.methods import METHODS, get_method, list_methods, make_estimator, register_method
from cortexflow.benchmark.runner import Task, TaskResult, build_tasks, register_backend, run_benchmark, run_task
from cortexflow.benchmark.backends import register_with_runner as _register_ray

_register_ray()  # the "ray" backend (issue 7); Ray itself is imported only when it is used

__all__ = [
    "METHODS",
    "get_method",
    "list_methods",
    "make_estimator",
    "register_method",
    "Task",
    "TaskResult",
    "build_tasks",
    "register_backend",
    "run_benchmark",
    "run_task",
]
