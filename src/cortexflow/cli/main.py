"""``cortexflow`` command line: datasets, train, evaluate, reconstruct, benchmark."""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import sys
import time
from pathlib import Path

import click
import numpy as np

from cortexflow.cli.benchmark import benchmark, methods
from cortexflow.methods.build import check_scored_stimuli, make_estimator, scored_stimuli
from cortexflow.registry.methods import check_options, decoder_label, get_method, list_methods, suggest
from cortexflow.cli._common import apply_num_threads, error_boundary, one_line, parse_sets, progress_setting, workers_from_env
from cortexflow.cli.datasets_check import check as datasets_check
from cortexflow.cli.eeg import eeg
from cortexflow.cli.prior import prior
from cortexflow.data.eeg.registered import describe_eeg, is_raw_eeg_dataset, load_eeg
from cortexflow.data.fetch import fetch_dataset
from cortexflow.data.loading import load_dataset, read_arrays, select_signal_array
from cortexflow.data.registry import DATASETS, get_dataset_info
from cortexflow.data.spec import no_official_split_message
from cortexflow.data.summary import describe_dataset
from cortexflow.data.validation import validate_signals
from cortexflow.evaluation.metrics import evaluate_reconstructions, summarize
from cortexflow.exceptions import ConfigError, CortexFlowError, DataValidationError
from cortexflow.models.estimator import CCCV1Decoder, check_replaceable_checkpoint
from cortexflow.models.loader import load_decoder
from cortexflow.reporting.figures import reconstruction_grid, save_image
from cortexflow.cli.semantic import semantic
from cortexflow.training.config import get_config
from cortexflow.training.devices import resolve_device, set_deterministic
from cortexflow.utils.io import (
    OUTPUT_MARKER,
    atomic_npy_writer,
    atomic_write_json,
    json_safe,
    prepare_output_dir,
    release_output_lock,
    remove_stale_outputs,
    removed_if_empty_on_error,
    write_output_marker,
)

logger = logging.getLogger("cortexflow")


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


_one_line = one_line


class _Group(click.Group):
    """Turns every failure of plausible input into one clean line and exit code 2 (see :func:`error_boundary`)."""

    def invoke(self, ctx):
        try:
            with error_boundary(ctx):
                return super().invoke(ctx)
        finally:
            if ctx.parent is None:
                release_output_lock()  # the command has ended: its output folders have no writer any more


SEED = click.IntRange(0, 2**31 - 1)  # the range of cortexflow.models.base.seed_from_random_state
_FLAGS = {"allow_degenerate": "--allow-degenerate", "stimulus_scale": "--stimulus-scale", "pixel_order": "--pixel-order"}

_stimulus_scale_option = click.option(
    "--stimulus-scale", type=float, default=None,
    help="Value that stands for white in a file of your own (default: decided from the data type and range).",
)


_pixel_order_option = click.option(
    "--pixel-order", type=click.Choice(["row-major", "column-major", "C", "F"]), default=None,
    callback=lambda ctx, param, v: {"row-major": "C", "column-major": "F"}.get(v, v),
    help="Order of the flat stimulus rows of a file of your own: row-major (C, default) or column-major (F, MATLAB).",
)


def _load(name_or_path: str, data_dir, **kwargs):
    """``load_dataset`` for a command: an error that names a Python argument also names its command-line flag."""

    official = kwargs.pop("official", False)
    try:
        ds = load_dataset(name_or_path, data_dir, **kwargs)
        if official and len(ds.X_test) == 0:  # a spec without a split column
            raise ConfigError(no_official_split_message(ds.name) + " (train and evaluate use the official split; "
                              "cortexflow benchmark runs the others)")
        return ds
    except DataValidationError as exc:
        flags = [flag for arg, flag in _FLAGS.items() if arg in str(exc) and flag not in str(exc)]
        if flags:
            raise DataValidationError(f"{exc}; on the command line: {', '.join(flags)}") from exc
        raise


@click.group(cls=_Group)
@click.version_option(package_name="cortexflow")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option("--debug", is_flag=True, help="Show the full traceback of a failure (also: CORTEXFLOW_DEBUG=1).")
def cli(verbose: int, debug: bool) -> None:
    """CortexFlow: reconstruct what a person saw from brain signals."""
    _setup_logging(verbose)
    apply_num_threads()  # $CORTEXFLOW_NUM_THREADS, validated: 0, -1 or 'abc' is a one-line error
    workers_from_env()  # $CORTEXFLOW_WORKERS, validated likewise


