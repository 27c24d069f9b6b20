"""The ``cortexflow benchmark`` and ``cortexflow methods`` commands."""

from __future__ import annotations

import json
import shlex
import sys

import click

from cortexflow.cli._common import progress_setting
from cortexflow.benchmark.executors import BACKENDS
from cortexflow.registry.methods import REFERENCE_METHOD, get_method, list_methods
from cortexflow.benchmark.runner import TRAIN_MODES, UNITS, BenchmarkConfig, run_benchmark
from cortexflow.data.splits import SPLIT_KINDS
from cortexflow.exceptions import CortexFlowError
from cortexflow.training.devices import AMP_MODES

__all__ = ["benchmark", "methods", "parse_method_sets"]


def parse_method_sets(values: tuple[str, ...], flag: str = "--set") -> dict[str, dict]:
    """``("cccv1:epochs=50", ...)`` -> ``{"cccv1": {"epochs": 50}}`` (values parsed as JSON when they are JSON).

    >>> parse_method_sets(("cccv1:epochs=50", "ridge:alphas=[1, 10]"))
    {'cccv1': {'epochs': 50}, 'ridge': {'alphas': [1, 10]}}
    """
    out: dict[str, dict] = {}
    for item in values:
        method, sep, kv = item.partition(":")
        key, eq, value = kv.partition("=")
        if not sep or not eq or not method.strip() or not key.strip():
            raise click.BadParameter(f"{item!r} is not METHOD:KEY=VALUE (e.g. cccv1:epochs=50)", param_hint=flag)
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(method.strip(), {})[key.strip()] = parsed
    return out


