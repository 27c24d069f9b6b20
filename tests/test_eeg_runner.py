"""``cortexflow eeg evaluate`` runs through the benchmark's execution layer: tasks, executors, result store."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedKFold

from cortexflow.benchmark import eeg as eeg_mod
from cortexflow.benchmark.eeg import EEG_TASK_KIND, plan_eeg_tasks, run_eeg_evaluation
from cortexflow.benchmark.store import ResultStore, validate_record
from cortexflow.benchmark.tasks import ID_COLUMNS, METRIC_COLUMNS, Task, run_task
from cortexflow.data.eeg import format_mindbigdata_line, simulate_evoked_eeg
from cortexflow.data.stimuli import class_images
from cortexflow.exceptions import DataValidationError

TINY = {"hidden_dim": 32, "embed_dim": 16, "epochs": 2, "patience": 1, "batch_size": 8}


def _epochs(n_per_class=4, seed=0):
    return simulate_evoked_eeg(n_per_class=n_per_class, class_names=tuple("012"), ch_names=("FP1",), sfreq=128.0,
                               n_times=128, evoked_uv=40.0, seed=seed)


def _run(ep, out, **kw):
    return run_eeg_evaluation(ep, class_images(ep.class_names), out, frontends=["flatten"], n_folds=2, seeds=[0],
                              config=TINY, preprocess={"new_sfreq": 64.0}, progress=False, **kw)


def test_a_second_run_computes_nothing_and_a_lost_record_is_recomputed(tmp_path):
    ep = _epochs()
    first = _run(ep, tmp_path / "out")
    assert (first["runs_total"], first["runs_computed"], first["runs_resumed"]) == (6, 6, 0)
    results, table = ((tmp_path / "out" / f).read_text() for f in ("results.csv", "summary.md"))
    second = _run(ep, tmp_path / "out")
    assert (second["runs_computed"], second["runs_resumed"]) == (0, 6)
    assert (tmp_path / "out" / "results.csv").read_text() == results
    assert (tmp_path / "out" / "summary.md").read_text() == table  # statistics computed from the stored rows
    victim = sorted((tmp_path / "out" / "runs").glob("*.json"))[0]
    victim.write_text(victim.read_text().replace('"two_way": 0', '"two_way": 1', 1))  # edited by hand
    third = _run(ep, tmp_path / "out")
    assert (third["runs_computed"], third["runs_resumed"]) == (1, 5)
    assert (tmp_path / "out" / "results.csv").read_text() == results  # recomputed to the same numbers
    other = _run(ep, tmp_path / "out", split_seed=1)  # another fold assignment: other tasks
    assert other["runs_computed"] == 6


def test_eeg_records_are_benchmark_result_store_records(tmp_path):
    ep = _epochs()
    _run(ep, tmp_path / "out")
    store = ResultStore(tmp_path / "out")
    records = sorted(store.runs.glob("*.json"))
    assert len(records) == 6 and [p.name for p in store.runs.glob("*.lock")] == [".report.lock"]  # no task lock left
    methods = set()
    for path in records:
        rec = json.loads(path.read_text())
        rows = validate_record(rec, path.stem)  # the benchmark's own check (key, content hash, metric columns)
        task = Task.from_dict(rec["task"])
        assert task.kind == EEG_TASK_KIND and task.split == "stratified" and task.n_folds == 2
        assert store.has(task) and store.json_path(task) == path
        pred, idx = store.load_predictions(task)
        assert pred.shape == (len(rows), 28, 28) and idx.tolist() == [r["trial"] for r in rows]
        assert all(set(ID_COLUMNS) | set(METRIC_COLUMNS) <= set(r) for r in rows)
        assert [r["stimulus"] for r in rows] == [r["label"] for r in rows]  # the stimulus of a trial is its class
        methods.add(task.method)
    assert methods == {"mean-template", "cccv1-eeg-flatten"}
    # other readers of the store know these are no image-dataset runs
    from cortexflow.benchmark.semantic import score_benchmark

    assert score_benchmark(tmp_path / "out", encoder="pixels", progress=False)["runs"] == 0
    # the per-trial table is read back from those records; the folds are the stratified split's
    trials = pd.read_csv(tmp_path / "out" / "results.csv")
    want = list(StratifiedKFold(2, shuffle=True, random_state=0).split(np.zeros(ep.n_epochs), ep.labels))
    for k, (_, te) in enumerate(want):
        assert sorted(trials.loc[(trials["fold"] == k) & (trials["frontend"] == "mean-template"), "trial"]) == te.tolist()


def test_tasks_hold_every_setting_and_change_key_with_it():
    ep = _epochs()
    images = class_images(ep.class_names)
    base = plan_eeg_tasks(ep, images, frontends=["flatten"], n_folds=2, seeds=[0], config=TINY)
    assert [(t.method, dict(t.options)["labels"]) for t in base[:3]] == [
        ("mean-template", "none"), ("cccv1-eeg-flatten", "true"), ("cccv1-eeg-flatten", "shuffled")]
    keys = {t.key for t in base}
    assert len(keys) == len(base) == 6
    for change in ({"config_overrides": {"patience": 2}}, {"preprocess": {"notch": 60.0}}, {"device": "cuda"},
                   {"frontend_params": {"dropout": 0.1}}):
        other = plan_eeg_tasks(ep, images, frontends=["flatten"], n_folds=2, seeds=[0], config=TINY, **change)
        assert not keys & {t.key for t in other}, change
    shifted = plan_eeg_tasks(ep.with_data(ep.data + 1.0), images, frontends=["flatten"], n_folds=2, seeds=[0],
                             config=TINY)
    assert shifted[0].checksum != base[0].checksum


def _mw_export(path, ep) -> None:
    lines = []
    for i, (lab, x) in enumerate(zip(ep.labels, ep.data[:, 0, :])):
        head, _, rest = format_mindbigdata_line(i, i, "MW", "FP1", int(lab), np.round(x)).rpartition("\t")
        values = rest.split(",")
        lines.append(f'"{head}\t{values[0]}",' + ",".join(values[1:]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_task_loads_its_recording_where_the_epochs_are_not_in_memory(tmp_path, monkeypatch):
    from cortexflow.data.eeg import load_eeg

    src = tmp_path / "MW-small.csv"
    _mw_export(src, _epochs())
    ep = load_eeg(str(src))
    images = class_images(ep.class_names)
    task = plan_eeg_tasks(ep, images, frontends=["flatten"], n_folds=2, seeds=[0], config=TINY,
                          source=str(src), load_options={"headset": None, "stimuli": None})[0]
    here = run_task(task)  # the floor, with the epochs this process planned with
    monkeypatch.setattr(eeg_mod, "_EEG_DATA", {})  # as in a worker process
    monkeypatch.setattr(eeg_mod, "_FOLD_CACHE", {})
    loaded = run_task(task)
    assert loaded.rows == here.rows
    monkeypatch.setattr(eeg_mod, "_EEG_DATA", {})
    memory = plan_eeg_tasks(ep, images, frontends=["flatten"], n_folds=2, seeds=[0], config=TINY)[0]
    monkeypatch.setattr(eeg_mod, "_EEG_DATA", {})
    with pytest.raises(DataValidationError, match="in memory"):
        run_task(memory)


@pytest.mark.slow
def test_worker_processes_load_the_recording_and_give_the_same_results(tmp_path):
    from cortexflow.data.eeg import load_eeg

    src = tmp_path / "MW-small.csv"
    _mw_export(src, _epochs())
    ep = load_eeg(str(src))
    kw = dict(source=str(src), load_options={"headset": None, "stimuli": None})
    here = _run(ep, tmp_path / "here", threads=1, **kw)  # one torch thread in both (float sums depend on it)
    pool = _run(ep, tmp_path / "pool", jobs=2, threads=1, **kw)
    assert here["runs_computed"] == 6
    assert pool["runs_computed"] == 6
    assert (tmp_path / "pool" / "results.csv").read_text() == (tmp_path / "here" / "results.csv").read_text()
