"""``cortexflow semantic``: list encoders, embed a dataset's stimuli into the cache, score a benchmark."""

from __future__ import annotations

import json
import time

import click

from cortexflow.cli._common import progress_setting
from cortexflow.data import load_dataset
from cortexflow.benchmark.semantic import score_benchmark
from cortexflow.semantic.cache import cache_path, embed_images, images_checksum
from cortexflow.semantic.encoders import DEFAULT_ENCODER, list_encoders, load_image_encoder

__all__ = ["semantic"]


@click.group()
def semantic() -> None:
    """Pretrained image encoders, stimulus embeddings and semantic metrics."""


@semantic.command("encoders")
def encoders_cmd() -> None:
    """List the registered image encoders."""
    for name in list_encoders():
        click.echo(f"{name}{'  (default)' if name == DEFAULT_ENCODER else ''}")


@semantic.command("embed")
@click.option("--dataset", required=True, help="Registered name or path to a .mat/.npz file.")
@click.option("--encoder", default="efficientnet-lite0", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache root (default: $CORTEXFLOW_CACHE or the user cache).")
def embed_cmd(dataset: str, encoder: str, data_dir, cache_dir) -> None:
    """Embed a dataset's training and test stimuli (each array cached on disk), and print the cost."""
    ds = load_dataset(dataset, data_dir)
    enc = load_image_encoder(encoder)
    out = {}
    for part, images in (("train", ds.Y_train), ("test", ds.Y_test)):
        t0 = time.perf_counter()
        e = embed_images(images, enc, cache_dir=cache_dir)["final"]
        out[part] = {"n": len(images), "dim": int(e.shape[1]), "seconds": round(time.perf_counter() - t0, 3),
                     "cache": str(cache_path(enc, images_checksum(images), cache_dir))}
    click.echo(json.dumps({"dataset": ds.name, "encoder": enc.name, **out}, indent=2))


@semantic.command("score")
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("--encoder", default="efficientnet-lite0", show_default=True)
@click.option("--layer", default="final", show_default=True)
@click.option("--reference", default="cccv1", show_default=True, help="Method compared against.")
@click.option("--unit", type=click.Choice(["image", "stimulus"]), default="image", show_default=True)
@click.option("--fast", is_flag=True, help="Score the runs of a --fast benchmark.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None)
@click.option("--no-progress", is_flag=True)
def score_cmd(out: str, encoder: str, layer: str, reference: str, unit: str, fast: bool, cache_dir,
              no_progress: bool) -> None:
    """Add semantic metrics (two-way identification and centred cosine in ENCODER space) to a finished benchmark OUT.

    The per-image scores of each run are stored beside its record (OUT/runs/scores/); scoring again computes only
    new or changed runs.
    """
    res = score_benchmark(out, encoder=encoder, layer=layer, cache_dir=cache_dir, reference=reference, unit=unit,
                          fast=fast, progress=progress_setting(no_progress))
    click.echo(f"scored {res['runs']} runs")
    if res["resumed"]:
        click.echo(f"{res['resumed']} of them were scored before (stored in {out}/runs/scores) and not recomputed")
    for k, p in res["paths"].items():
        click.echo(f"{k}: {p}")
