"""Benchmark: method registry, protocol runner with a resumable results store, CLI."""

from cortexflow.benchmark.methods import METHODS, get_method, list_methods, make_estimator, register_method
from cortexflow.benchmark.runner import Task, TaskResult, build_tasks, register_backend, run_benchmark, run_task

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