# ---------------------------------------------------------------- datasets
@cli.group(cls=_Group)
def datasets() -> None:
    """List, fetch and describe datasets."""


datasets.add_command(datasets_check)  # `cortexflow datasets check SPEC.toml` (cli/datasets_check.py)


@datasets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def datasets_list(as_json: bool) -> None:
    """List the registered datasets."""

    if as_json:
        click.echo(json.dumps({k: v.to_dict() for k, v in DATASETS.items()}, indent=2))
        return
    width = max(12, *(len(n) + 1 for n in DATASETS))
    for name, info in sorted(DATASETS.items()):
        flag = "  [format tests only]" if info.format_tests_only else ""
        if info.modality == "eeg-raw":
            flag = f"  [raw EEG: {info.n_train} trials, {info.n_channels} channel(s), {info.sfreq:g} Hz; no split]"
        click.echo(f"{name:<{width}} {info.modality:<15} {info.n_train}/{info.n_test} x {info.n_features}{flag}")
        click.echo(f"{'':<{width}} {info.description}")


@datasets.command("fetch")
@click.argument("name")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Data folder (default: $CORTEXFLOW_DATA or the user cache).")
@click.option("--mirror", default=None, help="Base URL of a mirror laid out as <mirror>/<name>/<file>.")
@click.option("--no-progress", is_flag=True, help="Hide the download progress bar.")
def datasets_fetch(name: str, data_dir, mirror, no_progress: bool) -> None:
    """Download NAME (or verify the cached copy) and print its path; NAME "all" fetches every dataset."""

    if name != "all":
        get_dataset_info(name)  # an unknown name fails here, with a close-name suggestion
    names = sorted(DATASETS) if name == "all" else [name]
    failed = []
    for n in names:  # go on past a failure and report every one at the end
        try:
            click.echo(str(fetch_dataset(n, data_dir, mirror=mirror, progress=progress_setting(no_progress))))
        except CortexFlowError as exc:
            failed.append(n)
            click.echo(f"Error: {n}: {_one_line(exc)}", err=True)
    if failed:
        raise CortexFlowError(f"{len(failed)} of {len(names)} dataset(s) could not be fetched: {', '.join(failed)}")


@datasets.command("info")
@click.argument("name_or_path")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--allow-degenerate", is_flag=True, help="Describe even a signal whose rows are all identical.")
@_stimulus_scale_option
@_pixel_order_option
def datasets_info(name_or_path: str, data_dir, as_json: bool, allow_degenerate: bool, stimulus_scale,
                  pixel_order) -> None:
    """Shapes, unique stimuli, train/test overlap and checksum status of a dataset or file."""

    if is_raw_eeg_dataset(name_or_path):
        _print_info(describe_eeg(load_eeg(name_or_path, data_dir)), as_json,
                    ("name", "source", "checksum", "modality", "format", "device", "n_epochs", "n_channels",
                     "n_times", "sfreq", "class_counts", "size_mismatch"))
        return
    ds = _load(name_or_path, data_dir, stimulus_scale=stimulus_scale, allow_degenerate=allow_degenerate,
               pixel_order=pixel_order)
    _print_info(describe_dataset(ds), as_json,
                ("name", "source", "checksum", "n_train", "n_test", "n_features", "n_unique_stimuli",
                 "n_test_seen_in_train", "labels", "pixel_order", "modality"))


def _print_info(info: dict, as_json: bool, keys: tuple[str, ...]) -> None:
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for k in keys:
        click.echo(f"{k:<22} {info[k]}")
    for c in info["caveats"]:
        click.echo(f"caveat: {c}")


# ------------------------------------------------------------------- train
def _checkpoint_dir(path: str) -> Path:
    p = Path(path)
    return p / "checkpoint" if (p / "checkpoint").is_dir() else p


def _summary(per_image: dict) -> dict:
    """Mean of each per-image metric; an undefined one (e.g. two-way identification of one image) is None."""

    return json_safe(summarize(per_image))


def _write_metrics(out: Path, per_image: dict, extra: dict) -> dict:
    """Write ``metrics.json`` (standard JSON: undefined values are null) and return the summary."""

    summary = _summary(per_image)
    payload = {**summary, **json_safe(extra), "per_image": json_safe({k: np.asarray(v) for k, v in per_image.items()})}
    atomic_write_json(out / "metrics.json", payload)
    return summary


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, allow_nan=False))


