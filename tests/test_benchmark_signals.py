"""A benchmark with worker processes (``jobs=2``), stopped by Ctrl-C or killed: real subprocesses.

Ctrl-C stops the workers at once and keeps the runs that finished; SIGKILL of
the driver leaves no worker process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
              pytest.mark.slow]  # each starts a driver and two spawned workers (about 30-40 s on 2 busy cores)

SCRIPT = textwrap.dedent('''
    import os, sys, time
    from pathlib import Path

    from cortexflow.baselines.mean_image import MeanImageDecoder
    from cortexflow.benchmark.methods import register_method

    class Slow(MeanImageDecoder):
        """Seed 0 finishes at once; other seeds take two minutes."""

        def fit(self, X, Y):
            (Path(os.environ["PID_DIR"]) / str(os.getpid())).write_text(str(self.random_state))
            if self.random_state >= 1:
                time.sleep(120)
            return super().fit(X, Y)

    # at module level: spawned workers import this file too, and so know the method
    register_method("slow-mean", lambda seed, ds, n, fast=False: Slow(random_state=seed), overwrite=True)

    if __name__ == "__main__":
        from cortexflow.benchmark.runner import BenchmarkConfig, run_benchmark

        cfg = BenchmarkConfig(sys.argv[1], "slow-mean", "official", seeds=3, out=sys.argv[2], jobs=2)
        run_benchmark(cfg, progress=False, report=False)
''')


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in {"Z", "X"}


def _wait(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def _start(tmp_path: Path):
    rng = np.random.default_rng(0)
    data = tmp_path / "toy.npz"
    np.savez(data, fmriTrn=rng.normal(size=(8, 10)).astype(np.float32),
             stimTrn=rng.uniform(size=(8, 784)).astype(np.float32),
             fmriTest=rng.normal(size=(3, 10)).astype(np.float32), stimTest=rng.uniform(size=(3, 784)).astype(np.float32))
    script = tmp_path / "bench_script.py"
    script.write_text(SCRIPT)
    pids = tmp_path / "pids"
    pids.mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "PID_DIR": str(pids), "CORTEXFLOW_PROGRESS": "0",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script), str(data), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def slow_workers() -> list[int]:
        return [int(p.name) for p in pids.iterdir() if p.read_text() != "0"]

    def ready() -> bool:  # the fast run is stored and both slow runs are training
        return len(list((out / "runs").glob("*.json"))) == 1 and len(slow_workers()) == 2

    if not _wait(ready, 120):
        proc.kill()
        pytest.fail("the benchmark did not reach two slow runs: " + proc.communicate()[0].decode(errors="replace"))
    return proc, out, slow_workers()


def test_ctrl_c_stops_the_workers_at_once_and_keeps_finished_runs(tmp_path):
    proc, out, workers = _start(tmp_path)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the driver did not stop within 20 s of Ctrl-C")
    assert time.monotonic() - t0 < 20
    assert proc.returncode != 0
    assert _wait(lambda: not any(_alive(p) for p in workers), 10), "workers still running after Ctrl-C"
    assert len(list((out / "runs").glob("*.json"))) == 1  # the finished run is kept
    assert not list((out / "runs").glob("*.lock"))  # and no lock is left behind


def test_sigkill_of_the_driver_leaves_no_worker_alive(tmp_path):
    proc, out, workers = _start(tmp_path)
    proc.kill()
    proc.wait()
    gone = _wait(lambda: not any(_alive(p) for p in workers), 15)
    for p in workers:  # clean up whatever survived before failing
        if _alive(p):
            os.kill(p, signal.SIGKILL)
    assert gone, "worker processes outlived the killed driver"
