"""``cortexflow prior``: train image priors on registered corpora and describe them."""

from __future__ import annotations

import json
import time

import click

from cortexflow.cli._common import progress_setting
from cortexflow.data.corpora import get_corpus_info, list_corpora, load_corpus
from cortexflow.data.guard import DEFAULT_THRESHOLD, dataset_stimuli
from cortexflow.models.prior import MAX_EMBED_DIM, PriorConfig
from cortexflow.training.prior import get_prior, list_cached_priors, prior_cache_dir

__all__ = ["prior"]


@click.group()
def prior() -> None:
    """Image priors learned from external corpora (mnist-t10k, miyawaki-patterns, font-letters)."""


@prior.command("list")
def prior_list() -> None:
    """List the registered prior corpora."""
    for name in list_corpora():
        info = get_corpus_info(name)
        click.echo(f"{name:<18} {info.n_images:>6} images  {info.description}")


@prior.command("train")
@click.option("--corpus", required=True, help="Registered corpus (see `cortexflow prior list`).")
@click.option("--kind", type=click.Choice(["ae", "vae"]), default="ae", show_default=True)
@click.option("--embed-dim", type=click.IntRange(2, MAX_EMBED_DIM), default=PriorConfig.embed_dim, show_default=True,
              help=f"Size of the embedding (2 to {MAX_EMBED_DIM}).")
@click.option("--epochs", type=click.IntRange(1, 10_000), default=PriorConfig.epochs, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True)
@click.option("--max-images", type=click.IntRange(1, None), default=None, help="Train on the first N kept corpus images only (quick tries).")
@click.option("--for-dataset", default=None,
              help="Drop corpus images that nearly copy a stimulus of this registered data set (train and test).")
@click.option("--threshold", type=float, default=DEFAULT_THRESHOLD, show_default=True,
              help="Near-duplicate threshold (pixel MSE).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache root (default: $CORTEXFLOW_CACHE or the user cache).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the prior's info as JSON.")
def prior_train(corpus, kind, embed_dim, epochs, seed, max_images, for_dataset, threshold, data_dir, cache_dir, no_progress,
                as_json) -> None:
    """Train the prior of a corpus (or read it from the cache) and print what it is."""
    cfg = PriorConfig(kind=kind, embed_dim=embed_dim, epochs=epochs, seed=seed, max_images=max_images)
    exclude = dataset_stimuli(for_dataset, data_dir) if for_dataset else None
    t0 = time.perf_counter()
    fitted = get_prior(corpus, exclude=exclude, config=cfg, data_dir=data_dir, cache_dir=cache_dir,
                       progress=progress_setting(no_progress), threshold=threshold)
    info = {**fitted.info, "config": cfg.to_dict(), "path": str(fitted.path), "wall_s": round(time.perf_counter() - t0, 2)}
    info.pop("dropped_indices", None)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    src = "read from the cache" if info["from_cache"] else f"trained in {info['train_time_s']:.1f} s"
    click.echo(f"prior {corpus} ({kind}, {embed_dim}-d, {epochs} epochs, seed {seed}): {src}")
    click.echo(f"  images {info['n_images']}, near-duplicates dropped {info['n_dropped']}"
               + (f" (of {for_dataset}'s stimuli, MSE <= {threshold:g})" if for_dataset else " (no data set given)"))
    click.echo(f"  reconstruction MSE on the corpus {info['recon_mse']:.4f}")
    click.echo(f"  cache {info['path']}")


@prior.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache root (default: $CORTEXFLOW_CACHE or the user cache).")
def prior_info(name, as_json, data_dir, cache_dir) -> None:
    """Describe corpus NAME and every prior trained on it that the cache holds."""
    info = get_corpus_info(name)
    corpus = load_corpus(name, data_dir, cache_dir=cache_dir)
    entries = list_cached_priors(name, cache_dir)
    out = {
        "corpus": name,
        "description": info.description,
        "kind": info.kind,
        "n_images": len(corpus),
        "checksum": corpus.checksum,
        "cache_dir": str(prior_cache_dir(cache_dir) / name),
        "priors": [
            {
                "path": e["path"],
                **{k: e["config"].get(k) for k in ("kind", "embed_dim", "epochs", "seed")},
                **{k: e["info"].get(k) for k in ("n_images", "n_dropped", "threshold", "recon_mse", "train_time_s")},
            }
            for e in entries
        ],
    }
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"{name}: {out['n_images']} images ({info.kind}), checksum {out['checksum'][:16]}")
    click.echo(f"  {info.description}")
    if not out["priors"]:
        click.echo(f"  no trained prior in {out['cache_dir']}; run `cortexflow prior train --corpus {name}`")
    for p in out["priors"]:
        mse, secs = _num(p["recon_mse"], ".4f"), _num(p["train_time_s"], ".1f")
        click.echo(
            f"  prior {p['kind']} {p['embed_dim']}-d, {p['epochs']} epochs, seed {p['seed']}: trained on "
            f"{p['n_images']} images, {p['n_dropped']} near-duplicates dropped, reconstruction MSE "
            f"{mse}, {secs} s\n    {p['path']}"
        )


def _num(value, fmt: str) -> str:
    """``value`` formatted with ``fmt``, or ``?`` when it is not a number."""
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"