TRAIN_OUTPUTS = ["metrics.json", "reconstructions.png"]
EVALUATE_OUTPUTS = ["metrics.json", "reconstructions.png"]


#: What ``cortexflow train`` trains without --method: the best method on new images in the benchmark
#: (vangerven official split and 10-fold CV, docs/results.md); CCCV1 stays one flag away.
DEFAULT_TRAIN_METHOD = "ridge-prior"


def _train_methods() -> list[str]:
    """Methods that ``cortexflow train --method`` trains and saves: every registered method with a checkpoint."""
    return [m for m in list_methods() if get_method(m).checkpoint_kind is not None]


def _label(model) -> str:
    return decoder_label(model)


def _parse_option_values(overrides: dict[str, str]) -> dict:
    """``--set`` values: JSON when they parse as JSON (numbers, lists, objects), else strings."""
    out = {}
    for k, v in overrides.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _method_estimator(method: str, options: dict, seed: int, ds, dev: str, amp: str, progress: bool | None,
                      data_dir: str | None = None):
    """The unfitted estimator of ``method``, built by the one builder (guard set: every scored stimulus)."""
    est = make_estimator(method, seed, ds.name, len(ds.X_train), stimuli=scored_stimuli(ds), data_dir=data_dir,
                         progress=progress, **options)
    params = est.get_params(deep=False)
    defaults = {"device": dev, "amp": amp, "progress": progress}
    est.set_params(**{k: v for k, v in defaults.items() if k in params and k not in options})
    return est


class _MethodChoice(click.ParamType):
    """A registered method with a checkpoint (read from the registry when the command runs)."""

    name = "method"

    def convert(self, value, param, ctx):
        allowed = _train_methods()
        if value not in allowed:
            self.fail(f"{value!r}{suggest(value, allowed)}; methods with a checkpoint: {', '.join(allowed)}",
                      param, ctx)
        return value


@cli.command()
@click.option("--dataset", "dataset", required=True, help="Registered name or path to a .mat/.npz file.")
@click.option("--method", default=DEFAULT_TRAIN_METHOD, show_default=True, type=_MethodChoice(),
              help="Method to train and save (any registered method; see 'cortexflow methods list'); its "
                   "checkpoint loads in evaluate and reconstruct. The default, ridge-prior, is the benchmark's "
                   "best method on new images; --method cccv1 trains the CCCV1 network.")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Random seed, an int in [0, 2**31 - 1].")
@click.option("--out", "out_dir", default="runs/train", show_default=True, type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True,
              help="Write into a non-empty --out folder that CortexFlow did not make (nothing else in it is deleted).")
@click.option("--config", "config", default="auto", show_default=True, help="'auto' or a preset (small, medium, large, vangerven, miyawaki, crell, mindbigdata); --method cccv1 only.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a config field, e.g. --set epochs=50; for other methods an option of the method, "
                   "e.g. --set prior=mnist-t10k (values read as JSON when they are JSON; repeatable).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--device", default="auto", show_default=True, help="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.")
@click.option("--amp", type=click.Choice(["off", "auto", "bf16", "fp16"]), default="off", show_default=True,
              help="Mixed precision of training (CUDA; bf16 also on CPU).")