class _Command(click.Command):
    """Turns CortexFlow errors into one clean line and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CortexFlowError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)


@click.command("benchmark", cls=_Command)
@click.option("--datasets", required=True, help="Comma list of registered names or .mat/.npz paths, e.g. vangerven,miyawaki.")
@click.option("--methods", default="all", show_default=True,
              help="'all' or a comma list of registered methods (see 'cortexflow methods list').")
@click.option("--split", "splits", default="official", show_default=True,
              help=f"{', '.join(SPLIT_KINDS)}, or a comma list of them.")
@click.option("--folds", default=10, show_default=True, type=int, help="Folds of kfold and novel-stimulus (>= 2).")
@click.option("--seeds", default=3, show_default=True, type=int, help="Model seeds 0..N-1 per split and fold (>= 1).")
@click.option("--split-seed", default=0, show_default=True, type=int,
              help="Seed of the fold assignment (>= 0; the same for every method and model seed).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder; a rerun resumes from it.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--set", "sets", multiple=True, metavar="METHOD:KEY=VALUE",
              help="Method option passed to its factory, e.g. cccv1:epochs=50 (repeatable; part of the result key).")
@click.option("--option", "legacy_options", multiple=True, hidden=True, metavar="METHOD:KEY=VALUE",
              help="Deprecated spelling of --set.")
@click.option("--fast", is_flag=True, help="Tiny training settings: a pipeline check, not results.")
@click.option("--backend", default="local", show_default=True,
              help=f"Executor: {', '.join(BACKENDS)} ('ray' runs on a Ray cluster; needs cortexflow[ray]).")
@click.option("--address", default=None, metavar="auto|HOST:PORT",
              help="Ray cluster to join (with --backend ray); default: start a local Ray instance.")
@click.option("--train-mode", type=click.Choice(TRAIN_MODES), default="batched", show_default=True,
              help="Train the folds x seeds of cccv1 together as one batched model, or one by one.")
@click.option("--amp", type=click.Choice(AMP_MODES), default="off", show_default=True,
              help="Mixed precision of batched training (CUDA; bf16 on CPU only where it has bf16 units).")
@click.option("--deterministic", is_flag=True, help="torch.use_deterministic_algorithms(True) and CUBLAS_WORKSPACE_CONFIG.")
@click.option("--track", type=click.Choice(["none", "mlflow"]), default="none", show_default=True,
              help="Log parameters, metrics and figures to MLflow (needs cortexflow[tracking]).")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default: a local store in OUT).")
@click.option("--jobs", default=1, show_default=True, type=int,
              help="Worker processes of the local backend (batched groups are split over them).")
@click.option("--threads", default=1, show_default=True, type=int, help="Torch threads per worker (0: torch's default).")
@click.option("--reference", default=REFERENCE_METHOD, show_default=True, help="Method every other is compared with.")
@click.option("--unit", type=click.Choice(UNITS), default="image", show_default=True,
              help="Unit of the paired statistics (seeds averaged per unit).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def benchmark(datasets, methods, splits, folds, seeds, split_seed, out_dir, data_dir, sets, legacy_options, fast,
              backend, address, train_mode, amp, deterministic, track, tracking_uri, jobs, threads, reference, unit,
              no_progress) -> None:
    """Benchmark methods on datasets and splits; write results.csv, stats.csv, summary.md and report.html.

    Each (dataset, method, split, fold, seed) run is stored in OUT/runs as soon as
    it finishes; running the same command again recomputes nothing that finished.
    """
    if legacy_options:
        click.echo("warning: --option is deprecated; use --set METHOD:KEY=VALUE", err=True)
    options = parse_method_sets(tuple(legacy_options), "--option")
    for m, kv in parse_method_sets(tuple(sets)).items():
        options.setdefault(m, {}).update(kv)
    if threads is not None and threads < 0:
        raise click.BadParameter(f"{threads} must be >= 0 (0: torch's default)", param_hint="--threads")
    config = BenchmarkConfig(
        datasets=datasets, methods=methods, splits=splits, n_folds=folds, seeds=seeds, out=out_dir,
        split_seed=split_seed, fast=fast, method_options=options, data_dir=data_dir, backend=backend,
        backend_options={"address": address} if address else {}, jobs=jobs, threads=threads or None,
        train_mode=train_mode, amp=amp, deterministic=deterministic, reference=reference, unit=unit,
        track=track, tracking_uri=tracking_uri)
    cmd = "cortexflow " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None
    res = run_benchmark(config, progress=progress_setting(no_progress), command=cmd)
    for note in res["notes"]:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{res['total']} runs ({res['done_before']} resumed, {res['computed']} computed) "
               f"in {res['wall_seconds']:.1f} s")
    for k, v in res["paths"].items():
        click.echo(f"{k:<10} {v}")


@click.group("methods")
def methods() -> None:
    """Benchmark methods: what is registered and what each accepts."""


def method_table() -> list[dict]:
    """One entry per registered method: name, description, typed options, needs, checkpoint kind, extra, batched, in 'all'."""
    rows = []
    for name in list_methods():
        spec = get_method(name)
        rows.append({"name": name, "description": spec.description, "options": [o.to_dict() for o in spec.options],
                     "needs": sorted(spec.needs), "checkpoint_kind": spec.checkpoint_kind,
                     "estimator": spec.estimator.__name__ if spec.estimator is not None else None,
                     "extra": spec.extra or None, "batched": spec.supports_batched, "in_all": spec.in_all,
                     "version": spec.version})
    return rows


def _option_line(o: dict) -> str:
    allowed = o["type"]
    if o["choices"]:
        allowed = "|".join(map(str, o["choices"]))
    rng = "".join([f" >={o['min']:g}" if o["min"] is not None else "", f" <={o['max']:g}" if o["max"] is not None
                   else ""])
    default = json.dumps(o["default"]) if not isinstance(o["default"], str) else o["default"]
    help_ = f"  {o['help']}" if o["help"] else ""
    return f"      {o['name']} ({allowed}{rng}; default {default}){help_}"


@methods.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--brief", is_flag=True, help="Names and descriptions only (no options).")
def methods_list(as_json: bool, brief: bool) -> None:
    """List the registered methods with their typed options (``--set METHOD:KEY=VALUE``)."""
    rows = method_table()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        flags = [f"needs cortexflow[{r['extra']}]"] if r["extra"] else []
        flags += [f"needs {', '.join(r['needs'])}"] if r["needs"] else []
        flags += ["batched"] if r["batched"] else []
        flags += [] if r["in_all"] else ["not in 'all'"]
        flags += [f"checkpoint {r['checkpoint_kind']}"] if r["checkpoint_kind"] else ["no checkpoint"]
        click.echo(f"{r['name']}" + (f"  ({'; '.join(flags)})" if flags else ""))
        click.echo(f"    {r['description']}")
        if brief:
            continue
        if not r["options"]:
            click.echo("    options: none")
            continue
        click.echo(f"    options (--set {r['name']}:KEY=VALUE):")
        for o in r["options"]:
            click.echo(_option_line(o))
