"""The batched hook of ``cccv1`` (the benchmark's execution layer).

The methods themselves are declared in the modules that define their
estimators (see :mod:`cortexflow.registry.methods`); this module only gives
``cccv1`` its ``fit_predict_many`` hook, which trains every (fold, seed) task of
a group together. :func:`register` attaches it; :mod:`cortexflow.benchmark`
calls it on import, so any process that can run a task (a worker of the local
pool, a Ray worker) has it.
"""

from __future__ import annotations

import time
from typing import Iterator, Sequence

from cortexflow.benchmark.tasks import (
    Task,
    TaskResult,
    build_estimator,
    check_checksum,
    load_task_data,
    report_info,
    run_task,
    score_task,
    task_rows,
)
from cortexflow.exceptions import ConfigError
from cortexflow.registry.methods import REFERENCE_METHOD, attach_batched_hook, get_method
from cortexflow.models.ensemble import fast_config
from cortexflow.models.estimator import CCCV1Decoder
from cortexflow.training.batched import fit_many

__all__ = ["fast_config", "cccv1_fit_predict_many", "register"]


# ---------------------------------------------------------------- batched hook
def cccv1_fit_predict_many(tasks: Sequence[Task], *, progress: bool | None = False,
                           max_group: int | None = None) -> Iterator[TaskResult]:
    """The batched hook of ``cccv1``: train the folds x seeds of each group together.

    Each (dataset, split, options) group trains with
    :func:`cortexflow.training.batched.fit_many` (each member built by the
    method's own factory, so configuration, device and seed are those of the
    one-by-one path) and yields one :class:`TaskResult` per task, scored
    exactly as :func:`~cortexflow.benchmark.tasks.run_task` scores. A task's
    ``fit_seconds`` is its group's training time divided by the group size.
    Tasks whose estimator cannot train batched (extra loss terms, another
    network) fall back to ``run_task``.
    """
    groups: dict[tuple, list[Task]] = {}
    for t in tasks:
        groups.setdefault(t.group_key, []).append(t)
    for group in groups.values():
        t0 = group[0]
        ds = load_task_data(t0.dataset, t0.data_dir)
        check_checksum(t0, ds)
        members, fallback = [], []
        for t in group:
            rows = task_rows(ds, t)
            est = build_estimator(t, ds, len(rows[0]))
            if type(est) is CCCV1Decoder and not est.loss_terms:
                members.append((t, est, rows))
            else:
                fallback.append(t)
        if members:
            devices = {est.device for _, est, _ in members}
            if len(devices) > 1:
                raise ConfigError(f"batched tasks of one group ask for different devices {sorted(devices)}")
            amp = dict(t0.train).get("amp", "off")
            w0 = time.perf_counter()
            decs = fit_many([r[0] for _, _, r in members], [r[1] for _, _, r in members],
                            [est.random_state for _, est, _ in members], config=[est.config for _, est, _ in members],
                            dataset=t0.dataset_name, device=devices.pop(), amp=amp, progress=progress,
                            max_group=max_group)
            fit_s = (time.perf_counter() - w0) / len(members)
            for (t, _, (_, _, X_te, Y_te, test_index, stim)), dec in zip(members, decs):
                p0 = time.perf_counter()
                pred = dec.predict(X_te)
                res = score_task(t, pred, Y_te, test_index, stim, fit_s, time.perf_counter() - p0)
                res.info = report_info(dec, t)
                yield res
        for t in fallback:
            yield run_task(t)


def _cccv1_many(tasks: Sequence[Task], *, progress: bool | None = False) -> Iterator[TaskResult]:
    return cccv1_fit_predict_many(tasks, progress=progress)


# ---------------------------------------------------------------- registration
def register() -> list[str]:
    """Attach the batched hook of ``cccv1`` (idempotent); return the names given a hook."""
    if get_method(REFERENCE_METHOD).fit_predict_many is _cccv1_many:
        return []
    attach_batched_hook(REFERENCE_METHOD, _cccv1_many)
    return [REFERENCE_METHOD]
