"""The ``cortexflow benchmark`` command."""

from __future__ import annotations

import json
import shlex
import sys

import click

__all__ = ["benchmark"]


def _method_options(values: tuple[str, ...]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in values:
        if ":" not in item or "=" not in item.split(":", 1)[1]:
            raise click.BadParameter(f"{item!r} is not METHOD:KEY=VALUE", param_hint="--option")
        method, kv = item.split(":", 1)
        key, value = kv.split("=", 1)
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(method.strip(), {})[key.strip()] = parsed
    return out


def _backend_options(backend: str, address: str | None) -> dict:
    """Options of the chosen backend (issue 7)."""
    from cortexflow.exceptions import ConfigError

    if address and backend != "ray":
        raise ConfigError("--address only applies to --backend ray")
    return {"address": address} if backend == "ray" else {}


@click.command("benchmark")
@click.option("--datasets", required=True, help="Comma list of registered names or .mat/.npz paths, e.g. vangerven,miyawaki.")
@click.option("--methods", default="all", show_default=True, help="'all' or a comma list of registered methods.")
@click.option("--split", "splits", default="official", show_default=True,
              help="official, kfold, novel-stimulus, or a comma list of them.")
@click.option("--folds", default=10, show_default=True, type=int, help="Folds of kfold and novel-stimulus.")
@click.option("--seeds", default=3, show_default=True, type=int, help="Model seeds 0..N-1 per split and fold.")
@click.option("--split-seed", default=0, show_default=True, type=int, help="Seed of the fold assignment (same for every method and model seed).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder; a rerun resumes from it.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--option", "options", multiple=True, metavar="METHOD:KEY=VALUE",
              help="Method option passed to its factory, e.g. cccv1:epochs=50 (repeatable; part of the result key).")
@click.option("--fast", is_flag=True, help="Tiny training settings: a pipeline check, not results.")
@click.option("--backend", default="local", show_default=True,
              help="Task backend: 'local' (this machine) or 'ray' (a Ray cluster; needs cortexflow[ray]).")
@click.option("--address", default=None, metavar="auto|HOST:PORT",
              help="Ray cluster to join (with --backend ray); default: start a local Ray instance.")
@click.option("--train-mode", type=click.Choice(["batched", "sequential"]), default="batched", show_default=True,
              help="Train the folds x seeds of cccv1 together as one batched model, or one by one.")
@click.option("--amp", type=click.Choice(["off", "auto", "bf16", "fp16"]), default="off", show_default=True,
              help="Mixed precision of batched training (CUDA; bf16 on CPU only where it has bf16 units).")
@click.option("--deterministic", is_flag=True, help="torch.use_deterministic_algorithms(True) and CUBLAS_WORKSPACE_CONFIG.")
@click.option("--track", type=click.Choice(["none", "mlflow"]), default="none", show_default=True,
              help="Log parameters, metrics and figures to MLflow (needs cortexflow[tracking]).")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default: a local store in OUT).")
@click.option("--jobs", default=1, show_default=True, type=int, help="Worker processes of the local backend (batched groups are split over them).")
@click.option("--threads", default=1, show_default=True, type=int, help="Torch threads per worker (0: torch's default).")
@click.option("--reference", default="cccv1", show_default=True, help="Method every other is compared with.")
@click.option("--unit", type=click.Choice(["image", "stimulus"]), default="image", show_default=True,
              help="Unit of the paired statistics (seeds averaged per unit).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def benchmark(datasets, methods, splits, folds, seeds, split_seed, out_dir, data_dir, options, fast, backend, address,
              train_mode, amp, deterministic, track, tracking_uri, jobs, threads, reference, unit, no_progress) -> None:
    """Benchmark methods on datasets and splits; write results.csv, stats.csv, summary.md and report.html.

    Each (dataset, method, split, fold, seed) run is stored in OUT/runs as soon as
    it finishes; running the same command again recomputes nothing that finished.
    """
    from cortexflow.benchmark.runner import run_benchmark

    cmd = "cortexflow " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None
    res = run_benchmark(
        datasets, methods, splits, folds, seeds, out_dir, split_seed=split_seed, fast=fast,
        method_options=_method_options(options), data_dir=data_dir, backend=backend, jobs=jobs,
        threads=threads or None, progress=not no_progress, reference=reference, unit=unit, command=cmd,
        train_mode=train_mode, amp=amp, deterministic=deterministic, track=track, tracking_uri=tracking_uri,
        backend_options=_backend_options(backend, address),
    )
    for note in res["notes"]:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{res['total']} runs ({res['done_before']} resumed, {res['computed']} computed) "
               f"in {res['wall_seconds']:.1f} s")
    for k, v in res["paths"].items():
        click.echo(f"{k:<10} {v}")