@click.option("--deterministic", is_flag=True, help="Deterministic algorithms (CUDA: also CUBLAS_WORKSPACE_CONFIG).")
@click.option("--no-progress", is_flag=True, help="Hide the per-epoch progress bar.")
@_stimulus_scale_option
@_pixel_order_option
def train(dataset: str, method: str, seed: int, out_dir: str, overwrite: bool, config: str, sets, data_dir, device: str,
          amp: str, deterministic: bool, no_progress: bool, stimulus_scale, pixel_order) -> None:
    """Train a decoder (ridge-prior by default) on the official split; write checkpoint, metrics.json and a PNG grid."""

    # Every option is checked before any work: the overrides against the chosen (or a stand-in) preset
    # (or the method's options), the device, and the output folder.
    overrides = parse_sets(sets)
    preset = method == "cccv1" and config != "auto"  # a named preset: CCCV1Decoder with that configuration
    if preset:
        get_config(config, **overrides)
        options = {}
    else:
        if config != "auto":
            raise click.BadParameter(f"{config!r}: --config applies to --method cccv1 (pass it); give the training settings "
                                     f"of {method} with --set KEY=VALUE", param_hint="--config")
        options = _parse_option_values(overrides)
        check_options(method, options)
    dev = resolve_device(device)  # a clear error for 'cuda' on a machine without CUDA
    with removed_if_empty_on_error(out_dir):  # a run that fails before writing anything leaves no empty --out
        out, _ = prepare_output_dir(out_dir, "train", TRAIN_OUTPUTS + [OUTPUT_MARKER], overwrite=overwrite)
        check_replaceable_checkpoint(out / "checkpoint")
        if deterministic:
            set_deterministic(True)
        ds = _load(dataset, data_dir, stimulus_scale=stimulus_scale, pixel_order=pixel_order, official=True)
        metadata = {k: ds.metadata[k] for k in ("name", "sha256", "source", "modality")}
        if preset:
            cfg = get_config(config, n_train=len(ds.X_train), dataset=ds.name, **overrides)
            model = CCCV1Decoder(config=cfg, dataset=ds.name, random_state=seed, device=str(dev),
                                 progress=progress_setting(no_progress), amp=amp)
        else:
            model = _method_estimator(method, options, seed, ds, str(dev), amp, progress_setting(no_progress), data_dir)
        write_output_marker(out, "train", TRAIN_OUTPUTS + ["checkpoint"])
        t0 = time.perf_counter()
        if "metadata" in inspect.signature(model.fit).parameters:
            model.fit(ds.X_train, ds.Y_train, metadata=metadata)
        else:
            model.fit(ds.X_train, ds.Y_train)
        fit_seconds = time.perf_counter() - t0
        model.save(out / "checkpoint")
        pred = model.predict(ds.X_test)
        per_image = evaluate_reconstructions(true=ds.Y_test, pred=pred)
        extra = {"dataset": ds.name, "split": "official", "seed": seed, "n_test": len(ds.X_test)}
        if type(model) is CCCV1Decoder:
            extra.update({
                "method": method, "config": model.config_.to_dict(), "best_epoch": model.train_result_.best_epoch,
                "stopped_epoch": model.train_result_.stopped_epoch, "train_seconds": model.train_result_.seconds,
            })
        else:
            result = getattr(model, "train_result_", None)
            extra.update({"method": method, "options": options, "train_seconds": fit_seconds,
                          "report_info": getattr(model, "report_info_", None)})
            if hasattr(model, "config_"):
                extra["config"] = model.config_.to_dict()
            if result is not None:
                extra.update({"best_epoch": result.best_epoch, "stopped_epoch": result.stopped_epoch})
        extra.update({"device": str(dev), "amp": amp, "deterministic": deterministic})
        summary = _write_metrics(out, per_image, extra)
        reconstruction_grid(ds.Y_test, {_label(model): pred}, out / "reconstructions.png",
                            title=f"{ds.name}: official test split, seed {seed}")
    _echo_json({"out": str(out), **summary})


@cli.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--dataset", "dataset", required=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False), help="Also write metrics.json and a grid here.")
@click.option("--overwrite", is_flag=True, help="Write into a non-empty --out folder that CortexFlow did not make.")
@_stimulus_scale_option
@_pixel_order_option
def evaluate(checkpoint: str, dataset: str, data_dir, out_dir, overwrite: bool, stimulus_scale, pixel_order) -> None:
    """Score a checkpoint on a dataset's official test split."""

    out = None
    with removed_if_empty_on_error(out_dir or os.curdir):  # a failed run leaves no empty --out folder
        if out_dir:
            out, _ = prepare_output_dir(out_dir, "evaluate", EVALUATE_OUTPUTS + [OUTPUT_MARKER], overwrite=overwrite)
        model = load_decoder(_checkpoint_dir(checkpoint))
        ds = _load(dataset, data_dir, stimulus_scale=stimulus_scale, pixel_order=pixel_order, official=True)
        check_scored_stimuli(model, ds.Y_test, source=f"data set {ds.name!r} (official test split)")
        pred = model.predict(ds.X_test)
        per_image = evaluate_reconstructions(true=ds.Y_test, pred=pred)
        if out is not None:
            write_output_marker(out, "evaluate", EVALUATE_OUTPUTS)
            _write_metrics(out, per_image, {"dataset": ds.name, "split": "official", "checkpoint": checkpoint})
            reconstruction_grid(ds.Y_test, {_label(model): pred}, out / "reconstructions.png")
    _echo_json(_summary(per_image))


#: Keys ``reconstruct`` looks for in a .mat/.npz input when --key is not given.
#: Per-row PNGs that ``reconstruct`` writes by default (every row is always in reconstructions.npy).
RECONSTRUCT_MAX_PNG = 100
#: Rows predicted at once by ``reconstruct`` (bounded memory whatever the input size).
RECONSTRUCT_CHUNK = 1024


