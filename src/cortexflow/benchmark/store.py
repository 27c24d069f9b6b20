"""The resumable result store of a benchmark: one pair of files per finished task.

Each finished task is written at once, atomically, to ``OUT/runs/<key>.npz``
(predictions and test-row indices) and then ``OUT/runs/<key>.json`` (per-image
metric rows, timings, the task; the marker of a finished task). The key
(:func:`record_key`) hashes everything that determines the result (see
:meth:`cortexflow.benchmark.tasks.Task.key_payload`, which holds the data
set's content checksum) *and* the data set's name: two data sets with the same
content (a byte copy under another name) get their own runs and rows. A
benchmark run again recomputes nothing that finished and nothing whose inputs
did not change.

Records are validated when read: a record that does not parse, names another
key, has no rows, holds non-numeric metrics, does not match its content hash
(``record_sha256``: a record edited by hand, for example to better numbers),
or whose predictions file does not match its sha256 (``predictions_sha256``)
or its rows is reported with a warning and its task is recomputed.

Scores computed afterwards from a finished task's stored predictions (for
example the semantic metrics of :mod:`cortexflow.benchmark.semantic`) are
kept beside it, in ``OUT/runs/scores/<scorer>/<key>.json``
(:meth:`ResultStore.save_scores`): extra per-image metric columns tied to the
record they scored (its ``record_sha256``), content-hashed and validated like
the records, so scoring again computes only what is missing or changed.

Two benchmarks writing into one folder share the work through per-task lock
files (``runs/<key>.lock`` holding the owner's pid and start time, created
with ``O_EXCL``): a task locked by another live process is left to it and
waited for; a lock whose process is gone (or whose pid now belongs to a
process started later) is stale and taken over. Process ids are those of this
machine: benchmarks on several machines should not share one folder.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from cortexflow import __version__
from cortexflow.benchmark.tasks import ID_COLUMNS, METRIC_COLUMNS, Task, TaskResult
from cortexflow.exceptions import ConfigError
from cortexflow.utils.io import (
    atomic_write_bytes,
    atomic_write_json,
    json_roundtrip,
    sha256_bytes,
    sha256_file,
    sha256_json,
)

__all__ = ["ResultStore", "InvalidRecord", "validate_record", "validate_scores", "check_output_dir", "OUTPUT_FILES",
           "record_key", "RECORD_FORMAT"]

#: Version of the run-record layout (2: keyed by data set name and content, with content hashes).
RECORD_FORMAT = 2

logger = logging.getLogger(__name__)

#: files a benchmark writes at the top of its output folder
OUTPUT_FILES = ("results.csv", "stats.csv", "summary.csv", "summary.md", "report.html", "benchmark.json")


class InvalidRecord(ValueError):
    """A stored run record that cannot be used (the task is recomputed)."""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def record_key(task: Task) -> str:
    """Name of a task's files: its result key (content of the data set, method, split, ...) and the data set's name."""
    return sha256_json({"task": task.key, "dataset_name": task.dataset_name, "format": RECORD_FORMAT})[:24]


def _record_hash(rec: dict) -> str:
    return sha256_json({k: v for k, v in rec.items() if k != "record_sha256"})


def validate_record(rec: Any, key: str) -> list[dict]:
    """Check a parsed run record (its key and content hash, its rows); return its rows.

    Raises
    ------
    InvalidRecord
        With the reason.
    """
    if not isinstance(rec, dict):
        raise InvalidRecord(f"expected a JSON object, found a {type(rec).__name__}")
    if rec.get("key") != key:
        raise InvalidRecord(f"its key is {rec.get('key')!r}, not {key!r}")
    if rec.get("record_sha256") != _record_hash(rec):
        raise InvalidRecord("its content does not match its sha256 (edited by hand or damaged)")
    rows = rec.get("rows")
    if not isinstance(rows, list) or not rows:
        raise InvalidRecord("it holds no result rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidRecord(f"row {i} is not an object")
        missing = [c for c in ID_COLUMNS + METRIC_COLUMNS if c not in row]
        if missing:
            raise InvalidRecord(f"row {i} lacks {', '.join(missing)}")
        bad = [f"{m}={row[m]!r}" for m in METRIC_COLUMNS if not _is_number(row[m]) or math.isinf(row[m])]
        if bad:
            raise InvalidRecord(f"row {i} has non-numeric metric values: {', '.join(bad)}")
    return rows


def validate_scores(scores: Any, key: str, scorer: str, record: dict, metrics: Sequence[str]) -> list[dict]:
    """Check a parsed score file of the run record ``record`` (key ``key``); return its rows.

    Raises
    ------
    InvalidRecord
        With the reason (another key or scorer, scores of another version of
        the record, a content hash that does not match, rows that do not match
        the record's or hold non-numeric values of ``metrics``).
    """
    if not isinstance(scores, dict):
        raise InvalidRecord(f"expected a JSON object, found a {type(scores).__name__}")
    if scores.get("key") != key or scores.get("scorer") != scorer:
        raise InvalidRecord(f"it scores {scores.get('key')!r} with {scores.get('scorer')!r}, not {key!r} with {scorer!r}")
    if scores.get("record_sha256") != record.get("record_sha256"):
        raise InvalidRecord("it was computed from another version of the run record")
    if scores.get("scores_sha256") != sha256_json({k: v for k, v in scores.items() if k != "scores_sha256"}):
        raise InvalidRecord("its content does not match its sha256 (edited by hand or damaged)")
    rows = scores.get("rows")
    if not isinstance(rows, list) or len(rows) != len(record.get("rows", [])):
        raise InvalidRecord(f"it holds {len(rows) if isinstance(rows, list) else 'no'} rows; the record has "
                            f"{len(record.get('rows', []))}")
    for i, row in enumerate(rows):
        bad = [m for m in metrics if not isinstance(row, dict) or not _is_number(row.get(m)) or math.isinf(row[m])]
        if bad:
            raise InvalidRecord(f"row {i} lacks numeric values of {', '.join(bad)}")
    return rows


def check_output_dir(out: str | os.PathLike) -> Path:
    """Create the output folder (and ``runs/``) and check that it can be written, before any work.

    Raises
    ------
    ConfigError
        The folder cannot be created or written, or a path the benchmark
        writes (``results.csv``, ``runs``, ...) is in the way.
    """
    out = Path(out)
    try:
        (out / "runs").mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"output folder {out}: {out if not out.is_dir() else out / 'runs'} exists and is not "
                          "a folder") from None
    except OSError as exc:
        raise ConfigError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    for name in OUTPUT_FILES:
        if (out / name).is_dir():
            raise ConfigError(f"{out / name} is a folder; the benchmark writes a file there. Move it away or "
                              "choose another --out")
    for folder in (out, out / "runs"):
        probe = folder / f".write-test-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"output folder {folder} is not writable: {exc.strerror or exc}") from None
    return out


def _start_time(pid: int) -> str:
    """Start time of a process (Linux: clock ticks since boot, from /proc), or "" where unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _owner_alive(text: str) -> tuple[int, bool]:
    """``(pid, alive)`` of a lock file's content ``"PID START"``; a reused pid (other start time) is not alive."""
    parts = text.split()
    try:
        pid = int(parts[0]) if parts else 0
    except ValueError:
        return 0, False
    if pid <= 0:
        return pid, False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return pid, False
    except PermissionError:
        pass
    start = _start_time(pid)
    return pid, not (len(parts) > 1 and start and parts[1] != start)


class ResultStore:
    """Per-task results under ``root/runs``, written atomically as tasks finish."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.runs = self.root / "runs"
        self._valid: set[str] = set()
        self._held: set[str] = set()

    # ------------------------------------------------------------ paths
    def json_path(self, task: Task) -> Path:
        """Path of a task's record."""
        return self.runs / f"{record_key(task)}.json"

    def npz_path(self, task: Task) -> Path:
        """Path of a task's predictions."""
        return self.runs / f"{record_key(task)}.npz"

    def lock_path(self, task: Task) -> Path:
        """Path of a task's lock file."""
        return self.runs / f"{record_key(task)}.lock"

    # ------------------------------------------------------------ read
    def has(self, task: Task) -> bool:
        """Whether the task finished: its record and predictions exist and are valid.

        An invalid record is reported with a warning (and the task is then
        recomputed by the runner).
        """
        key = record_key(task)
        if key in self._valid:
            return True
        p = self.json_path(task)
        if not p.exists() and not self.npz_path(task).exists():
            return False
        try:
            rec = json.loads(p.read_text())
            rows = validate_record(rec, key)
            if sha256_file(self.npz_path(task)) != rec.get("predictions_sha256"):
                raise InvalidRecord("its predictions file does not match the sha256 in the record")
            pred, idx = self.load_predictions(task)
            if len(pred) != len(rows) or len(idx) != len(rows):
                raise InvalidRecord(f"{len(rows)} result rows but {len(pred)} predictions and {len(idx)} indices")
        except FileNotFoundError as exc:
            logger.warning("incomplete result of %s (%s missing); it will be recomputed", task.label,
                           Path(exc.filename or "").name)
            return False
        except (OSError, ValueError, KeyError, EOFError, TypeError) as exc:  # JSONDecodeError, InvalidRecord, bad npz
            logger.warning("invalid result file %s (%s); run %s will be recomputed", p, exc, task.label)
            return False
        self._valid.add(key)
        return True

    def load_record(self, task: Task) -> dict:
        """The record of a finished task (check :meth:`has` first)."""
        return json.loads(self.json_path(task).read_text())

    def load_predictions(self, task: Task) -> tuple[np.ndarray, np.ndarray]:
        """Predictions and test-row indices of a finished task."""
        with np.load(self.npz_path(task), allow_pickle=False) as z:
            return z["predictions"], z["test_index"]

    # ------------------------------------------------------------ write
    def save(self, result: TaskResult) -> Path:
        """Write predictions (npz), then the rows (json, the marker of a finished task); release the lock."""
        task = result.task

        buf = io.BytesIO()
        np.savez_compressed(buf, predictions=result.predictions.astype(np.float32), test_index=result.test_index)
        blob = buf.getvalue()
        atomic_write_bytes(self.npz_path(task), blob)
        key = record_key(task)
        payload = {
            "key": key,
            "format": RECORD_FORMAT,
            "predictions_sha256": sha256_bytes(blob),
            "task": task.to_dict(),
            "key_payload": task.key_payload(),
            "rows": result.rows,
            "fit_seconds": result.fit_seconds,
            "predict_seconds": result.predict_seconds,
            "fit_cpu_seconds": None if np.isnan(result.fit_cpu_seconds) else result.fit_cpu_seconds,
            "report_info": result.info,
            "cortexflow_version": __version__,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        payload = json_roundtrip(payload)  # hashed exactly as it will read back
        payload["record_sha256"] = _record_hash(payload)
        path = atomic_write_json(self.json_path(task), payload)
        self._valid.add(key)
        self.release(task)
        return path

    # ------------------------------------------------------------ scores
    def scores_path(self, task: Task, scorer: str) -> Path:
        """Path of the scores ``scorer`` computed from a task's stored predictions."""
        name = "".join(c if c.isalnum() or c in "._-" else "_" for c in scorer)
        return self.runs / "scores" / name / f"{record_key(task)}.json"

    def load_scores(self, task: Task, scorer: str, metrics: Sequence[str]) -> list[dict] | None:
        """The rows of valid scores of a finished task, or None (none yet, or invalid: reported, to recompute)."""
        path = self.scores_path(task, scorer)
        if not path.exists():
            return None
        try:
            return validate_scores(json.loads(path.read_text()), record_key(task), scorer, self.load_record(task),
                                   metrics)
        except (OSError, ValueError) as exc:  # JSONDecodeError, InvalidRecord
            logger.warning("invalid scores %s (%s); they will be recomputed", path, exc)
            return None

    def save_scores(self, task: Task, scorer: str, rows: list[dict]) -> Path:
        """Write the per-image ``rows`` that ``scorer`` computed from a finished task's predictions (atomically)."""
        payload = json_roundtrip({"key": record_key(task), "scorer": scorer,
                                  "record_sha256": self.load_record(task).get("record_sha256"), "rows": rows,
                                  "cortexflow_version": __version__})
        payload["scores_sha256"] = sha256_json(payload)
        path = self.scores_path(task, scorer)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(path, payload)

    # ------------------------------------------------------------ locks
    def lock_owner(self, task: Task) -> int | None:
        """Pid of the live process holding the task's lock, or None (no lock, a stale lock, or this process)."""
        try:
            pid, alive = _owner_alive(self.lock_path(task).read_text())
        except FileNotFoundError:
            return None
        return pid if pid != os.getpid() and alive else None

    def try_lock(self, task: Task) -> bool:
        """Take the task's lock (``O_EXCL``); take over a stale one. False when another live process holds it."""
        path = self.lock_path(task)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid, alive = _owner_alive(path.read_text())
                except FileNotFoundError:
                    continue
                if pid == os.getpid():
                    self._held.add(record_key(task))
                    return True
                if alive:
                    return False
                logger.info("removing the stale lock of %s (process %d is gone)", task.label, pid)
                path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()} {_start_time(os.getpid())}".strip())
            self._held.add(record_key(task))
            return True
        return False

    def release(self, task: Task) -> None:
        """Remove the task's lock if this store holds it."""
        if record_key(task) in self._held:
            self._held.discard(record_key(task))
            self.lock_path(task).unlink(missing_ok=True)

    def release_all(self) -> None:
        """Remove every lock this store holds (after an error or an interrupt)."""
        for key in list(self._held):
            (self.runs / f"{key}.lock").unlink(missing_ok=True)
        self._held.clear()

    def claim(self, tasks: Sequence[Task]) -> tuple[list[Task], list[Task]]:
        """Lock the unfinished tasks: ``(mine, elsewhere)`` (``elsewhere``: held by another live process)."""
        if tasks:
            self.runs.mkdir(parents=True, exist_ok=True)
        mine, elsewhere = [], []
        for t in tasks:
            (mine if self.try_lock(t) else elsewhere).append(t)
        return mine, elsewhere

    def wait_for(self, tasks: Iterable[Task], poll: float = 1.0) -> list[Task]:
        """Wait until another process finishes (or abandons) ``tasks``; return those left to compute here.

        Logs which process it waits for.
        """
        waiting = [t for t in tasks if not self.has(t)]
        left: list[Task] = []
        announced = False
        while waiting:
            still = []
            for t in waiting:
                if self.has(t):
                    continue
                if self.lock_owner(t) is None and self.try_lock(t):  # the other process stopped without it
                    left.append(t)
                    continue
                still.append(t)
            if still and not announced:
                owners = sorted({p for p in (self.lock_owner(t) for t in still) if p})
                logger.warning("waiting for %d run(s) being computed by another benchmark (pid %s) in %s",
                               len(still), ", ".join(map(str, owners)) or "?", self.root)
                announced = True
            waiting = still
            if waiting:
                time.sleep(poll)
        return left
