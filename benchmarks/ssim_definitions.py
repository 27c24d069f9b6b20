"""Score reconstructions on vangerven's official split under the three SSIM definitions of the metric registry.

    python benchmarks/ssim_definitions.py                      # mean-image, ridge and cccv1 (seed 0)
    python benchmarks/ssim_definitions.py --methods ridge

Prints one Markdown row per method: MSE, Pearson r, two-way identification and
``ssim`` (CortexFlow's: Gaussian sigma 1.5 at 28 x 28), ``ssim_skimage``
(scikit-image's defaults: 7 x 7 uniform window, sample covariance) and
``ssim_256`` (both images bilinearly upscaled to 256 x 256 first). Every
method is fitted on the 90 training rows and scored on the 10 test rows.
"""

from __future__ import annotations

import argparse
import logging

from cortexflow.baselines.mean_image import MeanImageDecoder
from cortexflow.baselines.ridge import RidgeDecoder
from cortexflow.data.loading import load_dataset
from cortexflow.evaluation.metrics import evaluate_reconstructions
from cortexflow.models.estimator import CCCV1Decoder

METHODS = {
    "mean-image": lambda seed: MeanImageDecoder(random_state=seed),
    "ridge": lambda seed: RidgeDecoder(random_state=seed),
    "cccv1": lambda seed: CCCV1Decoder(dataset="vangerven", random_state=seed, device="cpu"),
}
COLUMNS = ("mse", "pearson", "two_way", "ssim", "ssim_skimage", "ssim_256")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="mean-image,ridge,cccv1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ds = load_dataset("vangerven", args.data_dir)
    print("| method | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name in args.methods.split(","):
        pred = METHODS[name](args.seed).fit(ds.X_train, ds.Y_train).predict(ds.X_test)
        per = evaluate_reconstructions(true=ds.Y_test, pred=pred, metrics=list(COLUMNS))
        print(f"| {name} | " + " | ".join(f"{per[c].mean():.4f}" for c in COLUMNS) + " |")


if __name__ == "__main__":
    main()