def _read_input(path: Path, key: str | None) -> np.ndarray:
    """The signal array of a ``reconstruct`` input (a .npy is memory-mapped, not read into memory)."""
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataValidationError(f"{path}: cannot be read as a .npy array ({exc})") from exc
    return select_signal_array(read_arrays(path), str(path), key)


def _check_input_shape(X: np.ndarray, source: str, n_features: int) -> None:
    """Refuse an input of the wrong shape or type, saying what it looks like."""
    if X.dtype == bool:
        raise DataValidationError(f"{source}: input holds boolean values; signals must be numbers (one recording per row)")
    if X.ndim != 2:
        raise DataValidationError(
            f"{source}: input is {X.ndim}-D with shape {X.shape}; expected a 2-D array (n_rows, n_features) with "
            f"one recording per row and {n_features} features"
        )
    if X.shape[1] != n_features:
        hint = (f"; it looks transposed (features in rows): pass the array's transpose, shape {X.shape[::-1]}"
                if X.shape[0] == n_features else "")
        raise DataValidationError(
            f"{source}: input has {X.shape[1]} features per row (shape {X.shape}), but the checkpoint expects "
            f"{n_features}{hint}"
        )
    if X.shape[0] == 0:
        raise DataValidationError(f"{source}: input has no rows (shape {X.shape})")


@cli.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False), help="A .npy (n, n_features) array, or a .mat/.npz file.")
@click.option("--key", default=None, help="Variable to read from a .mat/.npz (default: fmriTest, X, fmri or signals).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Write into a non-empty --out folder that CortexFlow did not make.")
@click.option("--max-png", type=click.IntRange(min=0), default=RECONSTRUCT_MAX_PNG, show_default=True,
              help="Write a PNG for the first N rows only (every row is always in reconstructions.npy).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=RECONSTRUCT_CHUNK, show_default=True,
              help="Rows predicted at once (bounds the memory used).")
def reconstruct(checkpoint: str, input_path: str, key, out_dir: str, overwrite: bool, max_png: int,
                chunk_size: int) -> None:
    """Reconstruct every signal row of a new recording: reconstructions.npy, a grid, and PNGs of the first rows."""

    model = load_decoder(_checkpoint_dir(checkpoint))
    X = _read_input(Path(input_path), key)
    source = f"{input_path}" + (f" (key {key!r})" if key else "")
    if X.ndim == 1:
        X = X[None, :]
    _check_input_shape(X, source, model.n_features_in_)
    n = len(X)
    n_png = min(n, max_png)
    width = len(str(max(n_png, 1) - 1))
    pngs = [f"recon_{i:0{width}d}.png" for i in range(n_png)]
    names = pngs + ["grid.png", "reconstructions.npy"]
    with removed_if_empty_on_error(out_dir):  # a failed run leaves no empty --out folder
        out, stale = prepare_output_dir(out_dir, "reconstruct", names + [OUTPUT_MARKER], overwrite=overwrite)
        first = None
        writer = None
        with contextlib.ExitStack() as stack:
            for start in range(0, n, chunk_size):
                rows = validate_signals(np.asarray(X[start:start + chunk_size]), source=input_path,
                                        key=key or "input", allow_degenerate=True)
                pred = np.asarray(model.predict(rows), dtype=np.float32)
                if writer is None:
                    writer = stack.enter_context(atomic_npy_writer(out / "reconstructions.npy", (n, *pred.shape[1:])))
                writer.append(pred)
                if first is None:
                    first = pred[:20].copy()
                for i in range(start, min(start + len(pred), n_png)):
                    save_image(pred[i - start], out / pngs[i])
        reconstruction_grid(None, {_label(model): first}, out / "grid.png", max_images=min(len(first), 20))
        write_output_marker(out, "reconstruct", names)
    removed = remove_stale_outputs(out, stale)  # files of an earlier run of this command that this run did not write
    if removed:
        logger.info("removed %d file(s) of an earlier run: %s", len(removed), ", ".join(removed))
    more = f" (PNGs of the first {n_png}; all rows in reconstructions.npy)" if n_png < n else ""
    click.echo(f"wrote {n} reconstructions to {out}{more}")


for _command in (benchmark, methods, semantic, eeg, prior):
    cli.add_command(_command)


def main() -> None:  # console-script entry point
    cli(prog_name="cortexflow")


if __name__ == "__main__":
    main()
